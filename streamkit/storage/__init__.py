"""Storage: stores, the append-only event log, positions and read-only file logs.

A position on a :class:`FileLog` (``flog.end()``, a checkpoint's source
position) carries a :class:`FileCursor` of :class:`FileMark` file identities;
``flog.plan(position)`` returns a :class:`FilePlan` of the files still to read.

For layers built on a store (pipelines, their checkpoints): :class:`FileSystem`
(what ``store.filesystem`` and ``FileSystem.child`` return: byte I/O with the
create-if-absent commit primitive), :func:`crc32` (the checksum every stored
file carries) and :func:`safe_relpath` (the check for a path read from a stored
file). ``Store.log_at`` opens logs at nested paths such as a pipeline's
quarantine; ``Log.retract``, ``Log.writer_history`` and ``Log.check_manifest``
serve writers that append with ``writer=``/``seq=``. ``Log.write_segments`` and
``Log.commit_segments`` split an append across processes: workers write segment
files and return :class:`SegmentRef` references, one process commits them all.

Examples
--------
>>> import polars as pl
>>> from streamkit.storage import Store
>>> log = Store("memory://streamkit-doc-storage").log("e", key="k", time="t")
>>> log.append(pl.DataFrame({"k": ["x"], "t": [1]})).rows
1
"""

from __future__ import annotations

from streamkit.storage._fs import FileSystem, crc32
from streamkit.storage._hash import key_hash, partition_of
from streamkit.storage._manifest import safe_relpath
from streamkit.storage.deltalog import DeltaLog, DeltaPlan
from streamkit.storage.filelog import FileLog, FilePlan
from streamkit.storage.log import Log
from streamkit.storage.position import (
    AppendResult,
    FileCursor,
    FileMark,
    Position,
    SegmentRef,
    Transaction,
)
from streamkit.storage.store import Store

__all__ = [
    "AppendResult",
    "DeltaLog",
    "DeltaPlan",
    "FileCursor",
    "FileLog",
    "FileMark",
    "FilePlan",
    "FileSystem",
    "Log",
    "Position",
    "SegmentRef",
    "Store",
    "Transaction",
    "crc32",
    "key_hash",
    "partition_of",
    "safe_relpath",
]
