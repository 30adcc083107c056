"""Crash-point enumeration: end a process at its k-th mutating store call, recover, compare.

A *job* (an append, a checkpoint commit, a compaction, a retention pass, a run
writing chains of state deltas and compacting them) runs in
a child process that counts its mutating calls at the
:class:`~streamkit.storage._fs.FileSystem` layer (``put_new``,
``put_new_written``, ``put``, and ``rm`` one path at a time) and calls
``os._exit(137)``

* right **after** the k-th call returned (the store applied it, the process never
  learned),
* right **before** it (the store never saw it: the same store state as "after
  k - 1", so this variant adds only the crash before any write; the default suite
  runs it for the first and the last call, ``--crashpoints`` for every call), or
* **torn**, in the middle of it: on a local disk, half of its bytes in the
  temporary file that ``put_new``/``put`` link or rename into place, never linked
  (on S3 a PUT is atomic: the same as "before").

The parent first runs the job crash-free to count its N mutating calls, then for
each k: a fresh copy of the store, a crashing child, a recovering child (a new
process that runs the job's recovery, no crash), and a comparison with the
crash-free outcome. First a clean-up pass (``vacuum(retain=0)`` of every log,
pruning orphaned state files) must remove every leftover of the crash and
nothing else; then rows of every native log (offsets, multiset, per-key order),
transactions, pipeline history, state, quarantine, checkpoints and
``verify(replay=True)`` must equal the crash-free run's, and no unreferenced or
temporary file may remain anywhere in the store.

Children are forked from a *fork server* (``python -m tests.torture.crashpoint_job
serve``), a fresh interpreter that imported everything but never ran Polars (its
thread pool does not survive a fork): a child costs ~0.1 s instead of ~0.9 s
for a new interpreter, which is what makes exhaustive enumeration affordable.

Reproduce one crash point by hand (local store, no fork server)::

    python -m tests.torture.crashpoint_job run pipeline setup /tmp/cp
    python -m tests.torture.crashpoint_job run pipeline work /tmp/cp --crash-at 7
    python -m tests.torture.crashpoint_job run pipeline recover /tmp/cp
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

import streamkit as sk
from streamkit.storage import _manifest as mf
from streamkit.storage import log as log_module
from streamkit.storage._fs import FileSystem, tmp_name
from tests.pipeline.oracle import TIGHT_POLICY

#: Exit code of a child ended at its crash point (what a SIGKILL'd shell job shows).
CRASH_CODE = 137
#: The FileSystem methods that change the store (``rm`` last: counted per path).
MUTATING = ("put_new", "put_new_written", "put", "rm")
#: Where a child ends relative to its k-th mutating call: after it returned,
#: before it started, or (local disk) in the middle of writing it.
WHENS = ("after", "before", "torn")
REPO = Path(__file__).resolve().parents[2]

Outcome = dict[str, Any]


# ---------------------------------------------------------------------------- counter
class CallCounter:
    """Count mutating FileSystem calls; end the process at call ``crash_at``.

    Calls are serialized (a pipeline commits on a worker thread) so their
    numbering is the order the store saw them. A call made inside a counted call
    (``put_new_written`` delegating to ``put_new`` on object stores) is part of
    it, not another call. ``rm`` counts each path: a local delete is a loop of
    unlinks that a crash can cut anywhere.
    """

    def __init__(self, crash_at: int | None = None, when: str = "after") -> None:
        if when not in WHENS:
            raise ValueError(f"when must be one of {WHENS}, found {when!r}")
        self.crash_at = crash_at
        self.when = when
        self.calls: list[str] = []
        self.root = ""
        self._lock = threading.RLock()
        self._depth = threading.local()

    def install(self) -> None:
        """Wrap the FileSystem methods (in this process only: call it in a child)."""
        for name in MUTATING[:-1]:
            setattr(FileSystem, name, self._wrap(name, getattr(FileSystem, name)))
        original_rm = FileSystem.rm

        def rm(fs: FileSystem, paths: Any) -> None:
            wanted = list(paths)
            if getattr(self._depth, "n", 0):
                original_rm(fs, wanted)
                return
            for path in wanted:
                self._counted("rm", fs, path, lambda p=path: original_rm(fs, [p]))

        FileSystem.rm = rm  # type: ignore[method-assign]

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(fs: FileSystem, path: str, *args: Any, **kwargs: Any) -> Any:
            data = args[0] if args and isinstance(args[0], bytes) else b"torn"
            return self._counted(name, fs, path, lambda: original(fs, path, *args, **kwargs), data)

        return wrapped

    def _counted(
        self, name: str, fs: FileSystem, path: str, call: Callable[[], Any], data: bytes = b""
    ) -> Any:
        if getattr(self._depth, "n", 0):
            return call()
        with self._lock:
            full = fs.full_path(path)
            shown = full[len(self.root) :].lstrip("/") if full.startswith(self.root) else full
            self.calls.append(f"{name} {shown}")
            n = len(self.calls)
            if n == self.crash_at and self.when == "torn":
                if fs.is_local and name != "rm":
                    _torn_write(full, data)
                os._exit(CRASH_CODE)
            if n == self.crash_at and self.when == "before":
                os._exit(CRASH_CODE)
            self._depth.n = 1
            try:
                result = call()
            finally:
                self._depth.n = 0
            if n == self.crash_at and self.when == "after":
                os._exit(CRASH_CODE)
            return result


def _torn_write(full: str, data: bytes) -> None:
    """What a local write ended mid-way leaves: half of the bytes in the temporary
    file next to the final name (written, never linked or renamed)."""
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(tmp_name(full), "wb") as fh:
        fh.write(data[: len(data) // 2])


# ---------------------------------------------------------------------------- data
def _frame(batch: int, rows: int = 12, keys: int = 5) -> pl.DataFrame:
    """Rows of one append: times run backwards with ties, so sorting and the
    ``(time, append order)`` rule both matter; ``(b, r)`` identifies a row."""
    return pl.DataFrame(
        {
            "k": [f"k{(batch * 7 + r) % keys}" for r in range(rows)],
            "t": [batch * 100 + (rows - r) // 2 for r in range(rows)],
            "b": [batch] * rows,
            "r": list(range(rows)),
        }
    )


def _orders(n_orders: int) -> pl.DataFrame:
    from streamkit.datasets import generate_orders

    return generate_orders(n_orders, span="4h", seed=3)


def _pipeline(store: sk.Store, *, batch_rows: int, keep: int = 20) -> sk.Pipeline:
    """The pipeline of tests/pipeline/crash_job.py with a given batch size and retention."""
    from streamkit.datasets import order_machine

    return (
        sk.Pipeline("orders-fsm", store, batch_rows=batch_rows, keep_checkpoints=keep)
        .read(store.log("orders", key="order_id", time="ts"))
        .filter(pl.col("amount") >= 0)
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


# ---------------------------------------------------------------------------- outcomes
def log_outcome(log: sk.Log, prefix: str) -> Outcome:
    """What a log holds, in a form two runs can be compared by (no file names)."""
    frame = log.scan(with_offset="_offset").collect()
    data = frame.drop("_offset") if frame.width else frame
    key = log.key
    per_key: dict[Any, list[tuple[Any, ...]]] = collections.defaultdict(list)
    if data.width:
        for row in data.iter_rows(named=True):
            per_key[row[key]].append(tuple(row.values()))
    segs = log.segments().select(
        "partition",
        "seq",
        "offset",
        "rows",
        "min_time",
        "max_time",
        "version",
        "writer",
        "writer_seq",
    )
    return {
        f"{prefix}.rows": data.rows(),
        f"{prefix}.offsets": frame["_offset"].to_list() if frame.width else [],
        f"{prefix}.per_key": dict(per_key),
        f"{prefix}.extent": (log.start().offset, log.end().offset, log.version),
        f"{prefix}.segments": segs.rows(),
    }


def log_debris(log: sk.Log) -> list[str]:
    """Files under a log that no live segment references (segments, temporary files)."""
    fs = log.filesystem
    live = set(log.segments()["path"].to_list())
    files = [p for p in fs.find("data") if p.endswith(".parquet") or ".tmp-" in p]
    stray = [p for p in files if p not in live]
    stray += [f"{d}/{n}" for d in (mf.LOG_DIR, mf.SK_DIR) for n in fs.ls(d) if ".tmp-" in n]
    return stray


def _loaded_equals_replayed(log: sk.Log) -> Outcome:
    """The state loaded the fast way (hint, snapshot, later versions) equals the
    state replayed from version 0 without any snapshot."""
    fs = log.filesystem
    fast = log_module._load_state(fs, log.name)
    slow = log_module._advance(fs, None, 0, mf.SNAPSHOT_EVERY)
    same = fast is not None and (
        fast.version,
        fast.next_offset,
        sorted(fast.segments),
        fast.txns,
    ) == (slow.version, slow.next_offset, sorted(slow.segments), slow.txns)
    return {f"{log.name}.snapshot_state_equals_replay": same}


def _whole_batches(log: sk.Log, batches: int, rows: int) -> set[int]:
    """Which of the job's appends the log holds; every one must be whole and the
    committed ones a prefix (an append is all or nothing)."""
    got = log.scan().collect()
    if got.height == 0:
        return set()
    counts = got.group_by("b").agg(pl.len(), pl.col("r").n_unique().alias("u"))
    torn = counts.filter((pl.col("len") != rows) | (pl.col("u") != rows))
    if torn.height:
        raise AssertionError(f"torn or duplicated appends in {log.url}: {torn.to_dicts()}")
    present = set(counts["b"].to_list())
    if present != set(range(len(present))) or len(present) > batches:
        raise AssertionError(f"committed appends are not a prefix: {sorted(present)}")
    return present


# ---------------------------------------------------------------------------- scenarios
@dataclasses.dataclass(frozen=True)
class Scenario:
    """A job whose every crash point is enumerated.

    ``setup`` builds the store the job starts from (in the parent, not counted);
    ``work`` is the job (counted, crashed); ``recover`` is what a new process does
    after a crash (for idempotent jobs: the job again); ``outcome`` summarises the
    store for comparison; ``cleanup`` removes crash leftovers; ``debris`` lists
    leftovers (none may remain after ``cleanup``).
    """

    name: str
    what: str
    setup: Callable[[sk.Store], None]
    work: Callable[[sk.Store], None]
    recover: Callable[[sk.Store], None]
    outcome: Callable[[sk.Store], Outcome]
    cleanup: Callable[[sk.Store], None]
    debris: Callable[[sk.Store], list[str]]


def _nothing(store: sk.Store) -> None:
    del store


def _logs(*names: str) -> tuple[Callable[[sk.Store], None], Callable[[sk.Store], list[str]]]:
    def cleanup(store: sk.Store) -> None:
        for name in names:
            store.log(name).vacuum(retain=dt.timedelta(0))

    def debris(store: sk.Store) -> list[str]:
        return [f"{n}/{p}" for n in names for p in log_debris(store.log(n))]

    return cleanup, debris


# -- an append without writer id: recovery appends whatever is missing ----------------
_APPENDS, _APPEND_ROWS = 3, 12


def _append_work(store: sk.Store) -> None:
    log = store.log("events", key="k", time="t")
    for b in range(_APPENDS):
        log.append(_frame(b, _APPEND_ROWS))


def _append_recover(store: sk.Store) -> None:
    log = store.log("events", key="k", time="t")
    present = _whole_batches(log, _APPENDS, _APPEND_ROWS)
    for b in range(_APPENDS):
        if b not in present:
            log.append(_frame(b, _APPEND_ROWS))


def _events_outcome(store: sk.Store) -> Outcome:
    log = store.log("events")
    out = log_outcome(log, "events")
    out["events.txn"] = log.transaction("producer")
    return out


# -- idempotent appends (writer/seq) to a multi-partition log ---------------------------
def _txn_setup(store: sk.Store) -> None:
    store.log("events", key="k", time="t", partitions=3)


def _txn_work(store: sk.Store) -> None:
    log = store.log("events")
    for s in range(3):
        log.append(_frame(s, 24, keys=9), writer="producer", seq=s, meta={"batch": s})


# -- compaction: the snapshot every SNAPSHOT_EVERY versions and its hint ----------------
_BEFORE_SNAPSHOT = mf.SNAPSHOT_EVERY - 3  # appends before the job: versions 1..29


def _compaction_setup(store: sk.Store) -> None:
    log = store.log("events", key="k", time="t")
    for s in range(_BEFORE_SNAPSHOT):
        log.append(_frame(s, 2), writer="producer", seq=s)


def _compaction_work(store: sk.Store) -> None:
    log = store.log("events")
    for s in range(_BEFORE_SNAPSHOT, _BEFORE_SNAPSHOT + 4):  # versions 30..33
        log.append(_frame(s, 2), writer="producer", seq=s)


def _compaction_outcome(store: sk.Store) -> Outcome:
    out = _events_outcome(store)
    out.update(_loaded_equals_replayed(store.log("events")))
    return out


# -- retention: truncate by position and by time, then vacuum ---------------------------
def _retention_setup(store: sk.Store) -> None:
    log = store.log("events", key="k", time="t")
    for b in range(5):
        log.append(_frame(b, _APPEND_ROWS))


def _retention_work(store: sk.Store) -> None:
    log = store.log("events")
    log.truncate(before=sk.Position(2 * _APPEND_ROWS))  # batches 0 and 1
    log.truncate(before=300)  # batch 2 (times 200..206)
    log.vacuum(retain=dt.timedelta(0))


# -- a pipeline run: outputs appended, state written, checkpoint committed --------------
_PIPE_ORDERS, _PIPE_BATCH = 30, 40


def _pipe_setup(store: sk.Store) -> None:
    store.log("orders", key="order_id", time="ts").append(_orders(_PIPE_ORDERS))


def _pipe_run(store: sk.Store) -> None:
    # take_over: a crashed phase never released its lease; recovery must not wait for it
    _pipeline(store, batch_rows=_PIPE_BATCH).run(progress=False, take_over=True)


def pipeline_outcome(pipe: sk.Pipeline) -> Outcome:
    """History, state, quarantine, checkpoints and verify of a pipeline."""
    from tests.pipeline.oracle import history_by_key, state_dict

    assert pipe.sink is not None
    out = log_outcome(pipe.sink, "history")
    out["history.by_key"] = history_by_key(pipe.sink.scan().collect())
    out["history.txn"] = pipe.sink.transaction(pipe.writer_id)
    out["state"] = state_dict(pipe.state())
    out["quarantine"] = pipe.quarantine().sort("offset").select("offset", "reason").rows()
    cps = pipe.checkpoints()
    out["checkpoints"] = cps.select(
        "id",
        "parent",
        "kind",
        "position",
        "batch_start",
        "batch_end",
        "rows_in",
        "rows_out",
        "quarantined",
        "keys",
    ).rows()
    report = pipe.verify(replay=True)
    out["verify"] = "ok" if report.ok else str(report)
    return out


def pipeline_debris(pipe: sk.Pipeline) -> list[str]:
    """Unreferenced segment, temporary and state files of a pipeline's logs and checkpoints."""
    assert pipe.sink is not None
    stray = [f"history/{p}" for p in log_debris(pipe.sink)]
    stray += [f"quarantine/{p}" for p in log_debris(pipe._quarantine_log())]
    ckpts = pipe._ckpts()
    live: set[str] = set()
    for cid in ckpts.ids():
        live |= ckpts._state_files(ckpts.read(cid))
    stray += [f"state/{n}" for n in ckpts.fs.ls("state") if f"state/{n}" not in live]
    return stray


