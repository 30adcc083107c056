"""Timer loops: cycles of timeouts alone, the ``periodic`` opt-in, and the per-span bound."""

from __future__ import annotations

import html
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.kernel import NO_WATERMARK, KeyState, compile
from streamkit.kernel.reference import run_batch_reference
from streamkit.machines import Machine, library
from streamkit.machines._validate import max_timeouts_within
from streamkit.machines.report import ERROR_KINDS

SCHEMA = Path(sk.machines.__file__).parent / "data" / "machine.schema.json"


def loops(m: Machine) -> list[tuple[str, tuple[str, ...]]]:
    return [(p.severity, p.states) for p in m.validate().problems if p.kind == "timer_loop"]


def machine(
    timeouts: list[tuple[str, str, str]],
    transitions: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
    *,
    states: tuple[str, ...] = ("a", "b", "c", "d"),
    final: tuple[str, ...] = ("d",),
    periodic: bool = False,
) -> Machine:
    return Machine(
        "m",
        states=states,
        initial=states[0],
        final=final,
        transitions=transitions,
        timeouts=timeouts,
        periodic=periodic,
    )


# ---------------------------------------------------------------- detection, by table
# Every state reachable and able to finish; the timeouts under test come on top.
ENTER = [
    ("a", "go", "b"),
    ("a", "jump", "c"),
    ("a", "end", "d"),
    ("b", "end", "d"),
    ("c", "end", "d"),
]


@pytest.mark.parametrize(
    ("timeouts", "transitions", "expected"),
    [
        # a --1m--> b --1m--> a
        ([("a", "1m", "b"), ("b", "1m", "a")], ENTER, [("a", "b")]),
        # a self-timeout
        ([("b", "1m", "b")], ENTER, [("b",)]),
        # three states, declared out of order: named in firing order from the first state
        ([("c", "1s", "a"), ("a", "1s", "b"), ("b", "1s", "c")], ENTER, [("a", "b", "c")]),
        ([("a", "1s", "c"), ("c", "1s", "b"), ("b", "1s", "a")], ENTER, [("a", "c", "b")]),
        # two separate loops, each reported
        ([("a", "1s", "a"), ("b", "1s", "c"), ("c", "1s", "b")], ENTER, [("a",), ("b", "c")]),
        # a chain of timeouts ending in a state without one: no loop
        ([("a", "1m", "b"), ("b", "1m", "c"), ("c", "1m", "d")], ENTER, []),
        # a timeout chain into a loop: only the loop is named
        ([("a", "1m", "b"), ("b", "1m", "c"), ("c", "1m", "b")], ENTER, [("b", "c")]),
        # one event edge in the cycle: an idle key stops, not a timer loop
        ([("a", "1m", "b")], [*ENTER, ("b", "back", "a")], []),
        ([("a", "1m", "b"), ("b", "1m", "c")], [*ENTER, ("c", "back", "a")], []),
        # a loop reached only through an event is still reported
        ([("c", "1m", "c")], [*ENTER, ("b", "x", "c")], [("c",)]),
        # an event self-loop is not a timer loop
        ([("a", "1m", "d")], [*ENTER, ("a", "ping", "a")], []),
    ],
)
def test_timer_loops_are_found_and_named_in_order(
    timeouts: list[tuple[str, str, str]],
    transitions: list[tuple[str, str, str]],
    expected: list[tuple[str, ...]],
) -> None:
    m = machine(timeouts, transitions)
    assert loops(m) == [("error", states) for states in expected]
    assert m.validate().ok == (not expected)
    if expected:
        assert "timer_loop" in ERROR_KINDS
        with pytest.raises(sk.MachineError, match="error timer_loop"):
            m.check()


def test_unreachable_loop_is_reported_as_unreachable_only() -> None:
    m = machine([("c", "1m", "b"), ("b", "1m", "c")], [("a", "end", "d")])
    kinds = {p.kind for p in m.validate().problems}
    assert "unreachable" in kinds and "timer_loop" not in kinds


