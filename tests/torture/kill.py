"""SIGKILL trials: real processes killed at random moments, recovered, compared.

Two kinds of trial, on a local disk and on S3:

``append``
    Two appender processes (``tests/storage/_append_worker.py``: writer id and
    seq, a 2-partition log) append at once; a random non-empty subset of them is
    SIGKILLed at a random moment after both are ready. Each killed writer is run
    again from seq 0 (its earlier appends must be recognised as duplicates).
``pipeline``
    ``streamkit run tests/pipeline/crash_job.py`` is SIGKILLed at a random moment,
    then run again until it exits 0.

In a quarter of the trials the recovery run is SIGKILLed too (a crash during
recovery) before the final recovery. Every trial is compared with an
uninterrupted run of the same job on the same backend: rows lost (in the
uninterrupted result, missing after recovery), rows duplicated, stores that
cannot be read (a scan, ``verify(replay=True)`` or a vacuum fails), and any
other difference (state, quarantine, checkpoints, transactions, per-key order).

Kill moments are drawn uniformly over the uninterrupted run's duration (from
"ready" for appenders, from process start for ``streamkit run``) and classified
afterwards by what the store held when the process died: nothing committed yet,
part of the work committed, all of it committed (the process was finishing), or
the process had already exited (no real kill; counted, not a failure).

Examples
--------
>>> trials = [Trial("local", "append", 0)]
>>> print(summary_table(trials).splitlines()[0].split()[:3])
['backend', 'kind', 'trials']
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

import streamkit as sk
from tests.torture.crashpoint_job import compare, log_debris, pipeline_outcome, row_diff

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "storage" / "_append_worker.py"
JOB = REPO / "tests" / "pipeline" / "crash_job.py"
KINDS = ("append", "pipeline")
#: Kill moments, classified by what the store held when the process died.
MOMENTS = ("before_commit", "mid_run", "after_all", "exited")

_WRITERS = ("w0", "w1")
_APPENDS, _ROWS = 24, 20
_PIPE_ORDERS, _PIPE_BATCH = 120, 20
_RECOVERY_KILL = 0.25  # share of trials whose recovery is killed too
_TIMEOUT = 600.0

Options = dict[str, Any] | None


@dataclasses.dataclass
class Trial:
    """One SIGKILL trial and what recovery left."""

    backend: str
    kind: str
    index: int
    moments: list[str] = dataclasses.field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    unreadable: int = 0
    mismatches: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def kills(self) -> int:
        """SIGKILLs that hit a running process."""
        return sum(m != "exited" for m in self.moments)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unreadable or self.mismatches)

    def describe(self) -> str:
        head = (
            f"{self.backend}/{self.kind} trial {self.index}: kills at {self.moments}, "
            f"lost {self.lost}, duplicated {self.duplicated}, unreadable {self.unreadable}"
        )
        return head + "".join(f"\n    {m}" for m in self.mismatches[:10])


# ---------------------------------------------------------------------------- processes
class _Proc:
    """A child process whose output is drained by threads (no blocking reads)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump_out, daemon=True),
            threading.Thread(target=self._pump_err, daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def _pump_out(self) -> None:
        assert self.popen.stdout is not None
        with self.popen.stdout:
            for line in self.popen.stdout:
                self.lines.put(line.strip())
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.popen.stderr is not None
        with self.popen.stderr:
            self.err.extend(self.popen.stderr)

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_line(self, wanted: str, timeout: float = _TIMEOUT) -> bool:
        """Wait until the process prints ``wanted``; False if it ended first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                self.lines.put(None)
                return False
            if line == wanted:
                return True

    def kill(self) -> bool:
        """SIGKILL the process; whether it was still running."""
        alive = self.running
        if alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=60)
        self._join()
        return alive and self.popen.returncode == -signal.SIGKILL

    def finish(self, what: str) -> None:
        """Wait for a clean exit; AssertionError (with its stderr) otherwise."""
        try:
            self.popen.wait(timeout=_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{what} did not finish within {_TIMEOUT:.0f}s") from None
        self._join()
        if self.popen.returncode != 0:
            tail = "".join(self.err).strip()[-1500:]
            raise AssertionError(f"{what} exited {self.popen.returncode}: {tail}")

    def _join(self) -> None:
        for pump in self._pumps:
            pump.join(timeout=60)


@dataclasses.dataclass(frozen=True)
class _Timing:
    """When an uninterrupted run commits: its first commit after ``first`` seconds
    (from "ready", or from the start of ``streamkit run``), then one every ``step``."""

    first: float
    step: float


def _moment(alive: bool, committed: int, total: int) -> str:
    if not alive:
        return "exited"
    if committed == 0:
        return "before_commit"
    return "after_all" if committed >= total else "mid_run"


# ---------------------------------------------------------------------------- appends
def _spawn_writer(url: str, options: Options, writer: str, go: Path | None = None) -> _Proc:
    """An appender of seqs 0.. as ``writer``, ready (imports done, log open); if
    ``go`` is given it starts appending when that file exists."""
    args = [str(WORKER), url, json.dumps(options), "events", writer, "0", str(_APPENDS)]
    proc = _Proc([sys.executable, *args, str(_ROWS), *([str(go)] if go else [])])
    if not proc.wait_line("ready"):
        proc.kill()
        raise AssertionError(f"appender {writer} failed to start: {''.join(proc.err)[-1500:]}")
    return proc


def _append_outcome(url: str, options: Options) -> dict[str, Any]:
    log = sk.Store(url, storage_options=options).log("events")
    frame = log.scan(with_offset="o").collect().sort("o")
    out: dict[str, Any] = {"events.rows": frame.drop("o").sort(["w", "seq", "r"]).rows()}
    for writer in _WRITERS:
        # one writer's appends keep their order; within a key, (time, append order)
        mine = frame.filter(pl.col("w") == writer)
        seqs = mine["seq"].to_list()
        out[f"{writer}.seq_order"] = seqs == sorted(seqs)
        per_key = mine.group_by("k", maintain_order=True).agg("seq", "t")
        out[f"{writer}.per_key_order"] = all(
            list(zip(s, t, strict=True)) == sorted(zip(s, t, strict=True))
            for s, t in zip(per_key["seq"].to_list(), per_key["t"].to_list(), strict=True)
        )
        txn = log.transaction(writer)
        out[f"{writer}.txn"] = None if txn is None else (txn.seq, txn.meta)
    out["events.offsets_contiguous"] = frame["o"].to_list() == list(range(frame.height))
    return out


def _committed(url: str, options: Options, writer: str) -> int:
    """Appends ``writer`` committed so far."""
    txn = sk.Store(url, storage_options=options).log("events").transaction(writer)
    return 0 if txn is None else txn.seq + 1


def _together(url: str, options: Options) -> dict[str, _Proc]:
    """All writers, started at once (each waits for a go file once ready)."""
    go = Path(tempfile.gettempdir()) / f"streamkit-go-{uuid.uuid4().hex}"
    try:
        procs = {w: _spawn_writer(url, options, w, go) for w in _WRITERS}
        go.touch()
    finally:
        # the writers poll for it every 10 ms; they have seen it once it is gone
        time.sleep(0.05)
        go.unlink(missing_ok=True)
    return procs


def _append_reference(url: str, options: Options) -> tuple[dict[str, Any], _Timing]:
    started = time.monotonic()
    procs = list(_together(url, options).values())
    if not procs[0].wait_line("committed 0"):
        procs[0].finish("uninterrupted appender")
    first = time.monotonic() - started
    for proc in procs:
        proc.finish("uninterrupted appender")
    step = (time.monotonic() - started - first) / max(1, _APPENDS - 1)
    return _append_outcome(url, options), _Timing(first, step)


def _append_trial(
    trial: Trial,
    url: str,
    options: Options,
    reference: dict[str, Any],
    timing: _Timing,
    rng: random.Random,
) -> None:
    procs = _together(url, options)
    victims = [w for w in _WRITERS if rng.random() < 0.5] or [rng.choice(_WRITERS)]
    # after a random number of the first victim's appends, within the next one
    after = rng.randrange(-1, _APPENDS - 1)
    if after < 0:
        time.sleep(rng.uniform(0, timing.first))
    elif procs[victims[0]].wait_line(f"committed {after}"):
        time.sleep(rng.uniform(0, timing.step))
    alive = {w: procs[w].kill() for w in victims}
    for w, proc in procs.items():
        if w not in victims:
            proc.finish(f"appender {w}")
    trial.moments += [_moment(alive[w], _committed(url, options, w), _APPENDS) for w in victims]
    for writer in victims:
        if rng.random() < _RECOVERY_KILL:  # a crash during recovery
            proc = _spawn_writer(url, options, writer)
            time.sleep(rng.uniform(0, timing.first + 3 * timing.step))
            hit = proc.kill()
            trial.moments.append(_moment(hit, _committed(url, options, writer), _APPENDS))
        _spawn_writer(url, options, writer).finish(f"recovering appender {writer}")
    _judge(trial, reference, lambda: _append_outcome(url, options), ["events.rows"])
    _vacuum_check(trial, url, options, ["events"], lambda: _append_outcome(url, options), reference)


# ---------------------------------------------------------------------------- pipelines
def _env(url: str, options: Options) -> dict[str, str]:
    env = dict(os.environ)
    env["STREAMKIT_TEST_URL"] = url
    env["STREAMKIT_TEST_OPTIONS"] = json.dumps(options)
    env["STREAMKIT_TEST_BATCH"] = str(_PIPE_BATCH)
    return env


def _spawn_run(url: str, options: Options) -> _Proc:
    # --take-over: a killed run never released its lease; the next one must not wait
    args = [sys.executable, "-m", "streamkit", "run", str(JOB), "--no-progress", "--take-over"]
    return _Proc(args, env=_env(url, options))


def load_job(url: str, options: Options) -> sk.Pipeline:
    """The pipeline object of crash_job.py for a store (the module reads its store
    from the environment when it is loaded)."""
    saved = {
        k: os.environ.get(k)
        for k in ("STREAMKIT_TEST_URL", "STREAMKIT_TEST_OPTIONS", "STREAMKIT_TEST_BATCH")
    }
    os.environ.update(_env(url, options))
    try:
        spec = importlib.util.spec_from_file_location(f"crash_job_{uuid.uuid4().hex}", JOB)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    pipe: sk.Pipeline = module.pipeline
    return pipe


def _seed_orders(url: str, options: Options, orders: pl.DataFrame) -> None:
    log = sk.Store(url, storage_options=options).log("orders", key="order_id", time="ts")
    step = orders.height // 3 + 1
    for i in range(3):
        log.append(orders.slice(i * step, step))


def _pipe_outcome(url: str, options: Options) -> dict[str, Any]:
    out = pipeline_outcome(load_job(url, options))
    source = sk.Store(url, storage_options=options).log("orders")
    out["orders.rows"] = source.scan().collect().height
    return out


def _checkpoints_done(url: str, options: Options) -> int:
    """The newest checkpoint's id (old ones are pruned: their count says less)."""
    fs = sk.Store(url, storage_options=options).filesystem
    names = fs.ls("_pipelines/crashy/checkpoints")
    return max((int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()), default=0)


def _wait_checkpoints(proc: _Proc, url: str, options: Options, count: int) -> bool:
    """Poll the store until checkpoint ``count`` exists; False if the run ended first."""
    pause = 0.005 if options is None else 0.02
    while proc.running:
        if _checkpoints_done(url, options) >= count:
            return True
        time.sleep(pause)
    return False


def _pipe_reference(
    url: str, options: Options, orders: pl.DataFrame
) -> tuple[dict[str, Any], _Timing]:
    _seed_orders(url, options, orders)
    started = time.monotonic()
    proc = _spawn_run(url, options)
    _wait_checkpoints(proc, url, options, 1)
    first = time.monotonic() - started
    proc.finish("uninterrupted streamkit run")
    outcome = _pipe_outcome(url, options)
    batches = max(row[0] for row in outcome["checkpoints"])
    step = (time.monotonic() - started - first) / max(1, batches - 1)
    return outcome, _Timing(first, step)


def _pipe_trial(
    trial: Trial,
    url: str,
    options: Options,
    reference: dict[str, Any],
    timing: _Timing,
    orders: pl.DataFrame,
    rng: random.Random,
) -> None:
    _seed_orders(url, options, orders)
    total = max(row[0] for row in reference["checkpoints"])  # ids: 1 .. batches
    proc = _spawn_run(url, options)
    # after a random number of checkpoints, within the next batch
    after = rng.randrange(0, total)
    if after == 0:
        time.sleep(rng.uniform(0, timing.first))
    elif _wait_checkpoints(proc, url, options, after):
        time.sleep(rng.uniform(0, timing.step))
    hit = proc.kill()
    trial.moments.append(_moment(hit, _checkpoints_done(url, options), total))
    if rng.random() < _RECOVERY_KILL:  # a crash during recovery
        proc = _spawn_run(url, options)
        time.sleep(rng.uniform(0, timing.first + 3 * timing.step))
        hit = proc.kill()
        trial.moments.append(_moment(hit, _checkpoints_done(url, options), total))
    _spawn_run(url, options).finish("recovering streamkit run")
    _judge(trial, reference, lambda: _pipe_outcome(url, options), ["history.rows"])
    logs = ["history", "_pipelines/crashy/quarantine"]
    _vacuum_check(trial, url, options, logs, lambda: _pipe_outcome(url, options), reference)


# ---------------------------------------------------------------------------- judging
def _judge(
    trial: Trial,
    reference: dict[str, Any],
    outcome: Callable[[], dict[str, Any]],
    row_parts: Sequence[str],
) -> None:
    try:
        got = outcome()
    except Exception as exc:
        trial.unreadable += 1
        trial.mismatches.append(f"unreadable after recovery: {type(exc).__name__}: {exc}")
        return
    for part in row_parts:
        lost, dup = row_diff(reference[part], got[part])
        trial.lost += lost
        trial.duplicated += dup
    if "quarantine" in reference:
        lost, dup = row_diff(reference["quarantine"], got["quarantine"])
        trial.lost += lost
        trial.duplicated += dup
    if got.get("verify", "ok") != "ok":
        trial.unreadable += 1
    trial.mismatches += compare(reference, got)


def _vacuum_check(
    trial: Trial,
    url: str,
    options: Options,
    logs: Sequence[str],
    outcome: Callable[[], dict[str, Any]],
    reference: dict[str, Any],
) -> None:
    """Vacuum removes the crashes' leftovers and nothing a reader needs."""
    if not trial.ok:
        return
    store = sk.Store(url, storage_options=options)
    try:
        for name in logs:
            log = store.log_at(name) if name.startswith("_") else store.log(name)
            log.vacuum(retain=dt.timedelta(0))
            left = log_debris(log)
            if left:
                trial.mismatches.append(f"after vacuum, {name} keeps {len(left)} stray files")
        got = outcome()
    except Exception as exc:
        trial.unreadable += 1
        trial.mismatches.append(f"unreadable after vacuum: {type(exc).__name__}: {exc}")
        return
    trial.mismatches += [f"after vacuum: {p}" for p in compare(reference, got)]


# ---------------------------------------------------------------------------- driver
@contextlib.contextmanager
def _locations(
    backend: str, s3: dict[str, Any] | None, base: str
) -> Iterator[Callable[[], tuple[str, Options]]]:
    if backend == "local":
        yield lambda: (str(Path(base) / uuid.uuid4().hex), None)
        return
    if backend != "s3":
        raise ValueError(f"unknown backend {backend!r}; expected local or s3")
    if s3 is None:
        raise ValueError("the s3 backend needs a running SeaweedFS (pass s3=...)")
    options = {
        "key": s3["key"],
        "secret": s3["secret"],
        "client_kwargs": {"endpoint_url": s3["endpoint_url"], "region_name": "us-east-1"},
    }
    yield lambda: (f"s3://{s3['bucket']}/kill-{uuid.uuid4().hex}", options)


def plan(trials: int, backends: Sequence[str]) -> list[tuple[str, str, int]]:
    """``(backend, kind, index)`` for ``trials`` trials spread evenly, round robin.

    Examples
    --------
    >>> [f"{b}/{k}#{i}" for b, k, i in plan(5, ["local", "s3"])]
    ['local/append#0', 'local/pipeline#0', 's3/append#0', 's3/pipeline#0', 'local/append#1']
    """
    cells = [(b, k) for b in backends for k in KINDS]
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    out = []
    for i in range(trials):
        cell = cells[i % len(cells)]
        out.append((*cell, counts[cell]))
        counts[cell] += 1
    return out


def run_kill_trials(
    trials: int,
    backends: Sequence[str],
    *,
    seed: int,
    s3: dict[str, Any] | None = None,
    workdir: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Trial]:
    """Run ``trials`` SIGKILL trials over ``backends`` and both kinds; never raises
    for a failed trial (it is recorded), only for a broken harness or reference."""
    rng = random.Random(seed)
    orders = _orders_for(seed)
    out: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="streamkit-kill-", dir=workdir) as base:
        references: dict[tuple[str, str], tuple[dict[str, Any], _Timing]] = {}
        with contextlib.ExitStack() as stack:
            where = {b: stack.enter_context(_locations(b, s3, base)) for b in backends}
            for backend, kind, index in plan(trials, backends):
                url, options = where[backend]()
                if (backend, kind) not in references:
                    ref_url, _ = where[backend]()
                    references[backend, kind] = (
                        _append_reference(ref_url, options)
                        if kind == "append"
                        else _pipe_reference(ref_url, options, orders)
                    )
                reference, timing = references[backend, kind]
                trial = Trial(backend, kind, index)
                started = time.monotonic()
                try:
                    if kind == "append":
                        _append_trial(trial, url, options, reference, timing, rng)
                    else:
                        _pipe_trial(trial, url, options, reference, timing, orders, rng)
                except AssertionError as exc:  # a recovery run failed: a finding
                    trial.mismatches.append(str(exc))
                trial.seconds = time.monotonic() - started
                out.append(trial)
                if progress is not None:
                    status = "ok" if trial.ok else "FAILED"
                    progress(
                        f"[{len(out)}/{trials}] {backend}/{kind} #{index}: {status} "
                        f"kills={trial.moments} {trial.seconds:.1f}s"
                    )
                    if not trial.ok:
                        progress(trial.describe())
    return out


