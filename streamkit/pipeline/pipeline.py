"""The Pipeline: a log, micro-batch operators, a per-key machine, checkpoints."""

from __future__ import annotations

import contextlib
import copy
import html
import logging
import os
import re
import socket
import sys
import threading
import time as _time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit.errors import CheckpointError, ConfigurationError, CorruptFileError, LeaseError
from streamkit.pipeline._checkpoints import (
    Checkpoint,
    CheckpointStore,
    FileRef,
    Heartbeat,
    initial_checkpoint,
)
from streamkit.pipeline._executor import Executor, LocalExecutor
from streamkit.pipeline._operators import (
    OFFSET,
    BatchContext,
    Filter,
    OnUndefined,
    Operator,
    Transitions,
    WithColumns,
)
from streamkit.pipeline._report import RunReport, VerifyReport

if TYPE_CHECKING:
    from streamkit.machines import Machine
    from streamkit.storage import Log, Store

logger = logging.getLogger("streamkit.pipeline")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_COUNTS = ("rows_in", "rows_out", "quarantined", "ignored", "late", "applied", "batches")


class Pipeline:
    """A resumable micro-batch pipeline over an event log.

    Each builder method returns a new pipeline, so a pipeline can be extended
    like a Polars query. ``run()`` processes what arrived since the last
    checkpoint, commits a checkpoint after every micro-batch and can be killed
    at any instant: the next ``run()`` produces exactly what an uninterrupted
    run would have.

    Parameters
    ----------
    name : str
        The pipeline's identity, 1-128 letters, digits, ``-``, ``_`` and ``.``,
        starting with a letter or digit (``"order-lifecycle"``, ``"orders.v2"``);
        anything else raises ``ConfigurationError``. Its checkpoints, state and
        quarantine live under ``<store>/_pipelines/<name>/`` and its outputs are
        appended as writer :attr:`writer_id` (``"pipeline:<name>"``). Two
        ``Pipeline`` objects with the same name and store are the same pipeline
        (they resume each other's checkpoints); a renamed pipeline starts over
        from the beginning of its source and, writing to the same sink, appends
        its output again. Names that differ only in case should not share a
        store: a case-insensitive disk would mix their files.
    store : Store
        Where checkpoints, state and the quarantine are kept.
    batch_rows : int
        Source rows per micro-batch (default 1,000,000).
    keep_checkpoints : int
        How many recent checkpoints to retain (default 20; the one in use is
        always kept).
    lease_timeout : float
        Seconds after its last heartbeat that a run counts as dead (default
        30). A run's heartbeat is rewritten every ``lease_timeout / 4`` s; a
        new run steps aside (``LeaseError``) while another run's heartbeat is
        fresh, and takes over at once from a dead or finished one.

    Examples
    --------
    >>> import polars as pl
    >>> import streamkit as sk
    >>> store = sk.Store("memory://doc-pipeline")
    >>> events = store.log("doors", key="door", time="t")
    >>> _ = events.append(pl.DataFrame({"door": ["a", "a", "b"], "t": [1, 2, 3],
    ...                                 "ev": ["open", "close", "open"]}))
    >>> m = sk.Machine("door", states=["closed", "opened"], initial="closed",
    ...                final=["closed"], transitions=[("closed", "open", "opened"),
    ...                                               ("opened", "close", "closed")])
    >>> pipe = (sk.Pipeline("doors", store).read(events)
    ...         .transitions(m, event="ev")
    ...         .write(store.log("door-history", key="key", time="time")))
    >>> pipe.run(progress=False).rows_out
    3
    >>> pipe.state().sort("key")["state"].to_list()
    ['closed', 'opened']
    """

    def __init__(
        self,
        name: str,
        store: Store,
        *,
        batch_rows: int = 1_000_000,
        keep_checkpoints: int = 20,
        lease_timeout: float = 30.0,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigurationError(
                f"pipeline name {name!r} is not valid: use 1-128 letters, digits, '-', '_' "
                "and '.', starting with a letter or digit"
            )
        if batch_rows < 1:
            raise ConfigurationError(f"batch_rows must be >= 1, got {batch_rows}")
        if keep_checkpoints < 1:
            raise ConfigurationError(f"keep_checkpoints must be >= 1, got {keep_checkpoints}")
        if not lease_timeout > 0:
            raise ConfigurationError(f"lease_timeout must be > 0 seconds, got {lease_timeout}")
        self.name = name
        self.store = store
        self.batch_rows = batch_rows
        self.keep_checkpoints = keep_checkpoints
        self.lease_timeout = float(lease_timeout)
        self.source: Any = None
        self.sink: Log | None = None
        self.operators: list[Operator] = []

    # ------------------------------------------------------------ building
    def _with(self, **changes: Any) -> Pipeline:
        new = copy.copy(self)
        new.operators = list(self.operators)
        for k, v in changes.items():
            setattr(new, k, v)
        return new

    def _add(self, op: Operator) -> Pipeline:
        if self.sink is not None:
            raise ConfigurationError("add operators before .write(...): the sink ends a pipeline")
        if self.source is None:
            raise ConfigurationError("start a pipeline with .read(log) before adding operators")
        new = self._with()
        op.op_id = f"{len(new.operators)}-{op.kind}"
        new.operators.append(op)
        return new

    def read(self, log: Any) -> Pipeline:
        """Read events from ``log`` (a :class:`~streamkit.Log` or :class:`~streamkit.FileLog`)."""
        for attr in ("key", "time", "scan", "end", "start"):
            if not hasattr(log, attr):
                raise ConfigurationError(f"read() needs a log, got {type(log).__name__}")
        return self._with(source=log)

    def filter(self, *predicates: pl.Expr) -> Pipeline:
        """Keep only events matching every Polars predicate."""
        if not predicates:
            raise ConfigurationError("filter() needs at least one predicate")
        return self._add(Filter(tuple(predicates)))

    def with_columns(self, *exprs: Any, **named: Any) -> Pipeline:
        """Add or replace columns with Polars expressions (as ``DataFrame.with_columns``)."""
        return self._add(WithColumns(exprs, named))

    def transitions(
        self,
        machine: Machine,
        *,
        event: str | pl.Expr = "event",
        on_undefined: OnUndefined = "quarantine",
        tick: timedelta | None = None,
    ) -> Pipeline:
        """Run ``machine`` per key of the source log; the frame becomes the history.

        Each key (the source log's ``key`` column) starts in ``machine.initial``
        and moves on its events in ``(time, append order)``. The frame that
        leaves this operator -- what :meth:`write` appends -- is the transition
        history, with exactly these columns:

        ``key``
            The event's key (the source key column's type, renamed to ``key``).
        ``time``
            The event's time, or ``since + after`` for a timeout (the source time
            column's type, renamed to ``time``).
        ``event``
            The event's name (String); ``"timeout"`` for a timeout that fired.
        ``from_state``, ``to_state``
            The key's state before and after (String).

        One row per event that fired a declared transition (self-loops included)
        and one per timeout that fired, in per-key order. The events' other
        columns are not carried over. Events with no declared transition follow
        ``on_undefined``; events older than their key's last processed event go
        to :meth:`quarantine` with ``reason="late"``.

        Parameters
        ----------
        machine : Machine
            Validated before anything runs (``machine.check()``).
        event : str or pl.Expr
            Column (or expression) holding each event's name.
        on_undefined : {"quarantine", "ignore", "error"}
            What an event without a declared transition does: kept in
            :meth:`quarantine` with a reason (default), counted and dropped, or
            the run stops with ``UndefinedTransitionError``.
        tick : timedelta, optional
            For integer time columns: the duration of one unit, used to convert
            timeouts; required when the machine has timeouts.

        Returns
        -------
        Pipeline
            A new pipeline; end it with ``.write(store.log(NAME, key="key",
            time="time"))``.

        Raises
        ------
        MachineError
            The machine does not pass ``check()``.
        ConfigurationError
            The pipeline already has a ``.transitions(...)`` or a sink, or no source.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> store = sk.Store("memory://doc-transitions")
        >>> doors = store.log("doors", key="door", time="t")
        >>> _ = doors.append(pl.DataFrame({"door": ["a", "a"], "t": [1, 2],
        ...                                "ev": ["open", "close"], "who": ["x", "y"]}))
        >>> m = sk.Machine("door", states=["closed", "opened"], initial="closed",
        ...                final=["closed"], transitions=[("closed", "open", "opened"),
        ...                                               ("opened", "close", "closed")])
        >>> history = store.log("door-history", key="key", time="time")
        >>> pipe = sk.Pipeline("doors", store).read(doors).transitions(m, event="ev")
        >>> _ = pipe.write(history).run(progress=False)
        >>> history.scan().collect().columns
        ['key', 'time', 'event', 'from_state', 'to_state']
        >>> history.scan().collect().rows()
        [('a', 1, 'open', 'closed', 'opened'), ('a', 2, 'close', 'opened', 'closed')]
        """
        if any(isinstance(op, Transitions) for op in self.operators):
            raise ConfigurationError("a pipeline runs one .transitions(...) operator")
        return self._add(Transitions(machine, event=event, on_undefined=on_undefined, tick=tick))

    def write(self, log: Log) -> Pipeline:
        """Append each batch's output to ``log`` exactly once.

        Parameters
        ----------
        log : Log
            The sink: any log but the source, in this store or another. Its key and
            time must be the output's columns. After ``.transitions(...)`` the
            output is the transition history, so the sink must be keyed
            ``store.log(NAME, key="key", time="time")``; without it the output keeps
            the source's columns and the sink takes the source's key and time
            (e.g. ``key="order_id", time="ts"``). An existing sink must also hold
            exactly the output's columns and types.

        Returns
        -------
        Pipeline
            A new pipeline ending in this sink: no operator may follow.

        Raises
        ------
        ConfigurationError
            ``log`` is the pipeline's own source or is not writable, or
            ``.read(...)`` did not come first.

        Notes
        -----
        The sink's key and time are checked when the first batch is appended: a
        sink keyed on anything else makes ``run()`` raise ``SchemaError``
        (``expected a key column 'order_id', found columns ['key', 'time',
        ...]``) before anything is committed -- no output, no checkpoint. A log
        keeps the key and time it was created with (reopening it with others
        raises ``SchemaError``), so write to a log of another name and run again.
        Each batch is appended with ``writer=`` :attr:`writer_id` and
        ``seq=<checkpoint id>``, which is what makes a retried batch land once.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> store = sk.Store("memory://doc-write")
        >>> clicks = store.log("clicks", key="user", time="ts")
        >>> _ = clicks.append(pl.DataFrame({"user": ["a", "b"], "ts": [1, 2], "ok": [True, False]}))
        >>> pipe = (sk.Pipeline("good-clicks", store).read(clicks).filter(pl.col("ok"))
        ...         .write(store.log("good-clicks", key="user", time="ts")))
        >>> pipe.run(progress=False).rows_out
        1
        """
        if self.source is None:
            raise ConfigurationError("start a pipeline with .read(log) before .write(log)")
        if not hasattr(log, "append"):
            raise ConfigurationError(f"write() needs a writable Log, got {type(log).__name__}")
        if getattr(log, "url", None) == getattr(self.source, "url", object()):
            raise ConfigurationError(
                f"write() would append to the pipeline's own source {log.name!r}: each "
                "batch would feed the next; write to another log"
            )
        return self._with(sink=log)

    @classmethod
    def open(cls, store: Store, name: str) -> Pipeline:
        """Rebuild a pipeline from the plan stored in its latest checkpoint.

        Lets scripts, the CLI and notebooks inspect, verify or resume a pipeline
        without the code that defined it, when its source and sink are logs of
        ``store`` and its expressions hold no Python functions.

        Raises
        ------
        CheckpointError
            No checkpoint, or one written without a storable plan.
        """
        from streamkit.machines import Machine
        from streamkit.pipeline._operators import operator_from_plan

        cp = cls(name, store)._ckpts().latest()
        if cp is None:
            raise CheckpointError(f"pipeline {name!r} has no checkpoint in {store.url}")
        plan = cp.plan
        if not plan or plan.get("source") is None or plan.get("operators") is None:
            raise CheckpointError(
                f"pipeline {name!r} was stored without a complete plan (a source outside the "
                "store, or Python functions in its expressions): open it from its code"
            )
        pipe = cls(name, store, batch_rows=int(plan.get("batch_rows", 1_000_000)))
        pipe = pipe.read(store.log(plan["source"]))
        for d in plan["operators"]:
            op = operator_from_plan(d, Machine.from_dict)
            pipe = pipe._with()
            pipe.operators.append(op)
        if plan.get("sink"):
            pipe = pipe.write(store.log(plan["sink"]))
        return pipe

    def _plan(self) -> dict[str, Any] | None:
        ops = [op.plan() for op in self.operators]
        src_url = getattr(self.source, "url", None)
        in_store = src_url == f"{self.store.url.rstrip('/')}/{getattr(self.source, 'name', '')}"
        return {
            "source": getattr(self.source, "name", None) if in_store else None,
            "sink": self.sink.name if self.sink is not None else None,
            "operators": None if any(o is None for o in ops) else ops,
            "batch_rows": self.batch_rows,
        }

    # ------------------------------------------------------------ internals
    @property
    def writer_id(self) -> str:
        """The writer name of this pipeline's appends: ``"pipeline:<name>"``.

        Each batch goes to the sink and the quarantine with ``writer=writer_id``
        and ``seq=<checkpoint id>`` (see :meth:`~streamkit.Log.append`), so a batch
        retried after a crash lands exactly once, and
        ``sink.transaction(pipe.writer_id)`` tells the last batch a log holds.
        Other writers of the same sink must use other names.

        Examples
        --------
        >>> import streamkit as sk
        >>> sk.Pipeline("order-lifecycle", sk.Store("memory://doc-writer-id")).writer_id
        'pipeline:order-lifecycle'
        """
        return f"pipeline:{self.name}"

    def _ckpts(self) -> CheckpointStore:
        return CheckpointStore(self.store.filesystem.child(f"_pipelines/{self.name}"), self.name)

    def _quarantine_log(self) -> Log:
        """The pipeline's quarantine (a log; opened once, it refreshes itself)."""
        cached = self.__dict__.get("_qlog")
        if cached is None or cached[0] is not self.source:
            log = self.store._internal_log(
                f"_pipelines/{self.name}/quarantine", key=self.source.key, time=self.source.time
            )
            cached = self.__dict__["_qlog"] = (self.source, log)
        return cached[1]

    def _quarantine_log_if_any(self) -> Log | None:
        return self._quarantine_log() if self._transitions_op() is not None else None

    def _transitions_op(self) -> Transitions | None:
        return next((op for op in self.operators if isinstance(op, Transitions)), None)

    def _require_source(self) -> None:
        if self.source is None:
            raise ConfigurationError(f"pipeline {self.name!r} has no source: call .read(log)")

    def _open_operators(self, cp: Checkpoint, ckpts: CheckpointStore) -> None:
        for op in self.operators:
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
            op.open(entry, ckpts)

    def _reconcile(self, cp: Checkpoint) -> _Todo | None:
        """Re-apply retractions; return the batch whose outputs committed after
        ``cp`` but whose checkpoint did not (a crash in between)."""
        logs = [lg for lg in (self.sink, self._quarantine_log_if_any()) if lg is not None]
        if cp.retracted:
            for lg in logs:
                lg._retract(self.writer_id, list(cp.retracted))
        pending: _Todo | None = None
        for lg in logs:
            txn = lg.transaction(self.writer_id)
            if txn is None or txn.seq <= cp.id or any(a <= txn.seq <= b for a, b in cp.retracted):
                continue
            if txn.seq != cp.id + 1:
                raise CheckpointError(
                    f"log {lg.name!r} holds output of batch {txn.seq} of pipeline "
                    f"{self.name!r} but its newest checkpoint is {cp.id}; a checkpoint "
                    "is missing. Reprocess with run(from_checkpoint=...)"
                )
            todo = _Todo.from_meta(txn.meta or {})
            if todo.lo != cp.position:
                raise CheckpointError(
                    f"log {lg.name!r} holds batch {txn.seq} for source offsets "
                    f"{(todo.lo, todo.hi)} but checkpoint {cp.id} ends at offset {cp.position}"
                )
            pending = todo
        return pending

    def _rewind(
        self, ckpts: CheckpointStore, latest: Checkpoint | None, target: int, epoch: int
    ) -> Checkpoint:
        retracted = list(latest.retracted) if latest else []
        if any(a <= target < b for a, b in retracted):
            raise CheckpointError(
                f"checkpoint {target} of pipeline {self.name!r} was abandoned by an earlier "
                "rewind (its outputs were retracted); rewind to a checkpoint of the current "
                "line (see pipe.checkpoints()) or to 0"
            )
        start = self.source.start().offset
        base = initial_checkpoint(start) if target == 0 else ckpts.read(target)
        if base.position < start:
            raise CheckpointError(
                f"checkpoint {target} reads the source from offset {base.position} but "
                f"{getattr(self.source, 'name', 'the source')!r} now starts at {start} "
                "(truncated); choose a later checkpoint, or 0 to reprocess what is left"
            )
        # Cover every output this pipeline ever wrote, even beyond the newest
        # checkpoint (a crash before its checkpoint, or deleted checkpoints).
        newest = max(ckpts.ids(), default=0)  # damaged checkpoints included
        for lg in (self.sink, self._quarantine_log_if_any()):
            txn = lg.transaction(self.writer_id) if lg is not None else None
            if txn is not None:
                newest = max(newest, txn.seq)
        # The rewind owns copies of the base's state files: pruning the base
        # (by this or an overlapping run) must never break it.
        operators = {}
        for op_id, entry in base.operators.items():
            entry = dict(entry)
            if entry.get("state_file") is not None:
                table = ckpts.read_state(FileRef.from_dict(entry["state_file"]))
                entry["state_file"] = ckpts.write_state(table).to_dict()
            operators[op_id] = entry
        rewind = Checkpoint(
            id=newest + 1,
            parent=base.id,
            epoch=epoch,
            created=datetime.now(UTC).isoformat(),
            kind="rewind",
            source=base.source,
            position=base.position,
            source_state=base.source_state,
            batch=None,
            operators=operators,
            outputs=base.outputs,
            counts=dict(base.counts),
            retracted=sorted({*retracted, (base.id + 1, newest + 1)}),
            plan=self._plan(),
        )
        ckpts.check_lease(epoch)
        if not ckpts.commit(rewind):
            raise LeaseError(
                f"pipeline {self.name!r}: another run committed checkpoint {rewind.id} "
                "while this one was rewinding"
            )
        logger.info("pipeline %s: rewound to checkpoint %s as %s", self.name, target, rewind.id)
        return rewind

    # ------------------------------------------------------------------ run
    def run(
        self,
        *,
        max_batches: int | None = None,
        from_checkpoint: int | None = None,
        batch_rows: int | None = None,
        executor: Executor | None = None,
        progress: bool | None = None,
        take_over: bool = False,
    ) -> RunReport:
        """Process what arrived since the last checkpoint, then return.

        Parameters
        ----------
        max_batches : int, optional
            Stop after this many micro-batches (default: until caught up with
            the log's end as it was when the run started).
        from_checkpoint : int, optional
            Return state, read position, output log and quarantine to checkpoint
            ``from_checkpoint`` (0 = the very start), then continue: the result
            equals a fresh run with the current machine.
        batch_rows : int, optional
            Override the pipeline's micro-batch size for this run.
        executor : Executor, optional
            Where the per-key kernel runs (default in-process;
            ``sk.DaskExecutor(client)`` for a Dask cluster).
        progress : bool, optional
            Show a progress bar (tqdm.auto) or log lines; default: a bar when
            interactive, log lines otherwise. ``False`` silences it.
        take_over : bool
            Start even while another run of this pipeline is alive (its
            heartbeat is fresh): that run then stops with ``LeaseError`` at its
            next commit. Default False: step aside instead.

        Returns
        -------
        RunReport

        Raises
        ------
        LeaseError
            Another run of this pipeline is alive (its heartbeat is younger than
            its ``lease_timeout``): this run stepped aside without claiming or
            committing anything. Or a newer run took over (``take_over=True``)
            while this one worked: it stopped without committing its current
            batch.
        UndefinedTransitionError
            With ``on_undefined="error"``: nothing of the offending batch is committed.
        """
        self._require_source()
        if not self.operators and self.sink is None:
            raise ConfigurationError(
                f"pipeline {self.name!r} reads {getattr(self.source, 'name', 'a log')!r} but "
                "neither transforms nor writes anything: add .transitions(...) or .write(...)"
            )
        if executor is not None and not hasattr(executor, "run_batch"):
            raise ConfigurationError(
                f"executor must be sk.DaskExecutor(client) or None, got {executor!r}"
            )
        if max_batches is not None and max_batches < 0:
            raise ConfigurationError(f"max_batches must be >= 0, got {max_batches}")
        rows_per_batch = batch_rows if batch_rows is not None else self.batch_rows
        if rows_per_batch < 1:
            raise ConfigurationError(f"batch_rows must be >= 1, got {rows_per_batch}")
        executor = executor or LocalExecutor()
        started = _time.perf_counter()
        ckpts = self._ckpts()
        epoch = ckpts.claim_epoch(
            {"pid": os.getpid(), "host": socket.gethostname()},
            lease_timeout=self.lease_timeout,
            take_over=take_over,
        )
        heartbeat = Heartbeat(ckpts, epoch, self.lease_timeout)  # released when the run ends
        try:
            latest: Checkpoint | None = None
            try:
                if from_checkpoint is not None:  # a rewind also gets past damaged newest ones
                    latest = self._rewind(
                        ckpts, ckpts.latest_readable(), int(from_checkpoint), epoch
                    )
                else:
                    latest = ckpts.latest()
                cp = latest or initial_checkpoint(self.source.start().offset)
                self._check_source(cp)
                self._open_operators(cp, ckpts)
                view = _SourceView(self.source)
                pending = self._reconcile(cp)
            except CheckpointError:
                # A newer run may have moved on since ``latest`` was read (output past
                # it, its state or the rewind's target pruned): then this run was
                # overtaken, nothing is damaged.
                ckpts.check_lease(epoch)
                raise
            if pending is not None:
                pending = view.redo(cp, pending)
            view.replan(cp, pending)
            end = view.end
            report = RunReport(self.name, checkpoint=latest.id if latest else None)
            report.start_offset = report.end_offset = cp.position
            report._note_source(self.source, end, self.store)
            bar = _Progress(self.name, cp.position, max(end, cp.position), progress)
            # Batch N+1 is computed while batch N's outputs, state and checkpoint are
            # written by one worker thread, and batch N+2 is read by another: commits
            # stay strictly in order, and nothing of N+1 is written before N's
            # checkpoint is committed (reading ahead writes nothing).
            origin = threading.current_thread().name  # workers named after their run's thread
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{origin}/streamkit")
            reader = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"{origin}/streamkit-read"
            )
            ahead: tuple[_Todo, Future[pl.DataFrame]] | None = None
            inflight: Future[Checkpoint] | None = None
            next_pos, planned = cp.position, 0
            plan = self._plan()  # stored in every checkpoint; computed once per run
            try:
                while True:
                    prepared: _Batch | None = None
                    todo: _Todo | None = None
                    if pending is not None:
                        todo, pending = pending, None
                    elif next_pos < end and (max_batches is None or planned < max_batches):
                        todo = view.cut(next_pos, rows_per_batch)
                    elif inflight is None:
                        break
                    t0 = _time.perf_counter()
                    if todo is not None:  # else nothing left to prepare: land the last batch
                        hi = todo.hi
                        read = ahead[1] if ahead is not None and ahead[0] == todo else None
                        ahead = None
                        if hi < end and (max_batches is None or planned + 1 < max_batches):
                            nxt = view.cut(hi, rows_per_batch)
                            ahead = (nxt, reader.submit(view.read, nxt))
                        try:
                            batch = read.result() if read is not None else None
                            prepared = self._prepare(todo, executor, view, batch)
                        except BaseException:
                            if inflight is not None:  # let the previous batch land first
                                cp = inflight.result()
                                inflight = None
                            raise
                        planned += 1
                    if inflight is not None:
                        try:
                            cp = self._landed(inflight, ckpts, epoch, report, bar)
                        except _BatchConflict as conflict:
                            # An overtaken run wrote that batch for another source range
                            # (or other files): drop what was computed after it, redo
                            # exactly that batch and plan what follows it afresh.
                            self._open_operators(cp, ckpts)
                            pending = view.redo(cp, conflict.todo)
                            view.replan(cp, pending)
                            end, next_pos = view.end, pending.hi
                            planned -= prepared is not None
                            continue
                        finally:
                            inflight = None
                    if prepared is not None:
                        inflight = pool.submit(
                            self._commit, ckpts, cp, epoch, prepared, report, plan, view
                        )
                        next_pos = hi
                        report.batch_seconds.append(_time.perf_counter() - t0)
            finally:
                if inflight is not None:
                    with contextlib.suppress(BaseException):
                        inflight.result()
                pool.shutdown(wait=True)
                reader.shutdown(wait=True, cancel_futures=True)
                bar.close()
            self._prune(ckpts, epoch, cp)
            report.caught_up = cp.position >= end
            report.seconds = _time.perf_counter() - started
            logger.debug("%s", report)
        finally:
            heartbeat.release()
        return report

    def _landed(
        self,
        future: Future[Checkpoint],
        ckpts: CheckpointStore,
        epoch: int,
        report: RunReport,
        bar: _Progress,
    ) -> Checkpoint:
        """Wait for a batch's commit; then progress, retractions and retention."""
        cp = future.result()
        if report.batches == 1 and cp.retracted:
            # An overtaken run may have appended after our reconcile; our own
            # append now rejects any lower seq, so one more pass is final.
            for lg in (self.sink, self._quarantine_log_if_any()):
                if lg is not None:
                    lg._retract(self.writer_id, list(cp.retracted))
        bar.update(cp.position)
        if report.batches % 10 == 0:
            self._prune(ckpts, epoch, cp)
        return cp

    def _prune(self, ckpts: CheckpointStore, epoch: int, cp: Checkpoint) -> None:
        """Retention, only while this run holds the lease (never under a newer run)."""
        if ckpts.latest_epoch() == epoch:
            ckpts.prune(self.keep_checkpoints, protect={cp.id})

    def _check_source(self, cp: Checkpoint) -> None:
        start = self.source.start().offset
        if cp.position < start:
            raise CheckpointError(
                f"pipeline {self.name!r} is at source offset {cp.position} but the log "
                f"{self.source.name!r} now starts at {start}: unprocessed events were "
                "truncated. Reprocess with run(from_checkpoint=0) to accept the loss"
            )

    def _prepare(
        self,
        todo: _Todo,
        executor: Executor,
        view: _SourceView,
        batch: pl.DataFrame | None = None,
    ) -> _Batch:
        """Run the operators on the source batch ``todo`` (read now unless ``batch``
        holds it already); advances the operators' state."""
        ctx = BatchContext(key=self.source.key, time=self.source.time, executor=executor)
        if batch is None:
            batch = view.read(todo)
        ctx.count("rows_in", batch.height)
        try:
            lf = batch.lazy()
            for op in self.operators:
                lf = op.process(lf, ctx)
            out = lf.collect()
        except (
            pl.exceptions.ColumnNotFoundError,
            pl.exceptions.SchemaError,
            pl.exceptions.InvalidOperationError,
        ) as exc:
            detail = str(exc).split("\n\nResolved plan")[0].replace(f', "{OFFSET}"', "")
            steps = " -> ".join(op.describe() for op in self.operators)
            raise ConfigurationError(
                f"pipeline {self.name!r} cannot run its operators ({steps}) on the columns "
                f"of {getattr(self.source, 'name', 'the source')!r} "
                f"{[c for c in batch.columns if c != OFFSET]}: "
                f"{type(exc).__name__}: {detail.strip()}"
            ) from None
        if OFFSET in out.columns:
            out = out.drop(OFFSET)
        frozen = {op.op_id: op.freeze() for op in self.operators if op.stateful}
        quarantine = pl.concat(ctx.quarantine) if ctx.quarantine else None
        return _Batch(todo.lo, todo.hi, out, quarantine, frozen, ctx.counts, todo.desc)

    def _commit(
        self,
        ckpts: CheckpointStore,
        cp: Checkpoint,
        epoch: int,
        batch: _Batch,
        report: RunReport,
        plan: dict[str, Any] | None,
        view: _SourceView,
    ) -> Checkpoint:
        """Append a prepared batch's outputs exactly once, persist its state and
        commit its checkpoint (runs beside the preparation of the next batch)."""
        counts = dict(batch.counts)
        seq = cp.id + 1
        todo = _Todo(batch.lo, batch.hi, batch.desc)
        meta = todo.meta()
        ckpts.check_lease(epoch)
        outputs: dict[str, dict[str, Any]] = {}
        if self.sink is not None:
            self._append_once(self.sink, batch.out, seq, meta)
            counts["rows_out"] = batch.out.height
            outputs["sink"] = {"log": self.sink.name, "end": self.sink.end().offset}
        if batch.quarantine is not None:
            qlog = self._quarantine_log()
            self._append_once(qlog, batch.quarantine, seq, meta)
            counts["quarantined"] = batch.quarantine.height
            outputs["quarantine"] = {"end": qlog.end().offset}
        entries = {
            op.op_id: op.persist(ckpts, batch.frozen[op.op_id])
            for op in self.operators
            if op.stateful
        }
        totals = {k: cp.counts.get(k, 0) + counts.get(k, 0) for k in _COUNTS}
        totals["batches"] = cp.counts.get("batches", 0) + 1
        new = Checkpoint(
            id=seq,
            parent=cp.id,
            epoch=epoch,
            created=datetime.now(UTC).isoformat(),
            source=getattr(self.source, "name", ""),
            position=batch.hi,
            source_state=view.state_after(cp, todo),
            batch=(batch.lo, batch.hi),
            operators=entries,
            outputs=outputs,
            counts=totals,
            retracted=list(cp.retracted),
            plan=plan,
        )
        ckpts.check_lease(epoch)
        if not ckpts.commit(new):
            other = ckpts.read(seq)
            if other.epoch > epoch:
                raise LeaseError(
                    f"pipeline {self.name!r}: a newer run (epoch {other.epoch}) committed "
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
        res = log.append(frame, writer=self.writer_id, seq=seq, meta=meta)
        if not res.duplicate:
            return
        txn = log.transaction(self.writer_id)
        if txn is not None and txn.seq == seq and txn.meta != meta:
            raise _BatchConflict(_Todo.from_meta(txn.meta))

    # ------------------------------------------------------------- queries
    def checkpoints(self) -> pl.DataFrame:
        """One row per retained checkpoint: id, parent, kind, created, position, totals.

        The totals (``batches``, ``rows_in``, ``rows_out``, ``quarantined``) count
        everything the pipeline did up to that checkpoint.

        A checkpoint file that fails verification is listed with kind ``"damaged"``.
        """
        ckpts = self._ckpts()
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
                    "machine": str(op.get("machine", ""))[:12],
                }
            )
        schema: dict[str, pl.DataType] = {
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
            "machine": pl.String(),
        }
        return (
            pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
        )

    def state(self, checkpoint: int | None = None) -> pl.DataFrame:
        """Per-key state at the latest (or a given) checkpoint.

        Columns: ``key``, ``state``, ``since`` (when the key entered its state),
        ``last_time`` (its last processed event or timeout), ``events``.
        """
        self._require_source()
        op = self._transitions_op()
        if op is None:
            raise ConfigurationError(f"pipeline {self.name!r} has no .transitions(...) operator")
        ckpts = self._ckpts()
        cp = ckpts.read(checkpoint) if checkpoint is not None else ckpts.latest()
        entry = cp.operators.get(op.op_id) if cp is not None else None
        probe = op.fresh()
        probe.open(entry, ckpts)
        return probe.state_frame()

    def quarantine(self) -> pl.DataFrame:
        """Events set aside, with the reason.

        Columns: the source log's key and time columns, ``event``, ``reason``
        (``"late"`` or ``"undefined"``), ``state`` (the key's state at that
        moment), ``offset`` (in the source log) and ``data`` (the whole event row
        as JSON; decode with ``pl.col("data").str.json_decode()``).
        """
        self._require_source()
        frame = self._quarantine_log().scan().collect()
        if frame.width:
            return frame
        schema = self.source.schema or {}
        key, time = self.source.key, self.source.time
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

    def vacuum(self, retain: timedelta = timedelta(hours=1)) -> list[str]:
        """Delete files of the pipeline's output and quarantine logs that no version references.

        Crashed or overtaken batches leave segment files that no committed
        version references; they are invisible to every reader and safe to
        delete. Only files older than ``retain`` go, so batches in flight are
        never touched. (Unreferenced state files are removed by checkpoint
        retention during runs.)

        Parameters
        ----------
        retain : timedelta
            Keep unreferenced files younger than this (default one hour).

        Returns
        -------
        list of str
            Deleted files, as ``<log name>/<path in the log>``.

        Examples
        --------
        >>> import datetime as dt
        >>> import polars as pl
        >>> import streamkit as sk
        >>> store = sk.Store("memory://streamkit-doc-pipe-vacuum")
        >>> log = store.log("orders", key="order_id", time="ts")
        >>> _ = log.append(sk.datasets.generate_orders(10, seed=1))
        >>> pipe = (
        ...     sk.Pipeline("p", store)
        ...     .read(log)
        ...     .with_columns(event=pl.col("type").str.to_lowercase())
        ...     .transitions(sk.datasets.order_machine(), event="event")
        ...     .write(store.log("history", key="key", time="time"))
        ... )
        >>> _ = pipe.run(progress=False)
        >>> pipe.vacuum(retain=dt.timedelta(0))  # nothing was left behind
        []
        """
        removed: list[str] = []
        for log in (self.sink, self._quarantine_log_if_any()):
            if log is not None:
                removed += [f"{log.name}/{path}" for path in log.vacuum(retain=retain)]
        return removed

    def verify(self, checkpoint: int | None = None, *, replay: bool = False) -> VerifyReport:
        """Check a checkpoint independently: files, checksums, schemas, positions, counts.

        Parameters
        ----------
        checkpoint : int, optional
            The checkpoint to check (default: the latest).
        replay : bool
            Also recompute the state from the source and compare. For a native
            log the source is re-read by offsets; for a :class:`~streamkit.FileLog`
            each batch is replayed on exactly the files it read, in the order
            the runs read them (refused, naming them, if consumed files are gone).

        Returns
        -------
        VerifyReport
            ``.ok`` and one entry per check; damaged files are named, never raised.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> store = sk.Store("memory://streamkit-doc-verify")
        >>> log = store.log("orders", key="order_id", time="ts")
        >>> _ = log.append(sk.datasets.generate_orders(20, seed=1))
        >>> pipe = (
        ...     sk.Pipeline("p", store)
        ...     .read(log)
        ...     .with_columns(event=pl.col("type").str.to_lowercase())
        ...     .transitions(sk.datasets.order_machine(), event="event")
        ... )
        >>> _ = pipe.run(progress=False)
        >>> pipe.verify(replay=True).ok
        True
        """
        from streamkit.pipeline._verify import verify

        self._require_source()
        return verify(self, checkpoint, replay=replay)

    # -------------------------------------------------------------- display
    def __repr__(self) -> str:
        ops = " -> ".join(op.describe() for op in self.operators)
        src = getattr(self.source, "name", None)
        snk = getattr(self.sink, "name", None)
        return (
            f"Pipeline({self.name!r}: read({src!r}) -> {ops or '(no operators)'} -> write({snk!r}))"
        )

    def _repr_html_(self) -> str:
        steps = [f"read <code>{html.escape(str(getattr(self.source, 'name', None)))}</code>"]
        steps += [f"<code>{html.escape(op.describe())}</code>" for op in self.operators]
        if self.sink is not None:
            steps.append(f"write <code>{html.escape(self.sink.name)}</code>")
        try:
            latest = self._ckpts().latest()
        except Exception as exc:  # a display must never raise
            last = f"unreadable ({html.escape(type(exc).__name__)})"
        else:
            last = (
                "none yet"
                if latest is None
                else f"#{latest.id} at offset {latest.position:,} ({html.escape(latest.created)})"
            )
        items = "".join(f"<li>{s}</li>" for s in steps)
        return (
            f"<div><b>Pipeline {html.escape(self.name)}</b><ol>{items}</ol>"
            f"<div>last checkpoint: {last}</div></div>"
        )