def test_a_loop_that_cannot_finish_is_a_livelock_and_a_timer_loop() -> None:
    m = machine([("a", "1m", "b"), ("b", "1m", "a")], [], states=("a", "b", "d"))
    found = [(p.kind, p.states) for p in m.validate().errors]
    assert ("livelock", ("a", "b")) in found and ("timer_loop", ("a", "b")) in found
    # periodic does not excuse the livelock
    m = machine([("a", "1m", "b"), ("b", "1m", "a")], [], states=("a", "b", "d"), periodic=True)
    assert [p.kind for p in m.validate().errors] == ["unreachable", "livelock"]
    assert "timer_loop" in [p.kind for p in m.validate().warnings]


# ---------------------------------------------------------------- detection, random graphs
STATES = [f"s{i}" for i in range(6)]


@st.composite
def graphs(draw: st.DrawFn) -> Machine:
    n = draw(st.integers(1, 6))
    states = STATES[:n]
    state = st.sampled_from(states)
    timeouts = draw(
        st.dictionaries(state, st.tuples(st.sampled_from(["1s", "2s", "5s"]), state), max_size=n)
    )
    moves = draw(st.dictionaries(st.tuples(state, st.sampled_from(["x", "y"])), state, max_size=8))
    transitions = [(s, e, to) for (s, e), to in moves.items()]
    return Machine(
        "g",
        states=states,
        initial=states[0],
        final=draw(st.lists(state, unique=True, max_size=2)),
        transitions=transitions,
        timeouts=[(s, after, to) for s, (after, to) in timeouts.items()],
        periodic=draw(st.booleans()),
    )


def brute_force_loops(m: Machine) -> set[frozenset[str]]:
    """Reachable cycles of the timeout graph, by walking each state's timeout chain."""
    edges: dict[str, set[str]] = {}
    for t in m.transitions:
        edges.setdefault(t.source, set()).add(t.target)
    for w in m.timeouts:
        edges.setdefault(w.state, set()).add(w.target)
    reached, todo = {m.initial}, [m.initial]
    while todo:
        for v in edges.get(todo.pop(), ()):
            if v not in reached:
                reached.add(v)
                todo.append(v)
    nxt = {w.state: w.target for w in m.timeouts}
    found: set[frozenset[str]] = set()
    for s in reached:
        path: list[str] = [s]
        at = nxt.get(s)
        while at is not None and at not in path:
            path.append(at)
            at = nxt.get(at)
        if at == s:
            found.add(frozenset(path))
    return found


@settings(max_examples=400, deadline=None)
@given(graphs())
def test_timer_loops_agree_with_brute_force(m: Machine) -> None:
    report = m.validate()
    problems = [p for p in report.problems if p.kind == "timer_loop"]
    assert {frozenset(p.states) for p in problems} == brute_force_loops(m)
    nxt = {w.state: w.target for w in m.timeouts}
    for p in problems:
        # named in firing order, starting from the first declared state of the loop
        assert list(p.states) == sorted(p.states, key=m.states.index)[:1] + list(p.states[1:])
        assert all(nxt[a] == b for a, b in zip(p.states, p.states[1:] + p.states[:1]))
        assert p.severity == ("warning" if m.periodic else "error")
        assert p.message.startswith(("state ", "the timeouts "))
    if m.periodic:
        assert report.ok == (not [p for p in report.errors if p.kind != "timer_loop"])
    # errors first, whatever their kind
    severities = [p.severity for p in report.problems]
    assert severities == sorted(severities, key=lambda s: s != "error")


