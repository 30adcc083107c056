"""Existing files on any fsspec store, read as a read-only log.

Files are read exactly once by *identity*, not by where they sit in a listing:
a FileLog position (:class:`~streamkit.storage.position.Position` with a
:class:`~streamkit.storage.position.FileCursor`) records which files were
consumed (path, size, ETag or modification time). A :class:`FilePlan` lists the
files not consumed at a position and gives their rows offsets from that
position's offset on; a pipeline cuts its micro-batches from a plan, stores
each batch's files with its outputs and the position after the batch in its
checkpoint. See ``docs/design.md``, "FileLog positions".
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from streamkit.errors import (
    CheckpointError,
    ConfigurationError,
    CorruptFileError,
    LogNotFoundError,
    SchemaError,
)
from streamkit.storage import _plan
from streamkit.storage._fs import FileSystem
from streamkit.storage._ipc import read_ipc_checked
from streamkit.storage._manifest import Segment
from streamkit.storage._plan import BATCH_FILES, PendingPlan
from streamkit.storage._reader import read_parquet_checked
from streamkit.storage.log import _as_offset, _check_schema, _segments_frame
from streamkit.storage.position import FileCursor, FileMark, Position, Transaction

__all__ = ["FileLog", "FilePlan"]

logger = logging.getLogger("streamkit.storage")

Format = Literal["parquet", "ipc", "csv", "ndjson"]
_EXTENSIONS: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "ipc",
    ".ipc": "ipc",
    ".feather": "ipc",
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}

#: Default of ``FileLog(window=...)``: consumed files a position lists above its
#: watermark. About 100 bytes of checkpoint JSON each.
WINDOW = 1000
#: Parsed small files kept between a plan (which counts their rows) and the
#: batch that reads them, in bytes (Polars' estimate).
_CACHE_BYTES = 64 * 2**20
#: Files fetched per concurrent request group on an object store.
_FETCH_CHUNK = 128
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: What to do about a file that cannot be decoded (ends the error message).
_REMEDY = "move the file out of the FileLog's folder, or replace it with a readable one"


@dataclass(frozen=True, slots=True)
class _FileInfo:
    mark: FileMark
    rows: int
    min_time: int
    max_time: int
    schema: pl.Schema


@dataclass(frozen=True, slots=True)
class _Pending(_plan.Pending):
    """A file not consumed at a plan's start (see :class:`_plan.Pending`)."""

    mark: FileMark


