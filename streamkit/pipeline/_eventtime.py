"""Event time with bounded out-of-orderness: when each event is applied.

The log is read in its order; after reading event ``i`` the watermark is

    W(i) = max(W_prev, max(times read so far) - lateness)

(it never goes back). An event waits until the watermark reaches its time and
is then *released*; events released by the same read are applied in (time, log
order), each after its key's timeouts up to ``max(W before that read, time)``;
at the end of a batch every key's timeouts fire up to the batch's watermark.
This is what a streaming engine does event by event (Flink's bounded
out-of-orderness with a CEP-style buffer), so the result does not depend on
how the log is cut into batches; with ``lateness = 0`` every event is released
by its own read, in log order -- streamkit's behaviour without lateness.

An event is late when its key has already moved past its time (a later event
or a timeout was applied): with lateness that happens only to an event that
arrives after the watermark passed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

NOTHING = int(np.iinfo(np.int64).min)  # no time read yet


@dataclass(frozen=True)
class Release:
    """Which events a batch applies, in which order, with which watermarks.

    ``order`` indexes the concatenation ``[waiting..., new...]`` (waiting events
    first: they were read earlier); ``wm`` is each applied event's watermark in
    that order; ``held_waiting``/``held_new`` are the events that keep waiting.
    """

    order: npt.NDArray[np.int64]
    wm: npt.NDArray[np.int64]
    held_waiting: npt.NDArray[np.bool_]
    held_new: npt.NDArray[np.bool_]
    watermark: int  # after the batch
    max_time: int  # largest time read


def _lower(values: npt.NDArray[np.int64], by: int) -> npt.NDArray[np.int64]:
    """``values - by`` without wrapping below int64's minimum (``by >= 0``)."""
    return np.maximum(values, NOTHING + by) - by


def release(
    new_times: npt.NDArray[np.int64],
    new_offsets: npt.NDArray[np.int64],
    waiting_times: npt.NDArray[np.int64],
    waiting_offsets: npt.NDArray[np.int64],
    *,
    watermark: int,
    max_time: int,
    lateness: int,
    final: bool = False,
) -> Release:
    """Plan one batch: new events (log order) and the events still waiting.

    Parameters
    ----------
    new_times, new_offsets
        The batch's events in log order (times in ticks, source offsets).
    waiting_times, waiting_offsets
        Events read by earlier batches that still wait.
    watermark, max_time
        Carried from the previous batch (``NOTHING`` before the first).
    lateness
        Ticks (``>= 0``).
    final
        End of input: after the batch the watermark moves to the largest time
        read, so that every waiting event is applied.

    Examples
    --------
    >>> t = np.array([10, 30, 12, 50]); off = np.arange(4)
    >>> r = release(t, off, t[:0], off[:0], watermark=NOTHING, max_time=NOTHING, lateness=5)
    >>> r.order.tolist(), r.wm.tolist(), r.held_new.tolist(), r.watermark
    ([0, 2, 1], [10, 25, 30], [False, False, False, True], 45)
    """
    n = len(new_times)
    m = len(waiting_times)
    if n:
        seen = np.maximum.accumulate(np.concatenate(([max_time], new_times)))[1:]
        wms = np.maximum(watermark, _lower(seen, lateness))
        top = int(seen[-1])
    else:
        wms = np.empty(0, np.int64)
        top = max_time
    end = int(wms[-1]) if n else watermark
    if final and top != NOTHING:
        end = max(end, top)
    times = np.concatenate([waiting_times, new_times]).astype(np.int64)
    offsets = np.concatenate([waiting_offsets, new_offsets]).astype(np.int64)
    # The read that releases each event: the first at or after its own whose
    # watermark reaches its time; n (past the batch) keeps it waiting, unless final.
    j = _releasing_reads(wms, times, m)
    out = j < n
    if final:
        out |= times <= end
    picked = np.flatnonzero(out)
    order = picked[_order(j[picked], times[picked], offsets[picked])]
    # Timeouts up to the watermark before the releasing read have fired already.
    before = np.concatenate(([watermark], wms))  # before[j]: W before read j (j <= n)
    wm = np.maximum(before[j[order]], times[order])
    return Release(
        order=order.astype(np.int64),
        wm=wm.astype(np.int64),
        held_waiting=~out[:m],
        held_new=~out[m:],
        watermark=end,
        max_time=top,
    )


def _order(
    j: npt.NDArray[np.int64], times: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64]
) -> npt.NDArray[np.intp]:
    """Positions sorted by (``j``, ``times``, ``offsets``), ties in position order.

    Offsets normally ascend with position (waiting events, then the batch, each
    in log order): two stable sorts of nearly sorted keys (timsort) then do it,
    a few times faster than a three-key ``lexsort``.
    """
    if len(offsets) > 1 and not bool((offsets[1:] >= offsets[:-1]).all()):
        return np.lexsort((offsets, times, j))
    by_time = np.argsort(times, kind="stable")
    return by_time[np.argsort(j[by_time], kind="stable")]


@numba.njit(cache=True, nogil=True, inline="always")
def _first_reaching(wms: Any, t: Any, lo: Any, hi: Any) -> Any:  # pragma: no cover - compiled
    """The first ``k`` in ``[lo, hi]`` with ``wms[k] >= t`` (``hi`` if none before it)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if wms[mid] >= t:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True, nogil=True)
def _releasing_reads(
    wms: npt.NDArray[np.int64], times: npt.NDArray[np.int64], m: int
) -> npt.NDArray[np.int64]:  # pragma: no cover - compiled
    """For each event (``m`` waiting ones, then the batch's), the first read at
    or after its own (the batch's ``i``-th event is read ``i``; waiting ones
    before read 0) whose watermark ``wms`` (non-decreasing) reaches its time;
    ``len(wms)`` if none.

    Equals ``max(i, searchsorted(wms, t, "left"))``; one pass that gallops from
    the previous answer, so nearly sorted times cost O(1) each.
    """
    n = len(wms)
    out = np.empty(len(times), dtype=np.int64)
    p = 0  # the previous answer: the first k with wms[k] >= its time (n: none)
    for u in range(len(times)):
        t = times[u]
        if p == n or wms[p] >= t:  # the answer is at or before p (n: none)
            lo, hi, step = p, p, 1
            while lo > 0 and wms[lo - 1] >= t:
                hi = lo - 1
                lo = max(lo - step, 0)
                step *= 2
            p = _first_reaching(wms, t, lo, hi)  # wms[hi] >= t
        else:  # after p
            lo, hi, step = p + 1, p + 1, 1
            while hi < n and wms[hi] < t:
                lo = hi + 1
                hi = min(hi + step, n)
                step *= 2
            p = _first_reaching(wms, t, lo, min(hi, n))  # n if none (wms[lo - 1] < t)
        i = u - m
        out[u] = p if p >= i else i
    return out
