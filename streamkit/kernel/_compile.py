"""Turn a :class:`~streamkit.machines.Machine` into dense integer tables.

The kernel never sees names: states and events become codes (their index in
``machine.states`` / ``machine.events``), transitions a ``(n_states, n_events)``
table, and timeouts two arrays indexed by state, with durations in *ticks* (the
integer unit of the log's time column).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from streamkit.errors import MachineError

if TYPE_CHECKING:
    from streamkit.kernel._names import NameCodes

__all__ = ["CompiledMachine", "compile", "tick_nanoseconds"]

_NS_PER_US = 1_000
_NS_PER_S = 1_000_000_000
_NS_PER_DAY = 86_400 * _NS_PER_S


class _Transition(Protocol):
    source: str
    event: str
    target: str


class _Timeout(Protocol):
    state: str
    after: datetime.timedelta
    target: str


class _MachineLike(Protocol):
    @property
    def states(self) -> Sequence[str]: ...

    @property
    def events(self) -> Sequence[str]: ...

    @property
    def initial(self) -> str: ...

    @property
    def transitions(self) -> Iterable[Any]: ...

    @property
    def timeouts(self) -> Iterable[Any]: ...


def _readonly(values: Any, dtype: type[np.generic], name: str) -> npt.NDArray[Any]:
    try:
        array = np.array(values, dtype=dtype, copy=True, order="C")
    except (TypeError, ValueError, OverflowError) as exc:
        raise MachineError(
            f"CompiledMachine.{name}: expected values convertible to {np.dtype(dtype).name}, "
            f"found {values!r} ({exc})"
        ) from exc
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class CompiledMachine:
    """A state machine as dense integer tables, ready for the kernel.

    Build one with :func:`compile` from a :class:`~streamkit.machines.Machine`, or
    directly (tests do, with random tables). The arrays are copied and made
    read-only, so a compiled machine is immutable.

    Parameters
    ----------
    states : tuple of str
        State names; a state's code is its index.
    events : tuple of str
        Event names; an event's code is its index.
    table : numpy.ndarray of int32, shape (n_states, n_events)
        ``table[s, e]`` is the target state of event ``e`` in state ``s``, or -1
        when the machine declares no such transition.
    timeout_after : numpy.ndarray of int64, shape (n_states,)
        Inactivity after which a key in that state times out, in ticks; -1 for
        states without a timeout. Must be positive otherwise.
    timeout_to : numpy.ndarray of int32, shape (n_states,)
        Target state of each state's timeout (-1 where there is none).
    initial : int
        Code of the state a key enters with its first event.

    Raises
    ------
    MachineError
        If shapes, codes or durations are inconsistent.

    Examples
    --------
    >>> import numpy as np
    >>> cm = CompiledMachine(
    ...     states=("idle", "busy"),
    ...     events=("start", "stop"),
    ...     table=np.array([[1, -1], [-1, 0]], dtype=np.int32),
    ...     timeout_after=np.array([-1, 60], dtype=np.int64),
    ...     timeout_to=np.array([-1, 0], dtype=np.int32),
    ...     initial=0,
    ... )
    >>> cm.n_states, cm.n_events
    (2, 2)
    >>> cm.target("busy", "stop")
    'idle'
    """

    states: tuple[str, ...]
    events: tuple[str, ...]
    table: npt.NDArray[np.int32]
    timeout_after: npt.NDArray[np.int64]
    timeout_to: npt.NDArray[np.int32]
    initial: int
    _event_codes: NameCodes | None = dataclasses.field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        states = tuple(str(s) for s in self.states)
        events = tuple(str(e) for e in self.events)
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "events", events)
        n_s, n_e = len(states), len(events)
        if n_s == 0:
            raise MachineError("CompiledMachine: expected at least one state, found none")
        if len(set(states)) != n_s or len(set(events)) != n_e:
            raise MachineError(
                f"CompiledMachine: state and event names must be unique, found "
                f"states={states!r}, events={events!r}"
            )
        table = _readonly(self.table, np.int32, "table")
        if n_e == 0 and table.size == 0:
            table = _readonly(np.empty((n_s, 0), dtype=np.int32), np.int32, "table")
        if table.shape != (n_s, n_e):
            raise MachineError(
                f"CompiledMachine.table: expected shape (n_states, n_events) = ({n_s}, {n_e}), "
                f"found {table.shape}"
            )
        if table.size and (table.min() < -1 or table.max() >= n_s):
            raise MachineError(
                f"CompiledMachine.table: expected target codes in [-1, {n_s}), "
                f"found values in [{table.min()}, {table.max()}]"
            )
        after = _readonly(self.timeout_after, np.int64, "timeout_after")
        to = _readonly(self.timeout_to, np.int32, "timeout_to")
        if after.shape != (n_s,) or to.shape != (n_s,):
            raise MachineError(
                f"CompiledMachine: expected timeout_after and timeout_to of shape ({n_s},), "
                f"found {after.shape} and {to.shape}"
            )
        for s in range(n_s):
            if after[s] == -1:
                if to[s] != -1:
                    raise MachineError(
                        f"CompiledMachine: state {states[s]!r} has no timeout (after = -1) "
                        f"but timeout_to = {to[s]}; expected -1"
                    )
            elif after[s] <= 0:
                raise MachineError(
                    f"CompiledMachine: timeout of state {states[s]!r} must last a positive "
                    f"number of ticks (or -1 for none), found {after[s]}"
                )
            elif not 0 <= to[s] < n_s:
                raise MachineError(
                    f"CompiledMachine: timeout of state {states[s]!r} goes to code {to[s]}, "
                    f"expected a state code in [0, {n_s})"
                )
        initial = self.initial
        if isinstance(initial, bool) or not isinstance(initial, int | np.integer):
            raise MachineError(f"CompiledMachine.initial: expected a state code, found {initial!r}")
        if not 0 <= int(initial) < n_s:
            raise MachineError(
                f"CompiledMachine.initial: expected a state code in [0, {n_s}), found {initial}"
            )
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "timeout_after", after)
        object.__setattr__(self, "timeout_to", to)
        object.__setattr__(self, "initial", int(initial))

    def __getstate__(self) -> dict[str, Any]:
        # Sent to cluster workers: the tables only (the event-name lookup is
        # rebuilt on first use).
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_event_codes", None)

    @property
    def n_states(self) -> int:
        """Number of states."""
        return len(self.states)

    @property
    def n_events(self) -> int:
        """Number of events."""
        return len(self.events)

    def target(self, state: str, event: str) -> str | None:
        """Return the state that ``event`` leads to from ``state``, or None if undefined.

        Examples
        --------
        >>> import numpy as np
        >>> cm = CompiledMachine(("a", "b"), ("go",), np.array([[1], [-1]]),
        ...                      np.array([-1, -1]), np.array([-1, -1]), 0)
        >>> cm.target("a", "go"), cm.target("b", "go")
        ('b', None)
        """
        code = int(self.table[self._state_code(state), self._event_code(event)])
        return None if code < 0 else self.states[code]

    def encode_events(self, events: pl.Series) -> npt.NDArray[np.int32]:
        """Map event names to event codes; unknown names and nulls become -1.

        Parameters
        ----------
        events : polars.Series
            Event names (any dtype castable to String).

        Returns
        -------
        numpy.ndarray of int32
            One code per row, -1 where the machine does not know the event (the
            kernel then treats the event as undefined).

        Examples
        --------
        >>> import numpy as np, polars as pl
        >>> cm = CompiledMachine(("a",), ("x", "y"), np.array([[0, -1]]),
        ...                      np.array([-1]), np.array([-1]), 0)
        >>> cm.encode_events(pl.Series(["y", "zz", None, "x"])).tolist()
        [1, -1, -1, 0]
        """
        if self._event_codes is None:  # built on first use (a race builds it twice: harmless)
            from streamkit.kernel._names import NameCodes

            object.__setattr__(self, "_event_codes", NameCodes(self.events))
        assert self._event_codes is not None
        # Compiled comparisons of Arrow string views with the few event names: a
        # few times faster than Series.replace_strict on millions of rows.
        return self._event_codes.lookup(events.cast(pl.String))

    def state_names(self, codes: npt.ArrayLike) -> pl.Series:
        """Map state codes to a String series; -1 (never seen) becomes null.

        Examples
        --------
        >>> import numpy as np
        >>> cm = CompiledMachine(("a", "b"), (), np.empty((2, 0)),
        ...                      np.array([-1, -1]), np.array([-1, -1]), 0)
        >>> cm.state_names([1, -1, 0]).to_list()
        ['b', None, 'a']
        """
        array = np.asarray(codes, dtype=np.int64)
        lookup = pl.Series("state", self.states, dtype=pl.String)
        idx = pl.Series("state", array, dtype=pl.Int64)
        idx = idx.set(pl.Series(array < 0), None)
        return lookup.gather(idx)

    def _state_code(self, name: str) -> int:
        try:
            return self.states.index(name)
        except ValueError:
            raise MachineError(
                f"unknown state {name!r}; the machine's states are {list(self.states)}"
            ) from None

    def _event_code(self, name: str) -> int:
        try:
            return self.events.index(name)
        except ValueError:
            raise MachineError(
                f"unknown event {name!r}; the machine's events are {list(self.events)}"
            ) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompiledMachine):
            return NotImplemented
        return (
            self.states == other.states
            and self.events == other.events
            and self.initial == other.initial
            and np.array_equal(self.table, other.table)
            and np.array_equal(self.timeout_after, other.timeout_after)
            and np.array_equal(self.timeout_to, other.timeout_to)
        )

    def __hash__(self) -> int:
        return hash(
            (
                self.states,
                self.events,
                self.initial,
                self.table.tobytes(),
                self.timeout_after.tobytes(),
                self.timeout_to.tobytes(),
            )
        )

    def __repr__(self) -> str:
        n_tr = int((self.table >= 0).sum())
        n_to = int((self.timeout_after >= 0).sum())
        return (
            f"CompiledMachine({self.n_states} states, {self.n_events} events, "
            f"{n_tr} transitions, {n_to} timeouts, initial={self.states[self.initial]!r})"
        )


def tick_nanoseconds(tick: datetime.timedelta | int | np.integer[Any]) -> int:
    """Return the length of one tick in nanoseconds.

    Parameters
    ----------
    tick : datetime.timedelta or int
        A duration, or a whole number of nanoseconds (so that the 1 ns tick of a
        ``Datetime("ns")`` column, which ``timedelta`` cannot express, is possible).

    Raises
    ------
    MachineError
        If the tick is not a positive duration.

    Examples
    --------
    >>> import datetime
    >>> tick_nanoseconds(datetime.timedelta(milliseconds=1))
    1000000
    >>> tick_nanoseconds(1)
    1
    """
    if isinstance(tick, datetime.timedelta):
        ns = tick.days * _NS_PER_DAY + tick.seconds * _NS_PER_S + tick.microseconds * _NS_PER_US
    elif isinstance(tick, int | np.integer) and not isinstance(tick, bool):
        ns = int(tick)
    else:
        raise MachineError(
            f"tick: expected a datetime.timedelta or a whole number of nanoseconds, "
            f"found {tick!r} ({type(tick).__name__})"
        )
    if ns <= 0:
        raise MachineError(f"tick: expected a positive duration, found {tick!r}")
    return ns


def _duration_ns(after: object, where: str) -> int:
    if not isinstance(after, datetime.timedelta):
        raise MachineError(
            f"{where}: expected `after` to be a datetime.timedelta, found {after!r} "
            f"({type(after).__name__})"
        )
    return tick_nanoseconds(after) if after > datetime.timedelta(0) else -1


def compile(
    machine: _MachineLike,
    *,
    tick: datetime.timedelta | int | np.integer[Any] = datetime.timedelta(seconds=1),
) -> CompiledMachine:
    """Compile a machine into the dense tables the kernel runs.

    Parameters
    ----------
    machine : streamkit.Machine
        Any object with ``states``, ``events``, ``initial``, ``transitions``
        (``.source``, ``.event``, ``.target``, concrete states) and ``timeouts``
        (``.state``, ``.after`` as :class:`datetime.timedelta`, ``.target``).
    tick : datetime.timedelta or int, default 1 second
        The integer unit of the log's time column: ``timedelta(microseconds=1)``
        for ``Datetime("us")``, ``1`` (nanosecond) for ``Datetime("ns")``, and
        whatever the user chose for integer time columns. An ``int`` counts
        nanoseconds.

    Returns
    -------
    CompiledMachine

    Raises
    ------
    MachineError
        If a timeout's ``after`` is not a whole positive number of ticks, if a
        transition or timeout names an unknown state or event, or if two
        transitions from the same state on the same event disagree.

    Examples
    --------
    >>> import datetime
    >>> from types import SimpleNamespace as NS
    >>> m = NS(states=("open", "closed"), events=("close",), initial="open",
    ...        transitions=[NS(source="open", event="close", target="closed")],
    ...        timeouts=[NS(state="open", after=datetime.timedelta(minutes=30),
    ...                     target="closed")])
    >>> cm = compile(m, tick=datetime.timedelta(seconds=1))
    >>> cm.table.tolist(), cm.timeout_after.tolist(), cm.timeout_to.tolist()
    ([[1], [-1]], [1800, -1], [1, -1])
    """
    from streamkit.kernel._numba import ensure_compiled

    ensure_compiled()  # the kernel runs next: compile it now (once per process), saying so
    tick_ns = tick_nanoseconds(tick)
    states = tuple(machine.states)
    events = tuple(machine.events)
    state_code = {name: i for i, name in enumerate(states)}
    event_code = {name: i for i, name in enumerate(events)}

    def code_of(name: str, codes: dict[str, int], kind: str, where: str) -> int:
        try:
            return codes[name]
        except KeyError:
            raise MachineError(
                f"{where}: unknown {kind} {name!r}; expected one of {sorted(codes)}"
            ) from None

    if machine.initial not in state_code:
        raise MachineError(
            f"initial state {machine.initial!r} is not among the states {list(states)}"
        )
    table = np.full((len(states), len(events)), -1, dtype=np.int32)
    for tr in machine.transitions:
        where = f"transition ({tr.source!r}, {tr.event!r}, {tr.target!r})"
        s = code_of(tr.source, state_code, "state", where)
        e = code_of(tr.event, event_code, "event", where)
        t = code_of(tr.target, state_code, "state", where)
        if table[s, e] not in (-1, t):
            raise MachineError(
                f"{where} is nondeterministic: event {tr.event!r} in state {tr.source!r} "
                f"already leads to {states[table[s, e]]!r}; keep one target per "
                f"(state, event)"
            )
        table[s, e] = t
    after = np.full(len(states), -1, dtype=np.int64)
    to = np.full(len(states), -1, dtype=np.int32)
    for tm in machine.timeouts:
        where = f"timeout ({tm.state!r}, {tm.after!r}, {tm.target!r})"
        s = code_of(tm.state, state_code, "state", where)
        t = code_of(tm.target, state_code, "state", where)
        ns = _duration_ns(tm.after, where)
        if ns <= 0:
            raise MachineError(f"{where}: expected a positive duration, found {tm.after!r}")
        ticks, rest = divmod(ns, tick_ns)
        if rest:
            raise MachineError(
                f"{where}: `after` must be a whole number of ticks, found {ns} ns with a "
                f"tick of {tick_ns} ns; choose a finer tick or a rounder duration"
            )
        if after[s] != -1 and (after[s], to[s]) != (ticks, t):
            raise MachineError(
                f"{where}: state {tm.state!r} already has a different timeout; expected "
                f"at most one timeout per state"
            )
        after[s] = ticks
        to[s] = t
    return CompiledMachine(
        states=states,
        events=events,
        table=table,
        timeout_after=after,
        timeout_to=to,
        initial=state_code[machine.initial],
    )
