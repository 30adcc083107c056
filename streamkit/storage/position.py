"""Read positions, append results and writer transactions of a log.

A position on a :class:`~streamkit.Log` is an offset. A position on a
:class:`~streamkit.FileLog` is an offset plus a :class:`FileCursor`: which files
were consumed, by identity, so that files arriving out of name order, deleted or
rewritten are never silently skipped or read twice (see ``docs/design.md``,
"FileLog positions").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AppendResult", "FileCursor", "FileMark", "Position", "SegmentRef", "Transaction"]


@dataclass(frozen=True, slots=True)
class FileMark:
    """The identity of one file: path, size and a change tag.

    Parameters
    ----------
    path : str
        Path relative to the FileLog's folder (``dt=2026-11-26/hour=07/a.parquet``).
    size : int
        Size in bytes.
    tag : str
        What changes when the file is rewritten: the ETag where the backend gives
        one (S3, GCS, Azure), else the modification time in nanoseconds.
    mtime : int or None
        Modification time in nanoseconds since the epoch (None if the backend
        offers none).

    Examples
    --------
    >>> m = FileMark("a.parquet", 120, "9b2cf535f27731c974343645a3985328", 1_700_000_000 * 10**9)
    >>> FileMark.from_list(m.to_list()) == m
    True
    >>> m.same_file(FileMark("a.parquet", 120, "9b2cf535f27731c974343645a3985328", None))
    True
    """

    path: str
    size: int
    tag: str
    mtime: int | None = None

    def same_file(self, other: FileMark) -> bool:
        """Same path, size and tag (the modification time alone may differ).

        Examples
        --------
        >>> FileMark("a", 1, "x").same_file(FileMark("a", 2, "x"))
        False
        """
        return self.path == other.path and self.size == other.size and self.tag == other.tag

    def to_list(self) -> list[Any]:
        """``[path, size, tag, mtime]``, the compact JSON form.

        Examples
        --------
        >>> FileMark("a", 1, "x", 5).to_list()
        ['a', 1, 'x', 5]
        """
        return [self.path, self.size, self.tag, self.mtime]

    @classmethod
    def from_list(cls, item: Any) -> FileMark:
        """Rebuild a mark from :meth:`to_list` output.

        Examples
        --------
        >>> FileMark.from_list(["a", 1, "x", None])
        FileMark(path='a', size=1, tag='x', mtime=None)
        """
        if not isinstance(item, list | tuple) or len(item) != 4:
            raise ValueError(f"expected a file mark [path, size, tag, mtime], found {item!r}")
        path, size, tag, mtime = item
        return cls(str(path), int(size), str(tag), None if mtime is None else int(mtime))


@dataclass(frozen=True, slots=True)
class FileCursor:
    """Which files of a :class:`~streamkit.FileLog` a position has consumed.

    Compact by design: a *watermark* path plus the consumed files that sort above
    it, at most ``FileLog(window=...)`` of them, so it does not grow with the
    files ever seen.

    A listed file counts as consumed when

    - it is in ``files`` with the same identity (a different size or tag is an
      error naming it: a consumed file must not change), or
    - its path sorts at or below ``watermark`` and its modification time is not
      newer than ``since``, the newest modification time among the files the
      watermark passed. A file below the watermark that is newer than that
      (a file that arrived more than ``window`` files late, or a consumed file
      rewritten after it was forgotten) is an error naming it, never skipped.

    ``partial`` is a file of which the first ``partial_rows`` rows were consumed
    (a micro-batch ended inside it); it is read on from there.

    Attributes
    ----------
    watermark : str or None
        Files whose paths sort at or below it are consumed (see above).
    since : int or None
        Newest modification time (ns) among the files the watermark passed.
    files : tuple of FileMark
        Consumed files above the watermark, in path order.
    partial : FileMark or None
        A file consumed in part.
    partial_rows : int
        Rows of ``partial`` consumed.

    Examples
    --------
    >>> c = FileCursor("b.csv", 5, (FileMark("d.csv", 10, "7", 7),))
    >>> FileCursor.from_dict(c.to_dict()) == c
    True
    >>> c.to_dict()
    {'watermark': 'b.csv', 'since': 5, 'files': [['d.csv', 10, '7', 7]]}
    """

    watermark: str | None = None
    since: int | None = None
    files: tuple[FileMark, ...] = ()
    partial: FileMark | None = None
    partial_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The cursor as a JSON-able dict (``partial`` only when there is one).

        Examples
        --------
        >>> FileCursor().to_dict()
        {'watermark': None, 'since': None, 'files': []}
        """
        out: dict[str, Any] = {
            "watermark": self.watermark,
            "since": self.since,
            "files": [m.to_list() for m in self.files],
        }
        if self.partial is not None:
            out["partial"] = self.partial.to_list()
            out["partial_rows"] = self.partial_rows
        return out

    @classmethod
    def from_dict(cls, data: Any) -> FileCursor:
        """Rebuild a cursor from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``data`` is not a cursor.

        Examples
        --------
        >>> FileCursor.from_dict({"watermark": None, "since": None, "files": []})
        FileCursor(watermark=None, since=None, files=(), partial=None, partial_rows=0)
        """
        try:
            partial = data.get("partial")
            since = data.get("since")
            watermark = data.get("watermark")
            return cls(
                watermark=None if watermark is None else str(watermark),
                since=None if since is None else int(since),
                files=tuple(
                    sorted((FileMark.from_list(f) for f in data["files"]), key=lambda m: m.path)
                ),
                partial=None if partial is None else FileMark.from_list(partial),
                partial_rows=int(data.get("partial_rows", 0)),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"expected a FileLog cursor, found {data!r}: {exc}") from None


