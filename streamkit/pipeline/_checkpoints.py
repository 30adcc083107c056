"""Checkpoint files of one pipeline: run epochs (leases), checkpoints, state files.

Layout under ``<store>/_pipelines/<name>/``::

    epochs/000000000042.json       claimed with create-if-absent by one run
    epochs/000000000042.beat       that run's heartbeat (advisory, overwritten)
    checkpoints/000000000007.json  one per committed batch, create-if-absent
    state/<ms>-<uuid>.arrow        Arrow IPC files referenced by checkpoints: one
                                   record batch per key group (a base or a delta,
                                   see ``streamkit.pipeline._keyed``)

A run claims epoch N+1 only when epoch N's holder is gone: its heartbeat is
older than the holder's lease timeout, or says the run released it (or the
caller takes over). Who waits depends on clocks; correctness never does: every
commit is fenced by ``check_lease`` and by the checkpoint ids themselves.

A checkpoint is self-describing JSON and carries a CRC-32 of its own canonical
body, so a flipped bit is detected even when the JSON still parses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from streamkit.errors import CheckpointError, CorruptFileError, LeaseError, StorageError
from streamkit.pipeline._report import format_ids
from streamkit.storage import crc32, safe_relpath

if TYPE_CHECKING:
    from streamkit.storage import FileSystem

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
#: Formats this streamkit reads: 1 wrote each operator's whole state as one file.
READABLE_FORMATS = (1, 2)
#: Key groups of a new pipeline (and of checkpoints written before key groups).
DEFAULT_KEY_GROUPS = 256
_ID_WIDTH = 12
#: State files written at once by one checkpoint.
_WRITERS = 8
_IPC_OPTIONS = pa_ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=1))


def _name(n: int) -> str:
    return f"{n:0{_ID_WIDTH}d}.json"


def _beat_name(n: int) -> str:
    return f"{n:0{_ID_WIDTH}d}.beat"


def _parse_id(name: str) -> int | None:
    stem = name.rsplit("/", 1)[-1]
    if not stem.endswith(".json"):
        return None
    digits = stem[: -len(".json")]
    return int(digits) if digits.isdigit() and len(digits) == _ID_WIDTH else None


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class FileRef:
    """A stored file with the size and checksum recorded when it was written."""

    path: str
    bytes: int
    crc32: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "crc32": self.crc32}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "a checkpoint") -> FileRef:
        """Parse the JSON form; a path outside ``state/`` is refused.

        Raises
        ------
        CorruptFileError
            Naming ``where``, for a malformed entry or a path that is not a
            state file of this pipeline (``state/<name>``): a tampered
            checkpoint must never make streamkit read or delete other files.

        Examples
        --------
        >>> FileRef.from_dict({"path": "state/1-a.arrow", "bytes": 3, "crc32": 7})
        FileRef(path='state/1-a.arrow', bytes=3, crc32=7)
        >>> FileRef.from_dict({"path": "/etc/passwd", "bytes": 3, "crc32": 7}, "cp.json")
        Traceback (most recent call last):
        ...
        streamkit.errors.CorruptFileError: corrupt file cp.json: a state file path ...
        """
        if not isinstance(d, dict):
            raise CorruptFileError(f"corrupt file {where}: a state file entry is {d!r:.200}")
        path = safe_relpath(d.get("path"), where, "a state file path")
        parts = path.split("/")
        if len(parts) != 2 or parts[0] != "state":
            raise CorruptFileError(
                f"corrupt file {where}: a state file path {path!r} is not of the form "
                "'state/<name>'; the file was damaged or tampered with"
            )
        try:
            return cls(path, int(d["bytes"]), int(d["crc32"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(
                f"corrupt file {where}: a state file entry lacks or mistypes {exc}"
            ) from None


@dataclass
class Checkpoint:
    """One committed checkpoint, as stored (see ``to_dict`` for the JSON form)."""

    id: int
    parent: int | None
    epoch: int
    created: str
    position: int  # next source offset to read
    batch: tuple[int, int] | None  # source range this checkpoint's batch covered
    kind: str = "batch"  # "batch" or "rewind"
    operators: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    retracted: list[tuple[int, int]] = field(default_factory=list)
    source: str = ""
    plan: dict[str, Any] | None = None
    # The source's read position where an offset alone does not say what was
    # read (a FileLog: ``Position.to_dict()`` with the consumed files); None for a Log.
    source_state: dict[str, Any] | None = None
    key_groups: int = DEFAULT_KEY_GROUPS

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "id": self.id,
            "parent": self.parent,
            "epoch": self.epoch,
            "created": self.created,
            "kind": self.kind,
            "source": self.source,
            "position": self.position,
            "batch": list(self.batch) if self.batch else None,
            "operators": self.operators,
            "outputs": self.outputs,
            "counts": self.counts,
            "retracted": [list(r) for r in self.retracted],
            "plan": self.plan,
            "key_groups": self.key_groups,
        }
        if self.source_state is not None:
            body["source_state"] = self.source_state
        return body

    def successor(
        self, cid: int, epoch: int, kind: str, operators: dict[str, dict[str, Any]], **changes: Any
    ) -> Checkpoint:
        """A checkpoint at the same read position with new state and no batch
        (a rewind, a re-shard): ``cid`` as of now, by run ``epoch``."""
        fields: dict[str, Any] = {
            "id": cid,
            "parent": self.id,
            "epoch": epoch,
            "created": datetime.now(UTC).isoformat(),
            "kind": kind,
            "batch": None,
            "operators": operators,
            "counts": dict(self.counts),
            "retracted": list(self.retracted),
        }
        return dataclasses.replace(self, **{**fields, **changes})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        if d.get("format") not in READABLE_FORMATS:
            raise CheckpointError(
                f"checkpoint format {d.get('format')!r} is not supported (this streamkit "
                f"reads formats {', '.join(map(str, READABLE_FORMATS))}): it was written by "
                "a newer streamkit; upgrade streamkit to resume this pipeline"
            )
        batch = d.get("batch")
        return cls(
            id=int(d["id"]),
            parent=None if d.get("parent") is None else int(d["parent"]),
            epoch=int(d["epoch"]),
            created=str(d["created"]),
            kind=str(d.get("kind", "batch")),
            source=str(d.get("source", "")),
            position=int(d["position"]),
            batch=(int(batch[0]), int(batch[1])) if batch else None,
            operators=dict(d.get("operators", {})),
            outputs=dict(d.get("outputs", {})),
            counts={k: int(v) for k, v in d.get("counts", {}).items()},
            retracted=[(int(a), int(b)) for a, b in d.get("retracted", [])],
            plan=d.get("plan"),
            source_state=d.get("source_state"),
            key_groups=int(d.get("key_groups", DEFAULT_KEY_GROUPS)),
        )


def initial_checkpoint(position: int, key_groups: int | None = None) -> Checkpoint:
    """The virtual checkpoint 0: nothing processed, empty state."""
    return Checkpoint(
        key_groups=DEFAULT_KEY_GROUPS if key_groups is None else key_groups,
        id=0,
        parent=None,
        epoch=0,
        created="",
        position=position,
        batch=None,
        kind="initial",
        counts={"rows_in": 0, "rows_out": 0, "quarantined": 0, "ignored": 0, "batches": 0},
    )


class CheckpointStore:
    """Reads and writes one pipeline's epochs, checkpoints and state files."""

    def __init__(self, fs: FileSystem, pipeline: str) -> None:
        self.fs = fs
        self.pipeline = pipeline
        # The state files of checkpoints read by prune(): a committed checkpoint
        # never changes, and retention runs every few batches.
        self._files_of: dict[int, set[str]] = {}

    def where(self, path: str) -> str:
        """The full URL of one of the pipeline's files, for messages."""
        return self._where(path)

    def _where(self, path: str) -> str:
        return f"{self.fs.url.rstrip('/')}/{path}"

    # ---------------------------------------------------------------- epochs
    def claim_epoch(
        self, info: dict[str, Any], *, lease_timeout: float = 30.0, take_over: bool = False
    ) -> int:
        """Claim the next run epoch; any older run is fenced from now on.

        Unless ``take_over``, a LeaseError is raised, and nothing claimed,
        while the latest epoch's holder is alive (see ``live_holder``).
        """
        for _ in range(1000):
            latest = self.latest_epoch()
            if not take_over:
                holder = self.live_holder(latest)
                if holder is not None:
                    raise LeaseError(
                        f"pipeline {self.pipeline!r}: another run holds the lease ({holder}); "
                        "this run stepped aside without doing anything. Run again later, "
                        "or take over now with take_over=True (streamkit run --take-over): "
                        "the other run then stops at its next commit"
                    )
            epoch = latest + 1
            # a unique id: put_new recognises a claim of ours whose response was lost
            body = dict(
                info,
                epoch=epoch,
                claimed=datetime.now(UTC).isoformat(),
                claim=uuid.uuid4().hex,
                lease_timeout=lease_timeout,
            )
            if self.fs.put_new(f"epochs/{_name(epoch)}", _canonical(body)):
                self._prune_epochs(epoch)
                return epoch
        raise LeaseError(f"pipeline {self.pipeline!r}: could not claim a run epoch")

    def latest_epoch(self) -> int:
        ids = [i for i in (_parse_id(n) for n in self.fs.ls("epochs")) if i is not None]
        return max(ids, default=0)

    def beat(self, epoch: int, lease_timeout: float, *, released: bool = False) -> None:
        """Write epoch ``epoch``'s heartbeat: alive now, or released for good."""
        body = {"epoch": epoch, "at": time.time(), "timeout": lease_timeout, "released": released}
        self.fs.put(f"epochs/{_beat_name(epoch)}", _canonical(body))

    def live_holder(self, epoch: int, now: float | None = None) -> str | None:
        """Describe the holder of ``epoch`` if it is alive, else None.

        Alive: its heartbeat (or, before the first one, its claim) is younger
        than the lease timeout the holder declared, and it did not release
        the lease. A heartbeat whose content does not parse counts as stale:
        waiting is advisory, the fencing of every commit is what keeps results
        correct. A storage error propagates (a transient failure must not make
        a run take over from a live one).
        """
        if epoch <= 0:
            return None
        now = time.time() if now is None else now
        try:
            claim = json.loads(self.fs.get(f"epochs/{_name(epoch)}"))
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(claim, dict):
            return None
        try:
            beat = json.loads(self.fs.get(f"epochs/{_beat_name(epoch)}"))
        except FileNotFoundError:
            beat = None  # claimed, first heartbeat not written yet (or an older streamkit)
        except ValueError:
            return None
        try:
            if isinstance(beat, dict):
                if beat.get("released"):
                    return None
                at, timeout = float(beat["at"]), float(beat["timeout"])
            else:
                at = datetime.fromisoformat(str(claim["claimed"])).timestamp()
                timeout = float(claim.get("lease_timeout", 30.0))
        except (KeyError, TypeError, ValueError):
            return None
        age = now - at
        if age >= timeout or _holder_gone(self.fs.url, epoch, claim):
            return None
        who = f"pid {claim.get('pid')} on {claim.get('host')!s}"
        return (
            f"run epoch {epoch}, {who}: last heartbeat {max(age, 0.0):.1f} s ago, "
            f"lease timeout {timeout:g} s"
        )

    def check_lease(self, epoch: int) -> None:
        """Raise LeaseError when a newer run of the pipeline has started."""
        latest = self.latest_epoch()
        if latest > epoch:
            raise LeaseError(
                f"pipeline {self.pipeline!r}: run epoch {epoch} was overtaken by a newer "
                f"run (epoch {latest}); this run stopped without committing"
            )

    def _prune_epochs(self, epoch: int, keep: int = 16) -> None:
        old = [
            f"epochs/{n}"
            for n in self.fs.ls("epochs")
            if (i := _parse_id(n.replace(".beat", ".json"))) is not None and i <= epoch - keep
        ]
        if old:
            with contextlib.suppress(StorageError, FileNotFoundError):  # best effort
                self.fs.rm(old)

    # ----------------------------------------------------------- checkpoints
    def ids(self) -> list[int]:
        return sorted(i for i in (_parse_id(n) for n in self.fs.ls("checkpoints")) if i)

    def read(self, cid: int) -> Checkpoint:
        """Read and verify checkpoint ``cid``.

        Raises
        ------
        CheckpointError
            If there is no such checkpoint.
        CorruptFileError
            If the file does not parse, fails its checksum, lacks a field or
            names a state file outside ``state/``; the message names the file
            and the way out.
        """
        path = f"checkpoints/{_name(cid)}"
        try:
            data = self.fs.get(path)
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"pipeline {self.pipeline!r} has no checkpoint {cid} "
                f"(existing: {format_ids(self.ids())})"
            ) from exc
        where = self._where(path)
        try:
            doc = json.loads(data)
            crc = int(doc.pop("crc32"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            detail = f"is not a valid checkpoint ({type(exc).__name__}: {exc})"
            raise self._damaged(cid, detail) from None
        if crc32(_canonical(doc)) != crc:
            raise self._damaged(cid, "fails its checksum: it was altered after it was committed")
        try:
            cp = Checkpoint.from_dict(doc)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            detail = f"lacks or mistypes a field ({type(exc).__name__}: {exc})"
            raise self._damaged(cid, detail) from None
        for entry in cp.operators.values():
            if not isinstance(entry, dict):
                raise self._damaged(cid, "holds an operator entry that is not an object")
            _entry_files(entry, where)
        return cp

    def _damaged(self, cid: int, what: str) -> CorruptFileError:
        where = self._where(f"checkpoints/{_name(cid)}")
        older = [i for i in self.ids() if i < cid][-3:]
        way_out = (
            f"rewind to an older checkpoint with run(from_checkpoint=N), N in {older} "
            "(check one first with verify(checkpoint=N)), or to 0 to reprocess the log"
            if older
            else "rewind with run(from_checkpoint=0) to reprocess the log"
        )
        return CorruptFileError(
            f"checkpoint file {where} {what}; restore it from a backup, or {way_out}"
        )

    def latest(self) -> Checkpoint | None:
        ids = self.ids()
        return self.read(ids[-1]) if ids else None

    def latest_readable(self) -> Checkpoint | None:
        """The newest checkpoint that reads and verifies (None if none does).

        What a rewind starts from when the newest checkpoints are damaged: the
        rewind's own id still goes after every checkpoint file present.
        """
        for cid in reversed(self.ids()):
            try:
                return self.read(cid)
            except CorruptFileError as exc:
                _logger.warning(
                    "pipeline %r: skipping a damaged checkpoint: %s", self.pipeline, exc
                )
        return None

    def commit(self, cp: Checkpoint) -> bool:
        """Create checkpoint ``cp.id``; False when that id exists already."""
        body = cp.to_dict()
        body["crc32"] = crc32(_canonical(body))
        return self.fs.put_new(f"checkpoints/{_name(cp.id)}", _canonical(body))

    def _files_cached(self, cid: int) -> set[str]:
        """The state files checkpoint ``cid`` references (read once per store object)."""
        files = self._files_of.get(cid)
        if files is None:
            files = self._files_of[cid] = self._state_files(self.read(cid))
        return files

    def prune(self, keep: int, protect: set[int], *, orphan_age: float = 3600.0) -> int:
        """Delete checkpoints (and their state files) beyond the newest ``keep``.

        State files no retained checkpoint references and older than
        ``orphan_age`` seconds (left by a crashed or overtaken batch) go too.
        """
        ids = self.ids()
        doomed = [i for i in ids[:-keep] if i not in protect] if keep > 0 else []
        live_files: set[str] = set()
        for i in ids:
            if i not in doomed:
                try:
                    live_files |= self._files_cached(i)
                except CheckpointError as exc:
                    # Never prune around a checkpoint we cannot read: restored from a
                    # backup, it needs its state files. It is itself pruned (with
                    # everything else) once ``keep`` newer checkpoints exist.
                    _logger.warning(
                        "pipeline %r: retention paused while a retained checkpoint is "
                        "unreadable: %s",
                        self.pipeline,
                        exc,
                    )
                    return 0
        files = []
        for i in doomed:
            with contextlib.suppress(CheckpointError):
                files += sorted(self._files_cached(i) - live_files)
        if doomed:
            self.fs.rm([f"checkpoints/{_name(i)}" for i in doomed])
            for i in doomed:
                self._files_of.pop(i, None)
        cutoff_ms = (time.time() - orphan_age) * 1000
        for name in self.fs.ls("state"):
            path = f"state/{name}"
            stamp = name.split("-", 1)[0]
            if path not in live_files and stamp.isdigit() and int(stamp) < cutoff_ms:
                files.append(path)
        # Temporary files of local writes a crash cut short (never linked into place).
        for folder in ("checkpoints", "epochs"):
            for name in self.fs.ls(folder):
                stamp = name.rsplit(".tmp-", 1)[1].split("-", 1)[0] if ".tmp-" in name else ""
                if stamp.isdigit() and int(stamp) < cutoff_ms:
                    files.append(f"{folder}/{name}")
        if files:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(sorted(set(files)))
        return len(doomed)

    @staticmethod
    def _state_files(cp: Checkpoint) -> set[str]:
        """Every state file ``cp`` references (the files of every chain)."""
        where = f"checkpoint {cp.id}"
        return {ref.path for entry in cp.operators.values() for ref in _entry_files(entry, where)}

    # ------------------------------------------------------------ state files
    def write_state(self, table: pl.DataFrame, path: str | None = None) -> FileRef:
        """Write ``table`` as an Arrow IPC state file (one record batch) at ``path``
        (default: a new name)."""
        return self._write_arrow(table.to_arrow().combine_chunks(), path)

    def write_states(self, table: pl.DataFrame, parts: list[tuple[str, int, int]]) -> list[FileRef]:
        """Write rows ``start:stop`` of ``table`` as the state file ``path``, for
        each ``(path, start, stop)`` of ``parts``, several at once (encoding and
        the store's round trips overlap); raises the first error once every
        write has ended."""
        arrow = table.to_arrow().combine_chunks()  # once: slices are written compactly
        if len(parts) == 1 and parts[0][1:] == (0, len(arrow)):
            return [self._write_arrow(arrow, parts[0][0])]
        with ThreadPoolExecutor(max(1, min(len(parts), _WRITERS))) as pool:
            return list(
                pool.map(lambda p: self._write_arrow(arrow.slice(p[1], p[2] - p[1]), p[0]), parts)
            )

    def _write_arrow(self, arrow: pa.Table, path: str | None) -> FileRef:
        # pyarrow's writer with zstd level 1: about 3x faster than Polars'
        # write_ipc(compression="zstd") on a state frame, for a file a few
        # percent larger; any Arrow IPC reader opens it.
        sink = pa.BufferOutputStream()
        with pa_ipc.new_file(sink, arrow.schema, options=_IPC_OPTIONS) as writer:
            writer.write_table(arrow)
        return self._put_state(sink.getvalue().to_pybytes(), path)

    def _put_state(self, data: bytes, path: str | None = None) -> FileRef:
        path = path or new_state_path()
        if not self.fs.put_new(path, data):  # pragma: no cover - uuid collision
            raise CheckpointError(f"state file {path} exists already")
        return FileRef(path, len(data), crc32(data))

    def copy_state(self, ref: FileRef) -> FileRef:
        """A byte-for-byte copy of a state file under a new name (checked first)."""
        return self._put_state(self._state_bytes(ref))

    def _state_bytes(self, ref: FileRef) -> bytes:
        """A state file's bytes, after its size and checksum are checked."""
        ref = FileRef.from_dict(ref.to_dict(), "a checkpoint")
        where = self._where(ref.path)
        try:
            data = self.fs.get(ref.path)
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"state file {where} referenced by a checkpoint is missing; "
                f"{self._way_out(ref.path)}"
            ) from exc
        if len(data) != ref.bytes or crc32(data) != ref.crc32:
            raise CorruptFileError(
                f"state file {where} is corrupt: expected {ref.bytes} bytes with crc32 "
                f"{ref.crc32:#010x}, found {len(data)} bytes with crc32 "
                f"{crc32(data):#010x}; {self._way_out(ref.path)}"
            )
        return data

    def _way_out(self, path: str) -> str:
        """How to get past a damaged or missing state file: the checkpoints that
        do not use it (incremental checkpoints share files)."""
        clean: list[int] = []
        with contextlib.suppress(StorageError, OSError):
            for cid in self.ids():
                with contextlib.suppress(CheckpointError):
                    if path not in self._state_files(self.read(cid)):
                        clean.append(cid)
        if not clean:
            return (
                "restore it from a backup, or rewind with run(from_checkpoint=0) to "
                "reprocess the log (every retained checkpoint uses this file)"
            )
        return (
            "restore it from a backup, or rewind to a checkpoint that does not use it "
            f"with run(from_checkpoint=N), N in {format_ids(clean)} (0 reprocesses the log)"
        )

    def read_state_batches(self, ref: FileRef) -> list[pa.RecordBatch]:
        """A state file's record batches; size, checksum and column types checked first.

        Raises
        ------
        CheckpointError
            If the file is missing.
        CorruptFileError
            If its size or checksum differs from the checkpoint's record, it is
            not Arrow IPC, or a column has a type streamkit never writes (an
            Arrow extension type, a nested type): such a file is refused before
            any of its data is decoded.
        """
        data = self._state_bytes(ref)
        where = self._where(ref.path)
        try:
            reader = pa_ipc.open_file(pa.BufferReader(data))
            _check_state_schema(reader.schema, where)
            return [reader.get_batch(i) for i in range(reader.num_record_batches)]
        except pa.ArrowException as exc:
            raise CorruptFileError(
                f"state file {where} is not readable Arrow IPC ({exc}); {self._way_out(ref.path)}"
            ) from None

    def read_state(self, ref: FileRef) -> pl.DataFrame:
        """A whole state file as one frame (see :meth:`read_state_batches`)."""
        batches = self.read_state_batches(ref)
        if batches:
            table = pa.Table.from_batches(batches)
        else:  # pragma: no cover - streamkit writes at least one record batch
            raise CorruptFileError(f"state file {self._where(ref.path)} holds no record batch")
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame


def new_state_path() -> str:
    """A fresh state file name: ``state/<ms since epoch>-<uuid>.arrow``.

    The time prefix is what lets retention delete files that no checkpoint
    references once they are old enough (left by a crashed batch).
    """
    return f"state/{int(time.time() * 1000):013d}-{uuid.uuid4().hex}.arrow"


def _entry_files(entry: dict[str, Any], where: str) -> list[FileRef]:
    """The state files an operator entry references, validated.

    Format 2 lists them under ``state`` (key-group chains); format 1 had one
    ``state_file``.
    """
    files: list[FileRef] = []
    if entry.get("state_file") is not None:  # format 1: the whole state in one file
        files.append(FileRef.from_dict(entry["state_file"], where))
    waiting = entry.get("waiting_files") or []  # events waiting for the watermark
    if not isinstance(waiting, list):
        raise CorruptFileError(f"corrupt file {where}: 'waiting_files' is not a list")
    files += [FileRef.from_dict(f, where) for f in waiting]
    state = entry.get("state")
    if state is not None:
        if not isinstance(state, dict) or not isinstance(state.get("files"), list):
            raise CorruptFileError(f"corrupt file {where}: a keyed state entry is malformed")
        files += [FileRef.from_dict(f, where) for f in state["files"]]
    return files


def _plain_type(t: pa.DataType) -> bool:
    """Whether ``t`` is a flat Arrow type that a state file may hold."""
    if pa.types.is_dictionary(t):
        return pa.types.is_integer(t.index_type) and _plain_type(t.value_type)
    checks = (
        pa.types.is_integer,
        pa.types.is_floating,
        pa.types.is_boolean,
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_string_view,
        pa.types.is_binary,
        pa.types.is_large_binary,
        pa.types.is_binary_view,
        pa.types.is_fixed_size_binary,
        pa.types.is_timestamp,
        pa.types.is_date,
        pa.types.is_time,
        pa.types.is_duration,
        pa.types.is_decimal,
        pa.types.is_null,
    )
    return not isinstance(t, pa.BaseExtensionType) and any(check(t) for check in checks)


def _check_state_schema(schema: pa.Schema, where: str) -> None:
    """Refuse extension, nested or otherwise unexpected column types in a state file.

    streamkit writes state files from plain Polars columns; anything else means
    the file was not written by streamkit (or was tampered with), and decoding
    it could run a registered type's deserializer. Extension types are
    recognised both when pyarrow knows them and by their field metadata.

    Examples
    --------
    >>> _check_state_schema(pa.schema([("key", pa.string()), ("events", pa.int64())]), "s")
    >>> _check_state_schema(pa.schema([("key", pa.list_(pa.int8()))]), "s.arrow")
    Traceback (most recent call last):
    ...
    streamkit.errors.CorruptFileError: state file s.arrow: column 'key' has type list<item: int8>...
    """
    for fld in schema:
        meta = fld.metadata or {}
        ext = meta.get(b"ARROW:extension:name")
        if isinstance(fld.type, pa.BaseExtensionType):
            ext = fld.type.extension_name.encode()
        if ext is not None:
            raise CorruptFileError(
                f"state file {where}: column {fld.name!r} has the Arrow extension type "
                f"{ext.decode(errors='replace')!r}; streamkit writes plain types only and "
                "never decodes extension types from stored files. The file was not written "
                "by streamkit or was tampered with: restore it, or rewind to an older "
                "checkpoint with run(from_checkpoint=N)"
            )
        if not _plain_type(fld.type):
            raise CorruptFileError(
                f"state file {where}: column {fld.name!r} has type {fld.type}, which "
                "streamkit never writes to a state file; the file was not written by "
                "streamkit or was tampered with: restore it, or rewind to an older "
                "checkpoint with run(from_checkpoint=N)"
            )


#: ``(store url, epoch)`` of the runs this process is working on right now.
_RUNNING: set[tuple[str, int]] = set()
_RUNNING_LOCK = threading.Lock()


def _holder_gone(url: str, epoch: int, claim: dict[str, Any]) -> bool:
    """Whether the claim's process is known to have ended, although its heartbeat is fresh.

    Only a holder on this host can be checked: this very process (no run of
    that epoch is working here any more, e.g. a run that failed and could not
    write its release) or another process whose pid no longer exists. Anything
    else -- another host, a pid that exists -- counts as alive. Wrongly taking
    the holder for dead (a pid namespace shared under one host name) costs no
    correctness: the holder is fenced at its next commit, as after a take-over.
    """
    if claim.get("host") != socket.gethostname():
        return False
    try:
        pid = int(claim["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if pid == os.getpid():
        with _RUNNING_LOCK:
            return (url, epoch) not in _RUNNING
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


class Heartbeat:
    """Keeps a claimed epoch's heartbeat fresh from a daemon thread.

    Beats every quarter of ``lease_timeout``; ``release()`` stops the thread and
    marks the lease released so the next run starts at once. A failed beat is
    logged and retried at the next interval: the heartbeat only decides who
    waits, never what is committed.
    """

    def __init__(self, ckpts: CheckpointStore, epoch: int, lease_timeout: float) -> None:
        self.ckpts, self.epoch, self.timeout = ckpts, epoch, lease_timeout
        with _RUNNING_LOCK:
            _RUNNING.add((ckpts.fs.url, epoch))
        self._stop = threading.Event()
        self._beat()
        origin = threading.current_thread().name
        self._thread = threading.Thread(
            target=self._loop, name=f"{origin}/streamkit-heartbeat", daemon=True
        )
        self._thread.start()

    def _beat(self, *, released: bool = False) -> None:
        try:
            self.ckpts.beat(self.epoch, self.timeout, released=released)
        except (StorageError, OSError) as exc:
            _logger.warning(
                "pipeline %r: could not write the heartbeat of run epoch %d: %s",
                self.ckpts.pipeline,
                self.epoch,
                exc,
            )

    def _loop(self) -> None:
        while not self._stop.wait(max(self.timeout / 4, 0.05)):
            self._beat()

    def release(self) -> None:
        """Stop beating and mark the lease released (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        with _RUNNING_LOCK:
            _RUNNING.discard((self.ckpts.fs.url, self.epoch))
        for attempt in range(3):  # a lost release only delays the next run
            try:
                self.ckpts.beat(self.epoch, self.timeout, released=True)
                return
            except (StorageError, OSError) as exc:
                _logger.warning(
                    "pipeline %r: could not release run epoch %d (attempt %d of 3): %s; "
                    "the next run waits until this run's heartbeat is %s s old",
                    self.ckpts.pipeline,
                    self.epoch,
                    attempt + 1,
                    exc,
                    self.timeout,
                )
                time.sleep(0.2)
