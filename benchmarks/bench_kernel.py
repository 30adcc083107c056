"""Benchmark the per-key FSM kernel against the plain-Python reference.

Data: ``--events`` events (default 10M) over ``--keys`` keys (default 1M) drawn
from a Zipf distribution over the key ranks (s = 1.1: a few very hot keys, a
long tail), a machine with 8 states and 6 events (random table, about half the
transitions defined) and three timeouts, one of them chained; times advance
with ties and about 1% of events arrive out of order (some become late).

Figures, all measured in this process (except compile times, measured in fresh
subprocesses against an empty and then a warm numba cache):

- kernel events/s: median (and best) wall time of ``--repeat`` ``run_batch``
  calls after warmup, each on a fresh state, timing everything the call does
  (validation, output allocation, the loop, the batch-end flush), with the
  default threads (the cores this process may use);
- reference events/s: one ``run_batch_reference`` call on the same events
  (all of them unless that is projected to exceed ``--reference-budget``
  seconds; then on a prefix, said in the output, with the kernel re-timed on
  that same prefix), checked to give identical results and final state; the
  ratio is reference time / kernel median time on identical data. The
  projection separates the reference's fixed per-call cost (which grows with
  the number of keys) from its cost per event. Half of the kernel's runs come
  before the reference and half after, so a busy spell of a shared host
  weighs on both sides of the ratio;
- compile time of the kernel: first call on a cold cache vs. loading the cache;
- KeyIndex throughput: string and integer keys, one big lookup and
  micro-batches.

Run ``python -m benchmarks.bench_kernel --quick`` (1M events, 100k keys, no
compile subprocesses) or ``--events N`` for a quicker look.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from streamkit.kernel import (
    NO_WATERMARK,
    BatchResult,
    CompiledMachine,
    KeyIndex,
    KeyState,
    run_batch,
    warmup,
)
from streamkit.kernel._parallel import parts_for
from streamkit.kernel.reference import run_batch_reference

N_STATES = 8
N_EVENTS = 6


def make_machine(rng: np.random.Generator) -> CompiledMachine:
    """8 states, 6 events, ~50% of transitions defined, three timeouts (one chained)."""
    table = rng.integers(0, N_STATES, size=(N_STATES, N_EVENTS))
    table[rng.random((N_STATES, N_EVENTS)) < 0.5] = -1
    table[0, 0] = 1  # the initial state always has a way out
    after = np.full(N_STATES, -1)
    to = np.full(N_STATES, -1)
    # 1 -> 2 after an hour, 2 -> 7 after a day (a chain); 4 -> 0 after 10 minutes.
    after[1], to[1] = 3_600, 2
    after[2], to[2] = 86_400, 7
    after[4], to[4] = 600, 0
    return CompiledMachine(
        tuple(f"s{i}" for i in range(N_STATES)),
        tuple(f"e{i}" for i in range(N_EVENTS)),
        table.astype(np.int32),
        after.astype(np.int64),
        to.astype(np.int32),
        0,
    )


def make_events(
    n: int, n_keys: int, rng: np.random.Generator
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Zipf(1.1) keys over ``n_keys`` ranks, random events, mostly increasing times."""
    weights = np.arange(1, n_keys + 1, dtype=np.float64) ** -1.1
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    ranks = np.minimum(np.searchsorted(cdf, rng.random(n)), n_keys - 1)
    keys = rng.permutation(n_keys)[ranks].astype(np.int64)  # hot keys anywhere in id space
    events = rng.integers(-1, N_EVENTS, size=n).astype(np.int32)  # -1: unknown event
    gaps = rng.integers(0, 3, size=n)  # ties (0) are common
    times = np.cumsum(gaps).astype(np.int64)
    late = rng.random(n) < 0.01
    times[late] -= rng.integers(1, 7_200, size=int(late.sum()))
    return keys, events, times


def _time(fn: Callable[[], BatchResult]) -> tuple[float, BatchResult]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_kernel(
    cm: CompiledMachine,
    keys: np.ndarray[Any, Any],
    events: np.ndarray[Any, Any],
    times: np.ndarray[Any, Any],
    n_keys: int,
    repeat: int,
) -> tuple[list[float], BatchResult, KeyState]:
    """Wall seconds of each ``run_batch`` call (everything it does: validation,
    allocation, the loop, the flush), each on a fresh state built outside the timing."""
    seconds: list[float] = []
    result: BatchResult | None = None
    state = KeyState.empty(n_keys)
    for _ in range(max(1, repeat)):
        state = KeyState.empty(n_keys)

        def one_run(st: KeyState = state) -> BatchResult:
            return run_batch(cm, keys, events, times, st, watermark=NO_WATERMARK)

        elapsed, result = _time(one_run)
        seconds.append(elapsed)
    assert result is not None
    return seconds, result, state


def bench_reference(
    cm: CompiledMachine,
    keys: np.ndarray[Any, Any],
    events: np.ndarray[Any, Any],
    times: np.ndarray[Any, Any],
    n_keys: int,
) -> tuple[float, BatchResult, KeyState]:
    """Wall seconds of one ``run_batch_reference`` call on a fresh state."""
    state = KeyState.empty(n_keys)
    elapsed, result = _time(
        lambda: run_batch_reference(cm, keys, events, times, state, watermark=NO_WATERMARK)
    )
    return elapsed, result, state


def reference_events(
    cm: CompiledMachine,
    keys: np.ndarray[Any, Any],
    events: np.ndarray[Any, Any],
    times: np.ndarray[Any, Any],
    n_keys: int,
    budget: float,
) -> tuple[int, float]:
    """How many events to run the reference on: all of them if that should take at
    most ``budget`` seconds, else the longest prefix that should. Also returns the
    projected time for all events.

    The reference has a fixed cost per call that grows with the number of keys
    (converting every key's state to Python objects and back, the batch-end
    flush over every key) and a cost per event, so the projection uses two
    probes: no events (the fixed cost) and a prefix (fixed + per event).
    Extrapolating from the prefix alone would count the fixed cost once per
    prefix and overstate the time, and a prefix run would overstate the
    reference's cost per event.
    """
    n = len(keys)
    fixed_s, _, _ = bench_reference(cm, keys[:0], events[:0], times[:0], n_keys)
    probe = min(n, 1_000_000)  # long enough that timing noise does not swamp it
    probe_s, _, _ = bench_reference(cm, keys[:probe], events[:probe], times[:probe], n_keys)
    per_event = max(probe_s - fixed_s, 1e-9) / max(probe, 1)
    projected = fixed_s + per_event * n
    if projected <= budget:
        return n, projected
    return min(n, max(probe, int((budget - fixed_s) / per_event))), projected


def _median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values)))


def compile_times() -> dict[str, float]:
    """Seconds of warmup() in a fresh process with an empty, then a warm, numba cache."""
    code = "from streamkit.kernel import warmup; print(warmup())"
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sk-numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("compile_cold_s", "compile_cached_s"):
            proc = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            out[label] = float(proc.stdout.strip().splitlines()[-1])
    return out


