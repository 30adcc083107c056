"""The numba kernel: one pass over a batch's events, per-key state by random access.

The compiled function sees only flat arrays. Every input array is passed as a
read-only view and every state array as a writable C-contiguous array, so there
is exactly one specialisation, compiled once and cached on disk (``cache=True``).
"""

from __future__ import annotations

import time
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from streamkit.errors import ConfigurationError
from streamkit.kernel._compile import CompiledMachine
from streamkit.kernel._result import BatchResult
from streamkit.kernel._state import KeyState

__all__ = ["check_batch", "run_batch", "warmup"]

_I64_MIN = np.iinfo(np.int64).min
_I64_MAX = np.iinfo(np.int64).max
_EMPTY_I64 = np.empty(0, dtype=np.int64)
_EMPTY_I64.setflags(write=False)


@numba.njit(cache=True, nogil=True)
def _grow(buf: Any, cap: int) -> Any:  # pragma: no cover - compiled
    out = np.empty((cap, buf.shape[1]), dtype=buf.dtype)
    out[: buf.shape[0]] = buf
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _fire_timeouts(  # noqa: PLR0917 - flat arrays are the kernel's interface
    k: int,
    wm: int,
    before: int,
    t_after: Any,
    t_to: Any,
    st_state: Any,
    st_since: Any,
    st_last: Any,
    out: Any,
    m: int,
) -> Any:  # pragma: no cover - compiled
    """Rule 2 / 6: fire key k's timeouts, chained, while since + after <= wm.

    Rows go to ``out[m]`` as (key, time, from, to, before); returns (out, m).
    """
    s = st_state[k]
    after = t_after[s]
    while after >= 0:
        # since + after <= wm, decided without int64 overflow: wm - after cannot
        # overflow once wm >= int64 min + after.
        if wm < _I64_MIN + after:
            break
        since = st_since[k]
        if since > wm - after:
            break
        deadline = since + after
        if m == out.shape[0]:
            out = _grow(out, 2 * out.shape[0])
        nxt = t_to[s]
        out[m, 0] = k
        out[m, 1] = deadline
        out[m, 2] = s
        out[m, 3] = nxt
        out[m, 4] = before
        m += 1
        s = nxt
        st_state[k] = s
        st_since[k] = deadline
        st_last[k] = max(st_last[k], deadline)
        after = t_after[s]
    return out, m


