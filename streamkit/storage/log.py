"""The append-only, time-ordered event log and its commit protocol.

A log lives under ``<store root>/<name>/`` and is a Delta Lake table::

    _delta_log/00000000000000000000.json              version 0: protocol, metaData
    _delta_log/000000000000000000NN.json              one commit per version
    _delta_log/000000000000000000NN.checkpoint.parquet  Delta checkpoint every 32 versions
    _delta_log/_last_checkpoint                       Delta's hint (advisory)
    _streamkit/000000000000000000NN.snapshot.json     streamkit's full state, same versions
    _streamkit/_last_snapshot.json                    advisory hint, verified on use
    data/p=PPP/<ms>-<uuid>.parquet                    immutable segments (zstd level 1)

A version becomes visible by creating its commit with the create-if-absent
primitive of :class:`~streamkit.storage._fs.FileSystem`; the writer that loses a
race re-reads the log and retries with the next number. Segment files are written
first and are invisible until a version references them, so a reader never sees a
partial append and a crash leaves only unreferenced files (removed by
:meth:`Log.vacuum`). What each commit holds is in
:mod:`streamkit.storage._manifest`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import io
import json
import logging
import random
import re
import threading
import time as _time
import uuid
from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from streamkit.errors import (
    ConfigurationError,
    CorruptFileError,
    LogNotFoundError,
    OutcomeUnknownError,
    SchemaError,
    StorageError,
)
from streamkit.storage import _delta, _reader
from streamkit.storage import _manifest as mf
from streamkit.storage._fs import FileSystem, verify
from streamkit.storage._hash import partition_of
from streamkit.storage._reader import Piece, read_parquet_checked, scan_pieces
from streamkit.storage.position import AppendResult, Position, SegmentRef, Transaction

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Log"]

_logger = logging.getLogger(__name__)

#: Default number of partitions of a new log.
DEFAULT_PARTITIONS = 1
MAX_PARTITIONS = 1024
_PROBE_FIRST = 1
_PROBE_MAX = 256
_COMMIT_ATTEMPTS = 10_000
#: The name of a segment file below its partition folder: ``<ms>-<uuid hex>.parquet``.
_SEGMENT_NAME = re.compile(r"[0-9]+-[0-9a-f]{32}\.parquet")
#: commit_segments checks up to this many files one by one (a request each),
#: more by listing their partition folders (a request per 1,000 files there).
_LIST_FROM = 64

TimeBound = Position | int | dt.datetime | dt.date | None


def _fmt_path(fs: FileSystem, rel: str) -> str:
    base = fs.url.rstrip("/")
    return f"{base}/{rel}"


def to_polars(data: Any, where: str) -> pl.DataFrame:
    """Convert a polars/pyarrow/pandas frame into a polars DataFrame."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pl.LazyFrame):
        return data.collect()
    if isinstance(data, pa.Table | pa.RecordBatch):
        frame = pl.from_arrow(data)
        assert isinstance(frame, pl.DataFrame)
        return frame
    module = type(data).__module__
    if module.startswith("pandas"):
        converted = pl.from_pandas(data)
        if isinstance(converted, pl.DataFrame):
            return converted
    raise TypeError(
        f"{where}: expected a polars DataFrame/LazyFrame, a pyarrow Table or a pandas "
        f"DataFrame, found {type(data).__name__}"
    )


schema_to_b64 = mf.schema_to_b64
schema_from_b64 = mf.schema_from_b64


def _time_ok(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.Datetime) or dtype.is_integer()


def _key_ok(dtype: pl.DataType) -> bool:
    return not (dtype.is_nested() or dtype in (pl.Null, pl.Object))


