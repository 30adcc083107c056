"""Machines shipped inside the package, and the JSON Schema of the machine YAML.

The YAML files live in ``streamkit/machines/data/`` and are installed with the
package, so :func:`load` works from any folder (the repository's
``examples/machines/`` holds the same files). :func:`schema` is the JSON Schema of
the YAML form; editors that run the YAML language server check a machine file
against it when the file starts with
``# yaml-language-server: $schema=<path or URL of machine.schema.json>``.

Examples
--------
>>> import streamkit as sk
>>> sk.machines.names()
['http2', 'order', 'tcp', 'tcp_conntrack']
>>> sk.machines.load("order").initial
'new'
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from streamkit.errors import MachineError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from streamkit.machines.machine import Machine

__all__ = ["SCHEMA_FILE", "load", "names", "path", "schema"]

#: File name of the JSON Schema inside the package's ``machines/data`` folder.
SCHEMA_FILE = "machine.schema.json"


def _data() -> Traversable:
    return resources.files("streamkit.machines").joinpath("data")


def names() -> list[str]:
    """The names of the shipped machines, sorted.

    Returns
    -------
    list of str
        What :func:`load` accepts.

    Examples
    --------
    >>> from streamkit.machines import library
    >>> "order" in library.names()
    True
    """
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in _data().iterdir()
        if entry.is_file() and entry.name.endswith(".yaml")
    )


def path(name: str) -> Traversable:
    """Where the YAML file of the shipped machine ``name`` is installed.

    Use it to copy a machine as the start of your own, or to hand it to
    ``streamkit machine check``.

    Parameters
    ----------
    name : str
        One of :func:`names`, e.g. ``"order"``.

    Returns
    -------
    importlib.resources.abc.Traversable
        A path-like resource (a ``pathlib.Path`` for a normal installation).

    Raises
    ------
    MachineError
        If no machine of that name ships with streamkit (the message lists them).

    Examples
    --------
    >>> from streamkit.machines import library
    >>> library.path("order").name
    'order.yaml'
    """
    available = names()
    if name not in available:
        raise MachineError(
            f"no machine named {name!r} ships with streamkit; choose one of {available}, "
            f"or read your own file with sk.Machine.from_yaml('path/to/machine.yaml')"
        )
    return _data().joinpath(f"{name}.yaml")


def load(name: str) -> Machine:
    """Load a machine that ships with streamkit, from any working folder.

    Parameters
    ----------
    name : str
        One of :func:`names`: ``"order"`` (the order lifecycle that
        :func:`streamkit.datasets.generate_orders` follows), ``"tcp"`` (RFC 9293's
        connection states), ``"tcp_conntrack"`` (the connection tracker that
        :func:`streamkit.datasets.tcp.load_tcp` replays) or ``"http2"`` (RFC 9113's
        stream states).

    Returns
    -------
    Machine
        A machine that passes ``validate()``.

    Raises
    ------
    MachineError
        If no machine of that name ships with streamkit (the message lists them).

    Examples
    --------
    >>> import streamkit as sk
    >>> m = sk.machines.load("order")
    >>> m.timeouts[0].state, m.timeouts[0].target
    ('created', 'cancelled')
    >>> m == sk.datasets.order_machine()
    True
    """
    from streamkit.machines.machine import Machine

    return Machine.from_yaml(path(name).read_text(encoding="utf-8"))


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the machine YAML and of ``Machine.to_dict()``.

    The schema checks structure only (keys, types, names, duration syntax);
    :meth:`Machine.check` also checks meaning (undeclared states, deadlocks, ...).
    The file is installed as ``streamkit/machines/data/machine.schema.json``.

    Returns
    -------
    dict
        The parsed schema.

    Examples
    --------
    >>> from streamkit.machines import library
    >>> s = library.schema()
    >>> s["required"]
    ['name', 'states', 'initial']
    """
    loaded: dict[str, Any] = json.loads(_data().joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
    return loaded
