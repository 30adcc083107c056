"""What storage declares for the layers built on it (pipelines, the CLI).

Only public names of ``streamkit.storage`` are used here: ``Log.retract``,
``Log.writer_history``, ``Log.check_manifest``, ``Store.log_at``,
``Store.has_log``, ``FileSystem``, ``crc32`` and ``safe_relpath``. Every test
runs on memory, local and S3 (the ``store`` fixture). File names below are the
log's on-disk layout, documented in ``streamkit/storage/log.py``.
"""

from __future__ import annotations

import json
import zlib

import polars as pl
import pytest

import streamkit.storage as storage
from streamkit.errors import ConfigurationError, CorruptFileError, LogNotFoundError, SchemaError
from streamkit.storage import FileSystem, Position, Store, crc32, safe_relpath

QUARANTINE = "_pipelines/p/quarantine"
SNAPSHOT_EVERY = 32  # snapshots, checkpoints and their hints are written every 32 versions


def version_file(v: int) -> str:
    return f"_delta_log/{v:020d}.json"


def canonical(body: dict[str, object]) -> bytes:
    """The bytes a manifest file's checksum covers: sorted keys, no spaces."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def frame(start: int, n: int = 2) -> pl.DataFrame:
    return pl.DataFrame({"k": [f"k{i % 3}" for i in range(start, start + n)]}).with_columns(
        t=pl.int_range(start, start + n, dtype=pl.Int64)
    )


# ---------------------------------------------------------------------- exports
def test_storage_exports_what_the_layers_above_need(store: Store) -> None:
    assert storage.__all__ == sorted(storage.__all__)
    assert {"FileSystem", "crc32", "safe_relpath"} <= set(storage.__all__)
    assert isinstance(store.filesystem, FileSystem)
    assert isinstance(store.filesystem.child("_pipelines/p"), FileSystem)
    log = store.log("e", key="k", time="t")
    assert isinstance(log.filesystem, FileSystem)


def test_crc32_is_zlibs() -> None:
    for data in (b"", b"streamkit", bytes(range(256)) * 1000):
        assert crc32(data) == zlib.crc32(data)
    assert crc32(memoryview(b"streamkit")) == zlib.crc32(b"streamkit")


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a//b", "a/./b", "c:/x", "a\\b", "", 3])
def test_safe_relpath_rejects_paths_that_leave_their_folder(bad: object) -> None:
    with pytest.raises(CorruptFileError, match=r"cp\.json"):
        safe_relpath(bad, "cp.json", "a state file path")


def test_safe_relpath_accepts_plain_relative_paths() -> None:
    assert safe_relpath("state/g=001/3-ab.arrow", "cp.json") == "state/g=001/3-ab.arrow"


# ---------------------------------------------------------------------- Log.retract
def test_retract_removes_the_writers_appends_in_the_ranges(store: Store) -> None:
    log = store.log("out", key="k", time="t", partitions=2)
    for s in range(6):
        log.append(frame(10 * s), writer="pipe", seq=s)
    log.append(frame(100), writer="other", seq=3)
    end, version = log.end(), log.version

    removed = log.retract("pipe", [(1, 2), (5, 9)])

    assert removed > 0
    assert log.version == version + 1  # one version for all ranges
    left = log.segments()
    assert set(left.filter(pl.col("writer") == "pipe")["writer_seq"].to_list()) == {0, 3, 4}
    assert set(left.filter(pl.col("writer") == "other")["writer_seq"].to_list()) == {3}
    assert log.end() == end  # offsets are never reused
    assert sorted(log.scan().collect()["t"].to_list()) == [0, 1, 30, 31, 40, 41, 100, 101]
    assert store.log("out").count() == 8  # other readers see it at once


def test_retract_commits_nothing_when_nothing_matches(store: Store) -> None:
    log = store.log("out", key="k", time="t")
    log.append(frame(0), writer="pipe", seq=0)
    log.retract("pipe", [(0, 0)])
    version = log.version
    assert log.retract("pipe", [(0, 0)]) == 0  # repeated: a no-op
    assert log.retract("nobody", [(0, 99)]) == 0
    assert log.retract("pipe", []) == 0
    assert log.version == version
    assert log.count() == 0


# ---------------------------------------------------------------------- Log.writer_history
def test_writer_history_lists_every_committed_append(store: Store) -> None:
    log = store.log("out", key="k", time="t")
    assert log.writer_history("pipe") == {}
    for s in (0, 1, 2):
        log.append(frame(s), writer="pipe", seq=s, meta={"start": s, "end": s + 1})
    log.append(frame(9), writer="other", seq=7, meta={"x": 1})
    log.append(frame(5), writer="pipe", seq=3)  # no meta
    log.append(frame(6))  # no writer
    log.retract("pipe", [(1, 1)])
    log.truncate(before=Position(log.end().offset))

    history = log.writer_history("pipe")

    assert history == {
        0: {"start": 0, "end": 1},
        1: {"start": 1, "end": 2},  # retracted, still on record
        2: {"start": 2, "end": 3},
        3: {},
    }
    assert list(history) == [0, 1, 2, 3]
    assert log.writer_history("other") == {7: {"x": 1}}
    txn = log.transaction("pipe")
    assert txn is not None and history[txn.seq] == txn.meta


def test_writer_history_spans_snapshots_and_a_duplicate_is_not_recorded(store: Store) -> None:
    log = store.log("out", key="k", time="t")
    for s in range(SNAPSHOT_EVERY + 3):
        log.append(frame(s, 1), writer="pipe", seq=s, meta={"b": s})
    assert log.append(frame(0, 1), writer="pipe", seq=4).duplicate
    assert log.writer_history("pipe") == {s: {"b": s} for s in range(SNAPSHOT_EVERY + 3)}


def test_writer_history_names_a_damaged_version_file(store: Store) -> None:
    log = store.log("out", key="k", time="t")
    log.append(frame(0), writer="pipe", seq=0)
    log.filesystem.put(version_file(1), b"{not json")
    with pytest.raises(CorruptFileError, match=r"_delta_log/00000000000000000001\.json"):
        log.writer_history("pipe")


# ---------------------------------------------------------------------- Log.check_manifest
def test_check_manifest_counts_every_manifest_file(store: Store) -> None:
    log = store.log("out", key="k", time="t")
    assert log.check_manifest() == 1  # the creation
    for s in range(SNAPSHOT_EVERY):
        log.append(frame(s, 1))
    names = log.filesystem.ls("_streamkit")
    assert f"{SNAPSHOT_EVERY:020d}.snapshot.json" in names and "_last_snapshot.json" in names
    names = log.filesystem.ls("_delta_log")
    assert f"{SNAPSHOT_EVERY:020d}.checkpoint.parquet" in names and "_last_checkpoint" in names
    # versions 0..32, streamkit's snapshot of version 32 and its hint, Delta's
    # checkpoint of version 32 and its hint
    assert log.check_manifest() == SNAPSHOT_EVERY + 1 + 4


def test_check_manifest_says_to_restore_a_damaged_version_file(store: Store) -> None:
    log = store.log("out", key="k", time="t")
    log.append(frame(0))
    fs = log.filesystem
    data = fs.get(version_file(1))
    fs.put(version_file(1), data[: len(data) // 2])
    with pytest.raises(CorruptFileError) as info:
        log.check_manifest()
    message = str(info.value)
    assert f"{log.url.rstrip('/')}/{version_file(1)}" in message
    assert "restore" in message and "redundant" not in message


@pytest.mark.parametrize("which", ["snapshot", "hint", "hint without a version"])
def test_check_manifest_says_to_delete_a_damaged_snapshot_or_hint(store: Store, which: str) -> None:
    log = store.log("out", key="k", time="t")
    for s in range(SNAPSHOT_EVERY):
        log.append(frame(s, 1))
    fs = log.filesystem
    path = (
        f"_streamkit/{SNAPSHOT_EVERY:020d}.snapshot.json"
        if which == "snapshot"
        else "_streamkit/_last_snapshot.json"
    )
    if which == "hint without a version":
        # a well-formed file (its checksum matches) that names no snapshot version
        body = {"format": 1, "version": "latest"}
        fs.put(path, json.dumps({**body, "checksum": crc32(canonical(body))}).encode())
    else:
        fs.put(path, b"garbage")
    with pytest.raises(CorruptFileError) as info:
        log.check_manifest()
    message = str(info.value)
    assert path in message
    assert "redundant copy" in message and "delete the file" in message
    if which == "hint without a version":
        assert "no snapshot version" in message
    fs.rm([path])  # what the message says to do
    assert log.check_manifest() == SNAPSHOT_EVERY + 1 + 3
    assert log.count() == SNAPSHOT_EVERY


# ---------------------------------------------------------------------- Store.log_at / has_log
def test_log_at_creates_and_reopens_a_nested_log(store: Store) -> None:
    assert not store.has_log(QUARANTINE)
    with pytest.raises(LogNotFoundError):
        store.log_at(QUARANTINE)
    q = store.log_at(QUARANTINE, key="k", time="t", partitions=2)
    q.append(frame(0, 4))
    assert store.has_log(QUARANTINE)
    again = store.log_at(QUARANTINE)
    assert (again.key, again.time, again.partitions, again.count()) == ("k", "t", 2, 4)
    assert store.log_at("_pipelines//p/quarantine/").count() == 4  # same path, normalised
    assert store.logs() == []  # not a user log
    with pytest.raises(SchemaError):
        store.log_at(QUARANTINE, key="other", time="t")


def test_log_at_and_log_agree_on_user_logs(store: Store) -> None:
    store.log("orders", key="k", time="t").append(frame(0))
    assert store.has_log("orders") and not store.has_log("missing")
    assert store.log_at("orders").count() == 2
    assert store.logs() == ["orders"]


@pytest.mark.parametrize("bad", ["", "/", "..", "_pipelines/../../x", "a/./b", "..\\x", None])
def test_log_at_refuses_paths_that_leave_the_store(store: Store, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="log path"):
        store.log_at(bad, key="k", time="t")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="log path"):
        store.has_log(bad)  # type: ignore[arg-type]
    assert store.filesystem.ls("") == []  # nothing created
