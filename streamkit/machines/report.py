"""What :meth:`Machine.validate` returns: a :class:`ValidationReport` of :class:`Problem`.

Problem kinds (severity ``"error"`` unless noted):

``unknown_state``
    a transition, timeout, ``initial`` or ``final`` names a state not in ``states``.
``nondeterministic``
    one state has two transitions on the same event to different targets, or two
    timeouts with different ``(after, to)``.
``no_final``
    no final state is declared.
``unreachable``
    a declared state that no chain of transitions or timeouts leads to from ``initial``.
``deadlock``
    a reachable, non-final state with no outgoing transition and no timeout.
``livelock``
    a reachable cycle (strongly connected component) from which no final state can
    be reached; one problem per component.
``timer_loop`` (a warning when the machine is declared ``periodic``)
    a reachable cycle made of timeouts alone, a state timing out into itself
    included: a key that receives no more events fires timeouts around it forever,
    so the output grows with the log's time span, not with its events. The states
    are named in the cycle's order, starting from the first declared one. Machines
    that are periodic on purpose (heartbeats, blinkers) declare ``periodic=True``
    (YAML ``periodic: true``); the loop is then listed as a warning that says how
    many timeouts an idle key fires per round.
``duplicate`` (warning)
    a transition or timeout declared twice.
``unused_final`` (warning)
    a final state that is not initial and that nothing leads to.
``final_timeout`` (warning)
    a timeout leaving a final state, so keys never rest there for good.
``reserved_event`` (warning)
    a transition on the event ``"timeout"``, which transition histories use for
    fired timeouts.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ERROR_KINDS", "WARNING_KINDS", "Problem", "ValidationReport"]

ERROR_KINDS: tuple[str, ...] = (
    "unknown_state",
    "nondeterministic",
    "no_final",
    "unreachable",
    "deadlock",
    "livelock",
    "timer_loop",
)
WARNING_KINDS: tuple[str, ...] = ("duplicate", "unused_final", "final_timeout", "reserved_event")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a machine definition.

    Attributes
    ----------
    kind
        What is wrong, e.g. ``"deadlock"``; see :mod:`streamkit.machines.report`.
    states
        The states involved, in declaration order where that applies.
    message
        A sentence saying what is wrong, where, and what to do about it.
    severity
        ``"error"`` (the machine is invalid) or ``"warning"`` (suspicious only).

    Examples
    --------
    >>> p = Problem("deadlock", ("stuck",), "state 'stuck' has no way out")
    >>> str(p)
    "error deadlock: state 'stuck' has no way out"
    """

    kind: str
    states: tuple[str, ...]
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.severity} {self.kind}: {self.message}"


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of :meth:`Machine.validate`.

    Attributes
    ----------
    machine
        The name of the validated machine.
    problems
        Every problem found, errors first, in a deterministic order.

    Examples
    --------
    >>> import streamkit as sk
    >>> m = sk.Machine("m", states=["a", "b"], initial="a", transitions=[("a", "go", "b")])
    >>> report = m.validate()
    >>> report.ok
    False
    >>> [p.kind for p in report.problems]
    ['no_final', 'deadlock']
    """

    machine: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True exactly when no problem has severity ``"error"``."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        """The problems with severity ``"error"``."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """The problems with severity ``"warning"``."""
        return [p for p in self.problems if p.severity == "warning"]

    def problem_states(self, severity: Literal["error", "warning"] | None = "error") -> list[str]:
        """States named by problems of ``severity`` (all problems if None), first mention first.

        Examples
        --------
        >>> import streamkit as sk
        >>> m = sk.Machine("m", states=["a", "b", "c"], initial="a", final=["b"],
        ...                transitions=[("a", "go", "b")])
        >>> m.validate().problem_states()
        ['c']
        """
        seen: dict[str, None] = {}
        for p in self.problems:
            if severity is None or p.severity == severity:
                seen.update(dict.fromkeys(p.states))
        return list(seen)

    def __str__(self) -> str:
        n_err, n_warn = len(self.errors), len(self.warnings)
        head = f"machine {self.machine!r}: " + (
            "valid" if self.ok else f"{n_err} error{'s' * (n_err != 1)}"
        )
        if n_warn:
            head += f", {n_warn} warning{'s' * (n_warn != 1)}"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])

    def _repr_html_(self) -> str:
        return summary_html(self)


def summary_html(report: ValidationReport) -> str:
    """An HTML table of ``report`` (used by the notebook displays)."""
    colour = "#2e7d32" if report.ok else "#c62828"
    verdict = "valid" if report.ok else "invalid"
    parts = [
        f"<p><b>{html.escape(report.machine)}</b>: "
        f'<span style="color:{colour}">{verdict}</span> '
        f"({len(report.errors)} errors, {len(report.warnings)} warnings)</p>"
    ]
    if report.problems:
        parts.append(
            "<table><thead><tr><th>severity</th><th>kind</th><th>states</th>"
            "<th>message</th></tr></thead><tbody>"
        )
        for p in report.problems:
            shown = ", ".join(p.states[:10]) + (" …" if len(p.states) > 10 else "")
            parts.append(
                f"<tr><td>{p.severity}</td><td>{html.escape(p.kind)}</td>"
                f"<td>{html.escape(shown)}</td><td style='text-align:left'>"
                f"{html.escape(p.message)}</td></tr>"
            )
        parts.append("</tbody></table>")
    return "".join(parts)