def pipeline_cleanup(pipe: sk.Pipeline) -> None:
    """Vacuum the pipeline's logs; prune state files no checkpoint references."""
    assert pipe.sink is not None
    pipe.sink.vacuum(retain=dt.timedelta(0))
    pipe._quarantine_log().vacuum(retain=dt.timedelta(0))
    pipe._ckpts().prune(pipe.keep_checkpoints, protect=set(), orphan_age=0)


# -- a pipeline whose sink crosses a snapshot, with checkpoint and epoch retention ------
# 28 orders are 102 events: 34 batches of 3; the setup runs 29 of them (the sink
# is then at version 29), the job the last 5 (versions 30..34).
_COMPACT_ORDERS, _COMPACT_BATCH, _COMPACT_KEEP, _COMPACT_BEFORE = 28, 3, 2, 29


def _compact_pipe(store: sk.Store) -> sk.Pipeline:
    return _pipeline(store, batch_rows=_COMPACT_BATCH, keep=_COMPACT_KEEP)


def _compact_setup(store: sk.Store) -> None:
    orders = _orders(_COMPACT_ORDERS)
    batches = -(-orders.height // _COMPACT_BATCH)
    if not _COMPACT_BEFORE < mf.SNAPSHOT_EVERY < batches:
        raise AssertionError(f"{batches} batches do not cross snapshot {mf.SNAPSHOT_EVERY}")
    store.log("orders", key="order_id", time="ts").append(orders)
    pipe = _compact_pipe(store)
    pipe.run(max_batches=_COMPACT_BEFORE, progress=False)  # sink at version 30
    for _ in range(15):  # 16 epochs: the next run's claim prunes the oldest
        pipe.run(max_batches=0, progress=False)


def _compact_run(store: sk.Store) -> None:
    _compact_pipe(store).run(progress=False, take_over=True)  # as _pipe_run


def _compact_outcome(store: sk.Store) -> Outcome:
    pipe = _compact_pipe(store)
    out = pipeline_outcome(pipe)
    assert pipe.sink is not None
    out.update(_loaded_equals_replayed(pipe.sink))
    return out


# -- incremental checkpoints: chains of deltas, compaction into new bases, retention ----
# 28 orders are 102 events: 13 batches of 8; the setup runs 2 of them (so the job
# restores chains from disk), the job the last 11 with four key groups, chains of
# at most two links and bands of ten keys (``TIGHT_POLICY``): groups get deltas,
# one file per band, then new bases, and keep_checkpoints=2 retention (after
# batch 10 and at the end) deletes state files that earlier checkpoints shared.
_CHAIN_ORDERS, _CHAIN_BATCH, _CHAIN_GROUPS, _CHAIN_BEFORE = 28, 8, 4, 2
#: The compaction policy of ``streamkit.pipeline._keyed`` while the job writes state.
_CHAIN_POLICY = TIGHT_POLICY


@contextlib.contextmanager
def _tight_compaction() -> Iterator[None]:
    """Compact often (the setup runs in the parent: the policy is restored after)."""
    from streamkit.pipeline import _keyed

    saved = {name: getattr(_keyed, name) for name in _CHAIN_POLICY}
    for name, value in _CHAIN_POLICY.items():
        setattr(_keyed, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(_keyed, name, value)


def _chains_pipe(store: sk.Store) -> sk.Pipeline:
    from streamkit.datasets import order_machine

    return (
        sk.Pipeline(
            "orders-fsm",
            store,
            batch_rows=_CHAIN_BATCH,
            keep_checkpoints=2,
            key_groups=_CHAIN_GROUPS,
        )
        .read(store.log("orders", key="order_id", time="ts"))
        .filter(pl.col("amount") >= 0)
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


def _chains_setup(store: sk.Store) -> None:
    store.log("orders", key="order_id", time="ts").append(_orders(_CHAIN_ORDERS))
    with _tight_compaction():
        _chains_pipe(store).run(max_batches=_CHAIN_BEFORE, progress=False)


def _chains_run(store: sk.Store) -> None:
    with _tight_compaction():
        _chains_pipe(store).run(progress=False, take_over=True)  # as _pipe_run


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "append",
            "create a log, 3 appends without writer id; recovery appends what is missing",
            _nothing,
            _append_work,
            _append_recover,
            _events_outcome,
            *_logs("events"),
        ),
        Scenario(
            "append_txn",
            "3 appends with writer/seq to a 3-partition log; recovery repeats them",
            _txn_setup,
            _txn_work,
            _txn_work,
            _events_outcome,
            *_logs("events"),
        ),
        Scenario(
            "compaction",
            "appends 30..33: the log snapshot at version 32 and its hint",
            _compaction_setup,
            _compaction_work,
            _compaction_work,
            _compaction_outcome,
            *_logs("events"),
        ),
        Scenario(
            "retention",
            "truncate by position and by time, vacuum(retain=0); recovery repeats them",
            _retention_setup,
            _retention_work,
            _retention_work,
            _events_outcome,
            *_logs("events"),
        ),
        Scenario(
            "pipeline",
            "a 3-batch run: outputs, quarantine, state files, checkpoints, epoch claim",
            _pipe_setup,
            _pipe_run,
            _pipe_run,
            lambda store: pipeline_outcome(_pipeline(store, batch_rows=_PIPE_BATCH)),
            lambda store: pipeline_cleanup(_pipeline(store, batch_rows=_PIPE_BATCH)),
            lambda store: pipeline_debris(_pipeline(store, batch_rows=_PIPE_BATCH)),
        ),
        Scenario(
            "pipeline_compact",
            "a run whose sink crosses a snapshot, keep_checkpoints=2 pruning, epoch pruning",
            _compact_setup,
            _compact_run,
            _compact_run,
            _compact_outcome,
            lambda store: pipeline_cleanup(_compact_pipe(store)),
            lambda store: pipeline_debris(_compact_pipe(store)),
        ),
        Scenario(
            "chains",
            "11 batches into 4 key groups: state deltas, compaction into new bases, "
            "keep_checkpoints=2 retention deleting shared state files",
            _chains_setup,
            _chains_run,
            _chains_run,
            lambda store: pipeline_outcome(_chains_pipe(store)),
            lambda store: pipeline_cleanup(_chains_pipe(store)),
            lambda store: pipeline_debris(_chains_pipe(store)),
        ),
    ]
}