@dataclass(frozen=True, order=True, slots=True, repr=False)
class Position:
    """A read position on a log: the offset of the next event to read.

    Positions are ordered and hashable by offset; ``log.scan(start=pos)`` returns
    the events with ``offset >= pos.offset`` and ``log.end()`` is the position
    just past the last committed event.

    On a :class:`~streamkit.FileLog` a position also carries ``files``, a
    :class:`FileCursor` naming the files consumed up to ``offset``; there
    ``flog.scan(start=pos)`` returns the rows of the files not consumed at
    ``pos``, with offsets from ``pos.offset`` on.

    Parameters
    ----------
    offset : int
        Global offset of the next event (``>= 0``).
    files : FileCursor, optional
        The consumed files (FileLog positions only). Not compared.

    Examples
    --------
    >>> p = Position(42)
    >>> Position.from_json(p.to_json()) == p
    True
    >>> Position(1) < Position(2)
    True
    >>> p.to_dict()
    {'offset': 42}
    >>> Position.from_dict(Position(3, files=FileCursor()).to_dict()).files
    FileCursor(watermark=None, since=None, files=(), partial=None, partial_rows=0)
    """

    offset: int
    files: FileCursor | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.offset, bool) or not isinstance(self.offset, int):
            raise TypeError(
                f"Position offset must be an int, found {type(self.offset).__name__} "
                f"{self.offset!r}"
            )
        if self.offset < 0:
            raise ValueError(f"Position offset must be >= 0, found {self.offset}")
        if self.files is not None and not isinstance(self.files, FileCursor):
            raise TypeError(f"Position files must be a FileCursor, found {self.files!r}")

    def __repr__(self) -> str:
        if self.files is None:
            return f"Position(offset={self.offset})"
        c = self.files
        names = [m.path for m in c.files]
        consumed = repr(names) if len(names) <= 3 else f"[{len(names)} files]"
        part = f", partial={c.partial.path!r}@{c.partial_rows}" if c.partial else ""
        return (
            f"Position(offset={self.offset}, watermark={c.watermark!r}, consumed={consumed}{part})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The position as a JSON-able dict.

        Examples
        --------
        >>> Position(3).to_dict()
        {'offset': 3}
        """
        if self.files is None:
            return {"offset": self.offset}
        return {"offset": self.offset, "files": self.files.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Position:
        """Rebuild a position from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``data`` has no integer ``offset`` or a malformed ``files``.

        Examples
        --------
        >>> Position.from_dict({"offset": 3})
        Position(offset=3)
        """
        if not isinstance(data, dict) or "offset" not in data:
            raise ValueError(f"expected a dict like {{'offset': 3}}, found {data!r}")
        files = data.get("files")
        return cls(data["offset"], None if files is None else FileCursor.from_dict(files))

    def to_json(self) -> str:
        """The position as a JSON string.

        Examples
        --------
        >>> Position(7).to_json()
        '{"offset": 7}'
        """
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Position:
        """Rebuild a position from :meth:`to_json` output.

        Examples
        --------
        >>> Position.from_json('{"offset": 7}')
        Position(offset=7)
        """
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f'expected JSON like {{"offset": 7}}, found {text!r}') from exc
        return cls.from_dict(data)


@dataclass(frozen=True, slots=True)
class Transaction:
    """The last append a writer committed to a log (see ``Log.transaction``).

    Attributes
    ----------
    writer : str
        The writer id given to ``Log.append``.
    seq : int
        The writer's sequence number of that append.
    meta : dict
        The JSON-able ``meta`` given with it.
    version : int
        The log version that committed it.

    Examples
    --------
    >>> Transaction("w", 3, {"batch": [0, 10]}, 5).seq
    3
    """

    writer: str
    seq: int
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = 0


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What ``Log.append`` committed.

    Attributes
    ----------
    version : int
        The log version that made the rows visible (for a duplicate: the version
        that committed the original append).
    rows : int
        Rows committed (0 for a duplicate).
    start, end : Position
        Offsets of the committed rows: ``[start.offset, end.offset)``.
    duplicate : bool
        True if the ``(writer, seq)`` was committed before and nothing was written.
    segments : int
        Segment files committed.

    Examples
    --------
    >>> AppendResult(3, 10, Position(0), Position(10), False, 1)
    AppendResult(version=3, rows=10, offsets=[0, 10), segments=1)
    """

    version: int
    rows: int
    start: Position
    end: Position
    duplicate: bool = False
    segments: int = 0

    def __repr__(self) -> str:
        dup = ", duplicate" if self.duplicate else ""
        return (
            f"AppendResult(version={self.version}, rows={self.rows}, "
            f"offsets=[{self.start.offset}, {self.end.offset}), "
            f"segments={self.segments}{dup})"
        )


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """A segment file written to a log but not committed yet (see ``Log.write_segments``).

    What a process that wrote segments (a worker) hands to the one that commits
    them (``Log.commit_segments``): everything the commit records, so the
    committer never reads the data. Plain JSON through :meth:`to_dict` and
    :meth:`from_dict`; it holds no credentials.

    Attributes
    ----------
    log : str
        URL of the log the file belongs to (``Log.url``, no credentials).
    created : int
        When that log was created (ms since the epoch): tells a log from one
        deleted and created again at the same URL.
    path : str
        The file, relative to the log's folder (``data/p=000/<ms>-<uuid>.parquet``).
    partition : int
        The partition its rows were routed to.
    rows : int
        Number of rows.
    bytes : int
        File size.
    crc32 : int
        CRC-32 of the file's bytes (checked by every reader).
    min_time, max_time : int
        Smallest and largest time of its rows (physical value: an int, or a
        Datetime in its time unit).
    schema : str
        The rows' column names and types (Arrow IPC schema, base64).
    stats : str or None
        The Delta ``stats`` of the file (row count, per-column bounds and null
        counts, computed from its rows when written); None: only its row count
        is recorded.

    Examples
    --------
    >>> ref = SegmentRef("memory://s/l", 1, "data/p=000/1-ab.parquet", 0, 3, 512, 7, 1, 9, "...")
    >>> SegmentRef.from_dict(ref.to_dict()) == ref
    True
    >>> ref
    SegmentRef(log='memory://s/l', path='data/p=000/1-ab.parquet', rows=3, bytes=512, time=[1, 9])
    """

    log: str
    created: int
    path: str
    partition: int
    rows: int
    bytes: int
    crc32: int
    min_time: int
    max_time: int
    schema: str
    stats: str | None = None

    def __repr__(self) -> str:
        return (
            f"SegmentRef(log={self.log!r}, path={self.path!r}, rows={self.rows}, "
            f"bytes={self.bytes}, time=[{self.min_time}, {self.max_time}])"
        )

    def to_dict(self) -> dict[str, Any]:
        """The reference as a JSON-able dict.

        Examples
        --------
        >>> ref = SegmentRef("memory://s/l", 1, "data/p=000/1-ab.parquet", 0, 3, 512, 7, 1, 9, "S")
        >>> ref.to_dict()["rows"], ref.to_dict()["path"]
        (3, 'data/p=000/1-ab.parquet')
        """
        return {
            "log": self.log,
            "created": self.created,
            "path": self.path,
            "partition": self.partition,
            "rows": self.rows,
            "bytes": self.bytes,
            "crc32": self.crc32,
            "min_time": self.min_time,
            "max_time": self.max_time,
            "schema": self.schema,
            "stats": self.stats,
        }

    @classmethod
    def from_dict(cls, data: Any) -> SegmentRef:
        """Rebuild a reference from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``data`` lacks a field or holds one of the wrong type.

        Examples
        --------
        >>> SegmentRef.from_dict({"log": "memory://s/l"})
        Traceback (most recent call last):
        ...
        ValueError: expected a segment reference (SegmentRef.to_dict()), found ...
        """
        ints = ("created", "partition", "rows", "bytes", "crc32", "min_time", "max_time")
        strs = ("log", "path", "schema")
        fields = {*ints, *strs}
        ok = isinstance(data, dict) and set(data) - {"stats"} == fields
        if ok:
            ok = (
                all(isinstance(data[n], str) for n in strs)
                and all(isinstance(data[n], int) and not isinstance(data[n], bool) for n in ints)
                and isinstance(data.get("stats"), str | None)
            )
        if not ok:
            raise ValueError(
                "expected a segment reference (SegmentRef.to_dict()), found "
                f"{data!r:.300}; fields {sorted(fields)} (str: {list(strs)}, the others int) "
                "and an optional 'stats' (str or None)"
            )
        return cls(**{n: data[n] for n in sorted(fields)}, stats=data.get("stats"))
