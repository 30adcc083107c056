"""The Delta Lake transaction-log protocol: names, actions, schemas, stats, snapshots.

Generic: nothing here knows streamkit's logs. A Delta table is a folder whose
``_delta_log/`` holds numbered commits (``00000000000000000012.json``: one JSON
action per line) and, now and then, a checkpoint (``....checkpoint.parquet``:
the whole table state at a version, one action per row) named by
``_delta_log/_last_checkpoint``. The table at version ``v`` is the newest
checkpoint at or before ``v`` with every later commit up to ``v`` applied
(:func:`load_snapshot`, :class:`Snapshot`).

What this module writes was checked against delta-rs (``deltalake``), which
also reads what Spark and DuckDB's delta extension (delta-kernel-rs) read:

* commits: :func:`commit_path`, :func:`encode_commit` (compact NDJSON);
* schemas: :func:`schema_to_delta` / :func:`schema_from_delta` between Arrow
  and the Delta struct type, :func:`required_protocol` for the smallest
  protocol a schema needs (reader 1 / writer 2, or reader 3 / writer 7 with the
  ``timestampNtz`` feature for timestamps without a time zone);
* per-file statistics: :func:`file_stats` (``numRecords``, ``minValues``,
  ``maxValues``, ``nullCount``; timestamps as ISO strings, the maximum rounded
  up to the millisecond so that engines pruning on it never skip a file they
  need);
* classic single-file checkpoints with the column layout delta-rs writes
  (:func:`write_checkpoint`); readers take classic and multi-part ones
  (:func:`read_checkpoint`).

Reading refuses, with a message naming the table, what it cannot honour:
reader features such as deletion vectors or column mapping
(:func:`check_readable`), and commits cleaned up by log retention with no
checkpoint covering them.

Paths in ``add``/``remove`` actions are URIs relative to the table root,
percent-encoded (``x=a%20b/part-0.parquet``); :class:`Snapshot` keys files by
the decoded path, :func:`data_path` decodes one action's path.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamkit.errors import (
    ConfigurationError,
    CorruptFileError,
    LogNotFoundError,
    SchemaError,
)

if TYPE_CHECKING:
    from streamkit.storage._fs import FileSystem

__all__ = [
    "CHECKPOINT_SCHEMA",
    "LAST_CHECKPOINT",
    "LOG_DIR",
    "READER_FEATURES",
    "WRITER_FEATURES",
    "Snapshot",
    "check_readable",
    "check_writable",
    "checkpoint_part_path",
    "checkpoint_path",
    "commit_path",
    "data_path",
    "decode_commit",
    "encode_commit",
    "encode_path",
    "file_stats",
    "latest_version",
    "load_snapshot",
    "parse_log_name",
    "read_checkpoint",
    "read_commits",
    "required_protocol",
    "schema_from_delta",
    "schema_to_delta",
    "write_checkpoint",
]

LOG_DIR = "_delta_log"
LAST_CHECKPOINT = f"{LOG_DIR}/_last_checkpoint"

#: Reader features this module honours (a table needing others is refused).
#: ``timestampNtz`` only adds a type; ``vacuumProtocolCheck`` only constrains
#: vacuum (a reader need not act).
READER_FEATURES = frozenset({"timestampNtz", "vacuumProtocolCheck"})
#: Writer features a writer built on this module honours.
WRITER_FEATURES = frozenset({"timestampNtz", "appendOnly", "invariants"})

#: What to do about an unsupported reader feature, by feature.
_FEATURE_REMEDY = {
    "deletionVectors": (
        "purge them with the writing engine (Spark: ALTER TABLE t SET TBLPROPERTIES "
        "('delta.enableDeletionVectors' = false); REORG TABLE t APPLY (PURGE)) or "
        "write a copy without them"
    ),
    "columnMapping": "write a copy of the table without column mapping",
    "v2Checkpoint": (
        "write classic checkpoints instead (Spark: ALTER TABLE t SET TBLPROPERTIES "
        "('delta.checkpointPolicy' = 'classic')) or write a copy of the table"
    ),
    "typeWidening": "rewrite the table's files in the widened types, or write a copy",
}

_WIDTH = 20
_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\.parquet$")
_CHECKPOINT_PART = re.compile(r"^(\d{20})\.checkpoint\.(\d{10})\.(\d{10})\.parquet$")
_CHECKPOINT_V2 = re.compile(r"^(\d{20})\.checkpoint\.[0-9A-Za-z-]+\.(json|parquet)$")
_CRC = re.compile(r"^(\d{20})\.crc$")
_COMPACTED = re.compile(r"^(\d{20})\.(\d{20})\.compacted\.json$")

_ACTIONS = frozenset(
    {
        "add",
        "remove",
        "metaData",
        "protocol",
        "txn",
        "commitInfo",
        "cdc",
        "domainMetadata",
        "checkpointMetadata",
        "sidecar",
    }
)

# --------------------------------------------------------------------- naming


def commit_path(version: int) -> str:
    """Path of commit ``version`` relative to the table root.

    Examples
    --------
    >>> commit_path(12)
    '_delta_log/00000000000000000012.json'
    """
    return f"{LOG_DIR}/{_padded(version)}.json"


def checkpoint_path(version: int) -> str:
    """Path of the classic single-file checkpoint of ``version``.

    Examples
    --------
    >>> checkpoint_path(12)
    '_delta_log/00000000000000000012.checkpoint.parquet'
    """
    return f"{LOG_DIR}/{_padded(version)}.checkpoint.parquet"


def checkpoint_part_path(version: int, part: int, parts: int) -> str:
    """Path of part ``part`` (1-based) of a multi-part checkpoint of ``version``.

    Examples
    --------
    >>> checkpoint_part_path(10, 1, 2)
    '_delta_log/00000000000000000010.checkpoint.0000000001.0000000002.parquet'
    """
    if not 1 <= part <= parts:
        raise ValueError(f"checkpoint part {part} outside 1..{parts}")
    return f"{LOG_DIR}/{_padded(version)}.checkpoint.{part:010d}.{parts:010d}.parquet"


def _padded(version: int) -> str:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"a Delta table version is an integer >= 0, not {version!r}")
    return f"{version:0{_WIDTH}d}"


def parse_log_name(name: str) -> tuple[int, str] | None:
    """The version and kind of a file in ``_delta_log/``, or None.

    Parameters
    ----------
    name : str
        A file name, or a path ending in one (``_delta_log/`` prefix allowed).

    Returns
    -------
    tuple or None
        ``(version, kind)`` with kind ``"commit"``, ``"checkpoint"`` (classic,
        single file), ``"checkpoint-part"`` (one part of a multi-part
        checkpoint), ``"checkpoint-v2"`` (a V2 checkpoint, named by a uuid),
        ``"crc"`` (a version checksum file) or ``"compacted"`` (a log
        compaction file, by its first version); None for anything else
        (``_last_checkpoint``, temporary files, ...).

    Examples
    --------
    >>> parse_log_name("_delta_log/00000000000000000012.json")
    (12, 'commit')
    >>> parse_log_name("00000000000000000010.checkpoint.parquet")
    (10, 'checkpoint')
    >>> parse_log_name("00000000000000000010.checkpoint.0000000001.0000000002.parquet")
    (10, 'checkpoint-part')
    >>> parse_log_name("_last_checkpoint") is None
    True
    """
    base = name.rsplit("/", 1)[-1]
    for pattern, kind in (
        (_COMMIT, "commit"),
        (_CHECKPOINT, "checkpoint"),
        (_CHECKPOINT_PART, "checkpoint-part"),
        (_CHECKPOINT_V2, "checkpoint-v2"),
        (_CRC, "crc"),
        (_COMPACTED, "compacted"),
    ):
        match = pattern.match(base)
        if match:
            return int(match.group(1)), kind
    return None


def data_path(action: Mapping[str, Any]) -> str:
    """The decoded path of an ``add``/``remove`` action's file.

    Relative to the table root, unless the action names an absolute URI
    (``s3://...``, ``file:///...``), which is returned as is (decoded).

    Examples
    --------
    >>> data_path({"path": "x=a%20b/part-0.parquet"})
    'x=a b/part-0.parquet'
    """
    return unquote(str(action["path"]))


def encode_path(path: str) -> str:
    """Percent-encode a relative data file path for an ``add``/``remove`` action.

    Examples
    --------
    >>> encode_path("x=a b/part-0.parquet")
    'x=a%20b/part-0.parquet'
    """
    return quote(path, safe="/=-_.~!$&'()*+,;:@")


# -------------------------------------------------------------------- commits


def encode_commit(actions: Sequence[Mapping[str, Any]]) -> bytes:
    """A commit file's bytes: one action per line, compact JSON, UTF-8.

    Parameters
    ----------
    actions : sequence of dict
        Each a single-key mapping such as ``{"add": {...}}``.

    Raises
    ------
    ValueError
        An action that is not a single-key mapping, or a value JSON cannot
        hold (NaN, infinity, an object JSON does not know).

    Examples
    --------
    >>> encode_commit([{"txn": {"appId": "w", "version": 3}}])
    b'{"txn":{"appId":"w","version":3}}\\n'
    """
    lines = []
    for i, action in enumerate(actions):
        if not isinstance(action, Mapping) or len(action) != 1:
            raise ValueError(
                f"action {i} is not a single-key mapping such as {{'add': {{...}}}}: "
                f"{action!r:.200}"
            )
        try:
            text = json.dumps(action, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"action {i} cannot be written as JSON: {exc}") from None
        lines.append(text)
    return ("\n".join(lines) + "\n").encode() if lines else b""


def decode_commit(data: bytes, where: str) -> list[dict[str, Any]]:
    """The actions of a commit file.

    Blank lines are skipped; unknown action kinds are kept (a reader ignores
    them), unknown fields of known ones too.

    Parameters
    ----------
    data : bytes
        The file's bytes.
    where : str
        The file (named in errors).

    Raises
    ------
    CorruptFileError
        Not UTF-8, a line that is not a JSON object with one key, or a known
        action missing a field every reader needs (``add.path``, ...).

    Examples
    --------
    >>> decode_commit(b'{"txn":{"appId":"w","version":3}}\\n', "0.json")
    [{'txn': {'appId': 'w', 'version': 3}}]
    >>> decode_commit(b'{"add":{}}', "t/_delta_log/0...1.json")
    Traceback (most recent call last):
    ...
    streamkit.errors.CorruptFileError: corrupt Delta commit t/_delta_log/0...1.json (line 1): ...
    """

    def bad(line: int, what: str) -> CorruptFileError:
        return CorruptFileError(
            f"corrupt Delta commit {where} (line {line}): {what}; the file was damaged "
            "or written by a broken writer: restore it from a backup"
        )

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(1, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    out: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError as exc:
            raise bad(number, f"not JSON ({exc})") from None
        if not isinstance(action, dict) or len(action) != 1:
            raise bad(
                number, f"expected one action object such as {{'add': ...}}, found {line:.120}"
            )
        ((kind, body),) = action.items()
        if kind in _ACTIONS:
            problem = _shape_problem(kind, body)
            if problem:
                raise bad(number, problem)
        out.append(action)
    return out


def _shape_problem(kind: str, body: Any) -> str | None:
    """What is wrong with a known action's body, if anything a reader needs."""
    if not isinstance(body, dict):
        return f"the {kind!r} action is not an object"
    needed: dict[str, type | tuple[type, ...]] = {}
    if kind in ("add", "remove", "cdc", "sidecar"):
        needed = {"path": str}
    if kind == "add":
        needed.update(size=int)
    elif kind == "metaData":
        needed = {"id": str, "schemaString": str}
    elif kind == "protocol":
        needed = {"minReaderVersion": int, "minWriterVersion": int}
    elif kind == "txn":
        needed = {"appId": str, "version": int}
    for name, kind_type in needed.items():
        value = body.get(name)
        if not isinstance(value, kind_type) or isinstance(value, bool):
            return f"{kind}.{name} is missing or not a {getattr(kind_type, '__name__', kind_type)}"
    return None


# -------------------------------------------------------------------- schemas

_PRIMITIVE_TO_DELTA: dict[pa.DataType, str] = {
    pa.int8(): "byte",
    pa.int16(): "short",
    pa.int32(): "integer",
    pa.int64(): "long",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.bool_(): "boolean",
    pa.string(): "string",
    pa.large_string(): "string",
    pa.string_view(): "string",
    pa.binary(): "binary",
    pa.large_binary(): "binary",
    pa.binary_view(): "binary",
    pa.date32(): "date",
    pa.date64(): "date",
}
_DELTA_TO_PRIMITIVE: dict[str, pa.DataType] = {
    "byte": pa.int8(),
    "short": pa.int16(),
    "integer": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "binary": pa.binary(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "timestamp_ntz": pa.timestamp("us"),
}
_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(-?\d+)\s*\)$")


def schema_to_delta(schema: pa.Schema) -> dict[str, Any]:
    """The Delta struct type of an Arrow schema (``json.dumps`` it for ``schemaString``).

    Timestamps with a time zone become ``timestamp`` (an instant), without one
    ``timestamp_ntz``; Delta stores both in microseconds, so data written
    under such a schema should be cast to ``timestamp[us]``. Large and view
    string/binary types become ``string``/``binary``, dictionaries their value
    type.

    Raises
    ------
    SchemaError
        A column of a type Delta cannot hold (unsigned integers, float16,
        durations, times of day, the null type, unions, decimals wider than
        38 digits); the message names the column and a type to cast to.

    Examples
    --------
    >>> import pyarrow as pa
    >>> schema_to_delta(pa.schema([("k", pa.string()), ("t", pa.timestamp("us"))]))["fields"][1]
    {'name': 't', 'type': 'timestamp_ntz', 'nullable': True, 'metadata': {}}
    >>> schema_to_delta(pa.schema([("n", pa.uint32())]))
    Traceback (most recent call last):
    ...
    streamkit.errors.SchemaError: column 'n' has type uint32, which a Delta table cannot hold; ...
    """
    return {
        "type": "struct",
        "fields": [_field_to_delta(f, f.name) for f in schema],
    }


def _field_to_delta(f: pa.Field, where: str) -> dict[str, Any]:
    return {
        "name": f.name,
        "type": _type_to_delta(f.type, where),
        "nullable": bool(f.nullable),
        "metadata": {},
    }


def _type_to_delta(t: pa.DataType, where: str) -> Any:
    if pa.types.is_dictionary(t):
        return _type_to_delta(t.value_type, where)
    simple = _PRIMITIVE_TO_DELTA.get(t)
    if simple is not None:
        return simple
    if pa.types.is_fixed_size_binary(t):
        return "binary"
    if pa.types.is_timestamp(t):
        return "timestamp" if t.tz is not None else "timestamp_ntz"
    if pa.types.is_decimal(t) and t.precision <= 38:
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return {
            "type": "array",
            "elementType": _type_to_delta(t.value_type, f"{where}[]"),
            "containsNull": bool(t.value_field.nullable),
        }
    if pa.types.is_map(t):
        return {
            "type": "map",
            "keyType": _type_to_delta(t.key_type, f"{where}.key"),
            "valueType": _type_to_delta(t.item_type, f"{where}.value"),
            "valueContainsNull": bool(t.item_field.nullable),
        }
    if pa.types.is_struct(t):
        return {
            "type": "struct",
            "fields": [
                _field_to_delta(t.field(i), f"{where}.{t.field(i).name}")
                for i in range(t.num_fields)
            ],
        }
    hint = "a supported type"
    if pa.types.is_unsigned_integer(t):
        hint = "a signed integer wide enough (uint8 -> Int16, uint16 -> Int32, uint32 -> Int64)"
    elif pa.types.is_floating(t):
        hint = "Float32"
    elif pa.types.is_duration(t) or pa.types.is_time(t):
        hint = "an integer count of its unit"
    elif pa.types.is_null(t):
        hint = "a typed column (pl.lit(None, dtype=...))"
    raise SchemaError(
        f"column {where!r} has type {t}, which a Delta table cannot hold; cast it to {hint}"
    )


def schema_from_delta(struct: Mapping[str, Any] | str) -> pa.Schema:
    """The Arrow schema of a Delta struct type (or of its JSON text).

    ``timestamp`` becomes ``timestamp[us, tz=UTC]``, ``timestamp_ntz``
    ``timestamp[us]``, ``string`` Arrow's ``string``.

    Raises
    ------
    SchemaError
        A type this reader does not know (``variant``, ...), naming the column.
    CorruptFileError
        Text that is not a JSON struct type.

    Examples
    --------
    >>> schema_from_delta('{"type":"struct","fields":[{"name":"t","type":"timestamp",'
    ...                   '"nullable":false,"metadata":{}}]}')
    t: timestamp[us, tz=UTC] not null
    """
    if isinstance(struct, str):
        try:
            struct = json.loads(struct)
        except ValueError as exc:
            raise CorruptFileError(f"a Delta schemaString is not JSON: {exc}") from None
    if not isinstance(struct, Mapping) or struct.get("type") != "struct":
        raise CorruptFileError(f"a Delta schema is not a struct type: {str(struct)[:200]}")
    return pa.schema([_field_from_delta(f, str(f.get("name"))) for f in struct.get("fields", [])])


def _field_from_delta(f: Mapping[str, Any], where: str) -> pa.Field:
    if not isinstance(f, Mapping) or not isinstance(f.get("name"), str) or "type" not in f:
        raise CorruptFileError(f"a Delta schema field is malformed: {str(f)[:200]}")
    return pa.field(
        f["name"], _type_from_delta(f["type"], where), nullable=bool(f.get("nullable", True))
    )


def _type_from_delta(t: Any, where: str) -> pa.DataType:
    if isinstance(t, str):
        simple = _DELTA_TO_PRIMITIVE.get(t)
        if simple is not None:
            return simple
        match = _DECIMAL.match(t)
        if match:
            return pa.decimal128(int(match.group(1)), int(match.group(2)))
        raise SchemaError(
            f"column {where!r} has Delta type {t!r}, which streamkit cannot read; "
            "select the other columns into a copy of the table"
        )
    if isinstance(t, Mapping):
        kind = t.get("type")
        if kind == "array":
            element = _type_from_delta(t.get("elementType"), f"{where}[]")
            return pa.list_(
                pa.field("element", element, nullable=bool(t.get("containsNull", True)))
            )
        if kind == "map":
            key = _type_from_delta(t.get("keyType"), f"{where}.key")
            value = _type_from_delta(t.get("valueType"), f"{where}.value")
            return pa.map_(
                pa.field("key", key, nullable=False),
                pa.field("value", value, nullable=bool(t.get("valueContainsNull", True))),
            )
        if kind == "struct":
            return pa.struct(
                [_field_from_delta(f, f"{where}.{f.get('name')}") for f in t.get("fields", [])]
            )
    raise CorruptFileError(f"a Delta schema holds a malformed type at {where!r}: {str(t)[:200]}")


def _has_ntz(t: pa.DataType) -> bool:
    if pa.types.is_timestamp(t):
        return t.tz is None
    if pa.types.is_dictionary(t):
        return _has_ntz(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_ntz(t.value_type)
    if pa.types.is_map(t):
        return _has_ntz(t.key_type) or _has_ntz(t.item_type)
    if pa.types.is_struct(t):
        return any(_has_ntz(t.field(i).type) for i in range(t.num_fields))
    return False


def required_protocol(schema: pa.Schema) -> dict[str, Any]:
    """The smallest ``protocol`` action body a table of ``schema`` needs.

    Reader 1 / writer 2 (what every Delta reader since 2019 accepts: no reader
    features, the writer must honour ``appendOnly`` and ``invariants``), or,
    when a timestamp without a time zone appears anywhere, reader 3 / writer 7
    with the ``timestampNtz`` table feature (what delta-rs writes for such a
    schema; Spark reads it from Delta 3.0, DuckDB through delta-kernel-rs).

    Examples
    --------
    >>> import pyarrow as pa
    >>> required_protocol(pa.schema([("t", pa.timestamp("us", tz="UTC"))]))
    {'minReaderVersion': 1, 'minWriterVersion': 2}
    >>> p = required_protocol(pa.schema([("t", pa.timestamp("us"))]))
    >>> p["minReaderVersion"], p["minWriterVersion"], p["readerFeatures"], p["writerFeatures"]
    (3, 7, ['timestampNtz'], ['timestampNtz'])
    """
    if any(_has_ntz(f.type) for f in schema):
        return {
            "minReaderVersion": 3,
            "minWriterVersion": 7,
            "readerFeatures": ["timestampNtz"],
            "writerFeatures": ["timestampNtz"],
        }
    return {"minReaderVersion": 1, "minWriterVersion": 2}


def check_readable(
    protocol: Mapping[str, Any],
    where: str,
    metadata: Mapping[str, Any] | None = None,
    *,
    allow: Iterable[str] = (),
) -> None:
    """Refuse a table whose protocol needs reader support this module lacks.

    Parameters
    ----------
    protocol : dict
        The table's ``protocol`` action body.
    where : str
        The table (named in the error).
    metadata : dict, optional
        The table's ``metaData`` action body: with it, column mapping is
        refused only when a mode other than ``none`` is set (reader version 2
        tables, or the ``columnMapping`` feature, with mode ``none`` read
        fine); without it, reader version 2 is taken at its word.
    allow : iterable of str
        Reader features the caller handles itself (a reader may accept
        ``deletionVectors`` and refuse each file that carries one).

    Raises
    ------
    ConfigurationError
        Naming the table, the features, and what to do.

    Examples
    --------
    >>> check_readable({"minReaderVersion": 1, "minWriterVersion": 2}, "t")
    >>> check_readable({"minReaderVersion": 3, "minWriterVersion": 7,
    ...                 "readerFeatures": ["deletionVectors"]}, "s3://b/t")
    Traceback (most recent call last):
    ...
    streamkit.errors.ConfigurationError: Delta table s3://b/t needs reader feature ...
    """
    reader = protocol.get("minReaderVersion")
    if not isinstance(reader, int) or isinstance(reader, bool) or reader < 1:
        raise CorruptFileError(f"Delta table {where} has a malformed protocol: {dict(protocol)}")
    if reader > 3:
        raise ConfigurationError(
            f"Delta table {where} needs reader version {reader}; streamkit reads versions 1 "
            "to 3: read it with a newer engine and write a copy streamkit can read"
        )
    allowed = frozenset(allow)
    mapping_mode = None
    if metadata is not None:
        mapping_mode = (metadata.get("configuration") or {}).get("delta.columnMapping.mode")
    mapped = mapping_mode not in (None, "none")
    missing: list[str] = []
    if reader == 2 and (mapped or metadata is None):
        missing.append("columnMapping")
    if reader == 3:
        for feature in protocol.get("readerFeatures") or []:
            if feature in READER_FEATURES or feature in allowed:
                continue
            if feature == "columnMapping" and metadata is not None and not mapped:
                continue
            missing.append(str(feature))
    if missing:
        remedies = [_FEATURE_REMEDY[f] for f in missing if f in _FEATURE_REMEDY]
        what = "; ".join(remedies) or "read it with an engine that supports them and write a copy"
        raise ConfigurationError(
            f"Delta table {where} needs reader feature{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}, which streamkit does not support: {what}"
        )


def check_writable(protocol: Mapping[str, Any], where: str) -> None:
    """Refuse to write a table whose protocol needs writer support we lack.

    Writer versions 1 and 2 (``appendOnly``, column ``invariants``) and
    version 7 with features among :data:`WRITER_FEATURES` are accepted; the
    caller must still honour ``delta.appendOnly`` and invariants if set.

    Raises
    ------
    ConfigurationError
        Naming the table and the writer version or features.

    Examples
    --------
    >>> check_writable({"minReaderVersion": 1, "minWriterVersion": 2}, "t")
    >>> check_writable({"minReaderVersion": 1, "minWriterVersion": 4}, "t")
    Traceback (most recent call last):
    ...
    streamkit.errors.ConfigurationError: Delta table t needs writer version 4 ...
    """
    writer = protocol.get("minWriterVersion")
    if not isinstance(writer, int) or isinstance(writer, bool) or writer < 1:
        raise CorruptFileError(f"Delta table {where} has a malformed protocol: {dict(protocol)}")
    if writer <= 2:
        return
    if writer == 7:
        missing = sorted(set(protocol.get("writerFeatures") or []) - WRITER_FEATURES)
        if not missing:
            return
        raise ConfigurationError(
            f"Delta table {where} needs writer features {', '.join(missing)}, which "
            "streamkit does not support; write to it with the engine that created it"
        )
    raise ConfigurationError(
        f"Delta table {where} needs writer version {writer} (constraints, change data "
        "feed, generated columns or column mapping), which streamkit does not support; "
        "write to it with the engine that created it"
    )


# ---------------------------------------------------------------- statistics

#: Longest string whose maximum is recorded (longer maxima would need a
#: truncated-and-bumped value; minima are truncated, a prefix sorts first).
_STRING_STATS = 32
_EPOCH = dt.datetime(1970, 1, 1)
_UNIT_PER_MS = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}


def _ts_text(ms: int, tz: bool) -> str | None:
    try:
        value = _EPOCH + dt.timedelta(milliseconds=ms)
    except OverflowError:
        return None
    text = value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    return text + "Z" if tz else text


def _stats_of(column: pa.ChunkedArray) -> tuple[Any, Any]:
    """(min, max) as Delta stats JSON values, or (None, None) when not recorded."""
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = t.value_type
    if not (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_date(t)
        or pa.types.is_timestamp(t)
    ):
        return None, None
    if pa.types.is_string_view(t):
        column = column.cast(pa.string())
    if pa.types.is_floating(t) and pc.any(pc.is_nan(column)).as_py():
        return None, None  # NaN sorts above everything in Spark: no sound bounds
    found = pc.min_max(column)
    low, high = found["min"], found["max"]
    if not low.is_valid or not high.is_valid:
        return None, None
    if pa.types.is_timestamp(t):
        raw_low = low.cast(pa.int64()).as_py()
        raw_high = high.cast(pa.int64()).as_py()
        per_ms = _UNIT_PER_MS[t.unit]
        if per_ms is None:  # seconds
            ms_low, ms_high = raw_low * 1000, raw_high * 1000
        else:
            ms_low, ms_high = raw_low // per_ms, -((-raw_high) // per_ms)
        tz = t.tz is not None
        return _ts_text(ms_low, tz), _ts_text(ms_high, tz)
    if pa.types.is_date(t):
        return low.cast(pa.date32()).as_py().isoformat(), high.cast(pa.date32()).as_py().isoformat()
    lo, hi = low.as_py(), high.as_py()
    if isinstance(lo, float) and not (abs(lo) < float("inf") and abs(hi) < float("inf")):
        return None, None
    if isinstance(lo, str):
        lo = lo[:_STRING_STATS]
        if len(hi) > _STRING_STATS:
            hi = None
    return lo, hi


def file_stats(table: pa.Table, columns: Sequence[str] | None = None) -> str:
    """The ``stats`` JSON of an ``add`` action for a data file holding ``table``.

    ``numRecords`` always; ``nullCount`` for each top-level column of
    ``columns`` (default: all); ``minValues``/``maxValues`` for numbers,
    strings, dates and timestamps. Timestamps are ISO 8601 strings at
    millisecond precision as the protocol writes them
    (``2024-01-01T00:00:00.123Z`` with a time zone, no ``Z`` without): the
    minimum rounded down, the maximum rounded **up** to the millisecond, so a
    reader pruning files by these bounds never skips a file holding a match.
    Left out, so that no bound is ever wrong: floats with NaN or infinities,
    string maxima longer than 32 characters (minima are cut to 32), nested,
    boolean, binary and decimal columns.

    Examples
    --------
    >>> import datetime as dt, pyarrow as pa
    >>> t = pa.table({"t": pa.array([dt.datetime(2024, 1, 1, 0, 0, 0, 1500)], pa.timestamp("us")),
    ...               "v": [None]})
    >>> file_stats(t)
    '{"numRecords":1,"minValues":{"t":"2024-01-01T00:00:00.001"},"maxValues":{"t":"2024-01-01T00:00:00.002"},"nullCount":{"t":0,"v":1}}'
    """
    names = list(table.column_names if columns is None else columns)
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in names:
        column = table.column(name)
        t = column.type
        nested = pa.types.is_nested(t) and not pa.types.is_dictionary(t)
        if not nested:
            nulls[name] = int(column.null_count)
        lo, hi = _stats_of(column) if not nested else (None, None)
        if lo is not None:
            low[name] = lo
        if hi is not None:
            high[name] = hi
    stats = {"numRecords": table.num_rows, "minValues": low, "maxValues": high, "nullCount": nulls}
    return json.dumps(stats, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# ------------------------------------------------------------------ snapshots


@dataclass
class Snapshot:
    """The state of a Delta table at one version.

    Attributes
    ----------
    version : int
        The table version (-1 before any commit was applied).
    protocol : dict or None
        The ``protocol`` action body.
    metadata : dict or None
        The ``metaData`` action body.
    files : dict
        Decoded data path (:func:`data_path`) -> its ``add`` action body.
    txns : dict
        ``txn`` appId -> last version.
    tombstones : dict
        Decoded path -> ``remove`` action body of files removed and not added
        again (checkpoints keep them for the retention period:
        ``delta.deletedFileRetentionDuration``, default one week).
    domains : dict
        ``domainMetadata`` domain -> action body (removed domains dropped).

    Examples
    --------
    >>> s = Snapshot()
    >>> s.apply(0, [{"add": {"path": "a.parquet", "size": 1, "dataChange": True}},
    ...             {"txn": {"appId": "w", "version": 1}}])
    >>> s.apply(1, [{"remove": {"path": "a.parquet", "dataChange": True}},
    ...             {"add": {"path": "b.parquet", "size": 2, "dataChange": True}}])
    >>> s.version, sorted(s.files), s.txns
    (1, ['b.parquet'], {'w': 1})
    """

    version: int = -1
    protocol: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    txns: dict[str, int] = field(default_factory=dict)
    tombstones: dict[str, dict[str, Any]] = field(default_factory=dict)
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _apply_checkpoint(self, version: int, actions: list[dict[str, Any]]) -> None:
        """Start from the actions of a checkpoint (:func:`read_checkpoint` output:
        no null fields, one action per path), without copying them."""
        for action in actions:
            for kind, body in action.items():
                if kind == "add":
                    self.files[data_path(body)] = body
                elif kind == "remove":
                    self.tombstones[data_path(body)] = body
        self.apply(version, [a for a in actions if "add" not in a and "remove" not in a])

    def apply(self, version: int, actions: Iterable[Mapping[str, Any]]) -> None:
        """Apply the actions of commit (or checkpoint) ``version``.

        Within one commit removes apply before adds (a file re-added in the
        same commit, as a deletion-vector update does, stays); ``metaData``
        and ``protocol`` replace, ``txn`` sets, other actions are ignored.
        """
        adds: list[dict[str, Any]] = []
        for action in actions:
            for kind, raw in action.items():
                if not isinstance(raw, Mapping):
                    continue  # an action kind this module does not know
                # JSON nulls are absent fields (delta-rs writes both forms)
                body = {k: v for k, v in raw.items() if v is not None}
                if kind == "add":
                    adds.append(body)
                elif kind == "remove":
                    path = data_path(body)
                    self.files.pop(path, None)
                    self.tombstones[path] = body
                elif kind == "metaData":
                    self.metadata = body
                elif kind == "protocol":
                    self.protocol = body
                elif kind == "txn":
                    self.txns[str(body["appId"])] = int(body["version"])
                elif kind == "domainMetadata":
                    if body.get("removed"):
                        self.domains.pop(str(body.get("domain")), None)
                    else:
                        self.domains[str(body.get("domain"))] = body
        for body in adds:
            path = data_path(body)
            self.files[path] = body
            self.tombstones.pop(path, None)
        self.version = version

    def schema(self) -> pa.Schema:
        """The table's Arrow schema (:func:`schema_from_delta` of ``metaData``).

        Raises
        ------
        CorruptFileError
            The snapshot has no ``metaData``.
        """
        if self.metadata is None:
            raise CorruptFileError(f"Delta table version {self.version} has no metaData action")
        return schema_from_delta(str(self.metadata.get("schemaString")))

    def actions(self, *, now_ms: int | None = None) -> list[dict[str, Any]]:
        """The actions a checkpoint of this snapshot holds.

        ``protocol``, ``metaData``, every ``txn``, every ``domainMetadata``,
        every ``add`` and the tombstones younger than the table's
        ``delta.deletedFileRetentionDuration`` (default one week) at
        ``now_ms`` (default: now).
        """
        if self.protocol is None or self.metadata is None:
            raise CorruptFileError(
                f"Delta table version {self.version} lacks a protocol or metaData action"
            )
        now = int(time.time() * 1000) if now_ms is None else now_ms
        retention = _interval_ms(
            (self.metadata.get("configuration") or {}).get("delta.deletedFileRetentionDuration"),
            7 * 24 * 3600 * 1000,
        )
        out: list[dict[str, Any]] = [{"protocol": self.protocol}, {"metaData": self.metadata}]
        out.extend({"txn": {"appId": app, "version": v}} for app, v in sorted(self.txns.items()))
        out.extend({"domainMetadata": d} for _, d in sorted(self.domains.items()))
        out.extend({"add": body} for body in self.files.values())
        for body in self.tombstones.values():
            deleted = body.get("deletionTimestamp")
            if isinstance(deleted, int) and deleted + retention < now:
                continue
            out.append({"remove": body})
        return out


_INTERVAL = re.compile(
    r"^\s*(?:interval\s+)?(\d+)\s*(millisecond|second|minute|hour|day|week)s?\s*$", re.IGNORECASE
)
_INTERVAL_MS = {
    "millisecond": 1,
    "second": 1000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 604_800_000,
}


def _interval_ms(text: Any, default: int) -> int:
    """Milliseconds of a Delta interval property (``interval 7 days``)."""
    if not isinstance(text, str):
        return default
    match = _INTERVAL.match(text)
    if not match:
        return default
    return int(match.group(1)) * _INTERVAL_MS[match.group(2).lower()]


# ---------------------------------------------------------------- checkpoints

_STR_MAP = pa.map_(pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string()))
_STR_MAP_STRICT = pa.map_(
    pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string(), nullable=False)
)
_DV = pa.struct(
    [
        pa.field("storageType", pa.string(), nullable=False),
        pa.field("pathOrInlineDv", pa.string(), nullable=False),
        pa.field("offset", pa.int32()),
        pa.field("sizeInBytes", pa.int32(), nullable=False),
        pa.field("cardinality", pa.int64(), nullable=False),
    ]
)
_STR_LIST = pa.list_(pa.field("element", pa.string(), nullable=False))