def _append_twice(store: sk.Store) -> None:
    log = store.log("events", key="k", time="t")
    for b in range(_APPENDS):
        log.append(_frame(b, _APPEND_ROWS))


#: Deliberately wrong jobs: the enumeration must report them (tests of the harness).
CANARIES: dict[str, Scenario] = {
    "canary_duplicate": Scenario(
        "canary_duplicate",
        "recovery appends everything again without looking: duplicates",
        _nothing,
        _append_work,
        _append_twice,
        _events_outcome,
        *_logs("events"),
    ),
}


def find_scenario(name: str) -> Scenario:
    """A scenario (or canary) by name."""
    found = SCENARIOS.get(name) or CANARIES.get(name)
    if found is None:
        raise KeyError(f"no crash-point scenario {name!r}; known: {sorted(SCENARIOS)}")
    return found


# ---------------------------------------------------------------------------- comparing
def row_diff(
    expected: Sequence[tuple[Any, ...]], found: Sequence[tuple[Any, ...]]
) -> tuple[int, int]:
    """``(lost, duplicated)``: rows of ``expected`` missing from ``found`` and rows of
    ``found`` beyond ``expected`` (as multisets)."""
    want, got = collections.Counter(expected), collections.Counter(found)
    return sum((want - got).values()), sum((got - want).values())


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def compare(expected: Outcome, found: Outcome) -> list[str]:
    """Differences between two outcomes, one line each; rows report lost/duplicated."""
    problems = []
    for name in sorted(expected.keys() | found.keys()):
        want, got = expected.get(name), found.get(name)
        if want == got:
            continue
        if name.endswith(".rows") and isinstance(want, list) and isinstance(got, list):
            lost, dup = row_diff(want, got)
            order = "same multiset, different order" if not lost and not dup else ""
            problems.append(f"{name}: {lost} lost, {dup} duplicated {order}".rstrip())
        else:
            problems.append(f"{name}: expected {_short(want)}, found {_short(got)}")
    return problems


