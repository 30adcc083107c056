"""What :class:`~streamkit.FileLog` and :class:`~streamkit.DeltaLog` share.

Both read files someone else writes as a read-only log, through a *plan*: the
files not consumed at a position, each with the rows still to read and the
offset its first one gets. A pipeline cuts its micro-batches from a plan
(:meth:`PendingPlan.cut`), describes each as JSON (:meth:`PendingPlan.batch`,
stored with the batch's outputs), reads a batch back from that description
alone (the source's ``read_batch``) and records the source's ``advance`` as its
next position.

:class:`PendingPlan` holds the offset arithmetic; a subclass says how a file is
written into a batch (``_entry``), what a batch's ``next`` marker is (``_next``)
and which columns name a file in ``files`` (``_NAMES``, ``_names``). The
functions below are the checks and pieces both sources use as they are.
"""

from __future__ import annotations

import bisect
import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import polars as pl

from streamkit.errors import CheckpointError, ConfigurationError, SchemaError
from streamkit.storage._reader import Piece, scan_pieces
from streamkit.storage.log import _as_offset, _key_ok, _time_ok
from streamkit.storage.position import FileCursor, Position

#: Files one micro-batch covers at most: a batch's files are stored with its
#: outputs (the transaction meta of the output log), about 100 bytes each.
BATCH_FILES = 1000


@dataclass(frozen=True, slots=True)
class Pending:
    """A file not consumed at a plan's start: rows ``[first, rows)`` get offsets
    from ``offset`` on."""

    rows: int
    first: int
    offset: int

    @property
    def end(self) -> int:
        return self.offset + self.rows - self.first


P = TypeVar("P", bound=Pending)


class Source(Protocol):
    """What a plan asks of the log it was made by."""

    def advance(self, start: Position, batch: Mapping[str, Any]) -> Position: ...

    def read_batch(
        self, batch: Mapping[str, Any], *, with_offset: str | None = None
    ) -> pl.LazyFrame: ...


class PendingPlan(Generic[P]):
    """Pending files in reading order, a file read in part at ``start`` first.

    Attributes
    ----------
    start : Position
        Where the plan starts (with ``files``).
    """

    #: The columns of :attr:`files` that name a file (before ``offset``).
    _NAMES: ClassVar[dict[str, pl.DataType]] = {"path": pl.String()}

    def __init__(self, source: Source, start: Position, pending: list[P], max_files: int) -> None:
        self._source = source
        self.start = start
        self._pending = pending
        self._max_files = max_files
        self._offsets = [p.offset for p in pending]
        self._ends = [p.end for p in pending]
        self._end: Position | None = None

    # ---------------------------------------------------------------- what a subclass says
    def _names(self, p: P) -> tuple[Any, ...]:
        """The values of ``_NAMES`` for ``p``."""
        raise NotImplementedError

    def _entry(self, p: P, first: int, count: int) -> list[Any]:
        """``p`` in a batch that reads ``count`` of its rows from row ``first``."""
        raise NotImplementedError

    def _next(self, j: int, partial: bool) -> Any:
        """A batch's ``next``: what is still pending after ``pending[:j]`` was
        read (``partial``: the last of those only in part)."""
        raise NotImplementedError

    def _more(self) -> str:
        """Extra words for the repr, after the file count."""
        return ""

    # ---------------------------------------------------------------- the plan
    @property
    def end_offset(self) -> int:
        """The offset just past the last pending row."""
        return self._ends[-1] if self._pending else self.start.offset

    @property
    def end(self) -> Position:
        """The position after every pending file (all consumed)."""
        if self._end is None:
            self._end = self._source.advance(
                self.start, self.batch(self.start.offset, self.end_offset)
            )
        return self._end

    @property
    def files(self) -> pl.DataFrame:
        """Pending files: the columns naming each (see the class docstring), then
        ``offset`` (of the first row read), ``rows`` (to read), ``first_row``
        (rows of it consumed before)."""
        return pl.DataFrame(
            [(*self._names(p), p.offset, p.rows - p.first, p.first) for p in self._pending],
            schema={**self._NAMES, "offset": pl.Int64, "rows": pl.Int64, "first_row": pl.Int64},
            orient="row",
        )

    def __len__(self) -> int:
        return len(self._pending)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(offsets [{self.start.offset}, {self.end_offset}), "
            f"{len(self._pending)} files{self._more()}, from {self.start!r})"
        )

    def cut(self, lo: int, max_rows: int) -> int:
        """The end of a micro-batch starting at ``lo``: at most ``max_rows`` rows
        and at most 1,000 files (each file of a batch is stored with its outputs).
        """
        hi = min(lo + max_rows, self.end_offset)
        first = bisect.bisect_right(self._ends, lo)
        last = bisect.bisect_left(self._offsets, hi)
        if last - first > self._max_files:
            hi = max(self._ends[first + self._max_files - 1], lo + 1)
        return hi

    def batch(self, lo: int, hi: int) -> dict[str, Any]:
        """A JSON-able description of the rows at offsets ``[lo, hi)``: ``files``
        (each file read, with the rows read of it; see the class docstring) and
        ``next`` (what is still pending after the batch).

        Batches must follow one another from ``start``; the files of a batch
        ending at the plan's end include the empty files there.
        """
        end = self.end_offset
        if not self.start.offset <= lo <= hi <= end:
            raise ValueError(
                f"a batch [{lo}, {hi}) must lie within the plan's offsets "
                f"[{self.start.offset}, {end}]"
            )
        files: list[list[Any]] = []
        i = bisect.bisect_right(self._ends, lo)
        # empty files at exactly `lo` sit before i: include them
        while i > 0 and self._ends[i - 1] == lo and self._offsets[i - 1] == lo:
            i -= 1
        j = i
        partial = False
        while j < len(self._pending):
            p = self._pending[j]
            if p.rows == p.first:
                if not (p.offset < hi or (p.offset == hi == end)):
                    break
            elif p.offset >= hi:
                break
            first = p.first + max(0, lo - p.offset)
            count = max(min(hi, p.end) - max(lo, p.offset), 0)
            files.append(self._entry(p, first, count))
            partial = first + count < p.rows
            j += 1
        return {"start": lo, "end": hi, "files": files, "next": self._next(j, partial)}

    def scan(self, lo: int, hi: int, *, with_offset: str | None = None) -> pl.LazyFrame:
        """The rows at offsets ``[lo, hi)`` (see the log's ``read_batch``)."""
        return self._source.read_batch(self.batch(lo, hi), with_offset=with_offset)


