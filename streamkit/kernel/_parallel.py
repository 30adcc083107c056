"""Running one kernel call in several key parts on a pool of threads.

A batch is cut by key, not by event: part ``p`` of ``P`` (a power of two) owns
the keys with ``(key_id >> GROUP_SHIFT) & (P - 1) == p``. Keys are
independent given the watermark, and every part computes the whole batch's
watermark, so the parts run at the same time (the compiled loops release the
GIL) and write disjoint events, key records and timeout rows. What is left is
to put the parts' timeout rows back into firing order (:func:`merge_runs`).

This module holds that machinery: the thread pool, the per-part timeout
buffers and the merge. The loops themselves live in :mod:`._numba`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numba
import numpy as np
import numpy.typing as npt

from streamkit.errors import ConfigurationError

__all__ = [
    "GROUP_SHIFT",
    "MAX_THREADS",
    "PARALLEL_MIN_EVENTS",
    "Buffers",
    "Timeouts",
    "THREADS_ENV",
    "available_cores",
    "default_threads",
    "in_parallel",
    "merge_runs",
    "parts_for",
    "timeout_buffers",
]

_I64_MAX = np.iinfo(np.int64).max
# Keys go to parts in groups of 2**GROUP_SHIFT consecutive ids: the records of
# a group share a 64-byte cache line, so no line is written by two threads.
GROUP_SHIFT = 1
# Batches of fewer events run in one thread: below this, starting threads costs
# more than it saves.
PARALLEL_MIN_EVENTS = 1 << 16
# Most key parts (threads) per call: each part reads every event once.
MAX_THREADS = 8


Buffers = tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int64],
]


def timeout_buffers(parts: int, cap: int) -> Buffers:
    """Fresh ``t_key, t_time, t_from, t_to, t_before`` buffers: ``parts`` regions of
    ``cap`` rows, region ``p`` for the timeout rows of part ``p``, and one spare
    row that the merge may read (never use) past a full last region.

    Allocated by numpy, which asks the OS for huge pages, so the kernel's first
    touch of each page is cheap; pages never touched cost no memory.
    """
    rows = parts * cap + 1
    return (
        np.empty(rows, dtype=np.int64),
        np.empty(rows, dtype=np.int64),
        np.empty(rows, dtype=np.int32),
        np.empty(rows, dtype=np.int32),
        np.empty(rows, dtype=np.int64),
    )


class Timeouts:
    """The timeout buffers of one kernel call, one region per part, grown on demand."""

    def __init__(self, parts: int, cap: int) -> None:
        self.parts = parts
        self.cap = cap
        self.bufs = timeout_buffers(parts, cap)
        self.m = [p * cap for p in range(parts)]  # next free row of each region

    def end(self, part: int) -> int:
        return (part + 1) * self.cap

    def grow(self) -> None:
        """Double every region, keeping the rows written so far."""
        cap = 2 * self.cap
        bufs = timeout_buffers(self.parts, cap)
        for p in range(self.parts):
            lo, hi = p * self.cap, self.m[p]
            for new, old in zip(bufs, self.bufs, strict=True):
                new[p * cap : p * cap + hi - lo] = old[lo:hi]  # type: ignore[index]
            self.m[p] = p * cap + hi - lo
        self.bufs, self.cap = bufs, cap

    def rows(self) -> Buffers:
        """All rows in firing order (views when there is one part)."""
        return merge_runs(
            self.bufs, [(p * self.cap, self.m[p]) for p in range(self.parts)], self.parts
        )


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - not Linux


#: Environment variable that caps the kernel's threads when ``threads`` is not
#: given (e.g. when several pipelines share a machine).
THREADS_ENV = "STREAMKIT_KERNEL_THREADS"


def default_threads() -> int:
    """The threads a large batch runs in by default: ``$STREAMKIT_KERNEL_THREADS``
    if set, else the cores this process may use."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return available_cores()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(
            f"{THREADS_ENV}={text!r}: expected a positive number of threads (1 for none)"
        )
    return value


def parts_for(threads: int | None, n: int) -> int:
    """How many key parts (threads) a batch of ``n`` events runs in: ``threads``
    (or :func:`default_threads` for batches of ``PARALLEL_MIN_EVENTS`` or more,
    else one) rounded down to a power of two, at most ``MAX_THREADS``."""
    if threads is None:
        threads = default_threads() if n >= PARALLEL_MIN_EVENTS else 1
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ConfigurationError(
            f"run_batch: expected threads to be a positive integer or None, found {threads!r}"
        )
    parts = 1
    while parts * 2 <= min(int(threads), MAX_THREADS):
        parts *= 2
    return parts


class _Pool:
    """The threads that run parts 1.. of every call (part 0 runs in the caller),
    started on first use and shared by all callers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    MAX_THREADS - 1, thread_name_prefix="streamkit-kernel"
                )
            return self._executor

    def forget(self) -> None:
        """After a fork the child has none of the parent's threads: start afresh."""
        self._lock = threading.Lock()
        self._executor = None


_POOL = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.forget)

_T = TypeVar("_T")


