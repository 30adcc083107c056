"""Read-only questions about a pipeline: its checkpoints, state and quarantine.

Nothing here claims a lease or writes, except :func:`vacuum`, which deletes
only files no committed version references.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit.errors import ConfigurationError, CorruptFileError
from streamkit.pipeline._checkpoints import DEFAULT_KEY_GROUPS
from streamkit.pipeline._transitions import Transitions

if TYPE_CHECKING:
    from streamkit.pipeline.pipeline import Pipeline

_CHECKPOINT_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Int64(),
    "parent": pl.Int64(),
    "kind": pl.String(),
    "epoch": pl.Int64(),
    "created": pl.Datetime("us", "UTC"),
    "position": pl.Int64(),
    "batches": pl.Int64(),
    "batch_start": pl.Int64(),
    "batch_end": pl.Int64(),
    "rows_in": pl.Int64(),
    "rows_out": pl.Int64(),
    "quarantined": pl.Int64(),
    "keys": pl.Int64(),
    "key_groups": pl.Int64(),
    "machine": pl.String(),
}


def checkpoints(pipe: Pipeline) -> pl.DataFrame:
    """One row per retained checkpoint (see :meth:`Pipeline.checkpoints`)."""
    ckpts = pipe._ckpts()
    rows: list[dict[str, Any]] = []
    for cid in ckpts.ids():
        try:
            cp = ckpts.read(cid)
        except CorruptFileError:
            rows.append({"id": cid, "kind": "damaged"})
            continue
        op = next(iter(cp.operators.values()), {}) if cp.operators else {}
        rows.append(
            {
                "id": cp.id,
                "parent": cp.parent,
                "kind": cp.kind,
                "epoch": cp.epoch,
                "created": datetime.fromisoformat(cp.created),
                "position": cp.position,
                "batches": cp.counts.get("batches", 0),
                "batch_start": cp.batch[0] if cp.batch else None,
                "batch_end": cp.batch[1] if cp.batch else None,
                "rows_in": cp.counts.get("rows_in", 0),
                "rows_out": cp.counts.get("rows_out", 0),
                "quarantined": cp.counts.get("quarantined", 0),
                "keys": int(op.get("keys", 0)),
                "key_groups": cp.key_groups,
                "machine": str(op.get("machine", ""))[:12],
            }
        )
    if not rows:
        return pl.DataFrame(schema=_CHECKPOINT_SCHEMA)
    return pl.DataFrame(rows, schema=_CHECKPOINT_SCHEMA, orient="row")


def state(pipe: Pipeline, checkpoint: int | None) -> pl.DataFrame:
    """The keyed operator's per-key state at a checkpoint (see :meth:`Pipeline.state`)."""
    op = pipe._keyed_op()
    if not isinstance(op, Transitions):
        raise ConfigurationError(f"pipeline {pipe.name!r} has no .transitions(...) operator")
    ckpts = pipe._ckpts()
    cp = ckpts.read(checkpoint) if checkpoint is not None else ckpts.latest()
    entry = cp.operators.get(op.op_id) if cp is not None else None
    probe = op.fresh()
    probe.open(entry, ckpts, cp.key_groups if cp is not None else DEFAULT_KEY_GROUPS)
    frame = probe.state_frame()
    if not probe.lateness:
        return frame
    # Events waiting for the watermark, counted per key; a key whose every event
    # still waits has no state yet (nulls).
    waiting = probe.waiting.group_by("key").len("waiting")
    if frame.height == 0:  # no key applied yet: the source's key and time types
        schema = pipe.source.schema or {}
        frame = frame.cast(
            {
                "key": schema.get(pipe.source.key, pl.String),
                "since": schema.get(pipe.source.time, pl.Int64),
                "last_time": schema.get(pipe.source.time, pl.Int64),
            }
        )
    if frame.height == 0 and waiting.height == 0:
        return frame.with_columns(waiting=pl.lit(0, pl.UInt32))
    waiting = waiting.with_columns(pl.col("key").cast(frame.schema["key"]))
    return frame.join(
        waiting, on="key", how="full", coalesce=True, maintain_order="left"
    ).with_columns(pl.col("waiting").fill_null(0))


def quarantine(pipe: Pipeline) -> pl.DataFrame:
    """The quarantine log's rows, or an empty frame of its schema."""
    frame = pipe._quarantine_log().scan().collect()
    if frame.width:
        return frame
    schema = pipe.source.schema or {}
    key, time = pipe.source.key, pipe.source.time
    return pl.DataFrame(
        schema={
            key: schema.get(key, pl.String),
            time: schema.get(time, pl.Int64),
            "event": pl.String,
            "reason": pl.String,
            "state": pl.String,
            "offset": pl.Int64,
            "data": pl.String,
        }
    )


def vacuum(pipe: Pipeline, retain: timedelta) -> list[str]:
    """Unreferenced files of the output and quarantine logs, deleted."""
    removed: list[str] = []
    for log in (pipe.sink, pipe._quarantine_log_if_any()):
        if log is not None:
            removed += [f"{log.name}/{path}" for path in log.vacuum(retain=retain)]
    return removed