# -------------------------------------------------------------------- source pieces
def check_names(kind: str, key: str, time: str) -> None:
    """Refuse key and time column names that are empty or the same."""
    if not key or not time or key == time:
        raise ConfigurationError(
            f"{kind} needs distinct key and time column names, found key={key!r}, time={time!r}"
        )


def require_columns(columns: Sequence[str], key: str, time: str, where: str) -> None:
    """Refuse a file or table without the key or the time column."""
    for role, col in (("key", key), ("time", time)):
        if col not in columns:
            raise SchemaError(
                f"{where}: expected a {role} column {col!r}, found columns {list(columns)}"
            )


def check_types(schema: pl.Schema, key: str, time: str, where: str) -> None:
    """Refuse a time column that is not Datetime or an integer, a key that is not scalar."""
    tdt = schema[time]
    if not _time_ok(tdt):
        raise SchemaError(
            f"{where}: expected the time column {time!r} to be Datetime or an "
            f"integer type, found {tdt}"
        )
    kdt = schema[key]
    if not _key_ok(kdt):
        raise SchemaError(
            f"{where}: expected the key column {key!r} to be a scalar type, found {kdt}"
        )


def check_nulls(frame: pl.DataFrame, key: str, time: str, where: str) -> None:
    """Refuse a file with nulls in its key or time column."""
    for role, col in (("key", key), ("time", time)):
        nulls = frame[col].null_count()
        if nulls:
            raise SchemaError(f"{where}: the {role} column {col!r} has {nulls} null(s)")


def batch_span(
    kind: str, name: str, start: Position, batch: Mapping[str, Any]
) -> tuple[FileCursor, int, int]:
    """The cursor of ``start`` and the offsets ``[lo, hi)`` of a batch that
    must follow it (for ``advance``)."""
    cursor = start.files
    if cursor is None:
        raise ValueError(f"advance() needs a {kind} position with files (plan(...).start)")
    lo, hi = int(batch["start"]), int(batch["end"])
    if lo != start.offset:
        raise CheckpointError(
            f"a batch of {name!r} starting at offset {lo} cannot follow position {start.offset}"
        )
    return cursor, lo, hi


def check_first(name: str, where: str, first: Any, consumed: int) -> None:
    """Refuse a batch that reads a file from another row than the position's next."""
    if first != consumed:
        raise CheckpointError(
            f"a batch of {name!r} reads {where} from row {first}, but the position "
            f"consumed {consumed} of its rows"
        )


def check_total(name: str, total: int, lo: int, hi: int) -> None:
    """Refuse a batch whose files cover another number of rows than its offsets."""
    if total != hi - lo:
        raise CheckpointError(f"a batch of {name!r} covers {total} rows but offsets [{lo}, {hi})")


def scan_plan(
    plan: PendingPlan[Any], end: Position | int | None, with_offset: str | None
) -> pl.LazyFrame:
    """The rows of ``plan`` up to ``end`` (a log's ``scan``)."""
    lo = plan.start.offset
    hi = max(lo, min(_as_offset(end, plan.end_offset, "end"), plan.end_offset))
    return plan.scan(lo, hi, with_offset=with_offset)


def scan_slices(
    reads: Sequence[tuple[Callable[[], pl.DataFrame], int, int]],
    schema: pl.Schema,
    *,
    start: int,
    end: int,
    with_offset: str | None,
    label: str,
) -> pl.LazyFrame:
    """A batch's rows: ``(read, first, count)`` takes ``count`` rows from row
    ``first`` of the frame ``read()`` returns (called only when the rows are
    needed), at offsets from ``start`` on."""
    pieces = []
    offset = start
    for read, first, count in reads:
        pieces.append(Piece(offset, count, _slicer(read, first, count)))
        offset += count
    return scan_pieces(pieces, schema, start=start, end=end, with_offset=with_offset, label=label)


def _slicer(
    read: Callable[[], pl.DataFrame], first: int, count: int
) -> Callable[[list[str]], pl.DataFrame]:
    def load(columns: list[str]) -> pl.DataFrame:
        return read().slice(first, count).select(columns)

    return load


def read_only(kind: str, name: str) -> ConfigurationError:
    """The error of ``append`` on a read-only log."""
    return ConfigurationError(
        f"{kind} {name!r} is read-only; append to a log from "
        "sk.Store(...).log(name, key=..., time=...) instead"
    )


def html_table(caption: str, cells: Sequence[tuple[str, Any]]) -> str:
    """A notebook table of ``(label, value)`` rows."""
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
        for k, v in cells
    )
    return f"<table><caption>{html.escape(caption)}</caption>{body}</table>"
