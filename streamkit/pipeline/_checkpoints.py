"""Checkpoint files of one pipeline: run epochs (leases), checkpoints, state files.

Layout under ``<store>/_pipelines/<name>/``::

    epochs/000000000042.json       claimed with create-if-absent; the newest run wins
    checkpoints/000000000007.json  one per committed batch, create-if-absent
    state/<uuid>.arrow             Arrow IPC files referenced by checkpoints

A checkpoint is self-describing JSON and carries a CRC-32 of its own canonical
body, so a flipped bit is detected even when the JSON still parses.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from streamkit.errors import CheckpointError, CorruptFileError, LeaseError, StorageError
from streamkit.storage._fs import crc32

if TYPE_CHECKING:
    from streamkit.storage._fs import FileSystem

FORMAT_VERSION = 1
_ID_WIDTH = 12
_IPC_OPTIONS = pa_ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=1))


def _name(n: int) -> str:
    return f"{n:0{_ID_WIDTH}d}.json"


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
    def from_dict(cls, d: dict[str, Any]) -> FileRef:
        return cls(str(d["path"]), int(d["bytes"]), int(d["crc32"]))


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

    def to_dict(self) -> dict[str, Any]:
        return {
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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        if d.get("format") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format {d.get('format')!r} is not supported "
                f"(this streamkit reads format {FORMAT_VERSION})"
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
        )


def initial_checkpoint(position: int) -> Checkpoint:
    """The virtual checkpoint 0: nothing processed, empty state."""
    return Checkpoint(
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

    def _where(self, path: str) -> str:
        return f"{self.fs.url.rstrip('/')}/{path}"

    # ---------------------------------------------------------------- epochs
    def claim_epoch(self, info: dict[str, Any]) -> int:
        """Claim the next run epoch; any older run is fenced from now on."""
        for _ in range(1000):
            latest = self.latest_epoch()
            epoch = latest + 1
            # a unique id: put_new recognises a claim of ours whose response was lost
            body = dict(
                info, epoch=epoch, claimed=datetime.now(UTC).isoformat(), claim=uuid.uuid4().hex
            )
            if self.fs.put_new(f"epochs/{_name(epoch)}", _canonical(body)):
                self._prune_epochs(epoch)
                return epoch
        raise LeaseError(f"pipeline {self.pipeline!r}: could not claim a run epoch")

    def latest_epoch(self) -> int:
        ids = [i for i in (_parse_id(n) for n in self.fs.ls("epochs")) if i is not None]
        return max(ids, default=0)

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
            if (i := _parse_id(n)) is not None and i <= epoch - keep
        ]
        if old:
            with contextlib.suppress(StorageError, FileNotFoundError):  # best effort
                self.fs.rm(old)

    # ----------------------------------------------------------- checkpoints
    def ids(self) -> list[int]:
        return sorted(i for i in (_parse_id(n) for n in self.fs.ls("checkpoints")) if i)

    def read(self, cid: int) -> Checkpoint:
        path = f"checkpoints/{_name(cid)}"
        try:
            data = self.fs.get(path)
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"pipeline {self.pipeline!r} has no checkpoint {cid} "
                f"(existing: {self.ids()[-5:]}...)"
            ) from exc
        try:
            doc = json.loads(data)
            crc = int(doc.pop("crc32"))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptFileError(
                f"checkpoint file {self._where(path)} is not a valid checkpoint: {exc}"
            ) from exc
        if crc32(_canonical(doc)) != crc:
            raise CorruptFileError(
                f"checkpoint file {self._where(path)} fails its checksum: the file "
                "was altered after it was committed"
            )
        try:
            return Checkpoint.from_dict(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(
                f"checkpoint file {self._where(path)} lacks a field: {exc}"
            ) from exc

    def latest(self) -> Checkpoint | None:
        ids = self.ids()
        return self.read(ids[-1]) if ids else None

    def commit(self, cp: Checkpoint) -> bool:
        """Create checkpoint ``cp.id``; False when that id exists already."""
        body = cp.to_dict()
        body["crc32"] = crc32(_canonical(body))
        return self.fs.put_new(f"checkpoints/{_name(cp.id)}", _canonical(body))

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
                    live_files |= self._state_files(self.read(i))
                except CheckpointError:
                    return 0  # never prune around a checkpoint we cannot read
        files = []
        for i in doomed:
            with contextlib.suppress(CheckpointError):
                files += sorted(self._state_files(self.read(i)) - live_files)
        if doomed:
            self.fs.rm([f"checkpoints/{_name(i)}" for i in doomed])
        cutoff_ms = (time.time() - orphan_age) * 1000
        for name in self.fs.ls("state"):
            path = f"state/{name}"
            stamp = name.split("-", 1)[0]
            if path not in live_files and stamp.isdigit() and int(stamp) < cutoff_ms:
                files.append(path)
        if files:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(sorted(set(files)))
        return len(doomed)

    @staticmethod
    def _state_files(cp: Checkpoint) -> set[str]:
        return {
            str(op["state_file"]["path"])
            for op in cp.operators.values()
            if op.get("state_file") is not None
        }

    # ------------------------------------------------------------ state files
    def write_state(self, table: pl.DataFrame) -> FileRef:
        # pyarrow's writer with zstd level 1: about 3x faster than Polars'
        # write_ipc(compression="zstd") on a state frame, for a file a few
        # percent larger; any Arrow IPC reader opens it.
        arrow = table.to_arrow()
        sink = pa.BufferOutputStream()
        with pa_ipc.new_file(sink, arrow.schema, options=_IPC_OPTIONS) as writer:
            writer.write_table(arrow)
        data = sink.getvalue().to_pybytes()
        path = f"state/{int(time.time() * 1000):013d}-{uuid.uuid4().hex}.arrow"
        if not self.fs.put_new(path, data):  # pragma: no cover - uuid collision
            raise CheckpointError(f"state file {path} exists already")
        return FileRef(path, len(data), crc32(data))

    def read_state(self, ref: FileRef) -> pl.DataFrame:
        try:
            data = self.fs.get(ref.path)
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"state file {self._where(ref.path)} referenced by a checkpoint is missing"
            ) from exc
        if len(data) != ref.bytes or crc32(data) != ref.crc32:
            raise CorruptFileError(
                f"state file {self._where(ref.path)} is corrupt: expected "
                f"{ref.bytes} bytes with crc32 {ref.crc32:#010x}, found {len(data)} bytes "
                f"with crc32 {crc32(data):#010x}"
            )
        try:
            table = pa_ipc.open_file(pa.BufferReader(data)).read_all()
        except pa.ArrowException as exc:
            raise CorruptFileError(
                f"state file {self._where(ref.path)} is not readable Arrow IPC: {exc}"
            ) from exc
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame
