"""End-to-end pipeline throughput against two baselines in the same process.

* raw copy: scan the same log and append the same rows to another log;
* Python loop: a hand-written per-event loop with dicts, the same reading and
  the same writing of the history.

Usage: ``python -m benchmarks.bench_pipeline [--events N] [--keys K] [--quick]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

import streamkit as sk

N_STATES, N_EVENTS = 8, 6


def bench_machine() -> sk.Machine:
    """8 states, 6 events, every event defined in most states, one timeout."""
    states = [f"s{i}" for i in range(N_STATES)]
    transitions = [
        (states[i], f"e{j}", states[(i + j + 1) % N_STATES])
        for i in range(N_STATES)
        for j in range(N_EVENTS)
        if (i + j) % 7 != 3  # leave a few undefined
    ]
    return sk.Machine(
        "bench",
        states=states,
        initial="s0",
        final=["s7"],
        transitions=transitions,
        timeouts=[("s2", "1h", "s5")],
    )


def make_events(n: int, n_keys: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(1.1, size=n * 2)
    ranks = ranks[ranks <= n_keys][:n]
    while len(ranks) < n:  # pragma: no cover - extremely unlikely
        ranks = np.concatenate([ranks, rng.integers(1, n_keys + 1, n - len(ranks))])
    start = np.datetime64(datetime(2026, 1, 1), "us").astype(np.int64)
    ts = start + np.cumsum(rng.integers(0, 2_000_000, n))
    return pl.DataFrame(
        {
            "device": pl.Series(ranks.astype(np.int64)).cast(pl.String),
            "ts": pl.Series(ts).cast(pl.Datetime("us")),
            "event": pl.Series(rng.integers(0, N_EVENTS, n)).cast(pl.String).str.replace(r"^", "e"),
            "value": rng.normal(size=n),
        }
    )


def python_loop(src: sk.Log, dst: sk.Log, machine: sk.Machine, *, rows: bool = False) -> int:
    """The per-event Python baseline: same reading, same rules, same writing.

    ``rows=False`` walks column lists (the fastest plain Python we know);
    ``rows=True`` walks ``iter_rows(named=True)``, the loop most people write.
    """
    table = {(t.source, t.event): t.target for t in machine.transitions}
    tick = timedelta(microseconds=1)
    timeouts = {t.state: (t.after // tick, t.target) for t in machine.timeouts}
    state: dict[str, list[Any]] = {}
    out: dict[str, list[Any]] = {
        "key": [],
        "time": [],
        "event": [],
        "from_state": [],
        "to_state": [],
    }
    frame = src.scan().collect()
    wm = -(2**63)
    if rows:
        records = (
            (r["device"], r["ts"], r["event"])
            for r in frame.with_columns(pl.col("ts").cast(pl.Int64)).iter_rows(named=True)
        )
    else:
        records = zip(
            frame["device"].to_list(),
            frame["ts"].cast(pl.Int64).to_list(),
            frame["event"].to_list(),
            strict=True,
        )

    def fire(k: str, s: list[Any], bound: int) -> None:
        """Fire the timeouts of key ``k`` due by ``bound``."""
        while s[0] in timeouts and s[1] + timeouts[s[0]][0] <= bound:
            after, target = timeouts[s[0]]
            d = s[1] + after
            for col, v in zip(out, (k, d, "timeout", s[0], target), strict=True):
                out[col].append(v)
            s[0], s[1], s[2] = target, d, max(s[2], d)

    n = 0
    for k, t, ev in records:
        n += 1
        wm = max(wm, t)
        s = state.get(k)
        if s is None:
            s = state[k] = [machine.initial, t, t]
        if s[0] in timeouts:
            fire(k, s, wm)
        if t < s[2]:
            continue
        target = table.get((s[0], ev))
        if target is None:
            s[2] = t
            continue
        for col, v in zip(out, (k, t, ev, s[0], target), strict=True):
            out[col].append(v)
        s[0], s[1], s[2] = target, t, t
    for k, s in state.items():  # the batch-end flush: timeouts the log has moved past
        fire(k, s, wm)
    hist = pl.DataFrame(out).with_columns(pl.col("time").cast(pl.Datetime("us")))
    dst.append(hist)
    return n


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--keys", type=int, default=120_000)
    ap.add_argument("--batch-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats (medians)")
    ap.add_argument("--quick", action="store_true", help="400k events, one repeat")
    args = ap.parse_args(argv)
    n = 400_000 if args.quick else args.events
    if args.quick:
        args.repeat = 1
    machine = bench_machine()
    frame = make_events(n, args.keys)
    from streamkit.kernel import warmup

    warmup()
    with tempfile.TemporaryDirectory() as tmp:
        store = sk.Store(tmp)
        src = store.log("events", key="device", time="ts")
        for part in frame.iter_slices(500_000):
            src.append(part)

        # Interleaved repeats (pipeline, raw copy, Python loop, ...), so that a
        # busy moment of the machine falls on all three alike; medians.
        runs: dict[str, list[float]] = {"pipe": [], "copy": [], "loop": []}
        report = None
        for rep in range(args.repeat):
            pipe = (
                sk.Pipeline(f"bench-{rep}", store, batch_rows=args.batch_rows)
                .read(src)
                .transitions(machine, event="event", on_undefined="ignore")
                .write(store.log(f"history-{rep}", key="key", time="time"))
            )
            t0 = time.perf_counter()
            report = pipe.run(progress=False)
            runs["pipe"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            copy = store.log(f"copy-{rep}", key="device", time="ts")
            copy.append(src.scan().collect())
            runs["copy"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            loop_out = store.log(f"loop-history-{rep}", key="key", time="time")
            python_loop(src, loop_out, machine)
            runs["loop"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        rows_out = store.log("rows-history", key="key", time="time")
        python_loop(src, rows_out, machine, rows=True)
        t_rows = time.perf_counter() - t0
        assert report is not None
        same = (
            loop_out.scan().collect().height
            == rows_out.scan().collect().height
            == store.log("history-0").scan().collect().height
        )
        t_pipe, t_copy, t_loop = (float(np.median(runs[k])) for k in ("pipe", "copy", "loop"))

    figures = {
        "events": float(n),
        "pipeline_events_per_s": n / t_pipe,
        "copy_events_per_s": n / t_copy,
        "python_events_per_s": n / t_loop,
        "ratio_vs_copy": t_copy / t_pipe,
        "ratio_vs_python": t_loop / t_pipe,
        "python_rows_events_per_s": n / t_rows,
        "ratio_vs_python_rows": t_rows / t_pipe,
        "batches": float(report.batches),
    }
    print(
        f"{n:,} events, {args.keys:,} zipf keys, {report.batches} batches of "
        f"{args.batch_rows:,}; medians of {args.repeat} interleaved runs "
        f"(pipeline {', '.join(f'{t:.2f}' for t in runs['pipe'])} s; "
        f"python loop {', '.join(f'{t:.2f}' for t in runs['loop'])} s)"
    )
    print(f"  pipeline      {t_pipe:8.2f} s  {n / t_pipe:>12,.0f} events/s")
    print(f"  raw copy      {t_copy:8.2f} s  {n / t_copy:>12,.0f} events/s")
    print(f"  python loop   {t_loop:8.2f} s  {n / t_loop:>12,.0f} events/s  (column lists)")
    print(f"  python rows   {t_rows:8.2f} s  {n / t_rows:>12,.0f} events/s  (iter_rows)")
    print(f"  pipeline / raw copy       {figures['ratio_vs_copy']:.2f}x  (goal >= 0.7x)")
    print(f"  pipeline / python loop    {figures['ratio_vs_python']:.1f}x  (goal >= 8x)")
    print(f"  pipeline / python rows    {figures['ratio_vs_python_rows']:.1f}x  (goal >= 8x)")
    print(f"  same number of history rows as the loop: {same}")
    return figures


if __name__ == "__main__":
    main()