def in_parallel(fn: Callable[[int], _T], parts: Sequence[int]) -> list[_T]:
    """``[fn(p) for p in parts]``: the first in this thread, the rest in the pool.

    Returns only once every call has finished, even when one raises: the calls
    write into shared arrays, so none may outlive this function.
    """
    if len(parts) == 1:
        return [fn(parts[0])]
    pool = _POOL.get()
    futures = [pool.submit(fn, p) for p in parts[1:]]
    try:
        first = fn(parts[0])
    finally:
        wait(futures)
    return [first, *(f.result() for f in futures)]


@numba.njit(cache=True, nogil=True)
def _merge_two(
    a0: int,
    a1: int,
    b0: int,
    b1: int,
    t_key: Any,
    t_time: Any,
    t_from: Any,
    t_to: Any,
    t_before: Any,
    o_key: Any,
    o_time: Any,
    o_from: Any,
    o_to: Any,
    o_before: Any,
    o0: int,
) -> None:  # pragma: no cover - compiled
    """Merge timeout rows ``a0:a1`` and ``b0:b1`` (each in firing order, without
    a common key) into the ``o_*`` arrays from row ``o0``, by ``(t_before,
    t_key)``. The choice of the next row is a select, not a branch.

    An empty run's row ``a0`` (or ``b0``) is read but never used: past a full
    last region, that is the buffers' spare row.
    """
    top = np.int64(_I64_MAX)
    i = np.uint64(a0)
    j = np.uint64(b0)
    ua1 = np.uint64(a1)
    ub1 = np.uint64(b1)
    # Rows are read at clamped indices and an exhausted run reads as +inf, so the
    # loop has no data-dependent branch (t_before < int64 max always holds).
    a_last = max(ua1, i + np.uint64(1)) - np.uint64(1)
    b_last = max(ub1, j + np.uint64(1)) - np.uint64(1)
    for o in range(np.uint64(o0), np.uint64(o0) + (ua1 - i) + (ub1 - j)):
        ri = min(i, a_last)
        rj = min(j, b_last)
        bi = t_before[ri] if i < ua1 else top
        bj = t_before[rj] if j < ub1 else top
        take_j = (bj < bi) | ((bj == bi) & (t_key[rj] < t_key[ri]))
        r = rj if take_j else ri
        o_key[o] = t_key[r]
        o_time[o] = t_time[r]
        o_from[o] = t_from[r]
        o_to[o] = t_to[r]
        o_before[o] = t_before[r]
        j += np.uint64(take_j)
        i += np.uint64(not take_j)


def _split(bufs: Buffers, a: tuple[int, int], b: tuple[int, int], h: int) -> int:
    """How many rows of run ``a`` are among the first ``h`` rows of the merge of
    runs ``a`` and ``b`` (binary search on the merge path)."""
    t_key, t_before = bufs[0], bufs[4]

    def before(x: int, y: int) -> bool:  # row x fires before row y
        return bool((t_before[x], t_key[x]) < (t_before[y], t_key[y]))

    lo, hi = max(0, h - (b[1] - b[0])), min(h, a[1] - a[0])
    while lo < hi:
        mid = (lo + hi) // 2
        if before(a[0] + mid, b[0] + h - mid - 1):
            lo = mid + 1
        else:
            hi = mid
    return lo


def merge_runs(bufs: Buffers, runs: list[tuple[int, int]], parts: int) -> Buffers:
    """The timeout rows of ``runs`` (row ranges of ``bufs``, each in firing order,
    no key in two runs) in firing order: merged pairwise, each merge cut into
    ``parts`` slices that run in parallel.

    Two parts never share a key, so each key's chain stays together and in
    order, exactly as one thread would have fired it. One run is returned as
    views.
    """
    total = sum(hi - lo for lo, hi in runs)
    while len(runs) > 1:
        out = timeout_buffers(1, total)
        merged = []
        at = 0
        for x in range(0, len(runs), 2):
            a, b = runs[x], runs[x + 1] if x + 1 < len(runs) else (0, 0)
            rows = _merge_pair(bufs, a, b, out, at, parts)
            merged.append((at, at + rows))
            at += rows
        bufs, runs = out, merged
    lo, hi = runs[0]
    return (bufs[0][lo:hi], bufs[1][lo:hi], bufs[2][lo:hi], bufs[3][lo:hi], bufs[4][lo:hi])


def _merge_pair(
    bufs: Buffers, a: tuple[int, int], b: tuple[int, int], out: Buffers, at: int, parts: int
) -> int:
    """Merge runs ``a`` and ``b`` of ``bufs`` into ``out`` from row ``at``, in
    ``parts`` slices cut on the merge path; returns the rows written."""
    rows = a[1] - a[0] + b[1] - b[0]
    cuts = [rows * p // parts for p in range(parts + 1)]
    took = [_split(bufs, a, b, h) for h in cuts]  # rows of `a` before each cut

    def merge_slice(p: int) -> None:
        i0, i1 = a[0] + took[p], a[0] + took[p + 1]
        j0, j1 = b[0] + cuts[p] - took[p], b[0] + cuts[p + 1] - took[p + 1]
        _merge_two(i0, i1, j0, j1, *bufs, *out, at + cuts[p])

    in_parallel(merge_slice, range(parts))
    return rows
