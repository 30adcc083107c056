"""Overlapping runs: a new run steps aside while a live run works, takes over at once
from a dead or finished one, and ``take_over`` / ``--take-over`` fences a live one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import streamkit as sk
from streamkit.pipeline._checkpoints import CheckpointStore
from streamkit.pipeline._recovery import Recovery
from streamkit.pipeline._runner import Runner
from tests.storage._append_worker import DOOR

pytestmark = pytest.mark.timeout(120)

EVENTS = pl.DataFrame(
    {
        "k": [f"k{i % 40}" for i in range(400)],
        "t": range(400),
        "ev": ["open" if (i // 40) % 2 == 0 else "close" for i in range(400)],
    }
)

# A pipeline file for ``streamkit run``: 20 batches, each slowed by
# STREAMKIT_LEASE_SLOW seconds so a test can act while the run is in the middle
# of its work.
JOB = textwrap.dedent(
    """
    import os
    import time

    import polars as pl

    import streamkit as sk

    def slow(s: pl.Series) -> pl.Series:
        time.sleep(float(os.environ["STREAMKIT_LEASE_SLOW"]))
        return s

    store = sk.Store(os.environ["STREAMKIT_LEASE_LAKE"])
    DOOR = sk.Machine(
        "door", states=["closed", "opened"], initial="closed", final=["closed"],
        transitions=[("closed", "open", "opened"), ("opened", "close", "closed")],
    )
    pipeline = (
        sk.Pipeline(
            "p", store, batch_rows=20,
            lease_timeout=float(os.environ["STREAMKIT_LEASE_TIMEOUT"]),
        )
        .read(store.log("ev", key="k", time="t"))
        .with_columns(ev=pl.col("ev").map_batches(slow))
        .transitions(DOOR, event="ev")
        .write(store.log("out", key="key", time="time"))
    )
    """
)


def pipeline(url: str, lease_timeout: float = 30.0) -> sk.Pipeline:
    """JOB's pipeline without the slowdown (its own objects, like another process)."""
    st = sk.Store(url)
    return (
        sk.Pipeline("p", st, batch_rows=20, lease_timeout=lease_timeout)
        .read(st.log("ev"))
        .with_columns(ev=pl.col("ev"))
        .transitions(DOOR, event="ev")
        .write(st.log("out", key="key", time="time"))
    )


def seeded(url: str) -> str:
    sk.Store(url).log("ev", key="k", time="t").append(EVENTS)
    return url


def outcome(url: str) -> tuple[Any, ...]:
    store = sk.Store(url)
    out = store.log("out").scan().collect().drop("offset", strict=False)
    pipe = pipeline(url)
    state = pipe.state().sort("key").select("key", "state").rows()
    return sorted(out.rows()), state, pipe.quarantine().height


@pytest.fixture(scope="module")
def reference() -> tuple[Any, ...]:
    url = seeded(f"memory://lease-ref-{uuid.uuid4().hex}")
    pipeline(url).run(progress=False)
    return outcome(url)


def ckpts(url: str) -> CheckpointStore:
    return CheckpointStore(sk.Store(url).filesystem.child("_pipelines/p"), "p")


def test_a_finished_run_releases_the_lease_so_the_next_starts_at_once(
    reference: tuple[Any, ...],
) -> None:
    url = seeded(f"memory://lease-{uuid.uuid4().hex}")
    pipeline(url).run(progress=False, max_batches=3)
    store = ckpts(url)
    assert store.live_holder(store.latest_epoch()) is None  # released, not merely stale
    assert pipeline(url).run(progress=False).caught_up  # lease_timeout 30 s: no wait
    assert outcome(url) == reference


def test_a_run_that_fails_releases_the_lease_too(monkeypatch: pytest.MonkeyPatch) -> None:
    url = seeded(f"memory://lease-{uuid.uuid4().hex}")

    def fail(*_a: Any, **_kw: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Runner, "prepare", fail)
    with pytest.raises(RuntimeError, match="boom"):
        pipeline(url).run(progress=False)
    store = ckpts(url)
    assert store.latest_epoch() == 1
    assert store.live_holder(1) is None
    monkeypatch.undo()
    assert pipeline(url).run(progress=False).caught_up


def test_a_failed_run_that_could_not_release_is_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # e.g. a full disk: the run fails and its release is refused too. Its
    # heartbeat is fresh, but its process (this one) is known not to run it.
    url = seeded(f"memory://lease-{uuid.uuid4().hex}")

    def fail(*_a: Any, **_kw: Any) -> None:
        raise RuntimeError("boom")

    def refuse(*_a: Any, **kw: Any) -> None:
        if kw.get("released"):
            raise sk.StorageError("no space left on device")

    monkeypatch.setattr(Runner, "prepare", fail)
    monkeypatch.setattr(CheckpointStore, "beat", refuse)
    monkeypatch.setattr("time.sleep", lambda _s: None)
    with pytest.raises(RuntimeError, match="boom"):
        pipeline(url).run(progress=False)
    monkeypatch.undo()
    store = ckpts(url)
    assert store.live_holder(1) is None
    assert pipeline(url).run(progress=False).caught_up


