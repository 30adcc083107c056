"""A Delta Lake table written by another engine, read as a read-only log.

Incremental by table version, like a Delta streaming source: the first read
takes the table as it is (its snapshot), later reads take the files that later
versions add with ``dataChange=true``. A position records where reading
stopped as one short string in its :class:`~streamkit.storage.position.FileCursor`
``watermark`` (plus a file read in part), never a list of the files seen:

``"s<version:020d>/<path>"``
    reading the snapshot of ``version``: its files before ``path`` in reading
    order are consumed;
``"<version:020d>/<path>"``
    reading the files ``version`` added: those before ``path`` in reading
    order are consumed, as is every earlier version;
``"<version:020d>"``
    every version before ``version`` is consumed.

The reading order of one snapshot's or one version's files is fixed by their
``add`` actions alone (smallest recorded time, then path), so a position means
the same files whenever it is planned from.

A compaction (OPTIMIZE: ``remove`` and ``add`` with ``dataChange=false``) adds
no rows and is never read; vacuum of consumed files does not matter. A
``remove`` with ``dataChange=true`` (a delete, update, merge or overwrite) of a
file already read is an error naming the version: rows already processed
changed. See :class:`DeltaLog`.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from streamkit.errors import (
    CheckpointError,
    ConfigurationError,
    CorruptFileError,
    LogNotFoundError,
    SchemaError,
)
from streamkit.storage import _delta as delta
from streamkit.storage import _plan
from streamkit.storage._fs import FileSystem
from streamkit.storage._plan import BATCH_FILES, PendingPlan
from streamkit.storage._reader import read_parquet_checked
from streamkit.storage.position import FileCursor, FileMark, Position, Transaction

__all__ = ["DeltaLog", "DeltaPlan"]

#: What to do when rows already read changed (ends the error message).
_START_OVER = (
    "a DeltaLog reads appended rows only. To process the table as it is now, "
    "reprocess it from the start with pipe.run(from_checkpoint=0)"
)
_REMEDY = "the table's writer must restore the file (or reprocess with run(from_checkpoint=0))"


@dataclass(frozen=True, slots=True)
class _Pending(_plan.Pending):
    """A data file not consumed at a plan's start (see :class:`_plan.Pending`)."""

    prefix: str  # "s<version>" (a snapshot's file) or "<version>" (added by it)
    path: str  # decoded, relative to the table root
    size: int
    values: dict[str, Any] | None  # partitionValues, when the table has partitions

    @property
    def key(self) -> str:
        return f"{self.prefix}/{self.path}"


#: Reader features a DeltaLog accepts in the protocol: it refuses each file
#: that carries a deletion vector instead (tables created with the feature on,
#: as Databricks does by default, hold none until a DELETE or UPDATE).
_ALLOW = frozenset({"deletionVectors"})
#: Commits read per request round when looking for new versions.
_PROBE = 8


def _prefix(version: int, snapshot: bool) -> str:
    return f"{'s' if snapshot else ''}{version:020d}"


def _parse_watermark(text: str) -> tuple[int, bool, str]:
    """``(version, snapshot, path)`` of a DeltaLog watermark."""
    head, _, path = text.partition("/")
    snapshot = head.startswith("s")
    digits = head[1:] if snapshot else head
    if len(digits) != 20 or not digits.isdigit():
        raise CheckpointError(
            f"a DeltaLog position holds {text!r}, which is not a Delta table position "
            "(was it made by another kind of log?); rewind with run(from_checkpoint=...)"
        )
    return int(digits), snapshot, path


