"""State machines: declaration, validation and diagrams.

A :class:`Machine` declares states, transitions and timeouts; :meth:`Machine.validate`
returns a :class:`ValidationReport` of :class:`Problem`; :meth:`Machine.plot` draws it.
:func:`load` reads a machine that ships with streamkit (:func:`names` lists them);
:mod:`streamkit.machines.library` also holds the JSON Schema of the machine YAML.

Examples
--------
>>> from streamkit.machines import Machine
>>> m = Machine("door", states=["closed", "open"], initial="closed", final=["closed"],
...             transitions=[("closed", "open", "open"), ("open", "close", "closed")])
>>> m.check().states
('closed', 'open')
>>> from streamkit.machines import load
>>> load("order").name
'order'
"""

from __future__ import annotations

from streamkit.machines.library import load, names, path
from streamkit.machines.machine import Machine, Timeout, Transition
from streamkit.machines.report import Problem, ValidationReport

__all__ = [
    "Machine",
    "Problem",
    "Timeout",
    "Transition",
    "ValidationReport",
    "load",
    "names",
    "path",
]
