"""The batch loop of one run: read, process, commit, in order, on three threads.

Batch N+1 is computed (the batch step, :meth:`Runner.prepare`) while batch N's
outputs, state and checkpoint are written by one commit thread
(:meth:`Runner.commit`), and batch N+2 is read by another: commits stay
strictly in order, and nothing of N+1 is written before N's checkpoint is
committed (reading ahead writes nothing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time as _time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit.errors import CheckpointError, ConfigurationError, LeaseError
from streamkit.pipeline._checkpoints import Checkpoint, Heartbeat, initial_checkpoint
from streamkit.pipeline._distributed import DistributedStep
from streamkit.pipeline._eventtime import Reads
from streamkit.pipeline._operators import OFFSET, BatchContext, KeyedOperator, run_operators
from streamkit.pipeline._recovery import Recovery
from streamkit.pipeline._report import RunReport
from streamkit.pipeline._source import SourceView, Todo
from streamkit.storage import Log

if TYPE_CHECKING:
    from streamkit.pipeline._executor import Executor
    from streamkit.pipeline.pipeline import Pipeline

logger = logging.getLogger("streamkit.pipeline")

_COUNTS = ("rows_in", "rows_out", "quarantined", "ignored", "late", "applied", "batches")


@dataclass
class Batch:
    """A prepared micro-batch: outputs and the state it changed, not yet committed."""

    lo: int
    hi: int
    out: pl.DataFrame
    quarantine: pl.DataFrame | None
    changes: dict[str, Any]
    counts: dict[str, int]
    desc: dict[str, Any] | None = None
    final: bool = False
    # A Dask run: the segments its tasks wrote (committed by the driver)
    out_refs: list[Any] | None = None
    quarantine_refs: list[Any] | None = None


class BatchConflict(Exception):
    """Another (overtaken) run committed this batch's outputs for another range."""

    def __init__(self, todo: Todo) -> None:
        super().__init__(todo)
        self.todo = todo


