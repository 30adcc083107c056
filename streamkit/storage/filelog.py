"""Existing files on any fsspec store, read as a read-only log."""

from __future__ import annotations

import fnmatch
import html
import io
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from streamkit.errors import ConfigurationError, LogNotFoundError, SchemaError
from streamkit.storage._fs import FileSystem
from streamkit.storage._manifest import Segment
from streamkit.storage._reader import Piece, scan_pieces
from streamkit.storage.log import _as_offset, _check_schema, _key_ok, _segments_frame, _time_ok
from streamkit.storage.position import Position, Transaction

__all__ = ["FileLog"]

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


@dataclass(frozen=True, slots=True)
class _FileInfo:
    path: str
    rows: int
    bytes: int
    min_time: int
    max_time: int
    schema: pl.Schema


class FileLog:
    """Existing Parquet, Arrow IPC, CSV or NDJSON files read as a read-only log.

    Files matching ``pattern`` are taken in sorted name order; a file's rows get
    consecutive offsets after the previous file's, and within a file rows are
    ordered by ``(time, row)`` like a log append. Files are assumed immutable;
    new files must sort after existing ones (e.g. timestamped names).

    Parameters
    ----------
    url : str
        Folder holding the files (any fsspec URL or local path).
    pattern : str
        Glob for file names (``"*.parquet"``); with a ``/`` it is matched against
        paths relative to ``url`` (``"*/*.csv"``).
    key, time : str
        Key and time columns. A String time column is parsed as a datetime.
    storage_options : mapping, optional
        fsspec options for the backend.
    format : {"parquet", "ipc", "csv", "ndjson"}, optional
        File format; inferred from each file's extension by default.

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
    >>> flog.end()
    Position(offset=2)
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
    ) -> None:
        if format is not None and format not in set(_EXTENSIONS.values()):
            raise ConfigurationError(
                f"FileLog format must be one of parquet, ipc, csv, ndjson; found {format!r}"
            )
        if not key or not time or key == time:
            raise ConfigurationError(
                f"FileLog needs distinct key and time column names, found key={key!r}, "
                f"time={time!r}"
            )
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
        self._infos: dict[str, _FileInfo] = {}
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
    def schema(self) -> pl.Schema | None:
        """Schema of the files (None if no file matches)."""
        files = self._files()
        return files[0].schema if files else None

    # ---------------------------------------------------------------- files
    def _paths(self) -> list[str]:
        if "/" in self._pattern:
            found = self._fs.find("")
            return sorted(p for p in found if fnmatch.fnmatchcase(p, self._pattern))
        return [n for n in self._fs.ls("") if fnmatch.fnmatchcase(n, self._pattern)]

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

    def _read(self, path: str, schema: pl.Schema | None) -> tuple[pl.DataFrame, int]:
        data = self._fs.get(path)
        fmt = self._format_of(path)
        where = self._where(path)
        try:
            if fmt == "parquet":
                frame = pl.read_parquet(data)
            elif fmt == "ipc":
                frame = pl.read_ipc(data)
            elif fmt == "csv":
                frame = pl.read_csv(
                    io.BytesIO(data), try_parse_dates=True, schema=dict(schema) if schema else None
                )
            else:
                frame = pl.read_ndjson(io.BytesIO(data), schema=dict(schema) if schema else None)
        except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
            raise SchemaError(
                f"cannot read {where} as {fmt}: {type(exc).__name__}: {exc}"
            ) from None
        return self._normalize(frame, where, schema), len(data)

    def _normalize(self, frame: pl.DataFrame, where: str, schema: pl.Schema | None) -> pl.DataFrame:
        for role, col in (("key", self._key), ("time", self._time)):
            if col not in frame.columns:
                raise SchemaError(
                    f"{where}: expected a {role} column {col!r}, found columns {frame.columns}"
                )
        if frame.schema[self._time] == pl.String:
            try:
                frame = frame.with_columns(pl.col(self._time).str.to_datetime(time_unit="us"))
            except pl.exceptions.PolarsError as exc:
                raise SchemaError(
                    f"{where}: the time column {self._time!r} holds strings that do not "
                    f"parse as datetimes ({exc})"
                ) from None
        tdt = frame.schema[self._time]
        if not _time_ok(tdt):
            raise SchemaError(
                f"{where}: expected the time column {self._time!r} to be Datetime or an "
                f"integer type, found {tdt}"
            )
        if not _key_ok(frame.schema[self._key]):
            raise SchemaError(
                f"{where}: expected the key column {self._key!r} to be a scalar type, found "
                f"{frame.schema[self._key]}"
            )
        for role, col in (("key", self._key), ("time", self._time)):
            nulls = frame[col].null_count()
            if nulls:
                raise SchemaError(f"{where}: the {role} column {col!r} has {nulls} null(s)")
        if schema is not None:
            _check_schema(schema, frame.schema, where)
        if not frame[self._time].is_sorted():
            frame = frame.sort(self._time, maintain_order=True)
        return frame

    def _files(self) -> list[_FileInfo]:
        with self._lock:
            paths = self._paths()
            out: list[_FileInfo] = []
            schema: pl.Schema | None = None
            for path in paths:
                info = self._infos.get(path)
                if info is None:
                    frame, size = self._read(path, schema)
                    phys = frame[self._time].to_physical()
                    info = _FileInfo(
                        path,
                        frame.height,
                        size,
                        int(phys.min()) if frame.height else 0,  # type: ignore[arg-type]
                        int(phys.max()) if frame.height else 0,  # type: ignore[arg-type]
                        frame.schema,
                    )
                    self._infos[path] = info
                if schema is None:
                    schema = info.schema
                elif info.schema != schema:
                    _check_schema(schema, info.schema, self._where(path))
                out.append(info)
            return out

    # ---------------------------------------------------------------- reading
    def segments(self) -> pl.DataFrame:
        """One row per file, in name (= offset) order; same columns as ``Log.segments``.

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
                    path=info.path,
                    partition=0,
                    seq=i,
                    offset=offset,
                    rows=info.rows,
                    min_time=info.min_time,
                    max_time=info.max_time,
                    bytes=info.bytes,
                    crc32=0,
                    version=0,
                )
            )
            offset += info.rows
        tdt = files[0].schema[self._time] if files else pl.Int64()
        return _segments_frame(segs, tdt).drop("crc32")

    def end(self) -> Position:
        """Position just past the last row of the last file.

        Examples
        --------
        >>> import streamkit as sk
        >>> sk.FileLog("memory://streamkit-doc-fl-empty", key="k", time="t").end()
        Position(offset=0)
        """
        return Position(sum(info.rows for info in self._files()))

    def start(self) -> Position:
        """Always ``Position(0)``: files are never truncated.

        Examples
        --------
        >>> import streamkit as sk
        >>> sk.FileLog("memory://streamkit-doc-fl-start", key="k", time="t").start()
        Position(offset=0)
        """
        return Position(0)

    def count(self) -> int:
        """Number of rows over all matching files.

        Examples
        --------
        >>> import streamkit as sk
        >>> sk.FileLog("memory://streamkit-doc-fl-count", key="k", time="t").count()
        0
        """
        return self.end().offset

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
        files = self._files()
        total = sum(info.rows for info in files)
        lo = _as_offset(start, 0, "start")
        hi = _as_offset(end, total, "end")
        schema = files[0].schema if files else pl.Schema({})
        pieces = []
        offset = 0
        for info in files:
            pieces.append(Piece(offset, info.rows, self._loader(info.path, schema)))
            offset += info.rows
        return scan_pieces(
            pieces, schema, start=lo, end=hi, with_offset=with_offset, label=f"files {self.name}"
        )

    def _loader(self, path: str, schema: pl.Schema) -> Any:
        def load(columns: list[str]) -> pl.DataFrame:
            try:
                frame, _ = self._read(path, schema)
            except LogNotFoundError:
                raise LogNotFoundError(
                    f"{self._where(path)} disappeared while it was being read"
                ) from None
            return frame.select(columns)

        return load

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
        raise ConfigurationError(
            f"FileLog {self.name!r} is read-only; append to a log from "
            "sk.Store(...).log(name, key=..., time=...) instead"
        )

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
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
            f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in cells
        )
        return f"<table><caption>streamkit FileLog</caption>{body}</table>"
