"""The batch step of a Dask run: each task reads, computes and writes its own key groups.

A batch of a :class:`~streamkit.Log` source is cut into tasks by key group
(task ``t`` of ``T`` holds the groups ``g`` with ``g mod T == t``). A task runs
on a worker and does the whole batch step for its groups: it reads the log
segments of the partitions that can hold its keys, runs the operators and the
kernel, writes its history and quarantine segments and its state deltas
straight to the store, and returns only metadata (segment references, the
operators' checkpoint entries for its groups, counts). The driver commits:
one version of each output log adding every task's segments
(:meth:`Log.commit_segments`), then the checkpoint.

The watermark at every event comes from the rows read (see
:mod:`._eventtime`): a task reads every row of its own segments, and a log
segment's rows are stored in time order, so for a segment it does not read
the largest time (the log's metadata) stands for it without changing any
result. Batches are cut at segment ends for this.

Between batches a worker keeps its groups' state in memory (keyed by the run
and the batch it follows), so a task that lands on the same worker again
restores nothing; a task that lands elsewhere (a new run, a rescaled or
restarted cluster, a retried task) restores its groups from the checkpoint's
files. A killed worker's task is retried by Dask; the files of a failed attempt
are never referenced and ``vacuum`` (logs) and retention (state files) remove
them.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from streamkit.errors import ConfigurationError
from streamkit.pipeline._checkpoints import CheckpointStore
from streamkit.pipeline._eventtime import Reads
from streamkit.pipeline._executor import LocalExecutor
from streamkit.pipeline._keyed import group_of
from streamkit.pipeline._operators import (
    OFFSET,
    BatchContext,
    KeyedOperator,
    Operator,
    WithColumns,
    run_operators,
)
from streamkit.pipeline._source import Todo

if TYPE_CHECKING:
    from streamkit.pipeline.pipeline import Pipeline
    from streamkit.storage import Log, SegmentRef, Store


_logger = logging.getLogger("streamkit.pipeline")


# ---------------------------------------------------------------- what travels
@dataclass(frozen=True)
class LogSpec:
    """Where a log lives: its store's URL and options, its path below it.

    The options may hold credentials: they travel to the workers inside the
    task (in memory, over Dask's connection) and are never shown by ``repr``.
    """

    store_url: str
    path: str
    key: str
    time: str
    partitions: int
    options: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def of(cls, log: Log) -> LogSpec:
        fs = log.filesystem
        url = log.url
        store_url = url[: -len(log.name) - 1] if url.endswith("/" + log.name) else url
        return cls(store_url, log.name, log.key, log.time, log.partitions, fs.options)

    def open(self) -> Log:
        """The log, opened once per worker process (it refreshes itself)."""
        key = (self.store_url, self.path)
        with _LOCK:
            log = _LOGS.get(key)
        if log is None:
            log = _store(self.store_url, self.options).log_at(
                self.path, key=self.key, time=self.time, partitions=self.partitions
            )
            with _LOCK:
                _LOGS[key] = log
        return log


@dataclass
class TaskSpec:
    """One task of one batch: its key groups, what to read, the state it follows."""

    pipeline: str
    store: LogSpec  # the pipeline's store (path ""), for its checkpoint files
    source: LogSpec
    sink: LogSpec | None
    quarantine: LogSpec | None
    operators: list[Operator]
    key_groups: int
    task: int
    groups: tuple[int, ...]
    partitions: tuple[int, ...] | None  # source partitions to read (None: every one)
    shared: bool  # those partitions hold other tasks' keys too: keep only ours
    lo: int
    hi: int
    final: bool
    stand_ins: list[tuple[int, int]]  # (offset, time) for each stretch not read
    entries: dict[str, Any]  # the keyed operators' entries of the state followed
    run: tuple[int, int]  # (epoch, the batch's checkpoint id), for messages

    def __repr__(self) -> str:  # no options, no state entries
        return (
            f"TaskSpec(pipeline={self.pipeline!r}, task={self.task}, batch=[{self.lo}, "
            f"{self.hi}), groups={len(self.groups)}, run={self.run})"
        )


@dataclass
class TaskResult:
    """What a task returns: metadata only."""

    task: int
    out: list[SegmentRef]
    quarantine: list[SegmentRef]
    entries: dict[str, dict[str, Any]]
    counts: dict[str, int]
    rows_out: int
    rows_quarantined: int
    restored: bool  # the state came from files (not from this worker's memory)


# ------------------------------------------------------------ worker side
_LOCK = threading.Lock()
_STORES: dict[str, Store] = {}
_LOGS: dict[tuple[str, str], Log] = {}
#: Keyed operators kept between batches: (store, pipeline, groups) -> (the identity of
#: the state they hold, the operators). At most ``_KEEP`` entries (the newest).
_STATE: dict[tuple[str, str, tuple[int, ...]], tuple[Any, list[Operator]]] = {}
_KEEP = 8


def _store(url: str, options: dict[str, Any]) -> Store:
    from streamkit.storage import Store

    with _LOCK:
        store = _STORES.get(url)
        if store is None:
            store = _STORES[url] = Store(url, storage_options=options)
    return store


def run_task(spec: TaskSpec) -> TaskResult:
    """The whole batch step for one task's key groups (runs on a Dask worker)."""
    store = _store(spec.store.store_url, spec.store.options)
    ckpts = CheckpointStore(store.filesystem.child(f"_pipelines/{spec.pipeline}"), spec.pipeline)
    source = spec.source.open()
    key, time = spec.source.key, spec.source.time
    if spec.final:
        schema = dict(source.schema or {})
        batch = pl.DataFrame(schema=schema).with_columns(pl.lit(0, pl.Int64).alias(OFFSET))
    else:
        batch = source.scan(
            start=spec.lo, end=spec.hi, with_offset=OFFSET, partitions=spec.partitions
        ).collect()
    reads = Reads.of(batch, time, OFFSET, extra=spec.stand_ins)
    if spec.shared and batch.height:
        mine = np.isin(group_of(batch[key], spec.key_groups), np.asarray(spec.groups))
        batch = batch.filter(pl.Series(mine))
    cache_key = (spec.store.store_url, spec.pipeline, spec.groups)
    operators, restored = _operators(spec, ckpts, cache_key)
    ctx = BatchContext(
        key=key, time=time, executor=LocalExecutor(threads=1), final=spec.final, reads=reads
    )
    out, q = run_operators(operators, batch, ctx, pipeline=spec.pipeline, source=spec.source.path)
    out_refs: list[SegmentRef] = []
    if spec.sink is not None and out.height:
        out_refs = spec.sink.open().write_segments(out)
    q_refs: list[SegmentRef] = []
    if spec.quarantine is not None and q is not None and q.height:
        q_refs = spec.quarantine.open().write_segments(q)
    entries = {
        op.op_id: op.persist(ckpts, op.changes())
        for op in operators
        if isinstance(op, KeyedOperator)
    }
    _keep(cache_key, _identity(spec, entries), operators)
    return TaskResult(
        spec.task,
        out_refs,
        q_refs,
        entries,
        dict(ctx.counts),
        out.height,
        0 if q is None else q.height,
        restored,
    )


def _operators(
    spec: TaskSpec, ckpts: CheckpointStore, cache_key: tuple[str, str, tuple[int, ...]]
) -> tuple[list[Operator], bool]:
    """The task's operators: the keyed ones from this worker's memory when they hold
    exactly the state the batch follows (a new run's first batch included), else
    restored from the checkpoint's files."""
    with _LOCK:
        cached = _STATE.pop(cache_key, None)  # a failing task must not leave it half-done
    if cached is not None and cached[0] == _identity(spec, spec.entries):
        return cached[1], False
    operators: list[Operator] = []
    for op in spec.operators:
        if isinstance(op, KeyedOperator):
            keyed = op.fresh()
            assert isinstance(keyed, KeyedOperator)
            keyed.open(spec.entries.get(op.op_id), ckpts, spec.key_groups, groups=set(spec.groups))
            op = keyed
        operators.append(op)
    return operators, True


def _identity(spec: TaskSpec, entries: dict[str, Any]) -> Any:
    """What identifies the state of a task's key groups in checkpoint entries: the
    operators' settings, the watermark, and the files (each written once, under a
    unique name) of its groups' state chains and waiting events."""
    groups = set(spec.groups)
    settings = tuple(
        (op.op_id, op.describe(), op.fingerprint(), str(getattr(op, "tick", None)))
        for op in spec.operators
        if isinstance(op, KeyedOperator)
    )
    ident: list[Any] = [spec.key_groups, settings]
    for op_id in sorted(entries):
        entry = entries[op_id]
        if not isinstance(entry, dict):
            ident.append((op_id, None))
            continue
        state = entry.get("state") or {}
        files = state.get("files", [])
        chains = tuple(
            (int(g), tuple((files[fi]["path"], first, rows) for fi, first, rows in links))
            for g, links in sorted(state.get("groups", {}).items(), key=lambda kv: int(kv[0]))
            if int(g) in groups
        )
        waiting = tuple(
            sorted(
                f["path"]
                for f in entry.get("waiting_files", [])
                if f.get("groups") is None or any(int(g) in groups for g in f["groups"])
            )
        )
        ident.append(
            (op_id, entry.get("watermark"), entry.get("max_time"), entry.get("state_file"))
        )
        ident.append((chains, waiting))
    return repr(ident)


def _keep(key: tuple[str, str, tuple[int, ...]], identity: Any, operators: list[Operator]) -> None:
    """Keep a task's operators for the next batch; forget the same pipeline's group
    sets that overlap these (a rescaled cluster) and all but the newest ``_KEEP``."""
    mine = set(key[2])
    with _LOCK:
        for other in [k for k in _STATE if k[:2] == key[:2] and k != key and mine & set(k[2])]:
            del _STATE[other]
        _STATE[key] = (identity, operators)
        while len(_STATE) > _KEEP:
            del _STATE[next(iter(_STATE))]


# ------------------------------------------------------------- driver side
class DistributedStep:
    """The driver's half of a Dask run: cuts batches into tasks, merges what they return.

    It holds neither data nor state: per batch, the operators' checkpoint
    entries (which files make up each group's state) and the tasks' results.
    """

    def __init__(self, pipe: Pipeline, executor: Any, epoch: int) -> None:
        from streamkit.storage import Log

        source = pipe.source
        if not isinstance(source, Log):
            raise ConfigurationError("internal: the distributed batch step reads a Log")
        self.pipe = pipe
        self.client = executor.client
        self.executor = executor
        self.epoch = epoch
        self.source = LogSpec.of(source)
        self.store = LogSpec(pipe.store.url, "", "", "", 1, pipe.store.storage_options)
        self.sink = LogSpec.of(pipe.sink) if pipe.sink is not None else None
        keyed = pipe._keyed_op() is not None
        self.quarantine = LogSpec.of(pipe._quarantine_log()) if keyed else None
        self.entries: dict[str, Any] = {}
        self.seq = 0
        self.key_groups = pipe.key_groups or 0
        self._segments: pl.DataFrame | None = None
        _check_columns(pipe)

    def reset(self, cp: Any) -> None:
        """Follow ``cp``: the next batch is ``cp.id + 1`` and starts from its state."""
        self.entries = {k: v for k, v in cp.operators.items() if isinstance(v, dict)}
        self.seq = cp.id + 1
        self.key_groups = cp.key_groups
        self._segments = None

    # ------------------------------------------------------------ batches
    def segments(self) -> pl.DataFrame:
        """The source's live segments (offset order), physical times."""
        if self._segments is None:
            segs = self.pipe.source.segments()
            self._segments = segs.select(
                pl.col("offset"),
                pl.col("rows"),
                pl.col("partition"),
                pl.col("max_time").cast(pl.Int64),
            )
        return self._segments

    def cut(self, lo: int, rows: int, end: int) -> Todo:
        """The next batch from ``lo``: ends at a segment's end, at most ``rows`` rows
        unless a single segment holds more."""
        segs = self.segments()
        ends = (segs["offset"] + segs["rows"]).to_numpy()
        ends = ends[(ends > lo) & (ends <= end)]
        if len(ends) == 0:
            return Todo(lo, end)
        within = ends[ends <= lo + rows]
        return Todo(lo, int(within.max()) if len(within) else int(ends.min()))

    def layout(self) -> list[tuple[tuple[int, ...], tuple[int, ...] | None, bool]]:
        """Per task: its key groups, the source partitions it reads, whether they hold
        other tasks' keys too."""
        groups = self.key_groups
        tasks = max(1, min(self.executor.tasks_per_batch(), groups))
        parts = self.source.partitions
        out: list[tuple[tuple[int, ...], tuple[int, ...] | None, bool]] = []
        for t in range(tasks):
            mine = tuple(g for g in range(groups) if g % tasks == t)
            if parts <= 1:
                out.append((mine, None, tasks > 1))
                continue
            holds = [_groups_of_partition(p, parts, groups) for p in range(parts)]
            mine_set = set(mine)
            read = tuple(p for p in range(parts) if holds[p] & mine_set)
            shared = any(not holds[p] <= mine_set for p in read)
            out.append((mine, read, shared))
        return out

    def prepare(self, todo: Todo) -> tuple[list[TaskResult], dict[str, Any]]:
        """Run batch ``todo`` on the cluster; the tasks' results and the merged entries."""
        seq = self.seq
        layout = self.layout()
        segs = self.segments()
        if not todo.final and todo.hi > todo.lo:
            ends = (segs["offset"] + segs["rows"]).to_numpy()
            inside = (segs["offset"].to_numpy() < todo.hi) & (ends > todo.lo)
            batch_segs = segs.filter(pl.Series(inside))
        else:
            batch_segs = segs.clear()
        workers = sorted(self.client.nthreads())  # asks the scheduler (no stale cache)
        futures = []
        for t, (groups, parts, shared) in enumerate(layout):
            spec = TaskSpec(
                pipeline=self.pipe.name,
                store=self.store,
                source=self.source,
                sink=self.sink,
                quarantine=self.quarantine,
                operators=[op.fresh() if op.stateful else op for op in self.pipe.operators],
                key_groups=self.key_groups,
                task=t,
                groups=groups,
                partitions=parts,
                shared=shared,
                lo=todo.lo,
                hi=todo.hi,
                final=todo.final,
                stand_ins=self._stand_ins(batch_segs, parts, todo.hi),
                entries={k: _only_groups(v, groups) for k, v in self.entries.items()},
                run=(self.epoch, seq),
            )
            futures.append(
                self.client.submit(
                    run_task,
                    spec,
                    key=f"streamkit-{self.pipe.name}-{seq}-{t}-{uuid.uuid4().hex[:8]}",
                    workers=[workers[t % len(workers)]] if workers else None,
                    allow_other_workers=bool(workers),
                    pure=False,
                )
            )
        results: list[TaskResult] = self.client.gather(futures)
        results.sort(key=lambda r: r.task)
        merged = {
            op_id: merge_entries([r.entries[op_id] for r in results])
            for op_id in results[0].entries
        }
        self.entries = merged
        self.seq = seq + 1
        restored = sum(r.restored for r in results)
        _logger.info(
            "pipeline %s: batch %d ran as %d tasks; %d restored their key groups from the "
            "checkpoint's files, %d found them in their worker's memory",
            self.pipe.name,
            seq,
            len(results),
            restored,
            len(results) - restored,
        )
        return results, merged

    def _stand_ins(
        self, segs: pl.DataFrame, parts: tuple[int, ...] | None, hi: int
    ) -> list[tuple[int, int]]:
        """(last offset, largest time) standing for each stretch of batch segments the
        task does not read: consecutive ones (no segment of its own between them)
        collapse into one."""
        if parts is None or segs.height == 0:
            return []
        offset = segs["offset"].to_numpy()
        end = np.minimum(offset + segs["rows"].to_numpy(), hi)
        top = segs["max_time"].to_numpy().copy()
        foreign = ~np.isin(segs["partition"].to_numpy(), np.asarray(parts))
        if not foreign.any():
            return []
        for i in np.flatnonzero(foreign & (end < offset + segs["rows"].to_numpy())):
            top[i] = self._max_time(int(offset[i]), hi)  # the batch ends inside it
        stretch = np.cumsum(~foreign)[foreign]  # own segments before each foreign one
        last = end[foreign] - 1
        top = top[foreign]
        cut = np.flatnonzero(np.diff(stretch)) + 1
        bounds = np.concatenate(([0], cut, [len(stretch)]))
        return [
            (int(last[b - 1]), int(top[a:b].max())) for a, b in itertools.pairwise(bounds.tolist())
        ]

    def _max_time(self, lo: int, hi: int) -> int:
        """The largest time of offsets ``[lo, hi)`` (a batch that ends mid-segment)."""
        time = self.source.time
        got = self.pipe.source.scan(start=lo, end=hi).select(pl.col(time).max()).collect()
        return int(got.select(pl.col(time).cast(pl.Int64)).item())


def _groups_of_partition(p: int, parts: int, groups: int) -> set[int]:
    """The key groups whose keys a source partition ``p`` (of ``parts``) may hold."""
    if groups % parts == 0:  # both hash mod a power of two: group g is in partition g mod P
        return set(range(p, groups, parts))
    if parts % groups == 0:
        return {p % groups}
    return set(range(groups))


def _check_columns(pipe: Pipeline) -> None:
    """A task routes rows by the source's key and reads time from its segments: an
    operator must not rewrite either column before the keyed operator."""
    key, time = pipe.source.key, pipe.source.time
    keyed = pipe._keyed_op()
    before = keyed.describe() if keyed is not None else "its end"
    for op in pipe.operators:
        if isinstance(op, KeyedOperator):
            return
        clash = _written(op) & {key, time}
        if clash:
            raise ConfigurationError(
                f"pipeline {pipe.name!r} rewrites the source's {sorted(clash)} column(s) "
                f"before {before}; on "
                "a Dask cluster every task holds the keys of its key groups and takes the "
                "watermark from the log's segments, so the key and time columns must reach "
                "the keyed operator unchanged: write the new values to other columns"
            )


def _written(op: Operator) -> set[str]:
    """The columns an operator (re)writes, as far as their names are known."""
    if not isinstance(op, WithColumns):
        return set()
    names = set(op.named)
    exprs: list[Any] = []
    for e in op.exprs:
        exprs.extend(e if isinstance(e, list | tuple) else [e])
    for e in exprs:
        if isinstance(e, pl.Expr):
            try:
                names.add(e.meta.output_name())
            except pl.exceptions.PolarsError:  # no single output name: nothing to check
                continue
    return names


def _only_groups(entry: Any, groups: tuple[int, ...]) -> Any:
    """A keyed operator's entry cut down to ``groups`` (what one task restores)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("state"), dict):
        return entry
    state = entry["state"]
    files = state.get("files", [])
    keep: dict[str, Any] = {}
    index: dict[int, int] = {}
    wanted = set(groups)
    for name, links in state.get("groups", {}).items():
        if int(name) not in wanted:
            continue
        relinked = []
        for fi, first, rows in links:
            if fi not in index:
                index[fi] = len(index)
            relinked.append([index[fi], first, rows])
        keep[name] = relinked
    used = [files[i] for i in sorted(index, key=index.__getitem__)]
    return dict(entry, state=dict(state, files=used, groups=keep))


def merge_entries(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One keyed operator's checkpoint entry from its tasks' entries.

    Every task computed the same watermark (from the same reads); its state
    chains cover its own groups, its waiting-event files its own events.

    Examples
    --------
    >>> a = {"watermark": 5, "keys": 2, "state": {"key_groups": 2, "files": [
    ...     {"path": "s/a", "bytes": 1, "crc32": 0}], "groups": {"0": [[0, 0, 2]]}}}
    >>> b = {"watermark": 5, "keys": 1, "state": {"key_groups": 2, "files": [
    ...     {"path": "s/b", "bytes": 1, "crc32": 0}], "groups": {"1": [[0, 0, 1]]}}}
    >>> m = merge_entries([a, b])
    >>> m["keys"], m["state"]["groups"], [f["path"] for f in m["state"]["files"]]
    (3, {'0': [[0, 0, 2]], '1': [[1, 0, 1]]}, ['s/a', 's/b'])
    """
    first = dict(entries[0])
    marks = {(e.get("watermark"), e.get("max_time")) for e in entries}
    if len(marks) != 1:
        raise AssertionError(f"tasks computed different watermarks: {sorted(marks)}")
    first["keys"] = sum(int(e.get("keys", 0)) for e in entries)
    if "waiting" in first:
        first["waiting"] = sum(int(e.get("waiting", 0)) for e in entries)
    if any("state" in e for e in entries):
        paths: dict[str, int] = {}
        files: list[dict[str, Any]] = []
        groups: dict[str, list[list[int]]] = {}
        for e in entries:
            state = e["state"]
            local = state["files"]
            for name, links in state["groups"].items():
                relinked = []
                for fi, start, rows in links:
                    ref = local[fi]
                    if ref["path"] not in paths:
                        paths[ref["path"]] = len(files)
                        files.append(ref)
                    relinked.append([paths[ref["path"]], start, rows])
                groups[name] = relinked
        ordered = dict(sorted(groups.items(), key=lambda kv: int(kv[0])))
        first["state"] = dict(entries[0]["state"], files=files, groups=ordered)
    waiting: dict[str, dict[str, Any]] = {}
    for e in entries:
        for f in e.get("waiting_files", []):
            waiting.setdefault(f["path"], f)
    first.pop("waiting_files", None)
    if waiting:
        first["waiting_files"] = list(waiting.values())
    return first
