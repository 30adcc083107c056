"""Real processes appending at once, and appenders killed with SIGKILL."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from streamkit.storage import Position, Store

WORKER = Path(__file__).with_name("_append_worker.py")


def _spawn(
    url: str,
    options: dict[str, Any],
    writer: str,
    first: int,
    count: int,
    rows: int,
    go: Path | None = None,
) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        str(WORKER),
        url,
        json.dumps(options),
        "events",
        writer,
        str(first),
        str(count),
        str(rows),
    ]
    if go is not None:
        args.append(str(go))
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        _out, err = proc.communicate(timeout=30)
        raise AssertionError(f"worker failed to start: {line!r} {err}")


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


def _backends() -> list[Any]:
    return ["local", pytest.param("s3", marks=pytest.mark.s3)]


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", _backends())
def test_concurrent_processes_lose_and_duplicate_nothing(
    backend_name: str, make_store: Any, tmp_path: Path
) -> None:
    store: Store = make_store(backend_name)
    options = dict(store.filesystem._options)
    store.log("events", key="k", time="t", partitions=2)
    go = tmp_path / "go"
    writers, count, rows = 4, 12, 20
    procs = [_spawn(store.url, options, f"w{i}", 0, count, rows, go) for i in range(writers)]
    for proc in procs:
        _wait_ready(proc)
    go.touch()
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    log = store.log("events")
    got = log.scan(with_offset="o").collect()
    total = writers * count * rows
    assert got.height == total
    assert got["o"].to_list() == list(range(total))  # unique and contiguous
    assert log.end() == Position(total)
    _check_consistent(got, rows)
    assert got.select("w", "seq").unique().height == writers * count
    segs = log.segments()
    assert segs["offset"].to_list() == [0, *segs["rows"].cum_sum().to_list()[:-1]]
    assert log.version == writers * count
    for i in range(writers):
        txn = log.transaction(f"w{i}")
        assert txn is not None and txn.seq == count - 1 and txn.meta == {"rows": rows}
    # Per key, offsets follow (time, append order).
    per_key = got.sort("o").group_by("k", maintain_order=True).agg("seq", "t")
    for seqs, ts in zip(per_key["seq"].to_list(), per_key["t"].to_list()):
        assert list(zip(seqs, ts)) == sorted(zip(seqs, ts))


def _crash_trial(store: Store, options: dict[str, Any], rng: random.Random, rows: int) -> None:
    log = store.log("events", key="k", time="t", partitions=2)
    txn = log.transaction("crashy")
    first = 0 if txn is None else txn.seq + 1
    proc = _spawn(store.url, options, "crashy", first, 10_000, rows)
    _wait_ready(proc)
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
        replay = pl.DataFrame({"k": ["x"], "t": [0], "w": ["crashy"], "seq": [txn.seq], "r": [0]})
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
    log.append(pl.DataFrame({"k": ["z"], "t": [1], "w": ["after"], "seq": [0], "r": [0]}))
    log.vacuum(retain=dt.timedelta(0))
    live = set(log.segments()["path"].to_list())
    assert set(store.filesystem.child("events").find("data")) == live
    assert all(".tmp-" not in n for n in store.filesystem.child("events").ls("_log"))
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
