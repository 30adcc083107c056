"""The Pipeline: a log, micro-batch operators, a per-key machine, checkpoints."""

from __future__ import annotations

import copy
import html
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit.errors import CheckpointError, ConfigurationError
from streamkit.pipeline import _queries
from streamkit.pipeline._checkpoints import CheckpointStore
from streamkit.pipeline._executor import Executor, LocalExecutor
from streamkit.pipeline._keyed import check_key_groups
from streamkit.pipeline._operators import (
    Filter,
    KeyedOperator,
    OnUndefined,
    Operator,
    WithColumns,
)
from streamkit.pipeline._report import RunReport, VerifyReport
from streamkit.pipeline._runner import Runner
from streamkit.pipeline._transitions import Transitions

if TYPE_CHECKING:
    from streamkit.machines import Machine
    from streamkit.storage import Log, Store

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


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
        key_groups: int | None = None,
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
        self.key_groups = None if key_groups is None else check_key_groups(key_groups)
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
        """Read events from ``log`` (a :class:`~streamkit.Log`, :class:`~streamkit.FileLog` or
        :class:`~streamkit.DeltaLog`)."""
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
        lateness: timedelta | str | int | None = None,
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
        lateness : str, timedelta or int, optional
            How far out of time order events may arrive (``"10m"``, a
            timedelta, or units of an integer time column). The watermark is
            then the largest time read minus ``lateness``: each event waits
            until the watermark reaches its time and is applied in (time, log
            order); timeouts fire only as the watermark passes them. Waiting
            events are part of the checkpointed state (``pipe.state()`` counts
            them per key in ``waiting``); ``run(final=True)`` applies them at the
            end of a bounded input. Default ``None`` (the same as 0): every
            event is applied as it is read, in log order. Results never depend
            on how the log is cut into batches.

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
        return self._add(
            Transitions(
                machine, event=event, on_undefined=on_undefined, tick=tick, lateness=lateness
            )
        )

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
            log = self.store.log_at(
                f"_pipelines/{self.name}/quarantine", key=self.source.key, time=self.source.time
            )
            cached = self.__dict__["_qlog"] = (self.source, log)
        return cached[1]

    def _quarantine_log_if_any(self) -> Log | None:
        return self._quarantine_log() if self._keyed_op() is not None else None

    def _keyed_op(self) -> KeyedOperator | None:
        """The pipeline's keyed operator (its per-key state), if any."""
        return next((op for op in self.operators if isinstance(op, KeyedOperator)), None)

    def _require_source(self) -> None:
        if self.source is None:
            raise ConfigurationError(f"pipeline {self.name!r} has no source: call .read(log)")

    def run(
        self,
        *,
        max_batches: int | None = None,
        from_checkpoint: int | None = None,
        batch_rows: int | None = None,
        executor: Executor | None = None,
        progress: bool | None = None,
        take_over: bool = False,
        final: bool = False,
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
            Where batches run: in this process (the default), or
            ``sk.DaskExecutor(client)`` on a Dask cluster, where each task reads,
            computes and writes its own key groups and this process only commits
            (for a :class:`~streamkit.Log` source; see ``docs/SCALING.md``).
        progress : bool, optional
            Show a progress bar (tqdm.auto) or log lines; default: a bar when
            interactive, log lines otherwise. ``False`` silences it.
        take_over : bool
            Start even while another run of this pipeline is alive (its
            heartbeat is fresh): that run then stops with ``LeaseError`` at its
            next commit. Default False: step aside instead.
        final : bool
            End of a bounded input, for ``.transitions(..., lateness=...)``: once
            caught up, move the watermark to the largest time read, so that every
            event still waiting is applied and the timeouts it passes fire, and
            commit that as a checkpoint of kind ``"final"``. The input may still
            grow afterwards: a later event whose key has moved past its time is
            quarantined as late, any other is applied as usual. Timeouts beyond
            the last event's time never fire on their own (nothing says time
            moved on). Without lateness it changes nothing.

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
        return Runner(self, executor).run(
            max_batches=max_batches,
            from_checkpoint=from_checkpoint,
            batch_rows=rows_per_batch,
            progress=progress,
            take_over=take_over,
            final=final,
        )

    def reshard(
        self, key_groups: int, *, progress: bool | None = None, take_over: bool = False
    ) -> RunReport:
        """Cut the pipeline's state into ``key_groups`` key groups, once.

        Finishes a batch a crash left half-committed, then writes the whole
        state again in the new groups and commits it as a checkpoint of kind
        ``"reshard"``; nothing else changes (no source row is read, no output
        is written). Open the pipeline with the new number afterwards, or with
        none. A rewind to a checkpoint before the re-shard returns to the
        groups of that checkpoint.

        Parameters
        ----------
        key_groups : int
            The new number of key groups, a power of two from 1 to 65,536.
        progress, take_over
            As for :meth:`run`.

        Returns
        -------
        RunReport
            ``checkpoint`` is the re-shard's checkpoint.

        Raises
        ------
        ConfigurationError
            ``key_groups`` is not a power of two in range, or the pipeline has
            no checkpoint yet (a new pipeline takes ``key_groups`` directly).
        LeaseError
            Another run holds the lease.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> store = sk.Store("memory://doc-reshard")
        >>> log = store.log("orders", key="order_id", time="ts")
        >>> _ = log.append(sk.datasets.generate_orders(50, seed=1))
        >>> pipe = (
        ...     sk.Pipeline("p", store, key_groups=16)
        ...     .read(log)
        ...     .with_columns(event=pl.col("type").str.to_lowercase())
        ...     .transitions(sk.datasets.order_machine(), event="event")
        ... )
        >>> _ = pipe.run(progress=False)
        >>> before = pipe.state().sort("key")
        >>> _ = pipe.reshard(64, progress=False)
        >>> pipe.checkpoints()["key_groups"].to_list()[-1]
        64
        >>> reopened = sk.Pipeline.open(store, "p")
        >>> reopened.state().sort("key").equals(before)
        True
        """
        self._require_source()
        wanted = check_key_groups(key_groups)
        if self._ckpts().latest() is None:
            raise ConfigurationError(
                f"pipeline {self.name!r} has no checkpoint yet: give a new pipeline its key "
                f"groups directly, sk.Pipeline({self.name!r}, store, key_groups={wanted})"
            )
        return Runner(self._with(key_groups=None), LocalExecutor()).run(
            max_batches=0,
            from_checkpoint=None,
            batch_rows=self.batch_rows,
            progress=progress,
            take_over=take_over,
            key_groups=wanted,
        )

    def checkpoints(self) -> pl.DataFrame:
        """One row per retained checkpoint: id, parent, kind, created, position, totals.

        The totals (``batches``, ``rows_in``, ``rows_out``, ``quarantined``) count
        everything the pipeline did up to that checkpoint.

        ``kind`` is ``"batch"``, ``"rewind"``, ``"reshard"`` or ``"final"`` (the
        end of input, ``run(final=True)``); ``keys`` and ``key_groups`` describe
        the per-key state. A checkpoint file that fails verification is listed
        with kind ``"damaged"``.
        """
        return _queries.checkpoints(self)

    def state(self, checkpoint: int | None = None) -> pl.DataFrame:
        """Per-key state at the latest (or a given) checkpoint.

        Columns: ``key``, ``state``, ``since`` (when the key entered its state),
        ``last_time`` (its last processed event or timeout), ``events``. With
        ``.transitions(..., lateness=...)`` also ``waiting``: the key's events
        read but still waiting for the watermark; a key whose every event still
        waits has nulls in the other columns.
        """
        self._require_source()
        return _queries.state(self, checkpoint)

    def quarantine(self) -> pl.DataFrame:
        """Events set aside, with the reason.

        Columns: the source log's key and time columns, ``event``, ``reason``
        (``"late"`` or ``"undefined"``), ``state`` (the key's state at that
        moment), ``offset`` (in the source log) and ``data`` (the whole event row
        as JSON; decode with ``pl.col("data").str.json_decode()``).
        """
        self._require_source()
        return _queries.quarantine(self)

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
        return _queries.vacuum(self, retain)

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