class DeltaLog:
    """A Delta Lake table written by another engine, read as a read-only log.

    Use it wherever a log is read: ``sk.Pipeline(...).read(sk.DeltaLog(...))``.
    The first run reads the table as it is (the snapshot of its newest
    version); each later run reads the files that later versions added with
    ``dataChange=true``, version by version. A run's checkpoint records the
    table version it read up to, in a position that stays a few dozen bytes
    however many files were read.

    What other engines do to the table:

    - appends (Spark, delta-rs, ``pl.DataFrame.write_delta``, DuckDB): read by
      the next run;
    - OPTIMIZE / compaction (``remove`` and ``add`` with ``dataChange=false``):
      nothing new to read, never read twice;
    - VACUUM of files already read: harmless (a file compacted *and*
      vacuumed before it was read is an error naming it);
    - DELETE, UPDATE, MERGE or an overwrite (``remove`` with
      ``dataChange=true``) of a file already read: rows already processed
      changed, an error naming the table version (as Spark's Delta source).
      ``pipe.run(from_checkpoint=0)`` reprocesses the table as it is then;
    - log retention removing commits a run still needs (the pipeline did not
      run for longer than ``delta.logRetentionDuration``): an error naming the
      missing version;
    - a schema change: an error naming the version (the columns of a log are
      fixed);
    - reader features streamkit does not support (column mapping, V2
      checkpoints, type widening): an error naming them and what to do. The
      deletion-vector feature may be on; a file that carries a deletion
      vector is an error naming it (purge them with ``REORG TABLE ... APPLY
      (PURGE)``).

    Files with no order of their own (a snapshot's, one version's) are read by
    the smallest time their statistics record, then path, so that an
    event-time pipeline does not meet older events after newer ones. Rows keep
    their order within a file; offsets follow this table order (version, file,
    row), and within a key events are processed in ``(time, table order)``.

    Parameters
    ----------
    url : str
        The table's folder (the one holding ``_delta_log/``): a local path or
        any fsspec URL.
    key, time : str
        Key and time columns (time: a Datetime or an integer column).
    storage_options : mapping, optional
        fsspec options for the backend (for S3 through s3fs: ``key``,
        ``secret``, ``client_kwargs={"endpoint_url": ...}``).

    Raises
    ------
    LogNotFoundError
        No Delta table at ``url``.
    SchemaError
        The table has no such key or time column, or of an unusable type.
    ConfigurationError
        The table needs a reader feature streamkit lacks.

    Examples
    --------
    >>> import tempfile, polars as pl, streamkit as sk
    >>> from deltalake import write_deltalake
    >>> url = tempfile.mkdtemp() + "/events"
    >>> write_deltalake(url, pl.DataFrame({"k": ["a", "b"], "t": [2, 1]}).to_arrow())
    >>> dlog = sk.DeltaLog(url, key="k", time="t")
    >>> dlog.scan(with_offset="o").collect().rows()
    [('a', 2, 0), ('b', 1, 1)]
    >>> seen = dlog.end()
    >>> write_deltalake(url, pl.DataFrame({"k": ["c"], "t": [3]}).to_arrow(), mode="append")
    >>> dlog.scan(start=seen).collect().rows()
    [('c', 3)]
    """

    def __init__(
        self,
        url: str,
        *,
        key: str,
        time: str,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        _plan.check_names("DeltaLog", key, time)
        self._fs = FileSystem(url, storage_options)
        self._key = key
        self._time = time
        snapshot = delta.load_snapshot(self._fs, allow=_ALLOW)
        self._version = snapshot.version
        self._schema_text = str((snapshot.metadata or {}).get("schemaString"))
        self._partitions = list((snapshot.metadata or {}).get("partitionColumns") or [])
        self._schema = self._check_schema(snapshot.schema(), f"Delta table {self.url}")

    # ---------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        """The table's URL (no credentials)."""
        return self._fs.url

    @property
    def url(self) -> str:
        """The table's folder (no credentials)."""
        return self._fs.url

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
        """Always 1: files are read in table order."""
        return 1

    @property
    def filesystem(self) -> FileSystem:
        """The file system rooted at the table's folder."""
        return self._fs

    @property
    def schema(self) -> pl.Schema:
        """The table's columns as Polars types (partition columns included)."""
        return self._schema

    @property
    def version(self) -> int:
        """The newest table version seen (by the constructor or the last plan)."""
        return self._version

    # ---------------------------------------------------------------- checks
    def _check_schema(self, arrow: pa.Schema, where: str) -> pl.Schema:
        schema = pl.DataFrame(arrow.empty_table()).schema
        _plan.require_columns(schema.names(), self._key, self._time, where)
        _plan.check_types(schema, self._key, self._time, where)
        return schema

    def _new_commits(self, first: int) -> tuple[int, dict[int, list[dict[str, Any]]]]:
        """The commits from ``first`` on and the newest version, without a listing.

        Commits are read a few at a time (concurrently on object stores) until
        one is absent. Absent at once, the log is listed only when commit
        ``first - 1`` is gone too (was ``first`` cleaned up by log retention,
        or was the table created again?): a handful of requests per plan
        however long the table's log.
        """
        commits: dict[int, list[dict[str, Any]]] = {}
        v = first
        while True:
            paths = {delta.commit_path(x): x for x in range(v, v + _PROBE)}
            got = self._fs.get_many(list(paths), missing_ok=True)
            for path, x in paths.items():
                if path in got:
                    commits[x] = delta.decode_commit(got[path], self._where(path))
                    continue
                if x == first and first > 0 and not self._fs.exists(delta.commit_path(first - 1)):
                    self._check_gap(first)
                return x - 1, commits
            v += _PROBE

    def _check_gap(self, first: int) -> None:
        """Commit ``first`` and the one before are absent: list the log to tell why."""
        latest = delta.latest_version(self._fs)
        if latest is None:
            raise LogNotFoundError(
                f"no Delta table at {self.url} any more: {delta.LOG_DIR}/ is gone"
            )
        if latest >= first:
            raise LogNotFoundError(
                f"Delta table {self.url}: this pipeline read up to version {first - 1}, but "
                f"commit {first} ({delta.commit_path(first)}) is gone: log retention "
                "(delta.logRetentionDuration) removed it before this run, so the changes "
                "since cannot be known. Run the pipeline more often than the retention "
                "allows, or reprocess the table as it is now with pipe.run(from_checkpoint=0)"
            )
        if latest < first - 1:
            raise CheckpointError(
                f"Delta table {self.url}: the read position is at version {first}, but the "
                f"table's newest version is {latest}: it was deleted and created again. "
                "Reprocess it with pipe.run(from_checkpoint=0)"
            )

    def _snapshot_at(self, version: int) -> delta.Snapshot:
        """The snapshot a position reads from (it may be older than the newest)."""
        latest = delta.latest_version(self._fs)
        if latest is not None and version > latest:
            raise CheckpointError(
                f"Delta table {self.url}: the read position is at version {version}, but the "
                f"table's newest version is {latest}: it was deleted and created again. "
                "Reprocess it with pipe.run(from_checkpoint=0)"
            )
        try:
            return delta.load_snapshot(self._fs, version, allow=_ALLOW)
        except LogNotFoundError as exc:
            raise LogNotFoundError(
                f"Delta table {self.url}: this pipeline was reading the table as of version "
                f"{version}, which can no longer be rebuilt ({exc}); reprocess the table as "
                "it is now with pipe.run(from_checkpoint=0)"
            ) from None

    def _rows(self, body: Mapping[str, Any], path: str) -> int:
        """Rows of a data file: its stats' numRecords, else its Parquet footer."""
        stats = body.get("stats")
        if isinstance(stats, str):
            try:
                rows = json.loads(stats).get("numRecords")
            except (ValueError, AttributeError):
                rows = None
            if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0:
                return rows
        data = self._get(path, "count its rows")
        try:
            return int(pq.read_metadata(io.BytesIO(data)).num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptFileError(
                f"corrupt file {self._where(path)}: not a readable Parquet file ({exc}); {_REMEDY}"
            ) from None

    def _where(self, path: str) -> str:
        return f"{self.url.rstrip('/')}/{path}"

    def _get(self, path: str, why: str) -> bytes:
        try:
            return self._fs.get(path)
        except LogNotFoundError:
            raise LogNotFoundError(
                f"{self._where(path)} is gone, but this pipeline has yet to {why}: the "
                "table's writer removed it (compacted by OPTIMIZE and vacuumed, or deleted) "
                "before it was read. Run the pipeline more often than the table's vacuum "
                "retention, or reprocess the table as it is now with "
                "pipe.run(from_checkpoint=0)"
            ) from None

    # ---------------------------------------------------------------- plans
    def plan(self, start: Position | int | None = None) -> DeltaPlan:
        """The data files not consumed at ``start``, with the offsets their rows get.

        How a pipeline reads the table incrementally (as a
        :class:`~streamkit.FileLog`): plan from the checkpoint's position, cut
        batches with :meth:`DeltaPlan.cut`, describe each with
        :meth:`DeltaPlan.batch`, read it with :meth:`read_batch`, record
        :meth:`advance` as the next position.

        Parameters
        ----------
        start : Position or int, optional
            A position from :meth:`start`, :meth:`end`, a plan or a checkpoint.
            An int ``n`` (no recorded files): the first ``n`` rows of the
            table's current snapshot count as consumed.

        Raises
        ------
        CheckpointError
            Rows already read changed: a ``remove`` with ``dataChange=true``
            of a consumed file (the message names the version).
        LogNotFoundError
            Commits needed were cleaned up by log retention, or a file to read
            is gone.
        SchemaError, ConfigurationError
            A later version changed the schema or needs an unsupported
            reader feature.

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a"], "t": [1]}).to_arrow())
        >>> dlog = sk.DeltaLog(url, key="k", time="t")
        >>> done = dlog.plan().end
        >>> done
        Position(offset=1, watermark='00000000000000000001', consumed=[])
        >>> write_deltalake(url, pl.DataFrame({"k": ["b"], "t": [2]}).to_arrow(), mode="append")
        >>> plan = dlog.plan(done)
        >>> plan.files.select("version", "offset", "rows").rows()
        [(1, 1, 1)]
        """
        if start is None or isinstance(start, int):
            offset = 0 if start is None else int(start)
            plan = self._plan(FileCursor(), 0)
            if offset == 0:
                return plan
            hi = min(offset, plan.end_offset)
            return self.plan(self.advance(plan.start, plan.batch(0, hi)))
        if start.files is None:
            return self.plan(start.offset)
        return self._plan(start.files, start.offset)

    def _plan(self, cursor: FileCursor, offset: int) -> DeltaPlan:
        pending: dict[str, tuple[str, dict[str, Any]]] = {}  # path -> (prefix, add body)
        if cursor.watermark is None:
            snapshot = delta.load_snapshot(self._fs, allow=_ALLOW)
            version, snapshot_at, resume = snapshot.version, True, ""
        else:
            version, snapshot_at, resume = _parse_watermark(cursor.watermark)
            if snapshot_at:
                snapshot = self._snapshot_at(version)
        if snapshot_at:
            self._check_table(snapshot.protocol or {}, snapshot.metadata or {}, version)
            prefix = _prefix(version, True)
            for path, body in self._after(resume, list(snapshot.files.values()), cursor):
                pending[path] = (prefix, body)
            first_commit = version + 1
        else:
            first_commit = version
        latest, commits = self._new_commits(first_commit)
        for v in range(first_commit, latest + 1):
            inside = not snapshot_at and v == version and resume != ""
            self._apply(v, commits[v], pending, cursor, resume, inside=inside)
        self._version = max(self._version, latest)
        partial = cursor.partial
        items: list[_Pending] = []
        at = offset
        for path, (prefix, body) in pending.items():
            first = 0
            if partial is not None and not items:
                if partial.path != f"{prefix}/{path}":
                    raise CheckpointError(
                        f"Delta table {self.url}: {partial.path.partition('/')[2]!r} was read "
                        f"up to row {cursor.partial_rows} and is no longer in the table: "
                        f"its remaining rows cannot be read; {_START_OVER}"
                    )
                first = cursor.partial_rows
            rows = self._rows(body, path)
            if first > rows:
                raise CorruptFileError(
                    f"{self._where(path)} changed: {first} of its rows were consumed but it "
                    f"now has {rows}"
                )
            values = body.get("partitionValues") if self._partitions else None
            size = int(body.get("size", 0))
            items.append(_Pending(rows, first, at, prefix, path, size, values))
            at += rows - first
        if partial is not None and not items:
            raise CheckpointError(
                f"Delta table {self.url}: {partial.path.partition('/')[2]!r} was read up to "
                f"row {cursor.partial_rows} and is no longer in the table: its remaining "
                f"rows cannot be read; {_START_OVER}"
            )
        return DeltaPlan(self, Position(offset, files=cursor), items, latest)

    def _check_table(
        self, protocol: Mapping[str, Any], metadata: Mapping[str, Any], v: int
    ) -> None:
        delta.check_readable(protocol, f"{self.url} at version {v}", metadata, allow=_ALLOW)
        text = str(metadata.get("schemaString"))
        if text != self._schema_text:
            schema = self._check_schema(delta.schema_from_delta(text), f"Delta table {self.url}")
            if schema != self._schema:
                raise SchemaError(
                    f"Delta table {self.url} version {v} changed the schema from "
                    f"{dict(self._schema)} to {dict(schema)}; a log's columns are fixed: read "
                    "the new columns from a copy of the table (or select them away in the "
                    "writer)"
                )

    def _apply(
        self,
        version: int,
        actions: list[dict[str, Any]],
        pending: dict[str, tuple[str, dict[str, Any]]],
        cursor: FileCursor,
        resume: str,
        *,
        inside: bool,
    ) -> None:
        """Fold commit ``version`` into ``pending`` (checking what it changes).

        ``inside``: the position is inside this version (files before
        ``resume`` consumed): its removes were checked when it was first read.
        """
        prefix = _prefix(version, False)
        operation = ""
        protocol: dict[str, Any] | None = None
        metadata: dict[str, Any] | None = None
        adds: list[dict[str, Any]] = []
        for action in actions:
            for kind, body in action.items():
                if kind == "commitInfo" and isinstance(body, dict):
                    operation = str(body.get("operation") or "")
                elif kind == "metaData":
                    metadata = body
                elif kind == "protocol":
                    protocol = body
                elif kind == "add" and body.get("dataChange", True):
                    adds.append(body)
                elif kind == "remove" and body.get("dataChange", True) and not inside:
                    path = delta.data_path(body)
                    held = pending.get(path)
                    partial = cursor.partial
                    read_part = (
                        held is not None
                        and partial is not None
                        and partial.path == f"{held[0]}/{path}"
                    )
                    if held is not None and not read_part:
                        del pending[path]  # added, then deleted, before it was read
                        continue
                    what = f" ({operation})" if operation else ""
                    raise CheckpointError(
                        f"Delta table {self.url} version {version}{what} removed {path!r}, "
                        "whose rows this pipeline already read (or a compaction of rows it "
                        "read): a delete, update, merge or overwrite changed rows already "
                        f"processed; {_START_OVER}"
                    )
        if protocol is not None:
            delta.check_readable(
                protocol, f"{self.url} at version {version}", metadata, allow=_ALLOW
            )
        if metadata is not None:
            if protocol is None:  # rare: the protocol in force, for column mapping
                protocol = delta.load_snapshot(self._fs, version, allow=_ALLOW).protocol
            self._check_table(protocol or {}, metadata, version)
        for path, body in self._after(resume if inside else "", adds, cursor):
            pending.pop(path, None)
            pending[path] = (prefix, body)

    def _check_file(self, path: str, body: Mapping[str, Any]) -> None:
        """Refuse a data file a DeltaLog cannot read as it is."""
        if body.get("deletionVector"):
            raise ConfigurationError(
                f"Delta table {self.url}: {path!r} has a deletion vector (rows deleted "
                "without rewriting the file), which streamkit does not support; purge "
                "deletion vectors with the writing engine (Spark: REORG TABLE t APPLY "
                "(PURGE)), or disable them (delta.enableDeletionVectors = false)"
            )
        if "://" in path or path.startswith("/"):
            raise ConfigurationError(
                f"Delta table {self.url} names a data file outside its folder ({path!r}: "
                "a shallow clone?), which a DeltaLog does not read; read a deep copy"
            )

    def _order(self, adds: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        """Files of one version (or snapshot) in reading order: by the smallest
        time their statistics record, then path (files without statistics last).

        A snapshot's or a version's files have no order of their own; reading
        them by time keeps an event-time pipeline from meeting older events
        after newer ones (they would be late).
        """
        integer = self._schema[self._time].is_integer()
        missing: Any = 0 if integer else ""

        def key(item: tuple[str, dict[str, Any]]) -> tuple[int, Any, str]:
            low, _ = _time_bounds(item[1], self._time)
            if low is None:
                return 1, missing, item[0]
            if integer:
                try:
                    return 0, int(low), item[0]
                except ValueError:
                    return 1, missing, item[0]
            return 0, low.replace(" ", "T").removesuffix("Z"), item[0]

        return sorted(((delta.data_path(b), b) for b in adds), key=key)

    def _after(
        self, resume: str, adds: list[dict[str, Any]], cursor: FileCursor
    ) -> list[tuple[str, dict[str, Any]]]:
        """The files of ``adds`` in reading order, from ``resume`` (a path) on."""
        ordered = self._order(adds)
        for path, body in ordered:
            self._check_file(path, body)
        if not resume:
            return ordered
        for i, (path, _) in enumerate(ordered):
            if path == resume:
                return ordered[i:]
        raise CheckpointError(
            f"Delta table {self.url}: the read position {cursor.watermark!r} names a file "
            "that its version does not hold; the position was not made by this table (was "
            "it deleted and created again?): reprocess it with pipe.run(from_checkpoint=0)"
        )

    def advance(self, start: Position, batch: Mapping[str, Any]) -> Position:
        """The position after reading ``batch`` (from :meth:`DeltaPlan.batch`) at ``start``.

        Pure: it lists and reads nothing, so a pipeline recovering from a crash
        computes the same position from the batch stored with its outputs.

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a", "b"], "t": [1, 2]}).to_arrow())
        >>> dlog = sk.DeltaLog(url, key="k", time="t")
        >>> plan = dlog.plan()
        >>> pos = dlog.advance(plan.start, plan.batch(0, 1))
        >>> pos.offset, pos.files.partial_rows
        (1, 1)
        """
        cursor, lo, hi = _plan.batch_span("DeltaLog", self.name, start, batch)
        partial: FileMark | None = cursor.partial
        partial_rows = cursor.partial_rows
        total = 0
        for i, item in enumerate(batch["files"]):
            path, size, prefix, rows, first, count = item[:6]
            key = f"{prefix}/{path}"
            resuming = i == 0 and partial is not None and partial.path == key
            _plan.check_first(self.name, self._where(path), first, partial_rows if resuming else 0)
            total += int(count)
            if int(first) + int(count) >= int(rows):
                partial, partial_rows = None, 0
            else:
                partial, partial_rows = FileMark(key, int(size), "", None), int(first) + int(count)
        _plan.check_total(self.name, total, lo, hi)
        return Position(
            hi,
            files=FileCursor(
                watermark=str(batch["next"]), partial=partial, partial_rows=partial_rows
            ),
        )

    # ---------------------------------------------------------------- reading
    def read_batch(
        self, batch: Mapping[str, Any], *, with_offset: str | None = None
    ) -> pl.LazyFrame:
        """The rows of ``batch`` (from :meth:`DeltaPlan.batch`), at the batch's offsets.

        Reads exactly the files the batch names, whatever the table holds now.

        Raises
        ------
        LogNotFoundError
            A file of the batch is gone (vacuumed before it was read).
        CorruptFileError
            A file holds another number of rows than the table recorded.

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a", "b"], "t": [1, 2]}).to_arrow())
        >>> dlog = sk.DeltaLog(url, key="k", time="t")
        >>> dlog.read_batch(dlog.plan().batch(1, 2), with_offset="o").collect().rows()
        [('b', 2, 1)]
        """
        reads = []
        for item in batch["files"]:
            path, _size, _prefix, rows, first, count = item[:6]
            values = item[6] if len(item) > 6 else None
            read = functools.partial(self._read_file, str(path), int(rows), values)
            reads.append((read, int(first), int(count)))
        return _plan.scan_slices(
            reads,
            self._schema,
            start=int(batch["start"]),
            end=int(batch["end"]),
            with_offset=with_offset,
            label=f"Delta table {self.name}",
        )

    def _read_file(self, path: str, rows: int, values: Mapping[str, Any] | None) -> pl.DataFrame:
        """All rows of a data file, in the table's schema."""
        where = self._where(path)
        data = self._get(path, "read its rows")
        stored = read_parquet_checked(data, None, where=where, rows=rows, remedy=_REMEDY)
        exprs = []
        for name, dtype in self._schema.items():
            if values is not None and name in self._partitions:
                exprs.append(_partition_value(values.get(name), dtype, where, name).alias(name))
            elif name in stored.columns:
                exprs.append(pl.col(name).cast(dtype))
            else:  # a column the file predates: null
                exprs.append(pl.lit(None, dtype).alias(name))
        try:
            frame = stored.select(exprs)
        except pl.exceptions.PolarsError as exc:
            raise SchemaError(
                f"{where}: its columns do not fit the table's schema {dict(self._schema)} "
                f"({exc}); {_REMEDY}"
            ) from None
        _plan.check_nulls(frame, self._key, self._time, where)
        return frame

    # ---------------------------------------------------------------- log interface
    def start(self) -> Position:
        """Offset 0 with nothing consumed: the next plan reads the table's snapshot.

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a"], "t": [1]}).to_arrow())
        >>> sk.DeltaLog(url, key="k", time="t").start()
        Position(offset=0, watermark=None, consumed=[])
        """
        return Position(0, files=FileCursor())

    def describe(self, position: Position) -> str:
        """What ``position`` has consumed of the table, in words (as ``verify`` says it).

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a"], "t": [1]}).to_arrow())
        >>> dlog = sk.DeltaLog(url, key="k", time="t")
        >>> dlog.describe(dlog.start())
        'nothing of the table read yet'
        >>> dlog.describe(dlog.end())
        'read: table versions 0 to 0'
        """
        cursor = position.files
        if cursor is None or cursor.watermark is None:
            return "nothing of the table read yet"
        version, snapshot, path = _parse_watermark(cursor.watermark)
        if snapshot:
            parts = [f"the files of table version {version}'s snapshot before {path!r}"]
        else:
            parts = [f"table versions 0 to {version - 1}"] if version else []
            if path:
                parts.append(f"the files version {version} added before {path!r}")
        if cursor.partial is not None:
            part = _parse_watermark(cursor.partial.path)[2]
            rows = "row" if cursor.partial_rows == 1 else "rows"
            parts.append(f"the first {cursor.partial_rows:,} {rows} of {part!r}")
        return "read: " + ", and ".join(parts) if parts else "nothing of the table read yet"

    def end(self) -> Position:
        """The position after every row of the table's newest version.

        ``scan(start=dlog.end())`` later returns exactly the rows appended after
        this call.

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a", "b"], "t": [1, 2]}).to_arrow())
        >>> sk.DeltaLog(url, key="k", time="t").end()
        Position(offset=2, watermark='00000000000000000001', consumed=[])
        """
        return self.plan(self.start()).end

    def scan(
        self,
        start: Position | int | None = None,
        end: Position | int | None = None,
        *,
        with_offset: str | None = None,
    ) -> pl.LazyFrame:
        """A LazyFrame of the rows with offsets in ``[start, end)``, like ``Log.scan``.

        From a position with files (:meth:`end`, a checkpoint's): the rows
        appended since; from an int or nothing: the table as it is now.

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a", "b"], "t": [1, 2]}).to_arrow())
        >>> sk.DeltaLog(url, key="k", time="t").scan(start=1, with_offset="o").collect().rows()
        [('b', 2, 1)]
        """
        return _plan.scan_plan(self.plan(start), end, with_offset)

    def _snapshot_files(self) -> list[tuple[str, dict[str, Any]]]:
        snapshot = delta.load_snapshot(self._fs, allow=_ALLOW)
        self._version = max(self._version, snapshot.version)
        for path, body in snapshot.files.items():
            self._check_file(path, body)
        return sorted(snapshot.files.items())

    def segments(self) -> pl.DataFrame:
        """One row per data file of the newest version, in path order, offsets from 0.

        Columns as ``Log.segments``: ``partition`` (0), ``seq``, ``offset``,
        ``rows``, ``min_time``, ``max_time`` (from the files' statistics,
        null where the writer recorded none), ``bytes``, ``path``.

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a", "b"], "t": [1, 5]}).to_arrow())
        >>> segs = sk.DeltaLog(url, key="k", time="t").segments()
        >>> segs.select("rows", "min_time", "max_time").rows()
        [(2, 1, 5)]
        """
        tdt = self._schema[self._time]
        rows: list[tuple[Any, ...]] = []
        offset = 0
        for i, (path, body) in enumerate(self._snapshot_files()):
            n = self._rows(body, path)
            low, high = _time_bounds(body, self._time)
            rows.append((0, i, offset, n, low, high, int(body.get("size", 0)), path))
            offset += n
        frame = pl.DataFrame(
            rows,
            schema={
                "partition": pl.Int32,
                "seq": pl.Int64,
                "offset": pl.Int64,
                "rows": pl.Int64,
                "min_time": pl.String,
                "max_time": pl.String,
                "bytes": pl.Int64,
                "path": pl.String,
            },
            orient="row",
        )
        return frame.with_columns(
            _parse_time(pl.col("min_time"), tdt), _parse_time(pl.col("max_time"), tdt)
        )

    def count(self) -> int:
        """Number of rows in the table's newest version.

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a", "b"], "t": [1, 5]}).to_arrow())
        >>> sk.DeltaLog(url, key="k", time="t").count()
        2
        """
        return sum(self._rows(body, path) for path, body in self._snapshot_files())

    def transaction(self, writer: str) -> Transaction | None:
        """Always None: streamkit never writes to a DeltaLog.

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a", "b"], "t": [1, 2]}).to_arrow())
        >>> sk.DeltaLog(url, key="k", time="t").transaction("w") is None
        True
        """
        return None

    def append(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported: a DeltaLog is read-only.

        Raises
        ------
        ConfigurationError
            Always; write to a :class:`~streamkit.Log` from ``Store.log`` instead.

        Examples
        --------
        >>> import tempfile, polars as pl, streamkit as sk
        >>> from deltalake import write_deltalake
        >>> url = tempfile.mkdtemp() + "/events"
        >>> write_deltalake(url, pl.DataFrame({"k": ["a", "b"], "t": [1, 2]}).to_arrow())
        >>> sk.DeltaLog(url, key="k", time="t").append(None)
        Traceback (most recent call last):
        ...
        streamkit.errors.ConfigurationError: DeltaLog ... is read-only; ...
        """
        raise _plan.read_only("DeltaLog", self.name)

    # ---------------------------------------------------------------- display
    def _summary(self) -> tuple[int, int]:
        files = self._snapshot_files()
        return len(files), sum(self._rows(body, path) for path, body in files)

    def __repr__(self) -> str:
        files, rows = self._summary()
        return (
            f"DeltaLog({self.name!r}, key={self._key!r}, time={self._time!r}, "
            f"version={self._version}, files={files}, rows={rows})"
        )

    def _repr_html_(self) -> str:
        files, rows = self._summary()
        cells = [
            ("Delta table", self.name),
            ("key", self._key),
            ("time", self._time),
            ("version", self._version),
            ("files", f"{files:,}"),
            ("rows", f"{rows:,}"),
            ("partition columns", ", ".join(self._partitions) or "none"),
        ]
        return _plan.html_table("streamkit DeltaLog", cells)


class DeltaPlan(PendingPlan[_Pending]):
    """The data files of a :class:`DeltaLog` not consumed at a position, with offsets.

    Made by :meth:`DeltaLog.plan`; fixed once made (versions committed later
    belong to the next plan). Files come in table order: the snapshot's (first
    read) or each version's added files, versions ascending, by smallest
    recorded time then path within one, a file read in part at the start first.

    :attr:`files` names each file by its ``path``, ``version`` (that added it,
    or the snapshot's) and ``snapshot`` (read as part of the first snapshot).
    A :meth:`batch` lists each file it reads as ``[path, size, prefix, rows,
    first row read, rows read]`` (plus the partition values on a partitioned
    table); its ``next`` is the watermark of the position after the batch. The
    batch ending at the plan's end moves the position past the plan's version.

    Attributes
    ----------
    start : Position
        Where the plan starts.
    version : int
        The newest table version the plan covers.

    Examples
    --------
    >>> import tempfile, polars as pl, streamkit as sk
    >>> from deltalake import write_deltalake
    >>> url = tempfile.mkdtemp() + "/events"
    >>> for i in range(2):
    ...     write_deltalake(url, pl.DataFrame({"k": ["a"], "t": [i]}).to_arrow(), mode="append")
    >>> plan = sk.DeltaLog(url, key="k", time="t").plan()
    >>> plan
    DeltaPlan(offsets [0, 2), 2 files, up to version 1, from Position(offset=0, ...))
    >>> plan.cut(0, 1)
    1
    >>> batch = plan.batch(0, 1)
    >>> [f[3:] for f in batch["files"]], batch["next"][:21]
    ([[1, 0, 1]], 's00000000000000000001')
    """

    _NAMES: ClassVar[dict[str, pl.DataType]] = {
        "path": pl.String(),
        "version": pl.Int64(),
        "snapshot": pl.Boolean(),
    }

    def __init__(
        self, dlog: DeltaLog, start: Position, pending: list[_Pending], version: int
    ) -> None:
        super().__init__(dlog, start, pending, BATCH_FILES)
        self.version = version

    def _names(self, p: _Pending) -> tuple[Any, ...]:
        return p.path, int(p.prefix.lstrip("s")), p.prefix.startswith("s")

    def _entry(self, p: _Pending, first: int, count: int) -> list[Any]:
        item: list[Any] = [p.path, p.size, p.prefix, p.rows, first, count]
        if p.values is not None:
            item.append(p.values)
        return item

    def _next(self, j: int, partial: bool) -> str:
        """The watermark after ``pending[:j]``: the file to resume at (the last
        one read, if in part), or the version after the plan's."""
        resume = j - 1 if partial else j
        if resume >= len(self._pending):
            return _prefix(self.version + 1, False)
        return self._pending[resume].key

    def _more(self) -> str:
        return f", up to version {self.version}"


# -------------------------------------------------------------------- helpers
def _partition_value(text: Any, dtype: pl.DataType, where: str, name: str) -> pl.Expr:
    """A partition value (serialized as the protocol says) as a literal of ``dtype``."""
    if text is None:
        return pl.lit(None, dtype)
    series = pl.Series([str(text)])
    try:
        if isinstance(dtype, pl.Datetime):  # "2024-01-01 00:00:00[.ffffff]" or ISO with Z
            series = series.str.replace("T", " ").str.replace(r"Z$", "")
            parsed = series.str.to_datetime(time_unit=dtype.time_unit or "us", time_zone=None)
            if dtype.time_zone is not None:
                parsed = parsed.dt.replace_time_zone("UTC").dt.convert_time_zone(dtype.time_zone)
        elif dtype == pl.Date:
            parsed = series.str.to_date()
        elif dtype == pl.Boolean:
            parsed = series.str.to_lowercase() == "true"
        else:
            parsed = series.cast(dtype)
    except pl.exceptions.PolarsError:
        raise SchemaError(
            f"{where}: partition value {text!r} of column {name!r} is not a {dtype}"
        ) from None
    return pl.lit(parsed.item(), dtype)


def _time_bounds(body: Mapping[str, Any], column: str) -> tuple[Any, Any]:
    """A file's recorded min and max of ``column`` (as JSON gave them), or None."""
    stats = body.get("stats")
    if not isinstance(stats, str):
        return None, None
    try:
        parsed = json.loads(stats)
        low = (parsed.get("minValues") or {}).get(column)
        high = (parsed.get("maxValues") or {}).get(column)
    except (ValueError, AttributeError):
        return None, None
    return (None if low is None else str(low)), (None if high is None else str(high))


def _parse_time(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Stats text (an integer, or an ISO timestamp) as the time column's type."""
    name = expr.meta.output_name()
    if isinstance(dtype, pl.Datetime):
        text = expr.str.replace(r"Z$", "").str.replace(" ", "T")
        parsed = text.str.to_datetime(time_unit=dtype.time_unit or "us", strict=False)
        if dtype.time_zone is not None:
            parsed = parsed.dt.replace_time_zone("UTC").dt.convert_time_zone(dtype.time_zone)
        return parsed.alias(name)
    return expr.cast(dtype, strict=False).alias(name)
