"""A log's commits as Delta Lake actions, streamkit's snapshots, the in-memory state.

A log's folder is a Delta Lake table (``docs/design.md``, "The log")::

    _delta_log/<version:020d>.json                 one commit per version (NDJSON actions)
    _delta_log/<version:020d>.checkpoint.parquet   Delta checkpoint every SNAPSHOT_EVERY
    _delta_log/_last_checkpoint                    Delta's hint (advisory)
    _streamkit/<version:020d>.snapshot.json        streamkit's full state, same versions
    _streamkit/_last_snapshot.json                 streamkit's hint (advisory)
    data/p=PPP/<ms>-<uuid>.parquet                 immutable segments

What a streamkit commit holds, action by action:

* version 0: ``protocol`` (reader 1 / writer 2) and ``metaData`` with no columns
  yet; the key, time, partition count and format live in ``configuration``
  (``streamkit.key``, ...). The data folders ``p=PPP`` are streamkit's hash
  partitions, not Delta partition columns (``partitionColumns`` is empty).
* the first append: a ``metaData`` with the schema (``schemaString``, plus the
  exact Polars schema as ``streamkit.schema``) and, when a column is a
  timestamp without time zone, a ``protocol`` with the ``timestampNtz`` feature
  (reader 3 / writer 7).
* ``add`` per segment: ``stats`` (numRecords, min/max of the time column) and
  streamkit's offsets, segment number, partition, crc32 and writer in ``tags``.
* ``remove`` (``dataChange`` true) per segment dropped by truncate or retract.
* ``txn`` (``appId`` = writer, ``version`` = seq) for an append with a writer.
* ``commitInfo`` first: timestamp, operation, and under ``streamkit`` the
  version, operation, next offset, the transaction's meta, a unique commit id,
  and the CRC-32 of every other action (verified before anything is trusted).

streamkit's own snapshots and hint are JSON objects carrying a ``checksum``
field: the CRC-32 of the canonical JSON encoding (sorted keys, no spaces) of
the other fields. A file that does not parse, lacks a field or whose checksum
differs raises :class:`~streamkit.errors.CorruptFileError` naming it.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from streamkit.errors import CorruptFileError, SchemaError
from streamkit.storage import _delta
from streamkit.storage._fs import crc32

__all__ = [
    "FORMAT",
    "HINT",
    "LOG_DIR",
    "OLD_LOG_DIR",
    "SNAPSHOT_EVERY",
    "LogState",
    "Segment",
    "apply_version",
    "checkpoint_path",
    "decode",
    "delta_schema",
    "encode",
    "encode_version",
    "safe_relpath",
    "snapshot_path",
    "state_from_snapshot",
    "state_to_snapshot",
    "version_path",
]

#: streamkit's log format: 1 was the ``_log/`` folder, 2 is a Delta table.
FORMAT = 2
SNAPSHOT_EVERY = 32
LOG_DIR = "_delta_log"
#: streamkit's own files; Delta readers (and Delta's VACUUM: a ``_`` folder) ignore it.
SK_DIR = "_streamkit"
#: Where format 1 kept its version files (see ``streamkit log upgrade``).
OLD_LOG_DIR = "_log"
HINT = f"{SK_DIR}/_last_snapshot.json"
CHECKPOINT_HINT = f"{LOG_DIR}/_last_checkpoint"
#: Prefix of streamkit's keys in ``configuration`` and ``tags``.
PREFIX = "streamkit."
_OPS = {"create", "append", "truncate", "retract"}
_DELTA_OPERATION = {
    "create": "CREATE TABLE",
    "append": "WRITE",
    "truncate": "DELETE",
    "retract": "DELETE",
}
_EMPTY_SCHEMA = '{"type":"struct","fields":[]}'
_WRITER_2_FEATURES = ("appendOnly", "invariants")


def version_path(version: int) -> str:
    """Relative path of the commit of ``version``.

    Examples
    --------
    >>> version_path(12)
    '_delta_log/00000000000000000012.json'
    """
    return _delta.commit_path(version)


def old_version_path(version: int) -> str:
    """Relative path of a version file of format 1 (before logs were Delta tables).

    Examples
    --------
    >>> old_version_path(3)
    '_log/00000000000000000003.json'
    """
    return f"{OLD_LOG_DIR}/{version:020d}.json"


def snapshot_path(version: int) -> str:
    """Relative path of streamkit's snapshot taken at ``version``.

    Examples
    --------
    >>> snapshot_path(32)
    '_streamkit/00000000000000000032.snapshot.json'
    """
    return f"{SK_DIR}/{version:020d}.snapshot.json"


def checkpoint_path(version: int) -> str:
    """Relative path of the Delta checkpoint of ``version``.

    Examples
    --------
    >>> checkpoint_path(32)
    '_delta_log/00000000000000000032.checkpoint.parquet'
    """
    return _delta.checkpoint_path(version)


_MAX_PATH = 1024


def safe_relpath(path: object, where: str, what: str = "a path") -> str:
    """Return ``path`` if it is a plain relative path that stays below its root.

    Paths read from stored files (a segment in a version file, a state file in a
    checkpoint) are only ever joined to the folder that holds them; a tampered
    or damaged file must not make streamkit read, list or delete anything
    outside. Accepted: ``/``-separated names, each non-empty, printable, not
    ``.`` or ``..``, without ``\\`` or ``:``.

    Raises
    ------
    CorruptFileError
        Naming ``where`` (the stored file the path came from).

    Examples
    --------
    >>> safe_relpath("data/p=000/1-ab.parquet", "v.json")
    'data/p=000/1-ab.parquet'
    >>> safe_relpath("../../etc/passwd", "v.json", "a segment path")
    Traceback (most recent call last):
    ...
    streamkit.errors.CorruptFileError: corrupt file v.json: a segment path ...
    """
    if not isinstance(path, str) or not path:
        raise CorruptFileError(f"corrupt file {where}: {what} {path!r:.200} is not a path")
    problem = None
    if len(path) > _MAX_PATH:
        problem = f"is {len(path)} characters long (at most {_MAX_PATH})"
    elif path.startswith("/") or "\\" in path or ":" in path:
        problem = "is absolute or holds '\\' or ':'"
    elif not path.isprintable():
        problem = "holds non-printable characters"
    elif any(part in {"", ".", ".."} for part in path.split("/")):
        problem = "holds an empty, '.' or '..' component"
    if problem is not None:
        raise CorruptFileError(
            f"corrupt file {where}: {what} {path!r} {problem}; it would point outside "
            "the store's folder. The file was damaged or tampered with: restore it from "
            "a backup"
        )
    return path


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def encode(body: dict[str, Any]) -> bytes:
    """Serialize ``body`` with its checksum (streamkit's snapshots and hint).

    Examples
    --------
    >>> decode(encode({"a": 1}), "x.json")
    {'a': 1}
    """
    payload = _canonical(body)
    checked = dict(body)
    checked["checksum"] = crc32(payload)
    return _canonical(checked)


def decode(data: bytes, where: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse and verify a file written by :func:`encode`.

    Parameters
    ----------
    data : bytes
        File content.
    where : str
        The file, for error messages.
    required : tuple of str
        Fields that must be present.

    Raises
    ------
    CorruptFileError
        If the content does not parse, the checksum differs or a field is missing.

    Examples
    --------
    >>> decode(b"{", "v.json")
    Traceback (most recent call last):
    ...
    streamkit.errors.CorruptFileError: corrupt file v.json: ...
    """
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(
            f"corrupt file {where}: expected a JSON object, found unparsable content "
            f"({exc.__class__.__name__}: {exc}); restore the file from a backup"
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get("checksum"), int):
        raise CorruptFileError(
            f"corrupt file {where}: expected a JSON object with a 'checksum' field, "
            f"found {type(body).__name__}; restore the file from a backup"
        )
    stored = body.pop("checksum")
    found = crc32(_canonical(body))
    if stored != found:
        raise CorruptFileError(
            f"corrupt file {where}: expected checksum {stored:#010x}, found "
            f"{found:#010x} (the content changed after commit); restore it from a backup"
        )
    missing = [name for name in required if name not in body]
    if missing:
        raise CorruptFileError(
            f"corrupt file {where}: expected fields {list(required)}, missing {missing}"
        )
    return body


# -------------------------------------------------------------------- schemas
def schema_to_b64(schema: pl.Schema, where: str) -> str:
    """The Arrow IPC serialization of ``schema``, base64-encoded.

    Examples
    --------
    >>> text = schema_to_b64(pl.Schema({"k": pl.String}), "log")
    >>> schema_from_b64(text, "log")
    Schema([('k', String)])
    """
    try:
        arrow = pl.DataFrame(schema=schema).to_arrow().schema
    except Exception as exc:
        raise SchemaError(
            f"{where}: a column type cannot be stored ({type(exc).__name__}: {exc}); "
            "cast it to a supported type (e.g. Int128 to Int64 or Decimal)"
        ) from None
    return base64.b64encode(arrow.serialize().to_pybytes()).decode("ascii")


def schema_from_b64(text: str, where: str) -> pl.Schema:
    """Inverse of :func:`schema_to_b64`."""
    try:
        arrow = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
        frame = pl.from_arrow(pa.Table.from_batches([], schema=arrow))
    except Exception as exc:
        raise CorruptFileError(
            f"corrupt schema in {where}: {type(exc).__name__}: {exc}; restore the log "
            "metadata from a backup"
        ) from None
    assert isinstance(frame, pl.DataFrame)
    return frame.schema


def delta_schema(schema: pl.Schema, where: str) -> tuple[str, dict[str, Any]]:
    """The Delta ``schemaString`` of ``schema`` and the protocol it needs.

    Raises
    ------
    SchemaError
        Naming a column whose type a Delta table cannot hold (nanosecond
        timestamps, durations, times of day, ...) and the cast that fixes it.

    Examples
    --------
    >>> text, protocol = delta_schema(pl.Schema({"k": pl.String, "t": pl.Int64}), "log")
    >>> protocol
    {'minReaderVersion': 1, 'minWriterVersion': 2}
    >>> delta_schema(pl.Schema({"t": pl.Datetime("ns")}), "log")
    Traceback (most recent call last):
    ...
    streamkit.errors.SchemaError: log: column 't' ...
    """
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Datetime) and dtype.time_unit == "ns":
            zone = "" if dtype.time_zone is None else f", {dtype.time_zone!r}"
            raise SchemaError(
                f"{where}: column {name!r} is {dtype}: a log is a Delta Lake table, and "
                "Delta timestamps hold microseconds; cast it before appending with "
                f"pl.col({name!r}).cast(pl.Datetime('us'{zone}))"
            )
    arrow = _widened(pl.DataFrame(schema=schema).to_arrow().schema)
    try:
        converted = _delta.schema_to_delta(arrow)
    except SchemaError as exc:
        raise SchemaError(f"{where}: a log is a Delta Lake table: {exc}") from None
    text = json.dumps(converted, separators=(",", ":"), ensure_ascii=False)
    return text, _delta.required_protocol(arrow)


