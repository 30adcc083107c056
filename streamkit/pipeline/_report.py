"""Reports a user holds after a run or a verification, with rich displays."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("streamkit.pipeline")


def _table(rows: list[tuple[str, str]], title: str) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    return f"<div><b>{html.escape(title)}</b><table>{body}</table></div>"


def format_ids(ids: list[int]) -> str:
    """Checkpoint ids written compactly, runs of consecutive ids as ranges.

    Examples
    --------
    >>> format_ids([1, 2, 3, 4, 5, 6, 7, 8])
    '1-8'
    >>> format_ids([2, 3, 5, 7, 8, 9])
    '2-3, 5, 7-9'
    >>> format_ids([])
    'none'
    """
    runs: list[list[int]] = []
    for i in sorted(set(ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs) or "none"


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
        Id of the pipeline's latest checkpoint after the run (``None`` if nothing
        was ever committed). When ``batches`` is 0 it predates the run.
    caught_up : bool
        True when the run processed everything the log held when it started.
    seconds : float
        Wall-clock duration of the run.
    source : str
        The source log's name.
    source_url : str
        Where the source log lives (no credentials).
    source_empty : bool
        True when the source has never had an append (its end offset is 0): often
        a typo in the log's name, which ``store.log(name, key=..., time=...)``
        creates empty. The run also logs a warning.

    Examples
    --------
    >>> print(RunReport("p", checkpoint=3))  # doctest: +NORMALIZE_WHITESPACE
    run of pipeline 'p'
      batches         0
      rows in         0
      rows out        0
      quarantined     0 (0 late)
      ignored         0
      source offsets  0 → 0
      checkpoint      nothing new since checkpoint 3
      caught up       no
      duration        0.00 s (0 events/s: source rows read per second of the run)
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
    source: str = ""
    source_url: str = ""
    source_empty: bool = False

    @property
    def events_per_second(self) -> float:
        """Source rows read per second of wall-clock time."""
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    @property
    def source_warning(self) -> str:
        """The warning about a source that never had an append ("" otherwise)."""
        if not self.source_empty:
            return ""
        return (
            f"source log {self.source!r} ({self.source_url}) has never had an append: "
            f"pipeline {self.pipeline!r} had nothing to process; if that is unexpected, "
            "check the log's name (store.log(name, key=..., time=...) creates a missing log)"
        )

    def _note_source(self, source: Any, end: int, store: Any = None) -> None:
        """Record the run's source; warn when it has never had an append (``end`` 0)."""
        self.source = str(getattr(source, "name", ""))
        self.source_url = str(getattr(source, "url", ""))
        if end != 0:
            return
        self.source_empty = True
        others = []
        if store is not None and hasattr(store, "logs"):
            others = [n for n in store.logs() if n != self.source]
        hint = f" (logs in {store.url}: {', '.join(others)})" if others else ""
        logger.warning("%s%s", self.source_warning, hint)

    def _checkpoint_text(self) -> str:
        if self.batches:
            return str(self.checkpoint)
        if self.checkpoint is None:
            return "no checkpoint yet (nothing was processed)"
        return f"nothing new since checkpoint {self.checkpoint}"

    def _rows(self) -> list[tuple[str, str]]:
        rate = f"{self.events_per_second:,.0f} events/s: source rows read per second of the run"
        empty = f"{self.source!r} ({self.source_url}) has never had an append (check its name)"
        rows = [("source", empty)] if self.source_empty else []
        return [
            *rows,
            ("batches", f"{self.batches:,}"),
            ("rows in", f"{self.rows_in:,}"),
            ("rows out", f"{self.rows_out:,}"),
            ("quarantined", f"{self.quarantined:,} ({self.late:,} late)"),
            ("ignored", f"{self.ignored:,}"),
            ("source offsets", f"{self.start_offset:,} → {self.end_offset:,}"),
            ("checkpoint", self._checkpoint_text()),
            ("caught up", "yes" if self.caught_up else "no"),
            ("duration", f"{self.seconds:.2f} s ({rate})"),
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
