"""sk.DeltaLog: a Delta table written by delta-rs, read by pipelines exactly once.

Every test writes the table with ``deltalake`` (appends, OPTIMIZE, vacuum,
deletes, overwrites) and compares what the pipeline produced with a plain
reference: each appended row read exactly once, the machine's state equal to
one run over all the rows.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import streamkit as sk
from streamkit.errors import CheckpointError, ConfigurationError, LogNotFoundError, SchemaError

deltalake = pytest.importorskip("deltalake")
DeltaTable = deltalake.DeltaTable
write_deltalake = deltalake.write_deltalake

LAMP = sk.Machine(
    "lamp",
    states=["off", "on"],
    initial="off",
    final=["off", "on"],
    transitions=[("off", "switch", "on"), ("on", "switch", "off")],
)


class Table:
    """A Delta table written by delta-rs, on a local folder or S3."""

    def __init__(self, url: str, delta_options: dict[str, str], fs_options: dict[str, Any]):
        self.url = url
        self.options = delta_options
        self.fs_options = fs_options
        self.written = 0

    def append(self, n: int, *, mode: str = "append") -> list[str]:
        first = self.written
        self.written += n
        frame = pl.DataFrame(
            {
                "k": [f"k{i % 4}" for i in range(first, first + n)],
                "t": list(range(first, first + n)),
                "id": [f"r{i}" for i in range(first, first + n)],
                "event": ["switch"] * n,
            }
        )
        write_deltalake(self.url, frame.to_arrow(), mode=mode, storage_options=self.options)
        return frame["id"].to_list()

    def table(self) -> Any:
        return DeltaTable(self.url, storage_options=self.options)

    def optimize(self) -> None:
        self.table().optimize.compact()

    def vacuum(self) -> None:
        self.table().vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)

    def log(self) -> sk.DeltaLog:
        return sk.DeltaLog(self.url, key="k", time="t", storage_options=self.fs_options)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Table:
    if request.param == "local":
        return Table(str(tmp_path / "events"), {}, {})
    server = request.getfixturevalue("seaweedfs")
    fs_options = request.getfixturevalue("s3_storage_options")
    delta_options = {
        "AWS_ENDPOINT_URL": server["endpoint_url"],
        "AWS_ACCESS_KEY_ID": server["key"],
        "AWS_SECRET_ACCESS_KEY": server["secret"],
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
        "aws_conditional_put": "etag",  # SeaweedFS honours If-None-Match: no lock needed
    }
    return Table(f"s3://{server['bucket']}/{uuid.uuid4().hex}/events", delta_options, fs_options)


def _pipe(store: sk.Store, source: sk.DeltaLog, batch_rows: int = 7) -> sk.Pipeline:
    return (
        sk.Pipeline("lamps", store, batch_rows=batch_rows)
        .read(source)
        .with_columns(seen=pl.col("id"))
        .transitions(LAMP, event="event")
        .write(store.log("history", key="key", time="time"))
    )


def _copy(store: sk.Store, source: sk.DeltaLog) -> sk.Pipeline:
    return (
        sk.Pipeline("copy", store, batch_rows=5)
        .read(source)
        .write(store.log("out", key="k", time="t"))
    )


def _ids(store: sk.Store) -> list[str]:
    return sorted(store.log("out").scan().collect()["id"].to_list())


def _reference(tmp_path: Path, ids: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """State and history of one run over all the rows, from a table written at once."""
    n = len(ids)
    ref = Table(str(tmp_path / f"reference-{uuid.uuid4().hex}"), {}, {})
    ref.append(n)
    store = sk.Store(str(tmp_path / f"reference-lake-{uuid.uuid4().hex}"))
    pipe = _pipe(store, ref.log(), batch_rows=1_000_000)
    pipe.run(progress=False)
    return pipe.state(), store.log("history").scan().collect()


def test_appends_compactions_and_vacuum_are_read_exactly_once(table: Table, tmp_path: Path) -> None:
    store = sk.Store(str(tmp_path / "lake"))
    expected = table.append(10) + table.append(6)
    assert _copy(store, table.log()).run(progress=False).rows_in == 16
    assert _pipe(store, table.log()).run(progress=False).rows_in == 16
    table.optimize()
    table.vacuum()  # the files read are gone: nothing needs them
    assert _copy(store, table.log()).run(progress=False).rows_in == 0
    assert _pipe(store, table.log()).run(progress=False).rows_in == 0
    expected += table.append(9) + table.append(4)
    # stop inside the new files: the position is mid-version, mid-file
    assert _pipe(store, table.log()).run(max_batches=1, progress=False).rows_in == 7
    assert _copy(store, table.log()).run(max_batches=1, progress=False).rows_in == 5
    table.optimize()  # compacts files not read yet: their originals are read, once
    assert _pipe(store, table.log()).run(progress=False).rows_in == 6
    assert _copy(store, table.log()).run(progress=False).rows_in == 8
    table.vacuum()
    expected += table.append(5)
    assert _pipe(store, table.log()).run(progress=False).rows_in == 5
    assert _copy(store, table.log()).run(progress=False).rows_in == 5
    assert _ids(store) == sorted(expected)

    state, history = _reference(tmp_path, expected)
    pipe = _pipe(store, table.log())
    assert pipe.state().sort("key").equals(state.sort("key"))
    got = store.log("history").scan().collect()
    assert got.sort("time", "key").equals(history.sort("time", "key"))
    assert pipe.verify().ok
    # a position stays small: one version string, no list of the files read
    end = table.log().end()
    assert end.files is not None and end.files.files == ()
    assert end.files.watermark == f"{len(table.table().history()):020d}"


def test_a_delete_or_overwrite_of_rows_read_is_an_error_naming_the_version(
    tmp_path: Path,
) -> None:
    table = Table(str(tmp_path / "events"), {}, {})
    store = sk.Store(str(tmp_path / "lake"))
    table.append(8)
    _copy(store, table.log()).run(progress=False)
    before = _copy(store, table.log()).checkpoints().height
    table.table().delete("t < 2")  # version 1
    table.append(3)  # version 2
    with pytest.raises(CheckpointError, match=r"version 1 \(DELETE\) removed .*already read"):
        _copy(store, table.log()).run(progress=False)
    assert _copy(store, table.log()).checkpoints().height == before  # nothing committed
    # the remedy the message gives: reprocess the table as it is now
    _copy(store, table.log()).run(from_checkpoint=0, progress=False)
    assert _ids(store) == sorted(f"r{i}" for i in range(2, 11))

    table.append(2, mode="overwrite")  # version 3
    with pytest.raises(
        CheckpointError, match=r"version 3 \(WRITE\) removed .*run\(from_checkpoint=0\)"
    ):
        _copy(store, table.log()).run(progress=False)


def test_rows_deleted_before_they_were_read_are_simply_not_read(tmp_path: Path) -> None:
    table = Table(str(tmp_path / "events"), {}, {})
    store = sk.Store(str(tmp_path / "lake"))
    table.append(5)
    _copy(store, table.log()).run(progress=False)
    table.append(5)
    table.table().delete("t = 7")  # rewrites the unread file without row 7
    assert _copy(store, table.log()).run(progress=False).rows_in == 4
    assert _ids(store) == sorted(f"r{i}" for i in range(10) if i != 7)


def test_files_compacted_and_vacuumed_before_they_were_read_are_a_clear_error(
    tmp_path: Path,
) -> None:
    table = Table(str(tmp_path / "events"), {}, {})
    store = sk.Store(str(tmp_path / "lake"))
    table.append(5)
    _copy(store, table.log()).run(progress=False)
    table.append(5)
    table.optimize()
    table.vacuum()
    with pytest.raises(LogNotFoundError, match=r"is gone, but this pipeline has yet to .*vacuum"):
        _copy(store, table.log()).run(progress=False)


def test_commits_removed_by_log_retention_are_a_clear_error(tmp_path: Path) -> None:
    table = Table(str(tmp_path / "events"), {}, {})
    store = sk.Store(str(tmp_path / "lake"))
    table.append(3)
    _copy(store, table.log()).run(progress=False)
    table.append(3)
    table.append(3)
    table.table().create_checkpoint()
    for version in (0, 1):  # what log retention does once a checkpoint covers them
        (Path(table.url) / "_delta_log" / f"{version:020d}.json").unlink()
    with pytest.raises(
        LogNotFoundError, match=r"read up to version 0, but commit 1 .*is gone: log retention"
    ):
        _copy(store, table.log()).run(progress=False)
    assert _copy(store, table.log()).run(from_checkpoint=0, progress=False).rows_in == 9


def test_unsupported_features_and_schemas_are_refused(tmp_path: Path) -> None:
    table = Table(str(tmp_path / "events"), {}, {})
    table.append(3)
    with pytest.raises(SchemaError, match="expected a key column 'user'"):
        sk.DeltaLog(table.url, key="user", time="t")
    with pytest.raises(SchemaError, match="time column 'id' to be Datetime or an integer"):
        sk.DeltaLog(table.url, key="k", time="id")
    with pytest.raises(LogNotFoundError, match="no Delta table at"):
        sk.DeltaLog(str(tmp_path / "nothing"), key="k", time="t")
    with pytest.raises(ConfigurationError, match="read-only"):
        table.log().append(pl.DataFrame())
    log = table.log()
    seen = log.end()
    logdir = Path(table.url) / "_delta_log"
    # the deletion-vector feature alone is fine (Databricks turns it on by default)
    features = '"readerFeatures":["timestampNtz","deletionVectors"]'
    protocol = f'{{"protocol":{{"minReaderVersion":3,"minWriterVersion":7,{features},'
    protocol += f"{features.replace('reader', 'writer')}}}}}\n"
    (logdir / f"{1:020d}.json").write_text(protocol)
    assert log.plan(seen).files.height == 0
    assert table.log().count() == 3
    # ... a file that carries a deletion vector is refused
    dv = {
        "storageType": "u",
        "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^",
        "sizeInBytes": 34,
        "cardinality": 1,
    }
    add = {
        "add": {
            "path": "x.parquet",
            "size": 9,
            "partitionValues": {},
            "dataChange": True,
            "modificationTime": 1,
            "deletionVector": dv,
        }
    }
    (logdir / f"{2:020d}.json").write_text(json.dumps(add) + "\n")
    with pytest.raises(ConfigurationError, match=r"'x\.parquet' has a deletion vector.*PURGE"):
        log.plan(seen)
    with pytest.raises(ConfigurationError, match="deletion vector"):
        table.log().count()
    # other reader features are refused naming the version
    v2 = protocol.replace("deletionVectors", "v2Checkpoint")
    (logdir / f"{2:020d}.json").write_text(v2)  # in place of the commit above
    with pytest.raises(ConfigurationError, match=r"version 2 needs reader feature v2Checkpoint"):
        log.plan(seen)
    with pytest.raises(ConfigurationError, match="v2Checkpoint"):
        table.log()


def test_a_schema_change_is_an_error_naming_the_version(tmp_path: Path) -> None:
    table = Table(str(tmp_path / "events"), {}, {})
    table.append(3)
    log = table.log()
    seen = log.end()
    extra = pl.DataFrame({"k": ["x"], "t": [9], "id": ["r9"], "event": ["switch"], "n": [1]})
    write_deltalake(table.url, extra.to_arrow(), mode="append", schema_mode="merge")
    with pytest.raises(SchemaError, match="version 1 changed the schema"):
        log.plan(seen)


def test_a_partitioned_table_reads_its_partition_columns(tmp_path: Path) -> None:
    url = str(tmp_path / "events")
    frame = pl.DataFrame(
        {
            "k": ["a", "b", "a"],
            "t": pl.Series([1_000_000, 2_000_000, 3_000_000]).cast(pl.Datetime("us", "UTC")),
            "day": ["2024-01-01", "2024-01-02", "2024-01-02"],
            "n": [1, 2, 3],
        }
    ).with_columns(pl.col("day").str.to_date())
    write_deltalake(url, frame.to_arrow(), partition_by=["day", "n"])
    log = sk.DeltaLog(url, key="k", time="t")
    assert log.schema == frame.schema
    got = log.scan().collect().sort("n")
    assert got.equals(frame.sort("n"))
    assert log.count() == 3
    segs = log.segments()
    assert segs["rows"].to_list() == [1, 1, 1]
    assert segs["min_time"].dtype == pl.Datetime("us", "UTC")
    assert sorted(segs["min_time"].to_list()) == frame["t"].to_list()
    assert segs["max_time"].equals(segs["min_time"], check_names=False)
    end = log.plan().end.files
    assert end is not None and end.watermark == f"{1:020d}"


def test_repr_and_html(tmp_path: Path) -> None:
    table = Table(str(tmp_path / "events"), {}, {})
    table.append(4)
    table.append(2)
    log = table.log()
    assert repr(log) == (f"DeltaLog({table.url!r}, key='k', time='t', version=1, files=2, rows=6)")
    html = log._repr_html_()
    assert "streamkit DeltaLog" in html and "<td style='text-align:left'>6</td>" in html
    plan = log.plan()
    assert repr(plan).startswith("DeltaPlan(offsets [0, 6), 2 files, up to version 1")
    assert plan.files["snapshot"].to_list() == [True, True]
    assert plan.batch(0, 3)["next"].startswith("s00000000000000000001/")
    assert plan.end.files is not None and plan.end.files.watermark == f"{2:020d}"


def test_describe_says_what_a_position_has_read(tmp_path: Path) -> None:
    """In versions and files, as verify reports a DeltaLog's position."""
    table = Table(str(tmp_path / "events"), {}, {})
    table.append(9)
    table.append(9)
    dlog = table.log()
    plan = dlog.plan()  # the snapshot of version 1: two files of 9 rows

    def at(p: Any, lo: int, hi: int) -> str:
        return dlog.describe(dlog.advance(p.start, p.batch(lo, hi)))

    assert dlog.describe(dlog.start()) == "nothing of the table read yet"
    name = r"'part-[^']+\.parquet'"
    assert re.fullmatch(
        rf"read: the files of table version 1's snapshot before ({name}), "
        rf"and the first 3 rows of \1",
        at(plan, 0, 12),
    ), at(plan, 0, 12)
    assert at(plan, 0, 18) == dlog.describe(dlog.end()) == "read: table versions 0 to 1"
    table.append(5)
    later = dlog.plan(plan.end)
    assert re.fullmatch(
        rf"read: table versions 0 to 1, and the files version 2 added before ({name}), "
        rf"and the first 2 rows of \1",
        at(later, 18, 20),
    ), at(later, 18, 20)
    assert at(later, 18, 23) == "read: table versions 0 to 2"