#: Unsigned integers are described to Delta as the signed type that holds every
#: value (as Spark reads unsigned Parquet columns); the segments keep them as written.
_WIDER = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64()}


def _widened(schema: pa.Schema) -> pa.Schema:
    """``schema`` with top-level unsigned integers (but 64-bit) widened to signed ones."""
    return pa.schema([f.with_type(_WIDER.get(f.type, f.type)) for f in schema])


# -------------------------------------------------------------------- segments
@dataclass(frozen=True, slots=True)
class Segment:
    """One committed, immutable Parquet file of a log.

    ``stats`` is the Delta ``stats`` JSON of its ``add`` on its way into a
    commit; the log's state does not keep it (None there, and for a FileLog's
    files): Delta checkpoints are made from the commits.
    """

    path: str
    partition: int
    seq: int
    offset: int
    rows: int
    min_time: int
    max_time: int
    bytes: int
    crc32: int
    version: int
    writer: str | None = None
    writer_seq: int | None = None
    stats: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (streamkit's snapshots)."""
        return {
            "path": self.path,
            "partition": self.partition,
            "seq": self.seq,
            "offset": self.offset,
            "rows": self.rows,
            "min_time": self.min_time,
            "max_time": self.max_time,
            "bytes": self.bytes,
            "crc32": self.crc32,
            "version": self.version,
            "writer": self.writer,
            "writer_seq": self.writer_seq,
            **({} if self.stats is None else {"stats": self.stats}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Segment:
        """Parse the JSON form, raising CorruptFileError on a bad entry."""
        if not isinstance(data, dict):
            raise CorruptFileError(
                f"corrupt file {where}: a segment entry must be an object, found {data!r:.200}"
            )
        path = safe_relpath(data.get("path"), where, "a segment path")
        try:
            return cls(
                path=path,
                partition=int(data["partition"]),
                seq=int(data["seq"]),
                offset=int(data["offset"]),
                rows=int(data["rows"]),
                min_time=int(data["min_time"]),
                max_time=int(data["max_time"]),
                bytes=int(data["bytes"]),
                crc32=int(data["crc32"]),
                version=int(data["version"]),
                writer=None if data.get("writer") is None else str(data["writer"]),
                writer_seq=None if data.get("writer_seq") is None else int(data["writer_seq"]),
                stats=None if data.get("stats") is None else str(data["stats"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(
                f"corrupt file {where}: a segment entry lacks or mistypes {exc}: {data!r:.300}"
            ) from None

    def to_add(self) -> dict[str, Any]:
        """The Delta ``add`` action of this segment (its value, without the ``add`` key)."""
        tags = {
            f"{PREFIX}offset": str(self.offset),
            f"{PREFIX}rows": str(self.rows),
            f"{PREFIX}partition": str(self.partition),
            f"{PREFIX}seq": str(self.seq),
            f"{PREFIX}crc32": str(self.crc32),
            f"{PREFIX}minTime": str(self.min_time),
            f"{PREFIX}maxTime": str(self.max_time),
            f"{PREFIX}version": str(self.version),
        }
        if self.writer is not None:
            tags[f"{PREFIX}writer"] = self.writer
            tags[f"{PREFIX}writerSeq"] = str(self.writer_seq)
        add: dict[str, Any] = {
            "path": _delta.encode_path(self.path),
            "partitionValues": {},
            "size": self.bytes,
            "modificationTime": _name_stamp(self.path),
            "dataChange": True,
        }
        if self.stats is not None:
            add["stats"] = self.stats
        add["tags"] = tags
        return add

    @classmethod
    def from_add(cls, add: Any, where: str) -> Segment:
        """Parse an ``add`` written by :meth:`to_add`, raising CorruptFileError."""
        if not isinstance(add, dict) or not isinstance(add.get("tags"), dict):
            raise CorruptFileError(
                f"corrupt file {where}: an 'add' without streamkit's tags ({add!r:.200}); "
                "a streamkit log is written by streamkit alone: restore the file from a "
                "backup, or read a table written by other engines with sk.DeltaLog"
            )
        tags = add["tags"]
        raw = add.get("path")
        path = safe_relpath(
            _delta.data_path(add) if isinstance(raw, str) else raw, where, "a segment path"
        )
        try:
            writer = tags.get(f"{PREFIX}writer")
            return cls(
                path=path,
                partition=int(tags[f"{PREFIX}partition"]),
                seq=int(tags[f"{PREFIX}seq"]),
                offset=int(tags[f"{PREFIX}offset"]),
                rows=int(tags[f"{PREFIX}rows"]),
                min_time=int(tags[f"{PREFIX}minTime"]),
                max_time=int(tags[f"{PREFIX}maxTime"]),
                bytes=int(add["size"]),
                crc32=int(tags[f"{PREFIX}crc32"]),
                version=int(tags[f"{PREFIX}version"]),
                writer=None if writer is None else str(writer),
                writer_seq=None if writer is None else int(tags[f"{PREFIX}writerSeq"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(
                f"corrupt file {where}: an 'add' lacks or mistypes {exc}: {add!r:.300}"
            ) from None

    @property
    def end(self) -> int:
        """Offset just past the segment's last row."""
        return self.offset + self.rows


def _name_stamp(path: str) -> int:
    """The creation time (ms) in a segment's name ``<ms>-<uuid>.parquet``, else 0."""
    head = path.rsplit("/", 1)[-1].split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def _bounds_stats(
    rows: int,
    scalar: dict[str, pl.DataType],
    found: dict[str, tuple[Any, Any, int, bool]],
) -> str:
    """Delta ``stats`` from each scalar column's ``(min, max, nulls, sound)``.

    The bounds are formatted by :func:`~streamkit.storage._delta.file_stats`
    from a two-row frame of them (booleans added); ``sound`` False (a NaN, no
    bound recorded) or a bound ``file_stats`` leaves out makes the column
    incomplete, and then no bounds are written at all (see :func:`data_stats`).
    """
    arrow = _arrow_schema(tuple(scalar.items()))
    bounds = pa.table([pa.array(list(found[f.name][:2]), type=f.type) for f in arrow], schema=arrow)
    stats = json.loads(_delta.file_stats(bounds))
    low, high = stats["minValues"], stats["maxValues"]
    nulls = {name: found[name][2] for name in scalar}
    complete = True
    for name, dtype in scalar.items():
        lo, hi, count, sound = found[name]
        if count == rows:
            low.pop(name, None)
            high.pop(name, None)
            continue
        if dtype == pl.Boolean and lo is not None and hi is not None:
            low[name], high[name] = lo, hi
        if not sound or name not in low or name not in high:
            complete = False
    out: dict[str, Any] = {"numRecords": rows}
    if complete:
        out.update(minValues=low, maxValues=high)
    out["nullCount"] = nulls
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=256)
def _arrow_schema(columns: tuple[tuple[str, pl.DataType], ...]) -> pa.Schema:
    """The Arrow schema Polars writes for ``columns`` (cached: one per log, in practice)."""
    return pl.DataFrame(schema=dict(columns)).to_arrow().schema


def _scalar_columns(frame: pl.DataFrame) -> dict[str, pl.DataType]:
    """Columns a Delta stat can bound (categoricals as their strings), in order."""
    return {
        name: pl.String() if isinstance(dtype, pl.Categorical | pl.Enum) else dtype
        for name, dtype in frame.schema.items()
        if not dtype.is_nested()
    }


def parquet_stats(metadata: pq.FileMetaData, frame: pl.DataFrame) -> str:
    """The Delta ``stats`` of the Parquet file holding ``frame``, from its footer.

    The bounds the Parquet writer recorded per row group (exact, but for
    strings longer than 64 characters, which Delta's 32-character rule leaves
    out anyway), merged; NaN, which Parquet bounds leave out, is looked for
    in ``frame``'s float columns. Equals :func:`data_stats` of ``frame``
    (a test holds it to that) at a small part of its cost.
    """
    scalar = _scalar_columns(frame)
    index = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    floats = [name for name, dtype in scalar.items() if dtype.is_float()]
    nan = frame.select(pl.col(floats).is_nan().any()).row(0) if floats else ()
    has_nan = dict(zip(floats, nan, strict=True))
    found: dict[str, tuple[Any, Any, int, bool]] = {}
    for name in scalar:
        lo = hi = None
        nulls = 0
        sound = not has_nan.get(name, False)
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            chunk = group.column(index[name])
            st = chunk.statistics
            if st is None or not st.has_null_count:
                sound, nulls = False, frame[name].null_count()
                break
            nulls += st.null_count
            if st.null_count == group.num_rows:
                continue
            if not st.has_min_max:
                sound = False
                continue
            lo = st.min if lo is None else min(lo, st.min)
            hi = st.max if hi is None else max(hi, st.max)
        found[name] = (lo, hi, nulls, sound)
    return _bounds_stats(frame.height, scalar, found)


def data_stats(frame: pl.DataFrame) -> str:
    """The Delta ``stats`` of a segment holding ``frame``: bounds for every column, or none.

    What :func:`~streamkit.storage._delta.file_stats` writes for the frame,
    with the bounds of boolean columns added. Engines built on delta-rs (its
    Arrow dataset, so DuckDB too) take a column missing from
    ``minValues``/``maxValues`` for a column of nulls and skip the file for
    any filter on it (delta-rs 1.6): so when a scalar column that is not all
    null has no sound bounds (NaN, a string longer than 32 characters, a
    decimal or binary column), no bounds are written at all, only the row and
    null counts, and every engine reads the file. Writers use the same stats
    read from the Parquet footer (:func:`parquet_stats`); this is the plain
    reference it is tested against.

    Examples
    --------
    >>> data_stats(pl.DataFrame({"k": ["a", "b"], "t": [3, 1]}))
    '{"numRecords":2,"minValues":{"k":"a","t":1},"maxValues":{"k":"b","t":3},"nullCount":{"k":0,"t":0}}'
    >>> data_stats(pl.DataFrame({"t": [3, 1], "x": [1.0, float("nan")]}))
    '{"numRecords":2,"nullCount":{"t":0,"x":0}}'
    """
    scalar = _scalar_columns(frame)
    found: dict[str, tuple[Any, Any, int, bool]] = {}
    for name, dtype in scalar.items():
        col = frame[name].cast(dtype)
        nan = dtype.is_float() and bool(col.is_nan().any())
        found[name] = (col.min(), col.max(), col.null_count(), not nan)
    return _bounds_stats(frame.height, scalar, found)


# -------------------------------------------------------------------- state
@dataclass(slots=True)
class LogState:
    """Everything a reader or writer needs to know about a log at one version.

    ``protocol`` and ``metadata`` are the current Delta ``protocol`` and
    ``metaData`` action values (what a checkpoint repeats).
    """

    version: int
    key: str
    time: str
    partitions: int
    created: int
    schema: str | None = None
    next_offset: int = 0
    next_segment: int = 0
    segments: dict[str, Segment] = field(default_factory=dict)
    txns: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> LogState:
        """A copy safe to modify (segments are immutable and shared)."""
        return LogState(
            version=self.version,
            key=self.key,
            time=self.time,
            partitions=self.partitions,
            created=self.created,
            schema=self.schema,
            next_offset=self.next_offset,
            next_segment=self.next_segment,
            segments=dict(self.segments),
            txns=copy.deepcopy(self.txns),
            protocol=self.protocol,
            metadata=self.metadata,
        )

    def live(self) -> list[Segment]:
        """Live segments in offset order."""
        return sorted(self.segments.values(), key=lambda s: s.offset)


def create_body(key: str, time_col: str, partitions: int) -> dict[str, Any]:
    """Body of version 0 (see :func:`encode_version`)."""
    return {
        "op": "create",
        "timestamp": now_ms(),
        "commit": uuid.uuid4().hex,
        "table_id": str(uuid.uuid4()),
        "metadata": {"key": key, "time": time_col, "partitions": partitions},
        "add": [],
        "remove": [],
        "schema": None,
        "txn": None,
        "next_offset": 0,
    }


def _metadata_action(
    table_id: str, created: int, config: dict[str, str], schema_string: str
) -> dict[str, Any]:
    return {
        "id": table_id,
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema_string,
        "partitionColumns": [],
        "configuration": config,
        "createdTime": created,
    }


def encode_version(state: LogState | None, body: dict[str, Any], version: int) -> bytes:
    """The commit of ``version``: ``body`` (as :func:`create_body` or a writer builds it)
    as Delta actions, ``commitInfo`` first with its checksum.

    ``body`` holds ``op``, ``timestamp``, ``commit`` (a unique id: equal bytes
    mean the same commit), ``add`` (segment dicts, :meth:`Segment.to_dict`),
    ``remove`` (paths), ``schema`` (the exact schema when this version sets it),
    ``txn`` (``{writer, seq, meta}`` or None), ``next_offset``; version 0 also
    ``table_id`` and ``metadata`` (key, time, partitions); a retract ``retract``.
    """
    op = body["op"]
    timestamp = int(body["timestamp"])
    info: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "op": op,
        "commit": body["commit"],
        "next_offset": int(body["next_offset"]),
    }
    actions: list[dict[str, Any]] = []
    if op == "create":
        meta = body["metadata"]
        config = {
            f"{PREFIX}format": str(FORMAT),
            f"{PREFIX}key": str(meta["key"]),
            f"{PREFIX}time": str(meta["time"]),
            f"{PREFIX}partitions": str(int(meta["partitions"])),
        }
        actions.append({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
        actions.append(
            {"metaData": _metadata_action(body["table_id"], timestamp, config, _EMPTY_SCHEMA)}
        )
    elif body.get("schema") is not None:
        assert state is not None
        polars_schema = schema_from_b64(body["schema"], version_path(version))
        schema_string, protocol = delta_schema(polars_schema, version_path(version))
        if protocol["minWriterVersion"] == 7 and state.protocol.get("minWriterVersion") == 2:
            # A table moving to table features lists those its old writer version
            # implied (writer 2: appendOnly, invariants), as the protocol asks.
            features = {*protocol["writerFeatures"], *_WRITER_2_FEATURES}
            protocol = {**protocol, "writerFeatures": sorted(features)}
        if protocol != state.protocol:
            actions.append({"protocol": protocol})
        old = state.metadata
        config = dict(old["configuration"])
        config[f"{PREFIX}schema"] = body["schema"]
        actions.append(
            {
                "metaData": _metadata_action(
                    old["id"], int(old["createdTime"]), config, schema_string
                )
            }
        )
    for entry in body["add"]:
        seg = Segment.from_dict(entry, version_path(version))
        if seg.stats is None:  # no bounds known (an upgraded log): the row count
            seg = dataclasses.replace(seg, stats=json.dumps({"numRecords": seg.rows}))
        actions.append({"add": seg.to_add()})
    for path in body["remove"]:
        removed: dict[str, Any] = {
            "path": path,
            "deletionTimestamp": timestamp,
            "dataChange": True,
            "extendedFileMetadata": True,
            "partitionValues": {},
        }
        if state is not None and path in state.segments:
            removed["size"] = state.segments[path].bytes
        actions.append({"remove": removed})
    txn = body.get("txn")
    if txn is not None:
        actions.append(
            {"txn": {"appId": txn["writer"], "version": int(txn["seq"]), "lastUpdated": timestamp}}
        )
        info["txn"] = {"writer": txn["writer"], "seq": int(txn["seq"]), "meta": txn["meta"]}
    if body.get("retract") is not None:
        info["retract"] = body["retract"]
    commit_info: dict[str, Any] = {
        "timestamp": timestamp,
        "operation": _DELTA_OPERATION[op],
        "operationParameters": _operation_parameters(op, body),
        "isBlindAppend": op == "append",
        "engineInfo": "streamkit",
        "txnId": body["commit"],
        "streamkit": info,
    }
    return _encode_checked(commit_info, actions)


def _encode_checked(commit_info: dict[str, Any], actions: list[dict[str, Any]]) -> bytes:
    """``commitInfo`` (first line) with ``streamkit.checksum``, then ``actions``.

    The checksum is the CRC-32 of the whole file as written with the checksum
    field left out: the other lines byte for byte, so any change is caught.
    """
    rest = _delta.encode_commit(actions)
    head = _delta.encode_commit([{"commitInfo": commit_info}])
    commit_info["streamkit"]["checksum"] = crc32(head + rest)
    return _delta.encode_commit([{"commitInfo": commit_info}]) + rest


def encode_checked(actions: list[dict[str, Any]]) -> bytes:
    """Encode the actions :func:`decode_checked` returned, checksum recomputed.

    For tools and tests that rewrite a commit on purpose (``commitInfo`` first).

    Examples
    --------
    >>> data = encode_checked([{"commitInfo": {"streamkit": {"version": 1}}}])
    >>> decode_checked(data, "1.json")[0]["commitInfo"]["streamkit"]["version"]
    1
    """
    head, *rest = actions
    info = copy.deepcopy(head["commitInfo"])
    info["streamkit"].pop("checksum", None)
    return _encode_checked(info, list(rest))


def decode_checked(data: bytes, where: str) -> list[dict[str, Any]]:
    """The actions of a streamkit commit, its checksum verified before any is trusted.

    Raises
    ------
    CorruptFileError
        Naming ``where``: not a Delta commit, no streamkit ``commitInfo`` first
        (not written by streamkit), or a checksum that differs.
    """
    actions = _delta.decode_commit(data, where)
    first = actions[0].get("commitInfo") if actions else None
    info = first.get("streamkit") if isinstance(first, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("checksum"), int):
        raise CorruptFileError(
            f"corrupt file {where}: no streamkit commitInfo with a checksum on its first "
            "line: the commit was not written by streamkit; restore the file from a backup "
            "(read tables written by other engines with sk.DeltaLog)"
        )
    assert isinstance(first, dict)
    stored = info["checksum"]
    bare = {**first, "streamkit": {k: v for k, v in info.items() if k != "checksum"}}
    rest = data.split(b"\n", 1)[1] if b"\n" in data else b""
    found = crc32(_delta.encode_commit([{"commitInfo": bare}]) + rest)
    if stored != found:
        raise CorruptFileError(
            f"corrupt file {where}: expected checksum {stored:#010x}, found {found:#010x} "
            "(the content changed after commit); restore it from a backup"
        )
    return actions


def _operation_parameters(op: str, body: dict[str, Any]) -> dict[str, str]:
    if op == "create":
        return {"mode": "ErrorIfExists"}
    if op == "append":
        return {"mode": "Append"}
    return {"predicate": json.dumps([op, len(body["remove"])])}


_VERSION_INFO = ("format", "version", "op", "next_offset")


def apply_version(state: LogState | None, data: bytes, version: int, where: str) -> LogState:
    """Apply the commit ``data`` (numbered ``version``) to ``state``.

    The checksum in ``commitInfo`` is verified before any action is used.
    Returns a new state; ``state`` itself is not modified.
    """
    actions = decode_checked(data, where)
    info: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    adds: list[Any] = []
    removes: list[Any] = []
    txns: list[Any] = []
    for action in actions:
        (kind, value), *rest = action.items()
        if rest or not isinstance(value, dict):
            raise CorruptFileError(f"corrupt file {where}: a malformed action {action!r:.200}")
        if kind == "commitInfo":
            info = value.get("streamkit")
        elif kind == "protocol":
            protocol = value
        elif kind == "metaData":
            metadata = value
        elif kind == "add":
            adds.append(value)
        elif kind == "remove":
            removes.append(value)
        elif kind == "txn":
            txns.append(value)
        else:
            raise CorruptFileError(
                f"corrupt file {where}: a {kind!r} action, which streamkit never writes; a "
                "streamkit log is written by streamkit alone (read tables written by other "
                "engines with sk.DeltaLog)"
            )
    if not isinstance(info, dict) or any(name not in info for name in _VERSION_INFO):
        raise CorruptFileError(
            f"corrupt file {where}: no streamkit commitInfo (format, version, op, "
            "next_offset): the commit was not written by streamkit; restore the file from "
            "a backup (read tables written by other engines with sk.DeltaLog)"
        )
    if info["format"] != FORMAT:
        raise CorruptFileError(
            f"unsupported file {where}: expected log format {FORMAT}, found "
            f"{info['format']!r}; upgrade streamkit"
        )
    if info["version"] != version:
        raise CorruptFileError(
            f"corrupt file {where}: expected version {version}, found {info['version']!r}"
        )
    op = info["op"]
    if op not in _OPS:
        raise CorruptFileError(f"corrupt file {where}: unknown operation {op!r}")
    if protocol is not None:
        _delta.check_readable(protocol, where, metadata)
    if op == "create":
        if version != 0 or protocol is None or metadata is None:
            raise CorruptFileError(
                f"corrupt file {where}: a 'create' must be version 0 with protocol and metaData"
            )
        try:
            config = metadata["configuration"]
            return LogState(
                version=0,
                key=str(config[f"{PREFIX}key"]),
                time=str(config[f"{PREFIX}time"]),
                partitions=int(config[f"{PREFIX}partitions"]),
                created=int(metadata["createdTime"]),
                protocol=protocol,
                metadata=metadata,
            )
        except (KeyError, TypeError, ValueError):
            raise CorruptFileError(
                f"corrupt file {where}: metaData.configuration must have streamkit.key, "
                "streamkit.time and streamkit.partitions"
            ) from None
    if state is None:
        raise CorruptFileError(f"corrupt file {where}: expected a 'create' as version 0")
    new = state.copy()
    new.version = version
    if protocol is not None:
        new.protocol = protocol
    if metadata is not None:
        new.metadata = metadata
        schema = (metadata.get("configuration") or {}).get(f"{PREFIX}schema")
        if schema is not None and new.schema is None:
            new.schema = str(schema)
    for removed in removes:
        new.segments.pop(str(removed.get("path")), None)
    for add in adds:
        seg = Segment.from_add(add, where)
        new.segments[seg.path] = seg
        new.next_segment = max(new.next_segment, seg.seq + 1)
    try:
        new.next_offset = max(new.next_offset, int(info["next_offset"]))
        meta = info.get("txn") or {}
        for txn in txns:
            writer = str(txn["appId"])
            new.txns[writer] = {
                "seq": int(txn["version"]),
                "meta": (meta.get("meta") or {}) if meta.get("writer") == writer else {},
                "version": version,
            }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CorruptFileError(f"corrupt file {where}: a malformed txn or next_offset") from None
    return new


def commit_txn(data: bytes, where: str) -> dict[str, Any] | None:
    """The ``{writer, seq, meta}`` a commit recorded (None without a writer)."""
    for action in decode_checked(data, where):
        info = action.get("commitInfo")
        if isinstance(info, dict):
            txn = (info.get("streamkit") or {}).get("txn")
            return txn if isinstance(txn, dict) else None
    return None


def state_to_snapshot(state: LogState) -> bytes:
    """Encode a full-state snapshot."""
    return encode(
        {
            "format": FORMAT,
            "version": state.version,
            "key": state.key,
            "time": state.time,
            "partitions": state.partitions,
            "created": state.created,
            "schema": state.schema,
            "next_offset": state.next_offset,
            "next_segment": state.next_segment,
            "segments": [seg.to_dict() for seg in state.live()],
            "txns": state.txns,
            "protocol": state.protocol,
            "metadata": state.metadata,
        }
    )


def state_from_snapshot(data: bytes, version: int, where: str) -> LogState:
    """Decode a snapshot written by :func:`state_to_snapshot`."""
    fields = ("format", "version", "key", "time", "partitions", "segments", "txns")
    body = decode(data, where, (*fields, "protocol", "metadata"))
    if body["format"] != FORMAT or body["version"] != version:
        raise CorruptFileError(
            f"corrupt file {where}: expected format {FORMAT} version {version}, found "
            f"format {body['format']!r} version {body['version']!r}"
        )
    segments = [Segment.from_dict(entry, where) for entry in body["segments"]]
    try:
        return LogState(
            version=version,
            key=str(body["key"]),
            time=str(body["time"]),
            partitions=int(body["partitions"]),
            created=int(body.get("created", 0)),
            schema=body.get("schema"),
            next_offset=int(body["next_offset"]),
            next_segment=int(body.get("next_segment", 0)),
            segments={seg.path: seg for seg in segments},
            txns={str(k): dict(v) for k, v in body["txns"].items()},
            protocol=dict(body["protocol"]),
            metadata=dict(body["metadata"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CorruptFileError(f"corrupt file {where}: malformed snapshot fields") from None


def hint_bytes(version: int) -> bytes:
    """Content of the advisory ``_last_snapshot.json`` hint."""
    return encode({"format": FORMAT, "version": version})


# -------------------------------------------------------------------- format 1
def upgrade_body(old: bytes, version: int, where: str) -> dict[str, Any]:
    """The body (for :func:`encode_version`) of format 1's version file ``old``.

    Deterministic: the same old file always gives the same commit bytes, so an
    upgrade that crashed can be run again (its commits are recognised as its own).
    """
    body = decode(old, where, ("format", "version", "op", "add", "remove", "next_offset"))
    if body["format"] != 1 or body["version"] != version or body["op"] not in _OPS:
        raise CorruptFileError(
            f"corrupt file {where}: expected a version {version} of log format 1, found "
            f"format {body['format']!r} version {body['version']!r} op {body['op']!r}"
        )
    out = {
        "op": body["op"],
        "timestamp": int(body.get("timestamp", 0)),
        "commit": str(body.get("commit") or f"upgraded-{version}-{crc32(old):08x}"),
        "add": body["add"],
        "remove": body["remove"],
        "schema": body.get("schema"),
        "txn": body.get("txn"),
        "next_offset": body["next_offset"],
    }
    if body.get("retract") is not None:
        out["retract"] = body["retract"]
    if body["op"] == "create":
        out["metadata"] = body.get("metadata")
        out["table_id"] = str(uuid.UUID(int=crc32(old) << 96 | int(out["timestamp"]), version=4))
    return out