@dataclass
class _Batch:
    """A prepared micro-batch: outputs and frozen state, not yet committed."""

    lo: int
    hi: int
    out: pl.DataFrame
    quarantine: pl.DataFrame | None
    frozen: dict[str, Any]
    counts: dict[str, int]
    desc: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Todo:
    """A source batch: offsets ``[lo, hi)`` and, for a FileLog, its files (``desc``,
    from ``FilePlan.batch``), stored with the batch's outputs as their meta."""

    lo: int
    hi: int
    desc: dict[str, Any] | None = None

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"start": self.lo, "end": self.hi}
        if self.desc is not None:
            meta["source"] = self.desc
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> _Todo:
        return cls(int(meta["start"]), int(meta["end"]), meta.get("source"))


class _SourceView:
    """The source as one run reads it.

    A Log is read by offsets alone: batch ``[lo, hi)`` is ``scan(lo, hi)``. A
    source with a ``plan`` method (a FileLog) is read through a plan of the
    files its checkpoint's position has not consumed: every batch carries its
    files (``_Todo.desc``), which are stored with the batch's outputs, so a
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
        from streamkit.storage import Position

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

    def replan(self, cp: Checkpoint, first: _Todo | None) -> None:
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

    def redo(self, cp: Checkpoint, todo: _Todo) -> _Todo:
        """A stored batch to redo after ``cp``, with its files."""
        if self.planned and todo.desc is None:  # stored without its files (older streamkit)
            plan = self.source.plan(self.position(cp))
            return _Todo(todo.lo, todo.hi, plan.batch(todo.lo, todo.hi))
        return todo

    def cut(self, lo: int, rows: int) -> _Todo:
        """The next batch from ``lo``: at most ``rows`` rows."""
        if not self.planned:
            return _Todo(lo, min(lo + rows, self.end))
        hi = self.plan.cut(lo, rows)
        return _Todo(lo, hi, self.plan.batch(lo, hi))

    def read(self, todo: _Todo) -> pl.DataFrame:
        """The batch's rows with their offsets (read ahead on a thread)."""
        from streamkit.storage import Position

        if todo.desc is not None:
            frame = self.source.read_batch(todo.desc, with_offset=OFFSET)
        else:
            frame = self.source.scan(
                start=Position(todo.lo), end=Position(todo.hi), with_offset=OFFSET
            )
        batch: pl.DataFrame = frame.collect()
        return batch

    def state_after(self, cp: Checkpoint, todo: _Todo) -> dict[str, Any] | None:
        """The source position after ``todo`` read from ``cp``, for its checkpoint."""
        if not self.planned or todo.desc is None:
            return None
        state: dict[str, Any] = self.source.advance(self.position(cp), todo.desc).to_dict()
        return state


class _BatchConflict(Exception):
    """Another (overtaken) run committed this batch's outputs for another range."""

    def __init__(self, todo: _Todo) -> None:
        super().__init__(todo)
        self.todo = todo


class _Progress:
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