def _orders_for(seed: int) -> pl.DataFrame:
    from streamkit.datasets import generate_orders

    return generate_orders(_PIPE_ORDERS, span="4h", seed=seed)


def summary_table(trials: Sequence[Trial]) -> str:
    """One line per backend and kind, then the total: trials, kills by moment,
    lost, duplicated, unreadable, mismatched trials."""
    head = (
        "backend",
        "kind",
        "trials",
        "kills",
        *MOMENTS,
        "lost",
        "duplicated",
        "unreadable",
        "mismatches",
    )
    groups: dict[tuple[str, str], list[Trial]] = collections.defaultdict(list)
    for t in trials:
        groups[t.backend, t.kind].append(t)
    rows = []
    for (backend, kind), group in sorted(groups.items()):
        rows.append(_row(backend, kind, group))
    rows.append(_row("total", "", list(trials)))
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            str(c).rjust(w) if i >= 2 else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *rows]
    )


def _row(backend: str, kind: str, group: list[Trial]) -> tuple[Any, ...]:
    moments = collections.Counter(m for t in group for m in t.moments)
    return (
        backend,
        kind,
        len(group),
        sum(t.kills for t in group),
        *(moments[m] for m in MOMENTS),
        sum(t.lost for t in group),
        sum(t.duplicated for t in group),
        sum(t.unreadable for t in group),
        sum(bool(t.mismatches) for t in group),
    )