def bench_key_index(keys: np.ndarray[Any, Any], batch_rows: int) -> dict[str, float]:
    """Rows/s of KeyIndex.lookup_or_insert for string and integer keys."""
    out: dict[str, float] = {}
    ints = pl.Series("key", keys)
    strings = pl.select(pl.format("order-{}", pl.lit(ints)).alias("key")).to_series()
    n = len(keys)
    for label, series in (("str", strings), ("int", ints)):
        index = KeyIndex()
        start = time.perf_counter()
        index.lookup_or_insert(series)  # inserts every distinct key
        out[f"keyindex_{label}_insert_rows_per_s"] = n / (time.perf_counter() - start)
        start = time.perf_counter()
        ids = index.lookup_or_insert(series)  # all known: the steady state
        out[f"keyindex_{label}_lookup_rows_per_s"] = n / (time.perf_counter() - start)
        assert ids.max() < len(index)
        # Micro-batches into a fresh index: cost grows with the keys already known.
        index = KeyIndex()
        start = time.perf_counter()
        for lo in range(0, n, batch_rows):
            index.lookup_or_insert(series.slice(lo, batch_rows))
        out[f"keyindex_{label}_batched_rows_per_s"] = n / (time.perf_counter() - start)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the figures and return them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=9, help="kernel runs (median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--reference-budget",
        type=float,
        default=60.0,
        help="run the reference on all events only if that should take less (seconds)",
    )
    parser.add_argument("--batch-rows", type=int, default=500_000)
    parser.add_argument("--no-compile", action="store_true", help="skip the compile subprocesses")
    parser.add_argument("--quick", action="store_true", help="1M events, 100k keys, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.keys = min(args.events, 1_000_000), min(args.keys, 100_000)
        args.repeat, args.no_compile = 1, True

    rng = np.random.default_rng(args.seed)
    cm = make_machine(rng)
    keys, events, times = make_events(args.events, args.keys, rng)
    n = args.events
    figures: dict[str, float] = {"events": float(n), "keys": float(args.keys)}
    print(f"kernel benchmark: {n:,} events, {args.keys:,} Zipf(1.1) keys, {cm!r}")

    if not args.no_compile:
        figures.update(compile_times())
        print(
            f"compile: first call {figures['compile_cold_s']:.2f} s (empty cache), "
            f"{figures['compile_cached_s'] * 1e3:.1f} ms from numba's cache (fresh processes)"
        )
    figures["warmup_in_process_s"] = warmup()

    # The reference: all events when they fit the budget, else a prefix. The
    # kernel runs on exactly the same events, half of its runs before the
    # reference and half after, so that a busy spell of this (shared) host
    # falls on both sides of the ratio alike.
    m, projected = reference_events(cm, keys, events, times, args.keys, args.reference_budget)
    first = (args.repeat + 1) // 2
    fast_runs, fast, fast_state = bench_kernel(
        cm, keys[:m], events[:m], times[:m], args.keys, first
    )
    ref_s, ref, ref_state = bench_reference(cm, keys[:m], events[:m], times[:m], args.keys)
    if args.repeat > first:
        fast_runs += bench_kernel(
            cm, keys[:m], events[:m], times[:m], args.keys, args.repeat - first
        )[0]
    if m == n:
        runs, result = fast_runs, fast
    else:
        runs, result, _ = bench_kernel(cm, keys, events, times, args.keys, args.repeat)
    seconds = _median(runs)
    threads = parts_for(None, n)
    figures["kernel_threads"] = float(threads)
    figures["kernel_s"] = seconds
    figures["kernel_best_s"] = min(runs)
    figures["kernel_events_per_s"] = n / seconds
    print(
        f"kernel: {seconds:.3f} s for {n:,} events = {n / seconds / 1e6:.1f} M events/s "
        f"(median of {len(runs)}; best {n / min(runs) / 1e6:.1f} M events/s; "
        f"{threads} thread{'s' if threads > 1 else ''}); "
        f"{result.n_fired:,} fired, {result.n_undefined:,} undefined, {result.n_late:,} late, "
        f"{result.n_timeouts:,} timeouts"
    )
    fast_s = _median(fast_runs)
    if not (fast.equals(ref) and fast_state.equals(ref_state)):
        raise SystemExit("kernel and reference disagree: this is a bug")
    figures["reference_events"] = float(m)
    figures["reference_s"] = ref_s
    figures["reference_events_per_s"] = m / ref_s
    figures["kernel_same_data_events_per_s"] = m / fast_s
    figures["speedup"] = ref_s / fast_s
    figures["speedup_best_run"] = ref_s / min(fast_runs)
    scope = (
        "all events"
        if m == n
        else (
            f"a {m:,}-event prefix (all {n:,} would take ~{projected:.0f} s, over the "
            f"--reference-budget; the ratio compares both on the prefix)"
        )
    )
    print(
        f"reference: {ref_s:.2f} s on {scope} = {m / ref_s / 1e3:.0f} k events/s "
        f"(one run); kernel on the same data {m / fast_s / 1e6:.1f} M events/s "
        f"(median); identical results and final state"
    )
    print(
        f"speedup kernel / reference: {figures['speedup']:.0f}x (goal >= 100x; with the "
        f"best kernel run instead of the median {figures['speedup_best_run']:.0f}x: the "
        "kernel is memory-bound, and a shared host's memory traffic moves its median)"
    )

    figures.update(bench_key_index(keys, args.batch_rows))
    for label in ("str", "int"):
        rates = [
            figures[f"keyindex_{label}_{what}_rows_per_s"] / 1e6
            for what in ("insert", "lookup", "batched")
        ]
        print(
            f"KeyIndex {label} keys: insert {rates[0]:.1f} M rows/s, lookup {rates[1]:.1f} "
            f"M rows/s, batches of {args.batch_rows:,}: {rates[2]:.1f} M rows/s"
        )
    return figures


if __name__ == "__main__":
    main()
