"""The kernel split in key parts on several threads: same results as one thread."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.errors import ConfigurationError
from streamkit.kernel import (
    NO_WATERMARK,
    BatchResult,
    CompiledMachine,
    KeyState,
    _parallel,
    run_batch,
)
from streamkit.kernel.reference import run_batch_reference


def _machine() -> CompiledMachine:
    """4 states, 3 events, a timeout chain 1 -> 2 -> 3 and a cycle 3 -> 0."""
    table = np.array([[1, -1, 0], [2, 0, -1], [-1, 3, 1], [0, -1, -1]])
    return CompiledMachine(
        ("a", "b", "c", "d"),
        ("x", "y", "z"),
        table,
        np.array([-1, 40, 25, 300]),
        np.array([-1, 2, 3, 0]),
        0,
    )


Stream = tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64]]


def _stream(n: int, n_keys: int, seed: int) -> Stream:
    """Zipf-ish keys, unknown events, ties and late events."""
    rng = np.random.default_rng(seed)
    keys = np.minimum(rng.zipf(1.3, n) - 1, n_keys - 1).astype(np.int64)
    keys = rng.permutation(n_keys)[keys]
    events = rng.integers(-1, 3, n).astype(np.int32)
    times = np.cumsum(rng.integers(0, 3, n)).astype(np.int64)
    late = rng.random(n) < 0.02
    times[late] -= rng.integers(1, 200, int(late.sum()))
    return keys, events, times


def _run(
    threads: int | None, cm: CompiledMachine, stream: Stream, n_keys: int
) -> tuple[BatchResult, KeyState]:
    state = KeyState.empty(n_keys)
    keys, events, times = stream
    result = run_batch(cm, keys, events, times, state, watermark=NO_WATERMARK, threads=threads)
    return result, state


def test_a_large_batch_on_every_thread_count_equals_the_reference() -> None:
    """Above the threshold the default splits the batch; every split gives the
    reference's result, timeouts in firing order included."""
    cm, n_keys = _machine(), 3_000
    stream = _stream(120_000, n_keys, seed=1)
    assert len(stream[0]) >= _parallel.PARALLEL_MIN_EVENTS
    ref_state = KeyState.empty(n_keys)
    ref = run_batch_reference(cm, *stream, ref_state, watermark=NO_WATERMARK)
    # More timeouts than the first buffers hold (64 + n // 8 rows over all
    # parts), so they grow whatever the split.
    assert ref.n_timeouts > 64 + len(stream[0]) // 8
    for threads in (None, 1, 2, 4, 8):
        result, state = _run(threads, cm, stream, n_keys)
        assert result.equals(ref), threads
        assert state.equals(ref_state), threads


def test_concurrent_callers_share_the_pool() -> None:
    """Several Python threads (a Dask worker, the pipeline) may call at once."""
    cm, n_keys = _machine(), 500
    streams = [_stream(80_000, n_keys, seed=s) for s in range(4)]
    expected = [_run(1, cm, s, n_keys)[0] for s in streams]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda s: _run(2, cm, s, n_keys)[0], streams))
    assert all(g.equals(e) for g, e in zip(got, expected, strict=True))


def _child(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    cm, n_keys = _machine(), 100
    result, _ = _run(2, cm, _stream(5_000, n_keys, seed=3), n_keys)
    queue.put(result.n_timeouts)


def test_a_forked_child_starts_its_own_threads() -> None:
    """The pool's threads do not survive a fork; the child must not wait on them."""
    cm, n_keys = _machine(), 100
    parent, _ = _run(2, cm, _stream(5_000, n_keys, seed=3), n_keys)  # the pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    try:
        assert queue.get(timeout=60) == parent.n_timeouts
    finally:
        child.join(timeout=60)
    assert child.exitcode == 0


@pytest.mark.parametrize(("threads", "parts"), [(1, 1), (2, 2), (3, 2), (7, 4), (8, 8), (64, 8)])
def test_thread_counts_round_down_to_a_power_of_two(threads: int, parts: int) -> None:
    assert _parallel.parts_for(threads, 10) == parts


def test_small_batches_run_in_one_thread_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_parallel.THREADS_ENV, raising=False)
    assert _parallel.parts_for(None, _parallel.PARALLEL_MIN_EVENTS - 1) == 1
    assert _parallel.parts_for(None, _parallel.PARALLEL_MIN_EVENTS) == min(
        8, 1 << (_parallel.available_cores().bit_length() - 1)
    )