# ---------------------------------------------------------------- messages and displays
def test_error_message_names_the_cycle_its_rate_and_both_fixes() -> None:
    m = machine([("a", "30s", "b"), ("b", "1m", "a")], ENTER)
    [p] = m.validate().errors
    assert p.kind == "timer_loop" and p.states == ("a", "b")
    assert "'a' -> 'b' -> 'a'" in p.message
    assert "'a' after 30s, 'b' after 1m" in p.message
    assert "2 timeouts every 1m30s of event time forever" in p.message
    assert "replace one with an event transition" in p.message
    assert "periodic=True (YAML: periodic: true)" in p.message
    with pytest.raises(sk.MachineError) as info:
        m.check()
    assert "machine 'm' is invalid (1 error)" in str(info.value)
    assert p.message in str(info.value)


def test_self_timeout_message() -> None:
    [p] = machine([("b", "90s", "b")], ENTER).validate().errors
    assert p.message.startswith("state 'b' times out into itself after 90s with no event in it")
    assert "one timeout every 90s of event time forever" in p.message


def test_periodic_message_says_it_is_allowed() -> None:
    m = machine([("a", "1s", "b"), ("b", "2s", "a")], ENTER, periodic=True)
    report = m.validate()
    assert report.ok and m.check() is m
    [p] = report.warnings
    assert p.kind == "timer_loop" and p.severity == "warning"
    assert "allowed because the machine is declared periodic" in p.message
    assert "2 timeouts every 3s of event time" in p.message
    assert str(p).startswith("warning timer_loop: the timeouts 'a' -> 'b' -> 'a'")


@pytest.mark.parametrize("periodic", [False, True])
def test_html_of_the_report_and_the_machine_show_the_loop(periodic: bool) -> None:
    m = machine([("a", "1m", "b"), ("b", "1m", "a")], ENTER, periodic=periodic)
    page = m.validate()._repr_html_()
    severity = "warning" if periodic else "error"
    assert f"<td>{severity}</td><td>timer_loop</td><td>a, b</td>" in page
    assert html.escape("'a' -> 'b' -> 'a'") in page
    assert ("invalid" in page) != periodic
    whole = m._repr_html_()
    assert "timer_loop" in whole and ("periodic" in whole.split("</p>")[0]) == periodic


# ---------------------------------------------------------------- the opt-in in every form
BEAT_YAML = """
name: beat
states: [alive, silent]
initial: alive
final: [silent]
periodic: true
transitions:
  - {from: alive, on: stop, to: silent}
timeouts:
  - {state: alive, after: 1m, to: alive}
"""


def test_periodic_in_yaml_dict_and_round_trips() -> None:
    m = Machine.from_yaml(BEAT_YAML)
    assert m.periodic and m.validate().ok
    assert m.to_dict()["periodic"] is True
    assert "periodic: true\n" in m.to_yaml()
    assert Machine.from_yaml(m.to_yaml()) == m == Machine.from_dict(m.to_dict())
    assert "periodic=True" in repr(m)
    off = Machine.from_yaml(BEAT_YAML.replace("periodic: true", "periodic: false"))
    assert not off.periodic and not off.validate().ok
    # false is the default and is not written, so existing fingerprints do not change
    assert "periodic" not in off.to_dict()
    assert off == Machine.from_yaml(BEAT_YAML.replace("periodic: true\n", ""))
    assert off.fingerprint() != m.fingerprint()


@pytest.mark.parametrize("value", ["yes", "on", "1", "'true'", "[true]", ""])
def test_periodic_must_be_a_boolean(value: str) -> None:
    with pytest.raises(sk.MachineError, match=r"machine 'beat': periodic: expected true or false"):
        Machine.from_yaml(BEAT_YAML.replace("periodic: true", f"periodic: {value}"))
    with pytest.raises(sk.MachineError, match="periodic: expected true or false, found int 1"):
        Machine("m", states=["a"], initial="a", final=["a"], periodic=1)  # type: ignore[arg-type]


