"""Overlapping runs, rewinds and resets, with the interleavings forced by hooks.

Each test pins down a race that a review proved could lose or duplicate output.
Two "processes" are two threads with their own Store objects on one memory store.
The last test uses real processes instead: 8 appenders and 3 overlapping runners
at once, on a local disk and on S3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import streamkit as sk
from streamkit.pipeline._checkpoints import CheckpointStore
from streamkit.pipeline._recovery import Recovery
from tests.pipeline.oracle import history_by_key, run_oracle, state_dict
from tests.storage import _append_worker as worker
from tests.storage._append_worker import DOOR

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def url() -> str:
    url = f"memory://overlap-{uuid.uuid4().hex}"
    events = pl.DataFrame({"k": [f"k{i}" for i in range(8)], "t": range(8), "ev": ["open"] * 8})
    sk.Store(url).log("ev", key="k", time="t").append(events)
    return url


def pipeline(url: str, batch_rows: int = 2, **kw: Any) -> sk.Pipeline:
    st = sk.Store(url)  # its own objects, like another process
    return (
        sk.Pipeline("p", st, batch_rows=batch_rows, **kw)
        .read(st.log("ev"))
        .transitions(DOOR, event="ev")
        .write(st.log("out", key="key", time="time"))
    )


def output(url: str) -> pl.DataFrame:
    return sk.Store(url).log("out").scan().collect()


def run_in_thread(name: str, fn: Callable[[], Any], results: dict[str, Any]) -> threading.Thread:
    def go() -> None:
        try:
            results[name] = fn()
        except Exception as exc:  # the test inspects what each run raised
            results[name] = exc

    thread = threading.Thread(target=go, name=name)
    thread.start()
    return thread


def _run_thread() -> str:
    """The thread that started the run (a run's commit worker is named after it)."""
    return threading.current_thread().name.split("/")[0]


def pause_first_lease_check_of(
    monkeypatch: pytest.MonkeyPatch,
    thread_name: str,
    paused: threading.Event,
    resume: threading.Event,
) -> None:
    """Stop ``thread_name`` right after its first lease check, until ``resume``."""
    original = CheckpointStore.check_lease
    calls = {"n": 0}

    def check(self: CheckpointStore, epoch: int) -> None:
        original(self, epoch)
        if _run_thread() == thread_name:
            calls["n"] += 1
            if calls["n"] == 1:
                paused.set()
                resume.wait(10)

    monkeypatch.setattr(CheckpointStore, "check_lease", check)


def interleave_append_after_reconcile(
    monkeypatch: pytest.MonkeyPatch, older: sk.Pipeline
) -> threading.Event:
    """Run ``older`` as thread "A" and a newer run as thread "B": A pauses at its
    first lease check until B has reconciled, then B waits until A appended its
    batch. Returns the event set when A pauses (start B after it)."""
    a_paused, b_reconciled, a_appended = threading.Event(), threading.Event(), threading.Event()
    pause_first_lease_check_of(monkeypatch, "A", a_paused, b_reconciled)
    real_append = older.sink.append  # type: ignore[union-attr]

    def append(*a: Any, **kw: Any) -> Any:
        try:
            return real_append(*a, **kw)
        finally:
            a_appended.set()

    older.sink.append = append  # type: ignore[union-attr,method-assign]
    real_reconcile = Recovery.reconcile

    def reconcile(self: Recovery, cp: Any) -> Any:
        pending = real_reconcile(self, cp)
        if _run_thread() == "B":
            b_reconciled.set()
            a_appended.wait(10)  # A appends its batch after B reconciled
        return pending

    monkeypatch.setattr(Recovery, "reconcile", reconcile)
    return a_paused


def test_a_newer_run_redoes_the_batch_an_overtaken_run_wrote_for_another_range(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    older, newer = pipeline(url, batch_rows=3), pipeline(url, batch_rows=8)
    a_paused = interleave_append_after_reconcile(monkeypatch, older)
    results: dict[str, Any] = {}
    a = run_in_thread("A", lambda: older.run(progress=False), results)
    a_paused.wait(10)
    b = run_in_thread("B", lambda: newer.run(progress=False, take_over=True), results)
    a.join()
    b.join()
    assert isinstance(results["A"], sk.LeaseError)
    assert isinstance(results["B"], sk.RunReport)
    out = output(url)
    assert sorted(out["key"].to_list()) == [f"k{i}" for i in range(8)]  # none lost, none twice
    assert pipeline(url).verify(replay=True).ok


def test_an_overtaken_append_after_a_newer_rewind_is_retracted_at_once(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline(url).run(progress=False, max_batches=2)
    a_paused, b_reconciled = threading.Event(), threading.Event()
    pause_first_lease_check_of(monkeypatch, "A", a_paused, b_reconciled)
    older, newer = pipeline(url), pipeline(url)
    results: dict[str, Any] = {}
    real_reconcile = Recovery.reconcile
    threads: dict[str, threading.Thread] = {}

    def reconcile(self: Recovery, cp: Any) -> Any:
        pending = real_reconcile(self, cp)
        if _run_thread() == "B":
            b_reconciled.set()
            threads["A"].join(10)  # A appends (and then fails its lease) meanwhile
        return pending

    monkeypatch.setattr(Recovery, "reconcile", reconcile)
    threads["A"] = run_in_thread("A", lambda: older.run(progress=False, max_batches=1), results)
    a_paused.wait(10)
    b = run_in_thread(
        "B", lambda: newer.run(progress=False, from_checkpoint=1, take_over=True), results
    )
    b.join()
    assert isinstance(results["A"], sk.LeaseError)
    out = output(url)
    assert out.height == 8
    assert out.group_by("key").len()["len"].max() == 1


def test_rewinding_to_an_abandoned_checkpoint_is_refused(url: str) -> None:
    pipe = pipeline(url)
    pipe.run(progress=False)  # checkpoints 1..4
    pipe.run(progress=False, from_checkpoint=2)  # rewind 5 abandons 3 and 4
    with pytest.raises(sk.CheckpointError, match="abandoned"):
        pipe.run(progress=False, from_checkpoint=4)
    assert output(url).height == 8
    assert pipe.verify(replay=True).ok


def test_rewinding_before_a_truncation_is_refused_before_anything_is_committed() -> None:
    url = f"memory://overlap-{uuid.uuid4().hex}"
    log = sk.Store(url).log("ev", key="k", time="t")
    for i in range(8):  # one segment per event, so truncation can drop the first two
        log.append(pl.DataFrame({"k": [f"k{i}"], "t": [i], "ev": ["open"]}))
    pipe = pipeline(url, batch_rows=1)
    pipe.run(progress=False)
    before = pipe.checkpoints()["id"].to_list()
    sk.Store(url).log("ev").truncate(before=sk.Position(2))
    with pytest.raises(sk.CheckpointError, match="truncated"):
        pipe.run(progress=False, from_checkpoint=1)
    assert pipe.checkpoints()["id"].to_list() == before
    assert pipe.run(progress=False).batches == 0  # still healthy


def test_deleted_checkpoints_can_be_reset_with_from_checkpoint_0(url: str) -> None:
    pipe = pipeline(url)
    pipe.run(progress=False)
    fs = sk.Store(url).filesystem
    fs.rm(fs.find("_pipelines/p/checkpoints"))
    with pytest.raises(sk.CheckpointError, match="from_checkpoint"):
        pipe.run(progress=False)
    pipe.run(progress=False, from_checkpoint=0)
    out = output(url)
    assert sorted(out["key"].to_list()) == [f"k{i}" for i in range(8)]


def test_a_prune_racing_a_rewind_cannot_delete_the_rewinds_state(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline(url, keep_checkpoints=3).run(progress=False, max_batches=3)
    real_prune, real_commit = CheckpointStore.prune, CheckpointStore.commit

    def commit(self: CheckpointStore, cp: Any) -> bool:
        if cp.kind == "rewind":  # the rewind read checkpoint 1; another run prunes it now
            real_prune(CheckpointStore(self.fs, self.pipeline), 1, {3})
        return real_commit(self, cp)

    monkeypatch.setattr(CheckpointStore, "commit", commit)
    pipeline(url, keep_checkpoints=3).run(progress=False, from_checkpoint=1)
    monkeypatch.setattr(CheckpointStore, "commit", real_commit)
    pipeline(url, keep_checkpoints=3).run(progress=False)
    assert output(url).height == 8
    assert pipeline(url).verify(replay=True).ok


# ----------------------------------------------------------------- real processes
def _check_checkpoint_chain(pipe: sk.Pipeline, end: int) -> None:
    """One line of checkpoints 1..n, each batch starting where its parent ended."""
    cps = pipe.checkpoints().sort("id")
    ids = cps["id"].to_list()
    assert ids == list(range(1, len(ids) + 1))
    position = 0
    for cid, parent, kind, start, stop, pos in cps.select(
        "id", "parent", "kind", "batch_start", "batch_end", "position"
    ).rows():
        assert (parent, kind) == (cid - 1, "batch"), f"checkpoint {cid}"
        assert (start, stop) == (position, pos), f"checkpoint {cid}"
        position = pos
    assert position == end


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend_name", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_eight_appenders_and_overlapping_runs_never_corrupt_and_converge(
    backend_name: str, make_store: Any, tmp_path: Path
) -> None:
    """8 processes append to one log while two processes loop Pipeline.run and
    ``streamkit run`` starts again and again: all over the same pipeline."""
    store: sk.Store = make_store(backend_name)
    options = json.dumps(store.filesystem._options)
    store.log("events", key="k", time="t", partitions=2)
    go, stop = tmp_path / "go", tmp_path / "stop"
    writers, count, rows = 8, 4, 30
    appenders = [
        worker.spawn(
            store.url, options, "events", f"w{i}", "0", str(count), str(rows), str(go), "--shared"
        )
        for i in range(writers)
    ]
    runners = [worker.spawn("--run", store.url, options, str(stop)) for _ in range(2)]
    for proc in [*appenders, *runners]:
        worker.wait_ready(proc)
    go.touch()
    env = {**os.environ, "STREAMKIT_TEST_URL": store.url, "STREAMKIT_TEST_OPTIONS": options}
    job = f"{worker.__file__}:pipeline"
    cli: list[subprocess.CompletedProcess[str]] = []
    while any(proc.poll() is None for proc in appenders) or not cli:
        cmd = [sys.executable, "-m", "streamkit", "run", job, "--no-progress"]
        cli.append(
            subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
        )
    for proc in appenders:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    stop.touch()
    errors = [f"exit {done.returncode}: {done.stderr}" for done in cli if done.returncode]
    for proc in runners:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        errors += json.loads(out)["errors"]
    # Overtaken runs stop with LeaseError (exit code 3); nothing else fails.
    assert [e for e in errors if not e.startswith("exit 3: ")] == []

    log = store.log("events")
    events = worker.check_appends(log, {f"w{i}": count for i in range(writers)}, rows)
    pipe = worker.pipeline(store)
    assert pipe.run(progress=False).caught_up  # a final plain run catches up
    _check_checkpoint_chain(pipe, log.end().offset)
    # Each batch's output is in the history log once: one version per batch.
    history_segments = store.log("history").segments()
    per_batch = history_segments.group_by("writer_seq").agg(pl.col("version").n_unique())
    assert (per_batch["version"] == 1).all()
    assert set(per_batch["writer_seq"]) <= set(pipe.checkpoints()["id"])
    # Identical to one uninterrupted run over the final log.
    want = run_oracle(events.rename({"o": "offset"}), DOOR, key="k", time="t", event="ev")
    assert history_by_key(store.log("history").scan().collect()) == want["history"]
    assert state_dict(pipe.state()) == want["state"]
    quarantine = pipe.quarantine().sort("offset").select("offset", "reason").rows()
    assert sorted(quarantine) == want["quarantine"]
    assert pipe.verify(replay=True).ok


def _pause_after_reading_the_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
    thread_name: str,
    paused: threading.Event,
    resume: threading.Event,
) -> None:
    """Stop ``thread_name``'s run right after it read its latest checkpoint."""
    real_check_source = Recovery.check_source

    def check_source(self: Recovery, cp: Any) -> None:
        real_check_source(self, cp)
        if _run_thread() == thread_name:
            paused.set()
            resume.wait(10)

    monkeypatch.setattr(Recovery, "check_source", check_source)


@pytest.mark.parametrize("keep", [20, 1])
def test_a_run_overtaken_before_it_reconciles_stops_with_lease_error(
    url: str, monkeypatch: pytest.MonkeyPatch, keep: int
) -> None:
    # B reads checkpoint 1; a newer run C commits the remaining batches (and,
    # keeping one checkpoint, prunes checkpoint 1's state) before B goes on. B
    # was overtaken: a LeaseError (exit code 3), not a missing checkpoint or state.
    pipeline(url, keep_checkpoints=keep).run(progress=False, max_batches=1)
    b_paused, c_done = threading.Event(), threading.Event()
    _pause_after_reading_the_checkpoint(monkeypatch, "B", b_paused, c_done)
    results: dict[str, Any] = {}
    b = run_in_thread(
        "B", lambda: pipeline(url, keep_checkpoints=keep).run(progress=False), results
    )
    b_paused.wait(10)
    c = run_in_thread(
        "C",
        lambda: pipeline(url, keep_checkpoints=keep).run(progress=False, take_over=True),
        results,
    )
    c.join()
    c_done.set()
    b.join()
    assert isinstance(results["C"], sk.RunReport)
    assert sorted(output(url)["key"].to_list()) == [f"k{i}" for i in range(8)]
    assert pipeline(url).verify(replay=True).ok
    assert isinstance(results["B"], sk.LeaseError), results["B"]


def test_a_rewind_overtaken_before_it_reads_its_target_stops_with_lease_error(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # B asks for run(from_checkpoint=1); before it reads checkpoint 1, a newer run
    # C takes over, finishes and (keeping one checkpoint) prunes checkpoint 1. B
    # was overtaken: a LeaseError (exit code 3), not "no checkpoint 1".
    pipeline(url, keep_checkpoints=20).run(progress=False, max_batches=2)
    b_paused, c_done = threading.Event(), threading.Event()
    real_latest_readable = CheckpointStore.latest_readable

    def latest_readable(self: CheckpointStore) -> Any:
        found = real_latest_readable(self)
        if _run_thread() == "B":
            b_paused.set()
            c_done.wait(10)
        return found

    monkeypatch.setattr(CheckpointStore, "latest_readable", latest_readable)
    results: dict[str, Any] = {}
    b = run_in_thread("B", lambda: pipeline(url).run(progress=False, from_checkpoint=1), results)
    b_paused.wait(10)
    c = run_in_thread(
        "C",
        lambda: pipeline(url, keep_checkpoints=1).run(progress=False, take_over=True),
        results,
    )
    c.join()
    c_done.set()
    b.join()
    assert isinstance(results["C"], sk.RunReport)
    assert 1 not in CheckpointStore(sk.Store(url).filesystem.child("_pipelines/p"), "p").ids()
    assert isinstance(results["B"], sk.LeaseError), results["B"]
    assert pipeline(url).verify(replay=True).ok
