"""The same pipeline on a Dask cluster gives the results of a local run.

Each task reads, computes and writes its own key groups; the driver commits.
Per key the history is identical row for row; the output log's global order
differs (the sink's rows come task by task), so logs are compared per key and
as sorted sets.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine
from tests.pipeline.oracle import history_by_key

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(300)


def build(store: sk.Store, lateness: str | None = None, **kw: Any) -> sk.Pipeline:
    return (
        sk.Pipeline("dask-pipe", store, batch_rows=150, key_groups=16, **kw)
        .read(store.log("orders"))
        .filter(pl.col("amount") >= 5)
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event", lateness=lateness)
        .write(store.log("history", key="key", time="time"))
    )


def fill(store: sk.Store, frame: pl.DataFrame, partitions: int = 1, rows: int = 40) -> None:
    log = store.log("orders", key="order_id", time="ts", partitions=partitions)
    for part in frame.iter_slices(rows):
        log.append(part)


def outcome(store: sk.Store, lateness: str | None = None) -> tuple[Any, ...]:
    pipe = build(store, lateness)
    history = store.log("history").scan().collect()
    return (
        history_by_key(history),
        history.sort(pl.all()),
        pipe.state().sort("key"),
        pipe.quarantine().sort("offset"),
    )


def assert_same(a: sk.Store, b: sk.Store, lateness: str | None = None) -> None:
    got, want = outcome(a, lateness), outcome(b, lateness)
    assert got[0] == want[0]  # per key, row for row
    for x, y in zip(got[1:], want[1:], strict=True):
        assert x.equals(y)


def threads_cluster(workers: int = 2) -> Any:
    return distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=False, dashboard_address=":0"
    )


ORDERS = generate_orders(200, span="6h", seed=5, out_of_order=0.2, delay="15m")


@pytest.mark.parametrize(("lateness", "partitions"), [(None, 1), ("20m", 4), (None, 8)])
def test_tasks_give_the_results_of_a_local_run(lateness: str | None, partitions: int) -> None:
    local, cluster_store = (sk.Store(f"memory://dask-{uuid.uuid4().hex}") for _ in range(2))
    for s in (local, cluster_store):
        fill(s, ORDERS, partitions)
    build(local, lateness).run(progress=False, final=lateness is not None)
    pipe = build(cluster_store, lateness)
    with threads_cluster() as cluster, distributed.Client(cluster) as client:
        report = pipe.run(
            executor=sk.DaskExecutor(client, tasks=3), progress=False, final=lateness is not None
        )
    assert report.batches > 1
    assert report.rows_in == ORDERS.height
    assert_same(cluster_store, local, lateness)
    # the driver never held the state: its operator was not even opened
    assert not hasattr(pipe._keyed_op(), "kstate")
    assert pipe.verify(replay=True).ok
    # the run's counts are the local run's
    assert (
        pipe.checkpoints()["rows_out"].to_list()[-1:]
        == (build(local, lateness).checkpoints()["rows_out"].to_list()[-1:])
    )


def test_rescaling_between_runs_and_mixing_with_local_runs() -> None:
    """Key groups are fixed, workers are not: 1 -> 2 -> 1 workers, then a local run."""
    local, mixed = (sk.Store(f"memory://dask-{uuid.uuid4().hex}") for _ in range(2))
    for s in (local, mixed):
        fill(s, ORDERS, partitions=2)
    build(local).run(progress=False)
    for workers, batches in ((1, 2), (2, 2), (1, 2)):
        with threads_cluster(workers) as cluster, distributed.Client(cluster) as client:
            build(mixed).run(
                executor=sk.DaskExecutor(client, tasks=workers), max_batches=batches, progress=False
            )
    build(mixed).run(progress=False)  # the rest locally, from state the tasks wrote
    assert_same(mixed, local)
    assert build(mixed).verify(replay=True).ok


def test_a_state_far_larger_than_what_a_task_reads() -> None:
    """30,000 keys held, then small batches touching a few: tasks restore only
    their groups' chains (once), the results are those of a local run."""
    big = generate_orders(12_000, span="2d", seed=9)
    small = generate_orders(60, span="1h", seed=10, start=datetime(2026, 3, 1))
    local, cluster_store = (sk.Store(f"memory://dask-{uuid.uuid4().hex}") for _ in range(2))
    for s in (local, cluster_store):
        fill(s, big, partitions=4, rows=big.height)
    build(local).run(progress=False)
    build(cluster_store).run(progress=False)  # the big state, built locally
    for s in (local, cluster_store):
        fill(s, small, partitions=4, rows=20)
    build(local).run(progress=False)
    with threads_cluster() as cluster, distributed.Client(cluster) as client:
        report = build(cluster_store).run(executor=sk.DaskExecutor(client), progress=False)
    assert report.batches >= 2
    assert build(cluster_store).state().height > 10_000
    assert_same(cluster_store, local)


