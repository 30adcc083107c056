"""Property tests: the numba kernel equals the plain-Python reference, and neither
depends on how the events are cut into batches."""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkit.kernel import (
    NO_WATERMARK,
    BatchResult,
    CompiledMachine,
    KeyState,
    _numba,
    history_arrays,
    history_order,
    run_batch,
)
from streamkit.kernel.reference import run_batch_reference

from .conftest import SMALL_LISTED, RunBatch

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
IMPLS: dict[str, RunBatch] = {
    "kernel": run_batch,
    "kernel-2-threads": functools.partial(run_batch, threads=2),
    "reference": run_batch_reference,
}


@st.composite
def machines(draw: st.DrawFn) -> CompiledMachine:
    """Random tables with holes (-1), self-loops, and timeouts incl. chains and cycles."""
    n_s = draw(st.integers(1, 5))
    n_e = draw(st.integers(1, 4))
    table = draw(st.lists(st.integers(-1, n_s - 1), min_size=n_s * n_e, max_size=n_s * n_e))
    after = draw(st.lists(st.one_of(st.just(-1), st.integers(1, 8)), min_size=n_s, max_size=n_s))
    to = [draw(st.integers(0, n_s - 1)) if a > 0 else -1 for a in after]
    return CompiledMachine(
        states=tuple(f"s{i}" for i in range(n_s)),
        events=tuple(f"e{i}" for i in range(n_e)),
        table=np.array(table).reshape(n_s, n_e),
        timeout_after=np.array(after),
        timeout_to=np.array(to),
        initial=draw(st.integers(0, n_s - 1)),
    )


@st.composite
def streams(draw: st.DrawFn, cm: CompiledMachine) -> dict[str, Any]:
    """Skewed keys (a few hot ones), tied and out-of-order times, unknown events."""
    n = draw(st.integers(0, 80))
    n_keys = draw(st.integers(1, 12))
    hot = st.integers(0, min(1, n_keys - 1))
    key = st.one_of(hot, hot, hot, st.integers(0, n_keys - 1))
    step = st.one_of(st.integers(-5, 5), st.integers(-5, 5), st.integers(10, 40))
    keys = draw(st.lists(key, min_size=n, max_size=n))
    events = draw(st.lists(st.integers(-1, cm.n_events - 1), min_size=n, max_size=n))
    steps = draw(st.lists(step, min_size=n, max_size=n))
    times = draw(st.integers(-30, 30)) + np.cumsum(np.array(steps, dtype=np.int64))
    return {
        "n_keys": n_keys,
        "keys": np.array(keys, dtype=np.int64),
        "events": np.array(events, dtype=np.int32),
        "times": times.astype(np.int64),
    }


@st.composite
def key_states(draw: st.DrawFn, cm: CompiledMachine, n_keys: int) -> KeyState:
    """A carried state: some keys never seen, others anywhere with last >= since."""
    state = draw(st.lists(st.integers(-1, cm.n_states - 1), min_size=n_keys, max_size=n_keys))
    since = draw(st.lists(st.integers(-40, 10), min_size=n_keys, max_size=n_keys))
    extra = draw(st.lists(st.integers(0, 10), min_size=n_keys, max_size=n_keys))
    counts = draw(st.lists(st.integers(0, 5), min_size=n_keys, max_size=n_keys))
    seen = np.array(state) >= 0
    return KeyState.from_arrays(
        state,
        np.where(seen, since, 0),
        np.where(seen, np.array(since) + np.array(extra), 0),
        np.where(seen, counts, 0),
    )


@st.composite
def cases(draw: st.DrawFn, *, carried: bool) -> dict[str, Any]:
    cm = draw(machines())
    data = draw(streams(cm))
    if carried:
        data["state"] = draw(key_states(cm, data["n_keys"]))
        data["watermark"] = draw(st.one_of(st.just(NO_WATERMARK), st.integers(-40, 20)))
    else:
        data["state"] = KeyState.empty(data["n_keys"])
        data["watermark"] = NO_WATERMARK
    n = len(data["keys"])
    data["cuts"] = sorted(draw(st.sets(st.integers(0, n), max_size=6)))
    data["cm"] = cm
    return data


def _assert_results_equal(a: BatchResult, b: BatchResult) -> None:
    for name in (
        "from_state",
        "to_state",
        "status",
        "t_key",
        "t_time",
        "t_from",
        "t_to",
        "t_before",
    ):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.watermark == b.watermark
    assert a.equals(b)