class Runner:
    """One run of a pipeline: claims the lease, recovers, loops over batches.

    Parameters
    ----------
    pipe : Pipeline
        The pipeline (its source, operators, sink and settings).
    executor : Executor
        Where the kernel runs.
    """

    def __init__(self, pipe: Pipeline, executor: Executor) -> None:
        self.pipe = pipe
        self.executor = executor
        self.ckpts = pipe._ckpts()
        self.recovery = Recovery(pipe, self.ckpts)
        self.epoch = 0
        self.final = False  # the end-of-input batch is still to come
        self._final_asked = False
        self.dist: DistributedStep | None = None  # a Dask run's batch step

    def run(
        self,
        *,
        max_batches: int | None,
        from_checkpoint: int | None,
        batch_rows: int,
        progress: bool | None,
        take_over: bool,
        key_groups: int | None = None,
        final: bool = False,
    ) -> RunReport:
        """Claim the lease, recover, process batches; ``key_groups`` re-shards at the end."""
        pipe, ckpts = self.pipe, self.ckpts
        started = _time.perf_counter()
        self.epoch = epoch = ckpts.claim_epoch(
            {"pid": os.getpid(), "host": socket.gethostname()},
            lease_timeout=pipe.lease_timeout,
            take_over=take_over,
        )
        heartbeat = Heartbeat(ckpts, epoch, pipe.lease_timeout)  # released when the run ends
        try:
            if getattr(self.executor, "distributed", False) and isinstance(pipe.source, Log):
                if key_groups is not None:
                    raise ConfigurationError(
                        f"pipeline {pipe.name!r}: re-shard with the local executor "
                        "(pipe.reshard(...) or run(key_groups=...) without executor=)"
                    )
                self.dist = DistributedStep(pipe, self.executor, epoch)
            latest, cp, view, pending = self._start(from_checkpoint)
            report = RunReport(pipe.name, checkpoint=latest.id if latest else None)
            report.start_offset = report.end_offset = cp.position
            report._note_source(pipe.source, view.end, pipe.store)
            self.final = self._final_asked = final
            cp = self._loop(cp, view, pending, report, max_batches, batch_rows, progress)
            if key_groups is not None:
                cp = self._reshard(cp, key_groups, report)
            self.prune(cp)
            report.caught_up = cp.position >= view.end
            report.seconds = _time.perf_counter() - started
            logger.debug("%s", report)
        finally:
            heartbeat.release()
        return report

    def _start(
        self, from_checkpoint: int | None
    ) -> tuple[Checkpoint | None, Checkpoint, SourceView, Todo | None]:
        """The checkpoint to start from (after a rewind), with the operators opened
        on it, the source view planned after it and a batch to redo first."""
        pipe, ckpts, recovery = self.pipe, self.ckpts, self.recovery
        latest: Checkpoint | None
        try:
            if from_checkpoint is not None:  # a rewind also gets past damaged newest ones
                latest = recovery.rewind(ckpts.latest_readable(), int(from_checkpoint), self.epoch)
            else:
                latest = ckpts.latest()
            cp = latest or initial_checkpoint(pipe.source.start().offset, pipe.key_groups)
            recovery.check_source(cp)
            self._open(cp)
            view = SourceView(pipe.source)
            pending = recovery.reconcile(cp)
        except CheckpointError:
            # A newer run may have moved on since ``latest`` was read (output past
            # it, its state or the rewind's target pruned): then this run was
            # overtaken, nothing is damaged.
            ckpts.check_lease(self.epoch)
            raise
        if pending is not None:
            pending = view.redo(cp, pending)
        view.replan(cp, pending)
        return latest, cp, view, pending

    def _loop(
        self,
        cp: Checkpoint,
        view: SourceView,
        pending: Todo | None,
        report: RunReport,
        max_batches: int | None,
        rows_per_batch: int,
        progress: bool | None,
    ) -> Checkpoint:
        """Prepare, commit and land batches until caught up; return the last checkpoint."""
        pipe = self.pipe
        end = view.end
        bar = Progress(pipe.name, cp.position, max(end, cp.position), progress)
        origin = threading.current_thread().name  # workers named after their run's thread
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{origin}/streamkit")
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{origin}/streamkit-read")
        ahead: tuple[Todo, Future[pl.DataFrame]] | None = None
        inflight: Future[Checkpoint] | None = None
        next_pos, planned = cp.position, 0
        plan = pipe._plan()  # stored in every checkpoint; computed once per run
        try:
            while True:
                prepared: Batch | None = None
                todo: Todo | None = None
                if pending is not None:
                    todo, pending = pending, None
                elif next_pos < end and (max_batches is None or planned < max_batches):
                    todo = self._cut(view, next_pos, rows_per_batch, end)
                elif self._final_due(cp, next_pos, end, planned, max_batches):
                    todo = Todo(next_pos, next_pos, final=True)
                    self.final = False
                elif inflight is None:
                    break
                t0 = _time.perf_counter()
                if todo is not None:  # else nothing left to prepare: land the last batch
                    hi = todo.hi
                    read = ahead[1] if ahead is not None and ahead[0] == todo else None
                    ahead = None
                    ahead_ok = self.dist is None  # a Dask run's tasks read their own rows
                    if ahead_ok and hi < end and (max_batches is None or planned + 1 < max_batches):
                        nxt = view.cut(hi, rows_per_batch)
                        ahead = (nxt, reader.submit(view.read, nxt))
                    try:
                        batch = read.result() if read is not None else None
                        prepared = self.prepare(todo, view, batch)
                    except BaseException:
                        if inflight is not None:  # let the previous batch land first
                            cp = inflight.result()
                            inflight = None
                        raise
                    planned += 1
                if inflight is not None:
                    try:
                        cp = self._landed(inflight, report, bar)
                    except BatchConflict as conflict:
                        # An overtaken run wrote that batch for another source range
                        # (or other files): drop what was computed after it, redo
                        # exactly that batch and plan what follows it afresh.
                        self._open(cp)
                        self.final = self._final_asked  # a dropped final batch comes again
                        pending = view.redo(cp, conflict.todo)
                        view.replan(cp, pending)
                        end, next_pos = view.end, pending.hi
                        planned -= prepared is not None
                        continue
                    finally:
                        inflight = None
                if prepared is not None:
                    inflight = pool.submit(self.commit, cp, prepared, report, plan, view)
                    next_pos = hi
                    report.batch_seconds.append(_time.perf_counter() - t0)
        finally:
            if inflight is not None:
                with contextlib.suppress(BaseException):
                    inflight.result()
            pool.shutdown(wait=True)
            reader.shutdown(wait=True, cancel_futures=True)
            bar.close()
        view.end = end
        return cp

    def _open(self, cp: Checkpoint) -> None:
        """Follow ``cp``: the operators restored from it (a Dask run: its tasks do)."""
        self.recovery.open_operators(cp, restore=self.dist is None)
        if self.dist is not None:
            self.dist.reset(cp)

    def _cut(self, view: SourceView, lo: int, rows: int, end: int) -> Todo:
        return view.cut(lo, rows) if self.dist is None else self.dist.cut(lo, rows, end)

    def _final_due(
        self, cp: Checkpoint, pos: int, end: int, planned: int, max_batches: int | None
    ) -> bool:
        """Whether the end-of-input batch comes now: asked for, caught up, and the
        pipeline holds events that wait for the watermark (or did not end so yet)."""
        if not self.final or pos < end:
            return False
        if max_batches is not None and planned >= max_batches:
            return False
        waits = any(
            getattr(op, "lateness", 0)
            for op in self.pipe.operators
            if isinstance(op, KeyedOperator)
        )
        return waits and not (planned == 0 and cp.kind == "final")

    def _landed(self, future: Future[Checkpoint], report: RunReport, bar: Progress) -> Checkpoint:
        """Wait for a batch's commit; then progress, retractions and retention."""
        cp = future.result()
        if report.batches == 1 and cp.retracted:
            # An overtaken run may have appended after our reconcile; our own
            # append now rejects any lower seq, so one more pass is final.
            self.recovery.retract(cp)
        bar.update(cp.position)
        if report.batches % 10 == 0:
            self.prune(cp)
        return cp

    def prune(self, cp: Checkpoint) -> None:
        """Retention, only while this run holds the lease (never under a newer run)."""
        if self.ckpts.latest_epoch() == self.epoch:
            self.ckpts.prune(self.pipe.keep_checkpoints, protect={cp.id})

    # ---------------------------------------------------------- the batch step
    def prepare(self, todo: Todo, view: SourceView, batch: pl.DataFrame | None = None) -> Batch:
        """Run the operators on the source batch ``todo`` (read now unless ``batch``
        holds it already); advances the operators' state."""
        pipe = self.pipe
        if self.dist is not None:
            return self._prepare_distributed(todo)
        ctx = BatchContext(
            key=pipe.source.key, time=pipe.source.time, executor=self.executor, final=todo.final
        )
        if batch is None:
            batch = view.read(todo)
        ctx.reads = Reads.of(batch, pipe.source.time, OFFSET)
        ctx.count("rows_in", batch.height)
        out, quarantine = run_operators(
            pipe.operators,
            batch,
            ctx,
            pipeline=pipe.name,
            source=getattr(pipe.source, "name", "the source"),
        )
        changes = {op.op_id: op.changes() for op in pipe.operators if isinstance(op, KeyedOperator)}
        return Batch(todo.lo, todo.hi, out, quarantine, changes, ctx.counts, todo.desc, todo.final)

    def _prepare_distributed(self, todo: Todo) -> Batch:
        """Run batch ``todo`` as tasks on the cluster (see :mod:`._distributed`)."""
        assert self.dist is not None
        results, entries = self.dist.prepare(todo)
        counts: dict[str, int] = {"rows_in": 0 if todo.final else todo.hi - todo.lo}
        for r in results:
            for name, n in r.counts.items():
                counts[name] = counts.get(name, 0) + n
        counts["rows_out"] = sum(r.rows_out for r in results)
        counts["quarantined"] = sum(r.rows_quarantined for r in results)
        return Batch(
            todo.lo,
            todo.hi,
            pl.DataFrame(),
            None,
            entries,
            counts,
            todo.desc,
            todo.final,
            out_refs=[ref for r in results for ref in r.out],
            quarantine_refs=[ref for r in results for ref in r.quarantine],
        )

    def commit(
        self,
        cp: Checkpoint,
        batch: Batch,
        report: RunReport,
        plan: dict[str, Any] | None,
        view: SourceView,
    ) -> Checkpoint:
        """Append a prepared batch's outputs exactly once, persist its state and
        commit its checkpoint (runs beside the preparation of the next batch)."""
        pipe, ckpts, epoch = self.pipe, self.ckpts, self.epoch
        counts = dict(batch.counts)
        seq = cp.id + 1
        todo = Todo(batch.lo, batch.hi, batch.desc, batch.final)
        meta = todo.meta()
        ckpts.check_lease(epoch)
        outputs: dict[str, dict[str, Any]] = {}
        if batch.out_refs is not None:  # a Dask run: commit what its tasks wrote
            if pipe.sink is not None:
                self._commit_once(pipe.sink, batch.out_refs, seq, meta)
                outputs["sink"] = {"log": pipe.sink.name, "end": pipe.sink.end().offset}
            if self.dist is not None and self.dist.quarantine is not None:
                qlog = pipe._quarantine_log()
                self._commit_once(qlog, batch.quarantine_refs or [], seq, meta)
                outputs["quarantine"] = {"end": qlog.end().offset}
            entries = dict(batch.changes)
        else:
            if pipe.sink is not None:
                self._append_once(pipe.sink, batch.out, seq, meta)
                counts["rows_out"] = batch.out.height
                outputs["sink"] = {"log": pipe.sink.name, "end": pipe.sink.end().offset}
            if batch.quarantine is not None:
                qlog = pipe._quarantine_log()
                self._append_once(qlog, batch.quarantine, seq, meta)
                counts["quarantined"] = batch.quarantine.height
                outputs["quarantine"] = {"end": qlog.end().offset}
            entries = {
                op.op_id: op.persist(ckpts, batch.changes[op.op_id])
                for op in pipe.operators
                if isinstance(op, KeyedOperator)
            }
        totals = {k: cp.counts.get(k, 0) + counts.get(k, 0) for k in _COUNTS}
        totals["batches"] = cp.counts.get("batches", 0) + 1
        new = Checkpoint(
            id=seq,
            parent=cp.id,
            epoch=epoch,
            created=datetime.now(UTC).isoformat(),
            kind="final" if batch.final else "batch",
            source=getattr(pipe.source, "name", ""),
            position=batch.hi,
            source_state=view.state_after(cp, todo),
            batch=(batch.lo, batch.hi),
            operators=entries,
            outputs=outputs,
            counts=totals,
            retracted=list(cp.retracted),
            plan=plan,
            key_groups=cp.key_groups,
        )
        ckpts.check_lease(epoch)
        if not ckpts.commit(new):
            other = ckpts.read(seq)
            if other.epoch > epoch:
                raise LeaseError(
                    f"pipeline {pipe.name!r}: a newer run (epoch {other.epoch}) committed "
                    f"checkpoint {seq} first; this run stopped"
                )
            new = other  # an older run finished the same deterministic batch first
        report.batches += 1
        for name in ("rows_in", "rows_out", "quarantined", "ignored", "late"):
            setattr(report, name, getattr(report, name) + counts.get(name, 0))
        report.checkpoint = new.id
        report.end_offset = batch.hi
        return new

    def _append_once(self, log: Log, frame: pl.DataFrame, seq: int, meta: dict[str, Any]) -> None:
        """Append batch ``seq`` exactly once; a duplicate must be this very batch."""
        writer = self.pipe.writer_id
        res = log.append(frame, writer=writer, seq=seq, meta=meta)
        if not res.duplicate:
            return
        txn = log.transaction(writer)
        if txn is not None and txn.seq == seq and txn.meta != meta:
            raise BatchConflict(Todo.from_meta(txn.meta))

    def _commit_once(self, log: Log, refs: list[Any], seq: int, meta: dict[str, Any]) -> None:
        """Commit the segments tasks wrote for batch ``seq`` exactly once (as
        :meth:`_append_once`); a duplicate's files are left to ``vacuum``."""
        writer = self.pipe.writer_id
        res = log.commit_segments(refs, writer=writer, seq=seq, meta=meta)
        if not res.duplicate:
            return
        txn = log.transaction(writer)
        if txn is not None and txn.seq == seq and txn.meta != meta:
            raise BatchConflict(Todo.from_meta(txn.meta))

    def _reshard(self, cp: Checkpoint, key_groups: int, report: RunReport) -> Checkpoint:
        """Commit a checkpoint holding the same state cut into ``key_groups`` groups."""
        pipe, ckpts = self.pipe, self.ckpts
        entries = dict(cp.operators)
        for op in pipe.operators:
            if isinstance(op, KeyedOperator):
                op.regroup(key_groups)
                entries[op.op_id] = op.persist(ckpts, op.changes())
        new = cp.successor(
            cp.id + 1, self.epoch, "reshard", entries, plan=pipe._plan(), key_groups=key_groups
        )
        ckpts.check_lease(self.epoch)
        if not ckpts.commit(new):
            raise LeaseError(
                f"pipeline {pipe.name!r}: another run committed checkpoint {new.id} "
                "while this one was re-sharding"
            )
        logger.info(
            "pipeline %s: re-sharded from %d to %d key groups as checkpoint %d",
            pipe.name,
            cp.key_groups,
            key_groups,
            new.id,
        )
        report.checkpoint = new.id
        return new


class Progress:
    """A tqdm.auto bar in notebooks and terminals; log lines (``streamkit.pipeline``
    logger, INFO) under cron and other non-interactive runs."""

    def __init__(self, name: str, start: int, end: int, enabled: bool | None) -> None:
        self.name, self.start, self.end = name, start, end
        self.bar: Any = None
        self.enabled = True if enabled is None else enabled
        self.logged_pct, self.logged_at = -1, _time.monotonic()
        if self.enabled and _interactive() and end > start:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=end - start, desc=name, unit="ev", unit_scale=True, leave=False)

    def update(self, pos: int) -> None:
        if self.bar is not None:
            self.bar.update(pos - self.start - self.bar.n)
        elif self.enabled:
            done, total = pos - self.start, max(self.end - self.start, 1)
            pct = 100 * done // total
            now = _time.monotonic()
            # one line per 10 % of the run (or per minute), not one per batch
            if pct // 10 > self.logged_pct // 10 or now - self.logged_at > 60 or done >= total:
                self.logged_pct, self.logged_at = pct, now
                logger.info("%s: %s/%s events (%d%%)", self.name, f"{done:,}", f"{total:,}", pct)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _interactive() -> bool:
    """A notebook kernel or a terminal: somewhere a progress bar can be seen."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())
