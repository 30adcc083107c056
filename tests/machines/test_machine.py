"""Machine construction, the dict/YAML forms, identity and compatibility."""

from __future__ import annotations

import pickle
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

import streamkit as sk
import streamkit.machines as machines
from streamkit.machines import Machine, Timeout, Transition

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "machines"


def order() -> Machine:
    return Machine(
        "order",
        states=["created", "paid", "shipped", "delivered", "cancelled"],
        initial="created",
        final=["delivered", "cancelled"],
        transitions=[
            ("created", "pay", "paid"),
            ("paid", "ship", "shipped"),
            ("shipped", "deliver", "delivered"),
            (["created", "paid"], "cancel", "cancelled"),
            {"from": "*", "on": "audit", "to": "cancelled"},
        ],
        timeouts=[("created", "30m", "cancelled")],
    )


def test_exports_are_pinned() -> None:
    assert machines.__all__ == [
        "Machine", "Problem", "Timeout", "Transition", "ValidationReport",
        "load", "names", "path",  # the shipped machines (streamkit.machines.library)
    ]  # fmt: skip
    assert sk.Machine is Machine
    assert sk.MachineError is sk.errors.MachineError
    assert issubclass(sk.MachineError, ValueError)


def test_attributes_the_kernel_relies_on() -> None:
    m = order()
    assert m.name == "order"
    assert m.states == ("created", "paid", "shipped", "delivered", "cancelled")
    assert m.events == ("pay", "ship", "deliver", "cancel", "audit")
    assert m.initial == "created"
    assert m.final == ("delivered", "cancelled")
    assert m.transitions[:5] == (
        Transition("created", "pay", "paid"),
        Transition("paid", "ship", "shipped"),
        Transition("shipped", "deliver", "delivered"),
        Transition("created", "cancel", "cancelled"),
        Transition("paid", "cancel", "cancelled"),
    )
    # "*" expands to every declared state, in declaration order.
    assert [t.source for t in m.transitions[5:]] == list(m.states)
    assert {t.event for t in m.transitions[5:]} == {"audit"}
    assert m.timeouts == (Timeout("created", timedelta(minutes=30), "cancelled"),)
    assert isinstance(m.states, tuple) and isinstance(m.transitions, tuple)


def test_events_in_order_of_first_appearance() -> None:
    m = Machine(
        "m",
        states=["a", "b"],
        initial="a",
        final=["b"],
        transitions=[("a", "y", "b"), ("b", "x", "a"), ("a", "x", "a"), ("b", "y", "b")],
    )
    assert m.events == ("y", "x")


def test_accepts_generators_and_transition_objects() -> None:
    m = Machine(
        "g",
        states=(s for s in ["a", "b"]),
        initial="a",
        final=iter(["b"]),
        transitions=(t for t in [Transition("a", "go", "b")]),
        timeouts=[Timeout("a", timedelta(seconds=5), "b")],
    )
    assert m.states == ("a", "b")
    assert m.final == ("b",)
    assert m.transitions == (Transition("a", "go", "b"),)
    assert m.to_dict()["timeouts"] == [{"state": "a", "after": "5s", "to": "b"}]


