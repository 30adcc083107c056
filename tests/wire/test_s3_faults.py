"""Appends and pipeline runs through s3fs against SeaweedFS with faults on the wire.

A :class:`~tests.wire.proxy.FaultProxy` sits between s3fs and SeaweedFS, so each
fault passes through the whole client stack. The targeted tests lose the response
to the PUT of a version file, a segment, a snapshot, and in a pipeline run to the
first PUT of every file it creates (epochs, state files, checkpoints, output and
quarantine versions and segments): the server applied it, aiohttp re-sent it on a
new connection and was told ``412 Precondition Failed`` by its own write. Each test
checks that this re-send happened, with the SDK's retries on and off. The random
tests reset connections, answer ``503 Slow Down`` and delay requests at 10% and
30%; the torture sample adds lost responses. Every result is compared with the
same work done without faults; an operation that fails must fail with a
StorageError, and a plain rerun must converge.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest

import streamkit as sk
from streamkit._testing import SeaweedFS
from streamkit.datasets import generate_orders
from streamkit.errors import OutcomeUnknownError
from streamkit.storage import _manifest as mf
from tests.wire.proxy import FaultProxy
from tests.wire.torture import Summary, build_pipeline, outcome, run_torture, trial

pytestmark = pytest.mark.s3

FRAME = generate_orders(40, span="2h", seed=3)  # 153 events, 2 quarantined
CHUNKS = [FRAME.slice(0, 60), FRAME.slice(60)]
EVERY = 10_000  # with once_per_path: every object, once
BATCH = 80  # two batches: every kind of file written twice

VERSION = r"/orders/_delta_log/\d{20}\.json$"
SEGMENT = r"/orders/data/p=\d+/[^/]+\.parquet$"
SNAPSHOT = r"/orders/_streamkit/\d{20}\.snapshot\.json$"
PIPELINE_FILES = {
    "epoch": r"/_pipelines/orders-fsm/epochs/\d+\.json$",
    "state-file": r"/_pipelines/orders-fsm/state/[^/]+\.arrow$",
    "checkpoint": r"/_pipelines/orders-fsm/checkpoints/\d+\.json$",
    "output-version": r"/history/_delta_log/\d{20}\.json$",
    "output-segment": r"/history/data/",
    "quarantine-version": r"/_pipelines/orders-fsm/quarantine/_delta_log/\d{20}\.json$",
    "quarantine-segment": r"/_pipelines/orders-fsm/quarantine/data/",
}


def _memory_store(*chunks: pl.DataFrame, run: bool = False, partitions: int = 1) -> sk.Store:
    store = sk.Store(f"memory://streamkit-wire-{uuid.uuid4().hex}")
    log = store.log("orders", key="order_id", time="ts", partitions=partitions)
    for chunk in chunks:
        log.append(chunk)
    if run:
        build_pipeline(store, BATCH).run(progress=False)
    return store


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """What the order pipeline leaves behind on FRAME, without faults."""
    return outcome(_memory_store(FRAME, run=True))


def _rows(store: sk.Store) -> list[tuple[Any, ...]]:
    return store.log("orders").scan().collect().rows()


def assert_resent_and_refused(proxy: FaultProxy, pattern: str) -> None:
    """The scenario of issue 11 happened: a PUT applied without an answer, then the
    same PUT re-sent and answered 412 because the object exists."""
    puts = [(r.fault, r.status) for r in proxy.records() if r.method == "PUT"]
    matching = [
        (r.fault, r.status)
        for r in proxy.records()
        if r.method == "PUT" and re.search(pattern, r.path)
    ]
    assert ("lost_response", 200) in matching, puts
    assert (None, 412) in matching, matching


# ------------------------------------------------------------------ appends
def test_an_idempotent_append_whose_commit_lost_its_response_commits_once_and_keeps_its_data(
    wire_store: Callable[..., sk.Store], proxy: FaultProxy
) -> None:
    log = wire_store().log("orders", key="order_id", time="ts")
    log.append(CHUNKS[0], writer="w", seq=1)
    proxy.fault_next("lost_response", method="PUT", path=VERSION)
    result = log.append(CHUNKS[1], writer="w", seq=2)
    assert_resent_and_refused(proxy, VERSION)
    assert (result.duplicate, result.rows, result.version) == (False, CHUNKS[1].height, 2)
    direct = wire_store(direct=True)
    assert _rows(direct) == _rows(_memory_store(*CHUNKS))  # segments kept, read back whole
    assert log.append(CHUNKS[1], writer="w", seq=2).duplicate  # a retry is a no-op
    assert direct.log("orders").version == 2


def test_an_append_without_writer_whose_commit_lost_its_response_commits_once(
    wire_store: Callable[..., sk.Store], proxy: FaultProxy
) -> None:
    log = wire_store().log("orders", key="order_id", time="ts")
    log.append(CHUNKS[0])
    proxy.fault_next("lost_response", method="PUT", path=VERSION)
    result = log.append(CHUNKS[1])
    assert_resent_and_refused(proxy, VERSION)
    assert (result.version, result.end.offset) == (2, FRAME.height)
    direct = wire_store(direct=True)
    assert direct.log("orders").version == 2  # not a second version with the same rows
    assert direct.log("orders").end().offset == FRAME.height
    assert _rows(direct) == _rows(_memory_store(*CHUNKS))


def test_creating_a_log_whose_first_version_lost_its_response_succeeds(
    wire_store: Callable[..., sk.Store], proxy: FaultProxy
) -> None:
    proxy.fault_next("lost_response", method="PUT", path=VERSION)
    log = wire_store().log("orders", key="order_id", time="ts")
    assert_resent_and_refused(proxy, VERSION)
    log.append(FRAME)
    assert _rows(wire_store(direct=True)) == _rows(_memory_store(FRAME))


def test_an_append_whose_segment_puts_lost_their_responses_commits_its_segments(
    wire_store: Callable[..., sk.Store], proxy: FaultProxy
) -> None:
    log = wire_store().log("orders", key="order_id", time="ts", partitions=3)
    proxy.fault_next("lost_response", EVERY, method="PUT", path=SEGMENT, once_per_path=True)
    result = log.append(FRAME)
    assert_resent_and_refused(proxy, SEGMENT)
    assert result.segments == 3 and proxy.counts()["lost_response"] == 3
    assert _rows(wire_store(direct=True)) == _rows(_memory_store(FRAME, partitions=3))


def test_a_commit_whose_snapshot_lost_its_response_leaves_a_readable_snapshot(
    wire_store: Callable[..., sk.Store], proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mf, "SNAPSHOT_EVERY", 2)  # a snapshot after version 2
    log = wire_store().log("orders", key="order_id", time="ts")
    log.append(CHUNKS[0])
    proxy.fault_next("lost_response", method="PUT", path=SNAPSHOT)
    log.append(CHUNKS[1])
    assert_resent_and_refused(proxy, SNAPSHOT)
    direct = wire_store(direct=True)
    assert direct.filesystem.exists(f"orders/{mf.snapshot_path(2)}")
    assert _rows(direct) == _rows(_memory_store(*CHUNKS))


@pytest.mark.parametrize("sdk_retries", ["off"], ids=["sdk-retries-off"])
def test_an_append_that_cannot_tell_whether_it_committed_says_so_and_its_retry_converges(
    wire_store: Callable[..., sk.Store], proxy: FaultProxy
) -> None:
    """The commit's answer is lost and so are the reads that would settle it: the
    append raises OutcomeUnknownError, keeps its segments, and retrying it with the
    same writer and seq finds it committed, exactly once."""
    log = wire_store().log("orders", key="order_id", time="ts")
    log.append(CHUNKS[0], writer="w", seq=1)
    proxy.fault_next("lost_response", method="PUT", path=VERSION)
    proxy.fault_next("reset", EVERY, method="GET", path=VERSION)
    with pytest.raises(OutcomeUnknownError, match=r"_delta_log/0+2\.json"):
        log.append(CHUNKS[1], writer="w", seq=2)
    proxy.cancel()
    result = log.append(CHUNKS[1], writer="w", seq=2)
    assert result.duplicate  # it had committed; the retry finds it
    direct = wire_store(direct=True)
    assert direct.log("orders").version == 2
    assert _rows(direct) == _rows(_memory_store(*CHUNKS))


# ----------------------------------------------------------------- pipelines
def test_a_run_whose_every_create_loses_its_first_response_equals_a_fault_free_run(
    wire_store: Callable[..., sk.Store], proxy: FaultProxy, reference: dict[str, Any]
) -> None:
    """Epoch claims, output and quarantine versions and segments, state files and
    checkpoints: each object's first PUT is applied and its answer lost."""
    store = wire_store()
    store.log("orders", key="order_id", time="ts").append(FRAME)
    proxy.fault_next("lost_response", EVERY, method="PUT", once_per_path=True)
    report = build_pipeline(store, BATCH).run(progress=False)
    for pattern in PIPELINE_FILES.values():
        assert_resent_and_refused(proxy, pattern)
    direct = wire_store(direct=True)
    assert (report.batches, report.rows_in) == (2, FRAME.height)
    assert outcome(direct) == reference
    assert build_pipeline(direct, BATCH).run(progress=False).batches == 0


