"""The machines shipped in the package and the JSON Schema of the machine YAML."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema  # installed with the dev extras (nbformat depends on it)
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.datasets import order_machine
from streamkit.datasets.tcp import tcp_machine
from streamkit.errors import MachineError
from streamkit.machines import Machine, library
from streamkit.machines._yaml import load_yaml

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "streamkit" / "machines" / "data"
EXAMPLES = ROOT / "examples" / "machines"
SCHEMA_LINE = re.compile(r"\A# yaml-language-server: \$schema=(\S+)\n")


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = library.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [e.message for e in validator.iter_errors(data)]


# ----------------------------------------------------------------- the library
def test_names_list_the_shipped_files() -> None:
    assert library.names() == ["http2", "order", "tcp", "tcp_conntrack"]
    assert sk.machines.names() == library.names()
    assert sorted(p.stem for p in DATA.glob("*.yaml")) == library.names()


@pytest.mark.parametrize("name", ["http2", "order", "tcp", "tcp_conntrack"])
def test_every_shipped_machine_loads_and_is_valid(name: str) -> None:
    m = sk.machines.load(name)
    assert isinstance(m, Machine)
    report = m.validate()
    assert report.ok and report.problems == [], str(report)
    assert Machine.from_yaml(Path(str(library.path(name)))) == m


def test_load_works_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sk.machines.load("order").name == "order"


def test_an_unknown_name_lists_the_shipped_ones() -> None:
    with pytest.raises(MachineError) as info:
        sk.machines.load("orders")
    text = str(info.value)
    assert "no machine named 'orders'" in text
    assert "'order'" in text and "'tcp_conntrack'" in text
    assert "Machine.from_yaml" in text


def test_the_datasets_machines_are_the_shipped_ones() -> None:
    assert order_machine() == sk.machines.load("order")
    assert tcp_machine() == sk.machines.load("tcp_conntrack")


def test_examples_are_the_shipped_files() -> None:
    """examples/machines/ is a copy for readers of the repository; the package is the source."""
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(
        p.name for p in DATA.glob("*.yaml")
    )
    for shipped in sorted(DATA.glob("*.yaml")):
        copy = (EXAMPLES / shipped.name).read_text(encoding="utf-8")
        expected = shipped.read_text(encoding="utf-8").replace(
            "$schema=machine.schema.json",
            "$schema=../../streamkit/machines/data/machine.schema.json",
            1,
        )
        assert copy == expected, (
            f"examples/machines/{shipped.name} differs from streamkit/machines/data/"
            f"{shipped.name}: edit the shipped file and copy it over"
        )


def test_package_data_ships_every_data_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["streamkit"]
    for path in DATA.iterdir():
        rel = path.relative_to(ROOT / "streamkit").as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"


# ----------------------------------------------------------------- the schema
def test_schema_is_the_published_file() -> None:
    on_disk = json.loads((DATA / library.SCHEMA_FILE).read_text(encoding="utf-8"))
    assert library.schema() == on_disk
    assert on_disk["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("folder", [DATA, EXAMPLES])
def test_every_yaml_file_names_the_schema_and_passes_it(
    folder: Path, validator: jsonschema.Draft202012Validator
) -> None:
    files = sorted(folder.glob("*.yaml"))
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        header = SCHEMA_LINE.match(text)
        assert header, f"{path} does not start with '# yaml-language-server: $schema=...'"
        assert (path.parent / header.group(1)).resolve() == (DATA / library.SCHEMA_FILE)
        assert schema_errors(validator, load_yaml(text, str(path))) == [], path


@pytest.mark.parametrize("name", ["http2", "order", "tcp", "tcp_conntrack"])
def test_to_dict_of_shipped_machines_passes(
    name: str, validator: jsonschema.Draft202012Validator
) -> None:
    m = sk.machines.load(name)
    assert schema_errors(validator, m.to_dict()) == []
    # what to_yaml writes and the YAML reader reads back passes too
    assert schema_errors(validator, load_yaml(m.to_yaml(), name)) == []


_NAMES = st.sampled_from(["a", "b", "c d", "Zustand-Ä", "x.y", "on", "yes"])
_DURATIONS = st.one_of(
    st.sampled_from(["30m", "2h", "120s", "1h30m", "500ms", "1.5d", "7us", "1d2h3m4s5ms6us"]),
    st.integers(1, 10**12).map(lambda us: timedelta(microseconds=us)),
)


@st.composite
def machines(draw: st.DrawFn) -> Machine:
    states = draw(st.lists(_NAMES, min_size=1, max_size=5, unique=True))
    state = st.sampled_from(states)
    source = st.one_of(state, st.just("*"), st.lists(state, min_size=1, max_size=3, unique=True))
    transition = st.tuples(source, _NAMES, state)
    timeout = st.tuples(state, _DURATIONS, state)
    return Machine(
        draw(_NAMES),
        states=states,
        initial=draw(state),
        final=draw(st.one_of(state, st.lists(state, unique=True, max_size=3))),
        transitions=draw(st.lists(transition, max_size=6)),
        timeouts=draw(st.lists(timeout, max_size=3)),
    )


@settings(max_examples=150, deadline=None)
@given(machines())
def test_to_dict_of_any_machine_passes(m: Machine) -> None:
    validator = jsonschema.Draft202012Validator(library.schema())
    assert schema_errors(validator, m.to_dict()) == []


_GOOD = {
    "name": "door",
    "states": ["closed", "open"],
    "initial": "closed",
    "final": ["closed"],
    "transitions": [{"from": "closed", "on": "open", "to": "open"}],
    "timeouts": [{"state": "open", "after": "5m", "to": "closed"}],
}

_DROP: Any = object()

# Each case: a change to _GOOD (_DROP deletes the key; None is YAML's empty value) and
# whether the loader accepts it. The schema must agree on every one.
_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("as given", {}, True),
    ("no final", {"final": _DROP, "timeouts": _DROP}, True),
    ("final is one name", {"final": "closed"}, True),
    ("empty values", {"final": None, "transitions": None, "timeouts": None}, True),
    ("triples", {"transitions": [["closed", "open", "open"]]}, True),
    ("a from list", {"transitions": [{"from": ["closed", "open"], "on": "x", "to": "open"}]}, True),
    ("from every state", {"transitions": [{"from": "*", "on": "x", "to": "open"}]}, True),
    ("timeout triple", {"timeouts": [["open", "1h30m", "closed"]]}, True),
    ("an undeclared state (validate() reports it)", {"initial": "ajar"}, True),
    ("an unknown top key", {"colour": "red"}, False),
    ("no name", {"name": _DROP}, False),
    ("no states", {"states": _DROP}, False),
    ("no initial", {"initial": _DROP}, False),
    ("empty states", {"states": []}, False),
    ("states as a string", {"states": "closed"}, False),
    ("a duplicate state", {"states": ["closed", "open", "closed"]}, False),
    ("a state with surrounding spaces", {"states": ["closed", " open"]}, False),
    ("an empty state name", {"states": ["closed", ""]}, False),
    ("a number as a state", {"states": ["closed", 1]}, False),
    ("'*' as a target", {"transitions": [{"from": "closed", "on": "x", "to": "*"}]}, False),
    ("'*' as initial", {"initial": "*"}, False),
    ("a boolean event", {"transitions": [{"from": "closed", "on": True, "to": "open"}]}, False),
    ("a missing 'on'", {"transitions": [{"from": "closed", "to": "open"}]}, False),
    ("an extra key", {"transitions": [{"from": "a", "on": "x", "to": "b", "if": "y"}]}, False),
    ("a pair", {"transitions": [["closed", "open"]]}, False),
    ("an empty from list", {"transitions": [{"from": [], "on": "x", "to": "open"}]}, False),
    ("a duplicate final", {"final": ["closed", "closed"]}, False),
    ("transitions as a mapping", {"transitions": {"from": "a", "on": "x", "to": "b"}}, False),
    ("a number as after", {"timeouts": [{"state": "open", "after": 300, "to": "closed"}]}, False),
    (
        "minutes spelt out",
        {"timeouts": [{"state": "open", "after": "5 min", "to": "closed"}]},
        False,
    ),
    (
        "units out of order",
        {"timeouts": [{"state": "open", "after": "5m1h", "to": "closed"}]},
        False,
    ),
    ("a negative after", {"timeouts": [{"state": "open", "after": "-5m", "to": "closed"}]}, False),
]


@pytest.mark.parametrize(
    ("change", "accepted"), [c[1:] for c in _CASES], ids=[c[0] for c in _CASES]
)
def test_schema_agrees_with_the_loader(
    change: dict[str, Any], accepted: bool, validator: jsonschema.Draft202012Validator
) -> None:
    data = {k: v for k, v in {**_GOOD, **change}.items() if v is not _DROP}
    try:
        Machine.from_dict(data)
        loaded = True
    except MachineError:
        loaded = False
    assert loaded == accepted, f"the loader {'rejects' if accepted else 'accepts'} {data}"
    errors = schema_errors(validator, data)
    assert (errors == []) == accepted, errors or f"the schema accepts {data}"