def test_undeclared_states_are_not_construction_errors() -> None:
    m = Machine("m", states=["a"], initial="zz", final=["yy"], transitions=[("a", "e", "xx")])
    assert m.transitions == (Transition("a", "e", "xx"),)
    kinds = {(p.kind, p.states) for p in m.validate().problems}
    assert {
        ("unknown_state", ("zz",)),
        ("unknown_state", ("yy",)),
        ("unknown_state", ("xx",)),
    } <= kinds


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"states": []}, "states: expected at least one state name, found an empty list"),
        ({"states": ["a", "b", "a"]}, "states[2]: 'a' is listed twice (first at states[0])"),
        (
            {"states": ["a", 3]},
            "states[1]: expected a state name (a non-empty string), found int 3",
        ),
        ({"states": ["a", ""]}, "states[1]: expected a state name, found an empty string"),
        ({"states": ["a", " b"]}, "states[1]: expected a state name, found ' b' (surrounding"),
        ({"states": ["a", "*"]}, "states[1]: '*' stands for every state"),
        ({"states": 5}, "states: expected a list of state names, found int 5"),
        ({"initial": None}, "initial: expected a state name (a non-empty string), found NoneType"),
        ({"final": ["b", "b"]}, "final[1]: 'b' is listed twice (first at final[0])"),
        (
            {"transitions": [("a", "e")]},
            "transitions[0]: expected a triple (from, on, to), found a tuple of 2 items",
        ),
        (
            {"transitions": [("a", "e", "b"), ["a", "e", "b", "c"]]},
            "transitions[1]: expected a triple (from, on, to), found a list of 4 items",
        ),
        (
            {"transitions": [("a", "e", "b")] * 3 + [{"from": "a", "on": "e"}]},
            "transitions[3]: 'to' is missing",
        ),
        (
            {"transitions": [{"from": "a", "on": "e", "to": "b", "when": "x"}]},
            "transitions[0]: unknown key 'when'; expected exactly the keys 'from', 'on', 'to'",
        ),
        (
            {"transitions": [{"from": "a", True: "e", "to": "b"}]},
            "unknown key True (plain YAML reads an unquoted `on` as true",
        ),
        (
            {"transitions": [("a", None, "b")]},
            "transitions[0].on: expected an event name (a non-empty string), found NoneType None",
        ),
        ({"transitions": [("a", "e", "*")]}, "transitions[0].to: '*' stands for every state"),
        (
            {"transitions": [([], "e", "b")]},
            "transitions[0].from: expected at least one state name",
        ),
        ({"transitions": [(["a", "a"], "e", "b")]}, "transitions[0].from[1]: 'a' is listed twice"),
        (
            {"transitions": [(["a", "*"], "e", "b")]},
            "transitions[0].from[1]: '*' stands for every state",
        ),
        (
            {"transitions": [(True, "e", "b")]},
            "quote the name or load the file with Machine.from_yaml",
        ),
        ({"transitions": "a->b"}, "transitions: expected a list, found str 'a->b'"),
        (
            {"transitions": [5]},
            "transitions[0]: expected a triple (from, on, to) or a mapping with keys from, on, "
            "to, found int 5",
        ),
        (
            {"timeouts": [("a", "5m")]},
            "timeouts[0]: expected a triple (state, after, to), found a tuple of 2 items",
        ),
        ({"timeouts": [{"state": "a", "to": "b"}]}, "timeouts[0]: 'after' is missing"),
        (
            {"timeouts": [{"state": "a", "after": "1m", "to": "b", "x": 1}]},
            "timeouts[0]: unknown key 'x'",
        ),
        (
            {"timeouts": [("a", "5 minutes", "b")]},
            "timeouts[0].after: expected a duration, found '5 minutes'",
        ),
        ({"timeouts": [("a", "-5m", "b")]}, "timeouts[0].after: expected a duration, found '-5m'"),
        (
            {"timeouts": [("a", "0s", "b")]},
            "timeouts[0].after: expected a positive duration, found '0s'",
        ),
        (
            {"timeouts": [("a", timedelta(0), "b")]},
            "timeouts[0].after: expected a positive duration",
        ),
        (
            {"timeouts": [("a", timedelta(seconds=-1), "b")]},
            "timeouts[0].after: expected a positive duration",
        ),
        (
            {"timeouts": [("a", 30, "b")]},
            "timeouts[0].after: expected a duration string or a datetime.timedelta, found int 30",
        ),
        ({"timeouts": [("*", "1m", "b")]}, "timeouts[0].state: '*' stands for every state"),
    ],
)
def test_malformed_definitions_name_the_entry(kwargs: dict[str, object], expected: str) -> None:
    base: dict[str, object] = {"states": ["a", "b"], "initial": "a", "final": ["b"]}
    base.update(kwargs)
    with pytest.raises(sk.MachineError) as info:
        Machine("bad", **base)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("machine 'bad': ")
    assert expected in message


def test_bad_name() -> None:
    with pytest.raises(
        sk.MachineError, match="name: expected a machine name, found an empty string"
    ):
        Machine("", states=["a"], initial="a")


