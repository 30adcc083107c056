"""Fault injection: the k-th write of a run fails, for every k; a rerun converges."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import fsspec
import polars as pl
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine
from streamkit.pipeline import _checkpoints, _keyed
from streamkit.pipeline._checkpoints import Checkpoint, CheckpointStore
from streamkit.pipeline._keyed import GroupedState
from streamkit.storage import _fs
from tests.pipeline.oracle import TIGHT_POLICY, history_by_key, state_dict


class InjectedFault(OSError):
    pass


class FaultyMemoryFileSystem(MemoryFileSystem):
    """A memory file system whose writes (and, if asked, deletes) fail once a
    budget is used up."""

    protocol = "faultymem"
    store: ClassVar[dict[str, Any]] = {}  # type: ignore[misc]
    pseudo_dirs: ClassVar[list[str]] = [""]  # type: ignore[misc]
    budget: ClassVar[int | None] = None
    writes: ClassVar[int] = 0
    paths: ClassVar[list[str]] = []
    #: Whether a delete is a write too (it counts, and fails once the budget is used up).
    deletes: ClassVar[bool] = False

    _lock: ClassVar[threading.Lock] = threading.Lock()  # state files are written at once

    @classmethod
    def _tick(cls, path: str) -> None:
        with cls._lock:
            cls.writes += 1
            cls.paths.append(path)
            if cls.budget is not None and cls.writes > cls.budget:
                raise InjectedFault(f"injected failure at write {cls.writes}")

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wxa"):
            self._tick(path)
        return super()._open(path, mode, *args, **kwargs)

    def pipe_file(self, path: str, value: bytes, *args: Any, **kwargs: Any) -> None:
        self._tick(path)
        super().pipe_file(path, value, *args, **kwargs)

    def rm_file(self, path: str) -> None:
        if self.deletes:
            self._tick(f"rm {path}")
        super().rm_file(path)


fsspec.register_implementation("faultymem", FaultyMemoryFileSystem, clobber=True)


class _NoSleep:
    """``time`` without its ``sleep``: retries back off in no time (every fault
    is injected in memory, so waiting only costs the test its wall time)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        del seconds


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Create retries (storage) and lease-release retries (checkpoints) do not sleep."""
    monkeypatch.setattr(_fs, "time", _NoSleep())
    monkeypatch.setattr(_checkpoints, "time", _NoSleep())


MACHINE = order_machine()


def build(
    store: sk.Store, *, batch_rows: int = 45, lateness: str | None = None, **options: Any
) -> sk.Pipeline:
    return (
        sk.Pipeline("faulty", store, batch_rows=batch_rows, **options)
        .read(store.log("orders", key="order_id", time="ts"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(MACHINE, event="event", lateness=lateness)
        .write(store.log("history", key="key", time="time"))
    )


def outcome(store: sk.Store) -> tuple[object, ...]:
    pipe = build(store)
    q = pipe.quarantine().sort("offset").select("offset", "reason").rows()
    return history_by_key(store.log("history").scan().collect()), state_dict(pipe.state()), q


def seed(url: str, frame: pl.DataFrame) -> sk.Store:
    FaultyMemoryFileSystem.budget = None
    store = sk.Store(url)
    store.log("orders", key="order_id", time="ts").append(frame)
    return store


def counted_run(url: str, frame: pl.DataFrame, **options: Any) -> tuple[sk.Store, list[str]]:
    """A fault-free run on a new store; the paths it wrote (and deleted), in order."""
    store = seed(url, frame)
    FaultyMemoryFileSystem.writes = 0
    FaultyMemoryFileSystem.paths = []
    build(store, **options).run(progress=False)
    return store, list(FaultyMemoryFileSystem.paths)


def fail_at_every_write(
    frame: pl.DataFrame, name: str, reference: tuple[object, ...], **options: Any
) -> list[str]:
    """For every k of a fault-free run's writes: a run whose write k + 1 and every
    later one fail, then a rerun; each must give ``reference`` and verify with a
    replay. Returns the paths the fault-free run wrote."""
    store, paths = counted_run(f"faultymem://{name}-ref", frame, **options)
    assert outcome(store) == reference
    total = len(paths)
    # heartbeats are advisory (a failed beat is logged, never an error): the run's
    # last writes are its final heartbeat and its release
    advisory_tail = len(paths) - max(i for i, p in enumerate(paths) if ".beat" not in p) - 1
    assert total > 10 and advisory_tail >= 1
    failures = 0
    for k in range(total):
        store = seed(f"faultymem://{name}-{k}", frame)
        FaultyMemoryFileSystem.writes, FaultyMemoryFileSystem.budget = 0, k
        try:
            build(store, **options).run(progress=False)
        except (InjectedFault, sk.StreamkitError, OSError):
            failures += 1
        finally:
            FaultyMemoryFileSystem.budget = None
        build(store, **options).run(progress=False)
        where = f"failure injected at write {k + 1} of {total} ({paths[k]})"
        assert outcome(store) == reference, where
        report = build(store, **options).verify(replay=True)
        assert report.ok, f"{where}: {report}"
    # every injected failure but those of the trailing heartbeats surfaced as an error
    assert failures == total - advisory_tail
    return paths


def test_a_failure_at_every_write_of_a_run_then_a_rerun_converges() -> None:
    frame = generate_orders(40, span="2h", seed=11)
    store, _ = counted_run("faultymem://plain", frame)
    fail_at_every_write(frame, "trial", outcome(store))


def test_a_failure_at_every_write_of_chains_compaction_and_retention_then_a_rerun_converges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four key groups, chains of at most two links, bands of ten keys with a file
    each (``TIGHT_POLICY``) and two checkpoints kept: over 11 batches groups get
    deltas, are compacted into new bases, and retention deletes state files (also
    shared ones) at batch 10 and at the end. A delete is a write here: retention
    can fail half-way too."""
    frame = generate_orders(40, span="2h", seed=11)
    plain, _ = counted_run("faultymem://chains-plain", frame)  # one base per group and batch
    reference = outcome(plain)
    for name, value in TIGHT_POLICY.items():
        monkeypatch.setattr(_keyed, name, value)
    monkeypatch.setattr(FaultyMemoryFileSystem, "deletes", True)
    commits: list[tuple[str, Checkpoint]] = []
    real_commit = CheckpointStore.commit

    def spy(self: CheckpointStore, cp: Checkpoint) -> bool:
        commits.append((self.fs.url, cp))
        return real_commit(self, cp)

    monkeypatch.setattr(CheckpointStore, "commit", spy)
    options = {"batch_rows": 14, "key_groups": 4, "keep_checkpoints": 2}
    paths = fail_at_every_write(frame, "chains", reference, **options)

    # The reference run did what this test is about (else it would prove nothing).
    ref = [cp for url, cp in commits if url.startswith("faultymem://chains-ref")]
    entries = [e["state"] for cp in ref for e in cp.operators.values() if "state" in e]
    chains = [GroupedState.parse(entry, "test")[2] for entry in entries]
    assert len(ref) >= 11 and len(chains) == len(ref) and all(len(c) == 4 for c in chains)
    grown = {g for c in chains for g, links in c.items() if len(links) > 1}
    compacted = {
        g for i, c in enumerate(chains) for g in grown if len(c[g]) > 1
        and any(len(later[g]) == 1 for later in chains[i + 1 :])
    }  # fmt: skip
    assert grown and compacted, [{g: len(links) for g, links in c.items()} for c in chains]
    holders: dict[str, int] = {}
    for c in chains:
        for path in {link[0] for links in c.values() for link in links}:
            holders[path] = holders.get(path, 0) + 1
    deleted = [p.rsplit("/state/", 1)[1] for p in paths if p.startswith("rm ") and "/state/" in p]
    last_checkpoint = max(i for i, p in enumerate(paths) if "/checkpoints/" in p and "rm " not in p)
    first_delete = min(i for i, p in enumerate(paths) if p.startswith("rm ") and "/state/" in p)
    assert first_delete < last_checkpoint  # retention ran mid-run, not only at the end
    assert any(holders.get(f"state/{name}", 0) > 1 for name in deleted)  # shared files too


def test_a_failure_at_every_write_with_events_waiting_then_a_rerun_converges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With lateness, every batch also writes the events that started waiting and
    drops the files the watermark passed; two checkpoints kept, deletes fail too."""
    frame = generate_orders(40, span="2h", seed=11)
    monkeypatch.setattr(FaultyMemoryFileSystem, "deletes", True)
    options: dict[str, Any] = {"batch_rows": 20, "keep_checkpoints": 2, "lateness": "20m"}
    store, _ = counted_run("faultymem://late-plain", frame, **options)
    entries = [
        e for cid in build(store)._ckpts().ids()[-1:]
        for e in build(store)._ckpts().read(cid).operators.values()
    ]  # fmt: skip
    assert any(e.get("waiting_files") for e in entries)  # events do wait here
    fail_at_every_write(frame, "late", outcome(store), **options)
