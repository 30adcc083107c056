"""Segments written by workers, committed by a driver: ``Log.write_segments`` and
``Log.commit_segments``, on memory, local and S3 (SeaweedFS), plus lost responses."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import streamkit as sk
from streamkit.errors import (
    ConfigurationError,
    CorruptFileError,
    OutcomeUnknownError,
    SchemaError,
)
from streamkit.storage import Log, SegmentRef, Store
from streamkit.storage import log as log_module
from tests.storage.test_lost_response import LossyStore

PARTS = 3


def frame(n: int, *, start: int = 0, keys: int = 7) -> pl.DataFrame:
    """Rows whose times are out of order within each key, so the sort shows."""
    return pl.DataFrame(
        {
            "k": [f"key-{(i * 5) % keys}" for i in range(start, start + n)],
            "t": [(i * 37) % 101 for i in range(start, start + n)],
            "v": [float(i) for i in range(start, start + n)],
        },
        schema={"k": pl.String, "t": pl.Int64, "v": pl.Float64},
    )


def open_log(store_url: tuple[str, dict[str, Any]], name: str = "out", **create: Any) -> Log:
    """A new handle on the log, as another process would open it from URL + options."""
    url, options = store_url
    return Store(url, storage_options=options).log(name, **create)


def shipped(refs: list[SegmentRef]) -> list[SegmentRef]:
    """The references after a trip through JSON, as between processes."""
    return [SegmentRef.from_dict(json.loads(json.dumps(r.to_dict()))) for r in refs]


@pytest.fixture
def driver(store_url: tuple[str, dict[str, Any]]) -> Log:
    return open_log(store_url, key="k", time="t", partitions=PARTS)


# ---------------------------------------------------------------------- round trips
def test_two_workers_committed_in_one_version_equal_their_appends(
    store_url: tuple[str, dict[str, Any]], driver: Log
) -> None:
    fa, fb = frame(40), frame(25, start=40)
    ra = open_log(store_url).write_segments(fa)
    rb = open_log(store_url).write_segments(fb)
    assert driver.count() == 0 and driver.version == 0  # written, not committed
    assert {r.partition for r in ra} == set(range(PARTS))
    res = driver.commit_segments(shipped(rb + ra), writer="driver", seq=1, meta={"b": 1})
    assert (res.version, res.rows, res.start.offset, res.end.offset) == (1, 65, 0, 65)
    assert res.segments == len(ra) + len(rb) and not res.duplicate
    assert driver.transaction("driver") == sk.storage.Transaction("driver", 1, {"b": 1}, 1)

    # Offsets in the refs' order: exactly two appends, b's rows then a's.
    ref_store = Store(f"memory://streamkit-test-ref-{uuid.uuid4().hex}")
    ref = ref_store.log("out", key="k", time="t", partitions=PARTS)
    ref.append(fb)
    ref.append(fa)
    got = driver.scan(with_offset="o").collect()
    assert_frame_equal(got, ref.scan(with_offset="o").collect())
    # As a set, the append of the concatenation.
    concat = ref_store.log("concat", key="k", time="t", partitions=PARTS)
    concat.append(pl.concat([fa, fb]))
    assert_frame_equal(
        got.drop("o").sort("k", "t", "v"), concat.scan().collect().sort("k", "t", "v")
    )

    segs = driver.segments()
    assert segs["path"].to_list() == [r.path for r in rb + ra]
    for row, r in zip(segs.iter_rows(named=True), rb + ra, strict=True):
        assert (row["rows"], row["bytes"], row["crc32"], row["partition"]) == (
            r.rows,
            r.bytes,
            r.crc32,
            r.partition,
        )
        assert (row["min_time"], row["max_time"], row["writer"], row["writer_seq"]) == (
            r.min_time,
            r.max_time,
            "driver",
            1,
        )
    assert driver.schema == fa.schema
    assert open_log(store_url).scan().collect().height == 65  # a fresh reader agrees


def test_the_driver_reads_no_data(driver: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    refs = driver.write_segments(frame(30))
    fs = driver.filesystem
    read: list[str] = []
    real_get, real_get_many = fs.get, fs.get_many

    def get(path: str) -> bytes:
        read.append(path)
        return real_get(path)

    def get_many(paths: Any, **kw: Any) -> dict[str, bytes]:
        paths = list(paths)
        read.extend(paths)
        return real_get_many(paths, **kw)

    monkeypatch.setattr(fs, "get", get)
    monkeypatch.setattr(fs, "get_many", get_many)
    assert driver.commit_segments(refs).rows == 30
    assert read and not [p for p in read if p.startswith("data/")]


def test_datetime_times_and_the_first_commit_sets_the_schema(
    store_url: tuple[str, dict[str, Any]],
) -> None:
    log = open_log(store_url, "dt", key="k", time="t")
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    df = pl.DataFrame({"k": ["a", "b"], "t": [base + dt.timedelta(hours=2), base]}).with_columns(
        pl.col("t").dt.convert_time_zone("Europe/Berlin")
    )
    refs = open_log(store_url, "dt").write_segments(df)
    assert log.schema is None
    log.commit_segments(refs)
    assert log.schema == df.schema
    assert log.scan().collect()["k"].to_list() == ["b", "a"]  # sorted by time
    assert log.segments()["min_time"].to_list() == [df["t"].min()]


def test_empty_frames_and_empty_commits(driver: Log) -> None:
    assert driver.write_segments(frame(0)) == []
    assert driver.commit_segments([]).version == 0  # nothing to commit
    res = driver.commit_segments([], writer="w", seq=3)
    assert (res.version, res.rows, res.segments) == (1, 0, 0)
    assert driver.transaction("w") == sk.storage.Transaction("w", 3, {}, 1)
    assert driver.commit_segments([], writer="w", seq=3).duplicate


# ---------------------------------------------------------------------- idempotence
def test_retried_commit_is_a_duplicate_and_keeps_the_files(
    store_url: tuple[str, dict[str, Any]], driver: Log
) -> None:
    refs = open_log(store_url).write_segments(frame(20))
    first = driver.commit_segments(refs, writer="d", seq=4)
    again = open_log(store_url).commit_segments(shipped(refs), writer="d", seq=4)
    assert again.duplicate and again.rows == 0 and again.version == first.version
    assert driver.commit_segments(refs, writer="d", seq=2).duplicate  # an older seq
    assert driver.count() == 20 and driver.version == 1
    assert sorted(driver.filesystem.find("data")) == sorted(r.path for r in refs)
    assert driver.scan().collect().height == 20  # every referenced file is still there
    # Without writer/seq a second commit of the same files is refused, not counted twice.
    with pytest.raises(ConfigurationError, match=r"committed by version 1 already"):
        driver.commit_segments(refs)
    assert driver.count() == 20 and driver.version == 1


def test_duplicate_with_other_refs_deletes_them_as_append_does(
    store_url: tuple[str, dict[str, Any]], driver: Log
) -> None:
    committed = open_log(store_url).write_segments(frame(20))
    driver.commit_segments(committed, writer="d", seq=1)
    rerun = open_log(store_url).write_segments(frame(20, start=20))  # a rerun of the tasks
    res = driver.commit_segments(rerun, writer="d", seq=1)
    assert res.duplicate and res.rows == 0 and res.version == 1
    assert sorted(driver.filesystem.find("data")) == sorted(r.path for r in committed)
    assert driver.count() == 20
    # What append does for the same conflict.
    appended = driver.append(frame(20, start=20), writer="d", seq=1)
    assert appended.duplicate and appended.version == res.version
    assert sorted(driver.filesystem.find("data")) == sorted(r.path for r in committed)


# ---------------------------------------------------------------------- refusals
def test_a_commit_of_few_files_does_not_list_their_folders(
    driver: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking a batch's files costs a request per file, not a listing of
    partition folders that grow with the log; many files are still listed."""
    for i in range(20):  # segments of earlier versions in every partition folder
        driver.append(frame(9, start=9 * i))
    fs = driver.filesystem
    listed: list[str] = []
    real = fs.find_details

    def find_details(path: str = "", **kw: Any) -> list[dict[str, Any]]:
        listed.append(path)
        return real(path, **kw)

    monkeypatch.setattr(fs, "find_details", find_details)
    refs = driver.write_segments(frame(30, start=500))
    assert len(refs) == PARTS
    assert driver.commit_segments(refs).rows == 30
    assert listed == []
    monkeypatch.setattr(log_module, "_LIST_FROM", len(refs) - 1)
    more = driver.write_segments(frame(30, start=600))
    assert driver.commit_segments(more).rows == 30
    assert sorted(listed) == [f"data/p={p:03d}" for p in range(PARTS)]
    assert driver.count() == 20 * 9 + 60