def test_schema_knows_periodic() -> None:
    validator = jsonschema.Draft202012Validator(library.schema())
    data = Machine.from_yaml(BEAT_YAML).to_dict()
    assert list(validator.iter_errors(data)) == []
    assert list(validator.iter_errors({**data, "periodic": "yes"}))
    raw = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert raw["properties"]["periodic"]["type"] == "boolean"


def test_shipped_machines_have_no_timer_loops() -> None:
    shipped = [library.load(name) for name in library.names()]
    shipped += [sk.datasets.order_machine(), sk.datasets.tcp_machine()]
    for m in shipped:
        assert not m.periodic and m.validate().ok, m.name
        assert loops(m) == []


# ---------------------------------------------------------------- the bound
def chain_count(m: Machine, span: int) -> int:
    """Brute force, in whole seconds: the longest chain of timeouts within ``span``."""
    nxt = {w.state: (int(w.after.total_seconds()), w.target) for w in m.timeouts}
    best = 0
    for first in nxt:
        t, s, fired = 0, nxt[first][1], 1
        while s in nxt and t + nxt[s][0] <= span:
            t += nxt[s][0]
            s = nxt[s][1]
            fired += 1
        best = max(best, fired)
    return best


@settings(max_examples=300, deadline=None)
@given(graphs(), st.integers(0, 200))
def test_max_timeouts_within_agrees_with_brute_force(m: Machine, span: int) -> None:
    assert max_timeouts_within(m, timedelta(seconds=span)) == chain_count(m, span)


def test_max_timeouts_within_is_flat_without_loops_and_linear_with_them() -> None:
    chain = machine([("a", "1m", "b"), ("b", "1m", "c"), ("c", "1m", "d")], ENTER)
    assert [max_timeouts_within(chain, f"{d}d") for d in (1, 30, 365)] == [3, 3, 3]
    beat = machine([("a", "1m", "a")], ENTER, periodic=True)
    assert [max_timeouts_within(beat, f"{d}d") for d in (1, 30)] == [1441, 43201]
    assert max_timeouts_within(machine([], ENTER), "1d") == 0
    with pytest.raises(ValueError, match="span must not be negative"):
        max_timeouts_within(beat, -timedelta(seconds=1))


@settings(max_examples=150, deadline=None)
@given(
    graphs(),
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["x", "y"]), st.integers(0, 20)), min_size=1
    ),
    st.integers(0, 120),
)
def test_the_reference_kernel_stays_within_the_bound(
    m: Machine, batch: list[tuple[int, str, int]], gap: int
) -> None:
    """A key's timeouts between two of its events form one chain within the span the
    watermark moves over (from the watermark before the batch, or the key's first event,
    to the one after it): at most (its events in the batch + 1) such chains per batch."""
    cm = compile(m, tick=timedelta(seconds=1))
    code = {e: i for i, e in enumerate(cm.events)}
    batch = sorted(batch, key=lambda row: row[2])
    keys = [k for k, _, _ in batch] + [4]  # key 4 only moves the clock on
    events = [code.get(e, -1) for _, e, _ in batch] + [-1]
    wm = batch[-1][2]
    times = [t for _, _, t in batch] + [wm + gap]
    state = KeyState.empty(5)
    first = run_batch_reference(
        cm, keys[:-1], events[:-1], times[:-1], state, watermark=NO_WATERMARK
    )
    starts = {k: t for k, _, t in reversed(batch)}
    per_key = Counter(k for k, _, _ in batch)
    for k, n in Counter(first.t_key.tolist()).items():
        bound = max_timeouts_within(m, timedelta(seconds=wm - starts[k]))
        assert n <= (per_key[k] + 1) * bound
    # A batch without events of the key: one chain, within the watermark's move.
    second = run_batch_reference(cm, keys[-1:], events[-1:], times[-1:], state, watermark=wm)
    for _, n in Counter(second.t_key.tolist()).items():
        assert n <= max_timeouts_within(m, timedelta(seconds=gap))
    assert np.all(second.t_time > wm)
