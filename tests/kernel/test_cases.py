"""Hand-written edge cases of the kernel rules, run on the kernel and the reference."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from streamkit.errors import ConfigurationError
from streamkit.kernel import (
    FIRED,
    LATE,
    NO_WATERMARK,
    UNDEFINED,
    BatchResult,
    CompiledMachine,
    KeyState,
    history_order,
    run_batch,
)

from .conftest import RunBatch


def machine(
    table: list[list[int]],
    timeouts: dict[int, tuple[int, int]] | None = None,
    initial: int = 0,
) -> CompiledMachine:
    n_s, n_e = len(table), len(table[0])
    after = np.full(n_s, -1)
    to = np.full(n_s, -1)
    for s, (a, t) in (timeouts or {}).items():
        after[s], to[s] = a, t
    return CompiledMachine(
        tuple(f"s{i}" for i in range(n_s)),
        tuple(f"e{i}" for i in range(n_e)),
        np.array(table),
        after,
        to,
        initial,
    )


def run(
    impl: RunBatch,
    cm: CompiledMachine,
    rows: list[tuple[int, int, int]],
    state: KeyState,
    watermark: int = NO_WATERMARK,
) -> BatchResult:
    keys = np.array([r[0] for r in rows], dtype=np.int64)
    events = np.array([r[1] for r in rows], dtype=np.int32)
    times = np.array([r[2] for r in rows], dtype=np.int64)
    return impl(cm, keys, events, times, state, watermark=watermark)


def timeouts(result: BatchResult) -> list[tuple[int, int, int, int, int]]:
    return list(
        zip(
            result.t_key.tolist(),
            result.t_time.tolist(),
            result.t_from.tolist(),
            result.t_to.tolist(),
            result.t_before.tolist(),
            strict=True,
        )
    )


# s0 --e0--> s1 --e1--> s2; s1 times out after 10 to s2.
LINE = machine([[1, -1], [-1, 2], [-1, -1]], {1: (10, 2)})


def test_empty_batch_changes_nothing(impl: RunBatch) -> None:
    state = KeyState.empty(3)
    result = run(impl, LINE, [], state, watermark=42)
    assert result.n_events == 0 and result.n_timeouts == 0
    assert result.watermark == 42
    assert state.equals(KeyState.empty(3))
    for name in ("from_state", "to_state", "status", "t_key", "t_before"):
        assert len(getattr(result, name)) == 0


def test_empty_batch_without_keys_or_watermark(impl: RunBatch) -> None:
    result = run(impl, LINE, [], KeyState.empty(0))
    assert result.watermark == NO_WATERMARK
    assert history_order(result)[1].tolist() == []


def test_single_event_enters_initial_then_fires(impl: RunBatch) -> None:
    state = KeyState.empty(1)
    result = run(impl, LINE, [(0, 0, 7)], state)
    assert result.from_state.tolist() == [0]
    assert result.to_state.tolist() == [1]
    assert result.status.tolist() == [FIRED]
    assert result.watermark == 7
    assert (state.state[0], state.since[0], state.last[0], state.events[0]) == (1, 7, 7, 1)


def test_timeout_at_exactly_the_event_time_fires_before_the_event(impl: RunBatch) -> None:
    state = KeyState.empty(1)
    # Enter s1 at 0; the deadline is 10; the event at 10 finds the key already in s2.
    result = run(impl, LINE, [(0, 0, 0), (0, 1, 10)], state)
    assert timeouts(result) == [(0, 10, 1, 2, 1)]
    assert result.from_state.tolist() == [0, 2]
    assert result.status.tolist() == [FIRED, UNDEFINED]
    assert state.state[0] == 2


def test_event_one_tick_before_the_deadline_wins(impl: RunBatch) -> None:
    state = KeyState.empty(1)
    result = run(impl, LINE, [(0, 0, 0), (0, 1, 9)], state)
    assert result.n_timeouts == 0
    assert result.status.tolist() == [FIRED, FIRED]
    assert state.state[0] == 2


def test_deadline_equal_to_batch_end_watermark_fires_in_the_flush(impl: RunBatch) -> None:
    state = KeyState.empty(2)
    result = run(impl, LINE, [(0, 0, 0), (1, 0, 10)], state)
    # key 0's deadline (10) equals the final watermark: fired by the flush (before = n).
    assert timeouts(result) == [(0, 10, 1, 2, 2)]
    assert state.state.tolist() == [2, 1]


def test_chained_timeouts_fire_in_order(impl: RunBatch) -> None:
    cm = machine([[1], [-1], [-1], [-1]], {1: (10, 2), 2: (5, 3)})
    state = KeyState.empty(1)
    result = run(impl, cm, [(0, 0, 0), (0, 0, 100)], state)
    assert timeouts(result) == [(0, 10, 1, 2, 1), (0, 15, 2, 3, 1)]
    assert result.from_state.tolist() == [0, 3]
    # s3 has no e0: the event at 100 is undefined, so since stays at the deadline.
    assert (state.state[0], state.since[0], state.last[0]) == (3, 15, 100)
    assert result.status.tolist() == [FIRED, UNDEFINED]
    assert state.events.tolist() == [2]


def test_timeout_cycle_fires_until_the_watermark(impl: RunBatch) -> None:
    cm = machine([[0], [1]], {0: (3, 1), 1: (2, 0)})
    state = KeyState.empty(2)
    result = run(impl, cm, [(0, 0, 0), (1, 0, 12)], state)
    assert [t[1] for t in timeouts(result)] == [3, 5, 8, 10]
    assert [t[2] for t in timeouts(result)] == [0, 1, 0, 1]
    assert (state.state[0], state.since[0]) == (0, 10)


def test_timeout_to_itself_repeats(impl: RunBatch) -> None:
    cm = machine([[0]], {0: (4, 0)})
    state = KeyState.empty(2)
    result = run(impl, cm, [(0, 0, 1), (1, 0, 13)], state)
    assert [t[1] for t in timeouts(result)] == [5, 9, 13]


def test_late_event_after_a_timeout(impl: RunBatch) -> None:
    state = KeyState.empty(2)
    # key 0 enters s1 at 0; key 1 pushes the watermark to 20; key 0's event at 5
    # finds the timeout fired at 10 (before it) and is late.
    result = run(impl, LINE, [(0, 0, 0), (1, 0, 20), (0, 1, 5)], state)
    assert timeouts(result) == [(0, 10, 1, 2, 2)]
    assert result.status.tolist() == [FIRED, FIRED, LATE]
    assert result.from_state.tolist()[2] == result.to_state.tolist()[2] == 2
    assert (state.state[0], state.since[0], state.last[0], state.events[0]) == (2, 10, 10, 1)


def test_event_after_a_fired_timeout_is_not_late(impl: RunBatch) -> None:
    state = KeyState.empty(2)
    result = run(impl, LINE, [(0, 0, 0), (1, 0, 20), (0, 1, 15)], state)
    assert result.status.tolist() == [FIRED, FIRED, UNDEFINED]
    assert (state.state[0], state.last[0], state.events[0]) == (2, 15, 2)


def test_late_event_within_a_key_changes_nothing(impl: RunBatch) -> None:
    state = KeyState.empty(1)
    result = run(impl, LINE, [(0, 0, 10), (0, 1, 5)], state)
    assert result.status.tolist() == [FIRED, LATE]
    assert result.to_state.tolist() == [1, 1]
    assert (state.state[0], state.since[0], state.last[0], state.events[0]) == (1, 10, 10, 1)


def test_tied_times_are_not_late(impl: RunBatch) -> None:
    state = KeyState.empty(1)
    result = run(impl, LINE, [(0, 0, 3), (0, 1, 3), (0, 0, 3)], state)
    assert result.status.tolist() == [FIRED, FIRED, UNDEFINED]


def test_undefined_event_moves_last_but_not_since(impl: RunBatch) -> None:
    state = KeyState.empty(1)
    # s1 has no e0; the undefined event at 8 keeps since = 0 (so the timeout
    # still fires at 10) but a later event at 7 is late.
    result = run(impl, LINE, [(0, 0, 0), (0, 0, 8), (0, 1, 7), (0, 0, 30)], state)
    assert result.status.tolist() == [FIRED, UNDEFINED, LATE, UNDEFINED]
    assert timeouts(result) == [(0, 10, 1, 2, 3)]
    assert (state.since[0], state.last[0], state.events[0]) == (10, 30, 3)


def test_unknown_event_code_is_undefined(impl: RunBatch) -> None:
    state = KeyState.empty(1)
    result = run(impl, LINE, [(0, -1, 1)], state)
    assert result.status.tolist() == [UNDEFINED]
    assert result.to_state.tolist() == [0]
    assert state.events[0] == 1


def test_self_loop_re_enters_and_restarts_the_timeout(impl: RunBatch) -> None:
    cm = machine([[1], [1]], {1: (10, 0)})
    state = KeyState.empty(1)
    result = run(impl, cm, [(0, 0, 0), (0, 0, 8), (0, 0, 16)], state)
    assert result.n_timeouts == 0
    assert (state.state[0], state.since[0]) == (1, 16)
    result = run(impl, cm, [], state, watermark=26)
    assert timeouts(result) == [(0, 26, 1, 0, 0)]


def test_first_event_behind_the_watermark_is_applied(impl: RunBatch) -> None:
    # A key's first event is never late and nothing times out before it, even if
    # the watermark is past the initial state's deadline; the timeout of the
    # state it enters fires once due (here in the flush).
    cm = machine([[1], [-1]], {0: (5, 1), 1: (5, 0)})
    state = KeyState.empty(2)
    result = run(impl, cm, [(0, -1, 100), (1, -1, 10)], state)
    assert result.status.tolist() == [UNDEFINED, UNDEFINED]
    assert timeouts(result)[:3] == [(1, 15, 0, 1, 2), (1, 20, 1, 0, 2), (1, 25, 0, 1, 2)]
    assert result.n_timeouts == 18  # 15, 20, ..., 100


def test_watermark_carried_across_batches_fires_idle_keys(impl: RunBatch) -> None:
    state = KeyState.empty(1)
    first = run(impl, LINE, [(0, 0, 0)], state)
    assert first.n_timeouts == 0 and first.watermark == 0
    state.grow(2)
    second = run(impl, LINE, [(1, 0, 50)], state, watermark=first.watermark)
    assert timeouts(second) == [(0, 10, 1, 2, 1)]
    assert second.watermark == 50
    # The watermark never goes backwards.
    third = run(impl, LINE, [(1, 1, 45)], state, watermark=second.watermark)
    assert third.watermark == 50 and third.status.tolist() == [LATE]


def test_carried_watermark_applies_before_the_first_event(impl: RunBatch) -> None:
    state = KeyState.empty(2)
    run(impl, LINE, [(0, 0, 0)], state)
    result = run(impl, LINE, [(1, 0, 1)], state, watermark=10)
    # key 0 is idle in this batch; the carried watermark 10 reaches its deadline.
    assert timeouts(result) == [(0, 10, 1, 2, 1)]


def test_history_order_merges_timeouts_before_their_event() -> None:
    from streamkit.kernel import run_batch

    state = KeyState.empty(2)
    result = run(run_batch, LINE, [(0, 0, 0), (1, 0, 1), (0, 1, 30), (1, 1, 31)], state)
    # Key 0's timeout fires before event 2; key 1's before event 3.
    is_timeout, index = history_order(result)
    assert list(zip(is_timeout.tolist(), index.tolist(), strict=True)) == [
        (False, 0),
        (False, 1),
        (True, 0),
        (False, 2),
        (True, 1),
        (False, 3),
    ]
    is_timeout, index = history_order(result, only_fired=True)
    assert list(zip(is_timeout.tolist(), index.tolist(), strict=True)) == [
        (False, 0),
        (False, 1),
        (True, 0),
        (True, 1),
    ]


def test_inputs_of_other_integer_dtypes_are_accepted(impl: RunBatch) -> None:
    state = KeyState.empty(1)
    result = impl(
        LINE,
        np.array([0], dtype=np.int32),
        np.array([0], dtype=np.int64),
        np.array([3], dtype=np.int32),
        state,
        watermark=np.int64(1),
    )
    assert result.status.tolist() == [FIRED] and result.watermark == 3


@pytest.mark.parametrize(
    ("keys", "events", "times", "message"),
    [
        ([0, 5], [0, 0], [1, 2], "key id 5 is outside the state's 2 keys"),
        ([-1], [0], [1], "key id -1 is outside"),
        ([0], [2], [1], r"event code 2 is outside \[-1, 2\)"),
        ([0], [-2], [1], "event code -2"),
        ([0, 1], [0], [1, 2], "equal length"),
        ([0.5], [0], [1], "expected integer key_ids"),
        ([[0]], [[0]], [[1]], "1-d"),
    ],
)
def test_bad_inputs_are_rejected(
    impl: RunBatch, keys: list[int], events: list[int], times: list[int], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        impl(
            LINE,
            np.array(keys),
            np.array(events),
            np.array(times),
            KeyState.empty(2),
            watermark=NO_WATERMARK,
        )


@pytest.mark.parametrize("watermark", [None, 1.5, True, 2**63])
def test_bad_watermark_is_rejected(impl: RunBatch, watermark: object) -> None:
    with pytest.raises(ConfigurationError, match="watermark"):
        impl(
            LINE,
            np.array([0]),
            np.array([0]),
            np.array([1]),
            KeyState.empty(1),
            watermark=watermark,
        )


def test_extreme_times_do_not_overflow(impl: RunBatch) -> None:
    big = np.iinfo(np.int64).max - 3
    state = KeyState.empty(1)
    result = run(impl, LINE, [(0, 0, big)], state)
    assert result.n_timeouts == 0 and state.state[0] == 1
    state = KeyState.from_arrays([1], [-(2**62) * 2], [-(2**62) * 2], [1])
    result = impl(
        LINE,
        np.array([], dtype=np.int64),
        np.array([], dtype=np.int32),
        np.array([], dtype=np.int64),
        state,
        watermark=2**62,
    )
    assert timeouts(result) == [(0, -(2**63) + 10, 1, 2, 0)]


def test_given_watermarks_drive_timeouts_and_flush(impl: RunBatch) -> None:
    state = KeyState.empty(1)
    # One event of key 0 at 0, but the (larger) batch it came from reached 12
    # before it and 30 at its end: the given watermarks decide.
    result = impl(
        LINE,
        np.array([0, 0]),
        np.array([0, 1]),
        np.array([0, 1]),
        state,
        watermark=30,
        wm=np.array([0, 12]),
    )
    assert timeouts(result) == [(0, 10, 1, 2, 1)]
    assert result.status.tolist() == [FIRED, LATE]
    assert result.watermark == 30


@pytest.mark.parametrize(
    ("wm", "message"),
    [([5], "one watermark per event"), ([3, 2], "non-decreasing"), ([0, 0], ">= times")],
)
def test_bad_given_watermarks(impl: RunBatch, wm: list[int], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        impl(
            LINE,
            np.array([0, 0]),
            np.array([0, 0]),
            np.array([0, 1]),
            KeyState.empty(1),
            watermark=NO_WATERMARK,
            wm=np.array(wm),
        )


def test_long_timeout_chains_grow_the_output_and_resume(impl: RunBatch) -> None:
    # A two-state timeout cycle: key 0 fires 5000 timeouts before its second event,
    # key 1 fires 5000 in the batch-end flush; both runs outgrow the initial
    # timeout buffers several times in the middle of a chain.
    cm = machine([[0], [1]], {0: (1, 1), 1: (1, 0)})
    state = KeyState.empty(2)
    result = run(impl, cm, [(0, 0, 0), (1, 0, 0), (0, 0, 5000)], state)
    rows = timeouts(result)
    assert len(rows) == 10_000
    expected_0 = [(0, t, (t - 1) % 2, t % 2, 2) for t in range(1, 5001)]
    expected_1 = [(1, t, (t - 1) % 2, t % 2, 3) for t in range(1, 5001)]
    assert rows == expected_0 + expected_1
    assert result.status.tolist() == [FIRED, FIRED, FIRED]
    assert result.from_state.tolist() == [0, 0, 0]
    assert state.state.tolist() == [0, 0] and state.since.tolist() == [5000, 5000]
    assert state.last.tolist() == [5000, 5000] and state.events.tolist() == [2, 1]


def test_extreme_distances_between_since_and_the_watermark(impl: RunBatch) -> None:
    # s0 times out to s1 after 5 ticks; s1 has no timeout.
    cm = machine([[0], [1]], {0: (5, 1)})
    lo, hi = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
    state = KeyState.from_arrays(
        [1, 0, 0, 0],  # key 0 in s1 (no timeout), keys 1-3 in s0
        [lo, hi - 2, 100, lo],  # key 1's deadline would overflow; key 2's is ahead
        [lo, hi - 2, 100, lo],
        [1, 1, 1, 1],
    )
    empty = np.array([], dtype=np.int64)
    result = impl(cm, empty, empty.astype(np.int32), empty, state.copy(), watermark=50)
    assert timeouts(result) == [(3, lo + 5, 0, 1, 0)]
    result = impl(cm, empty, empty.astype(np.int32), empty, state, watermark=hi)
    assert timeouts(result) == [(2, 105, 0, 1, 0), (3, lo + 5, 0, 1, 0)]
    assert state.state.tolist() == [1, 0, 1, 1]
    # An event at int64 max for a key in s1 since int64 min: the widest distance.
    state = KeyState.from_arrays([1], [lo], [lo], [0])
    result = run(impl, cm, [(0, 0, hi)], state)
    assert result.n_timeouts == 0 and result.status.tolist() == [FIRED]
    assert (state.state[0], state.since[0], state.last[0]) == (1, hi, hi)


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("touched", [True, False])
def test_kernel_rejects_state_codes_of_another_machine(touched: bool, threads: int) -> None:
    state = KeyState.empty(2)
    state.state[1] = 7  # LINE has 3 states
    rows = [(1, 0, 5)] if touched else [(0, 0, 5)]
    with pytest.raises(ConfigurationError, match="key id 1 holds state code 7"):
        run(functools.partial(run_batch, threads=threads), LINE, rows, state)


def test_the_first_bad_event_is_reported_whichever_part_meets_it() -> None:
    # Keys 1 and 2 land in different parts; key 2's event comes first.
    state = KeyState.empty(4)
    state.state[1] = state.state[2] = 9
    with pytest.raises(ConfigurationError, match="key id 2 holds state code 9"):
        run(functools.partial(run_batch, threads=2), LINE, [(0, 0, 1), (2, 0, 2), (1, 0, 3)], state)
