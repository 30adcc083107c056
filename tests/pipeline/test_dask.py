"""The same pipeline on a Dask cluster gives identical results."""

from __future__ import annotations

import polars as pl
import pytest

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine

distributed = pytest.importorskip("distributed")


def build(store: sk.Store) -> sk.Pipeline:
    return (
        sk.Pipeline("dask-pipe", store, batch_rows=150)
        .read(store.log("orders", key="order_id", time="ts"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


@pytest.mark.timeout(300)
def test_dask_executor_gives_identical_results() -> None:
    frame = generate_orders(200, span="6h", seed=5)
    local_store = sk.Store("memory://dask-local")
    dask_store = sk.Store("memory://dask-cluster")
    for s in (local_store, dask_store):
        s.log("orders", key="order_id", time="ts").append(frame)
    build(local_store).run(progress=False)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        executor = sk.DaskExecutor(client, partitions=3)
        report = build(dask_store).run(executor=executor, progress=False)
    assert report.batches > 1
    local_hist = local_store.log("history").scan().collect()
    dask_hist = dask_store.log("history").scan().collect()
    assert dask_hist.equals(local_hist)
    assert build(dask_store).state().equals(build(local_store).state())
    assert build(dask_store).quarantine().equals(build(local_store).quarantine())