def test_machine_is_immutable() -> None:
    m = order()
    with pytest.raises(AttributeError, match="immutable"):
        m.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del m.states


def test_dict_round_trip_keeps_the_compact_form() -> None:
    m = order()
    d = m.to_dict()
    assert d["transitions"][3] == {"from": ["created", "paid"], "on": "cancel", "to": "cancelled"}
    assert d["transitions"][4] == {"from": "*", "on": "audit", "to": "cancelled"}
    assert d["timeouts"] == [{"state": "created", "after": "30m", "to": "cancelled"}]
    again = Machine.from_dict(d)
    assert again == m
    assert again.to_dict() == d
    assert again.transitions == m.transitions
    # The dict is a copy: changing it does not change the machine.
    d["states"].append("x")
    assert "x" not in m.states


def test_to_dict_is_plain_json_data() -> None:
    import json

    d = order().to_dict()
    assert json.loads(json.dumps(d)) == d


def test_yaml_round_trip_text_and_file(tmp_path: Path) -> None:
    m = order()
    text = m.to_yaml()
    assert "- {from: [created, paid], on: cancel, to: cancelled}" in text
    assert Machine.from_yaml(text) == m
    path = tmp_path / "order.yaml"
    path.write_text(text)
    assert Machine.from_yaml(path) == m
    assert Machine.from_yaml(str(path)) == m
    assert Machine.from_yaml(text).to_dict() == m.to_dict()


def test_yaml_reads_on_off_yes_no_as_strings() -> None:
    m = Machine.from_yaml(
        "name: switch\nstates: [off, on, yes, no]\ninitial: off\nfinal: [no]\n"
        "transitions:\n  - {from: off, on: on, to: on}\n  - {from: on, on: off, to: off}\n"
        "  - {from: [off, on], on: y, to: yes}\n  - {from: yes, on: n, to: no}\n"
    )
    assert m.states == ("off", "on", "yes", "no")
    assert m.events == ("on", "off", "y", "n")
    assert Machine.from_yaml(m.to_yaml()) == m


def test_plain_yaml_loader_gets_a_hint() -> None:
    data = yaml.safe_load(
        "name: m\nstates: [a, b]\ninitial: a\ntransitions:\n  - {from: a, on: go, to: b}\n"
    )
    with pytest.raises(sk.MachineError, match=r"transitions\[0\]: unknown key True \(plain YAML"):
        Machine.from_dict(data)


def test_yaml_empty_optional_sections() -> None:
    m = Machine.from_yaml("name: m\nstates: [a]\ninitial: a\nfinal:\ntransitions:\ntimeouts:\n")
    assert m.final == () and m.transitions == () and m.timeouts == ()


def test_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(sk.MachineError, match=r"cannot parse YAML at line 3"):
        Machine.from_yaml("name: m\nstates: [a\ninitial: a\n")
    with pytest.raises(sk.MachineError, match="does not exist"):
        Machine.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(sk.MachineError, match="does not exist"):
        Machine.from_yaml("machines/missing.yml")
    with pytest.raises(sk.MachineError, match="expected a mapping with keys name, states"):
        Machine.from_yaml("- a\n- b\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: m\nstates: [a]\ninitial: a\ntransitions: [{from: a, on: e}]\n")
    with pytest.raises(sk.MachineError) as info:
        Machine.from_yaml(bad)
    assert str(info.value) == (
        f"{bad}: machine 'm': transitions[0]: 'to' is missing; expected (from, on, to)"
    )


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    with pytest.raises(sk.MachineError, match="machine 'm': unknown key 'state'"):
        Machine.from_dict({"name": "m", "state": ["a"], "initial": "a"})
    with pytest.raises(sk.MachineError, match="machine 'm': 'initial' is missing"):
        Machine.from_dict({"name": "m", "states": ["a"]})
    with pytest.raises(sk.MachineError, match="expected a machine definition as a mapping"):
        Machine.from_dict(["name", "m"])  # type: ignore[arg-type]


