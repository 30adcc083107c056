"""History rows of a batch as flat arrays in (time, firing) order, compiled.

The pipeline writes one history row per fired event and per fired timeout. This
module builds those rows' columns as integer arrays (key id, time, event code,
from and to state) without touching the batch's string columns: the caller
turns codes into names with one gather from a small dictionary each, and key
ids into keys with one gather from the key index.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from streamkit.kernel._result import FIRED, BatchResult, history_order, readonly

__all__ = ["HistoryArrays", "history_arrays"]

HistoryArrays = tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
]


@numba.njit(cache=True, nogil=True)
def _merge_by_time(
    status: Any,
    key_ids: Any,
    times: Any,
    codes: Any,
    from_s: Any,
    to_s: Any,
    t_key: Any,
    t_time: Any,
    t_from: Any,
    t_to: Any,
    t_before: Any,
    t_order: Any,
    timeout_code: int,
    o_key: Any,
    o_time: Any,
    o_event: Any,
    o_from: Any,
    o_to: Any,
) -> Any:  # pragma: no cover - compiled; tested against history_order
    """Fired events (if their times never decrease) and timeouts (``t_order``: by
    time, then firing order) merged by (time, firing order) in one pass.

    Returns the number of rows, or -1 as soon as a fired event is older than the
    one before it (the caller then sorts).
    """
    # Unsigned indices: numba then drops its negative-index handling.
    n = np.uint64(status.shape[0])
    m = np.uint64(t_order.shape[0])
    one = np.uint64(1)
    j = np.uint64(0)
    w = np.uint64(0)
    prev = np.iinfo(np.int64).min
    never = np.iinfo(np.int64).max
    tq = t_time[np.uint64(t_order[0])] if m > 0 else never  # the next timeout's time
    for i in range(n):
        t = times[i]
        fired = status[i] == FIRED
        if fired:
            if t < prev:
                return -1
            prev = t
            # Timeouts before event i: earlier, or as early and fired before it.
            if tq <= t:
                while j < m:
                    q = np.uint64(t_order[j])
                    tq = t_time[q]
                    if tq > t or (tq == t and t_before[q] > i):
                        break
                    o_key[w] = t_key[q]
                    o_time[w] = tq
                    o_event[w] = timeout_code
                    o_from[w] = t_from[q]
                    o_to[w] = t_to[q]
                    w += one
                    j += one
                if j == m:
                    tq = never
        # Written for every event, kept (w moves on) for fired ones: no branch
        # to mispredict; the outputs hold one spare row for the last write.
        o_key[w] = key_ids[i]
        o_time[w] = t
        o_event[w] = codes[i]
        o_from[w] = from_s[i]
        o_to[w] = to_s[i]
        w += np.uint64(fired)
    while j < m:  # the timeouts after the last fired event
        q = np.uint64(t_order[j])
        o_key[w] = t_key[q]
        o_time[w] = t_time[q]
        o_event[w] = timeout_code
        o_from[w] = t_from[q]
        o_to[w] = t_to[q]
        w += one
        j += one
    return np.int64(w)


def history_arrays(
    result: BatchResult,
    key_ids: npt.NDArray[np.int64],
    times: npt.NDArray[np.int64],
    codes: npt.NDArray[np.int32],
    *,
    timeout_code: int,
) -> HistoryArrays:
    """Columns of the batch's history rows, ordered by (time, firing order).

    One row per fired event (status ``FIRED``) and per fired timeout; event
    rows carry their event code, timeout rows ``timeout_code``. Within equal
    times rows keep firing order (:func:`history_order`), so every key's rows
    stay in its firing order (a key's times never decrease). When the fired
    events are in time order, the usual case, one compiled pass merges them with
    the timeouts sorted by time; otherwise the rows of :func:`history_order` are
    stably sorted by time.

    Returns
    -------
    tuple of numpy.ndarray
        ``(key_id, time, event_code, from_state, to_state)``.

    Examples
    --------
    >>> import numpy as np
    >>> from streamkit.kernel import CompiledMachine, KeyState, NO_WATERMARK, run_batch
    >>> cm = CompiledMachine(("a", "b"), ("go",), np.array([[1], [1]]),
    ...                      np.array([-1, 5]), np.array([-1, 0]), 0)
    >>> k, t, e = np.array([0, 0]), np.array([1, 10]), np.array([0, 0], dtype=np.int32)
    >>> r = run_batch(cm, k, e, t, KeyState.empty(1), watermark=NO_WATERMARK)
    >>> [a.tolist() for a in history_arrays(r, k, t, e, timeout_code=1)]
    [[0, 0, 0], [1, 6, 10], [0, 1, 0], [0, 1, 0], [1, 0, 1]]
    """
    n = len(result.status)
    size = n + result.n_timeouts + 1  # a spare row: the merge writes every event
    o_key = np.empty(size, dtype=np.int64)
    o_time = np.empty(size, dtype=np.int64)
    o_event = np.empty(size, dtype=np.int32)
    o_from = np.empty(size, dtype=np.int32)
    o_to = np.empty(size, dtype=np.int32)
    k, t, e = readonly(key_ids, np.int64), readonly(times, np.int64), readonly(codes, np.int32)
    r = result
    # Usually the fired events are in time order: then one merge with the
    # timeouts sorted by time (a stable sort keeps their firing order) is all.
    t_order = np.argsort(r.t_time, kind="stable")
    rows = _merge_by_time(
        r.status, k, t, e, r.from_state, r.to_state, r.t_key, r.t_time, r.t_from, r.t_to,
        r.t_before, t_order, timeout_code, o_key, o_time, o_event, o_from, o_to,
    )  # fmt: skip
    if rows >= 0:
        return (o_key[:rows], o_time[:rows], o_event[:rows], o_from[:rows], o_to[:rows])
    # Fired events out of time order (several partitions, late data): the rows
    # in firing order, then one stable sort by time.
    is_timeout, index = history_order(r, only_fired=True)
    ev, to = index[~is_timeout], index[is_timeout]
    columns: list[npt.NDArray[Any]] = []
    for at_event, at_timeout in (
        (k, r.t_key), (t, r.t_time), (e, None), (r.from_state, r.t_from), (r.to_state, r.t_to),
    ):  # fmt: skip
        col = np.empty(len(index), dtype=np.int64 if at_event.dtype == np.int64 else np.int32)
        col[~is_timeout] = at_event[ev]
        col[is_timeout] = timeout_code if at_timeout is None else at_timeout[to]
        columns.append(col)
    order = np.argsort(columns[1], kind="stable")  # timsort: linear on long sorted runs
    key, time, event, from_state, to_state = (c[order] for c in columns)
    return key, time, event, from_state, to_state