def test_a_holder_whose_process_is_gone_is_not_waited_for(tmp_path: Path) -> None:
    url = seeded(str(tmp_path / "lake"))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    store = ckpts(url)
    epoch = store.claim_epoch({"pid": int(gone.stdout), "host": socket.gethostname()})
    store.beat(epoch, 30.0)  # fresh, never released: a SIGKILLed run on this host
    assert store.live_holder(epoch) is None
    other_host = store.claim_epoch({"pid": int(gone.stdout), "host": "elsewhere"}, take_over=True)
    store.beat(other_host, 30.0)
    assert store.live_holder(other_host) is not None  # another host: cannot tell, wait


def test_a_new_run_steps_aside_while_a_live_run_holds_the_lease(
    reference: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = seeded(f"memory://lease-{uuid.uuid4().hex}")
    paused, resume = threading.Event(), threading.Event()
    real_check_source = Recovery.check_source

    def check_source(self: Recovery, cp: Any) -> None:
        real_check_source(self, cp)
        if threading.current_thread().name == "holder":
            paused.set()
            resume.wait(30)

    monkeypatch.setattr(Recovery, "check_source", check_source)
    results: dict[str, Any] = {}

    def hold() -> None:
        try:
            results["holder"] = pipeline(url, lease_timeout=1.0).run(progress=False)
        except Exception as exc:  # the test inspects it
            results["holder"] = exc

    holder = threading.Thread(target=hold, name="holder")
    holder.start()
    try:
        assert paused.wait(30)
        store = ckpts(url)
        epoch = store.latest_epoch()
        # Past its 1 s lease timeout only the heartbeat thread keeps the lease alive.
        time.sleep(1.5)
        assert store.live_holder(epoch) is not None
        with pytest.raises(sk.LeaseError, match="stepped aside") as info:
            pipeline(url).run(progress=False)
        assert f"pid {os.getpid()}" in str(info.value)
        assert store.latest_epoch() == epoch  # claimed nothing
        assert store.ids() == []  # committed nothing
    finally:
        resume.set()
        holder.join()
    assert isinstance(results["holder"], sk.RunReport)  # not fenced by the step-aside
    assert outcome(url) == reference


def _spawn(
    job: Path, lake: Path, lease_timeout: float, *extra: str, slow: float = 0.1
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "STREAMKIT_LEASE_LAKE": str(lake),
        "STREAMKIT_LEASE_TIMEOUT": str(lease_timeout),
        "STREAMKIT_LEASE_SLOW": str(slow),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "streamkit", "run", str(job), "--no-progress", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_checkpoint(lake: Path, proc: subprocess.Popen[str]) -> None:
    """Until the run in ``proc`` committed its first batch (and is still running)."""
    store = ckpts(str(lake))
    deadline = time.monotonic() + 60
    while not store.ids():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run committed nothing in 60 s"
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before the test could act"


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Path, Path]:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    lake = tmp_path / "lake"
    seeded(str(lake))
    return job, lake


def test_a_killed_holder_is_taken_over_once_its_heartbeat_is_stale(
    lake: tuple[Path, Path], reference: tuple[Any, ...]
) -> None:
    job, folder = lake
    proc = _spawn(job, folder, 1.0)
    _wait_for_checkpoint(folder, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    store = ckpts(str(folder))
    killed = store.latest_epoch()
    committed = store.ids()
    # Right after the kill the heartbeat may still be fresh: the new run steps
    # aside without claiming; once it is 1 s old, the new run takes over at once.
    deadline = time.monotonic() + 30
    while True:
        try:
            report = pipeline(str(folder), lease_timeout=1.0).run(progress=False)
            break
        except sk.LeaseError as exc:
            assert "stepped aside" in str(exc)
            assert store.latest_epoch() == killed
            assert time.monotonic() < deadline, "a killed run's lease never expired"
            time.sleep(0.2)
    assert store.latest_epoch() == killed + 1
    assert report.caught_up and report.batches == 20 - len(committed)
    assert outcome(str(folder)) == reference


def test_take_over_fences_a_live_holder_at_its_next_commit(
    lake: tuple[Path, Path], reference: tuple[Any, ...]
) -> None:
    job, folder = lake
    holder = _spawn(job, folder, 30.0, slow=0.5)  # 10 s of work unless taken over
    _wait_for_checkpoint(folder, holder)
    aside = _spawn(job, folder, 30.0, slow=0.0)  # a cron run while the holder works
    _out, err = aside.communicate(timeout=60)
    assert aside.returncode == 3, err
    assert "stepped aside" in err and "--take-over" in err
    taker = _spawn(job, folder, 30.0, "--take-over", slow=0.0)
    out, err = taker.communicate(timeout=60)
    assert taker.returncode == 0, err
    assert "caught up       yes" in out
    _out, err = holder.communicate(timeout=60)
    assert holder.returncode == 3, err
    assert "overtaken" in err
    assert outcome(str(folder)) == reference
    assert pipeline(str(folder)).verify(replay=True).ok
