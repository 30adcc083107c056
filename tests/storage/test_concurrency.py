"""Real processes appending at once, and appenders killed with SIGKILL."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from streamkit.storage import Store
from tests.storage._append_worker import check_appends, frame, spawn, wait_ready


def _spawn(
    url: str,
    options: dict[str, Any],
    writer: str,
    first: int,
    count: int,
    rows: int,
    go: Path | None = None,
    *,
    shared: bool = False,
) -> subprocess.Popen[str]:
    args = [url, json.dumps(options), "events", writer, str(first), str(count), str(rows)]
    if go is not None:
        args.append(str(go))
    if shared:
        args.append("--shared")
    return spawn(*args)


def _check_consistent(log_rows: pl.DataFrame, rows_per_append: int) -> None:
    if "w" not in log_rows.columns:  # killed before the first append: empty log
        assert log_rows.height == 0
        return
    offsets = log_rows["o"].to_list()
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    counts = log_rows.group_by("w", "seq").agg(pl.len(), pl.col("r").n_unique().alias("u"))
    # Every append is whole: all its rows, each once.
    assert (counts["len"] == rows_per_append).all(), counts.filter(pl.col("len") != rows_per_append)
    assert (counts["u"] == rows_per_append).all()


@pytest.mark.slow
def test_eight_appending_processes_lose_and_duplicate_nothing(
    make_store: Any, tmp_path: Path
) -> None:
    # On S3 the same eight appenders run in tests/pipeline/test_overlap.py, with
    # pipeline runs reading the log meanwhile (one set of S3 processes, not two).
    store: Store = make_store("local")
    options = dict(store.filesystem._options)
    store.log("events", key="k", time="t", partitions=2)
    go = tmp_path / "go"
    writers, count, rows = 8, 6, 20
    procs = [
        _spawn(store.url, options, f"w{i}", 0, count, rows, go, shared=True) for i in range(writers)
    ]
    for proc in procs:
        wait_ready(proc)
    go.touch()
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    log = store.log("events")
    got = check_appends(log, {f"w{i}": count for i in range(writers)}, rows)
    assert log.version == writers * count
    # Every writer appended to the keys they share.
    shared = got.filter(pl.col("k").str.starts_with("shared-"))
    assert shared["w"].n_unique() == writers


def _crash_trial(store: Store, options: dict[str, Any], rng: random.Random, rows: int) -> None:
    log = store.log("events", key="k", time="t", partitions=2)
    txn = log.transaction("crashy")
    first = 0 if txn is None else txn.seq + 1
    proc = _spawn(store.url, options, "crashy", first, 10_000, rows)
    wait_ready(proc)
    time.sleep(rng.uniform(0.05, 1.2))
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    fresh = Store(store.url, storage_options=options).log("events")
    got = fresh.scan(with_offset="o").collect()
    _check_consistent(got, rows)
    seqs = sorted(set(got["seq"].to_list())) if "seq" in got.columns else []
    assert seqs == list(range(len(seqs)))  # committed appends form a prefix, none torn
    txn = fresh.transaction("crashy")
    assert (txn.seq if txn else -1) == (seqs[-1] if seqs else -1)
    # Replaying the last append is recognised as a duplicate.
    if txn is not None:
        replay = frame("crashy", txn.seq, 1)
        assert fresh.append(replay, writer="crashy", seq=txn.seq).duplicate


@pytest.mark.slow
def test_sigkill_leaves_only_whole_appends_local(make_store: Any) -> None:
    store: Store = make_store("local")
    options: dict[str, Any] = {}
    rng = random.Random(1234)
    for _ in range(5):
        _crash_trial(store, options, rng, rows=50)
    log = store.log("events")
    before = log.count()
    assert before > 0  # the trials committed appends before being killed
    # Still appendable and consistent; vacuum removes the crash debris only.
    log.append(frame("after", 0, 1))
    log.vacuum(retain=dt.timedelta(0))
    live = set(log.segments()["path"].to_list())
    assert set(store.filesystem.child("events").find("data")) == live
    assert all(".tmp-" not in n for n in store.filesystem.child("events").ls("_delta_log"))
    assert log.count() == before + 1
    _check_consistent(log.scan(with_offset="o").collect().filter(pl.col("w") != "after"), 50)


@pytest.mark.slow
@pytest.mark.s3
def test_sigkill_leaves_only_whole_appends_s3(make_store: Any) -> None:
    store: Store = make_store("s3")
    options = dict(store.filesystem._options)
    rng = random.Random(99)
    for _ in range(2):
        _crash_trial(store, options, rng, rows=50)
    log = store.log("events")
    log.vacuum(retain=dt.timedelta(0))
    # Segment files only: when no trial committed, SeaweedFS may still list the
    # emptied "data" folder itself as an object.
    files = {p for p in store.filesystem.child("events").find("data") if p.endswith(".parquet")}
    assert files == set(log.segments()["path"])
    _check_consistent(log.scan(with_offset="o").collect(), 50)