def _assert_states_equal(a: KeyState, b: KeyState) -> None:
    for name in ("state", "since", "last", "events"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.equals(b)


def _run_split(impl: Any, data: dict[str, Any], cuts: list[int]) -> tuple[Any, KeyState, int]:
    """Run the stream cut at ``cuts``; return per-key history rows, final state, watermark."""
    cm = data["cm"]
    state = data["state"].copy()
    wm = data["watermark"]
    rows: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    bounds = [0, *cuts, len(data["keys"])]
    for lo, hi in itertools.pairwise(bounds):
        keys = data["keys"][lo:hi]
        events = data["events"][lo:hi]
        times = data["times"][lo:hi]
        result = impl(cm, keys, events, times, state, watermark=wm)
        wm = result.watermark
        is_timeout, index = history_order(result)
        for flag, j in zip(is_timeout.tolist(), index.tolist(), strict=True):
            if flag:
                rows[int(result.t_key[j])].append(
                    ("timeout", int(result.t_time[j]), int(result.t_from[j]), int(result.t_to[j]))
                )
            else:
                rows[int(keys[j])].append(
                    (
                        "event",
                        int(times[j]),
                        int(events[j]),
                        int(result.from_state[j]),
                        int(result.to_state[j]),
                        int(result.status[j]),
                    )
                )
    return dict(rows), state, wm


@SETTINGS
@given(cases(carried=True), st.sampled_from([1, 2, 3, 4, 8]))
def test_kernel_equals_reference(data: dict[str, Any], threads: int) -> None:
    """In one thread or split in key parts (little room for listed events: many listing blocks)."""
    cm = data["cm"]
    st_fast, st_slow = data["state"].copy(), data["state"].copy()
    args = (cm, data["keys"], data["events"], data["times"])
    with mock.patch.object(_numba, "_LISTED", SMALL_LISTED):
        fast = run_batch(*args, st_fast, watermark=data["watermark"], threads=threads)
    slow = run_batch_reference(*args, st_slow, watermark=data["watermark"])
    _assert_results_equal(fast, slow)
    _assert_states_equal(st_fast, st_slow)


@pytest.mark.parametrize("name", sorted(IMPLS))
@SETTINGS
@given(data=cases(carried=False))
def test_batch_splits_do_not_change_results(name: str, data: dict[str, Any]) -> None:
    impl = IMPLS[name]
    whole_rows, whole_state, whole_wm = _run_split(impl, data, [])
    split_rows, split_state, split_wm = _run_split(impl, data, data["cuts"])
    assert split_rows == whole_rows
    _assert_states_equal(split_state, whole_state)
    assert split_wm == whole_wm


@SETTINGS
@given(cases(carried=False))
def test_history_is_a_consistent_per_key_chain(data: dict[str, Any]) -> None:
    """In history order, each key's rows chain: a row starts where the previous ended,
    timeouts fire at since + after, and time never goes backwards except for late rows."""
    cm = data["cm"]
    rows, state, _ = _run_split(run_batch, data, data["cuts"])
    for key, key_rows in rows.items():
        current = -1
        since = last = None
        for row in key_rows:
            if row[0] == "timeout":
                _, t, frm, to = row
                assert frm == current
                assert to == cm.timeout_to[frm]
                assert t == since + cm.timeout_after[frm]
                current, since, last = to, t, max(last, t)
                continue
            _, t, event, frm, to, status = row
            if current == -1:
                current, since, last = cm.initial, t, t
            assert frm == current
            if status == 2:
                assert t < last and to == frm
                continue
            assert t >= last
            target = cm.table[frm, event] if event >= 0 else -1
            if status == 1:
                assert target == -1 and to == frm
                last = t
            else:
                assert status == 0 and to == target
                current, since, last = to, t, t
        assert state.state[key] == current
        assert state.since[key] == since
        assert state.last[key] == last


@SETTINGS
@given(cases(carried=True))
def test_history_order_is_a_permutation(data: dict[str, Any]) -> None:
    result = run_batch(
        data["cm"],
        data["keys"],
        data["events"],
        data["times"],
        data["state"].copy(),
        watermark=data["watermark"],
    )
    is_timeout, index = history_order(result)
    assert sorted(index[~is_timeout].tolist()) == list(range(result.n_events))
    assert sorted(index[is_timeout].tolist()) == list(range(result.n_timeouts))
    # Timeout rows keep firing order; each sits right before its event.
    assert index[is_timeout].tolist() == list(range(result.n_timeouts))
    assert index[~is_timeout].tolist() == list(range(result.n_events))
    events_before: np.ndarray = np.cumsum(~is_timeout) - (~is_timeout).astype(np.int64)
    np.testing.assert_array_equal(events_before[is_timeout], result.t_before)
    fired_flags, fired_index = history_order(result, only_fired=True)
    kept_events = fired_index[~fired_flags]
    assert kept_events.tolist() == np.flatnonzero(result.status == 0).tolist()
    assert fired_flags.sum() == result.n_timeouts


@SETTINGS
@given(cases(carried=True))
def test_history_arrays_are_rows_sorted_by_time_then_firing_order(data: dict[str, Any]) -> None:
    """The compiled merge equals the obvious construction: rows in firing order
    (history_order), then Python's stable sort by time."""
    keys = np.asarray(data["keys"], dtype=np.int64)
    events = np.asarray(data["events"], dtype=np.int32)
    times = np.asarray(data["times"], dtype=np.int64)
    result = run_batch(
        data["cm"], keys, events, times, data["state"].copy(), watermark=data["watermark"]
    )
    flags, index = history_order(result, only_fired=True)
    timeout_code = data["cm"].n_events
    rows = []
    for is_t, i in zip(flags.tolist(), index.tolist(), strict=True):
        if is_t:
            rows.append(
                (int(result.t_key[i]), int(result.t_time[i]), timeout_code,
                 int(result.t_from[i]), int(result.t_to[i]))
            )  # fmt: skip
        else:
            rows.append(
                (int(keys[i]), int(times[i]), int(events[i]),
                 int(result.from_state[i]), int(result.to_state[i]))
            )  # fmt: skip
    rows.sort(key=lambda r: r[1])  # stable: ties keep firing order
    got = history_arrays(result, keys, times, events, timeout_code=timeout_code)
    assert list(zip(*(a.tolist() for a in got), strict=True)) == rows


@pytest.mark.parametrize("name", sorted(IMPLS))
@SETTINGS
@given(data=cases(carried=True), parts=st.integers(1, 4))
def test_key_partitions_with_given_watermarks_equal_the_whole(
    name: str, data: dict[str, Any], parts: int
) -> None:
    """Running each group of keys on its own, with the whole batch's per-event
    watermarks (what a cluster executor does), gives the whole batch's result."""
    impl = IMPLS[name]
    cm, keys, events, times = data["cm"], data["keys"], data["events"], data["times"]
    carried = data["watermark"]
    whole_state = data["state"].copy()
    whole = impl(cm, keys, events, times, whole_state, watermark=carried)
    wm = np.maximum.accumulate(np.concatenate(([carried], times)))[1:].astype(np.int64)
    # A partition may hold no event: the whole batch's final watermark drives its flush.
    end = int(wm[-1]) if len(wm) else carried
    n_keys = len(whole_state)
    merged = data["state"].copy()
    status = np.full(len(keys), -1, dtype=np.int8)
    to_state = np.full(len(keys), -9, dtype=np.int32)
    timeouts: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    for g in range(parts):
        members = np.flatnonzero(np.arange(n_keys) % parts == g)
        local = np.full(n_keys, -1, dtype=np.int64)
        local[members] = np.arange(len(members))
        idx = np.flatnonzero(np.isin(keys, members))
        part_state = KeyState.from_arrays(
            merged.state[members],
            merged.since[members],
            merged.last[members],
            merged.events[members],
        )
        res = impl(
            cm,
            local[keys[idx]],
            events[idx],
            times[idx],
            part_state,
            watermark=end,
            wm=wm[idx],
        )
        assert res.watermark == whole.watermark
        status[idx], to_state[idx] = res.status, res.to_state
        for name_ in ("state", "since", "last", "events"):
            getattr(merged, name_)[members] = getattr(part_state, name_)
        before = np.append(idx, len(keys))[res.t_before]
        for j in range(res.n_timeouts):
            timeouts[int(members[res.t_key[j]])].append(
                (int(res.t_time[j]), int(res.t_from[j]), int(res.t_to[j]), int(before[j]))
            )
    np.testing.assert_array_equal(status, whole.status)
    np.testing.assert_array_equal(to_state, whole.to_state)
    expected: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    for j in range(whole.n_timeouts):
        expected[int(whole.t_key[j])].append(
            (int(whole.t_time[j]), int(whole.t_from[j]), int(whole.t_to[j]), int(whole.t_before[j]))
        )
    assert dict(timeouts) == dict(expected)
    _assert_states_equal(merged, whole_state)