#: The columns of a classic checkpoint, as delta-rs 1.x writes them.
CHECKPOINT_SCHEMA = pa.schema(
    [
        pa.field(
            "txn",
            pa.struct(
                [
                    pa.field("appId", pa.string(), nullable=False),
                    pa.field("version", pa.int64(), nullable=False),
                    pa.field("lastUpdated", pa.int64()),
                ]
            ),
        ),
        pa.field(
            "add",
            pa.struct(
                [
                    pa.field("path", pa.string(), nullable=False),
                    pa.field("partitionValues", _STR_MAP, nullable=False),
                    pa.field("size", pa.int64(), nullable=False),
                    pa.field("modificationTime", pa.int64(), nullable=False),
                    pa.field("dataChange", pa.bool_(), nullable=False),
                    pa.field("stats", pa.string()),
                    pa.field("tags", _STR_MAP),
                    pa.field("deletionVector", _DV),
                    pa.field("baseRowId", pa.int64()),
                    pa.field("defaultRowCommitVersion", pa.int64()),
                    pa.field("clusteringProvider", pa.string()),
                ]
            ),
        ),
        pa.field(
            "remove",
            pa.struct(
                [
                    pa.field("path", pa.string(), nullable=False),
                    pa.field("deletionTimestamp", pa.int64()),
                    pa.field("dataChange", pa.bool_(), nullable=False),
                    pa.field("extendedFileMetadata", pa.bool_()),
                    pa.field("partitionValues", _STR_MAP),
                    pa.field("size", pa.int64()),
                    pa.field("stats", pa.string()),
                    pa.field("tags", _STR_MAP),
                    pa.field("deletionVector", _DV),
                    pa.field("baseRowId", pa.int64()),
                    pa.field("defaultRowCommitVersion", pa.int64()),
                ]
            ),
        ),
        pa.field(
            "metaData",
            pa.struct(
                [
                    pa.field("id", pa.string(), nullable=False),
                    pa.field("name", pa.string()),
                    pa.field("description", pa.string()),
                    pa.field(
                        "format",
                        pa.struct(
                            [
                                pa.field("provider", pa.string(), nullable=False),
                                pa.field("options", _STR_MAP_STRICT, nullable=False),
                            ]
                        ),
                        nullable=False,
                    ),
                    pa.field("schemaString", pa.string(), nullable=False),
                    pa.field("partitionColumns", _STR_LIST, nullable=False),
                    pa.field("createdTime", pa.int64()),
                    pa.field("configuration", _STR_MAP_STRICT, nullable=False),
                ]
            ),
        ),
        pa.field(
            "protocol",
            pa.struct(
                [
                    pa.field("minReaderVersion", pa.int32(), nullable=False),
                    pa.field("minWriterVersion", pa.int32(), nullable=False),
                    pa.field("readerFeatures", _STR_LIST),
                    pa.field("writerFeatures", _STR_LIST),
                ]
            ),
        ),
        pa.field(
            "domainMetadata",
            pa.struct(
                [
                    pa.field("domain", pa.string(), nullable=False),
                    pa.field("configuration", pa.string(), nullable=False),
                    pa.field("removed", pa.bool_(), nullable=False),
                ]
            ),
        ),
    ]
)