def test_runs_cut_inside_files_verify_and_replay(tmp_path: Path) -> None:
    table = Table(str(tmp_path / "events"), {}, {})
    store = sk.Store(str(tmp_path / "lake"))
    expected = table.append(9) + table.append(9)
    assert _pipe(store, table.log(), 4).run(max_batches=1, progress=False).rows_in == 4
    expected += table.append(5)
    assert _pipe(store, table.log(), 4).run(max_batches=2, progress=False).rows_in == 8
    assert _pipe(store, table.log(), 4).run(progress=False).rows_in == 6 + 5
    expected += table.append(3) + table.append(6)
    assert _pipe(store, table.log(), 4).run(max_batches=1, progress=False).rows_in == 4
    assert _pipe(store, table.log(), 4).run(progress=False).rows_in == 5
    pipe = _pipe(store, table.log(), 4)
    report = pipe.verify(replay=True)
    assert report.ok, report
    position = next(c.message for c in report.checks if c.name == "source position")
    assert position.startswith("read position 32 (read: table versions 0 to 4): planned again")
    state, history = _reference(tmp_path, expected)
    assert pipe.state().sort("key").equals(state.sort("key"))
    got = store.log("history").scan().collect().sort("time", "key")
    assert got.equals(history.sort("time", "key"))


