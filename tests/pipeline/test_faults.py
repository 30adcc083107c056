"""Fault injection: the k-th write of a run fails, for every k; a rerun converges."""

from __future__ import annotations

from typing import Any, ClassVar

import fsspec
import polars as pl
from fsspec.implementations.memory import MemoryFileSystem

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine
from tests.pipeline.oracle import history_by_key, state_dict


class InjectedFault(OSError):
    pass


class FaultyMemoryFileSystem(MemoryFileSystem):
    """A memory file system whose writes fail once a budget is used up."""

    protocol = "faultymem"
    store: ClassVar[dict[str, Any]] = {}  # type: ignore[misc]
    pseudo_dirs: ClassVar[list[str]] = [""]  # type: ignore[misc]
    budget: ClassVar[int | None] = None
    writes: ClassVar[int] = 0
    paths: ClassVar[list[str]] = []

    @classmethod
    def _tick(cls, path: str) -> None:
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


fsspec.register_implementation("faultymem", FaultyMemoryFileSystem, clobber=True)


def build(store: sk.Store) -> sk.Pipeline:
    return (
        sk.Pipeline("faulty", store, batch_rows=45)
        .read(store.log("orders", key="order_id", time="ts"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
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


def test_a_failure_at_every_write_of_a_run_then_a_rerun_converges() -> None:
    frame = generate_orders(40, span="2h", seed=11)
    ref_store = seed("faultymem://ref", frame)
    FaultyMemoryFileSystem.writes = 0
    FaultyMemoryFileSystem.paths = []
    build(ref_store).run(progress=False)
    total = FaultyMemoryFileSystem.writes
    # heartbeats are advisory (a failed beat is logged, never an error): the run's
    # last writes are its final heartbeat and its release
    paths = FaultyMemoryFileSystem.paths
    advisory_tail = len(paths) - max(i for i, p in enumerate(paths) if ".beat" not in p) - 1
    reference = outcome(ref_store)
    assert total > 10 and advisory_tail >= 1
    failures = 0
    for k in range(total):
        store = seed(f"faultymem://trial-{k}", frame)
        FaultyMemoryFileSystem.writes, FaultyMemoryFileSystem.budget = 0, k
        try:
            build(store).run(progress=False)
        except (InjectedFault, sk.StreamkitError, OSError):
            failures += 1
        finally:
            FaultyMemoryFileSystem.budget = None
        build(store).run(progress=False)
        assert outcome(store) == reference, f"failure injected at write {k + 1}"
        assert build(store).verify().ok
    # every injected failure but those of the trailing heartbeats surfaced as an error
    assert failures == total - advisory_tail