def test_workers_keep_their_state_for_the_next_run_unless_the_machine_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A new run whose checkpoint is the state a worker holds restores nothing; a
    corrected machine (same states) is never run on the state held for the old one."""
    import logging

    local, cluster_store = (sk.Store(f"memory://dask-{uuid.uuid4().hex}") for _ in range(2))
    for s in (local, cluster_store):
        fill(s, ORDERS, partitions=2)
    m = order_machine()
    fixed = sk.Machine.from_dict(
        dict(m.to_dict(), transitions=[*m.to_dict()["transitions"], {"from": "shipped",
                                                                    "on": "cancel",
                                                                    "to": "cancelled"}])
    )  # fmt: skip

    def with_machine(store: sk.Store, machine: sk.Machine) -> sk.Pipeline:
        return (
            sk.Pipeline("dask-pipe", store, batch_rows=150, key_groups=16)
            .read(store.log("orders"))
            .transitions(machine, event="type")
            .write(store.log("history", key="key", time="time"))
        )

    with_machine(local, m).run(max_batches=2, progress=False)
    with_machine(local, fixed).run(progress=False)
    with threads_cluster() as cluster, distributed.Client(cluster) as client:
        executor = sk.DaskExecutor(client, tasks=2)
        with_machine(cluster_store, m).run(executor=executor, max_batches=1, progress=False)
        with caplog.at_level(logging.INFO, logger="streamkit.pipeline"):
            with_machine(cluster_store, m).run(executor=executor, max_batches=1, progress=False)
        assert "0 restored their key groups" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="streamkit.pipeline"):
            with_machine(cluster_store, fixed).run(executor=executor, progress=False)
        assert "2 restored their key groups" in caplog.text
    got = history_by_key(cluster_store.log("history").scan().collect())
    assert got == history_by_key(local.log("history").scan().collect())


def test_an_operator_must_not_rewrite_the_key_before_the_machine() -> None:
    store = sk.Store(f"memory://dask-{uuid.uuid4().hex}")
    fill(store, ORDERS.head(50))
    pipe = (
        sk.Pipeline("dask-pipe", store)
        .read(store.log("orders"))
        .with_columns(pl.col("order_id").str.to_uppercase())
        .transitions(order_machine(), event="type")
    )
    with threads_cluster(1) as cluster, distributed.Client(cluster) as client:
        with pytest.raises(sk.ConfigurationError, match="key and time columns must reach"):
            pipe.run(executor=sk.DaskExecutor(client), progress=False)


def test_a_file_log_source_runs_the_kernel_on_the_cluster(tmp_path: Path) -> None:
    """A FileLog is read by the driver; only the kernel is split across workers."""
    folder = tmp_path / "drops"
    folder.mkdir()
    for i, part in enumerate(ORDERS.iter_slices(100)):
        part.write_parquet(folder / f"part-{i:03d}.parquet")
    results = []
    for executor in ("local", "dask"):
        store = sk.Store(str(tmp_path / executor))
        pipe = (
            sk.Pipeline("files", store, batch_rows=150)
            .read(sk.FileLog(str(folder), "*.parquet", key="order_id", time="ts"))
            .transitions(order_machine(), event="type")
            .write(store.log("history", key="key", time="time"))
        )
        if executor == "local":
            pipe.run(progress=False)
        else:
            with threads_cluster() as cluster, distributed.Client(cluster) as client:
                pipe.run(executor=sk.DaskExecutor(client), progress=False)
        results.append(store.log("history").scan().collect())
    assert results[0].equals(results[1])


def test_task_reprs_hold_no_credentials() -> None:
    from streamkit.pipeline._distributed import LogSpec

    spec = LogSpec("s3://b/lake", "orders", "k", "t", 1, {"key": "AKIA-SECRET", "secret": "s3cr3t"})
    assert "SECRET" not in repr(spec) and "s3cr3t" not in repr(spec)


# ------------------------------------------------------ worker processes
@pytest.fixture(scope="module")
def process_client() -> Any:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def _stores(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> list[sk.Store]:
    if kind == "local":
        return [sk.Store(str(tmp_path / name)) for name in ("local", "cluster")]
    make = request.getfixturevalue("make_store")
    return [make("s3"), make("s3")]


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_worker_processes_open_the_store_from_its_url(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, process_client: Any
) -> None:
    local, cluster_store = _stores(kind, tmp_path, request)
    for s in (local, cluster_store):
        fill(s, ORDERS, partitions=2, rows=200)
    build(local, "20m").run(progress=False)
    build(cluster_store, "20m").run(
        executor=sk.DaskExecutor(process_client), progress=False, max_batches=3
    )
    build(cluster_store, "20m").run(executor=sk.DaskExecutor(process_client), progress=False)
    assert_same(cluster_store, local, "20m")
    assert build(cluster_store, "20m").verify(replay=True).ok


class _KillOnce(distributed.WorkerPlugin):  # type: ignore[misc]
    """SIGKILL the worker a moment after it starts a task of batch ``seq`` (once)."""

    def __init__(self, marker: str, seq: int, delay: float) -> None:
        self.marker, self.seq, self.delay = marker, seq, delay

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        name = key if isinstance(key, str) else str(key)
        if finish != "executing" or not name.startswith(f"streamkit-dask-pipe-{self.seq}-"):
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        timer = threading.Timer(self.delay, os.kill, (os.getpid(), signal.SIGKILL))
        timer.daemon = True
        timer.start()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_a_worker_killed_mid_batch_then_the_run_completes_exactly_once(
    tmp_path: Path, delay: float
) -> None:
    local, cluster_store = (sk.Store(str(tmp_path / n)) for n in ("local", "cluster"))
    for s in (local, cluster_store):
        fill(s, ORDERS, partitions=2, rows=200)
    build(local).run(progress=False)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(_KillOnce(str(tmp_path / "killed"), seq=2, delay=delay))
        build(cluster_store).run(executor=sk.DaskExecutor(client), progress=False)
    assert (tmp_path / "killed").exists()
    assert_same(cluster_store, local)
    pipe = build(cluster_store)
    assert pipe.verify(replay=True).ok
    # files of the killed attempt are never referenced: vacuum removes them
    cluster_store.log("history").vacuum(retain=timedelta(0))
    assert_same(cluster_store, local)