# ---------------------------------------------------------------------------- children
def run_phase(
    scenario: str,
    phase: str,
    url: str,
    options: dict[str, Any] | None,
    counter: CallCounter | None = None,
) -> None:
    """Run one phase of a scenario in this process (counting if ``counter`` is set)."""
    job = find_scenario(scenario)
    store = sk.Store(url, storage_options=options)
    if counter is not None:
        counter.root = store.filesystem.root
        counter.install()
    getattr(job, phase)(store)


def _child(request: dict[str, Any]) -> int:
    """The body of a forked child: run a phase, maybe end at a crash point."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(err, 2)
    counter = CallCounter(request.get("crash_at"), request.get("when", "after"))
    code = 0
    try:
        run_phase(
            request["scenario"], request["phase"], request["url"], request["options"], counter
        )
    except BaseException:
        traceback.print_exc()
        code = 1
    with open(request["result"], "w") as fh:
        json.dump({"calls": counter.calls}, fh)
    sys.stderr.flush()
    return code


def _warm_up() -> None:
    """Import and initialise what every child needs, without starting a thread pool
    that a fork would break (Polars' is never touched here)."""
    import numba

    import streamkit.datasets
    import streamkit.kernel
    import streamkit.pipeline.pipeline  # noqa: F401
    import tests.pipeline.oracle  # noqa: F401

    with contextlib.suppress(ImportError):
        import s3fs  # noqa: F401
    # numba's typing and target registries load once per process (~0.2 s)
    numba.njit(lambda x: x + 1)(1)


def serve() -> None:
    """Fork server: one JSON request per stdin line, one JSON reply per stdout line."""
    _warm_up()
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os._exit(_child(request))
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()


@dataclasses.dataclass
class ChildResult:
    """How a child ended: exit code, the mutating calls it made, its stderr."""

    rc: int
    calls: list[str]
    stderr: str


class ForkServer:
    """Client of :func:`serve`: runs job phases in forked children.

    Parameters
    ----------
    timeout : float
        Seconds one child may take; a hung child ends the server (and the run)
        with ``TimeoutError``.
    """

    def __init__(self, timeout: float = 300.0) -> None:
        self.timeout = timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="streamkit-crashpoints-")
        self._log = open(Path(self._tmp.name) / "server.log", "wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-W", "error", "-m", "tests.torture.crashpoint_job", "serve"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self.children = 0

    def run(
        self,
        scenario: str,
        phase: str,
        url: str,
        options: dict[str, Any] | None,
        *,
        crash_at: int | None = None,
        when: str = "after",
    ) -> ChildResult:
        """Run ``phase`` of ``scenario`` on ``url`` in a new child process."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        tag = uuid.uuid4().hex
        result = Path(self._tmp.name) / f"{tag}.json"
        stderr = Path(self._tmp.name) / f"{tag}.err"
        request = {
            "scenario": scenario,
            "phase": phase,
            "url": url,
            "options": options,
            "crash_at": crash_at,
            "when": when,
            "result": str(result),
            "stderr": str(stderr),
        }
        self._proc.stdin.write((json.dumps(request) + "\n").encode())
        self._proc.stdin.flush()
        ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout)
        line = self._proc.stdout.readline() if ready else b""
        if not line:
            self.close(kill=True)
            raise TimeoutError(
                f"crash-point child ({scenario} {phase} crash_at={crash_at} {when}) did not "
                f"finish within {self.timeout:.0f}s or the fork server died; server log: "
                f"{self.server_log()}"
            )
        self.children += 1
        rc = int(json.loads(line)["rc"])
        calls = json.loads(result.read_text())["calls"] if result.exists() else []
        text = stderr.read_text(errors="replace") if stderr.exists() else ""
        for path in (result, stderr):
            path.unlink(missing_ok=True)
        return ChildResult(rc, calls, text)

    def server_log(self) -> str:
        self._log.flush()
        return (Path(self._tmp.name) / "server.log").read_text(errors="replace")[-3000:]

    def close(self, *, kill: bool = False) -> None:
        """Stop the server (and, with ``kill``, any child it is running)."""
        if self._proc.poll() is None:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
            else:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=30)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()
        self._tmp.cleanup()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- enumeration
@dataclasses.dataclass
class CrashPoint:
    """One crash point tried: where the child ended and what differed after recovery."""

    scenario: str
    backend: str
    k: int
    when: str
    call: str
    problems: list[str]

    def __str__(self) -> str:
        where = f"{self.scenario} [{self.backend}] crash {self.when} call {self.k} ({self.call})"
        return where + "".join(f"\n    {p}" for p in self.problems)


@dataclasses.dataclass
class Enumeration:
    """Everything one scenario's enumeration tried on one backend."""

    scenario: str
    backend: str
    calls: list[str]
    points: list[CrashPoint]
    problems: list[str]  # of the crash-free reference itself

    @property
    def failures(self) -> list[CrashPoint]:
        return [p for p in self.points if p.problems]

    def summary(self) -> str:
        bad = self.failures
        lines = [
            f"{self.scenario} [{self.backend}]: {len(self.calls)} mutating calls, "
            f"{len(self.points)} crash points tried, {len(bad)} failed"
        ]
        lines += [f"  reference: {p}" for p in self.problems]
        lines += [f"  {p}" for p in bad]
        return "\n".join(lines)


StoreFactory = Callable[[], tuple[str, dict[str, Any] | None]]


def _prepare(job: Scenario, url: str, options: dict[str, Any] | None, template: str | None) -> None:
    if template is not None:
        shutil.copytree(template, url)
    else:
        job.setup(sk.Store(url, storage_options=options))


def _check_recovered(
    server: ForkServer,
    job: Scenario,
    url: str,
    options: dict[str, Any] | None,
    reference: Outcome,
) -> list[str]:
    """Recover ``url`` in a new child, compare, clean up, compare again, look for debris."""
    rec = server.run(job.name, "recover", url, options)
    if rec.rc != 0:
        return [f"recovery failed (exit {rec.rc}):\n{rec.stderr.strip()[-2000:]}"]
    store = sk.Store(url, storage_options=options)
    try:
        # Clean-up first: it only deletes files no reader can reach, so what
        # differs before it differs after it, and what it wrongly deletes shows.
        job.cleanup(store)
        problems = compare(reference, job.outcome(store))
        left = job.debris(store)
        left += [p for p in store.filesystem.find("") if ".tmp-" in p and p not in left]
    except Exception as exc:  # an unreadable store is a finding, not a crash of the test
        return [f"store unreadable after recovery: {type(exc).__name__}: {exc}"]
    if left:
        problems.append(f"after clean-up {len(left)} unreferenced files remain: {left[:5]}")
    return problems


Chooser = Callable[[list[str]], Sequence[int]]


def every_call(calls: list[str]) -> list[int]:
    """Every k: ``1 .. len(calls)``."""
    return list(range(1, len(calls) + 1))


def enumerate_crashpoints(
    server: ForkServer,
    scenario: str,
    new_store: StoreFactory,
    *,
    backend: str,
    plan: Mapping[str, Chooser] | None = None,
) -> Enumeration:
    """Crash ``scenario`` at each chosen call k, recover, compare with the crash-free run.

    Parameters
    ----------
    server : ForkServer
        Runs the children.
    scenario : str
        A key of :data:`SCENARIOS` (or :data:`CANARIES`).
    new_store : callable
        Returns ``(url, storage_options)`` of a fresh, empty store location.
    backend : str
        ``"local"`` (setup is made once and copied for every k) or another name.
    plan : mapping, optional
        For each variant (``"after"``, ``"before"``, ``"torn"``), a function that
        picks its ks from the crash-free run's list of calls. Default: every k,
        after the call.
    """
    job = find_scenario(scenario)
    template: str | None = None
    url, options = new_store()
    if backend == "local":
        template = f"{url}-template"
        os.makedirs(template)
        job.setup(sk.Store(template))
    _prepare(job, url, options, template)
    ref = server.run(scenario, "work", url, options)
    if ref.rc != 0:
        raise RuntimeError(f"crash-free {scenario} failed (exit {ref.rc}):\n{ref.stderr}")
    calls = ref.calls
    reference = job.outcome(sk.Store(url, storage_options=options))
    # Recovery after a complete run changes nothing, and clean-up finds nothing.
    ref_problems = [
        f"idempotence: {p}" for p in _check_recovered(server, job, url, options, reference)
    ]
    points: list[CrashPoint] = []
    chosen = [
        (when, k) for when, pick in (plan or {"after": every_call}).items() for k in pick(calls)
    ]
    for when, k in chosen:
        url, options = new_store()
        _prepare(job, url, options, template)
        crashed = server.run(scenario, "work", url, options, crash_at=k, when=when)
        call = calls[k - 1] if 0 < k <= len(calls) else "none"
        if crashed.rc != CRASH_CODE:
            problem = (
                f"the crashing child exited {crashed.rc} instead of {CRASH_CODE} "
                f"(it made {len(crashed.calls)} calls; the reference made {len(calls)})"
            )
            tail = crashed.stderr.strip()[-1500:]
            points.append(CrashPoint(scenario, backend, k, when, call, [problem, tail]))
            continue
        problems = _check_recovered(server, job, url, options, reference)
        points.append(CrashPoint(scenario, backend, k, when, call, problems))
    return Enumeration(scenario, backend, calls, points, ref_problems)


def sample_ks(calls: list[str], size: int, seed: int = 0) -> list[int]:
    """``size`` ks: calls on snapshots, hints, epochs, state files, checkpoints and
    deletions first (where the protocol is subtlest), then the last and the first
    call, then random others.

    Examples
    --------
    >>> sample_ks(["put_new a", "put_new b.snapshot.json", "put_new c"], 2)
    [2, 3]
    """
    n = len(calls)
    marks = ("snapshot", "checkpoints/", "rm ", "epochs/", "state/")
    special = [i + 1 for i, c in enumerate(calls) if any(m in c for m in marks)]
    rest = [k for k in range(2, n) if k not in special]
    rng = random.Random(seed)
    rng.shuffle(special)
    rng.shuffle(rest)
    chosen: list[int] = []
    for k in [*special, n, 1, *rest]:
        if len(chosen) < size and k not in chosen:
            chosen.append(k)
    return sorted(chosen)


@contextlib.contextmanager
def local_stores(base: str | None = None) -> Iterator[StoreFactory]:
    """Fresh local store folders under a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="streamkit-cp-", dir=base) as tmp:

        def new() -> tuple[str, dict[str, Any] | None]:
            return str(Path(tmp) / uuid.uuid4().hex), None

        yield new


# ---------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    """``serve`` (the fork server) or ``run SCENARIO PHASE URL [--crash-at K]``."""
    parser = argparse.ArgumentParser(prog="python -m tests.torture.crashpoint_job")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="fork server for the enumeration (JSON lines on stdin)")
    run = sub.add_parser("run", help="run one phase of a scenario in this process")
    run.add_argument("scenario", choices=sorted(SCENARIOS))
    run.add_argument("phase", choices=["setup", "work", "recover"])
    run.add_argument("url")
    run.add_argument("--options", default="null", help="storage options as JSON")
    run.add_argument("--crash-at", type=int, default=None)
    run.add_argument("--when", choices=WHENS, default="after")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve()
        return 0
    counter = CallCounter(args.crash_at, args.when)
    run_phase(args.scenario, args.phase, args.url, json.loads(args.options), counter)
    for i, call in enumerate(counter.calls, start=1):
        print(f"{i:4d} {call}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
