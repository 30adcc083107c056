"""The :class:`Machine`: a declared finite-state machine, its YAML/dict form and checks."""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from streamkit.errors import MachineError
from streamkit.machines._duration import format_duration, to_timedelta
from streamkit.machines._yaml import dump_yaml, load_yaml
from streamkit.machines.report import ValidationReport, summary_html

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["ANY_STATE", "Machine", "Timeout", "Transition"]

#: The ``from`` value that stands for every declared state.
ANY_STATE = "*"

_TOP_KEYS = ("name", "states", "initial", "final", "periodic", "transitions", "timeouts")
_TOP_REQUIRED = ("name", "states", "initial")
_TRANSITION_KEYS = ("from", "on", "to")
_TIMEOUT_KEYS = ("state", "after", "to")
# Above this many states the notebook display leaves the diagram out.
_HTML_DIAGRAM_MAX_STATES = 150


class Transition(NamedTuple):
    """One concrete transition: in state ``source``, event ``event`` leads to ``target``.

    Examples
    --------
    >>> Transition("created", "pay", "paid")
    Transition(source='created', event='pay', target='paid')
    """

    source: str
    event: str
    target: str


class Timeout(NamedTuple):
    """A key that stays in ``state`` for ``after`` without a transition moves to ``target``.

    Examples
    --------
    >>> from datetime import timedelta
    >>> Timeout("created", timedelta(minutes=30), "cancelled").after.total_seconds()
    1800.0
    """

    state: str
    after: timedelta
    target: str


class _TransitionSpec(NamedTuple):
    # ``source`` is a state name, ANY_STATE, or a tuple of names (a compact list).
    source: str | tuple[str, ...]
    event: str
    target: str


class _TimeoutSpec(NamedTuple):
    state: str
    after_text: str
    after: timedelta
    target: str


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _name(value: object, where: str, *, what: str = "a state name") -> str:
    if type(value) is str and value and value.strip() == value:
        return value
    if isinstance(value, str):
        found = "an empty string" if not value.strip() else f"{value!r} (surrounding spaces)"
        raise MachineError(f"{where}: expected {what}, found {found}")
    hint = ""
    if isinstance(value, bool):
        hint = (
            "; plain YAML reads unquoted yes/no/on/off as booleans: quote the name "
            "or load the file with Machine.from_yaml"
        )
    raise MachineError(
        f"{where}: expected {what} (a non-empty string), found {_describe(value)}{hint}"
    )


def _state(value: object, where: str) -> str:
    name = _name(value, where)
    if name == ANY_STATE:
        raise MachineError(
            f"{where}: {ANY_STATE!r} stands for every state and is only allowed as a "
            f"transition's 'from'; name a concrete state here"
        )
    return name