@pytest.mark.parametrize("lookup", ["per-file", "listing"])
def test_missing_or_changed_file_is_named_and_nothing_committed(
    store_url: tuple[str, dict[str, Any]],
    driver: Log,
    lookup: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if lookup == "listing":  # as for a commit of more files than _LIST_FROM
        monkeypatch.setattr(log_module, "_LIST_FROM", 0)
    refs = open_log(store_url).write_segments(frame(40))
    fs = driver.filesystem
    fs.rm([refs[1].path])
    with pytest.raises(CorruptFileError, match=r"missing file .*" + refs[1].path):
        driver.commit_segments(refs, writer="d", seq=1)
    assert (driver.version, driver.count(), driver.transaction("d")) == (0, 0, None)
    refs = open_log(store_url).write_segments(frame(40))
    fs.put(refs[2].path, fs.get(refs[2].path) + b"x")
    with pytest.raises(CorruptFileError, match=rf"{refs[2].path} holds {refs[2].bytes + 1} bytes"):
        driver.commit_segments(refs, writer="d", seq=1)
    assert (driver.version, driver.count(), driver.transaction("d")) == (0, 0, None)
    assert fs.exists(refs[0].path)  # refused files stay for vacuum()


def test_refs_of_another_log_or_tampered_are_refused(
    store_url: tuple[str, dict[str, Any]], driver: Log
) -> None:
    other = open_log(store_url, "other", key="k", time="t", partitions=PARTS)
    foreign = other.write_segments(frame(10))
    with pytest.raises(ConfigurationError, match=r"refs\[0\] .* was written to the log at .*other"):
        driver.commit_segments(foreign)
    ref = driver.write_segments(frame(10))[0]
    for bad in (
        {"path": "../other/" + foreign[0].path},
        {"path": "_delta_log/00000000000000000001.json"},
        {"path": ref.path.replace(f"p={ref.partition:03d}", f"p={(ref.partition + 1) % 3:03d}")},
        {"partition": PARTS, "path": f"data/p={PARTS:03d}/" + ref.path.rsplit("/", 1)[1]},
    ):
        with pytest.raises(ConfigurationError, match=r"not a segment file of this log"):
            driver.commit_segments([dataclasses.replace(ref, **bad)])
    with pytest.raises(ConfigurationError, match=r"impossible values"):
        driver.commit_segments([dataclasses.replace(ref, rows=0)])
    with pytest.raises(ConfigurationError, match=r"was written to the log at"):
        driver.commit_segments([dataclasses.replace(ref, created=ref.created + 1)])
    with pytest.raises(ConfigurationError, match=r"listed twice"):
        driver.commit_segments([ref, ref])
    with pytest.raises(TypeError, match=r"refs\[0\] must be a SegmentRef"):
        driver.commit_segments([ref.to_dict()])  # type: ignore[list-item]
    assert driver.version == 0 and other.version == 0


def test_refs_with_other_columns_are_refused(
    store_url: tuple[str, dict[str, Any]], driver: Log
) -> None:
    ints = open_log(store_url).write_segments(frame(5).with_columns(pl.col("v").cast(pl.Int64)))
    floats = open_log(store_url).write_segments(frame(5))
    with pytest.raises(SchemaError, match=r"refs\[\d\]: column 'v' expected dtype"):
        driver.commit_segments(floats + ints)
    assert driver.version == 0 and driver.schema is None
    driver.commit_segments(floats)
    with pytest.raises(SchemaError, match=r"column 'v' expected dtype Float64, found Int64"):
        driver.commit_segments(ints)
    with pytest.raises(SchemaError, match=r"write segments to log 'out'.*column 'v'"):
        driver.write_segments(frame(5).with_columns(pl.col("v").cast(pl.Int64)))
    assert driver.version == 1


def test_ref_from_dict_checks_its_fields() -> None:
    good = SegmentRef(
        "memory://s/l", 1, "data/p=000/1-" + "a" * 32 + ".parquet", 0, 3, 9, 7, 1, 2, "S"
    )
    assert SegmentRef.from_dict(good.to_dict()) == good
    for broken in ({**good.to_dict(), "rows": "3"}, {**good.to_dict(), "x": 1}, [1, 2]):
        with pytest.raises(ValueError, match=r"expected a segment reference"):
            SegmentRef.from_dict(broken)
    with pytest.raises(dataclasses.FrozenInstanceError):
        good.rows = 4  # type: ignore[misc]


# ---------------------------------------------------------------------- vacuum
def test_vacuum_removes_segments_of_failed_attempts(
    store_url: tuple[str, dict[str, Any]], driver: Log
) -> None:
    kept = open_log(store_url).write_segments(frame(30))
    failed = open_log(store_url).write_segments(frame(30, start=30))  # never committed
    driver.commit_segments(kept, writer="d", seq=1)
    assert driver.vacuum(retain=dt.timedelta(hours=1)) == []  # recent: maybe in flight
    assert sorted(driver.vacuum(retain=dt.timedelta(0))) == sorted(r.path for r in failed)
    assert sorted(driver.filesystem.find("data")) == sorted(r.path for r in kept)
    assert driver.scan().collect().height == 30
    with pytest.raises(CorruptFileError, match=r"missing file .*removed by vacuum"):
        driver.commit_segments(failed, writer="d", seq=2)
    assert driver.version == 1


# ---------------------------------------------------------------------- lost responses
@pytest.fixture
def lossy() -> Iterator[type[LossyStore]]:
    LossyStore.store.clear()
    LossyStore.pseudo_dirs[:] = [""]
    LossyStore.reset()
    yield LossyStore
    LossyStore.reset()


def _lossy_log(name: str) -> Log:
    return sk.Store(f"lossymem://{name}").log("l", key="k", time="t", partitions=PARTS)


@pytest.mark.parametrize("fault", ["lost", "resent"])
@pytest.mark.parametrize("writer", [None, "d"])
def test_commit_whose_answer_is_lost_commits_once(
    lossy: type[LossyStore], fault: str, writer: str | None
) -> None:
    log = _lossy_log(f"commit-{fault}-{writer}")
    log.append(frame(10))
    refs = sk.Store(log.url.rsplit("/", 1)[0]).log("l").write_segments(frame(30, start=10))
    lossy.reset({1: fault})  # the version file's create
    txn: dict[str, Any] = {"writer": writer, "seq": 1} if writer else {}
    res = log.commit_segments(refs, **txn)
    assert lossy.creates == 1 and not res.duplicate and res.rows == 30
    assert (log.version, log.count(), log.scan().collect().height) == (2, 40, 40)
    if writer:
        assert log.commit_segments(refs, writer=writer, seq=1).duplicate
    assert log.count() == 40


def test_commit_whose_outcome_is_unknown_is_retried_safely(lossy: type[LossyStore]) -> None:
    log = _lossy_log("unknown")
    refs = log.write_segments(frame(30))
    lossy.reset({1: "dark"})
    with pytest.raises(
        OutcomeUnknownError, match=r"retrying the same commit \(writer='d', seq=7\)"
    ):
        log.commit_segments(refs, writer="d", seq=7)
    lossy.dark = False
    assert log.commit_segments(refs, writer="d", seq=7).duplicate
    assert (log.version, log.count(), log.scan().collect().height) == (1, 30, 30)


def test_plain_commit_whose_outcome_is_unknown_is_never_doubled(lossy: type[LossyStore]) -> None:
    log = _lossy_log("unknown-plain")
    refs = log.write_segments(frame(30))
    lossy.reset({1: "dark"})
    with pytest.raises(OutcomeUnknownError, match=r"retry is refused with an error naming"):
        log.commit_segments(refs)
    lossy.dark = False
    with pytest.raises(ConfigurationError, match=r"committed by version 1 already"):
        log.commit_segments(refs)
    assert (log.version, log.count(), log.scan().collect().height) == (1, 30, 30)
