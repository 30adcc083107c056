"""Reports a user holds after a run or a verification, with rich displays."""

from __future__ import annotations

import html
from dataclasses import dataclass, field


def _table(rows: list[tuple[str, str]], title: str) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    return f"<div><b>{html.escape(title)}</b><table>{body}</table></div>"


@dataclass
class RunReport:
    """What one ``Pipeline.run`` did.

    Attributes
    ----------
    pipeline : str
        The pipeline's name.
    batches : int
        Micro-batches committed by this run.
    rows_in : int
        Source rows read.
    rows_out : int
        Rows written to the output log.
    quarantined : int
        Events set aside in the quarantine (late or undefined).
    ignored : int
        Undefined events ignored (``on_undefined="ignore"``).
    checkpoint : int | None
        Id of the checkpoint committed last (``None`` if nothing was ever committed).
    caught_up : bool
        True when the run processed everything the log held when it started.
    seconds : float
        Wall-clock duration of the run.
    """

    pipeline: str
    batches: int = 0
    rows_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    ignored: int = 0
    late: int = 0
    checkpoint: int | None = None
    start_offset: int = 0
    end_offset: int = 0
    caught_up: bool = False
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        """Source rows read per second of wall-clock time."""
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def _rows(self) -> list[tuple[str, str]]:
        return [
            ("batches", f"{self.batches:,}"),
            ("rows in", f"{self.rows_in:,}"),
            ("rows out", f"{self.rows_out:,}"),
            ("quarantined", f"{self.quarantined:,} ({self.late:,} late)"),
            ("ignored", f"{self.ignored:,}"),
            ("source offsets", f"{self.start_offset:,} → {self.end_offset:,}"),
            ("checkpoint", str(self.checkpoint)),
            ("caught up", "yes" if self.caught_up else "no"),
            ("duration", f"{self.seconds:.2f} s ({self.events_per_second:,.0f} events/s)"),
        ]

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self._rows())
        lines = [f"run of pipeline {self.pipeline!r}"]
        lines += [f"  {k:<{width}}  {v}" for k, v in self._rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return _table(self._rows(), f"RunReport: {self.pipeline}")


@dataclass(frozen=True)
class Check:
    """One check made by ``Pipeline.verify``."""

    name: str
    ok: bool
    message: str


@dataclass
class VerifyReport:
    """Result of ``Pipeline.verify``: every check made, and whether all passed."""

    pipeline: str
    checkpoint: int | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, ok: bool, message: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), message))
        return bool(ok)

    def __str__(self) -> str:
        head = (
            f"verify {self.pipeline!r} checkpoint {self.checkpoint}: "
            f"{'OK' if self.ok else 'FAILED'} ({len(self.checks)} checks)"
        )
        lines = [head] + [
            f"  [{'ok' if c.ok else 'FAIL'}] {c.name}" + (f": {c.message}" if c.message else "")
            for c in self.checks
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"VerifyReport(ok={self.ok}, checkpoint={self.checkpoint}, checks={len(self.checks)})"
        )

    def _repr_html_(self) -> str:
        rows = [
            (("✔ " if c.ok else "✘ ") + c.name, c.message or ("ok" if c.ok else "failed"))
            for c in self.checks
        ]
        status = "OK" if self.ok else "FAILED"
        return _table(rows, f"verify {self.pipeline} @ {self.checkpoint}: {status}")