@pytest.mark.parametrize("threads", [0, -2, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(threads: object) -> None:
    cm = _machine()
    with pytest.raises(ConfigurationError, match="threads"):
        run_batch(
            cm,
            [0],
            [0],
            [1],
            KeyState.empty(1),
            watermark=NO_WATERMARK,
            threads=threads,  # type: ignore[arg-type]
        )


def test_an_empty_batch_with_threads_flushes_every_part() -> None:
    cm = _machine()
    state = KeyState.from_arrays([1, 1, 1, 1, 1], [0, 0, 0, 0, 50], [0, 0, 0, 0, 50], [1] * 5)
    empty = np.array([], dtype=np.int64)
    result: BatchResult = run_batch(
        cm, empty, empty.astype(np.int32), empty, state, watermark=45, threads=4
    )
    assert result.t_key.tolist() == [0, 1, 2, 3]  # key order across the four parts
    assert result.t_before.tolist() == [0, 0, 0, 0]
    assert state.state.tolist() == [2, 2, 2, 2, 1]


_UNCOMPILED_AFTER_WARMUP = """
import importlib, pkgutil
from numba.core.registry import CPUDispatcher
import streamkit.kernel as package
package.warmup()
for info in pkgutil.iter_modules(package.__path__):
    module = importlib.import_module(f"streamkit.kernel.{info.name}")
    for name, value in vars(module).items():
        if isinstance(value, CPUDispatcher) and value.__module__ == module.__name__:
            if value.targetoptions.get("inline") != "always" and not value.signatures:
                print(f"{info.name}.{name}")
"""


def test_warmup_compiles_every_compiled_function_of_the_kernel() -> None:
    """A notebook pays compile (or cache load) time in warmup(), never in a
    first large batch: in a fresh process, every numba dispatcher of the
    package has a compiled signature after warmup() (inline-only helpers are
    compiled into their callers)."""
    proc = subprocess.run(
        [sys.executable, "-c", _UNCOMPILED_AFTER_WARMUP],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    assert proc.stdout.split() == []


@st.composite
def _part_runs(draw: st.DrawFn) -> tuple[_parallel.Buffers, list[tuple[int, int]], int]:
    """Timeout buffers of 1-8 parts, each region holding a run in firing order
    (ties of (before, key) are chains of one key), some regions empty or full."""
    parts = draw(st.sampled_from([1, 2, 4, 8]))
    cap = draw(st.integers(1, 12))
    bufs = _parallel.timeout_buffers(parts, cap)
    runs = []
    for p in range(parts):
        rows = draw(st.one_of(st.just(cap), st.integers(0, cap)))
        before = sorted(draw(st.lists(st.integers(0, 6), min_size=rows, max_size=rows)))
        keys = draw(st.lists(st.integers(0, 3), min_size=rows, max_size=rows))
        pairs = sorted(zip(before, (k * parts + p for k in keys), strict=True))
        lo = p * cap
        for i, (b, k) in enumerate(pairs):
            bufs[0][lo + i], bufs[4][lo + i] = k, b
            bufs[1][lo + i] = draw(st.integers(-(2**63), 2**63 - 1))
            bufs[2][lo + i], bufs[3][lo + i] = draw(st.integers(0, 9)), lo + i
        runs.append((lo, lo + rows))
    return bufs, runs, draw(st.integers(1, 4))


@settings(max_examples=300, deadline=None)
@given(_part_runs())
def test_merging_the_parts_timeouts_gives_firing_order(
    case: tuple[_parallel.Buffers, list[tuple[int, int]], int],
) -> None:
    """merge_runs equals a stable sort by (before, key) of all rows: rows move
    whole, a key's chain keeps its order, full and empty regions included."""
    bufs, runs, slices = case
    rows = np.concatenate([np.arange(lo, hi) for lo, hi in runs])
    order = rows[np.lexsort((bufs[0][rows], bufs[4][rows]))]  # stable
    merged = _parallel.merge_runs(bufs, runs, slices)
    for got, column in zip(merged, bufs, strict=True):
        np.testing.assert_array_equal(got, column[order])


def test_the_environment_caps_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    big = _parallel.PARALLEL_MIN_EVENTS
    monkeypatch.setenv(_parallel.THREADS_ENV, "1")
    assert _parallel.parts_for(None, big) == 1
    assert _parallel.parts_for(4, big) == 4  # an explicit count wins
    monkeypatch.setenv(_parallel.THREADS_ENV, " 6 ")
    assert _parallel.parts_for(None, big) == 4
    assert _parallel.parts_for(None, big - 1) == 1
    monkeypatch.setenv(_parallel.THREADS_ENV, "")
    assert _parallel.parts_for(None, big) == _parallel.parts_for(_parallel.available_cores(), big)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(_parallel.THREADS_ENV, value)
    with pytest.raises(ConfigurationError, match="STREAMKIT_KERNEL_THREADS"):
        _parallel.parts_for(None, _parallel.PARALLEL_MIN_EVENTS)


def test_one_thread_never_touches_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """threads=1 (what DaskExecutor's partitions ask for) keeps the whole call,
    bounds check included, in the caller's thread, however large the batch."""

    def no_pool() -> None:
        raise AssertionError("the pool was used")

    monkeypatch.setattr(_parallel._POOL, "get", no_pool)
    cm, n_keys = _machine(), 1_000
    stream = _stream(2 * _parallel.PARALLEL_MIN_EVENTS, n_keys, seed=5)
    result, state = _run(1, cm, stream, n_keys)
    ref_state = KeyState.empty(n_keys)
    assert result.equals(run_batch_reference(cm, *stream, ref_state, watermark=NO_WATERMARK))
    assert state.equals(ref_state)
