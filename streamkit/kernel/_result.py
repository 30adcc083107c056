"""What one kernel call returns, and the merged order of its history rows."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "FIRED",
    "LATE",
    "NO_WATERMARK",
    "UNDEFINED",
    "BatchResult",
    "history_order",
]


def readonly(values: npt.ArrayLike, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """A read-only, C-contiguous view (or copy) of ``values`` as ``dtype``.

    Compiled functions get every input through this, so that numba sees one
    array type per argument and compiles (and caches) one specialisation.
    """
    view = np.ascontiguousarray(values, dtype=dtype).view()
    view.setflags(write=False)
    return view


#: Bytes in a cache line: record and slot buffers start on this boundary.
CACHE_LINE = 64


def zeros_aligned(n: int, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """``n`` zeros of ``dtype`` starting on a cache-line boundary.

    numpy aligns large buffers to 16 bytes only, so every other 32-byte record
    (or hash slot) of an unaligned buffer spans two cache lines: two misses
    instead of one for the kernel, which touches them at random.
    """
    size = np.dtype(dtype).itemsize
    raw = np.zeros(n + CACHE_LINE // size, dtype=dtype)
    skip = (-raw.ctypes.data % CACHE_LINE) // size
    return raw[skip : skip + n]


#: Status of an event that fired a declared transition (self-loops included).
FIRED = 0
#: Status of an event with no declared transition from the key's state.
UNDEFINED = 1
#: Status of an event older than its key's last processed event or timeout.
LATE = 2
#: The carried watermark before any event was seen (int64 minimum).
NO_WATERMARK = int(np.iinfo(np.int64).min)


@dataclasses.dataclass(frozen=True, eq=False)
class BatchResult:
    """Outcome of one batch: per-event transitions and the timeouts that fired.

    Attributes
    ----------
    from_state, to_state : numpy.ndarray of int32, one per event
        The key's state before and after the event (equal for undefined and
        late events).
    status : numpy.ndarray of int8, one per event
        ``FIRED`` (0), ``UNDEFINED`` (1) or ``LATE`` (2).
    t_key, t_time, t_from, t_to, t_before : numpy.ndarray, one per fired timeout
        Key id, time (``since + after``, in ticks), from and to state, and the
        index of the event before which the timeout fired (``n``, the number of
        events, for the flush at the batch end). Rows are in firing order, so
        ``t_before`` is non-decreasing.
    watermark : int
        The watermark to carry into the next batch.

    Examples
    --------
    >>> import numpy as np
    >>> from streamkit.kernel import CompiledMachine, KeyState, run_batch
    >>> cm = CompiledMachine(("a", "b"), ("go",), np.array([[1], [1]]),
    ...                      np.array([-1, 5]), np.array([-1, 0]), 0)
    >>> r = run_batch(cm, np.array([0, 0]), np.array([0, 0], dtype=np.int32),
    ...               np.array([1, 10]), KeyState.empty(1), watermark=NO_WATERMARK)
    >>> r.to_state.tolist(), r.t_time.tolist(), r.t_before.tolist(), r.watermark
    ([1, 1], [6], [1], 10)
    """

    from_state: npt.NDArray[np.int32]
    to_state: npt.NDArray[np.int32]
    status: npt.NDArray[np.int8]
    t_key: npt.NDArray[np.int64]
    t_time: npt.NDArray[np.int64]
    t_from: npt.NDArray[np.int32]
    t_to: npt.NDArray[np.int32]
    t_before: npt.NDArray[np.int64]
    watermark: int

    @property
    def n_events(self) -> int:
        """Number of events in the batch."""
        return len(self.status)

    @property
    def n_timeouts(self) -> int:
        """Number of timeouts that fired."""
        return len(self.t_key)

    @property
    def n_fired(self) -> int:
        """Number of events that fired a declared transition."""
        return int((self.status == FIRED).sum())

    @property
    def n_undefined(self) -> int:
        """Number of events without a declared transition."""
        return int((self.status == UNDEFINED).sum())

    @property
    def n_late(self) -> int:
        """Number of late events."""
        return int((self.status == LATE).sum())

    def equals(self, other: BatchResult) -> bool:
        """True when every array and the watermark are identical (dtypes included).

        Examples
        --------
        >>> from streamkit.kernel import BatchResult
        >>> import numpy as np
        >>> e32, e64 = np.empty(0, np.int32), np.empty(0, np.int64)
        >>> r = BatchResult(e32, e32, np.empty(0, np.int8), e64, e64, e32, e32, e64, 7)
        >>> r.equals(r)
        True
        """
        if self.watermark != other.watermark:
            return False
        for field in dataclasses.fields(self):
            a, b = getattr(self, field.name), getattr(other, field.name)
            if isinstance(a, np.ndarray) and (a.dtype != b.dtype or not np.array_equal(a, b)):
                return False
        return True

    def __repr__(self) -> str:
        return (
            f"BatchResult({self.n_events} events: {self.n_fired} fired, "
            f"{self.n_undefined} undefined, {self.n_late} late; {self.n_timeouts} timeouts; "
            f"watermark={self.watermark})"
        )


def history_order(
    result: BatchResult, *, only_fired: bool = False
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Merge event rows and timeout rows into the order in which they happened.

    Timeouts that fired before event ``i`` come before event ``i``; the batch-end
    flush comes last; within each group rows keep their firing order. Emitting
    history rows in this order keeps every key's rows in per-key firing order.

    Parameters
    ----------
    result : BatchResult
    only_fired : bool, default False
        Drop events whose status is not ``FIRED`` (undefined and late events go
        to the quarantine, not to the history).

    Returns
    -------
    is_timeout : numpy.ndarray of bool
        Per output row, whether it is a timeout row.
    index : numpy.ndarray of int64
        Per output row, the index into the event arrays (``is_timeout`` False) or
        into the ``t_*`` arrays (``is_timeout`` True).

    Examples
    --------
    >>> import numpy as np
    >>> from streamkit.kernel import CompiledMachine, KeyState, run_batch
    >>> cm = CompiledMachine(("a", "b"), ("go",), np.array([[1], [1]]),
    ...                      np.array([-1, 5]), np.array([-1, 0]), 0)
    >>> r = run_batch(cm, np.array([0, 0]), np.array([0, 0], dtype=np.int32),
    ...               np.array([1, 10]), KeyState.empty(1), watermark=NO_WATERMARK)
    >>> is_timeout, index = history_order(r)
    >>> is_timeout.tolist(), index.tolist()
    ([False, True, False], [0, 0, 1])
    """
    n = result.n_events
    m = result.n_timeouts
    before = result.t_before
    is_timeout = np.zeros(n + m, dtype=np.bool_)
    index = np.empty(n + m, dtype=np.int64)
    # Event i is preceded by events 0..i-1 and by the timeouts with t_before <= i.
    ev_pos = np.arange(n, dtype=np.int64) + np.searchsorted(before, np.arange(n), side="right")
    # Timeout j is preceded by timeouts 0..j-1 and by events 0..t_before[j]-1.
    to_pos = np.arange(m, dtype=np.int64) + before
    index[ev_pos] = np.arange(n, dtype=np.int64)
    index[to_pos] = np.arange(m, dtype=np.int64)
    is_timeout[to_pos] = True
    if only_fired:
        keep = is_timeout.copy()
        keep[ev_pos] = result.status == FIRED
        return is_timeout[keep], index[keep]
    return is_timeout, index
