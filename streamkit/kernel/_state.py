"""Per-key state, indexed by dense key id, that the kernel mutates in place.

The four fields of a key live side by side in one 32-byte record (a row of an
int64 ``(capacity, 4)`` buffer: state in the low half of slot 0, then since,
last and events), so the kernel touches one cache line per event instead of
four. ``state``, ``since``, ``last`` and ``events`` are strided views of that
buffer.
"""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt
import polars as pl

from streamkit.errors import CheckpointError
from streamkit.kernel._result import zeros_aligned

__all__ = ["KeyState"]

_COLUMNS = {"state": pl.Int32, "since": pl.Int64, "last": pl.Int64, "events": pl.Int64}
#: Slots of a key's record in the int64 buffer.
SLOT_STATE, SLOT_SINCE, SLOT_LAST, SLOT_EVENTS = 0, 1, 2, 3
#: The int32 column, in the buffer viewed as int32 pairs, holding the low half of slot 0.
_STATE_HALF = 0 if sys.byteorder == "little" else 1


class KeyState:
    """Per-key machine state: four arrays indexed by dense key id.

    ``state`` (int32, -1 = key never seen), ``since`` (int64 ticks, when the key
    entered its current state), ``last`` (int64 ticks, the key's last processed
    event or fired timeout) and ``events`` (int64, events applied: fired or
    undefined, not late ones). The attributes are writable (strided) views of the
    first ``len(self)`` records of a larger buffer that keeps a key's four values
    in one 32-byte record, so :meth:`grow` is amortised O(1) per key and the
    kernel reads and writes one cache line per event. Views taken before a
    :meth:`grow` that reallocates no longer write through; take them again.

    Parameters
    ----------
    n : int, default 0
        Number of keys, all "never seen".

    Examples
    --------
    >>> st = KeyState.empty(2)
    >>> st.state.tolist()
    [-1, -1]
    >>> st.grow(3)
    >>> len(st), st.state.tolist()
    (3, [-1, -1, -1])
    """

    __slots__ = ("_buf", "_n")

    def __init__(self, n: int = 0) -> None:
        if n < 0:
            raise ValueError(f"KeyState: expected a non-negative number of keys, found {n}")
        self._buf = _new_records(max(n, 16))
        self._n = n

    @classmethod
    def empty(cls, n: int = 0) -> KeyState:
        """Return state for ``n`` keys that were never seen.

        Examples
        --------
        >>> len(KeyState.empty(5))
        5
        """
        return cls(n)

    @classmethod
    def from_arrays(
        cls,
        state: npt.ArrayLike,
        since: npt.ArrayLike,
        last: npt.ArrayLike,
        events: npt.ArrayLike,
    ) -> KeyState:
        """Build state from four equally long arrays (copied).

        Raises
        ------
        CheckpointError
            If the lengths differ or a value is inconsistent (state < -1, a
            negative event count, or ``last < since`` for a seen key).

        Examples
        --------
        >>> st = KeyState.from_arrays([0, -1], [5, 0], [7, 0], [2, 0])
        >>> st.last.tolist()
        [7, 0]
        """
        st = np.asarray(state, dtype=np.int32)
        si = np.asarray(since, dtype=np.int64)
        la = np.asarray(last, dtype=np.int64)
        ev = np.asarray(events, dtype=np.int64)
        shapes = [st.shape, si.shape, la.shape, ev.shape]
        if len(set(shapes)) != 1 or st.ndim != 1:
            raise CheckpointError(
                f"KeyState: expected four 1-d arrays of equal length (state, since, last, "
                f"events), found shapes {shapes}"
            )
        seen = st >= 0
        bad = (st < -1) | (ev < 0) | (seen & (la < si))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CheckpointError(
                f"KeyState: inconsistent state for key id {i}: state={st[i]}, since={si[i]}, "
                f"last={la[i]}, events={ev[i]}; expected state >= -1, events >= 0 and "
                f"last >= since"
            )
        out = cls(len(st))
        out.state[:] = st
        out.since[:] = si
        out.last[:] = la
        out.events[:] = ev
        return out

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> KeyState:
        """Build state from a frame with columns ``state``, ``since``, ``last``, ``events``.

        The inverse of :meth:`to_frame`; row position is the key id.

        Raises
        ------
        CheckpointError
            If a column is missing, holds nulls, or values are inconsistent.

        Examples
        --------
        >>> st = KeyState.from_arrays([1], [3], [4], [1])
        >>> KeyState.from_frame(st.to_frame()).equals(st)
        True
        """
        missing = [c for c in _COLUMNS if c not in frame.columns]
        if missing:
            raise CheckpointError(
                f"KeyState: expected columns {list(_COLUMNS)}, missing {missing} "
                f"(found {frame.columns})"
            )
        nulls = [c for c in _COLUMNS if frame[c].null_count()]
        if nulls:
            raise CheckpointError(f"KeyState: columns {nulls} hold nulls; expected none")
        return cls.from_arrays(*(frame[c].to_numpy() for c in _COLUMNS))

    def to_frame(self) -> pl.DataFrame:
        """Return a copy as a DataFrame (``state`` Int32, ``since``/``last``/``events`` Int64).

        Examples
        --------
        >>> KeyState.empty(1).to_frame().row(0)
        (-1, 0, 0, 0)
        """
        return pl.DataFrame(
            {
                name: pl.Series(name, getattr(self, name).copy(), dtype=dt)
                for name, dt in _COLUMNS.items()
            }
        )

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        """Number of slots allocated (>= ``len(self)``)."""
        return len(self._buf)

    @property
    def state(self) -> npt.NDArray[np.int32]:
        """State code per key (-1 = never seen)."""
        halves: npt.NDArray[np.int32] = self._buf.view(np.int32)
        return halves[: self._n, _STATE_HALF]

    @property
    def since(self) -> npt.NDArray[np.int64]:
        """Tick at which each key entered its current state."""
        return self._buf[: self._n, SLOT_SINCE]

    @property
    def last(self) -> npt.NDArray[np.int64]:
        """Tick of each key's last processed event or fired timeout."""
        return self._buf[: self._n, SLOT_LAST]

    @property
    def events(self) -> npt.NDArray[np.int64]:
        """Number of events applied per key (fired or undefined; late ones are not)."""
        return self._buf[: self._n, SLOT_EVENTS]

    def grow(self, n: int) -> None:
        """Make room for at least ``n`` keys; new keys are "never seen".

        Buffers grow by doubling, so growing one key at a time stays cheap.
        Existing values are kept; a smaller ``n`` does nothing.

        Examples
        --------
        >>> st = KeyState.empty(0)
        >>> for n in range(1, 100):
        ...     st.grow(n)
        >>> len(st), st.capacity >= 99
        (99, True)
        """
        if n <= self._n:
            return
        cap = self.capacity
        if n > cap:
            buf = _new_records(max(n, 2 * cap))
            buf[:cap] = self._buf
            self._buf = buf
        self._n = n

    def take(
        self, ids: npt.NDArray[np.int64]
    ) -> tuple[
        npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]
    ]:
        """``(state, since, last, events)`` of the keys ``ids`` (copies).

        One gather of whole records: a key's four values share a cache line, so
        this costs a quarter of gathering the four views one by one when the
        ids are spread over millions of keys.

        Examples
        --------
        >>> st = KeyState.from_arrays([0, 1], [5, 6], [7, 8], [1, 2])
        >>> [a.tolist() for a in st.take(np.array([1, 1, 0]))]
        [[1, 1, 0], [6, 6, 5], [8, 8, 7], [2, 2, 1]]
        """
        rows = np.take(self._buf[: self._n], np.asarray(ids, dtype=np.intp), axis=0)
        state = np.ascontiguousarray(rows.view(np.int32)[:, 2 * SLOT_STATE + _STATE_HALF])
        return (
            state,
            rows[:, SLOT_SINCE].copy(),
            rows[:, SLOT_LAST].copy(),
            rows[:, SLOT_EVENTS].copy(),
        )

    def copy(self) -> KeyState:
        """Return an independent copy.

        Examples
        --------
        >>> a = KeyState.empty(1); b = a.copy(); b.state[0] = 0
        >>> int(a.state[0])
        -1
        """
        return KeyState.from_arrays(self.state, self.since, self.last, self.events)

    def equals(self, other: KeyState) -> bool:
        """True when both hold the same keys with identical values.

        Examples
        --------
        >>> KeyState.empty(2).equals(KeyState.empty(2)), KeyState.empty(2).equals(KeyState())
        (True, False)
        """
        return len(self) == len(other) and all(
            np.array_equal(getattr(self, c), getattr(other, c)) for c in _COLUMNS
        )

    def __repr__(self) -> str:
        seen = int((self.state >= 0).sum())
        return f"KeyState({len(self)} keys, {seen} seen)"


def _new_records(cap: int) -> npt.NDArray[np.int64]:
    """A ``(cap, 4)`` int64 record buffer of keys never seen (state -1, zeros),
    starting on a cache-line boundary, so that no record spans two lines."""
    buf = zeros_aligned(cap * 4, np.int64).reshape(cap, 4)
    buf.view(np.int32)[:, _STATE_HALF] = -1  # the other half of slot 0 is padding (0)
    return buf


def records(state: KeyState) -> npt.NDArray[np.int64]:
    """The kernel's view of ``state``: its first ``len(state)`` records, C-contiguous.

    Row ``k`` is key ``k``: ``[state, since, last, events]``, where only the low
    32 bits of slot 0 are the (int32) state; the high half is padding that the
    kernel ignores. For the kernel only; callers use the named views.

    Examples
    --------
    >>> st = KeyState.from_arrays([2], [5], [7], [1])
    >>> records(st).tolist()
    [[2, 5, 7, 1]]
    """
    return state._buf[: len(state)]
