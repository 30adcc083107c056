"""Storage: stores, the append-only event log, positions and read-only file logs.

A position on a :class:`FileLog` (``flog.end()``, a checkpoint's source
position) carries a :class:`FileCursor` of :class:`FileMark` file identities;
``flog.plan(position)`` returns a :class:`FilePlan` of the files still to read.

Examples
--------
>>> import polars as pl
>>> from streamkit.storage import Store
>>> log = Store("memory://streamkit-doc-storage").log("e", key="k", time="t")
>>> log.append(pl.DataFrame({"k": ["x"], "t": [1]})).rows
1
"""

from __future__ import annotations

from streamkit.storage.filelog import FileLog, FilePlan
from streamkit.storage.log import Log
from streamkit.storage.position import (
    AppendResult,
    FileCursor,
    FileMark,
    Position,
    Transaction,
)
from streamkit.storage.store import Store

__all__ = [
    "AppendResult",
    "FileCursor",
    "FileLog",
    "FileMark",
    "FilePlan",
    "Log",
    "Position",
    "Store",
    "Transaction",
]