class Log:
    """An append-only, time-ordered event log of Parquet segments on a store.

    Obtain one from :meth:`streamkit.Store.log`. Each committed row has a global
    offset; within a key, offsets follow ``(time, append order)``.

    Examples
    --------
    >>> import polars as pl
    >>> import streamkit as sk
    >>> log = sk.Store("memory://streamkit-doc-log").log("clicks", key="user", time="ts")
    >>> log.append(pl.DataFrame({"user": ["a", "b", "a"], "ts": [3, 1, 2]}))
    AppendResult(version=1, rows=3, offsets=[0, 3), segments=1)
    >>> log.scan(with_offset="offset").collect().rows()
    [('b', 1, 0), ('a', 2, 1), ('a', 3, 2)]
    >>> log.end()
    Position(offset=3)
    """

    def __init__(self, fs: FileSystem, name: str, state: mf.LogState) -> None:
        self._fs = fs
        self._name = name
        self._state = state
        self._lock = threading.RLock()
        self._schema_cache: tuple[str, pl.Schema] | None = None

    # ---------------------------------------------------------------- opening
    @classmethod
    def _open(
        cls,
        fs: FileSystem,
        name: str,
        *,
        key: str | None = None,
        time: str | None = None,
        partitions: int | None = None,
    ) -> Log:
        """Open the log rooted at ``fs`` or create it when key and time are given."""
        state = _load_state(fs, name)
        if state is None:
            if key is None or time is None:
                raise LogNotFoundError(
                    f"log {name!r} does not exist in {fs.url}; create it with "
                    f"store.log({name!r}, key=..., time=...)"
                )
            _check_create_args(name, key, time, partitions)
            parts = DEFAULT_PARTITIONS if partitions is None else partitions
            body = mf.create_body(key, time, parts)
            fs.put_new(mf.version_path(0), mf.encode_version(None, body, 0))
            state = _load_state(fs, name)
            if state is None:  # pragma: no cover - only if the store lost the write
                raise StorageError(f"created log {name!r} in {fs.url} but cannot read it back")
        log = cls(fs, name, state)
        log._check_reopen(key, time, partitions)
        return log

    def _check_reopen(self, key: str | None, time: str | None, partitions: int | None) -> None:
        st = self._state
        given = {"key": key, "time": time, "partitions": partitions}
        actual = {"key": st.key, "time": st.time, "partitions": st.partitions}
        wrong = [n for n, v in given.items() if v is not None and v != actual[n]]
        if wrong:
            found = ", ".join(f"{n}={given[n]!r}" for n in wrong)
            expected = ", ".join(f"{n}={actual[n]!r}" for n in wrong)
            raise SchemaError(
                f"log {self._name!r} in {self._fs.url} was created with {expected}, but was "
                f"reopened with {found}; open it with store.log({self._name!r}) or use "
                "another name"
            )

    # ---------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        """The log's name in its store."""
        return self._name

    @property
    def key(self) -> str:
        """Name of the key column."""
        return self._state.key

    @property
    def time(self) -> str:
        """Name of the time column."""
        return self._state.time

    @property
    def partitions(self) -> int:
        """Number of partitions rows are routed to by a stable hash of the key."""
        return self._state.partitions

    @property
    def url(self) -> str:
        """Where the log lives (no credentials)."""
        return self._fs.url

    @property
    def filesystem(self) -> FileSystem:
        """The file system rooted at the log's directory."""
        return self._fs

    @property
    def schema(self) -> pl.Schema | None:
        """Column names and types, or None before the first append.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-schema").log("l", key="k", time="t")
        >>> log.schema is None
        True
        >>> _ = log.append(pl.DataFrame({"k": [1], "t": [2]}))
        >>> log.schema
        Schema([('k', Int64), ('t', Int64)])
        """
        return self._schema_of(self._refresh())

    def _schema_of(self, state: mf.LogState) -> pl.Schema | None:
        if state.schema is None:
            return None
        cached = self._schema_cache
        if cached is not None and cached[0] == state.schema:
            return cached[1]
        schema = schema_from_b64(state.schema, _fmt_path(self._fs, mf.version_path(0)))
        self._schema_cache = (state.schema, schema)
        return schema

    @property
    def version(self) -> int:
        """The latest committed version number."""
        return self._refresh().version

    # ---------------------------------------------------------------- state
    def _refresh(self) -> mf.LogState:
        """Bring the cached state up to the latest committed version."""
        with self._lock:
            self._state = _advance(self._fs, self._state, self._state.version + 1, _PROBE_FIRST)
            return self._state

    # ---------------------------------------------------------------- reading
    def end(self) -> Position:
        """The position just past the last committed event.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-end").log("l", key="k", time="t")
        >>> log.end()
        Position(offset=0)
        """
        return Position(self._refresh().next_offset)

    def start(self) -> Position:
        """The offset of the first live event (``end()`` if the log is empty).

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-start").log("l", key="k", time="t")
        >>> _ = log.append(pl.DataFrame({"k": [1, 2], "t": [1, 2]}))
        >>> log.start()
        Position(offset=0)
        """
        state = self._refresh()
        if not state.segments:
            return Position(state.next_offset)
        return Position(min(seg.offset for seg in state.segments.values()))

    def count(self) -> int:
        """Number of live committed events.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-count").log("l", key="k", time="t")
        >>> _ = log.append(pl.DataFrame({"k": [1, 2], "t": [1, 2]}))
        >>> log.count()
        2
        """
        return sum(seg.rows for seg in self._refresh().segments.values())

    def transaction(self, writer: str) -> Transaction | None:
        """The last append committed by ``writer`` (its ``seq`` and ``meta``), if any.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-txn").log("l", key="k", time="t")
        >>> _ = log.append(pl.DataFrame({"k": [1], "t": [1]}), writer="w", seq=4, meta={"b": 1})
        >>> log.transaction("w")
        Transaction(writer='w', seq=4, meta={'b': 1}, version=1)
        >>> log.transaction("other") is None
        True
        """
        txn = self._refresh().txns.get(writer)
        if txn is None:
            return None
        return Transaction(writer, int(txn["seq"]), dict(txn["meta"]), int(txn["version"]))

    def writer_history(self, writer: str) -> dict[int, dict[str, Any]]:
        """``seq -> meta`` of every append ``writer`` committed, read from the commits.

        :meth:`transaction` returns only a writer's last append; this returns all
        of them, including appends that were later retracted (:meth:`retract`) or
        whose segments were truncated: the commits are the record of what
        was committed, and are never deleted. Reads every commit once, so
        its cost grows with the log's history.

        Parameters
        ----------
        writer : str
            The ``writer`` the appends were made with.

        Returns
        -------
        dict of int to dict
            The ``meta`` of each append by its ``seq`` (an empty dict when the
            append had none); empty if ``writer`` never committed to the log.

        Raises
        ------
        CorruptFileError
            If a commit is damaged (named in the message).

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-history").log("l", key="k", time="t")
        >>> for s in range(3):
        ...     _ = log.append(pl.DataFrame({"k": [s], "t": [s]}), writer="w", seq=s, meta={"b": s})
        >>> _ = log.retract("w", [(2, 2)])
        >>> log.writer_history("w")
        {0: {'b': 0}, 1: {'b': 1}, 2: {'b': 2}}
        >>> log.writer_history("nobody")
        {}
        """
        fs = self._fs
        names = [n for n in fs.ls(mf.LOG_DIR) if _is_version_file(n)]
        out: dict[int, dict[str, Any]] = {}
        for path, data in fs.get_many([f"{mf.LOG_DIR}/{n}" for n in names]).items():
            txn = mf.commit_txn(data, _fmt_path(fs, path))
            if isinstance(txn, dict) and txn.get("writer") == writer:
                meta = txn.get("meta")
                out[int(txn["seq"])] = meta if isinstance(meta, dict) else {}
        return dict(sorted(out.items()))

    def check_manifest(self) -> int:
        """Read and check every manifest file of the log: commits, snapshots, hints.

        Each commit (``_delta_log/<version>.json``) and each of streamkit's
        snapshots must parse and match its checksum; each Delta checkpoint must
        parse and hold exactly the files and transactions of the state at its
        version; the hints must parse. Segment files are not read here
        (:meth:`scan` checks their sizes and checksums as it reads them).

        Returns
        -------
        int
            The number of manifest files checked.

        Raises
        ------
        CorruptFileError
            Naming the first damaged file and what to do about it: commits are
            the record of what is committed (restore them from a backup);
            snapshots, checkpoints and hints are redundant copies the log
            already reads around (delete them; streamkit writes new ones).

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-check").log("l", key="k", time="t")
        >>> _ = log.append(pl.DataFrame({"k": [1], "t": [1]}))
        >>> log.check_manifest()  # version 0 (the creation) and version 1
        2
        >>> log.filesystem.put(f"_delta_log/{1:020d}.json", b"{")
        >>> log.check_manifest()
        Traceback (most recent call last):
        ...
        streamkit.errors.CorruptFileError: corrupt Delta commit .../00000000000000000001.json ...
        """
        fs = self._fs
        commits = sorted(f"{mf.LOG_DIR}/{n}" for n in fs.ls(mf.LOG_DIR) if _is_version_file(n))
        redundant = [f"{mf.SK_DIR}/{n}" for n in fs.ls(mf.SK_DIR) if n.endswith(".json")]
        redundant += [
            f"{mf.LOG_DIR}/{n}"
            for n in fs.ls(mf.LOG_DIR)
            if n.endswith(".checkpoint.parquet") or n == mf.CHECKPOINT_HINT.rsplit("/", 1)[-1]
        ]
        got = fs.get_many(commits, missing_ok=True)
        names = [p.rsplit("/", 1)[-1] for p in redundant]
        wanted = {int(n[:20]) for n in names if n[:20].isdigit()}
        # A light replay (live paths, transactions, next offset): linear in the commits.
        states: dict[int, _Summary] = {}
        live: set[str] = set()
        txns: dict[str, int] = {}
        end = 0
        for path in commits:
            if path not in got:
                continue
            for action in mf.decode_checked(got[path], _fmt_path(fs, path)):
                ((kind, body),) = action.items()
                if kind == "add":
                    live.add(_delta.data_path(body))
                elif kind == "remove":
                    live.discard(_delta.data_path(body))
                elif kind == "txn":
                    txns[str(body["appId"])] = int(body["version"])
                elif kind == "commitInfo":
                    end = max(end, int((body.get("streamkit") or {}).get("next_offset", 0)))
            version = int(path.rsplit("/", 1)[-1][:20])
            if version in wanted:
                states[version] = _Summary(frozenset(live), dict(txns), end)
        for path, data in fs.get_many(redundant, missing_ok=True).items():
            where = _fmt_path(fs, path)
            try:
                _check_redundant(fs, path, data, where, states)
            except CorruptFileError as exc:
                raise CorruptFileError(
                    f"{exc}. It is a redundant copy that the log already reads around "
                    "(slower to open); delete the file to clear this, streamkit writes a "
                    "new one with a later version"
                ) from None
        return len(got) + len(redundant)

    def segments(self) -> pl.DataFrame:
        """One row per live committed segment, in offset order.

        Columns: ``partition``, ``seq`` (segment number, increasing with commit
        order), ``offset``, ``rows``, ``min_time``, ``max_time`` (in the time
        column's type), ``bytes``, ``crc32``, ``version``, ``path``, ``writer``,
        ``writer_seq``.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-segs").log("l", key="k", time="t")
        >>> _ = log.append(pl.DataFrame({"k": [1, 2], "t": [5, 7]}))
        >>> log.segments().select("offset", "rows", "min_time", "max_time").rows()
        [(0, 2, 5, 7)]
        """
        state = self._refresh()
        return _segments_frame(state.live(), self._time_dtype(state))

    def _time_dtype(self, state: mf.LogState) -> pl.DataType:
        schema = self._schema_of(state)
        if schema is None or state.time not in schema:
            return pl.Int64()
        return schema[state.time]

    def _piece(self, seg: mf.Segment) -> Piece:
        fs = self._fs

        def load(columns: list[str]) -> pl.DataFrame:
            try:
                data = fs.get(seg.path)
            except LogNotFoundError:
                raise CorruptFileError(
                    f"missing file {_fmt_path(fs, seg.path)}: committed by version "
                    f"{seg.version} but no longer in the store; restore it or remove it "
                    "with log.truncate(...)"
                ) from None
            where = _fmt_path(fs, seg.path)
            verify(where, data, seg.bytes, seg.crc32)
            return read_parquet_checked(data, columns, where=where, rows=seg.rows)

        return Piece(seg.offset, seg.rows, load)

    def scan(
        self,
        start: Position | int | None = None,
        end: Position | int | None = None,
        *,
        with_offset: str | None = None,
        partitions: Collection[int] | None = None,
    ) -> pl.LazyFrame:
        """A LazyFrame of the committed events with offsets in ``[start, end)``.

        Rows come in offset order with the appended columns. The scan sees the
        versions committed when it was called.

        Parameters
        ----------
        start, end : Position or int, optional
            Offset range; by default the whole log.
        with_offset : str, optional
            Add an Int64 column with this name holding each row's global offset.
        partitions : collection of int, optional
            Read only the segments of these partitions (a reader that holds some
            keys: partition ``p`` holds the keys with ``partition_of(key) == p``).

        Returns
        -------
        pl.LazyFrame

        Raises
        ------
        CorruptFileError
            When collected, if a segment's size or checksum is not what its
            commit recorded.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-scan").log("l", key="k", time="t")
        >>> _ = log.append(pl.DataFrame({"k": [1, 2, 3], "t": [1, 2, 3]}))
        >>> log.scan(start=sk.Position(1), with_offset="o").collect().rows()
        [(2, 2, 1), (3, 3, 2)]
        """
        state = self._refresh()
        lo = _as_offset(start, 0, "start")
        hi = _as_offset(end, state.next_offset, "end")
        schema = self._schema_of(state)
        if schema is None:
            schema = pl.Schema({})
        pieces = [
            self._piece(seg)
            for seg in state.live()
            if partitions is None or seg.partition in partitions
        ]
        return scan_pieces(
            pieces, schema, start=lo, end=hi, with_offset=with_offset, label=f"log {self._name}"
        )

    # ---------------------------------------------------------------- writing
    def append(
        self,
        df: Any,
        *,
        writer: str | None = None,
        seq: int | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """Append rows, all or nothing.

        Rows are routed to partitions by a stable hash of the key, sorted by
        ``(time, input order)`` within each partition, written as one Parquet
        segment per partition and committed as one new version.

        Parameters
        ----------
        df : polars/pyarrow/pandas frame
            Must hold the key and time columns without nulls; once the log has a
            schema, exactly its columns and types.
        writer, seq : str and int, optional
            Make the append idempotent: if ``writer`` already committed a ``seq``
            at least this large, nothing is written and the result is marked
            ``duplicate``.
        meta : dict, optional
            JSON-able data stored with the transaction (see :meth:`transaction`).

        Returns
        -------
        AppendResult

        Raises
        ------
        SchemaError
            For missing key/time columns, nulls in them, a time column that is not
            Datetime or integer, or columns that differ from the log's schema.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-append").log("l", key="k", time="t")
        >>> df = pl.DataFrame({"k": [1, 2], "t": [10, 20]})
        >>> log.append(df, writer="job", seq=1).rows
        2
        >>> log.append(df, writer="job", seq=1).duplicate
        True
        """
        where = f"append to log {self._name!r} ({self._fs.url})"
        frame = to_polars(df, where)
        meta_dict = _txn_args(writer, seq, meta, where)

        state = self._refresh()
        self._validate(frame, state, where)
        dup = _duplicate(state, writer, seq)
        if dup is not None:
            return dup
        if frame.height == 0 and writer is None:
            pos = Position(state.next_offset)
            return AppendResult(state.version, 0, pos, pos, False, 0)
        schema_b64 = schema_to_b64(frame.schema, where)

        written = self._write_segments(frame, state, schema_b64)
        return self._commit_append(
            frame,
            written=written,
            schema_b64=schema_b64,
            writer=writer,
            seq=seq,
            meta=meta_dict,
            where=where,
        )

    def write_segments(self, df: Any) -> list[SegmentRef]:
        """Write rows as segment files, committed later by :meth:`commit_segments`.

        The files are written exactly as :meth:`append` writes them (rows routed to
        partitions by key, sorted by ``(time, input order)`` within each, the same
        size bounds, names and checksums), but no version references them yet:
        no reader sees them. Any process that opens the log from its URL and
        storage options can call this (a worker), and hand the references to the
        one process that commits (a driver), which never reads the data.
        Files that are never committed are removed by :meth:`vacuum`.

        Parameters
        ----------
        df : polars/pyarrow/pandas frame
            Must hold the key and time columns without nulls; once the log has a
            schema, exactly its columns and types.

        Returns
        -------
        list of SegmentRef
            One per file written (none for an empty frame), JSON-able with
            :meth:`SegmentRef.to_dict`.

        Raises
        ------
        SchemaError
            As :meth:`append` does.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> url = "memory://streamkit-doc-write-segments"
        >>> driver = sk.Store(url).log("l", key="k", time="t", partitions=2)
        >>> worker = sk.Store(url).log("l")  # another process, say
        >>> refs = worker.write_segments(pl.DataFrame({"k": [1, 2, 3], "t": [3, 1, 2]}))
        >>> [(r.partition, r.rows) for r in refs], driver.count()
        ([(0, 1), (1, 2)], 0)
        >>> sorted(refs[0].to_dict())[:4]
        ['bytes', 'crc32', 'created', 'log']
        """
        where = f"write segments to log {self._name!r} ({self._fs.url})"
        frame = to_polars(df, where)
        state = self._refresh()
        self._validate(frame, state, where)
        if frame.height == 0:
            return []
        return self._write_segments(frame, state, schema_to_b64(frame.schema, where))

    def commit_segments(
        self,
        refs: Sequence[SegmentRef],
        *,
        writer: str | None = None,
        seq: int | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """Commit segment files written by :meth:`write_segments`, all in one new version.

        The files may come from many processes. The commit is an append of their
        rows: offsets follow the order of ``refs`` (within a file, its order),
        the first commit sets the log's schema, and ``writer``/``seq`` make it
        idempotent exactly as for :meth:`append`.

        The data is never read: each file must be present in the store with the
        size its reference records (its checksum is checked by every reader),
        and must be a segment file of this log that no version holds yet.
        Nothing is committed otherwise. Files of a refused commit stay for
        :meth:`vacuum` to remove; a duplicate (``writer`` committed ``seq``
        already) deletes them unless a committed version holds them, as
        :meth:`append` deletes its own.

        Parameters
        ----------
        refs : sequence of SegmentRef
            What :meth:`write_segments` returned (possibly in other processes,
            shipped with :meth:`SegmentRef.to_dict`/:meth:`SegmentRef.from_dict`).
        writer, seq : str and int, optional
            If ``writer`` already committed a ``seq`` at least this large,
            nothing is committed and the result is marked ``duplicate``.
        meta : dict, optional
            JSON-able data stored with the transaction (see :meth:`transaction`).

        Returns
        -------
        AppendResult
            ``rows`` is the sum of the references' rows; ``segments`` their number.

        Raises
        ------
        ConfigurationError
            A reference of another log (or of a log since deleted and created
            again at the same URL), a path that is not a segment file of this
            log, a file listed twice or committed already.
        CorruptFileError
            A file is missing or its size differs from its reference (named).
        SchemaError
            The references' columns differ from each other or from the log's.
        OutcomeUnknownError
            The store may or may not have applied the commit; retrying it is safe.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> url = "memory://streamkit-doc-commit-segments"
        >>> driver = sk.Store(url).log("l", key="k", time="t")
        >>> a = sk.Store(url).log("l").write_segments(pl.DataFrame({"k": [1], "t": [5]}))
        >>> b = sk.Store(url).log("l").write_segments(pl.DataFrame({"k": [2, 3], "t": [1, 2]}))
        >>> driver.commit_segments(a + b, writer="driver", seq=1)
        AppendResult(version=1, rows=3, offsets=[0, 3), segments=2)
        >>> driver.scan(with_offset="offset").collect().rows()
        [(1, 5, 0), (2, 1, 1), (3, 2, 2)]
        >>> driver.commit_segments(a + b, writer="driver", seq=1).duplicate
        True
        """
        where = f"commit of segments to log {self._name!r} ({self._fs.url})"
        items = list(refs)
        meta_dict = _txn_args(writer, seq, meta, where)
        state = self._refresh()
        schema_b64 = self._check_refs(items, state, where)
        dup = _duplicate(state, writer, seq)
        if dup is not None:
            self._discard_unreferenced([r.path for r in items])
            return dup
        if not items and writer is None:
            pos = Position(state.next_offset)
            return AppendResult(state.version, 0, pos, pos, False, 0)
        empty = None
        if schema_b64 is not None:
            empty = pl.DataFrame(schema=schema_from_b64(schema_b64, where))
        return self._commit_append(
            empty,
            written=items,
            schema_b64=schema_b64,
            writer=writer,
            seq=seq,
            meta=meta_dict,
            where=where,
            what="commit of segments",
            owned=False,
        )

    def _check_refs(self, refs: list[SegmentRef], state: mf.LogState, where: str) -> str | None:
        """Check that ``refs`` can be committed to this log; their common schema.

        Refuses references of another log, paths that are not segment files of
        this log (so a tampered reference cannot make a version point outside
        the log's folder), inconsistent counts, a file listed twice, columns
        that differ, and files that are missing or have another size. Up to
        ``_LIST_FROM`` files are looked up one by one (the cost of a batch's
        commit must not grow with the log), more by one listing per partition
        folder; no file is read.
        """
        fs = self._fs
        seen: set[str] = set()
        for i, ref in enumerate(refs):
            if not isinstance(ref, SegmentRef):
                raise TypeError(
                    f"{where}: refs[{i}] must be a SegmentRef (from log.write_segments() or "
                    f"SegmentRef.from_dict()), found {type(ref).__name__}"
                )
            if ref.log != self.url or ref.created != state.created:
                raise ConfigurationError(
                    f"{where}: refs[{i}] ({ref.path}) was written to the log at {ref.log} "
                    f"created at {ref.created} (ms), but this log is at {self.url}, created "
                    f"at {state.created}; commit a reference to the log that wrote it"
                )
            folder = f"data/p={ref.partition:03d}/"
            if not (
                0 <= ref.partition < state.partitions
                and ref.path.startswith(folder)
                and _SEGMENT_NAME.fullmatch(ref.path[len(folder) :])
            ):
                raise ConfigurationError(
                    f"{where}: refs[{i}] names {ref.path!r} in partition {ref.partition}, which "
                    f"is not a segment file of this log (data/p=NNN/<ms>-<uuid>.parquet, "
                    f"partition < {state.partitions}); a damaged or tampered reference is "
                    "never committed"
                )
            if (
                ref.rows <= 0
                or ref.bytes <= 0
                or ref.min_time > ref.max_time
                or not 0 <= ref.crc32 < 2**32
            ):
                raise ConfigurationError(
                    f"{where}: refs[{i}] ({ref.path}) records impossible values ({ref.rows} "
                    f"rows, {ref.bytes} bytes, time [{ref.min_time}, {ref.max_time}], crc32 "
                    f"{ref.crc32}); a damaged or tampered reference is never committed"
                )
            if ref.path in seen:
                raise ConfigurationError(
                    f"{where}: refs[{i}] ({ref.path}) is listed twice; a segment file is "
                    "committed once"
                )
            seen.add(ref.path)
        if not refs:
            return None
        schemas = list(dict.fromkeys(ref.schema for ref in refs))
        first = schema_from_b64(schemas[0], where)
        for text in schemas[1:]:
            other = next(i for i, ref in enumerate(refs) if ref.schema == text)
            _check_schema(first, schema_from_b64(text, where), f"{where}: refs[{other}]")
        self._validate(pl.DataFrame(schema=first), state, where)
        listed: dict[str, int] = {}
        if len(refs) <= _LIST_FROM:  # one request per file, whatever the folder holds
            listed = fs.sizes(ref.path for ref in refs)
        else:  # one listing per partition folder
            for part in sorted({ref.partition for ref in refs}):
                for entry in fs.find_details(f"data/p={part:03d}", recursive=False):
                    listed[str(entry["path"])] = int(entry["size"])
        for ref in refs:
            size = listed.get(ref.path)
            if size is None:
                raise CorruptFileError(
                    f"{where}: missing file {_fmt_path(fs, ref.path)} ({ref.rows} rows, "
                    f"{ref.bytes} bytes): written by write_segments() but no longer in the "
                    "store (removed by vacuum()?); nothing committed: write its rows again"
                )
            if size != ref.bytes:
                raise CorruptFileError(
                    f"{where}: file {_fmt_path(fs, ref.path)} holds {size} bytes, its "
                    f"reference records {ref.bytes}: it changed after write_segments(); "
                    "nothing committed: write its rows again"
                )
        return schemas[0]

    def _validate(self, frame: pl.DataFrame, state: mf.LogState, where: str) -> None:
        for role, col in (("key", state.key), ("time", state.time)):
            if col not in frame.columns:
                raise SchemaError(
                    f"{where}: expected a {role} column {col!r}, found columns "
                    f"{frame.columns}; add it or rename a column to {col!r}"
                )
        tdt = frame.schema[state.time]
        if not _time_ok(tdt):
            raise SchemaError(
                f"{where}: expected the time column {state.time!r} to be Datetime or an "
                f"integer type, found {tdt}; convert it (e.g. str.to_datetime())"
            )
        kdt = frame.schema[state.key]
        if not _key_ok(kdt):
            raise SchemaError(
                f"{where}: expected the key column {state.key!r} to be a scalar type, found {kdt}"
            )
        for role, col in (("key", state.key), ("time", state.time)):
            nulls = frame[col].null_count()
            if nulls:
                first = int(frame[col].is_null().arg_true()[0])
                raise SchemaError(
                    f"{where}: the {role} column {col!r} has {nulls} null(s), first at row "
                    f"{first}; fill or drop them before appending"
                )
        expected = self._schema_of(state)
        if expected is not None:
            _check_schema(expected, frame.schema, where)
        else:  # the first append sets the schema: one a Delta table can hold
            mf.delta_schema(frame.schema, where)

    def _write_segments(
        self, frame: pl.DataFrame, state: mf.LogState, schema_b64: str
    ) -> list[SegmentRef]:
        """Write one segment file per non-empty partition (not yet committed)."""
        out: list[SegmentRef] = []
        if frame.height == 0:
            return out
        parts: list[tuple[int, pl.DataFrame]]
        if state.partitions > 1:
            pid = partition_of(frame[state.key], state.partitions)
            order = np.argsort(pid, kind="stable")
            bounds = np.searchsorted(pid[order], np.arange(state.partitions + 1))
            taken = frame[order]
            parts = [
                (p, taken.slice(int(bounds[p]), int(bounds[p + 1] - bounds[p])))
                for p in range(state.partitions)
                if bounds[p + 1] > bounds[p]
            ]
        else:
            parts = [(0, frame)]
        try:
            for part, rows in parts:
                if not rows[state.time].is_sorted():
                    rows = rows.sort(state.time, maintain_order=True)
                for piece in _pieces(rows):
                    phys = piece[state.time].to_physical()
                    path = f"data/p={part:03d}/{mf.now_ms()}-{uuid.uuid4().hex}.parquet"
                    footer: list[pq.FileMetaData] = []
                    created, size, crc = self._fs.put_new_written(
                        path, partial(_write_parquet, piece, footer)
                    )
                    if not created:  # pragma: no cover - uuid collision
                        raise StorageError(f"segment name collision at {_fmt_path(self._fs, path)}")
                    out.append(
                        SegmentRef(
                            log=self.url,
                            created=state.created,
                            path=path,
                            partition=part,
                            rows=piece.height,
                            bytes=size,
                            crc32=crc,
                            min_time=int(phys[0]),
                            max_time=int(phys[-1]),
                            schema=schema_b64,
                            stats=mf.parquet_stats(footer[-1], piece),
                        )
                    )
        except BaseException:
            self._discard([w.path for w in out])
            raise
        return out

    def _commit_append(
        self,
        frame: pl.DataFrame | None,
        *,
        written: Sequence[SegmentRef],
        schema_b64: str | None,
        writer: str | None,
        seq: int | None,
        meta: dict[str, Any],
        where: str,
        what: str = "append",
        owned: bool = True,
    ) -> AppendResult:
        """Commit ``written`` as one version (op ``append``), offsets in their order.

        ``frame`` (None: no rows to check) is checked against the latest schema
        in every attempt. ``what`` names the operation in messages. ``owned``:
        the files were written by this call, so a refused commit deletes them;
        files written by other processes are left to :meth:`vacuum`.
        """
        result: list[AppendResult] = []
        empty = None if frame is None else frame.head(0)

        def build(state: mf.LogState) -> dict[str, Any] | None:
            # Another writer may have set the schema or committed this txn meanwhile.
            if empty is not None:
                self._validate(empty, state, where)
            dup = _duplicate(state, writer, seq)
            if dup is not None:
                result[:] = [dup]
                return None
            for w in written:
                seg = state.segments.get(w.path)
                if seg is not None:  # a version already holds it: never count rows twice
                    raise ConfigurationError(
                        f"{where}: segment {_fmt_path(self._fs, w.path)} was committed by "
                        f"version {seg.version} already; a segment file is committed once "
                        "(commit with writer=/seq= to make a retried commit a no-op)"
                    )
            offset = state.next_offset
            seg_no = state.next_segment
            version = state.version + 1
            adds = []
            for w in written:
                adds.append(
                    mf.Segment(
                        path=w.path,
                        partition=w.partition,
                        seq=seg_no,
                        offset=offset,
                        rows=w.rows,
                        min_time=w.min_time,
                        max_time=w.max_time,
                        bytes=w.bytes,
                        crc32=w.crc32,
                        version=version,
                        writer=writer,
                        writer_seq=seq,
                        stats=w.stats,
                    ).to_dict()
                )
                offset += w.rows
                seg_no += 1
            txn = None if writer is None else {"writer": writer, "seq": seq, "meta": meta}
            start = Position(state.next_offset)
            result[:] = [
                AppendResult(
                    version, offset - start.offset, start, Position(offset), False, len(adds)
                )
            ]
            return {
                "op": "append",
                "add": adds,
                "remove": [],
                "schema": schema_b64 if state.schema is None else None,
                "txn": txn,
                "next_offset": offset,
            }

        try:
            committed = self._commit(build)
        except OutcomeUnknownError as exc:
            # The version may have landed (a lost response the store cannot
            # confirm): never delete files a committed version may reference.
            # Unreferenced ones are removed by vacuum() after its retention.
            _logger.warning(
                "%s to log %r failed in its commit; its %d segment file(s) are kept "
                "for vacuum() in case the store applied the commit",
                what,
                self._name,
                len(written),
            )
            noun = "append" if what == "append" else "commit"
            if writer is not None:
                advice = (
                    f"retrying the same {noun} (writer={writer!r}, seq={seq}) is safe: it "
                    "is a no-op if this one landed"
                )
            elif not owned:
                advice = (
                    "retrying the same commit is safe: if this one landed, the retry is "
                    "refused with an error naming a segment it committed"
                )
            else:
                advice = (
                    "it may have committed: check whether log.end() moved past "
                    f"{self._state.next_offset} (the end this append saw) before appending "
                    "again, or append with writer=/seq= so that a retry is always safe"
                )
            raise OutcomeUnknownError(f"{where}: {exc}; {advice}") from None
        except BaseException:
            if owned:
                self._discard([w.path for w in written])  # refused: no version holds them
            raise
        if not committed:
            self._discard_unreferenced([w.path for w in written])
        return result[0]

    def _discard_unreferenced(self, paths: list[str]) -> None:
        """Delete ``paths`` unless the latest version references one of them.

        An append that finds its transaction committed already (a duplicate)
        deletes its own segments; were one of them referenced, the commit was
        its own after all and the files stay.
        """
        live = self._refresh().segments
        if any(path in live for path in paths):
            _logger.warning(
                "log %r: segments of a duplicate append are referenced by a committed "
                "version; kept",
                self._name,
            )
            return
        self._discard(paths)

    def _discard(self, paths: list[str]) -> None:
        if not paths:
            return
        try:
            self._fs.rm(paths)
        except Exception:  # best effort: vacuum removes leftovers
            _logger.warning("could not delete uncommitted segments %s", paths, exc_info=True)

    def _commit(self, build: Callable[[mf.LogState], dict[str, Any] | None]) -> bool:
        """Commit the body ``build(state)`` as the next version; retry on lost races.

        ``build`` is called again with the fresh state after every lost race and
        may return None to commit nothing. Returns whether a version was committed.
        Each attempt carries a fresh commit id, so a commit is identified by
        its bytes: :meth:`FileSystem.put_new` tells a lost race from a create
        of ours whose response was lost.
        """
        with self._lock:
            state = self._refresh()
            for attempt in range(_COMMIT_ATTEMPTS):
                body = build(state)
                if body is None:
                    return False
                version = state.version + 1
                body = {"timestamp": mf.now_ms(), "commit": uuid.uuid4().hex, **body}
                data = mf.encode_version(state, body, version)
                path = mf.version_path(version)
                if self._fs.put_new(path, data):
                    self._state = mf.apply_version(state, data, version, path)
                    if version % mf.SNAPSHOT_EVERY == 0:
                        self._write_snapshot(self._state)
                    return True
                if attempt > 3:
                    _time.sleep(random.uniform(0, min(0.05 * attempt, 0.5)))
                state = self._refresh()
            raise StorageError(  # pragma: no cover - pathological contention
                f"could not commit to log {self._name!r} in {self._fs.url} after "
                f"{_COMMIT_ATTEMPTS} attempts; too many concurrent writers"
            )

    def _write_snapshot(self, state: mf.LogState) -> None:
        """Best effort: the version is committed whatever happens here.

        streamkit's snapshot (and its hint) first, then the Delta checkpoint (and
        Delta's ``_last_checkpoint``) that other engines open from.
        """
        write_snapshot(self._fs, state, self._name)

    # ---------------------------------------------------------------- retention
    def truncate(self, before: Position | int | dt.datetime | dt.date) -> int:
        """Drop whole segments that lie entirely before ``before`` (retention).

        Parameters
        ----------
        before : Position, datetime, date or int
            A :class:`Position`: drop segments whose rows all have offsets below
            it. A time (datetime/date for Datetime logs, int for integer-time
            logs): drop segments whose ``max_time`` is earlier.

        Returns
        -------
        int
            The number of segments dropped (0 commits nothing). Offsets are never
            reused; files are deleted later by :meth:`vacuum`.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-trunc").log("l", key="k", time="t")
        >>> _ = log.append(pl.DataFrame({"k": [1], "t": [1]}))
        >>> _ = log.append(pl.DataFrame({"k": [1], "t": [5]}))
        >>> log.truncate(before=sk.Position(1)), log.start()
        (1, Position(offset=1))
        """
        dropped: list[int] = [0]

        def build(state: mf.LogState) -> dict[str, Any] | None:
            if isinstance(before, Position):
                gone = [s.path for s in state.live() if s.end <= before.offset]
            else:
                limit = self._time_bound(before, state)
                gone = [s.path for s in state.live() if s.max_time < limit]
            dropped[0] = len(gone)
            if not gone:
                return None
            return _removal_body("truncate", gone, state)

        self._commit(build)
        return dropped[0]

    def _time_bound(self, value: Any, state: mf.LogState) -> int:
        dtype = self._time_dtype(state)
        if isinstance(value, bool) or not isinstance(value, int | dt.datetime | dt.date):
            raise TypeError(
                f"truncate(before=...) expects a Position, a datetime/date or an int, "
                f"found {type(value).__name__}"
            )
        if isinstance(value, int):
            if isinstance(dtype, pl.Datetime) and state.schema is not None:
                raise TypeError(
                    f"log {self._name!r} has a Datetime time column; pass a datetime "
                    f"or a Position to truncate, found int {value}"
                )
            return value
        if not isinstance(dtype, pl.Datetime):
            raise TypeError(
                f"log {self._name!r} has an integer time column ({dtype}); pass an int "
                f"or a Position to truncate, found {type(value).__name__}"
            )
        if not isinstance(value, dt.datetime):
            value = dt.datetime(value.year, value.month, value.day)
        if value.tzinfo is None and dtype.time_zone is not None:
            series = pl.Series([value]).dt.replace_time_zone(dtype.time_zone)
        elif value.tzinfo is not None and dtype.time_zone is None:
            series = pl.Series([value]).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        else:
            series = pl.Series([value])
        return int(series.cast(dtype).to_physical()[0])

    def retract(self, writer: str, ranges: Sequence[tuple[int, int]]) -> int:
        """Remove the live segments that ``writer`` committed with ``lo <= seq <= hi``.

        This is how a writer that appends with ``writer=``/``seq=`` (a pipeline)
        takes back what it wrote after a point, for instance when it is rerun from
        an older checkpoint: the rows of those appends disappear from
        :meth:`scan`, :meth:`segments` and :meth:`count` at once, for every
        reader. Offsets are never reused (:meth:`end` does not move back) and the
        files are deleted later by :meth:`vacuum`.

        Parameters
        ----------
        writer : str
            The ``writer`` the appends were made with.
        ranges : sequence of (int, int)
            Inclusive ``(lo, hi)`` ranges of the writer's ``seq`` numbers.

        Returns
        -------
        int
            The number of segments removed. All of them go in one new version
            (op ``retract``); nothing is committed when nothing matches, so a
            retract can be repeated safely (after a crash, say).

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-retract").log("l", key="k", time="t")
        >>> for s in range(3):
        ...     _ = log.append(pl.DataFrame({"k": [s], "t": [s]}), writer="w", seq=s)
        >>> log.retract("w", [(1, 2)]), log.count(), log.end()
        (2, 1, Position(offset=3))
        >>> log.retract("w", [(1, 2)])
        0
        """
        spans = [(int(lo), int(hi)) for lo, hi in ranges]
        removed: list[int] = [0]

        def build(state: mf.LogState) -> dict[str, Any] | None:
            gone = [
                s.path
                for s in state.live()
                if s.writer == writer
                and s.writer_seq is not None
                and any(lo <= s.writer_seq <= hi for lo, hi in spans)
            ]
            removed[0] = len(gone)
            if not gone:
                return None
            body = _removal_body("retract", gone, state)
            body["retract"] = {"writer": writer, "ranges": [list(r) for r in spans]}
            return body

        self._commit(build)
        return removed[0]

    def vacuum(self, retain: dt.timedelta = dt.timedelta(hours=1)) -> list[str]:
        """Delete files under the log that no live segment references.

        Only files older than ``retain`` (by the timestamp in their name) are
        deleted, so appends in flight and readers of recent versions are safe.

        Returns
        -------
        list of str
            Deleted paths, relative to the log directory.

        Examples
        --------
        >>> import datetime as dt
        >>> import polars as pl
        >>> import streamkit as sk
        >>> log = sk.Store("memory://streamkit-doc-vacuum").log("l", key="k", time="t")
        >>> _ = log.append(pl.DataFrame({"k": [1], "t": [1]}))
        >>> _ = log.truncate(before=sk.Position(1))
        >>> [p.split("/")[0] for p in log.vacuum(retain=dt.timedelta(0))]
        ['data']
        """
        if retain < dt.timedelta(0):
            raise ValueError(f"retain must be >= 0, found {retain}")
        state = self._refresh()
        live = set(state.segments)
        cutoff = mf.now_ms() - int(retain.total_seconds() * 1000)
        doomed: list[str] = []
        for rel in self._fs.find("data"):
            if rel in live:
                continue
            stamp = _name_stamp(rel)
            if stamp is not None and stamp <= cutoff:
                doomed.append(rel)
        for folder in (mf.LOG_DIR, mf.SK_DIR):
            for name in self._fs.ls(folder):
                if ".tmp-" in name:
                    stamp = _tmp_stamp(name)
                    if stamp is not None and stamp <= cutoff:
                        doomed.append(f"{folder}/{name}")
        self._fs.rm(doomed)
        return sorted(doomed)

    # ---------------------------------------------------------------- display
    def _summary(self) -> dict[str, Any]:
        state = self._refresh()
        live = state.live()
        rows = sum(s.rows for s in live)
        tmin = tmax = None
        if live:
            dtype = self._time_dtype(state)
            bounds = pl.Series([min(s.min_time for s in live), max(s.max_time for s in live)])
            bounds = bounds.cast(dtype) if isinstance(dtype, pl.Datetime) else bounds
            tmin, tmax = bounds[0], bounds[1]
        return {
            "rows": rows,
            "segments": len(live),
            "version": state.version,
            "start": live[0].offset if live else state.next_offset,
            "end": state.next_offset,
            "min_time": tmin,
            "max_time": tmax,
        }

    def __repr__(self) -> str:
        s = self._summary()
        span = "" if s["min_time"] is None else f", time=[{s['min_time']} .. {s['max_time']}]"
        return (
            f"Log({self._name!r}, key={self.key!r}, time={self.time!r}, rows={s['rows']}, "
            f"segments={s['segments']}, offsets=[{s['start']}, {s['end']}){span}, "
            f"version={s['version']})"
        )

    def _repr_html_(self) -> str:
        s = self._summary()
        cells = [
            ("name", self._name),
            ("url", self._fs.url),
            ("key", self.key),
            ("time", self.time),
            ("partitions", self.partitions),
            ("rows", f"{s['rows']:,}"),
            ("segments", s["segments"]),
            ("offsets", f"[{s['start']:,}, {s['end']:,})"),
            ("time range", "—" if s["min_time"] is None else f"{s['min_time']} … {s['max_time']}"),
            ("version", s["version"]),
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
            f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in cells
        )
        return f"<table><caption>streamkit Log</caption>{body}</table>"


# -------------------------------------------------------------------- helpers
def _pieces(rows: pl.DataFrame) -> list[pl.DataFrame]:
    """Cut one partition's sorted rows into segments a reader will always decode.

    Readers refuse a segment that would decode to more than
    :data:`~streamkit.storage._reader.DECODE_FLOOR` bytes when its compression
    ratio looks like a decompression bomb; a segment of at most a quarter of
    that in memory is always below it (decoding allocates about twice the Arrow
    size), however well it compresses. Consecutive pieces keep the rows' order.
    """
    limit = _reader.DECODE_FLOOR // 4
    size = int(rows.estimated_size())
    if size <= limit or rows.height < 2:
        return [rows]
    count = min(rows.height, -(-size // limit))
    step = -(-rows.height // count)
    return [rows.slice(lo, step) for lo in range(0, rows.height, step)]


def _write_parquet(frame: pl.DataFrame, footer: list[pq.FileMetaData], target: Any) -> None:
    """Write ``frame`` to ``target`` (a path or a binary file); append its footer to ``footer``.

    zstd level 1: about a quarter faster to write than the default level 3 for
    some 10% more bytes, and as fast to read. Statistics let readers skip row
    groups by time, and give the Delta stats of the segment (reading them back
    from the footer costs 0.05 ms; computing them again, 5 ms per 250,000 rows:
    13% of the write).
    """
    frame.write_parquet(target, compression="zstd", compression_level=1, statistics=True)
    if isinstance(target, io.BytesIO):
        footer.append(pq.read_metadata(io.BytesIO(target.getvalue())))
    else:
        footer.append(pq.read_metadata(target))


def _txn_args(
    writer: str | None, seq: int | None, meta: Mapping[str, Any] | None, where: str
) -> dict[str, Any]:
    """Check an append's or a commit's ``writer``/``seq``/``meta``; the meta as a dict."""
    if (writer is None) != (seq is None):
        raise ConfigurationError(
            f"{where}: writer and seq go together, found writer={writer!r}, seq={seq!r}"
        )
    if writer is not None and (not isinstance(writer, str) or not writer):
        raise ConfigurationError(f"{where}: writer must be a non-empty str, found {writer!r}")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise ConfigurationError(f"{where}: seq must be an int, found {seq!r}")
    meta_dict = dict(meta or {})
    if meta and writer is None:
        raise ConfigurationError(f"{where}: meta needs writer and seq")
    try:
        json.dumps(meta_dict, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: meta must be JSON-able: {exc}") from None
    return meta_dict


def _removal_body(op: str, gone: list[str], state: mf.LogState) -> dict[str, Any]:
    return {
        "op": op,
        "add": [],
        "remove": gone,
        "schema": None,
        "txn": None,
        "next_offset": state.next_offset,
    }


def _duplicate(state: mf.LogState, writer: str | None, seq: int | None) -> AppendResult | None:
    if writer is None or seq is None:
        return None
    txn = state.txns.get(writer)
    if txn is None or int(txn["seq"]) < seq:
        return None
    pos = Position(state.next_offset)
    return AppendResult(int(txn["version"]), 0, pos, pos, True, 0)


def _check_schema(expected: pl.Schema, found: pl.Schema, where: str) -> None:
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing or extra:
        raise SchemaError(
            f"{where}: expected columns {list(expected.names())}, found "
            f"{list(found.names())} (missing {missing}, unexpected {extra}); every append "
            "(or file of a FileLog) must have the columns of the first: add or drop columns "
            "to match (df.select(log.schema.names())), or put the new shape in a new log"
        )
    for col, dtype in expected.items():
        if found[col] != dtype:
            raise SchemaError(
                f"{where}: column {col!r} expected dtype {dtype}, found {found[col]}; "
                f"cast it with pl.col({col!r}).cast({dtype})"
            )
    if list(found.names()) != list(expected.names()):
        raise SchemaError(
            f"{where}: expected column order {list(expected.names())}, found "
            f"{list(found.names())}; reorder with df.select(log.schema.names())"
        )


def _as_offset(value: Position | int | None, default: int, what: str) -> int:
    if value is None:
        return default
    if isinstance(value, Position):
        return value.offset
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise TypeError(f"scan({what}=...) expects a Position or an int >= 0, found {value!r}")


def _is_version_file(name: str) -> bool:
    """True for a commit's name (``<20 digits>.json``), not a snapshot or temp file."""
    return len(name) == 25 and name[:20].isdigit() and name.endswith(".json")


def _name_stamp(rel: str) -> int | None:
    base = rel.rsplit("/", 1)[-1]
    head = base.split("-", 1)[0]
    if head.isdigit():
        return int(head)
    return None


def _tmp_stamp(name: str) -> int | None:
    tail = name.rsplit(".tmp-", 1)[-1]
    head = tail.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _segments_frame(live: list[mf.Segment], time_dtype: pl.DataType) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "partition": [s.partition for s in live],
            "seq": [s.seq for s in live],
            "offset": [s.offset for s in live],
            "rows": [s.rows for s in live],
            "min_time": [s.min_time for s in live],
            "max_time": [s.max_time for s in live],
            "bytes": [s.bytes for s in live],
            "crc32": [s.crc32 for s in live],
            "version": [s.version for s in live],
            "path": [s.path for s in live],
            "writer": [s.writer for s in live],
            "writer_seq": [s.writer_seq for s in live],
        },
        schema={
            "partition": pl.Int32,
            "seq": pl.Int64,
            "offset": pl.Int64,
            "rows": pl.Int64,
            "min_time": pl.Int64,
            "max_time": pl.Int64,
            "bytes": pl.Int64,
            "crc32": pl.UInt32,
            "version": pl.Int64,
            "path": pl.String,
            "writer": pl.String,
            "writer_seq": pl.Int64,
        },
    )
    if time_dtype != pl.Int64:
        frame = frame.with_columns(pl.col("min_time", "max_time").cast(time_dtype))
    return frame


def _check_create_args(name: str, key: str, time: str, partitions: int | None) -> None:
    for what, value in (("key", key), ("time", time)):
        if not isinstance(value, str) or not value:
            raise ConfigurationError(
                f"log {name!r}: {what} must be a non-empty column name, found {value!r}"
            )
    if key == time:
        raise ConfigurationError(
            f"log {name!r}: key and time must be different columns, both are {key!r}"
        )
    if partitions is not None and (
        isinstance(partitions, bool)
        or not isinstance(partitions, int)
        or not 1 <= partitions <= MAX_PARTITIONS
    ):
        raise ConfigurationError(
            f"log {name!r}: partitions must be an int in [1, {MAX_PARTITIONS}], "
            f"found {partitions!r}"
        )


@dataclasses.dataclass(frozen=True)
class _Summary:
    """What the commits up to a version say: live files, transactions, next offset."""

    files: frozenset[str]
    txns: dict[str, int]
    next_offset: int


def _check_redundant(
    fs: FileSystem, path: str, data: bytes, where: str, states: dict[int, _Summary]
) -> None:
    """Check a snapshot, a Delta checkpoint or a hint (``states``: the commits' states)."""
    name = path.rsplit("/", 1)[-1]
    if not name[:20].isdigit():  # a hint
        if path == mf.HINT:
            if not isinstance(mf.decode(data, where).get("version"), int):
                raise CorruptFileError(f"corrupt file {where}: no snapshot version")
            return
        try:
            version = json.loads(data)["version"]
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            version = None
        if not isinstance(version, int) or isinstance(version, bool):
            raise CorruptFileError(f"corrupt file {where}: expected JSON with a version")
        return
    version = int(name[:20])
    expected = states.get(version)
    if path.endswith(".snapshot.json"):
        snap = mf.state_from_snapshot(data, version, where)
        if expected is not None and (
            set(snap.segments) != expected.files or snap.next_offset != expected.next_offset
        ):
            raise CorruptFileError(
                f"corrupt file {where}: its segments differ from the commits up to version "
                f"{version}"
            )
        return
    actions = _delta.read_checkpoint(fs, version)
    if expected is not None:
        files = {_delta.data_path(a["add"]) for a in actions if "add" in a}
        txns = {a["txn"]["appId"]: a["txn"]["version"] for a in actions if "txn" in a}
        if files != expected.files or txns != expected.txns:
            raise CorruptFileError(
                f"corrupt file {where}: its files or transactions differ from the commits "
                f"up to version {version}"
            )


# -------------------------------------------------------------------- loading
def _advance(fs: FileSystem, state: mf.LogState | None, first: int, window: int) -> mf.LogState:
    """Apply the contiguous run of versions from ``first`` on; probe in growing windows."""
    version = first
    while True:
        names = [mf.version_path(v) for v in range(version, version + window)]
        got = fs.get_many(names, missing_ok=True)
        for offset, rel in enumerate(names):
            data = got.get(rel)
            if data is None:
                if state is None:
                    raise LogNotFoundError(f"no version 0 in {fs.url}")
                return state
            state = mf.apply_version(state, data, version + offset, _fmt_path(fs, rel))
        version += window
        window = min(window * 4, _PROBE_MAX)


def _load_state(fs: FileSystem, name: str) -> mf.LogState | None:
    """Read the latest state of the log rooted at ``fs``; None if it does not exist.

    Fast path: the hint names the latest snapshot; versions after it are probed
    in one concurrent read. Fallback (no or bad hint): list ``_delta_log/``,
    start from the newest readable snapshot (or version 0) and read the listed
    versions.

    Raises
    ------
    ConfigurationError
        If the folder holds a log of format 1 (``_log/``): it names
        ``streamkit log upgrade``.
    """
    snap = _snapshot_from_hint(fs)
    if snap is not None:
        return _advance(fs, snap, snap.version + 1, mf.SNAPSHOT_EVERY)
    listing = fs.ls(mf.LOG_DIR)
    if mf.version_path(0).rsplit("/", 1)[-1] not in listing:
        _refuse_format_1(fs, name)
        return None
    state = _snapshot_from_listing(fs, fs.ls(mf.SK_DIR))
    after = -1 if state is None else state.version
    versions = sorted(int(n[:20]) for n in listing if _is_version_file(n) and int(n[:20]) > after)
    got = fs.get_many([mf.version_path(v) for v in versions], missing_ok=True)
    for expected, v in enumerate(versions, start=after + 1):
        rel = mf.version_path(v)
        if v != expected or rel not in got:
            break
        state = mf.apply_version(state, got[rel], v, _fmt_path(fs, rel))
    if state is None:
        return None
    return _advance(fs, state, state.version + 1, _PROBE_FIRST)


def _refuse_format_1(fs: FileSystem, name: str) -> None:
    """Raise ConfigurationError if ``fs`` holds a log of format 1 (``_log/``)."""
    if fs.exists(mf.old_version_path(0)):
        raise ConfigurationError(
            f"log {name!r} in {fs.url} is in streamkit's first log format (a _log/ folder); "
            "logs are Delta Lake tables now: convert it once, in place, with "
            f"`streamkit log upgrade {fs.url}` (stop its writers first; offsets and "
            "checkpoints stay valid)"
        )


def upgrade_log(fs: FileSystem, name: str) -> int:
    """Convert the log of format 1 rooted at ``fs`` (a ``_log/`` folder) into a Delta table.

    Each version file ``_log/N.json`` becomes the commit ``_delta_log/N.json``
    with the same number, the same segments, offsets, writer transactions and
    commit ids; no segment file is read, moved or rewritten, and ``_log/`` is
    left as it was (delete it once satisfied). The commits are derived from the
    old files alone and created newest first, version 0 last: until version 0
    exists the folder still reads as format 1, and an upgrade that was
    interrupted is simply run again (it recognises the commits it created).

    Returns
    -------
    int
        The number of versions converted; 0 if the log is a Delta table already.

    Raises
    ------
    SchemaError
        A column a Delta table cannot hold (nanosecond timestamps, durations).
    CorruptFileError
        A damaged version file (named), or a ``_delta_log/`` commit that differs
        from the conversion (someone wrote to the folder meanwhile).
    """
    if fs.exists(mf.version_path(0)):
        return 0
    names = [n for n in fs.ls(mf.OLD_LOG_DIR) if _is_version_file(n)]
    versions = sorted(int(n[:20]) for n in names)
    if not versions or versions[0] != 0:
        raise LogNotFoundError(f"no log of format 1 in {fs.url} (no {mf.old_version_path(0)})")
    versions = [v for i, v in enumerate(versions) if v == i]  # the contiguous prefix
    got = fs.get_many([mf.old_version_path(v) for v in versions])
    state: mf.LogState | None = None
    commits: list[tuple[int, bytes]] = []
    for v in versions:
        where = _fmt_path(fs, mf.old_version_path(v))
        body = mf.upgrade_body(got[mf.old_version_path(v)], v, where)
        try:
            data = mf.encode_version(state, body, v)
        except SchemaError as exc:
            raise SchemaError(
                f"cannot upgrade log {name!r} in {fs.url}: {exc}. A Delta table cannot hold "
                "this column as it is: nothing was converted; copy the log into a new one "
                "with the column cast, using streamkit before Delta tables"
            ) from None
        state = mf.apply_version(state, data, v, _fmt_path(fs, mf.version_path(v)))
        commits.append((v, data))
    for v, data in reversed(commits):
        if not fs.put_new(mf.version_path(v), data):
            raise CorruptFileError(
                f"cannot upgrade log {name!r}: {_fmt_path(fs, mf.version_path(v))} exists "
                "with other content (a writer committed to the folder during the upgrade?); "
                "nothing was deleted: remove the _delta_log/ folder and upgrade again with "
                "every writer stopped"
            )
    assert state is not None
    if state.version > 0:
        write_snapshot(fs, state, name)
    return len(commits)


def write_snapshot(fs: FileSystem, state: mf.LogState, name: str) -> None:
    """Write streamkit's snapshot of ``state`` and its hint, then the Delta checkpoint.

    Best effort: every one of these files is redundant (readers fall back to
    the commits), so a failure is logged, not raised.
    """
    try:
        fs.put_new(mf.snapshot_path(state.version), mf.state_to_snapshot(state))
        fs.put(mf.HINT, mf.hint_bytes(state.version))
    except Exception:
        _logger.warning(
            "could not write the snapshot of version %d of log %r",
            state.version,
            name,
            exc_info=True,
        )
    if state.schema is None:
        return  # no columns yet: Delta readers refuse such a table anyway
    try:
        # From the commits (where the files' stats are), checked against the state.
        table = _delta.load_snapshot(fs, state.version)
        txns = {writer: int(txn["seq"]) for writer, txn in state.txns.items()}
        if table.version != state.version or set(table.files) != set(state.segments):
            raise CorruptFileError(f"the commits of {fs.url} read back differ from the log")
        if table.txns != txns:
            raise CorruptFileError(f"the transactions of {fs.url} read back differ")
        _delta.write_checkpoint(fs, state.version, table)
    except Exception:
        _logger.warning(
            "could not write the Delta checkpoint of version %d of log %r",
            state.version,
            name,
            exc_info=True,
        )


def _snapshot_from_hint(fs: FileSystem) -> mf.LogState | None:
    try:
        hint = mf.decode(fs.get(mf.HINT), _fmt_path(fs, mf.HINT), ("version",))
        version = int(hint["version"])
        rel = mf.snapshot_path(version)
        return mf.state_from_snapshot(fs.get(rel), version, _fmt_path(fs, rel))
    except (LogNotFoundError, CorruptFileError, ValueError, TypeError):
        return None


def _snapshot_from_listing(fs: FileSystem, listing: list[str]) -> mf.LogState | None:
    snaps = sorted(
        (int(n[:20]) for n in listing if n.endswith(".snapshot.json") and n[:20].isdigit()),
        reverse=True,
    )
    for version in snaps:
        rel = mf.snapshot_path(version)
        try:
            return mf.state_from_snapshot(fs.get(rel), version, _fmt_path(fs, rel))
        except (LogNotFoundError, CorruptFileError):
            continue
    return None