def _fill(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """An action body with what a checkpoint row needs that a commit may omit."""
    if kind == "add":
        if "partitionValues" in body and "modificationTime" in body and "dataChange" in body:
            return body if isinstance(body, dict) else dict(body)  # nothing to fill
        out = dict(body)
        out.setdefault("partitionValues", {})
        out.setdefault("modificationTime", 0)
        out.setdefault("dataChange", True)
        return out
    out = dict(body)
    if kind == "remove":
        out.setdefault("dataChange", True)
    elif kind == "metaData":
        fmt = dict(out.get("format") or {})
        fmt.setdefault("provider", "parquet")
        fmt["options"] = fmt.get("options") or {}
        out["format"] = fmt
        out["partitionColumns"] = list(out.get("partitionColumns") or [])
        out["configuration"] = out.get("configuration") or {}
    return out


def _struct_column(kind: str, struct_type: pa.StructType, rows: list[dict[str, Any]]) -> pa.Array:
    """The checkpoint column ``kind`` for ``rows`` (all valid), built field by field."""
    children = []
    for i in range(struct_type.num_fields):
        child = struct_type.field(i)
        values = [row.get(child.name) for row in rows]
        try:
            children.append(pa.array(values, type=child.type))
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise ValueError(
                f"{kind}.{child.name} cannot be stored in a checkpoint as {child.type} "
                f"(Delta maps hold strings): {exc}"
            ) from None
    return pa.StructArray.from_arrays(children, fields=list(struct_type))


def write_checkpoint(fs: FileSystem, version: int, snapshot: Snapshot) -> None:
    """Write a classic single-file checkpoint of ``snapshot`` and ``_last_checkpoint``.

    The checkpoint (created if absent: an existing one of the same version is
    equally valid and kept) holds :meth:`Snapshot.actions`, one per row, in
    the column layout delta-rs writes, which delta-rs, Spark and
    delta-kernel-rs read. ``_last_checkpoint`` is replaced only when it names
    an older version (it is a hint: readers list the log).

    Parameters
    ----------
    fs : FileSystem
        The table root.
    version : int
        Must equal ``snapshot.version``.
    snapshot : Snapshot
        The table at ``version``.

    Examples
    --------
    >>> from streamkit.storage import FileSystem
    >>> fs = FileSystem("memory://streamkit-doc-delta-checkpoint")
    >>> s = Snapshot()
    >>> s.apply(0, [{"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}},
    ...             {"metaData": {"id": "x", "schemaString": '{"type":"struct","fields":[]}',
    ...                           "format": {"provider": "parquet"}}},
    ...             {"add": {"path": "a.parquet", "size": 1, "dataChange": True}}])
    >>> write_checkpoint(fs, 0, s)
    >>> sorted(load_snapshot(fs).files)
    ['a.parquet']
    """
    if snapshot.version != version:
        raise ValueError(f"snapshot is at version {snapshot.version}, not {version}")
    actions = snapshot.actions()
    grouped: dict[str, list[dict[str, Any]]] = {name: [] for name in CHECKPOINT_SCHEMA.names}
    for action in actions:
        ((kind, body),) = action.items()
        if kind in grouped:
            grouped[kind].append(_fill(kind, body))
    adds = len(grouped["add"])
    total = sum(len(rows) for rows in grouped.values())
    arrays = []
    before = 0
    for name in CHECKPOINT_SCHEMA.names:  # rows grouped by kind: one column's run each
        struct_type = CHECKPOINT_SCHEMA.field(name).type
        rows = grouped[name]
        # null rows built from None: their non-nullable children hold defaults, which
        # Parquet requires (pa.nulls would give null children)
        after = total - before - len(rows)
        pieces = [pa.array([None] * before, struct_type), _struct_column(name, struct_type, rows)]
        pieces.append(pa.array([None] * after, struct_type))
        arrays.append(pa.concat_arrays(pieces))
        before += len(rows)
    table = pa.Table.from_arrays(arrays, schema=CHECKPOINT_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    fs.put_new(checkpoint_path(version), data)
    hint = {
        "version": version,
        "size": len(actions),
        "sizeInBytes": len(data),
        "numOfAddFiles": adds,
    }
    current = _read_last_checkpoint(fs)
    if current is None or int(current.get("version", -1)) < version:
        fs.put(LAST_CHECKPOINT, json.dumps(hint, separators=(",", ":")).encode())


def _read_last_checkpoint(fs: FileSystem) -> dict[str, Any] | None:
    """``_last_checkpoint``'s content, or None if absent or unreadable (it is a hint)."""
    try:
        data = fs.get(LAST_CHECKPOINT)
    except LogNotFoundError:
        return None
    try:
        found = json.loads(data)
    except ValueError:
        return None
    if not isinstance(found, dict) or not isinstance(found.get("version"), int):
        return None
    return found


def read_checkpoint(fs: FileSystem, version: int, parts: int | None = None) -> list[dict[str, Any]]:
    """The actions of the checkpoint of ``version`` (classic, or ``parts`` parts).

    Each row becomes one single-key action; null fields are dropped and map
    columns become dicts, so the actions look like a commit's.

    Raises
    ------
    LogNotFoundError
        A checkpoint file is missing.
    CorruptFileError
        A checkpoint file is not a readable Parquet file.
    """
    paths = (
        [checkpoint_path(version)]
        if not parts
        else [checkpoint_part_path(version, i, parts) for i in range(1, parts + 1)]
    )
    got = fs.get_many(paths)
    out: list[dict[str, Any]] = []
    for path in paths:
        try:
            table = pq.read_table(io.BytesIO(got[path]))
        except (pa.ArrowException, OSError) as exc:
            raise CorruptFileError(
                f"corrupt Delta checkpoint {fs.full_path(path)}: {exc}; delete it (readers "
                "then replay the commits) or restore it from a backup"
            ) from None
        for kind in ("add", "remove", "metaData", "protocol", "txn", "domainMetadata"):
            if kind in table.column_names:
                out.extend({kind: body} for body in _struct_rows(table.column(kind)))
    return out


def _struct_rows(column: pa.ChunkedArray) -> list[dict[str, Any]]:
    """The valid rows of a checkpoint column as JSON-like dicts, column by column.

    Null fields are left out; maps become dicts (empty ones included); nested
    structs are cleaned the same way.
    """
    array = column.combine_chunks()
    if array.null_count == len(array):
        return []
    if array.null_count:
        array = array.filter(array.is_valid())
    names: list[str] = []
    values: list[list[Any]] = []
    for i in range(array.type.num_fields):
        child_type = array.type.field(i).type
        items = array.field(i).to_pylist()
        if pa.types.is_map(child_type):
            items = [None if v is None else dict(v) for v in items]
        elif pa.types.is_struct(child_type):
            items = [_typed(v, child_type) for v in items]
        names.append(array.type.field(i).name)
        values.append(items)
    return [
        {
            name: column[i]
            for name, column in zip(names, values, strict=True)
            if column[i] is not None
        }
        for i in range(len(array))
    ]


def _typed(value: Any, t: pa.DataType) -> Any:
    """A nested Parquet value as JSON holds it: maps as dicts, no null fields."""
    if value is None:
        return None
    if pa.types.is_map(t):
        return {k: _typed(v, t.item_type) for k, v in value}
    if pa.types.is_struct(t):
        out = {}
        for i in range(t.num_fields):
            f = t.field(i)
            item = _typed(value.get(f.name), f.type)
            if item is not None:
                out[f.name] = item
        return out
    if pa.types.is_list(t):
        return [_typed(v, t.value_type) for v in value]
    return value


# ------------------------------------------------------------------- loading


@dataclass
class _Listing:
    """What a listing of ``_delta_log/`` holds."""

    commits: set[int] = field(default_factory=set)
    #: complete checkpoints: version -> parts (0 for a classic single file)
    checkpoints: dict[int, int] = field(default_factory=dict)

    @property
    def newest(self) -> int | None:
        versions = self.commits | set(self.checkpoints)
        return max(versions) if versions else None


def _listing(fs: FileSystem, listing: Sequence[str] | None) -> _Listing:
    names = fs.ls(LOG_DIR) if listing is None else [n.rsplit("/", 1)[-1] for n in listing]
    out = _Listing()
    parts_seen: dict[tuple[int, int], set[int]] = {}
    for name in names:
        parsed = parse_log_name(name)
        if parsed is None:
            continue
        version, kind = parsed
        if kind == "commit":
            out.commits.add(version)
        elif kind == "checkpoint":
            out.checkpoints[version] = 0
        elif kind == "checkpoint-part":
            match = _CHECKPOINT_PART.match(name.rsplit("/", 1)[-1])
            assert match is not None
            part, parts = int(match.group(2)), int(match.group(3))
            parts_seen.setdefault((version, parts), set()).add(part)
    for (version, parts), seen in sorted(parts_seen.items()):
        if seen == set(range(1, parts + 1)):
            out.checkpoints.setdefault(version, parts)
    return out


def latest_version(fs: FileSystem, *, listing: Sequence[str] | None = None) -> int | None:
    """The newest version in ``_delta_log/`` (commit or checkpoint), or None if none.

    Examples
    --------
    >>> from streamkit.storage import FileSystem
    >>> latest_version(FileSystem("memory://streamkit-doc-delta-latest")) is None
    True
    """
    return _listing(fs, listing).newest


def read_commits(fs: FileSystem, first: int, last: int) -> dict[int, list[dict[str, Any]]]:
    """The actions of commits ``first`` to ``last`` (inclusive), read concurrently.

    Raises
    ------
    LogNotFoundError
        A commit is missing: the message names the first missing version
        (cleaned up by log retention, or never written).
    CorruptFileError
        A commit that cannot be decoded.
    """
    if last < first:
        return {}
    paths = {commit_path(v): v for v in range(first, last + 1)}
    got = fs.get_many(list(paths), missing_ok=True)
    missing = [v for p, v in paths.items() if p not in got]
    if missing:
        raise LogNotFoundError(
            f"Delta table {fs.url} has no commit {missing[0]} ({commit_path(missing[0])}): "
            "it was cleaned up by log retention (delta.logRetentionDuration) or is being "
            "written; a reader needs a checkpoint at or after it, or every commit since"
        )
    return {v: decode_commit(got[p], f"{fs.url}/{p}") for p, v in paths.items()}


def load_snapshot(
    fs: FileSystem,
    version: int | None = None,
    *,
    listing: Sequence[str] | None = None,
    allow: Iterable[str] = (),
) -> Snapshot:
    """The table at ``version`` (default: the newest), from its newest checkpoint on.

    Without ``listing``, ``_last_checkpoint`` is read first: the checkpoint it
    names, then the commits after it, probed a few at a time until one is
    absent (no listing of ``_delta_log/``: a handful of requests however long
    the log). Without a usable hint, or with ``listing`` (the names in
    ``_delta_log/``), the newest complete checkpoint (classic or multi-part)
    at or before ``version`` the listing shows is read, then every later
    commit up to ``version``. The result is checked with
    :func:`check_readable`.

    Parameters
    ----------
    fs : FileSystem
        The table root.
    version : int, optional
        The version wanted.
    listing : sequence of str, optional
        File names (or paths) in ``_delta_log/``, when the caller listed it.
    allow : iterable of str
        Reader features the caller handles itself (see :func:`check_readable`).

    Raises
    ------
    LogNotFoundError
        No ``_delta_log/`` or no commit in it ("not a Delta table"), no such
        version, or a commit the snapshot needs was cleaned up.
    ConfigurationError
        The table needs a reader feature this module lacks.
    CorruptFileError
        A commit or checkpoint that cannot be decoded, or no protocol/metaData.

    Examples
    --------
    >>> from streamkit.storage import FileSystem
    >>> load_snapshot(FileSystem("memory://streamkit-doc-delta-none"))
    Traceback (most recent call last):
    ...
    streamkit.errors.LogNotFoundError: no Delta table at memory://streamkit-doc-delta-none: ...
    """
    snapshot = _from_hint(fs, version) if listing is None else None
    if snapshot is None:
        snapshot = _from_listing(fs, version, listing)
    if snapshot.protocol is None or snapshot.metadata is None:
        raise CorruptFileError(
            f"Delta table {fs.url} at version {snapshot.version} has no "
            f"{'protocol' if snapshot.protocol is None else 'metaData'} action; restore its "
            f"{LOG_DIR}/ from a backup"
        )
    where = f"{fs.url} at version {snapshot.version}"
    check_readable(snapshot.protocol, where, snapshot.metadata, allow=allow)
    return snapshot


#: Commits read per round when probing for the newest version after a checkpoint.
_PROBE = 8


def _from_hint(fs: FileSystem, version: int | None) -> Snapshot | None:
    """The snapshot from ``_last_checkpoint`` on, without listing ``_delta_log/``.

    The checkpoint it names, then commits read from the next version on until
    one is absent (a few requests per round, concurrent on object stores) or
    ``version`` is reached. None when there is no usable hint (absent, newer
    than ``version``, a V2 checkpoint, its checkpoint or a needed commit gone):
    the caller lists the log instead. Listing a log of 100,000 commits takes
    100 requests on S3; this takes a handful.
    """
    hint = _read_last_checkpoint(fs)
    if hint is None:
        return None
    base = int(hint["version"])
    parts = hint.get("parts")
    if (version is not None and base > version) or base < 0 or "v2Checkpoint" in hint:
        return None
    if parts is not None and (not isinstance(parts, int) or isinstance(parts, bool) or parts < 1):
        return None
    try:
        actions = read_checkpoint(fs, base, parts)
    except LogNotFoundError:
        return None
    snapshot = Snapshot()
    snapshot._apply_checkpoint(base, actions)
    if version is not None:
        try:
            commits = read_commits(fs, base + 1, version)
        except LogNotFoundError:
            return None
        for v in range(base + 1, version + 1):
            snapshot.apply(v, commits[v])
        return snapshot
    nxt = base + 1
    while True:
        paths = {commit_path(v): v for v in range(nxt, nxt + _PROBE)}
        got = fs.get_many(list(paths), missing_ok=True)
        for path, v in paths.items():
            if path not in got:
                if v == base + 1 and not fs.exists(commit_path(base)):
                    # commit ``base`` cleaned up: a newer checkpoint exists and the
                    # hint is stale (commits after ``base`` may be gone too)
                    return None
                return snapshot
            snapshot.apply(v, decode_commit(got[path], f"{fs.url}/{path}"))
        nxt += _PROBE


def _from_listing(fs: FileSystem, version: int | None, listing: Sequence[str] | None) -> Snapshot:
    """The snapshot from the newest complete checkpoint a listing shows."""
    found = _listing(fs, listing)
    newest = found.newest
    if newest is None:
        raise LogNotFoundError(
            f"no Delta table at {fs.url}: {LOG_DIR}/ is missing or holds no commit; "
            "check the URL (it names the table's folder, the one holding _delta_log/)"
        )
    target = newest if version is None else version
    if target > newest or target < 0:
        raise LogNotFoundError(
            f"Delta table {fs.url} has no version {target}: its newest version is {newest}"
        )
    start = 0
    snapshot = Snapshot()
    usable = [v for v in found.checkpoints if v <= target]
    if usable:
        base = max(usable)
        snapshot._apply_checkpoint(base, read_checkpoint(fs, base, found.checkpoints[base] or None))
        start = base + 1
    commits = read_commits(fs, start, target)
    for v in range(start, target + 1):
        snapshot.apply(v, commits[v])
    return snapshot