def _is_list(value: object) -> bool:
    if type(value) is list or type(value) is tuple:  # the common case, without ABC checks
        return True
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _state_list(value: object, where: str, *, allow_empty: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        return (_state(value, where),)
    if not _is_list(value):
        raise MachineError(f"{where}: expected a list of state names, found {_describe(value)}")
    assert isinstance(value, Sequence)
    if not value and not allow_empty:
        raise MachineError(f"{where}: expected at least one state name, found an empty list")
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        name = _state(item, f"{where}[{i}]")
        if name in seen:
            raise MachineError(
                f"{where}[{i}]: {name!r} is listed twice (first at {where}[{seen[name]}]); "
                f"remove the duplicate"
            )
        seen[name] = i
    return tuple(seen)


def _entry_fields(
    entry: object, where: str, keys: tuple[str, ...], shape: str
) -> tuple[object, object, object]:
    """The three fields of a transition or timeout given as a mapping or a triple."""
    if isinstance(entry, Mapping):
        for key in entry:
            if key not in keys:
                hint = ""
                if key is True and "on" in keys:
                    hint = (
                        " (plain YAML reads an unquoted `on` as true: quote it or load the "
                        "file with Machine.from_yaml)"
                    )
                expected = ", ".join(repr(k) for k in keys)
                raise MachineError(
                    f"{where}: unknown key {key!r}{hint}; expected exactly the keys {expected}"
                )
        for key in keys:
            if key not in entry:
                raise MachineError(f"{where}: {key!r} is missing; expected {shape}")
        return entry[keys[0]], entry[keys[1]], entry[keys[2]]
    if _is_list(entry):
        assert isinstance(entry, Sequence)
        if len(entry) != 3:
            raise MachineError(
                f"{where}: expected a triple {shape}, found a {type(entry).__name__} of "
                f"{len(entry)} item{'s' * (len(entry) != 1)}: {entry!r}"
            )
        return entry[0], entry[1], entry[2]
    raise MachineError(
        f"{where}: expected a triple {shape} or a mapping with keys "
        f"{', '.join(keys)}, found {_describe(entry)}"
    )


def _plain(value: object) -> bool:
    return type(value) is str and bool(value) and value.strip() == value


def _fast_transition(entry: object) -> _TransitionSpec | None:
    """The spec of a well-formed triple or mapping of plain names, else None (slow path)."""
    if isinstance(entry, tuple) and len(entry) == 3:
        a, b, c = entry
    elif type(entry) is dict and len(entry) == 3:
        a, b, c = entry.get("from"), entry.get("on"), entry.get("to")
    else:
        return None
    if _plain(a) and _plain(b) and _plain(c) and c != ANY_STATE:
        assert isinstance(a, str) and isinstance(b, str) and isinstance(c, str)
        return _TransitionSpec(a, b, c)
    return None


def _transition_spec(entry: object, where: str) -> _TransitionSpec:
    raw_from, raw_on, raw_to = _entry_fields(entry, where, _TRANSITION_KEYS, "(from, on, to)")
    source: str | tuple[str, ...]
    if type(raw_from) is not str and _is_list(raw_from):
        source = _state_list(raw_from, f"{where}.from", allow_empty=False)
    else:
        what = f"a state name, a list of state names or {ANY_STATE!r}"
        source = _name(raw_from, f"{where}.from", what=what)
    event = _name(raw_on, f"{where}.on", what="an event name")
    target = _state(raw_to, f"{where}.to")
    return _TransitionSpec(source, event, target)


def _timeout_spec(entry: object, where: str) -> _TimeoutSpec:
    raw_state, raw_after, raw_to = _entry_fields(entry, where, _TIMEOUT_KEYS, "(state, after, to)")
    state = _state(raw_state, f"{where}.state")
    try:
        after = to_timedelta(raw_after)
    except ValueError as exc:
        raise MachineError(f"{where}.after: {exc}") from None
    text = raw_after if isinstance(raw_after, str) else format_duration(after)
    target = _state(raw_to, f"{where}.to")
    return _TimeoutSpec(state, text.strip(), after, target)


def _entries(value: object, where: str) -> Sequence[object]:
    if value is None:
        return ()
    if not _is_list(value):
        raise MachineError(f"{where}: expected a list, found {_describe(value)}")
    assert isinstance(value, Sequence)
    return value


class Machine:
    """A finite-state machine run per key: states, events, transitions and timeouts.

    A machine is immutable and compares, hashes and fingerprints by its definition.
    Construction rejects malformed structure (wrong types, missing keys, duplicate
    states, bad durations) with a :class:`~streamkit.MachineError` naming the entry;
    semantic problems (undeclared states, deadlocks, livelocks, ...) are reported by
    :meth:`validate` and enforced by :meth:`check`.

    Parameters
    ----------
    name
        The machine's name (diagram title, error messages).
    states
        Every state, in order; a state's code is its index.
    initial
        The state a key enters on its first event.
    final
        States a key may rest in for good (they may still have outgoing transitions);
        a single name stands for a one-state list.
    transitions
        Triples ``(from, on, to)`` or mappings ``{"from": ..., "on": ..., "to": ...}``;
        ``from`` is a state, a list of states, or ``"*"`` for every declared state.
    timeouts
        Triples ``(state, after, to)`` or mappings ``{"state", "after", "to"}``: a key
        that stays in ``state`` for ``after`` (``"30m"``, ``"1h30m"``, ``"500ms"`` or a
        ``timedelta``) moves to ``to``.
    periodic
        Declare that the machine is periodic on purpose: a cycle of timeouts alone
        (a heartbeat, a blinker) is then a ``timer_loop`` warning instead of an
        error. Such a key fires timeouts for as long as the log's time advances,
        with or without events; without ``periodic=True`` validation rejects it.
        ``False`` is not written by :meth:`to_dict`, so it leaves the fingerprint of
        every machine that does not use it unchanged.

    Attributes
    ----------
    name : str
    states : tuple[str, ...]
        Declaration order; codes are indices.
    events : tuple[str, ...]
        Events in order of first appearance in ``transitions``; codes are indices.
    initial : str
    final : tuple[str, ...]
    transitions : tuple[Transition, ...]
        Expanded: one per concrete source state (``"*"`` becomes every state), in
        declaration order.
    timeouts : tuple[Timeout, ...]
    periodic : bool

    Examples
    --------
    >>> import streamkit as sk
    >>> m = sk.Machine(
    ...     "order",
    ...     states=["created", "paid", "shipped", "delivered", "cancelled"],
    ...     initial="created",
    ...     final=["delivered", "cancelled"],
    ...     transitions=[("created", "pay", "paid"), ("paid", "ship", "shipped"),
    ...                  ("shipped", "deliver", "delivered"),
    ...                  (["created", "paid"], "cancel", "cancelled")],
    ...     timeouts=[("created", "30m", "cancelled")],
    ... )
    >>> m.events
    ('pay', 'ship', 'deliver', 'cancel')
    >>> m.transitions[-1]
    Transition(source='paid', event='cancel', target='cancelled')
    >>> m.validate().ok
    True
    >>> sk.Machine.from_dict(m.to_dict()) == m
    True

    A heartbeat machine, whose timeout loop is intended:

    >>> beat = sk.Machine("beat", states=["alive"], initial="alive", final=["alive"],
    ...                   timeouts=[("alive", "1m", "alive")])
    >>> [p.kind for p in beat.validate().errors]
    ['timer_loop']
    >>> beat = sk.Machine("beat", states=["alive"], initial="alive", final=["alive"],
    ...                   timeouts=[("alive", "1m", "alive")], periodic=True)
    >>> beat.validate().ok, [p.kind for p in beat.validate().warnings]
    (True, ['timer_loop', 'final_timeout'])
    """

    name: str
    states: tuple[str, ...]
    events: tuple[str, ...]
    initial: str
    final: tuple[str, ...]
    transitions: tuple[Transition, ...]
    timeouts: tuple[Timeout, ...]
    periodic: bool
    _specs: tuple[_TransitionSpec, ...]
    _timeout_specs: tuple[_TimeoutSpec, ...]
    _canonical: str | None
    _report: ValidationReport | None

    def __init__(
        self,
        name: str,
        *,
        states: Iterable[str],
        initial: str,
        final: Iterable[str] | str = (),
        transitions: Iterable[object] = (),
        timeouts: Iterable[object] = (),
        periodic: bool = False,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "name", _name(name, "name", what="a machine name"))
        where = f"machine {self.name!r}"
        try:
            if isinstance(states, str):
                raise MachineError(
                    f"machine {name!r}: 'states' must be a list of state names, got the "
                    f"string {states!r}"
                )
            states_t = _state_list(_listify(states), "states", allow_empty=False)
            initial_s = _state(initial, "initial")
            final_t = _state_list(_listify(final), "final", allow_empty=True)
            specs = tuple(
                _fast_transition(e) or _transition_spec(e, f"transitions[{i}]")
                for i, e in enumerate(_entries(_listify(transitions), "transitions"))
            )
            timeout_specs = tuple(
                _timeout_spec(e, f"timeouts[{i}]")
                for i, e in enumerate(_entries(_listify(timeouts), "timeouts"))
            )
            if type(periodic) is not bool:
                raise MachineError(f"periodic: expected true or false, found {_describe(periodic)}")
        except MachineError as exc:
            raise MachineError(f"{where}: {exc}") from None

        expanded: list[Transition] = []
        for spec in specs:
            source = spec.source
            if isinstance(source, str) and source != ANY_STATE:
                expanded.append(Transition(source, spec.event, spec.target))
            else:
                sources = states_t if source == ANY_STATE else source
                expanded.extend(Transition(s, spec.event, spec.target) for s in sources)

        set_(self, "states", states_t)
        set_(self, "events", tuple(dict.fromkeys(spec.event for spec in specs)))
        set_(self, "initial", initial_s)
        set_(self, "final", final_t)
        set_(self, "transitions", tuple(expanded))
        set_(self, "timeouts", tuple(Timeout(t.state, t.after, t.target) for t in timeout_specs))
        set_(self, "periodic", periodic)
        set_(self, "_specs", specs)
        set_(self, "_timeout_specs", timeout_specs)
        set_(self, "_canonical", None)
        set_(self, "_report", None)

    # ------------------------------------------------------------------ immutability
    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"Machine is immutable: cannot set {key!r}; build a new Machine")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"Machine is immutable: cannot delete {key!r}")

    # ------------------------------------------------------------------ dict / YAML
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Machine:
        """Build a machine from its dict form (what :meth:`to_dict` returns).

        Keys: ``name``, ``states``, ``initial`` (required), ``final``, ``periodic``,
        ``transitions``, ``timeouts`` (optional); no others.

        Examples
        --------
        >>> m = Machine.from_dict({
        ...     "name": "door", "states": ["open", "closed"], "initial": "closed",
        ...     "final": ["closed"],
        ...     "transitions": [{"from": "closed", "on": "open", "to": "open"},
        ...                     {"from": "open", "on": "close", "to": "closed"}],
        ... })
        >>> m.states
        ('open', 'closed')
        """
        if not isinstance(data, Mapping):
            raise MachineError(
                f"expected a machine definition as a mapping with keys "
                f"{', '.join(_TOP_KEYS)}, found {_describe(data)}"
            )
        label = f"machine {data['name']!r}" if isinstance(data.get("name"), str) else "machine"
        for key in data:
            if key not in _TOP_KEYS:
                raise MachineError(
                    f"{label}: unknown key {key!r}; expected the keys {', '.join(_TOP_KEYS)}"
                )
        for key in _TOP_REQUIRED:
            if key not in data:
                raise MachineError(
                    f"{label}: {key!r} is missing; every machine needs {', '.join(_TOP_REQUIRED)}"
                )
        return cls(**_init_kwargs(data))

    def to_dict(self) -> dict[str, Any]:
        """The definition as plain JSON/YAML-friendly data; ``from_dict`` round-trips it.

        Compact ``from`` lists and ``"*"`` stay as declared; durations keep the text
        they were given in (a ``timedelta`` is written canonically, e.g. ``"1h30m"``).

        Examples
        --------
        >>> m = Machine("t", states=["a", "b"], initial="a", final=["b"],
        ...             transitions=[("*", "go", "b")], timeouts=[("a", "90m", "b")])
        >>> m.to_dict()["transitions"]
        [{'from': '*', 'on': 'go', 'to': 'b'}]
        >>> m.to_dict()["timeouts"]
        [{'state': 'a', 'after': '90m', 'to': 'b'}]
        """
        return self._as_dict(canonical=False)

    def _as_dict(self, *, canonical: bool) -> dict[str, Any]:
        # ``periodic`` only when set, so that machines without it keep their fingerprint.
        periodic = {"periodic": True} if self.periodic else {}
        return {
            "name": self.name,
            "states": list(self.states),
            "initial": self.initial,
            "final": list(self.final),
            **periodic,
            "transitions": [
                {
                    "from": list(s.source) if isinstance(s.source, tuple) else s.source,
                    "on": s.event,
                    "to": s.target,
                }
                for s in self._specs
            ],
            "timeouts": [
                {
                    "state": t.state,
                    "after": format_duration(t.after) if canonical else t.after_text,
                    "to": t.target,
                }
                for t in self._timeout_specs
            ],
        }

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> Machine:
        """Read a machine from a YAML file (a path) or from YAML text.

        A ``str`` that names an existing file, or ends in ``.yaml``/``.yml`` without
        line breaks, is read as a path; any other ``str`` is YAML text. Unquoted
        ``on``/``off``/``yes``/``no`` are read as strings, not booleans.

        Examples
        --------
        >>> m = Machine.from_yaml('''
        ... name: switch
        ... states: [off, on]
        ... initial: off
        ... final: [off]
        ... transitions:
        ...   - {from: off, on: press, to: on}
        ...   - {from: on, on: press, to: off}
        ... ''')
        >>> m.transitions[0]
        Transition(source='off', event='press', target='on')
        """
        where = "YAML text"
        if isinstance(source, os.PathLike) or _looks_like_path(source):
            path = Path(source)
            where = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise MachineError(
                    f"machine file {where} does not exist; pass an existing path or YAML text"
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise MachineError(f"cannot read machine file {where}: {exc}") from None
        else:
            text = source
        data = load_yaml(text, where)
        if not isinstance(data, Mapping):
            raise MachineError(
                f"{where}: expected a mapping with keys {', '.join(_TOP_KEYS)}, "
                f"found {_describe(data)}"
            )
        try:
            return cls.from_dict(data)
        except MachineError as exc:
            if where == "YAML text":
                raise
            raise MachineError(f"{where}: {exc}") from None

    def to_yaml(self) -> str:
        """The definition as YAML text that :meth:`from_yaml` reads back.

        Examples
        --------
        >>> m = Machine("t", states=["a", "b"], initial="a", final=["b"],
        ...             transitions=[("a", "go", "b")])
        >>> print(m.to_yaml(), end="")
        name: t
        states: [a, b]
        initial: a
        final: [b]
        transitions:
        - {from: a, on: go, to: b}
        timeouts: []
        >>> Machine.from_yaml(m.to_yaml()) == m
        True
        """
        return dump_yaml(self.to_dict())

    # ------------------------------------------------------------------ identity
    def _canonical_json(self) -> str:
        if self._canonical is None:
            text = json.dumps(
                self._as_dict(canonical=True),
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            )
            object.__setattr__(self, "_canonical", text)
            return text
        return self._canonical

    def fingerprint(self) -> str:
        """The sha256 (hex) of the canonical JSON of the definition.

        The canonical JSON is :meth:`to_dict` with sorted keys, no spaces and
        durations in canonical form, so ``"120s"`` and ``"2m"`` fingerprint alike.

        Examples
        --------
        >>> a = Machine("t", states=["a"], initial="a", final=["a"],
        ...             timeouts=[("a", "120s", "a")])
        >>> b = Machine("t", states=["a"], initial="a", final=["a"],
        ...             timeouts=[("a", "2m", "a")])
        >>> a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
        True
        """
        return hashlib.sha256(self._canonical_json().encode("utf-8")).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Machine):
            return NotImplemented
        return self is other or self._canonical_json() == other._canonical_json()

    def __hash__(self) -> int:
        return hash(self._canonical_json())

    def __getstate__(self) -> dict[str, Any]:
        return {"definition": self._as_dict(canonical=False)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        Machine.__init__(self, **_init_kwargs(state["definition"]))

    # ------------------------------------------------------------------ checks
    def validate(self) -> ValidationReport:
        """Check the machine: undeclared states, nondeterminism, reachability, deadlocks, loops.

        Loops are livelocks (cycles that cannot reach a final state) and timer loops
        (cycles of timeouts alone, errors unless the machine is ``periodic``).

        Runs in time linear in the number of states, transitions and timeouts. See
        :mod:`streamkit.machines.report` for the problem kinds.

        Returns
        -------
        ValidationReport
            ``.ok`` is False exactly when an error-severity problem was found.

        Examples
        --------
        >>> m = Machine("m", states=["a", "b", "c"], initial="a", final=["c"],
        ...             transitions=[("a", "go", "b"), ("b", "back", "a")])
        >>> [(p.kind, p.states) for p in m.validate().problems]
        [('unreachable', ('c',)), ('livelock', ('a', 'b')), ('unused_final', ('c',))]
        """
        if self._report is None:
            from streamkit.machines._validate import validate_machine

            object.__setattr__(self, "_report", validate_machine(self))
        assert self._report is not None
        return ValidationReport(self._report.machine, list(self._report.problems))

    def check(self) -> Machine:
        """Raise :class:`~streamkit.MachineError` naming every problem, unless valid.

        Warnings alone do not raise. Returns the machine itself, for chaining.

        Examples
        --------
        >>> m = Machine("m", states=["a", "b"], initial="a", final=["b"],
        ...             transitions=[("a", "go", "b")]).check()
        >>> Machine("m", states=["a", "b"], initial="a", final=["b"]).check()
        Traceback (most recent call last):
        ...
        streamkit.errors.MachineError: machine 'm' is invalid (2 errors):
          - error unreachable: state 'b' is not reachable from the initial state 'a' ...
          - error deadlock: state 'a' is reachable and not final but has no outgoing ...
          - warning unused_final: final state 'b' is not the initial state ...
        Fix the definition and validate again (Machine.validate() lists these).
        """
        report = self.validate()
        if report.ok:
            return self
        n = len(report.errors)
        lines = [f"machine {self.name!r} is invalid ({n} error{'s' * (n != 1)}):"]
        lines.extend(f"  - {p}" for p in report.problems)
        lines.append("Fix the definition and validate again (Machine.validate() lists these).")
        raise MachineError("\n".join(lines))

    def is_compatible_with(self, other: Machine) -> list[str]:
        """Why state saved under this machine cannot be resumed with ``other``.

        Per-key state is stored as state codes (indices into ``states``), so
        ``other`` must keep every state of this machine at the same index; adding
        states at the end is fine, as are any changes to transitions, events and
        timeouts.

        Returns
        -------
        list[str]
            Human-readable reasons; empty when compatible.

        Examples
        --------
        >>> old = Machine("m", states=["a", "b"], initial="a", final=["b"])
        >>> new = Machine("m", states=["a", "b", "c"], initial="a", final=["c"])
        >>> old.is_compatible_with(new)
        []
        >>> new.is_compatible_with(old)
        ["state 'c' (code 2) is missing from the other machine"]
        """
        reasons: list[str] = []
        other_code = {s: i for i, s in enumerate(other.states)}
        for code, state in enumerate(self.states):
            found = other_code.get(state)
            if found is None:
                reasons.append(f"state {state!r} (code {code}) is missing from the other machine")
            elif found != code:
                reasons.append(
                    f"state {state!r} has code {code} here but {found} in the other machine "
                    f"(states must keep their order; add new states at the end)"
                )
        return reasons

    # ------------------------------------------------------------------ display
    def plot(self, ax: Axes | None = None, *, highlight: Iterable[str] | None = None) -> Axes:
        """Draw the state diagram with matplotlib and return the Axes.

        Layers run left to right from the initial state; final states are double
        circles, timeouts dashed edges labelled with their duration, and states named
        by validation errors are drawn in red (or the states in ``highlight``).

        Parameters
        ----------
        ax
            Axes to draw on; a new figure sized to the machine when None.
        highlight
            States to draw in red; None highlights the states named by
            :meth:`validate` errors.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> m = Machine("m", states=["a", "b"], initial="a", final=["b"],
        ...             transitions=[("a", "go", "b")])
        >>> ax = m.plot()
        >>> sorted(t.get_text() for t in ax.texts)
        ['a', 'b', 'go']
        >>> plt.close(ax.figure)
        """
        from streamkit.machines._draw import draw_machine, new_axes

        if highlight is None:
            highlight = self.validate().problem_states("error")
        if ax is None:
            ax = new_axes(self)
        return draw_machine(self, ax, highlight=highlight)

    def __repr__(self) -> str:
        return (
            f"Machine({self.name!r}, states={len(self.states)}, events={len(self.events)}, "
            f"transitions={len(self.transitions)}, timeouts={len(self.timeouts)}, "
            f"initial={self.initial!r}, final={list(self.final)!r}"
            + (", periodic=True)" if self.periodic else ")")
        )

    def _repr_html_(self) -> str:
        report = self.validate()
        parts = [
            f"<div><p><b>Machine {html.escape(self.name)}</b> — "
            + ", ".join(
                _count(n, word)
                for n, word in (
                    (len(self.states), "state"),
                    (len(self.events), "event"),
                    (len(self.transitions), "transition"),
                    (len(self.timeouts), "timeout"),
                )
            )
            + (", periodic" if self.periodic else "")
            + "</p>"
        ]
        if len(self.states) <= _HTML_DIAGRAM_MAX_STATES:
            parts.append(self._svg())
        else:
            parts.append(
                f"<p>(diagram left out: {len(self.states)} states; call .plot() to draw it)</p>"
            )
        parts.append(summary_html(report))
        parts.append("</div>")
        return "".join(parts)

    def _svg(self) -> str:
        from matplotlib.figure import Figure

        from streamkit.machines._draw import draw_machine, figure_size

        # A bare Figure is never registered with pyplot, so nothing leaks.
        fig = Figure(figsize=figure_size(self))
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93)
        ax = fig.add_subplot()
        draw_machine(self, ax, highlight=self.validate().problem_states("error"))
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", bbox_inches="tight")
        svg = buffer.getvalue()
        return svg[svg.find("<svg") :]


def _count(n: int, word: str) -> str:
    """``3 states``, ``1 timeout``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _listify(value: Iterable[object] | None) -> object:
    """Materialise one-shot iterables (generators) so entries can be indexed."""
    if value is None or isinstance(value, str | Mapping) or _is_list(value):
        return value
    if isinstance(value, Iterable):
        return list(value)
    return value


def _looks_like_path(text: str) -> bool:
    if "\n" in text:
        return False
    stripped = text.strip()
    if stripped.lower().endswith((".yaml", ".yml")):
        return True
    try:
        return Path(stripped).is_file()
    except OSError:
        return False


def _init_kwargs(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": data["name"],
        "states": data["states"],
        "initial": data["initial"],
        # An empty YAML value (``timeouts:``) reads as None: treat it as an empty list.
        "final": _or_empty(data.get("final")),
        "transitions": _or_empty(data.get("transitions")),
        "timeouts": _or_empty(data.get("timeouts")),
        "periodic": data.get("periodic", False),
    }


def _or_empty(value: object) -> object:
    return () if value is None else value
