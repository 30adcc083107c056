"""Exactly-once recovery: open the state, finish or retract what a crash left, rewind.

A run starts from its newest checkpoint. Output appends and the checkpoint
that records them are two commits, so a crash between them leaves a batch
whose outputs landed but whose checkpoint did not: ``reconcile`` finds it (the
outputs carry ``writer=pipe.writer_id, seq=<checkpoint id>`` and the batch's
source range as their meta) and the runner redoes exactly that batch. A rewind
(``run(from_checkpoint=N)``) commits a checkpoint that retracts every output of
the abandoned line; retractions are re-applied on every start, so an overtaken
run's late append is undone too. Fencing -- ``check_lease`` before every
commit -- keeps a run that was taken over from committing anything.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streamkit.errors import CheckpointError, ConfigurationError, LeaseError
from streamkit.pipeline._checkpoints import (
    Checkpoint,
    CheckpointStore,
    FileRef,
    initial_checkpoint,
)
from streamkit.pipeline._operators import KeyedOperator
from streamkit.pipeline._source import Todo

if TYPE_CHECKING:
    from streamkit.pipeline.pipeline import Pipeline
    from streamkit.storage import Log

logger = logging.getLogger("streamkit.pipeline")


class Recovery:
    """What a run does with its checkpoints before and between batches."""

    def __init__(self, pipe: Pipeline, ckpts: CheckpointStore) -> None:
        self.pipe = pipe
        self.ckpts = ckpts

    def open_operators(self, cp: Checkpoint, *, restore: bool = True) -> None:
        """Restore every stateful operator from ``cp`` (in ``cp``'s key groups);
        ``restore=False`` only checks that they match it (a Dask run's driver, whose
        tasks restore their own groups).

        Raises
        ------
        ConfigurationError
            The pipeline was built with ``key_groups`` other than ``cp``'s.
        CheckpointError
            The pipeline's operators are not the ones ``cp`` was written by.
        """
        wanted = self.pipe.key_groups
        if wanted is not None and wanted != cp.key_groups and cp.counts.get("batches", 0) > 0:
            raise ConfigurationError(
                f"pipeline {self.pipe.name!r} has {cp.key_groups} key groups (checkpoint "
                f"{cp.id}) but was opened with key_groups={wanted}. Key groups are fixed "
                "when a pipeline starts; re-shard its state once with "
                f"pipe.reshard(key_groups={wanted}) (streamkit reshard STORE {self.pipe.name} "
                f"--key-groups {wanted}), or open it without key_groups"
            )
        for op in self.pipe.operators:
            entry = cp.operators.get(op.op_id)
            if entry is not None and entry.get("kind") != op.kind:
                raise CheckpointError(
                    f"checkpoint {cp.id} has a {entry.get('kind')!r} operator with id "
                    f"{op.op_id!r} but the pipeline's is {op.kind!r}: the pipeline's "
                    "operators changed; start over with run(from_checkpoint=0)"
                )
            if op.stateful and entry is None and cp.counts.get("batches", 0) > 0:
                raise CheckpointError(
                    f"checkpoint {cp.id} has no state for operator {op.op_id!r}; the "
                    "pipeline's operators changed: start over with run(from_checkpoint=0)"
                )
            if isinstance(op, KeyedOperator) and restore:
                op.open(entry, self.ckpts, cp.key_groups)

    def output_logs(self) -> list[Log]:
        """The logs this pipeline appends to: its sink and its quarantine."""
        pipe = self.pipe
        return [lg for lg in (pipe.sink, pipe._quarantine_log_if_any()) if lg is not None]

    def retract(self, cp: Checkpoint) -> None:
        """(Re-)apply ``cp``'s retractions to the output logs (idempotent)."""
        if cp.retracted:
            for lg in self.output_logs():
                lg.retract(self.pipe.writer_id, list(cp.retracted))

    def reconcile(self, cp: Checkpoint) -> Todo | None:
        """Re-apply retractions; return the batch whose outputs committed after
        ``cp`` but whose checkpoint did not (a crash in between)."""
        logs = self.output_logs()
        self.retract(cp)
        pending: Todo | None = None
        for lg in logs:
            txn = lg.transaction(self.pipe.writer_id)
            if txn is None or txn.seq <= cp.id or any(a <= txn.seq <= b for a, b in cp.retracted):
                continue
            if txn.seq != cp.id + 1:
                raise CheckpointError(
                    f"log {lg.name!r} holds output of batch {txn.seq} of pipeline "
                    f"{self.pipe.name!r} but its newest checkpoint is {cp.id}; a checkpoint "
                    "is missing. Reprocess with run(from_checkpoint=...)"
                )
            todo = Todo.from_meta(txn.meta or {})
            if todo.lo != cp.position:
                raise CheckpointError(
                    f"log {lg.name!r} holds batch {txn.seq} for source offsets "
                    f"{(todo.lo, todo.hi)} but checkpoint {cp.id} ends at offset {cp.position}"
                )
            pending = todo
        return pending

    def rewind(self, latest: Checkpoint | None, target: int, epoch: int) -> Checkpoint:
        """Commit a checkpoint that returns to ``target`` and retracts every later output."""
        ckpts = self.ckpts
        retracted = list(latest.retracted) if latest else []
        if any(a <= target < b for a, b in retracted):
            raise CheckpointError(
                f"checkpoint {target} of pipeline {self.pipe.name!r} was abandoned by an earlier "
                "rewind (its outputs were retracted); rewind to a checkpoint of the current "
                "line (see pipe.checkpoints()) or to 0"
            )
        start = self.pipe.source.start().offset
        groups = latest.key_groups if latest is not None else self.pipe.key_groups
        base = initial_checkpoint(start, groups) if target == 0 else ckpts.read(target)
        if base.position < start:
            raise CheckpointError(
                f"checkpoint {target} reads the source from offset {base.position} but "
                f"{getattr(self.pipe.source, 'name', 'the source')!r} now starts at {start} "
                "(truncated); choose a later checkpoint, or 0 to reprocess what is left"
            )
        # Cover every output this pipeline ever wrote, even beyond the newest
        # checkpoint (a crash before its checkpoint, or deleted checkpoints).
        newest = max(ckpts.ids(), default=0)  # damaged checkpoints included
        for lg in self.output_logs():
            txn = lg.transaction(self.pipe.writer_id)
            if txn is not None:
                newest = max(newest, txn.seq)
        # The rewind owns copies of the base's state files: pruning the base
        # (by this or an overlapping run) must never break it.
        operators = {op_id: self._copy_state(entry) for op_id, entry in base.operators.items()}
        rewind = base.successor(
            newest + 1,
            epoch,
            "rewind",
            operators,
            retracted=sorted({*retracted, (base.id + 1, newest + 1)}),
            plan=self.pipe._plan(),
        )
        ckpts.check_lease(epoch)
        if not ckpts.commit(rewind):
            raise LeaseError(
                f"pipeline {self.pipe.name!r}: another run committed checkpoint {rewind.id} "
                "while this one was rewinding"
            )
        logger.info(
            "pipeline %s: rewound to checkpoint %s as %s", self.pipe.name, target, rewind.id
        )
        return rewind

    # ------------------------------------------------------------------ run
    def _copy_state(self, entry: dict[str, Any]) -> dict[str, Any]:
        """``entry`` with every state file it references copied byte for byte.

        The rewind owns its state files: pruning the base checkpoint (by this
        or an overlapping run) must never break it.
        """
        ckpts = self.ckpts
        entry = dict(entry)
        if entry.get("state_file") is not None:
            entry["state_file"] = ckpts.copy_state(FileRef.from_dict(entry["state_file"])).to_dict()
        if entry.get("waiting_files"):
            entry["waiting_files"] = [
                {**f, **ckpts.copy_state(FileRef.from_dict(f)).to_dict()}
                for f in entry["waiting_files"]
            ]
        if entry.get("state") is not None:
            state = dict(entry["state"])
            state["files"] = [
                ckpts.copy_state(FileRef.from_dict(f)).to_dict() for f in state["files"]
            ]
            entry["state"] = state
        return entry

    def check_source(self, cp: Checkpoint) -> None:
        start = self.pipe.source.start().offset
        if cp.position < start:
            raise CheckpointError(
                f"pipeline {self.pipe.name!r} is at source offset {cp.position} but the log "
                f"{self.pipe.source.name!r} now starts at {start}: unprocessed events were "
                "truncated. Reprocess with run(from_checkpoint=0) to accept the loss"
            )