@numba.njit(cache=True, nogil=True)
def _kernel(  # noqa: PLR0917 - flat arrays are the kernel's interface
    table: Any,
    t_after: Any,
    t_to: Any,
    initial: int,
    key_ids: Any,
    events: Any,
    times: Any,
    st_state: Any,
    st_since: Any,
    st_last: Any,
    st_events: Any,
    wm0: int,
    wm_given: Any,
    use_given: bool,
) -> Any:  # pragma: no cover - compiled; covered against the reference by the tests
    n = key_ids.shape[0]
    from_s = np.empty(n, dtype=np.int32)
    to_s = np.empty(n, dtype=np.int32)
    status = np.empty(n, dtype=np.int8)
    out = np.empty((max(16, n // 16), 5), dtype=np.int64)
    m = 0
    wm = wm0
    for i in range(n):
        k = key_ids[i]
        t = times[i]
        wm = wm_given[i] if use_given else max(wm, t)
        s = st_state[k]
        if s < 0:
            # Rule 1: the key's first event; nothing can time out before it.
            s = initial
            st_state[k] = s
            st_since[k] = t
            st_last[k] = t
        elif t_after[s] >= 0:
            # Rule 2: timeouts due before this event.
            out, m = _fire_timeouts(k, wm, i, t_after, t_to, st_state, st_since, st_last, out, m)
            s = st_state[k]
        from_s[i] = s
        if t < st_last[k]:
            # Rule 3: late.
            status[i] = 2
            to_s[i] = s
            continue
        e = events[i]
        target = table[s, e] if e >= 0 else -1
        st_events[k] += 1
        st_last[k] = t
        if target < 0:
            # Rule 4: undefined.
            status[i] = 1
            to_s[i] = s
        else:
            # Rule 5: fire (self-loops re-enter).
            status[i] = 0
            to_s[i] = target
            st_state[k] = target
            st_since[k] = t
    # Rule 6: the batch-end flush visits every key whose state has a timeout.
    if use_given and n:
        wm = max(wm0, wm_given[n - 1])
    for k in range(st_state.shape[0]):
        s = st_state[k]
        if s >= 0 and t_after[s] >= 0:
            out, m = _fire_timeouts(k, wm, n, t_after, t_to, st_state, st_since, st_last, out, m)
    rows = out[:m]
    return (
        from_s,
        to_s,
        status,
        rows[:, 0].copy(),
        rows[:, 1].copy(),
        rows[:, 2].astype(np.int32),
        rows[:, 3].astype(np.int32),
        rows[:, 4].copy(),
        wm,
    )


def _readonly_view(values: npt.ArrayLike, dtype: type[np.generic], name: str) -> npt.NDArray[Any]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ConfigurationError(f"run_batch: expected {name} to be 1-d, found shape {array.shape}")
    if array.size and not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise ConfigurationError(f"run_batch: expected integer {name}, found dtype {array.dtype}")
    view = np.ascontiguousarray(array, dtype=dtype).view()
    view.setflags(write=False)
    return view


def check_batch(
    cm: CompiledMachine,
    key_ids: npt.ArrayLike,
    events: npt.ArrayLike,
    times: npt.ArrayLike,
    state: KeyState,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """Validate and normalise a batch's arrays (shared by the kernel and the reference).

    Returns read-only, C-contiguous ``key_ids`` (int64), ``events`` (int32) and
    ``times`` (int64).

    Raises
    ------
    ConfigurationError
        If lengths differ, a key id is outside ``[0, len(state))`` or an event
        code outside ``[-1, cm.n_events)``.

    Examples
    --------
    >>> import numpy as np
    >>> from streamkit.kernel import CompiledMachine, KeyState
    >>> cm = CompiledMachine(("a",), ("x",), np.array([[0]]), np.array([-1]),
    ...                      np.array([-1]), 0)
    >>> check_batch(cm, [0], [0], [5], KeyState.empty(0))
    Traceback (most recent call last):
    ...
    streamkit.errors.ConfigurationError: run_batch: key id 0 is outside the state's 0 keys; ...
    """
    k = _readonly_view(key_ids, np.int64, "key_ids")
    e = _readonly_view(events, np.int32, "events")
    t = _readonly_view(times, np.int64, "times")
    if not len(k) == len(e) == len(t):
        raise ConfigurationError(
            f"run_batch: expected key_ids, events and times of equal length, found "
            f"{len(k)}, {len(e)} and {len(t)}"
        )
    if len(k):
        lo, hi = int(k.min()), int(k.max())
        if lo < 0 or hi >= len(state):
            bad = lo if lo < 0 else hi
            raise ConfigurationError(
                f"run_batch: key id {bad} is outside the state's {len(state)} keys; "
                f"call state.grow(len(key_index)) after KeyIndex.lookup_or_insert"
            )
        elo, ehi = int(e.min()), int(e.max())
        if elo < -1 or ehi >= cm.n_events:
            bad = elo if elo < -1 else ehi
            raise ConfigurationError(
                f"run_batch: event code {bad} is outside [-1, {cm.n_events}) for a machine "
                f"with events {list(cm.events)}; encode names with cm.encode_events"
            )
    return k, e, t


def _check_watermark(watermark: int) -> int:
    if isinstance(watermark, bool) or not isinstance(watermark, int | np.integer):
        raise ConfigurationError(
            f"run_batch: expected an integer watermark (NO_WATERMARK if none), found {watermark!r}"
        )
    wm = int(watermark)
    if not _I64_MIN <= wm <= _I64_MAX:
        raise ConfigurationError(f"run_batch: watermark {wm} does not fit in int64")
    return wm


def _check_given_wm(
    wm: npt.ArrayLike | None, times: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64] | None:
    """Validate per-event watermarks given by a caller that split a batch."""
    if wm is None:
        return None
    given = _readonly_view(wm, np.int64, "wm")
    if len(given) != len(times):
        raise ConfigurationError(
            f"run_batch: expected one watermark per event ({len(times)}), found {len(given)}"
        )
    if len(given) and (bool((np.diff(given) < 0).any()) or bool((given < times).any())):
        raise ConfigurationError(
            "run_batch: per-event watermarks `wm` must be non-decreasing and >= times "
            "(the prefix maximum of the whole batch's times)"
        )
    return given


def run_batch(
    cm: CompiledMachine,
    key_ids: npt.ArrayLike,
    events: npt.ArrayLike,
    times: npt.ArrayLike,
    state: KeyState,
    *,
    watermark: int,
    wm: npt.ArrayLike | None = None,
) -> BatchResult:
    """Run one batch of events through the per-key machine (numba kernel).

    Events are processed in the given order (the log's offset order). With
    ``wm[i]`` the maximum of the carried watermark and ``times[:i + 1]``, for
    event ``i`` of key ``k``:

    1. a key's first event puts it in ``cm.initial`` with ``since = last = t``;
    2. otherwise, while the key's state has a timeout with ``since + after <=
       wm[i]``, the timeout fires (``since = deadline``, ``last = max(last,
       deadline)``), chains included;
    3. if ``t < last`` the event is late (status 2) and changes nothing;
    4. else without a declared transition it is undefined (status 1):
       ``last = t``, ``events += 1``;
    5. else it fires (status 0): ``state = to``, ``since = last = t``,
       ``events += 1`` (self-loops re-enter their state).

    At the batch end every key fires its timeouts up to the final watermark. The
    per-key history and final state do not depend on how the events are cut
    into batches, provided ``state`` and the returned watermark are carried.

    Parameters
    ----------
    cm : CompiledMachine
    key_ids : array of int64
        Dense key id per event (see :class:`KeyIndex`); must be ``< len(state)``.
    events : array of int32
        Event code per event; -1 for names the machine does not know.
    times : array of int64
        Event time in ticks.
    state : KeyState
        Mutated in place.
    watermark : int
        The watermark carried from the previous batch, ``NO_WATERMARK`` if none.
    wm : array of int64, optional
        Per-event watermarks computed over a larger stream that this batch is a
        part of (e.g. one key partition of a batch run on a cluster): when given,
        ``wm[i]`` is used for event ``i`` as is, and the batch-end flush uses
        ``max(watermark, wm[-1])``. Must be non-decreasing and ``>= times``.
        Pass the whole batch's final watermark as ``watermark`` then, so that a
        part without events still flushes its idle keys.

    Returns
    -------
    BatchResult

    Raises
    ------
    ConfigurationError
        If the arrays do not fit each other, the machine or the state.

    Examples
    --------
    >>> import numpy as np
    >>> from streamkit.kernel import CompiledMachine, KeyState, NO_WATERMARK
    >>> cm = CompiledMachine(("new", "paid", "void"), ("pay",),
    ...                      np.array([[1], [-1], [-1]]),
    ...                      np.array([30, -1, -1]), np.array([2, -1, -1]), 0)
    >>> st = KeyState.empty(2)
    >>> r = run_batch(cm, np.array([0, 1, 0]), np.array([0, -1, 0], dtype=np.int32),
    ...               np.array([10, 20, 50]), st, watermark=NO_WATERMARK)
    >>> r.status.tolist(), r.to_state.tolist()
    ([0, 1, 1], [1, 0, 1])
    >>> r.t_key.tolist(), r.t_time.tolist(), r.t_to.tolist(), r.t_before.tolist()
    ([1], [50], [2], [3])
    >>> st.state.tolist(), st.since.tolist(), st.events.tolist()
    ([1, 2], [10, 50], [2, 1])
    """
    k, e, t = check_batch(cm, key_ids, events, times, state)
    carried = _check_watermark(watermark)
    given = _check_given_wm(wm, t)
    out = _kernel(
        cm.table,
        cm.timeout_after,
        cm.timeout_to,
        cm.initial,
        k,
        e,
        t,
        state.state,
        state.since,
        state.last,
        state.events,
        carried,
        _EMPTY_I64 if given is None else given,
        given is not None,
    )
    return BatchResult(
        from_state=out[0],
        to_state=out[1],
        status=out[2],
        t_key=out[3],
        t_time=out[4],
        t_from=out[5],
        t_to=out[6],
        t_before=out[7],
        watermark=int(out[8]),
    )


def warmup() -> float:
    """Compile the kernel (or load it from numba's on-disk cache) on tiny arrays.

    Returns
    -------
    float
        Seconds the call took: the compile time on a cold cache, the cache load
        time otherwise.

    Examples
    --------
    >>> warmup() >= 0.0
    True
    """
    start = time.perf_counter()
    cm = CompiledMachine(
        ("a", "b"),
        ("x",),
        np.array([[1], [0]]),
        np.array([-1, 1]),
        np.array([-1, 0]),
        0,
    )
    run_batch(
        cm,
        np.array([0, 0], dtype=np.int64),
        np.array([0, -1], dtype=np.int32),
        np.array([0, 5], dtype=np.int64),
        KeyState.empty(1),
        watermark=int(_I64_MIN),
    )
    return time.perf_counter() - start