class FileLog:
    """Existing Parquet, Arrow IPC, CSV or NDJSON files read as a read-only log.

    Each file is read exactly once, whatever order files arrive in: a position
    on a FileLog records the files consumed by identity (path, size, and the
    ETag where the backend gives one, else the modification time), so

    - a file that arrives out of name order (``b`` after ``a`` and ``c`` were
      read) is read once, by the next run;
    - consumed files may be deleted (a producer's retention): nothing shifts;
    - a consumed file that changes (another size, ETag or modification time)
      stops the read with :class:`~streamkit.errors.CorruptFileError` naming it.

    The files not consumed at a position are taken in path order (Hive-style
    folders such as ``dt=2026-11-26/hour=07/`` order by their path: zero-pad
    numbers) and get offsets after the position's; within a file rows are
    ordered by ``(time, row)`` like a log append. Without a recorded position
    (``Position(n)`` or an int), offsets count through all current files in
    path order, as for ``scan()``.

    A position stays small: it lists at most ``window`` consumed files above a
    *watermark* path; older consumed files are covered by the watermark. A file
    may therefore arrive out of name order as long as fewer than ``window``
    consumed files sort above it. One that shows up below the watermark later,
    newer than every file the watermark covers, is an error naming it
    (:class:`~streamkit.errors.CheckpointError`), never skipped silently:
    rename it to sort above the watermark to have it read, or remove it.

    Producers must write files atomically (write elsewhere, then rename or
    upload): a file that is still growing looks like a changed file.

    Parquet and Arrow IPC files may decode to at most 256 MiB or 100 times
    their size, whichever is larger; a file over that bound (a decompression
    bomb) or one that cannot be decoded is refused before it is inflated, with
    :class:`~streamkit.errors.CorruptFileError` naming it. CSV and NDJSON
    files are not compressed: they decode to about their size.

    Parameters
    ----------
    url : str
        Folder holding the files (any fsspec URL or local path).
    pattern : str
        Glob for file names (``"*.parquet"``); with a ``/`` it is matched against
        paths relative to ``url`` (``"dt=*/hour=*/*.parquet"``).
    key, time : str
        Key and time columns. A String time column is parsed as a datetime.
    storage_options : mapping, optional
        fsspec options for the backend.
    format : {"parquet", "ipc", "csv", "ndjson"}, optional
        File format; inferred from each file's extension by default.
    window : int
        Consumed files a position lists above its watermark (default 1,000):
        how far out of name order a file may arrive.

    Examples
    --------
    >>> import polars as pl
    >>> import fsspec
    >>> import streamkit as sk
    >>> fs = fsspec.filesystem("memory")
    >>> with fs.open("/streamkit-doc-filelog/a.csv", "wb") as f:
    ...     _ = f.write(b"k,t\\n1,5\\n2,3\\n")
    >>> flog = sk.FileLog("memory://streamkit-doc-filelog", "*.csv", key="k", time="t")
    >>> flog.scan(with_offset="o").collect().rows()
    [(2, 3, 0), (1, 5, 1)]
    >>> seen = flog.end()
    >>> seen
    Position(offset=2, watermark=None, consumed=['a.csv'])

    A file arriving later, even one sorting first, is what comes after ``seen``:

    >>> with fs.open("/streamkit-doc-filelog/0.csv", "wb") as f:
    ...     _ = f.write(b"k,t\\n3,1\\n")
    >>> flog.scan(start=seen, with_offset="o").collect().rows()
    [(3, 1, 2)]
    """

    def __init__(
        self,
        url: str,
        pattern: str = "*.parquet",
        *,
        key: str,
        time: str,
        storage_options: Mapping[str, Any] | None = None,
        format: Format | None = None,
        window: int = WINDOW,
    ) -> None:
        if format is not None and format not in set(_EXTENSIONS.values()):
            raise ConfigurationError(
                f"FileLog format must be one of parquet, ipc, csv, ndjson; found {format!r}"
            )
        _plan.check_names("FileLog", key, time)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigurationError(f"FileLog window must be an int >= 1, found {window!r}")
        self._fs = FileSystem(url, storage_options)
        if self._fs.is_local and not os.path.isdir(self._fs.root):
            # a typo in a local path must not read as an empty log (object stores
            # have no folders: there an absent prefix is an empty log)
            raise LogNotFoundError(
                f"FileLog folder {self._fs.url} does not exist; check the path (an "
                "existing folder without matching files is a valid, empty log)"
            )
        self._pattern = pattern
        self._key = key
        self._time = time
        self._format = format
        self._window = window
        self._infos: dict[FileMark, _FileInfo] = {}
        self._frames: OrderedDict[FileMark, pl.DataFrame] = OrderedDict()
        self._frame_bytes = 0
        self._ref_schema: pl.Schema | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        """The folder and pattern, e.g. ``/data/events/*.parquet``."""
        return f"{self._fs.url.rstrip('/')}/{self._pattern}"

    @property
    def key(self) -> str:
        """Name of the key column."""
        return self._key

    @property
    def time(self) -> str:
        """Name of the time column."""
        return self._time

    @property
    def partitions(self) -> int:
        """Always 1: files are read in name order."""
        return 1

    @property
    def url(self) -> str:
        """The folder holding the files (no credentials)."""
        return self._fs.url

    @property
    def filesystem(self) -> FileSystem:
        """The file system rooted at the folder (as ``Log.filesystem``)."""
        return self._fs

    @property
    def window(self) -> int:
        """Consumed files a position lists above its watermark."""
        return self._window

    @property
    def schema(self) -> pl.Schema | None:
        """Schema of the files (None if no file matches): the first file's."""
        return self._reference(self._listing())

    # ---------------------------------------------------------------- listing
    def _listing(self) -> list[FileMark]:
        """Matching files with their identities, in path order."""
        marks = []
        for d in self._fs.find_details(recursive="/" in self._pattern):
            rel = str(d["path"])
            if fnmatch.fnmatchcase(rel, self._pattern):
                marks.append(_mark(rel, int(d["size"]), d["etag"], d["mtime"]))
        return sorted(marks, key=lambda m: m.path)

    def _format_of(self, path: str) -> Format:
        if self._format is not None:
            return self._format
        lower = path.lower()
        for ext, fmt in _EXTENSIONS.items():
            if lower.endswith(ext):
                return fmt
        raise ConfigurationError(
            f"cannot tell the format of {self._where(path)} from its extension; pass "
            "FileLog(..., format='parquet'|'ipc'|'csv'|'ndjson')"
        )

    def _where(self, path: str) -> str:
        return f"{self._fs.url.rstrip('/')}/{path}"

    # ---------------------------------------------------------------- reading files
    def _parse(self, mark: FileMark, data: bytes, schema: pl.Schema | None) -> pl.DataFrame:
        where = self._where(mark.path)
        if len(data) != mark.size:
            raise CorruptFileError(
                f"{where} changed while it was read: listed with {mark.size} bytes, read "
                f"{len(data)}; producers must write files atomically (write elsewhere, "
                "then rename or upload)"
            )
        fmt = self._format_of(mark.path)
        # Parquet and compressed Arrow IPC can be decompression bombs: their
        # decoded size is bounded before anything is inflated
        if fmt == "parquet":
            frame = read_parquet_checked(data, None, where=where, remedy=_REMEDY)
        elif fmt == "ipc":
            frame = read_ipc_checked(data, where=where, remedy=_REMEDY)
        else:
            try:
                if fmt == "csv":
                    frame = pl.read_csv(
                        io.BytesIO(data),
                        try_parse_dates=True,
                        schema=dict(schema) if schema else None,
                    )
                else:
                    frame = pl.read_ndjson(
                        io.BytesIO(data), schema=dict(schema) if schema else None
                    )
            except (
                pl.exceptions.PolarsError,
                pl.exceptions.PanicException,
                OSError,
                ValueError,
            ) as exc:
                raise SchemaError(
                    f"cannot read {where} as {fmt}: {type(exc).__name__}: {exc}"
                ) from None
        return self._normalize(frame, where, schema)

    def _normalize(self, frame: pl.DataFrame, where: str, schema: pl.Schema | None) -> pl.DataFrame:
        _plan.require_columns(frame.columns, self._key, self._time, where)
        if frame.schema[self._time] == pl.String:
            try:
                frame = frame.with_columns(pl.col(self._time).str.to_datetime(time_unit="us"))
            except pl.exceptions.PolarsError as exc:
                raise SchemaError(
                    f"{where}: the time column {self._time!r} holds strings that do not "
                    f"parse as datetimes ({exc})"
                ) from None
        _plan.check_types(frame.schema, self._key, self._time, where)
        _plan.check_nulls(frame, self._key, self._time, where)
        if schema is not None:
            _check_schema(schema, frame.schema, where)
        if not frame[self._time].is_sorted():
            frame = frame.sort(self._time, maintain_order=True)
        return frame

    def _fetch(self, marks: list[FileMark]) -> Iterable[tuple[FileMark, bytes]]:
        """The files' bytes, fetched concurrently on object stores."""
        for i in range(0, len(marks), _FETCH_CHUNK):
            chunk = marks[i : i + _FETCH_CHUNK]
            try:
                got = self._fs.get_many([m.path for m in chunk])
            except LogNotFoundError:
                gone = self._fs.get_many([m.path for m in chunk], missing_ok=True)
                missing = [m.path for m in chunk if m.path not in gone]
                raise LogNotFoundError(
                    f"{self._where(missing[0])} disappeared before it was read"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    + ": files must stay until they are consumed"
                ) from None
            for m in chunk:
                yield m, got[m.path]

    def _load(self, marks: list[FileMark], schema: pl.Schema | None) -> list[_FileInfo]:
        """Infos of ``marks`` (read once per identity; parsed frames cached)."""
        with self._lock:
            missing = [m for m in dict.fromkeys(marks) if m not in self._infos]
        for mark, data in self._fetch(missing):
            frame = self._parse(mark, data, schema)
            phys = frame[self._time].to_physical()
            info = _FileInfo(
                mark,
                frame.height,
                int(phys.min()) if frame.height else 0,  # type: ignore[arg-type]
                int(phys.max()) if frame.height else 0,  # type: ignore[arg-type]
                frame.schema,
            )
            with self._lock:
                self._infos[mark] = info
                self._remember(mark, frame)
        with self._lock:
            return [self._infos[m] for m in marks]

    def _remember(self, mark: FileMark, frame: pl.DataFrame) -> None:
        """Keep a parsed frame for the batch that reads it next (lock held)."""
        size = int(frame.estimated_size())
        if size > _CACHE_BYTES // 4 or mark in self._frames:
            return
        self._frames[mark] = frame
        self._frame_bytes += size
        while self._frame_bytes > _CACHE_BYTES:
            _, old = self._frames.popitem(last=False)
            self._frame_bytes -= int(old.estimated_size())

    def _frame(self, mark: FileMark, rows: int, schema: pl.Schema) -> pl.DataFrame:
        """All rows of the file ``mark`` (expected to hold ``rows`` rows)."""
        with self._lock:
            frame = self._frames.pop(mark, None)
            if frame is not None:
                self._frame_bytes -= int(frame.estimated_size())
        if frame is None:
            if self._fs.is_local:
                self._check_local(mark)
            try:
                data = self._fs.get(mark.path)
            except LogNotFoundError:
                raise LogNotFoundError(
                    f"{self._where(mark.path)} disappeared before it was read; it holds "
                    f"rows of a batch being processed: restore it (files must stay until "
                    "they are consumed)"
                ) from None
            frame = self._parse(mark, data, schema)
        if frame.height != rows:
            raise CorruptFileError(
                f"{self._where(mark.path)} changed: it had {rows} rows when it was planned, "
                f"now {frame.height}; a file must not change once it is visible"
            )
        return frame

    def _check_local(self, mark: FileMark) -> None:
        try:
            st = os.stat(os.path.join(self._fs.root, mark.path))
        except FileNotFoundError:
            return  # reported by the read
        if st.st_size != mark.size or str(st.st_mtime_ns) != mark.tag:
            raise CorruptFileError(
                f"{self._where(mark.path)} changed after it was planned ({mark.size} bytes, "
                f"modified {_show_ns(mark.mtime)}; now {st.st_size} bytes, modified "
                f"{_show_ns(st.st_mtime_ns)}); a file must not change once it is visible"
            )

    def _reference(self, listing: list[FileMark]) -> pl.Schema | None:
        """The schema every file must have: the first file's (in path order)."""
        if not listing:
            return self._ref_schema
        schema = self._load(listing[:1], None)[0].schema
        self._ref_schema = schema
        return schema

    def _files(self) -> list[_FileInfo]:
        listing = self._listing()
        schema = self._reference(listing)
        return self._load(listing, schema)

    # ---------------------------------------------------------------- plans
    def plan(self, start: Position | int | None = None) -> FilePlan:
        """The files not consumed at ``start``, with the offsets their rows get.

        This is how a pipeline reads a FileLog incrementally: a run plans from
        its checkpoint's position, cuts micro-batches with :meth:`FilePlan.cut`,
        describes each with :meth:`FilePlan.batch` (stored with the batch's
        outputs), reads it with :meth:`read_batch` and records
        :meth:`advance` as its next position.

        Parameters
        ----------
        start : Position or int, optional
            A position with ``files`` (from ``end()``, ``start()``, a plan or a
            checkpoint). Without ``files`` (an int), the first ``start`` rows of
            the current files in path order count as consumed.

        Raises
        ------
        CorruptFileError
            A consumed file changed (size, ETag or modification time differ).
        CheckpointError
            A file appeared below the position's watermark, newer than every
            file the watermark covers; or the file read in part at ``start``
            is gone.

        Examples
        --------
        >>> import fsspec
        >>> import streamkit as sk
        >>> fs = fsspec.filesystem("memory")
        >>> for name in ("a", "c"):
        ...     fs.pipe(f"/streamkit-doc-fl-plan/{name}.csv", b"k,t\\n1,1\\n2,2\\n")
        >>> flog = sk.FileLog("memory://streamkit-doc-fl-plan", "*.csv", key="k", time="t")
        >>> done = flog.plan().end
        >>> fs.pipe("/streamkit-doc-fl-plan/b.csv", b"k,t\\n3,3\\n")
        >>> plan = flog.plan(done)
        >>> plan.files.rows()
        [('b.csv', 4, 1, 0)]
        >>> plan.end.offset
        5
        """
        pos = _as_position(start)
        listing = self._listing()
        with self._lock:  # forget files that are gone: memory follows the folder
            listed = set(listing)
            self._infos = {m: i for m, i in self._infos.items() if m in listed}
        schema = self._reference(listing)
        if pos.files is None:
            return self._canonical_plan(listing, pos.offset, schema)
        cursor = pos.files
        todo, first_rows = self._classify(listing, cursor)
        infos = self._load(todo, schema)
        pending: list[_Pending] = []
        offset = pos.offset
        for info, first in zip(infos, first_rows, strict=True):
            if first > info.rows:
                raise CorruptFileError(
                    f"{self._where(info.mark.path)} changed: {first} of its rows were "
                    f"consumed but it now has {info.rows}"
                )
            pending.append(_Pending(info.rows, first, offset, info.mark))
            offset += info.rows - first
        return FilePlan(self, pos, pending, schema)

    def _classify(
        self, listing: list[FileMark], cursor: FileCursor
    ) -> tuple[list[FileMark], list[int]]:
        """The listed files not consumed at ``cursor`` (the one read in part first),
        and the first row of each still to read."""
        consumed = {m.path: m for m in cursor.files}
        partial = cursor.partial
        todo: list[FileMark] = []
        changed: list[tuple[FileMark, FileMark]] = []
        late: list[FileMark] = []
        partial_now: FileMark | None = None
        for mark in listing:
            old = consumed.get(mark.path)
            if old is None and partial is not None and mark.path == partial.path:
                old = partial
                partial_now = mark
            if old is not None:
                if not old.same_file(mark):
                    changed.append((old, mark))
                continue
            if cursor.watermark is not None and mark.path <= cursor.watermark:
                if (
                    mark.mtime is not None
                    and cursor.since is not None
                    and mark.mtime > cursor.since
                ):
                    late.append(mark)
                continue
            todo.append(mark)
        if changed:
            old, new = changed[0]
            more = (
                f" (and {len(changed) - 1} more consumed files changed)" if len(changed) > 1 else ""
            )
            raise CorruptFileError(
                f"{self._where(new.path)} changed after it was consumed: read as "
                f"{_describe(old)}, now {_describe(new)}{more}. A consumed file must not change: "
                "restore it, or delete it (consumed files may be deleted); to have new "
                "data read, write it to a new file"
            )
        if late:
            others = ", ".join(repr(m.path) for m in late[1:4])
            more = f" (and {len(late) - 1} more: {others}{', ...' if len(late) > 4 else ''})"
            raise CheckpointError(
                f"{self._where(late[0].path)} appeared below the read position's watermark "
                f"{cursor.watermark!r} after the watermark passed it{more if len(late) > 1 else ''}"
                f": modified {_show_ns(late[0].mtime)}, after {_show_ns(cursor.since)}, the "
                "newest file the watermark covers. It arrived more than "
                f"window={self._window} consumed files out of name order, or was rewritten "
                "after being consumed; it was NOT read. To read it, rename it to sort above "
                f"{cursor.watermark!r}; to skip it, delete or move it. A larger "
                "FileLog(window=...) tolerates later arrivals"
            )
        if partial is not None and partial_now is None:
            raise CheckpointError(
                f"{self._where(partial.path)} was read up to row {cursor.partial_rows} and "
                "has since been deleted: its remaining rows cannot be read. Restore it "
                "(files must stay until they are fully consumed)"
            )
        if partial_now is not None:
            return [partial_now, *todo], [cursor.partial_rows] + [0] * len(todo)
        return todo, [0] * len(todo)

    def _canonical_plan(
        self, listing: list[FileMark], offset: int, schema: pl.Schema | None
    ) -> FilePlan:
        """A plan where the first ``offset`` rows in path order are consumed."""
        infos = self._load(listing, schema)
        consumed: dict[str, FileMark] = {}
        pending: list[_Pending] = []
        partial: FileMark | None = None
        partial_rows = 0
        at = 0
        for info in infos:
            if at + info.rows <= offset:
                consumed[info.mark.path] = info.mark
            elif at < offset:
                partial, partial_rows = info.mark, offset - at
                pending.append(_Pending(info.rows, partial_rows, offset, info.mark))
            else:
                pending.append(_Pending(info.rows, 0, at, info.mark))
            at += info.rows
        floor = pending[0].mark.path if pending else None
        cursor = _cursor(consumed, None, None, partial, partial_rows, self._window, floor)
        return FilePlan(self, Position(offset, files=cursor), pending, schema)

    def advance(self, start: Position, batch: Mapping[str, Any]) -> Position:
        """The position after reading ``batch`` (from :meth:`FilePlan.batch`) at ``start``.

        Pure: it lists and reads nothing, so a pipeline recovering from a crash
        computes the same position from the batch stored with its outputs.

        Examples
        --------
        >>> import fsspec
        >>> import streamkit as sk
        >>> fs = fsspec.filesystem("memory")
        >>> fs.pipe("/streamkit-doc-fl-adv/a.csv", b"k,t\\n1,1\\n2,2\\n")
        >>> flog = sk.FileLog("memory://streamkit-doc-fl-adv", "*.csv", key="k", time="t")
        >>> plan = flog.plan()
        >>> flog.advance(plan.start, plan.batch(0, 1))
        Position(offset=1, watermark=None, consumed=[], partial='a.csv'@1)
        """
        cursor, lo, hi = _plan.batch_span("FileLog", self.name, start, batch)
        consumed = {m.path: m for m in cursor.files}
        partial, partial_rows = cursor.partial, cursor.partial_rows
        total = 0
        for item in batch["files"]:
            path, size, tag, mtime, rows, first, count = item
            mark = FileMark.from_list([path, size, tag, mtime])
            resuming = partial is not None and partial.path == mark.path
            if mark.path in consumed or (
                not resuming and cursor.watermark is not None and mark.path <= cursor.watermark
            ):
                raise CheckpointError(
                    f"a batch of {self.name!r} reads {self._where(mark.path)} again: the "
                    f"position at offset {lo} consumed it already"
                )
            where = self._where(mark.path)
            _plan.check_first(self.name, where, first, partial_rows if resuming else 0)
            total += int(count)
            if int(first) + int(count) >= int(rows):
                consumed[mark.path] = mark
                if resuming:
                    partial, partial_rows = None, 0
            else:
                partial, partial_rows = mark, int(first) + int(count)
        _plan.check_total(self.name, total, lo, hi)
        files = _cursor(
            consumed,
            cursor.watermark,
            cursor.since,
            partial,
            partial_rows,
            self._window,
            batch.get("next"),
        )
        return Position(hi, files=files)

    def read_batch(
        self, batch: Mapping[str, Any], *, with_offset: str | None = None
    ) -> pl.LazyFrame:
        """The rows of ``batch`` (from :meth:`FilePlan.batch`), at the batch's offsets.

        Reads exactly the files the batch names, whatever arrived since.

        Raises
        ------
        CorruptFileError
            A file of the batch changed (size or row count).
        LogNotFoundError
            A file of the batch is gone.

        Examples
        --------
        >>> import fsspec
        >>> import streamkit as sk
        >>> fs = fsspec.filesystem("memory")
        >>> fs.pipe("/streamkit-doc-fl-rb/a.csv", b"k,t\\n1,1\\n2,2\\n")
        >>> flog = sk.FileLog("memory://streamkit-doc-fl-rb", "*.csv", key="k", time="t")
        >>> batch = flog.plan().batch(1, 2)
        >>> flog.read_batch(batch, with_offset="o").collect().rows()
        [(2, 2, 1)]
        """
        lo, hi = int(batch["start"]), int(batch["end"])
        entries = [
            (FileMark.from_list(item[:4]), int(item[4]), int(item[5]), int(item[6]))
            for item in batch["files"]
        ]
        schema = self._ref_schema
        if schema is None and entries:
            schema = self._reference(self._listing())
        if schema is None and entries:  # every file of the folder is gone: ours decide
            schema = self._load([entries[0][0]], None)[0].schema
        schema = schema or pl.Schema({})
        return _plan.scan_slices(
            [
                (functools.partial(self._frame, mark, rows, schema), first, count)
                for mark, rows, first, count in entries
            ],
            schema,
            start=lo,
            end=hi,
            with_offset=with_offset,
            label=f"files {self.name}",
        )

    # ---------------------------------------------------------------- reading
    def segments(self) -> pl.DataFrame:
        """One row per current file, in path order, with offsets counted from 0.

        Same columns as ``Log.segments``. These are the offsets of ``scan()``
        without a position (all current files); a position with ``files`` gives
        the files it has not consumed their own offsets (see :meth:`plan`).

        Examples
        --------
        >>> import polars as pl
        >>> import fsspec
        >>> import streamkit as sk
        >>> pl.DataFrame({"k": [1], "t": [7]}).write_parquet(
        ...     fsspec.filesystem("memory").open("/streamkit-doc-fl-segs/a.parquet", "wb"))
        >>> flog = sk.FileLog("memory://streamkit-doc-fl-segs", key="k", time="t")
        >>> flog.segments()["rows"].to_list()
        [1]
        """
        files = self._files()
        segs = []
        offset = 0
        for i, info in enumerate(files):
            segs.append(
                Segment(
                    path=info.mark.path,
                    partition=0,
                    seq=i,
                    offset=offset,
                    rows=info.rows,
                    min_time=info.min_time,
                    max_time=info.max_time,
                    bytes=info.mark.size,
                    crc32=0,
                    version=0,
                )
            )
            offset += info.rows
        tdt = files[0].schema[self._time] if files else pl.Int64()
        return _segments_frame(segs, tdt).drop("crc32")

    def end(self) -> Position:
        """The position after every current file: all of them consumed.

        ``scan(start=flog.end())`` later returns exactly the files that arrive
        after this call, whatever their names.

        Examples
        --------
        >>> import streamkit as sk
        >>> sk.FileLog("memory://streamkit-doc-fl-empty", key="k", time="t").end()
        Position(offset=0, watermark=None, consumed=[])
        """
        return self.plan(self.start()).end

    def describe(self, position: Position) -> str:
        """What ``position`` has consumed of the folder, in words (as ``verify`` says it).

        Examples
        --------
        >>> import fsspec, polars as pl, streamkit as sk
        >>> for name in ("a", "b"):
        ...     pl.DataFrame({"k": [1], "t": [1]}).write_parquet(fsspec.filesystem("memory").open(
        ...         f"/streamkit-doc-fl-describe/{name}.parquet", "wb"))
        >>> flog = sk.FileLog("memory://streamkit-doc-fl-describe", key="k", time="t")
        >>> flog.describe(flog.start())
        'no file read yet'
        >>> flog.describe(flog.end())
        'read: 2 files by name'
        """
        cursor = position.files
        if cursor is None:
            return "no file read yet"
        parts = []
        if cursor.watermark is not None:
            parts.append(f"every file up to {cursor.watermark!r} in path order")
        if cursor.files:
            more = " more" if cursor.watermark is not None else ""
            files = "file" if len(cursor.files) == 1 else "files"
            parts.append(f"{len(cursor.files):,}{more} {files} by name")
        if cursor.partial is not None:
            rows = "row" if cursor.partial_rows == 1 else "rows"
            parts.append(f"the first {cursor.partial_rows:,} {rows} of {cursor.partial.path!r}")
        return "read: " + ", and ".join(parts) if parts else "no file read yet"

    def start(self) -> Position:
        """Offset 0 with nothing consumed: files are never truncated.

        Examples
        --------
        >>> import streamkit as sk
        >>> sk.FileLog("memory://streamkit-doc-fl-start", key="k", time="t").start()
        Position(offset=0, watermark=None, consumed=[])
        """
        return Position(0, files=FileCursor())

    def count(self) -> int:
        """Number of rows over all matching files.

        Examples
        --------
        >>> import streamkit as sk
        >>> sk.FileLog("memory://streamkit-doc-fl-count", key="k", time="t").count()
        0
        """
        return sum(info.rows for info in self._files())

    def transaction(self, writer: str) -> Transaction | None:
        """Always None: nothing writes to a FileLog.

        Examples
        --------
        >>> import streamkit as sk
        >>> sk.FileLog("memory://streamkit-doc-fl-txn", key="k", time="t").transaction("w")
        """
        return None

    def scan(
        self,
        start: Position | int | None = None,
        end: Position | int | None = None,
        *,
        with_offset: str | None = None,
    ) -> pl.LazyFrame:
        """A LazyFrame of the rows with offsets in ``[start, end)``, like ``Log.scan``.

        With a ``start`` position that has ``files`` (from :meth:`end` or a
        checkpoint), the rows are those of the files not consumed at ``start``;
        with an int, offsets count through all current files in path order.

        Examples
        --------
        >>> import polars as pl
        >>> import fsspec
        >>> import streamkit as sk
        >>> fs = fsspec.filesystem("memory")
        >>> for i in range(2):
        ...     pl.DataFrame({"k": [i], "t": [i]}).write_ipc(
        ...         fs.open(f"/streamkit-doc-fl-scan/{i}.arrow", "wb"))
        >>> flog = sk.FileLog("memory://streamkit-doc-fl-scan", "*.arrow", key="k", time="t")
        >>> flog.scan(start=1).collect().rows()
        [(1, 1)]
        """
        return _plan.scan_plan(self.plan(start), end, with_offset)

    def append(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported: a FileLog is read-only.

        Raises
        ------
        ConfigurationError
            Always; write to a :class:`~streamkit.Log` from ``Store.log`` instead.

        Examples
        --------
        >>> import streamkit as sk
        >>> sk.FileLog("memory://streamkit-doc-fl-ro", key="k", time="t").append(None)
        Traceback (most recent call last):
        ...
        streamkit.errors.ConfigurationError: FileLog ... is read-only; ...
        """
        raise _plan.read_only("FileLog", self.name)

    # ---------------------------------------------------------------- display
    def __repr__(self) -> str:
        files = self._files()
        return (
            f"FileLog({self.name!r}, key={self._key!r}, time={self._time!r}, "
            f"files={len(files)}, rows={sum(f.rows for f in files)})"
        )

    def _repr_html_(self) -> str:
        files = self._files()
        cells = [
            ("files", self.name),
            ("key", self._key),
            ("time", self._time),
            ("file count", len(files)),
            ("rows", f"{sum(f.rows for f in files):,}"),
            ("window", f"{self._window:,}"),
        ]
        return _plan.html_table("streamkit FileLog", cells)


class FilePlan(PendingPlan[_Pending]):
    """The files of a :class:`FileLog` not consumed at a position, with their offsets.

    Made by :meth:`FileLog.plan`. The plan is fixed: files arriving after it was
    made belong to the next plan. Pending files are in path order, a file read
    in part at the start position first.

    :attr:`files` names each file by its ``path``. A :meth:`batch` lists each
    file it reads as ``[path, size, tag, mtime, rows, first row read, rows
    read]`` (the file's identity, then what of it the batch reads); its
    ``next`` is the smallest path still (partly) pending after it.

    Attributes
    ----------
    start : Position
        Where the plan starts (with ``files``).

    Examples
    --------
    >>> import fsspec
    >>> import streamkit as sk
    >>> fs = fsspec.filesystem("memory")
    >>> for name in ("a", "b", "c"):
    ...     fs.pipe(f"/streamkit-doc-fileplan/{name}.csv", b"k,t\\n1,1\\n2,2\\n")
    >>> plan = sk.FileLog("memory://streamkit-doc-fileplan", "*.csv", key="k", time="t").plan()
    >>> plan
    FilePlan(offsets [0, 6), 3 files, from Position(offset=0, watermark=None, consumed=[]))
    >>> plan.cut(0, 3)
    3
    >>> [f[0] for f in plan.batch(0, 3)["files"]]
    ['a.csv', 'b.csv']
    """

    def __init__(
        self,
        flog: FileLog,
        start: Position,
        pending: list[_Pending],
        schema: pl.Schema | None,
    ) -> None:
        super().__init__(flog, start, pending, BATCH_FILES)
        self._schema = schema
        # floor[i]: the smallest path among pending[i:] -- the watermark must
        # never pass a file this plan has yet to read
        floor: list[str | None] = [None] * (len(pending) + 1)
        for i in range(len(pending) - 1, -1, -1):
            path = pending[i].mark.path
            below = floor[i + 1]
            floor[i] = path if below is None or path < below else below
        self._floor = floor

    def _names(self, p: _Pending) -> tuple[Any, ...]:
        return (p.mark.path,)

    def _entry(self, p: _Pending, first: int, count: int) -> list[Any]:
        return [*p.mark.to_list(), p.rows, first, count]

    def _next(self, j: int, partial: bool) -> str | None:
        """The smallest path still (partly) pending after ``pending[:j]``."""
        floor = self._floor[j]
        if partial:
            cut_path = self._pending[j - 1].mark.path
            floor = cut_path if floor is None or cut_path < floor else floor
        return floor


# -------------------------------------------------------------------- helpers
def _as_position(start: Position | int | None) -> Position:
    if start is None:
        return Position(0)
    if isinstance(start, Position):
        return start
    return Position(_as_offset(start, 0, "start"))


def _cursor(
    consumed: dict[str, FileMark],
    watermark: str | None,
    since: int | None,
    partial: FileMark | None,
    partial_rows: int,
    window: int,
    floor: str | None,
) -> FileCursor:
    """A cursor listing at most ``window`` consumed files above its watermark.

    The watermark moves up over the smallest consumed paths, never to or past
    ``floor`` (the smallest path still pending), and ``since`` keeps the newest
    modification time among the files it passed.
    """
    names = sorted(consumed)
    excess = len(names) - window
    if excess > 0:
        drop = names[:excess]
        if floor is not None:
            drop = [n for n in drop if n < floor]
        for name in drop:
            mark = consumed.pop(name)
            watermark = name if watermark is None or name > watermark else watermark
            if mark.mtime is not None:
                since = mark.mtime if since is None else max(since, mark.mtime)
    return FileCursor(
        watermark=watermark,
        since=since,
        files=tuple(consumed[n] for n in sorted(consumed)),
        partial=partial,
        partial_rows=partial_rows if partial is not None else 0,
    )


def _mark(rel: str, size: int, etag: str | None, mtime: int | None) -> FileMark:
    """A file's identity: its ETag where the backend gives one, else its
    modification time (local disk: in nanoseconds)."""
    tag = etag if etag else ("" if mtime is None else str(mtime))
    return FileMark(rel, size, tag, mtime)


def _describe(mark: FileMark) -> str:
    """``120 bytes, ETag "9b2c..."`` or ``120 bytes, modified 2026-11-26T07:00:00+00:00``."""
    if mark.mtime is not None and mark.tag == str(mark.mtime):
        return f"{mark.size} bytes, modified {_show_ns(mark.mtime)}"
    if mark.tag:
        return f"{mark.size} bytes, ETag {mark.tag}"
    return f"{mark.size} bytes"


def _show_ns(ns: int | None) -> str:
    if ns is None:
        return "at an unknown time"
    return (_EPOCH + dt.timedelta(microseconds=ns // 1000)).isoformat()
