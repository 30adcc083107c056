"""Validation: each problem kind, an independent oracle on random machines, RFC machines."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkit.machines import Machine, Problem, ValidationReport
from streamkit.machines._validate import strongly_connected_components
from streamkit.machines.report import ERROR_KINDS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "machines"
Found = set[tuple[str, frozenset[str]]]


def errors(m: Machine) -> Found:
    return {(p.kind, frozenset(p.states)) for p in m.validate().problems if p.severity == "error"}


def kinds(m: Machine) -> list[tuple[str, tuple[str, ...]]]:
    return [(p.kind, p.states) for p in m.validate().problems]


# ---------------------------------------------------------------- the oracle
def oracle(m: Machine) -> Found:
    """Plain reference: Floyd-Warshall transitive closure over the declared states."""
    states = list(m.states)
    declared = set(states)
    found: Found = set()
    d = m.to_dict()
    named: list[str] = [m.initial, *m.final]
    for t in d["transitions"]:
        src = t["from"]
        if isinstance(src, list):
            named.extend(src)
        elif src != "*":
            named.append(src)
        named.append(t["to"])
    for t in d["timeouts"]:
        named.extend([t["state"], t["to"]])
    for name in named:
        if name not in declared:
            found.add(("unknown_state", frozenset([name])))

    targets: dict[tuple[str, str], set[str]] = {}
    for t in m.transitions:
        targets.setdefault((t.source, t.event), set()).add(t.target)
    for (src, _), tos in targets.items():
        if len(tos) > 1:
            found.add(("nondeterministic", frozenset({src} | tos)))
    waits: dict[str, set[tuple[Any, str]]] = {}
    for w in m.timeouts:
        waits.setdefault(w.state, set()).add((w.after, w.target))
    for state, variants in waits.items():
        if len(variants) > 1:
            found.add(("nondeterministic", frozenset({state} | {to for _, to in variants})))

    if not m.final:
        found.add(("no_final", frozenset()))
    if m.initial not in declared:
        return found

    n = len(states)
    idx = {s: i for i, s in enumerate(states)}
    path = [[False] * n for _ in range(n)]  # path[i][j]: a path of length >= 1
    edges = [(t.source, t.target) for t in m.transitions] + [
        (w.state, w.target) for w in m.timeouts
    ]
    for u, v in edges:
        if u in declared and v in declared:
            path[idx[u]][idx[v]] = True
    for k in range(n):
        for i in range(n):
            if path[i][k]:
                for j in range(n):
                    if path[k][j]:
                        path[i][j] = True
    root = idx[m.initial]
    reached = {i for i in range(n) if i == root or path[root][i]}
    finals = {idx[f] for f in m.final if f in declared}
    has_out = {u for u, _ in edges}
    for i in range(n):
        s = states[i]
        if i not in reached:
            found.add(("unreachable", frozenset([s])))
        elif i not in finals and s not in has_out:
            found.add(("deadlock", frozenset([s])))
        elif path[i][i] and not (i in finals or any(path[i][f] for f in finals)):
            component = {states[j] for j in range(n) if path[i][j] and path[j][i]}
            found.add(("livelock", frozenset(component)))
    # Timer loops: cycles of the closure over timeout edges alone, reachable ones.
    timed = [[False] * n for _ in range(n)]
    for w in m.timeouts:
        if w.state in declared and w.target in declared:
            timed[idx[w.state]][idx[w.target]] = True
    for k in range(n):
        for i in range(n):
            if timed[i][k]:
                for j in range(n):
                    if timed[k][j]:
                        timed[i][j] = True
    for i in sorted(reached):
        if timed[i][i] and not m.periodic:
            loop = {states[j] for j in range(n) if timed[i][j] and timed[j][i]}
            found.add(("timer_loop", frozenset(loop)))
    return found


NAMES = [f"s{i}" for i in range(7)]
UNKNOWN = ["x0", "x1"]
EVENTS = ["e0", "e1", "e2"]


@st.composite
def machines(draw: st.DrawFn) -> Machine:
    n = draw(st.integers(1, 7))
    states = NAMES[:n]
    anywhere = (
        st.sampled_from(states + UNKNOWN)
        if draw(st.integers(0, 4)) == 0
        else st.sampled_from(states)
    )
    initial = draw(anywhere)
    final = draw(st.lists(anywhere, unique=True, max_size=3))
    source = st.one_of(
        anywhere,
        st.lists(anywhere, min_size=1, max_size=3, unique=True),
        st.just("*"),
    )
    transitions = draw(st.lists(st.tuples(source, st.sampled_from(EVENTS), anywhere), max_size=12))
    timeouts = draw(
        st.lists(st.tuples(anywhere, st.sampled_from(["1s", "2s"]), anywhere), max_size=3)
    )
    return Machine(
        "random",
        states=states,
        initial=initial,
        final=final,
        transitions=transitions,
        timeouts=timeouts,
    )


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(machines())
def test_validation_agrees_with_the_oracle(m: Machine) -> None:
    report = m.validate()
    assert errors(m) == oracle(m)
    assert report.ok == (not oracle(m))
    assert all(p.kind in ERROR_KINDS for p in report.errors)
    assert all(p.severity == "warning" for p in report.warnings)


@settings(max_examples=300, deadline=None)
@given(machines())
def test_round_trip_on_random_machines(m: Machine) -> None:
    again = Machine.from_dict(m.to_dict())
    assert again == m and again.to_dict() == m.to_dict()
    assert Machine.from_yaml(m.to_yaml()) == m
    assert again.validate() == m.validate()


# ---------------------------------------------------------------- each kind
def test_valid_machine_has_no_problems() -> None:
    m = Machine(
        "ok",
        states=["a", "b", "c"],
        initial="a",
        final=["c"],
        transitions=[("a", "x", "b"), ("b", "y", "a"), ("b", "z", "c")],
    )
    report = m.validate()
    assert report.ok and report.problems == [] and report.errors == [] and report.warnings == []
    assert str(report) == "machine 'ok': valid"


def test_unknown_state_names_every_place_and_suggests() -> None:
    m = Machine(
        "m",
        states=["created", "shipped"],
        initial="created",
        final=["shipped"],
        transitions=[("created", "ship", "shiped"), (["created", "shiped"], "x", "shipped")],
    )
    [problem] = [p for p in m.validate().problems if p.kind == "unknown_state"]
    assert problem.states == ("shiped",)
    assert problem.message == (
        "state 'shiped' is used in transitions[0].to, transitions[1].from[1] but is not declared "
        "in states (did you mean 'shipped'?); add it to states or correct the name"
    )


def test_unknown_state_places_in_declaration_order() -> None:
    m = Machine(
        "m",
        states=["a"],
        initial="z",
        final=["a", "z"],
        transitions=[("a", "x", "z"), ("z", "y", "a"), (["a", "z"], "w", "a")],
        timeouts=[("z", "1m", "a")],
    )
    [problem] = m.validate().errors
    assert problem.kind == "unknown_state" and problem.states == ("z",)
    assert problem.message.startswith(
        "state 'z' is used in initial, final[1], transitions[0].to and 3 more places but"
    )


def test_nondeterministic_transitions_and_timeouts() -> None:
    m = Machine(
        "m",
        states=["a", "b", "c"],
        initial="a",
        final=["b", "c"],
        transitions=[("a", "go", "b"), ("*", "go", "c")],
        timeouts=[("a", "1m", "b"), ("a", "2m", "b")],
    )
    found = kinds(m)
    assert ("nondeterministic", ("a", "b", "c")) in found
    assert ("nondeterministic", ("a", "b")) in found
    messages = [p.message for p in m.validate().problems if p.kind == "nondeterministic"]
    assert "after 1m to 'b' (timeouts[0]), after 2m to 'b' (timeouts[1])" in messages[1]


def test_deadlock_unreachable_livelock_no_final() -> None:
    m = Machine(
        "m",
        states=["a", "b", "c", "d", "e"],
        initial="a",
        transitions=[("a", "x", "b"), ("b", "x", "c"), ("c", "x", "b"), ("a", "y", "d")],
    )
    assert kinds(m) == [
        ("no_final", ()),
        ("unreachable", ("e",)),
        ("deadlock", ("d",)),
        ("livelock", ("b", "c")),
    ]
    report = m.validate()
    assert not report.ok
    assert "the machine declares no final state" in report.problems[3].message
    assert "every reachable cycle as a livelock" in report.problems[0].message


def test_self_loop_livelock_and_final_breaks_it() -> None:
    base: dict[str, Any] = {
        "name": "m",
        "states": ["a", "b"],
        "initial": "a",
        "transitions": [("a", "x", "b"), ("b", "tick", "b")],
    }
    assert kinds(Machine(**{**base, "final": ["a"]})) == [("livelock", ("b",))]
    assert "loops on itself" in Machine(**{**base, "final": ["a"]}).validate().problems[0].message
    assert kinds(Machine(**{**base, "final": ["b"]})) == []


def test_final_states_may_have_outgoing_transitions() -> None:
    m = Machine(
        "reopen",
        states=["closed", "open"],
        initial="closed",
        final=["closed"],
        transitions=[("closed", "open", "open"), ("open", "close", "closed")],
    )
    assert m.validate().problems == []


def test_timeouts_count_as_edges() -> None:
    m = Machine(
        "m",
        states=["a", "b"],
        initial="a",
        final=["b"],
        timeouts=[("a", "5m", "b")],
    )
    assert m.validate().problems == []


def test_undeclared_initial_skips_reachability() -> None:
    m = Machine("m", states=["a", "b"], initial="z", final=["b"], transitions=[("a", "x", "b")])
    assert kinds(m) == [("unknown_state", ("z",))]


def test_warnings_do_not_clear_ok() -> None:
    m = Machine(
        "m",
        states=["a", "b", "c"],
        initial="a",
        final=["b", "c"],
        transitions=[("a", "x", "b"), ("a", "x", "b"), ("*", "timeout", "b"), ("a", "z", "c")],
        timeouts=[("b", "1m", "a"), ("b", "1m", "a")],
    )
    report = m.validate()
    assert report.ok
    assert [(p.kind, p.states) for p in report.warnings] == [
        ("duplicate", ("a",)),
        ("duplicate", ("b",)),
        ("final_timeout", ("b",)),
        ("final_timeout", ("b",)),
        ("reserved_event", ()),
    ]
    assert report.warnings[0].message == (
        "transitions[1] repeats transitions[0] for 'a' on 'x' -> 'b'; remove one of them"
    )
    assert "timeouts[1] repeats timeouts[0]" in report.warnings[1].message


def test_unused_final_warning() -> None:
    m = Machine(
        "m", states=["a", "b", "c"], initial="a", final=["b", "c"], transitions=[("a", "x", "b")]
    )
    assert kinds(m) == [("unreachable", ("c",)), ("unused_final", ("c",))]


def test_report_helpers() -> None:
    m = Machine(
        "m",
        states=["a", "b", "c"],
        initial="a",
        final=["c"],
        transitions=[("a", "x", "b"), ("a", "x", "a")],
    )
    report = m.validate()
    assert isinstance(report, ValidationReport) and isinstance(report.problems[0], Problem)
    assert report.problem_states() == ["a", "b", "c"]
    assert report.problem_states("warning") == ["c"]
    assert str(report).startswith("machine 'm': 4 errors, 1 warning\n  - error nondeterministic")
    html = report._repr_html_()
    assert "<table>" in html and "invalid" in html and "nondeterministic" in html
    # validate() hands out a fresh list: mutating it does not change the cache.
    report.problems.clear()
    assert len(m.validate().problems) == 5


def test_tarjan_is_iterative() -> None:
    n = 50_000  # far deeper than the recursion limit
    offsets = list(range(n + 1))
    targets = [(i + 1) % n for i in range(n)]
    reached, components = strongly_connected_components(offsets, targets, 0, [False] * n)
    assert all(reached)
    assert len(components) == 1 and len(components[0][0]) == n and not components[0][1]


def test_long_chain_machine() -> None:
    states = [f"s{i}" for i in range(20_000)]
    transitions = [(a, "next", b) for a, b in itertools.pairwise(states)]
    m = Machine("chain", states=states, initial="s0", final=["s19999"], transitions=transitions)
    assert m.validate().problems == []
    cyc = Machine(
        "ring",
        states=states,
        initial="s0",
        final=["s5"],
        transitions=[*transitions, ("s19999", "wrap", "s10")],
    )
    [problem] = cyc.validate().problems
    assert problem.kind == "livelock" and len(problem.states) == 19_990


# ---------------------------------------------------------------- RFC machines
def tcp() -> dict[str, Any]:
    return Machine.from_yaml(EXAMPLES / "tcp.yaml").to_dict()


def http2() -> dict[str, Any]:
    return Machine.from_yaml(EXAMPLES / "http2.yaml").to_dict()


def without(d: dict[str, Any], source: str, event: str) -> dict[str, Any]:
    """``d`` minus the transitions from ``source`` on ``event`` (splitting compact lists)."""
    out = []
    for t in d["transitions"]:
        if t["on"] != event:
            out.append(t)
        elif isinstance(t["from"], list):
            rest = [s for s in t["from"] if s != source]
            if rest:
                out.append({**t, "from": rest})
        elif t["from"] != source:
            out.append(t)
    assert len(out) < len(d["transitions"]) or any(
        isinstance(t["from"], list) and source in t["from"] for t in d["transitions"]
    )
    return {**d, "transitions": out}


def test_rfc_machines_validate_ok() -> None:
    t, h = Machine.from_dict(tcp()), Machine.from_dict(http2())
    assert len(t.states) == 11 and t.final == ("CLOSED",)
    assert t.timeouts[0].state == "TIME-WAIT" and t.timeouts[0].target == "CLOSED"
    assert len(h.states) == 7 and h.initial == "idle"
    for m in (t, h):
        assert m.validate().ok and m.validate().problems == [], str(m.validate())
        assert m.check() is m


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: without(d, "LAST-ACK", "rcv_ack_of_fin"),
            {("deadlock", frozenset({"LAST-ACK"}))},
        ),
        (lambda d: {**d, "timeouts": []}, {("deadlock", frozenset({"TIME-WAIT"}))}),
        (
            lambda d: without(d, "CLOSE-WAIT", "close"),
            {("deadlock", frozenset({"CLOSE-WAIT"})), ("unreachable", frozenset({"LAST-ACK"}))},
        ),
        (
            lambda d: {**d, "final": []},
            {("no_final", frozenset()), ("livelock", frozenset(Machine.from_dict(tcp()).states))},
        ),
        (
            lambda d: {
                **d,
                "transitions": [
                    *d["transitions"],
                    {"from": "FIN-WAIT-2", "on": "rcv_fin", "to": "CLOSING"},
                ],
            },
            {("nondeterministic", frozenset({"FIN-WAIT-2", "TIME-WAIT", "CLOSING"}))},
        ),
        (
            lambda d: {
                **d,
                "transitions": [
                    {**t, "to": "CLOSD"} if t["to"] == "CLOSED" and t["from"] == "LAST-ACK" else t
                    for t in d["transitions"]
                ],
            },
            {("unknown_state", frozenset({"CLOSD"}))},
        ),
        (
            # Without the way back from TIME-WAIT, the whole closing half cannot finish.
            # (and the self-timeout that replaces it fires every 4 minutes forever).
            lambda d: {**d, "timeouts": [{"state": "TIME-WAIT", "after": "4m", "to": "TIME-WAIT"}]},
            {("livelock", frozenset({"TIME-WAIT"})), ("timer_loop", frozenset({"TIME-WAIT"}))},
        ),
    ],
    ids=[
        "last-ack",
        "2msl",
        "close-wait",
        "no-final",
        "nondeterministic",
        "typo",
        "time-wait-loop",
    ],
)
def test_mutated_tcp(mutate: Any, expected: Found) -> None:
    m = Machine.from_dict(mutate(tcp()))
    assert errors(m) == expected
    assert errors(m) == oracle(m)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: {**d, "final": []},
            {("no_final", frozenset()), ("deadlock", frozenset({"closed"}))},
        ),
        (
            lambda d: without(without(d, "idle", "send_headers"), "idle", "recv_headers"),
            {("unreachable", frozenset({"open"}))},
        ),
        (
            lambda d: (
                without(
                    without(without(d, "open", "send_rst_stream"), "open", "recv_rst_stream"),
                    "open",
                    "send_end_stream",
                )
                | {
                    "transitions": [
                        t
                        for t in without(
                            without(
                                without(d, "open", "send_rst_stream"), "open", "recv_rst_stream"
                            ),
                            "open",
                            "send_end_stream",
                        )["transitions"]
                        if not (t["from"] == "open" and t["on"] == "recv_end_stream")
                    ]
                }
            ),
            {("deadlock", frozenset({"open"}))},
        ),
        (
            lambda d: {
                **d,
                "transitions": [
                    *d["transitions"],
                    {"from": "half-closed (local)", "on": "send_headers", "to": "open"},
                    {"from": "open", "on": "ping", "to": "half-closed (local)"},
                ],
            },
            set(),
        ),
    ],
    ids=["no-final", "no-headers", "open-stuck", "extra-cycle-still-ok"],
)
def test_mutated_http2(mutate: Any, expected: Found) -> None:
    m = Machine.from_dict(mutate(http2()))
    assert errors(m) == expected
    assert errors(m) == oracle(m)


def test_benchmark_runs_and_reports_figures(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_validate.py"
    spec = importlib.util.spec_from_file_location("bench_validate", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.main(["--states", "300", "--events", "12", "--per-state", "4", "--repeat", "1"])
    assert figures["states"] == 300 and figures["events"] == 12
    assert figures["transitions"] == 299 + 300 * 4 + len(range(0, 300, 97))
    assert figures["validate_over_baseline"] > 0
    assert "validate_over_baseline" in capsys.readouterr().out
