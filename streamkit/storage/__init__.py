"""Storage: stores, the append-only event log, positions and read-only file logs.

Examples
--------
>>> import polars as pl
>>> from streamkit.storage import Store
>>> log = Store("memory://streamkit-doc-storage").log("e", key="k", time="t")
>>> log.append(pl.DataFrame({"k": ["x"], "t": [1]})).rows
1
"""

from __future__ import annotations

from streamkit.storage.filelog import FileLog
from streamkit.storage.log import Log
from streamkit.storage.position import AppendResult, Position, Transaction
from streamkit.storage.store import Store

__all__ = ["AppendResult", "FileLog", "Log", "Position", "Store", "Transaction"]
