"""The source as one run reads it: batches of offsets (a Log) or of files (a FileLog)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from streamkit.errors import CheckpointError
from streamkit.pipeline._checkpoints import Checkpoint
from streamkit.pipeline._operators import OFFSET
from streamkit.storage import Position


@dataclass(frozen=True)
class Todo:
    """A source batch: offsets ``[lo, hi)`` and, for a FileLog, its files (``desc``,
    from ``FilePlan.batch``), stored with the batch's outputs as their meta."""

    lo: int
    hi: int
    desc: dict[str, Any] | None = None
    final: bool = False  # the end-of-input batch: no rows, the watermark moves on

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"start": self.lo, "end": self.hi}
        if self.desc is not None:
            meta["source"] = self.desc
        if self.final:
            meta["final"] = True
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Todo:
        return cls(
            int(meta["start"]), int(meta["end"]), meta.get("source"), bool(meta.get("final"))
        )


class SourceView:
    """The source as one run reads it.

    A Log is read by offsets alone: batch ``[lo, hi)`` is ``scan(lo, hi)``. A
    source with a ``plan`` method (a FileLog) is read through a plan of the
    files its checkpoint's position has not consumed: every batch carries its
    files (``Todo.desc``), which are stored with the batch's outputs, so a
    batch redone after a crash or taken over from an overtaken run reads
    exactly the same files whatever arrived since; each checkpoint records the
    position after its batch (``Checkpoint.source_state``), from which the next
    run plans.
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self.planned = hasattr(source, "plan") and hasattr(source, "read_batch")
        self.plan: Any = None
        self.end = 0
        self.ended = False  # a Log's end, once taken

    def position(self, cp: Checkpoint) -> Any:
        """The source position of ``cp`` (planned sources only)."""

        if cp.source_state is not None:
            pos = Position.from_dict(cp.source_state)
            if pos.offset != cp.position:
                raise CheckpointError(
                    f"checkpoint {cp.id} is at source offset {cp.position} but its source "
                    f"position says {pos.offset}: the checkpoint is inconsistent"
                )
            return pos
        if cp.position == 0:
            return self.source.start()
        # written without the consumed files: the first rows in path order
        return self.source.plan(Position(cp.position)).start

    def replan(self, cp: Checkpoint, first: Todo | None) -> None:
        """Plan the batches after ``cp`` (and after ``first``, a batch to redo).

        A Log's end is taken once per run: a run processes what was committed
        when it started. A FileLog is re-planned after a batch taken over from
        another run, whose files may differ from this run's plan.
        """
        if not self.planned:
            if not self.ended:
                self.end, self.ended = self.source.end().offset, True
            return
        pos = self.position(cp)
        if first is not None and first.desc is not None:
            pos = self.source.advance(pos, first.desc)
        self.plan = self.source.plan(pos)
        self.end = self.plan.end_offset

    def redo(self, cp: Checkpoint, todo: Todo) -> Todo:
        """A stored batch to redo after ``cp``, with its files."""
        if (
            self.planned and todo.desc is None and not todo.final
        ):  # stored without its files (older streamkit)
            plan = self.source.plan(self.position(cp))
            return Todo(todo.lo, todo.hi, plan.batch(todo.lo, todo.hi))
        return todo

    def cut(self, lo: int, rows: int) -> Todo:
        """The next batch from ``lo``: at most ``rows`` rows."""
        if not self.planned:
            return Todo(lo, min(lo + rows, self.end))
        hi = self.plan.cut(lo, rows)
        return Todo(lo, hi, self.plan.batch(lo, hi))

    def read(self, todo: Todo) -> pl.DataFrame:
        """The batch's rows with their offsets (read ahead on a thread)."""
        if todo.final:  # no rows: the schema only
            schema = dict(self.source.schema or {})
            return pl.DataFrame(schema=schema).with_columns(pl.lit(0, pl.Int64).alias(OFFSET))

        if todo.desc is not None:
            frame = self.source.read_batch(todo.desc, with_offset=OFFSET)
        else:
            frame = self.source.scan(
                start=Position(todo.lo), end=Position(todo.hi), with_offset=OFFSET
            )
        batch: pl.DataFrame = frame.collect()
        return batch

    def state_after(self, cp: Checkpoint, todo: Todo) -> dict[str, Any] | None:
        """The source position after ``todo`` read from ``cp``, for its checkpoint."""
        if todo.final:
            return cp.source_state
        if not self.planned or todo.desc is None:
            return None
        state: dict[str, Any] = self.source.advance(self.position(cp), todo.desc).to_dict()
        return state
