"""streamkit: resumable, stateful analytics over event logs.

Events live in an append-only, time-ordered log on any fsspec store; Polars
micro-batch operators run a finite-state machine per key and checkpoint their
state as Arrow files next to the log, so a pipeline resumes exactly where it left
off.

Examples
--------
>>> import polars as pl
>>> import streamkit as sk
>>> store = sk.Store("memory://streamkit-doc-init")
>>> log = store.log("clicks", key="user", time="ts")
>>> _ = log.append(pl.DataFrame({"user": ["a", "b"], "ts": [1, 2]}))
>>> log.scan().collect().height
2
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from streamkit.errors import (
    CheckpointError,
    ConfigurationError,
    CorruptFileError,
    LeaseError,
    LogNotFoundError,
    MachineError,
    SchemaError,
    StorageError,
    StreamkitError,
    UndefinedTransitionError,
)

if TYPE_CHECKING:
    from streamkit import analytics, datasets, machines, plot
    from streamkit.machines import Machine, Problem, ValidationReport
    from streamkit.pipeline import DaskExecutor, Pipeline, RunReport, VerifyReport
    from streamkit.storage import AppendResult, DeltaLog, FileLog, Log, Position, Store

__version__ = "0.1.0"

# Public names that live in heavier modules are imported on first use (PEP 562),
# so ``import streamkit`` stays fast and matplotlib/numba load only when needed.
_LAZY = {
    "AppendResult": "streamkit.storage",
    "DaskExecutor": "streamkit.pipeline",
    "DeltaLog": "streamkit.storage",
    "FileLog": "streamkit.storage",
    "Log": "streamkit.storage",
    "Machine": "streamkit.machines",
    "Pipeline": "streamkit.pipeline",
    "Position": "streamkit.storage",
    "Problem": "streamkit.machines",
    "RunReport": "streamkit.pipeline",
    "Store": "streamkit.storage",
    "ValidationReport": "streamkit.machines",
    "VerifyReport": "streamkit.pipeline",
}
_LAZY_MODULES = ("analytics", "datasets", "machines", "plot")

__all__ = [
    "AppendResult",
    "CheckpointError",
    "ConfigurationError",
    "CorruptFileError",
    "DaskExecutor",
    "DeltaLog",
    "FileLog",
    "LeaseError",
    "Log",
    "LogNotFoundError",
    "Machine",
    "MachineError",
    "Pipeline",
    "Position",
    "Problem",
    "RunReport",
    "SchemaError",
    "StorageError",
    "Store",
    "StreamkitError",
    "UndefinedTransitionError",
    "ValidationReport",
    "VerifyReport",
    "__version__",
    "analytics",
    "datasets",
    "machines",
    "plot",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"streamkit.{name}")
    else:
        raise AttributeError(f"module 'streamkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
