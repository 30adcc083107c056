"""Event time with bounded out-of-orderness: when each event is applied.

The source is read in log order, and every row read moves the watermark, also
a row that an operator (a filter) drops before ``.transitions()``: after read
``i`` the watermark is

    W(i) = max(W_prev, max(times read so far) - lateness)

(it never goes back). An event waits until the watermark reaches its time and
is then *released*; events released by the same read are applied in (time, log
order), each after its key's timeouts up to ``max(W before that read, time)``;
at the end of a batch every key's timeouts fire up to the batch's watermark.
This is what a streaming engine does event by event (Flink's bounded
out-of-orderness with a CEP-style buffer, watermarks taken at the source), so
the result does not depend on how the log is cut into batches, nor on which
rows a worker reads: a task that holds some keys needs the rows of its own
segments and, for every other stretch of the batch, only its largest time
(``reads`` may be such a summary, see :func:`release`). With ``lateness = 0``
every event is released by its own read, in log order -- streamkit's
behaviour without lateness.

An event is late when its key has already moved past its time (a later event
or a timeout was applied): with lateness that happens only to an event that
arrives after the watermark passed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import polars as pl

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
    reads: Reads | None = None,
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
    reads
        The rows read from the source, which move the watermark (default: the
        events themselves). Every event's offset must be among them.

    Examples
    --------
    >>> t = np.array([10, 30, 12, 50]); off = np.arange(4)
    >>> r = release(t, off, t[:0], off[:0], watermark=NOTHING, max_time=NOTHING, lateness=5)
    >>> r.order.tolist(), r.wm.tolist(), r.held_new.tolist(), r.watermark
    ([0, 2, 1], [10, 25, 30], [False, False, False, True], 45)

    A read that is not an event (a row a filter dropped) moves the watermark too:

    >>> reads = Reads(np.arange(5), np.array([10, 30, 12, 50, 90]))
    >>> r = release(t, off, t[:0], off[:0], watermark=NOTHING, max_time=NOTHING, lateness=5,
    ...             reads=reads)
    >>> r.held_new.tolist(), r.watermark
    ([False, False, False, False], 85)
    """
    m = len(waiting_times)
    if reads is not None and reads.are(len(new_times)):
        reads = None
    if reads is None:
        reads = Reads(np.asarray(new_offsets, dtype=np.int64), np.asarray(new_times, np.int64))
        own = np.arange(len(new_times), dtype=np.int64)
    else:
        own = reads.index_of(new_offsets)
    n = len(reads.times)
    wms, top = reads.watermarks(watermark, max_time, lateness)
    end = int(wms[-1]) if n else watermark
    if final and top != NOTHING:
        end = max(end, top)
    times = np.concatenate([waiting_times, new_times]).astype(np.int64)
    offsets = np.concatenate([waiting_offsets, new_offsets]).astype(np.int64)
    # The read that releases each event: the first at or after its own whose
    # watermark reaches its time; n (past the batch) keeps it waiting, unless final.
    j = _releasing_reads(wms, times, np.concatenate([np.full(m, -1, np.int64), own]))
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


class Reads:
    """The source rows a batch read, in log order: offsets and times (ticks).

    They move the watermark. A worker that holds some keys may pass, for a
    stretch of the log holding none of its keys, one row standing for it (the
    stretch's last offset, its largest time): its events are released in the
    same order and with the same watermarks, because no event of its own lies
    inside the stretch.

    Built from a batch (:meth:`of`), the arrays are taken only when needed:
    when every row read reaches the keyed operator (no filter dropped one; no
    operator adds or reorders rows) the events are the reads (:meth:`are`).
    """

    def __init__(
        self,
        offsets: npt.NDArray[np.int64] | None = None,
        times: npt.NDArray[np.int64] | None = None,
        *,
        frame: Any = None,
        columns: tuple[str, str] = ("", ""),
        extra: Sequence[tuple[int, int]] = (),
    ) -> None:
        self._offsets, self._times = offsets, times
        self._frame, self._columns, self._extra = frame, columns, list(extra)

    @classmethod
    def of(cls, batch: Any, time: str, offset: str, extra: Sequence[tuple[int, int]] = ()) -> Reads:
        """The reads of a source batch (a frame in log order with an offset column),
        and ``extra`` stand-in reads ``(offset, time)``."""
        return cls(frame=batch, columns=(offset, time), extra=extra)

    def __len__(self) -> int:
        if self._frame is not None:
            return int(self._frame.height) + len(self._extra)
        return len(self.offsets)

    def are(self, events: int) -> bool:
        """Whether the ``events`` events reaching the keyed operator are these reads."""
        return self._frame is not None and not self._extra and self._frame.height == events

    def rows_are(self, events: int) -> bool:
        """Whether the events are the batch's rows (stand-ins aside): no row dropped."""
        return self._frame is not None and self._frame.height == events

    def stand_ins_before(self, offsets: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], int]:
        """Per event (by offset, ascending), the largest stand-in time read before it
        (``NOTHING`` if none), and the largest stand-in time of the batch."""
        if not self._extra:
            return np.full(len(offsets), NOTHING, np.int64), NOTHING
        extra = sorted(self._extra)
        at = np.array([o for o, _ in extra], np.int64)
        top = np.maximum.accumulate(np.array([t for _, t in extra], np.int64))
        k = np.searchsorted(at, offsets)  # stand-ins before each event
        before = np.concatenate(([NOTHING], top))[k]
        return before.astype(np.int64), int(top[-1])

    def _take(self) -> None:
        if self._offsets is not None:
            return
        offset, time = self._columns
        frame = self._frame
        offsets = frame[offset].cast(pl.Int64).to_numpy()
        times = frame[time].cast(pl.Int64).to_numpy()
        if self._extra:
            offsets = np.concatenate([offsets, np.array([o for o, _ in self._extra], np.int64)])
            times = np.concatenate([times, np.array([t for _, t in self._extra], np.int64)])
            order = np.argsort(offsets, kind="stable")
            offsets, times = offsets[order], times[order]
        self._offsets, self._times = offsets, times

    @property
    def offsets(self) -> npt.NDArray[np.int64]:
        self._take()
        assert self._offsets is not None
        return self._offsets

    @property
    def times(self) -> npt.NDArray[np.int64]:
        self._take()
        assert self._times is not None
        return self._times

    def index_of(self, offsets: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The read of each event (by its source offset)."""
        at = np.searchsorted(self.offsets, offsets)
        if len(offsets) and (
            int(at.max()) >= len(self.offsets)
            or not np.array_equal(self.offsets[at], np.asarray(offsets))
        ):
            raise AssertionError("an event's offset is not among the batch's reads")
        return at.astype(np.int64)

    def watermarks(
        self, watermark: int, max_time: int, lateness: int
    ) -> tuple[npt.NDArray[np.int64], int]:
        """The watermark after every read, and the largest time read."""
        if not len(self.times):
            return np.empty(0, np.int64), max_time
        seen = np.maximum.accumulate(np.concatenate(([max_time], self.times)))[1:]
        return np.maximum(watermark, _lower(seen, lateness)), int(seen[-1])


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
    wms: npt.NDArray[np.int64], times: npt.NDArray[np.int64], own: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:  # pragma: no cover - compiled
    """For each event, the first read at or after its own (``own``: -1 for an
    event read by an earlier batch) whose watermark ``wms`` (non-decreasing)
    reaches its time; ``len(wms)`` if none.

    Equals ``max(own, searchsorted(wms, t, "left"))``; one pass that gallops
    from the previous answer, so nearly sorted times cost O(1) each.
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
        i = own[u]
        out[u] = p if p >= i else i
    return out
