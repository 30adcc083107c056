"""Version files, snapshots and the in-memory state of a log.

Every file written here is a JSON object carrying a ``checksum`` field: the CRC-32
of the canonical JSON encoding (sorted keys, no spaces) of the other fields. A
file that does not parse, lacks a field or whose checksum differs raises
:class:`~streamkit.errors.CorruptFileError` naming it.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any

from streamkit.errors import CorruptFileError
from streamkit.storage._fs import crc32

__all__ = [
    "FORMAT",
    "HINT",
    "SNAPSHOT_EVERY",
    "LogState",
    "Segment",
    "apply_version",
    "decode",
    "encode",
    "safe_relpath",
    "snapshot_path",
    "state_from_snapshot",
    "state_to_snapshot",
    "version_path",
]

FORMAT = 1
SNAPSHOT_EVERY = 32
LOG_DIR = "_log"
HINT = f"{LOG_DIR}/_last_snapshot.json"
_OPS = {"create", "append", "truncate", "retract"}


def version_path(version: int) -> str:
    """Relative path of the version file ``version``.

    Examples
    --------
    >>> version_path(12)
    '_log/00000000000000000012.json'
    """
    return f"{LOG_DIR}/{version:020d}.json"


def snapshot_path(version: int) -> str:
    """Relative path of the snapshot taken at ``version``.

    Examples
    --------
    >>> snapshot_path(32)
    '_log/00000000000000000032.snapshot.json'
    """
    return f"{LOG_DIR}/{version:020d}.snapshot.json"


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
    """Serialize ``body`` with its checksum.

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


@dataclass(frozen=True, slots=True)
class Segment:
    """One committed, immutable Parquet file of a log."""

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

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
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
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(
                f"corrupt file {where}: a segment entry lacks or mistypes {exc}: {data!r}"
            ) from None

    @property
    def end(self) -> int:
        """Offset just past the segment's last row."""
        return self.offset + self.rows


@dataclass(slots=True)
class LogState:
    """Everything a reader or writer needs to know about a log at one version."""

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
        )

    def live(self) -> list[Segment]:
        """Live segments in offset order."""
        return sorted(self.segments.values(), key=lambda s: s.offset)


def create_body(key: str, time_col: str, partitions: int) -> dict[str, Any]:
    """Body of version 0."""
    return {
        "format": FORMAT,
        "version": 0,
        "op": "create",
        "timestamp": now_ms(),
        "metadata": {"key": key, "time": time_col, "partitions": partitions},
        "add": [],
        "remove": [],
        "schema": None,
        "txn": None,
        "next_offset": 0,
    }


_VERSION_FIELDS = ("format", "version", "op", "add", "remove", "next_offset")


def apply_version(state: LogState | None, data: bytes, version: int, where: str) -> LogState:
    """Apply version file ``data`` (numbered ``version``) to ``state``.

    Returns a new state; ``state`` itself is not modified.
    """
    body = decode(data, where, _VERSION_FIELDS)
    if body["format"] != FORMAT:
        raise CorruptFileError(
            f"unsupported file {where}: expected log format {FORMAT}, found "
            f"{body['format']!r}; upgrade streamkit"
        )
    if body["version"] != version:
        raise CorruptFileError(
            f"corrupt file {where}: expected version {version}, found {body['version']!r}"
        )
    op = body["op"]
    if op not in _OPS:
        raise CorruptFileError(f"corrupt file {where}: unknown operation {op!r}")
    if op == "create":
        meta = body.get("metadata")
        if version != 0 or not isinstance(meta, dict):
            raise CorruptFileError(
                f"corrupt file {where}: a 'create' must be version 0 with metadata"
            )
        try:
            return LogState(
                version=0,
                key=str(meta["key"]),
                time=str(meta["time"]),
                partitions=int(meta["partitions"]),
                created=int(body.get("timestamp", 0)),
            )
        except (KeyError, TypeError, ValueError):
            raise CorruptFileError(
                f"corrupt file {where}: metadata must have key, time and partitions"
            ) from None
    if state is None:
        raise CorruptFileError(f"corrupt file {where}: expected a 'create' as version 0")
    new = state.copy()
    new.version = version
    for path in body["remove"]:
        new.segments.pop(str(path), None)
    for entry in body["add"]:
        seg = Segment.from_dict(entry, where)
        new.segments[seg.path] = seg
        new.next_segment = max(new.next_segment, seg.seq + 1)
    if body.get("schema") is not None and new.schema is None:
        new.schema = str(body["schema"])
    new.next_offset = max(new.next_offset, int(body["next_offset"]))
    txn = body.get("txn")
    if isinstance(txn, dict) and "writer" in txn and "seq" in txn:
        new.txns[str(txn["writer"])] = {
            "seq": int(txn["seq"]),
            "meta": txn.get("meta") or {},
            "version": version,
        }
    return new


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
        }
    )


def state_from_snapshot(data: bytes, version: int, where: str) -> LogState:
    """Decode a snapshot written by :func:`state_to_snapshot`."""
    fields = ("format", "version", "key", "time", "partitions", "segments", "txns")
    body = decode(data, where, fields)
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
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CorruptFileError(f"corrupt file {where}: malformed snapshot fields") from None


def hint_bytes(version: int) -> bytes:
    """Content of the advisory ``_last_snapshot.json`` hint."""
    return encode({"format": FORMAT, "version": version})