# ------------------------------------------------------------ random faults
@pytest.mark.parametrize(
    ("rate", "retries", "methods"),
    [
        (0.1, "on", None),
        (0.1, "off", None),
        (0.3, "on", ("PUT", "POST", "DELETE")),
        (0.3, "off", None),
    ],
    ids=[
        "10%-sdk-retries-on",
        "10%-sdk-retries-off",
        "30%-writes-sdk-retries-on",
        "30%-sdk-retries-off",
    ],
)
def test_appends_and_runs_under_resets_slowdowns_and_delays_equal_a_fault_free_run(
    rate: float, retries: str, methods: tuple[str, ...] | None, seaweedfs: SeaweedFS
) -> None:
    """Four appends and two pipeline runs (see ``torture.exercise``); what fails is
    retried. With the SDK's retries on at 30%, only writes meet faults: botocore
    backs off for seconds after each 503 on a read, which the suite cannot afford."""
    summary = Summary()
    trial(
        seaweedfs,
        summary,
        seed=int(rate * 100),
        rate=rate,
        retries=retries,
        kinds=("reset", "slow_down", "delay"),
        methods=methods,
    )
    assert summary.ok, summary.render()
    assert summary.events_lost == summary.events_duplicated == summary.unreadable_logs == 0
    assert min(summary.faults[k] for k in ("reset", "slow_down", "delay")) > 0, summary.render()


def test_a_small_torture_sample_loses_and_duplicates_nothing(seaweedfs: SeaweedFS) -> None:
    """One trial of ``python -m tests.wire.torture``, lost responses only (the
    fault that broke logs before the fix: this sample failed on commit 8639aab
    for every seed tried; 503s would add seconds of botocore back-off)."""
    kinds = ("lost_response",)
    summary = run_torture(seaweedfs, trials=1, rates=(0.2,), retries=("on",), kinds=kinds, seed=5)
    assert summary.ok, summary.render()
    assert summary.trials == 1 and summary.faults["lost_response"] > 0
    assert summary.events_lost == summary.events_duplicated == summary.unreadable_logs == 0
