"""A plain-Python reference for the kernel: the same rules, written to be read.

:func:`run_batch_reference` has the signature and result of
:func:`streamkit.kernel.run_batch` and works over Python lists, dicts and
integers (no overflow). It exists so that property tests can pit the numba
kernel against something obviously correct; it is far too slow for real data.

Examples
--------
>>> import numpy as np
>>> from streamkit.kernel import CompiledMachine, KeyState, NO_WATERMARK, run_batch
>>> cm = CompiledMachine(("on", "off"), ("flip",), np.array([[1], [0]]),
...                      np.array([3, -1]), np.array([1, -1]), 0)
>>> args = (cm, np.array([0, 1, 0]), np.array([0, 0, 0], dtype=np.int32),
...         np.array([1, 2, 9]))
>>> st_a, st_b = KeyState.empty(2), KeyState.empty(2)
>>> fast = run_batch(*args, st_a, watermark=NO_WATERMARK)
>>> slow = run_batch_reference(*args, st_b, watermark=NO_WATERMARK)
>>> fast.equals(slow) and st_a.equals(st_b)
True
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from streamkit.kernel._compile import CompiledMachine
from streamkit.kernel._numba import _check_given_wm, _check_watermark, check_batch
from streamkit.kernel._result import FIRED, LATE, UNDEFINED, BatchResult
from streamkit.kernel._state import KeyState

__all__ = ["run_batch_reference"]


@dataclasses.dataclass
class _Key:
    """One key's state."""

    state: int  # -1: never seen
    since: int
    last: int
    events: int


@dataclasses.dataclass
class _Timeout:
    """One fired timeout row."""

    key: int
    time: int
    from_state: int
    to_state: int
    before: int


def run_batch_reference(
    cm: CompiledMachine,
    key_ids: npt.ArrayLike,
    events: npt.ArrayLike,
    times: npt.ArrayLike,
    state: KeyState,
    *,
    watermark: int,
    wm: npt.ArrayLike | None = None,
) -> BatchResult:
    """Apply the kernel's rules one event at a time, in plain Python.

    Same parameters, result and in-place update of ``state`` as
    :func:`streamkit.kernel.run_batch`.

    Examples
    --------
    >>> import numpy as np
    >>> from streamkit.kernel import CompiledMachine, KeyState, NO_WATERMARK
    >>> cm = CompiledMachine(("a",), ("x",), np.array([[0]]), np.array([-1]),
    ...                      np.array([-1]), 0)
    >>> r = run_batch_reference(cm, [0, 0], [0, 0], [5, 4], KeyState.empty(1),
    ...                         watermark=NO_WATERMARK)
    >>> r.status.tolist()
    [0, 2]
    """
    k_arr, e_arr, t_arr = check_batch(cm, key_ids, events, times, state)
    watermark = _check_watermark(watermark)
    given = _check_given_wm(wm, t_arr)
    given_list: list[int] | None = None if given is None else given.tolist()
    table: list[list[int]] = cm.table.tolist()
    timeout_after: list[int] = cm.timeout_after.tolist()
    timeout_to: list[int] = cm.timeout_to.tolist()
    keys = [
        _Key(s, si, la, ev)
        for s, si, la, ev in zip(
            state.state.tolist(),
            state.since.tolist(),
            state.last.tolist(),
            state.events.tolist(),
            strict=True,
        )
    ]
    from_states: list[int] = []
    to_states: list[int] = []
    statuses: list[int] = []
    timeouts: list[_Timeout] = []

    def fire_timeouts(key_id: int, wm: int, before: int) -> None:
        key = keys[key_id]
        while key.state >= 0 and timeout_after[key.state] >= 0:
            deadline = key.since + timeout_after[key.state]
            if deadline > wm:
                return
            target = timeout_to[key.state]
            timeouts.append(_Timeout(key_id, deadline, key.state, target, before))
            key.state = target
            key.since = deadline
            key.last = max(key.last, deadline)

    current_wm = watermark
    key_list: list[int] = k_arr.tolist()
    event_list: list[int] = e_arr.tolist()
    time_list: list[int] = t_arr.tolist()
    for i, (key_id, event, t) in enumerate(zip(key_list, event_list, time_list, strict=True)):
        # The watermark: the prefix maximum, unless the caller gave it per event.
        current_wm = max(current_wm, t) if given_list is None else given_list[i]
        key = keys[key_id]
        if key.state < 0:
            # Rule 1: first event of the key.
            key.state, key.since, key.last = cm.initial, t, t
        else:
            # Rule 2: timeouts due before this event.
            fire_timeouts(key_id, current_wm, before=i)
        from_states.append(key.state)
        if t < key.last:
            # Rule 3: late.
            statuses.append(LATE)
            to_states.append(key.state)
            continue
        target = table[key.state][event] if event >= 0 else -1
        key.events += 1
        if target < 0:
            # Rule 4: undefined.
            statuses.append(UNDEFINED)
            to_states.append(key.state)
            key.last = t
        else:
            # Rule 5: fired.
            statuses.append(FIRED)
            to_states.append(target)
            key.state, key.since, key.last = target, t, t
    # Rule 6: the batch-end flush, key by key in id order.
    if given_list:
        current_wm = max(watermark, given_list[-1])
    for key_id in range(len(keys)):
        fire_timeouts(key_id, current_wm, before=len(key_list))

    state.state[:] = [k.state for k in keys]
    state.since[:] = [k.since for k in keys]
    state.last[:] = [k.last for k in keys]
    state.events[:] = [k.events for k in keys]
    return BatchResult(
        from_state=np.array(from_states, dtype=np.int32),
        to_state=np.array(to_states, dtype=np.int32),
        status=np.array(statuses, dtype=np.int8),
        t_key=np.array([t.key for t in timeouts], dtype=np.int64),
        t_time=np.array([t.time for t in timeouts], dtype=np.int64),
        t_from=np.array([t.from_state for t in timeouts], dtype=np.int32),
        t_to=np.array([t.to_state for t in timeouts], dtype=np.int32),
        t_before=np.array([t.before for t in timeouts], dtype=np.int64),
        watermark=current_wm,
    )
