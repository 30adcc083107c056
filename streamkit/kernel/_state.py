"""Per-key state arrays, indexed by dense key id, that the kernel mutates in place."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from streamkit.errors import CheckpointError

__all__ = ["KeyState"]

_COLUMNS = {"state": pl.Int32, "since": pl.Int64, "last": pl.Int64, "events": pl.Int64}


class KeyState:
    """Per-key machine state: four arrays indexed by dense key id.

    ``state`` (int32, -1 = key never seen), ``since`` (int64 ticks, when the key
    entered its current state), ``last`` (int64 ticks, the key's last processed
    event or fired timeout) and ``events`` (int64, events applied: fired or
    undefined, not late ones). The attributes are views of the first ``len(self)``
    slots of larger buffers, so :meth:`grow` is amortised O(1) per key; the kernel
    writes through them.

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

    __slots__ = ("_buf_events", "_buf_last", "_buf_since", "_buf_state", "_n")

    def __init__(self, n: int = 0) -> None:
        if n < 0:
            raise ValueError(f"KeyState: expected a non-negative number of keys, found {n}")
        cap = max(n, 16)
        self._buf_state = np.full(cap, -1, dtype=np.int32)
        self._buf_since = np.zeros(cap, dtype=np.int64)
        self._buf_last = np.zeros(cap, dtype=np.int64)
        self._buf_events = np.zeros(cap, dtype=np.int64)
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
        return len(self._buf_state)

    @property
    def state(self) -> npt.NDArray[np.int32]:
        """State code per key (-1 = never seen)."""
        return self._buf_state[: self._n]

    @property
    def since(self) -> npt.NDArray[np.int64]:
        """Tick at which each key entered its current state."""
        return self._buf_since[: self._n]

    @property
    def last(self) -> npt.NDArray[np.int64]:
        """Tick of each key's last processed event or fired timeout."""
        return self._buf_last[: self._n]

    @property
    def events(self) -> npt.NDArray[np.int64]:
        """Number of events applied per key (fired or undefined; late ones are not)."""
        return self._buf_events[: self._n]

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
            new_cap = max(n, 2 * cap)
            self._buf_state = _extend(self._buf_state, new_cap, -1)
            self._buf_since = _extend(self._buf_since, new_cap, 0)
            self._buf_last = _extend(self._buf_last, new_cap, 0)
            self._buf_events = _extend(self._buf_events, new_cap, 0)
        self._n = n

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


def _extend(buf: npt.NDArray[Any], cap: int, fill: int) -> npt.NDArray[Any]:
    out = np.full(cap, fill, dtype=buf.dtype)
    out[: len(buf)] = buf
    return out
