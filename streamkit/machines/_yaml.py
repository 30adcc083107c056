"""YAML reading and writing for machines, with YAML 1.2 booleans.

Plain PyYAML follows YAML 1.1, where unquoted ``on``, ``off``, ``yes``, ``no``,
``y`` and ``n`` are booleans; a machine file's ``{from: a, on: go, to: b}`` would
get the key ``True``. These loader and dumper classes only treat ``true`` and
``false`` as booleans, so event, state and key names read as written.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from streamkit.errors import MachineError

__all__ = ["dump_yaml", "load_yaml"]

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_BOOL_TAG = "tag:yaml.org,2002:bool"


def _without_yaml11_bools(
    resolvers: dict[str, list[tuple[str, re.Pattern[str]]]],
) -> dict[str, list[tuple[str, re.Pattern[str]]]]:
    out = {
        first: [(tag, rx) for tag, rx in entries if tag != _BOOL_TAG]
        for first, entries in resolvers.items()
    }
    for first in "tTfF":
        out.setdefault(first, []).append((_BOOL_TAG, _BOOL))
    return out


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


class _Flow(dict[str, Any]):
    """A mapping written on one line: ``{from: a, on: go, to: b}``."""


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)


_Dumper.add_representer(_Flow, _represent_flow)


_Loader.yaml_implicit_resolvers = _without_yaml11_bools(yaml.SafeLoader.yaml_implicit_resolvers)
_Dumper.yaml_implicit_resolvers = _without_yaml11_bools(yaml.SafeDumper.yaml_implicit_resolvers)


def load_yaml(text: str, where: str) -> Any:
    """Parse ``text``; a syntax error becomes a ``MachineError`` naming ``where`` and the line.

    Examples
    --------
    >>> load_yaml("{from: a, on: go, to: b}", "example")
    {'from': 'a', 'on': 'go', 'to': 'b'}
    """
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MachineError(
            f"{where}: cannot parse YAML{at}: {problem}; fix the syntax (lists of transitions "
            f"look like '- {{from: a, on: go, to: b}}')"
        ) from None


def dump_yaml(data: dict[str, Any]) -> str:
    """Write a machine dict as block YAML, one flow-style line per transition and timeout.

    Examples
    --------
    >>> print(dump_yaml({"on": ["yes", "no"], "transitions": [{"from": ["a"], "on": "x"}]}),
    ...       end="")
    on: [yes, no]
    transitions:
    - {from: [a], on: x}
    """
    flowing = {
        key: [_Flow(entry) for entry in value] if key in ("transitions", "timeouts") else value
        for key, value in data.items()
    }
    text: str = yaml.dump(
        flowing,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
        width=100,
    )
    return text
