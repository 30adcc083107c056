"""Pipelines: micro-batch operators, per-key machines, checkpoints and recovery."""

from __future__ import annotations

from streamkit.pipeline._executor import DaskExecutor, Executor, LocalExecutor
from streamkit.pipeline._report import Check, RunReport, VerifyReport
from streamkit.pipeline.pipeline import Pipeline

__all__ = [
    "Check",
    "DaskExecutor",
    "Executor",
    "LocalExecutor",
    "Pipeline",
    "RunReport",
    "VerifyReport",
]