def test_a_table_created_again_is_not_silently_empty(tmp_path: Path) -> None:
    import shutil

    table = Table(str(tmp_path / "events"), {}, {})
    table.append(3)
    table.append(3)
    log = table.log()
    seen = log.end()
    shutil.rmtree(table.url)
    table.append(2)
    with pytest.raises(CheckpointError, match=r"at version 2, but .*newest version is 0"):
        log.plan(seen)


def test_an_incremental_plan_does_not_list_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = Table(str(tmp_path / "events"), {}, {})
    table.append(2)
    log = table.log()
    seen = log.end()
    for _ in range(10):  # more new versions than one probe round
        table.append(1)

    def no_listing(path: str = "") -> list[str]:
        raise AssertionError("listed")

    monkeypatch.setattr(log.filesystem, "ls", no_listing)
    plan = log.plan(seen)
    assert plan.version == 10 and plan.files["version"].to_list() == list(range(1, 11))
    assert log.plan(plan.end).files.height == 0


def test_timestamp_and_boolean_partition_values(tmp_path: Path) -> None:
    import datetime as dt

    url = str(tmp_path / "events")
    frame = pl.DataFrame(
        {
            "k": ["a", "b"],
            "t": [1, 2],
            "hour": [dt.datetime(2024, 1, 1, 10), dt.datetime(2024, 1, 1, 11, 0, 0, 500000)],
            "ok": [True, False],
        }
    ).with_columns(pl.col("hour").dt.replace_time_zone("UTC"))
    write_deltalake(url, frame.to_arrow(), partition_by=["hour", "ok"])
    got = sk.DeltaLog(url, key="k", time="t").scan().collect().sort("t")
    assert got.equals(frame)