def test_durations_keep_text_but_compare_canonically() -> None:
    def make(after: object) -> Machine:
        return Machine(
            "t", states=["a", "b"], initial="a", final=["b"], timeouts=[("a", after, "b")]
        )

    a, b, c = make("120s"), make("2m"), make(timedelta(minutes=2))
    assert a.to_dict()["timeouts"][0]["after"] == "120s"
    assert c.to_dict()["timeouts"][0]["after"] == "2m"
    assert a == b == c
    assert hash(a) == hash(b) == hash(c)
    assert a.fingerprint() == b.fingerprint() == c.fingerprint()
    assert make("1h30m").timeouts[0].after == timedelta(minutes=90)
    assert make(timedelta(minutes=90)).to_dict()["timeouts"][0]["after"] == "1h30m"
    assert make("3m") != a


def test_equality_hash_and_fingerprint_follow_the_definition() -> None:
    a, b = order(), order()
    assert a == b and hash(a) == hash(b) and a.fingerprint() == b.fingerprint()
    assert len({a, b}) == 1
    renamed = Machine.from_dict({**a.to_dict(), "name": "order2"})
    assert renamed != a and renamed.fingerprint() != a.fingerprint()
    reordered = Machine.from_dict({**a.to_dict(), "final": ["cancelled", "delivered"]})
    assert reordered != a
    assert a != "order"
    import hashlib
    import json

    expected = hashlib.sha256(
        json.dumps(a.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert a.fingerprint() == expected


def test_pickle_and_copy_keep_the_definition() -> None:
    import copy

    m = order()
    m.validate()
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m), copy.copy(m)):
        assert clone == m
        assert clone.transitions == m.transitions
        assert clone.validate() == m.validate()


def test_is_compatible_with() -> None:
    old = Machine("m", states=["a", "b"], initial="a", final=["b"])
    grown = Machine(
        "m", states=["a", "b", "c"], initial="c", final=["c"], transitions=[("a", "x", "c")]
    )
    assert old.is_compatible_with(grown) == []
    assert old.is_compatible_with(old) == []
    swapped = Machine("m", states=["b", "a"], initial="a", final=["b"])
    reasons = old.is_compatible_with(swapped)
    assert reasons == [
        "state 'a' has code 0 here but 1 in the other machine (states must keep their order; "
        "add new states at the end)",
        "state 'b' has code 1 here but 0 in the other machine (states must keep their order; "
        "add new states at the end)",
    ]
    assert grown.is_compatible_with(old) == ["state 'c' (code 2) is missing from the other machine"]


def test_repr() -> None:
    assert repr(order()) == (
        "Machine('order', states=5, events=5, transitions=10, timeouts=1, "
        "initial='created', final=['delivered', 'cancelled'])"
    )


def test_check_returns_the_machine_or_raises_with_every_problem() -> None:
    m = order()
    assert m.check() is m
    bad = Machine(
        "bad",
        states=["a", "b", "c"],
        initial="a",
        final=["c"],
        transitions=[("a", "x", "b"), ("a", "x", "c"), ("b", "y", "q")],
    )
    with pytest.raises(sk.MachineError) as info:
        bad.check()
    text = str(info.value)
    assert text.startswith("machine 'bad' is invalid (2 errors):")
    assert "unknown_state: state 'q' is used in transitions[2].to" in text
    assert (
        "nondeterministic: state 'a' has transitions on event 'x' to different states: "
        "'b' (transitions[0]), 'c' (transitions[1])" in text
    )


def test_examples_load_and_are_valid() -> None:
    found = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert {"order.yaml", "tcp.yaml", "http2.yaml"} <= set(found)
    for path in EXAMPLES.glob("*.yaml"):
        m = Machine.from_yaml(path)
        report = m.validate()
        assert report.ok and report.problems == [], (path, str(report))
        assert Machine.from_yaml(m.to_yaml()) == m


def test_order_example_matches_the_brief() -> None:
    m = Machine.from_yaml(EXAMPLES / "order.yaml")
    assert m.initial == "new"
    assert Transition("new", "create", "created") in m.transitions
    assert {"pay", "ship", "deliver", "cancel"} <= set(m.events)
    assert m.timeouts == (Timeout("created", timedelta(minutes=30), "cancelled"),)
