"""The Delta transaction-log protocol (streamkit.storage._delta) against delta-rs.

What ``load_snapshot`` parses must list exactly the files ``DeltaTable.file_uris()``
lists, at every version of tables written by ``deltalake`` (appends, overwrite,
delete, OPTIMIZE, vacuum, checkpoints); commits and checkpoints written here must
open in ``deltalake.DeltaTable`` and ``pl.scan_delta`` with the right rows.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamkit.errors import ConfigurationError, CorruptFileError, LogNotFoundError, SchemaError
from streamkit.storage import FileSystem
from streamkit.storage._delta import (
    LAST_CHECKPOINT,
    Snapshot,
    check_readable,
    check_writable,
    checkpoint_part_path,
    checkpoint_path,
    commit_path,
    data_path,
    decode_commit,
    encode_commit,
    encode_path,
    file_stats,
    latest_version,
    load_snapshot,
    parse_log_name,
    read_checkpoint,
    required_protocol,
    schema_from_delta,
    schema_to_delta,
    write_checkpoint,
)

deltalake = pytest.importorskip("deltalake")
DeltaTable = deltalake.DeltaTable
write_deltalake = deltalake.write_deltalake


def _frame(start: int, n: int, group: str = "a b") -> pa.Table:
    base = dt.datetime(2024, 1, 1)
    return pa.table(
        {
            "k": [f"k{(start + i) % 3}" for i in range(n)],
            "t": pa.array(
                [base + dt.timedelta(seconds=start + i) for i in range(n)], pa.timestamp("us")
            ),
            "v": pa.array([float(start + i) for i in range(n)]),
            "g": [group] * n,
        }
    )


def _ours(fs: FileSystem, snapshot: Snapshot) -> set[str]:
    return {fs.full_path(p) for p in snapshot.files}


def _theirs(table: Any) -> set[str]:
    return {os.path.abspath(u) for u in table.file_uris()}


def _assert_same_at_every_version(root: Path) -> None:
    fs = FileSystem(str(root))
    newest = DeltaTable(str(root)).version()
    assert latest_version(fs) == newest
    for version in range(newest + 1):
        try:
            theirs = DeltaTable(str(root), version=version)
        except Exception:  # delta-rs cannot load a version whose commits were cleaned up
            continue
        assert _ours(fs, load_snapshot(fs, version)) == _theirs(theirs), version


@pytest.mark.parametrize("partitioned", [False, True])
def test_snapshots_of_delta_rs_tables_list_their_files(tmp_path: Path, partitioned: bool) -> None:
    root = tmp_path / "t"
    by = ["g"] if partitioned else None
    write_deltalake(str(root), _frame(0, 5), partition_by=by)
    write_deltalake(str(root), _frame(5, 5, "c%d"), mode="append", partition_by=by)
    write_deltalake(str(root), _frame(10, 5), mode="append", partition_by=by)
    table = DeltaTable(str(root))
    table.delete("v < 3")
    table = DeltaTable(str(root))
    table.optimize.compact()
    table = DeltaTable(str(root))
    table.create_checkpoint()
    write_deltalake(str(root), _frame(15, 4), mode="append", partition_by=by)
    table = DeltaTable(str(root))
    table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    write_deltalake(str(root), _frame(19, 2), mode="overwrite", partition_by=by)
    write_deltalake(str(root), _frame(21, 3), mode="append", partition_by=by)
    _assert_same_at_every_version(root)
    fs = FileSystem(str(root))
    snapshot = load_snapshot(fs)
    assert snapshot.schema().names == ["k", "t", "v", "g"]
    assert snapshot.protocol is not None and snapshot.protocol["minReaderVersion"] == 3
    if partitioned:
        assert any("%" in body["path"] for body in load_snapshot(fs, 1).files.values())


def test_a_checkpoint_of_delta_rs_is_read_and_older_commits_are_not_needed(tmp_path: Path) -> None:
    root = tmp_path / "t"
    for i in range(4):
        write_deltalake(str(root), _frame(i * 3, 3), mode="append")
    DeltaTable(str(root)).create_checkpoint()
    write_deltalake(str(root), _frame(20, 3), mode="append")
    for version in range(3):  # log retention cleaned these up
        (root / commit_path(version)).unlink()
    fs = FileSystem(str(root))
    assert _ours(fs, load_snapshot(fs)) == _theirs(DeltaTable(str(root)))
    assert _ours(fs, load_snapshot(fs, 3)) == _theirs(DeltaTable(str(root), version=3))
    with pytest.raises(LogNotFoundError, match=r"no commit 0 .*log retention"):
        load_snapshot(fs, 2)


def test_a_version_gap_without_checkpoint_and_a_missing_table_are_clear(tmp_path: Path) -> None:
    root = tmp_path / "t"
    write_deltalake(str(root), _frame(0, 3))
    write_deltalake(str(root), _frame(3, 3), mode="append")
    (root / commit_path(0)).unlink()
    with pytest.raises(LogNotFoundError, match=r"no commit 0 \(_delta_log/0+\.json\)"):
        load_snapshot(FileSystem(str(root)))
    with pytest.raises(LogNotFoundError, match=r"no Delta table at .*holding _delta_log"):
        load_snapshot(FileSystem(str(tmp_path / "nothing")))
    with pytest.raises(LogNotFoundError, match="has no version 7: its newest version is 1"):
        load_snapshot(FileSystem(str(root)), 7)


def test_a_corrupt_commit_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "t"
    write_deltalake(str(root), _frame(0, 3))
    write_deltalake(str(root), _frame(3, 3), mode="append")
    (root / commit_path(1)).write_bytes(b'{"add": {"path": "x"')
    with pytest.raises(CorruptFileError, match=r"0+1\.json \(line 1\): not JSON"):
        load_snapshot(FileSystem(str(root)))


# ------------------------------------------------------------------ writing


def _write_data(root: Path, table: pa.Table, *, data_change: bool = True) -> dict[str, Any]:
    """Write one data file under ``root``; its add action."""
    name = f"part-{uuid.uuid4().hex}.parquet"
    pq.write_table(table, root / name)
    return {
        "add": {
            "path": encode_path(name),
            "partitionValues": {},
            "size": (root / name).stat().st_size,
            "modificationTime": 1_700_000_000_000,
            "dataChange": data_change,
            "stats": file_stats(table),
        }
    }


def _create(
    root: Path, schema: pa.Schema, configuration: dict[str, str] | None = None
) -> FileSystem:
    fs = FileSystem(str(root))
    actions = [
        {"commitInfo": {"timestamp": 1_700_000_000_000, "operation": "CREATE TABLE"}},
        {"protocol": required_protocol(schema)},
        {
            "metaData": {
                "id": str(uuid.uuid4()),
                "format": {"provider": "parquet", "options": {}},
                "schemaString": json.dumps(schema_to_delta(schema)),
                "partitionColumns": [],
                "configuration": configuration or {},
                "createdTime": 1_700_000_000_000,
            }
        },
    ]
    assert fs.put_new(commit_path(0), encode_commit(actions))
    return fs


def _sorted(table: pa.Table) -> pl.DataFrame:
    return pl.DataFrame(table).sort("v")


def test_commits_and_a_checkpoint_written_here_open_in_delta_rs_and_polars(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    schema = _frame(0, 1).schema
    fs = _create(root, schema, {"delta.deletedFileRetentionDuration": "interval 1 days"})
    parts = [_frame(i * 4, 4) for i in range(4)]
    adds = [_write_data(root, p) for p in parts]
    assert fs.put_new(
        commit_path(1), encode_commit([adds[0], {"txn": {"appId": "w", "version": 1}}])
    )
    assert fs.put_new(commit_path(2), encode_commit([adds[1], adds[2]]))
    removed = {
        "remove": {"path": adds[1]["add"]["path"], "dataChange": True, "deletionTimestamp": 1}
    }
    recent = {
        "remove": {
            "path": adds[2]["add"]["path"],
            "dataChange": True,
            "deletionTimestamp": int(dt.datetime.now().timestamp() * 1000),
        }
    }
    assert fs.put_new(commit_path(3), encode_commit([removed, recent, adds[3]]))
    expected = pa.concat_tables([parts[0], parts[3]])

    snapshot = load_snapshot(fs)
    assert snapshot.version == 3 and snapshot.txns == {"w": 1}
    assert set(snapshot.tombstones) == {data_path(removed["remove"]), data_path(recent["remove"])}
    table = DeltaTable(str(root))
    assert table.version() == 3
    assert _theirs(table) == _ours(fs, snapshot)
    assert _sorted(table.to_pyarrow_table()).equals(_sorted(expected))
    assert pl.scan_delta(str(root)).collect().sort("v").equals(_sorted(expected))

    write_checkpoint(fs, 3, snapshot)
    hint = json.loads(fs.get(LAST_CHECKPOINT))
    assert hint["version"] == 3 and hint["numOfAddFiles"] == 2
    rows = read_checkpoint(fs, 3)
    kinds = sorted(next(iter(a)) for a in rows)
    # the tombstone past the 1-day retention is gone, the recent one kept
    assert kinds == ["add", "add", "metaData", "protocol", "remove", "txn"]
    for version in range(3):  # only the checkpoint can tell delta-rs the table now
        (root / commit_path(version)).unlink()
    table = DeltaTable(str(root))
    assert table.version() == 3
    assert _theirs(table) == _ours(fs, snapshot)
    assert table.transaction_version("w") == 1
    assert _sorted(table.to_pyarrow_table()).equals(_sorted(expected))
    assert pl.scan_delta(str(root)).collect().sort("v").equals(_sorted(expected))
    again = load_snapshot(fs)
    assert again.files == snapshot.files and again.txns == snapshot.txns
    assert again.metadata == snapshot.metadata and again.protocol == snapshot.protocol

    # delta-rs appends on top of the checkpoint; both sides agree
    write_deltalake(str(root), _frame(100, 2), mode="append")
    assert _ours(fs, load_snapshot(fs)) == _theirs(DeltaTable(str(root)))


def test_stats_are_parsed_by_delta_rs_and_pruning_stays_correct(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    base = dt.datetime(2024, 1, 1)
    ntz = pa.table(
        {
            "t": pa.array([base + dt.timedelta(microseconds=1500)], pa.timestamp("us")),
            "z": pa.array([base + dt.timedelta(microseconds=1500)], pa.timestamp("us", "UTC")),
            "v": [1.0],
        }
    )
    fs = _create(root, ntz.schema)
    assert fs.put_new(commit_path(1), encode_commit([_write_data(root, ntz)]))
    table = DeltaTable(str(root))
    row = pa.table(table.get_add_actions(flatten=True)).to_pylist()[0]
    assert row["num_records"] == 1 and row["null_count.v"] == 0
    assert row["max.t"] == base + dt.timedelta(milliseconds=2)  # rounded up
    assert row["min.t"] == base + dt.timedelta(milliseconds=1)  # rounded down
    assert row["max.z"] == (base + dt.timedelta(milliseconds=2)).replace(tzinfo=dt.UTC)
    cut = base + dt.timedelta(microseconds=1200)
    got = pl.scan_delta(str(root)).filter(pl.col("t") > cut).collect()
    assert got.height == 1
    got = pl.scan_delta(str(root)).filter(pl.col("z") > cut.replace(tzinfo=dt.UTC)).collect()
    assert got.height == 1
    got = (
        pl.scan_delta(str(root)).filter(pl.col("t") > base + dt.timedelta(milliseconds=3)).collect()
    )
    assert got.height == 0


def test_a_multi_part_checkpoint_is_read(tmp_path: Path) -> None:
    root = tmp_path / "t"
    for i in range(3):
        write_deltalake(str(root), _frame(i * 2, 2), mode="append")
    fs = FileSystem(str(root))
    snapshot = load_snapshot(fs)
    write_checkpoint(fs, 2, snapshot)
    whole = pq.read_table(root / checkpoint_path(2))
    (root / checkpoint_path(2)).unlink()
    for part, piece in enumerate((whole.slice(0, 2), whole.slice(2)), 1):
        buf = io.BytesIO()
        pq.write_table(piece, buf)
        assert fs.put_new(checkpoint_part_path(2, part, 2), buf.getvalue())
    for version in range(2):
        (root / commit_path(version)).unlink()
    again = load_snapshot(fs)
    assert again.files == snapshot.files and again.version == 2
    assert _ours(fs, again) == _theirs(DeltaTable(str(root)))
    # an incomplete multi-part checkpoint is not used
    (root / checkpoint_part_path(2, 2, 2)).unlink()
    with pytest.raises(LogNotFoundError, match="no commit 0"):
        load_snapshot(fs)


@pytest.mark.s3
def test_on_s3_snapshots_and_checkpoints_agree_with_delta_rs(
    seaweedfs: Any, s3_storage_options: dict[str, Any]
) -> None:
    url = f"s3://{seaweedfs['bucket']}/{uuid.uuid4().hex}/t"
    options = {
        "AWS_ENDPOINT_URL": seaweedfs["endpoint_url"],
        "AWS_ACCESS_KEY_ID": seaweedfs["key"],
        "AWS_SECRET_ACCESS_KEY": seaweedfs["secret"],
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
        "aws_conditional_put": "etag",
    }
    write_deltalake(url, _frame(0, 3), storage_options=options)
    write_deltalake(url, _frame(3, 3), mode="append", storage_options=options)
    DeltaTable(url, storage_options=options).delete("v < 2")
    fs = FileSystem(url, s3_storage_options)
    snapshot = load_snapshot(fs)
    table = DeltaTable(url, storage_options=options)
    assert {f"s3://{fs.full_path(p)}" for p in snapshot.files} == set(table.file_uris())
    write_checkpoint(fs, snapshot.version, snapshot)
    fs.rm([commit_path(0), commit_path(1)])
    table = DeltaTable(url, storage_options=options)
    assert table.to_pyarrow_table().num_rows == 4
    assert load_snapshot(fs).files == snapshot.files


# ------------------------------------------------------------------ units


def test_names() -> None:
    assert commit_path(0) == "_delta_log/00000000000000000000.json"
    assert parse_log_name("00000000000000000003.crc") == (3, "crc")
    assert parse_log_name(
        "00000000000000000003.checkpoint.1b2c3d4e-aaaa-bbbb-cccc-0123456789ab.json"
    ) == (
        3,
        "checkpoint-v2",
    )
    assert parse_log_name("00000000000000000001.00000000000000000009.compacted.json") == (
        1,
        "compacted",
    )
    assert parse_log_name("00000000000000000003.json.tmp-1-x") is None
    with pytest.raises(ValueError, match="integer >= 0"):
        commit_path(-1)


def test_commit_round_trip_and_malformed_lines() -> None:
    actions: list[dict[str, Any]] = [
        {"add": {"path": "é.parquet", "size": 1}},
        {"newKind": {"x": 1}},
    ]
    data = encode_commit(actions)
    assert data.count(b"\n") == 2 and b" " not in data
    assert decode_commit(data, "c") == actions
    with pytest.raises(ValueError, match="single-key"):
        encode_commit([{"add": {}, "remove": {}}])
    with pytest.raises(ValueError, match="cannot be written as JSON"):
        encode_commit([{"add": {"x": float("nan")}}])
    for bad, what in [
        (b"[1]", "one action object"),
        (b'{"txn":{"appId":"a"}}', "txn.version"),
        (b'{"add":{"path":"a","size":true}}', "add.size"),
        (b"\xff", "not UTF-8"),
    ]:
        with pytest.raises(CorruptFileError, match=f"corrupt Delta commit here .*{what}"):
            decode_commit(bad, "here")


def test_schema_round_trip_and_refusals() -> None:
    schema = pa.schema(
        [
            pa.field("a", pa.int8(), nullable=False),
            ("b", pa.large_string()),
            ("c", pa.dictionary(pa.int32(), pa.string())),
            ("d", pa.timestamp("ns", tz="Europe/Paris")),
            ("e", pa.decimal128(10, 2)),
            ("f", pa.list_(pa.struct([("x", pa.timestamp("ms"))]))),
            ("g", pa.map_(pa.string(), pa.float32())),
            ("h", pa.date32()),
            ("i", pa.binary()),
        ]
    )
    struct = schema_to_delta(schema)
    back = schema_from_delta(json.dumps(struct))
    assert back.field("a").type == pa.int8() and not back.field("a").nullable
    assert back.field("b").type == pa.string() and back.field("c").type == pa.string()
    assert back.field("d").type == pa.timestamp("us", tz="UTC")
    assert back.field("e").type == pa.decimal128(10, 2)
    assert back.field("f").type.value_type.field("x").type == pa.timestamp("us")
    assert schema_to_delta(back) == struct
    assert required_protocol(schema)["readerFeatures"] == ["timestampNtz"]  # nested ntz
    for t, hint in [
        (pa.uint64(), "signed integer"),
        (pa.float16(), "Float32"),
        (pa.duration("us"), "integer count"),
        (pa.null(), "typed column"),
    ]:
        with pytest.raises(SchemaError, match=f"column 'x' has type .*{hint}"):
            schema_to_delta(pa.schema([("x", t)]))
    with pytest.raises(SchemaError, match=r"column 's\.y'"):
        schema_to_delta(pa.schema([("s", pa.struct([("y", pa.time64("us"))]))]))
    with pytest.raises(SchemaError, match="column 'v' has Delta type 'variant'"):
        schema_from_delta({"type": "struct", "fields": [{"name": "v", "type": "variant"}]})


def test_schema_written_here_matches_what_delta_rs_writes(tmp_path: Path) -> None:
    table = _frame(0, 2)
    write_deltalake(str(tmp_path / "t"), table)
    snapshot = load_snapshot(FileSystem(str(tmp_path / "t")))
    assert snapshot.metadata is not None
    assert json.loads(snapshot.metadata["schemaString"]) == schema_to_delta(table.schema)
    assert snapshot.protocol is not None
    assert {k: v for k, v in snapshot.protocol.items()} == required_protocol(table.schema)


def test_file_stats_bounds() -> None:
    table = pa.table(
        {
            "n": pa.array([3, None, -1], pa.int64()),
            "f": [1.0, float("nan"), 2.0],
            "s": ["b", "a" * 40, "z" * 40],
            "d": pa.array([dt.date(2024, 1, 2), dt.date(2024, 1, 1), None]),
            "ts": pa.array([0, 1_000_000_001, None], pa.timestamp("ns")),
            "l": [[1], [], None],
        }
    )
    stats = json.loads(file_stats(table))
    assert stats["numRecords"] == 3
    assert stats["minValues"] == {
        "n": -1,
        "s": "a" * 32,
        "d": "2024-01-01",
        "ts": "1970-01-01T00:00:00.000",
    }
    assert stats["maxValues"] == {"n": 3, "d": "2024-01-02", "ts": "1970-01-01T00:00:01.001"}
    assert stats["nullCount"] == {"n": 1, "f": 0, "s": 0, "d": 1, "ts": 1}
    assert json.loads(file_stats(table, ["n"]))["nullCount"] == {"n": 1}


def test_check_readable_and_writable() -> None:
    check_readable({"minReaderVersion": 3, "readerFeatures": ["timestampNtz"]}, "t")
    with pytest.raises(
        ConfigurationError, match=r"reader features deletionVectors, columnMapping.*PURGE"
    ):
        check_readable(
            {"minReaderVersion": 3, "readerFeatures": ["deletionVectors", "columnMapping"]}, "t"
        )
    with pytest.raises(ConfigurationError, match="reader version 4"):
        check_readable({"minReaderVersion": 4}, "t")
    with pytest.raises(ConfigurationError, match="columnMapping"):
        check_readable({"minReaderVersion": 2}, "t")
    none_mode = {"configuration": {"delta.columnMapping.mode": "none"}}
    check_readable({"minReaderVersion": 2}, "t", none_mode)
    check_readable({"minReaderVersion": 3, "readerFeatures": ["columnMapping"]}, "t", none_mode)
    with pytest.raises(ConfigurationError, match="columnMapping"):
        check_readable(
            {"minReaderVersion": 2}, "t", {"configuration": {"delta.columnMapping.mode": "name"}}
        )
    with pytest.raises(CorruptFileError, match="malformed protocol"):
        check_readable({}, "t")
    check_writable({"minWriterVersion": 7, "writerFeatures": ["timestampNtz", "appendOnly"]}, "t")
    with pytest.raises(ConfigurationError, match="writer features deletionVectors"):
        check_writable({"minWriterVersion": 7, "writerFeatures": ["deletionVectors"]}, "t")


def test_a_table_with_unsupported_reader_features_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "t"
    write_deltalake(str(root), _frame(0, 2))
    fs = FileSystem(str(root))
    upgrade = {
        "protocol": {
            "minReaderVersion": 3,
            "minWriterVersion": 7,
            "readerFeatures": ["timestampNtz", "deletionVectors"],
            "writerFeatures": ["timestampNtz", "deletionVectors"],
        }
    }
    assert fs.put_new(commit_path(1), encode_commit([upgrade]))
    with pytest.raises(
        ConfigurationError,
        match=f"Delta table {root} at version 1 needs reader feature deletionVectors",
    ):
        load_snapshot(fs)
    assert sorted(load_snapshot(fs, 0).files)  # the older version stays readable


def test_last_checkpoint_spares_the_listing_and_a_stale_one_is_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "t"
    for i in range(3):
        write_deltalake(str(root), _frame(i * 3, 3), mode="append")
    DeltaTable(str(root)).create_checkpoint()  # at version 2
    for i in range(10):
        write_deltalake(str(root), _frame(20 + i, 1), mode="append")
    fs = FileSystem(str(root))
    listed = load_snapshot(fs, listing=fs.ls("_delta_log"))
    assert listed.version == 12

    def no_listing(path: str = "") -> list[str]:
        raise AssertionError("listed")

    with monkeypatch.context() as patch:
        patch.setattr(fs, "ls", no_listing)
        fast = load_snapshot(fs)
        assert fast.version == 12 and fast.files == listed.files
        assert load_snapshot(fs, 5).files == load_snapshot(fs, 5, listing=listed_names(root)).files
    assert _ours(fs, fast) == _theirs(DeltaTable(str(root)))

    # a newer checkpoint whose _last_checkpoint was never written, then log
    # cleanup: the stale hint's checkpoint survives but the commits after it are gone
    hint = (root / LAST_CHECKPOINT).read_bytes()
    DeltaTable(str(root)).create_checkpoint()  # at version 12
    (root / LAST_CHECKPOINT).write_bytes(hint)
    for version in range(12):
        (root / commit_path(version)).unlink()
    again = load_snapshot(fs)
    assert again.version == 12 and again.files == listed.files
    # a hint naming a checkpoint that is gone is ignored
    (root / checkpoint_path(2)).unlink()
    assert load_snapshot(fs).files == listed.files


def listed_names(root: Path) -> list[str]:
    return sorted(os.listdir(root / "_delta_log"))


def test_a_checkpoint_round_trips_every_field_and_refuses_non_string_maps(tmp_path: Path) -> None:
    fs = FileSystem(str(tmp_path / "t"))
    schema = pa.schema([("p", pa.string()), ("v", pa.int64())])
    metadata = {
        "id": "x",
        "format": {"provider": "parquet", "options": {}},
        "schemaString": json.dumps(schema_to_delta(schema)),
        "partitionColumns": ["p"],
        "configuration": {"streamkit.key": "k"},
        "createdTime": 5,
    }
    s = Snapshot()
    s.apply(
        0,
        [
            {"protocol": required_protocol(schema)},
            {"metaData": metadata},
            {"txn": {"appId": "w", "version": 9}},
            {
                "add": {
                    "path": "p=a%20b/x.parquet",
                    "partitionValues": {"p": "a b"},
                    "size": 3,
                    "modificationTime": 4,
                    "dataChange": True,
                    "stats": '{"numRecords":1}',
                    "tags": {"crc32": "17", "none": None},
                }
            },
            {
                "add": {
                    "path": "p=__HIVE_DEFAULT_PARTITION__/y.parquet",
                    "size": 1,
                    "partitionValues": {"p": None},
                    "modificationTime": 1,
                    "dataChange": True,
                }
            },
        ],
    )
    s.apply(
        1, [{"remove": {"path": "gone.parquet", "dataChange": True, "deletionTimestamp": 2**50}}]
    )
    write_checkpoint(fs, 1, s)
    back = load_snapshot(fs)
    assert back == s
    assert sorted(back.files) == ["p=__HIVE_DEFAULT_PARTITION__/y.parquet", "p=a b/x.parquet"]
    s.metadata = {**metadata, "configuration": {"n": 1}}
    with pytest.raises(ValueError, match=r"metaData\.configuration cannot be stored"):
        write_checkpoint(fs, 1, s)
