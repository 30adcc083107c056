"""The same pipeline on a Dask cluster gives identical results."""

from __future__ import annotations

import polars as pl
import pytest

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine

distributed = pytest.importorskip("distributed")


def build(store: sk.Store, lateness: str | None = None) -> sk.Pipeline:
    return (
        sk.Pipeline("dask-pipe", store, batch_rows=150)
        .read(store.log("orders", key="order_id", time="ts"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event", lateness=lateness)
        .write(store.log("history", key="key", time="time"))
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("lateness", [None, "20m"])
def test_dask_executor_gives_identical_results(lateness: str | None) -> None:
    # out of order between appends: with lateness, events wait and are applied in
    # time order; the cluster gets the watermark of every event from the driver
    frame = generate_orders(200, span="6h", seed=5, out_of_order=0.2, delay="15m")
    local_store = sk.Store(f"memory://dask-local-{lateness}")
    dask_store = sk.Store(f"memory://dask-cluster-{lateness}")
    for s in (local_store, dask_store):
        log = s.log("orders", key="order_id", time="ts")
        for part in frame.iter_slices(40):
            log.append(part)
    build(local_store, lateness).run(progress=False)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        executor = sk.DaskExecutor(client, partitions=3)
        report = build(dask_store, lateness).run(executor=executor, progress=False)
    assert report.batches > 1
    local_hist = local_store.log("history").scan().collect()
    dask_hist = dask_store.log("history").scan().collect()
    assert dask_hist.equals(local_hist)
    assert build(dask_store, lateness).state().equals(build(local_store, lateness).state())
    assert (
        build(dask_store, lateness).quarantine().equals(build(local_store, lateness).quarantine())
    )