def test_a_crashed_batch_is_redone_on_its_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs committed, checkpoint not; then the table is compacted and grows."""
    from streamkit.pipeline._checkpoints import CheckpointStore

    table = Table(str(tmp_path / "events"), {}, {})
    store = sk.Store(str(tmp_path / "lake"))
    expected = table.append(4)
    _copy(store, table.log()).run(progress=False)
    expected += table.append(8)
    real_commit = CheckpointStore.commit
    calls: list[int] = []

    def crash_on_second(self: CheckpointStore, cp: Any) -> bool:
        calls.append(cp.id)
        if len(calls) == 2:
            raise RuntimeError("crash before the checkpoint of the second batch")
        return bool(real_commit(self, cp))

    monkeypatch.setattr(CheckpointStore, "commit", crash_on_second)
    with pytest.raises(RuntimeError, match="crash"):
        _copy(store, table.log()).run(progress=False)
    monkeypatch.setattr(CheckpointStore, "commit", real_commit)
    assert len(_ids(store)) == 4 + 5 + 3  # the second batch's rows are out, not checkpointed
    table.optimize()
    expected += table.append(2)
    report = _copy(store, table.log()).run(progress=False)
    assert report.rows_in == 3 + 2  # the redone batch (its own files), then the new rows
    assert _ids(store) == sorted(expected)
