"""A log's folder is a Delta Lake table: real engines read exactly ``log.scan()``.

Checked by readers other than streamkit: delta-rs (``DeltaTable.to_pyarrow_table``),
``pl.scan_delta`` and DuckDB over delta-rs' Arrow dataset, on a local folder and
on SeaweedFS S3, after appends, truncate, retract, Delta checkpoints and a
pipeline rewind. Also: what each commit holds, the protocol chosen, types a
Delta table cannot hold, the checksum, and the one-shot upgrade of logs of the
first format (``tests/storage/format1``, written by streamkit before logs were
Delta tables).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable, write_deltalake
from polars.testing import assert_frame_equal

import streamkit as sk
from streamkit.cli import main
from streamkit.errors import ConfigurationError, CorruptFileError, SchemaError
from streamkit.storage import _delta
from streamkit.storage import _manifest as mf
from streamkit.storage.log import upgrade_log

FORMAT1 = Path(__file__).parent / "format1"
sys.path.insert(0, str(FORMAT1))
from make_format1 import ORDERS, pipeline  # noqa: E402

UTC = dt.UTC


# ---------------------------------------------------------------------- helpers
def _delta_options(seaweedfs: Any) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": seaweedfs["endpoint_url"],
        "AWS_ACCESS_KEY_ID": seaweedfs["key"],
        "AWS_SECRET_ACCESS_KEY": seaweedfs["secret"],
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[sk.Store, Callable[[str], tuple[str, dict[str, str]]]]:
    """A store, and for a log in it the table URI and options delta-rs needs."""
    if request.param == "local":
        store = sk.Store(str(tmp_path / "lake"))
        return store, lambda name: (f"{store.url}/{name}", {})
    server = request.getfixturevalue("seaweedfs")
    options = request.getfixturevalue("s3_storage_options")
    url = f"s3://{server['bucket']}/delta-{uuid.uuid4().hex}"
    store = sk.Store(url, storage_options=options)
    return store, lambda name: (f"{url}/{name}", _delta_options(server))


def _readers(uri: str, options: dict[str, str]) -> dict[str, pl.DataFrame]:
    """The rows every engine reads from the table at ``uri``."""
    table = DeltaTable(uri, storage_options=options or None)
    dataset = table.to_pyarrow_dataset()  # noqa: F841 - DuckDB finds it by name
    return {
        "delta-rs": pl.DataFrame(table.to_pyarrow_table()),
        "polars": pl.scan_delta(uri, storage_options=options or None).collect(),
        "duckdb": duckdb.sql("SELECT * FROM dataset").pl(),
    }


def _assert_engines_read(log: sk.Log, uri: str, options: dict[str, str]) -> None:
    """Every engine reads exactly the rows of ``log.scan()`` (as a multiset), at its version."""
    expected = log.scan().collect()
    assert DeltaTable(uri, storage_options=options or None).version() == log.version
    order = expected.columns
    for engine, got in _readers(uri, options).items():
        assert got.columns == order, engine
        got = got.cast(
            dict(expected.schema)
        )  # Delta holds timestamps in us, dictionaries as strings
        assert_frame_equal(got.sort(order), expected.sort(order), check_exact=True), engine


def _events(i: int, n: int = 6) -> pl.DataFrame:
    base = dt.datetime(2026, 1, 1)
    return pl.DataFrame(
        {
            "k": [f"k{(i + j) % 4}" for j in range(n)],
            "t": [base + dt.timedelta(seconds=i, microseconds=997 * j) for j in range(n)],
            "v": [float(i * n + j) for j in range(n)],
            "tag": pl.Series([["x", "y"][j % 2] for j in range(n)], dtype=pl.Categorical),
        }
    )


def _commit(log: sk.Log, version: int) -> list[dict[str, Any]]:
    return mf.decode_checked(log.filesystem.get(mf.version_path(version)), "commit")


def _of(actions: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [a[kind] for a in actions if kind in a]


# ---------------------------------------------------------------------- real readers
def test_engines_read_exactly_the_log_after_appends_truncate_and_retract(
    lake: tuple[sk.Store, Callable[[str], tuple[str, dict[str, str]]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mf, "SNAPSHOT_EVERY", 4)  # Delta checkpoints along the way
    store, table = lake
    uri, options = table("events")
    log = store.log("events", key="k", time="t", partitions=3)
    log.append(_events(0))
    _assert_engines_read(log, uri, options)  # version 1: the schema and one append
    for seq in range(1, 7):
        log.append(_events(seq), writer="pipe", seq=seq, meta={"batch": seq})
    log.append(_events(7))
    _assert_engines_read(log, uri, options)
    assert log.truncate(before=sk.Position(6)) == 3
    assert log.retract("pipe", [(5, 6)]) > 0
    _assert_engines_read(log, uri, options)
    assert store.filesystem.exists(f"events/{mf.checkpoint_path(8)}")
    # Delta's own view of the writer transactions: appId = writer, version = seq
    assert DeltaTable(uri, storage_options=options or None).transaction_version("pipe") == 6
    # a fresh streamkit reader agrees, and the log goes on
    again = sk.Store(store.url, storage_options=dict(store.filesystem._options)).log("events")
    again.append(_events(8))
    _assert_engines_read(again, uri, options)


def test_a_rewind_is_visible_to_every_engine_as_remove_actions(tmp_path: Path) -> None:
    store = sk.Store(str(tmp_path / "lake"))
    store.log("orders", key="order_id", time="ts").append(ORDERS)
    pipe = pipeline(store)
    pipe.run(batch_rows=40, progress=False)
    history = store.log("history")
    before = history.count()
    pipe.run(from_checkpoint=1, progress=False)  # retracts batches 2.. of history, redoes them
    history = store.log("history")
    assert history.count() == before
    uri = f"{store.url}/history"
    _assert_engines_read(history, uri, {})
    retracts = [
        v
        for v in range(1, history.version + 1)
        if _of(_commit(history, v), "commitInfo")[0]["streamkit"]["op"] == "retract"
    ]
    assert retracts, "the rewind committed no retract"
    removes = _of(_commit(history, retracts[0]), "remove")
    assert removes and all(r["dataChange"] for r in removes)
    assert _of(_commit(history, retracts[0]), "commitInfo")[0]["operation"] == "DELETE"
    quarantine = store.log_at("_pipelines/fsm/quarantine")
    assert DeltaTable(f"{store.url}/_pipelines/fsm/quarantine").version() == quarantine.version


# ---------------------------------------------------------------------- the mapping
def test_what_each_commit_holds(tmp_path: Path) -> None:
    log = sk.Store(str(tmp_path)).log("l", key="k", time="t", partitions=2)
    created = _commit(log, 0)
    assert list(created[0]) == ["commitInfo"]  # first, with streamkit's checksum
    assert _of(created, "protocol") == [{"minReaderVersion": 1, "minWriterVersion": 2}]
    (meta,) = _of(created, "metaData")
    assert meta["partitionColumns"] == []  # data/p=NNN/ are hash partitions, not Delta's
    assert json.loads(meta["schemaString"]) == {"type": "struct", "fields": []}
    assert meta["configuration"] == {
        "streamkit.format": "2",
        "streamkit.key": "k",
        "streamkit.time": "t",
        "streamkit.partitions": "2",
    }
    frame = pl.DataFrame({"k": ["a", "b", "c"], "t": [5, 3, 9]})
    log.append(frame, writer="w", seq=7, meta={"b": 1})
    actions = _commit(log, 1)
    (info,) = _of(actions, "commitInfo")
    assert info["operation"] == "WRITE" and info["streamkit"]["op"] == "append"
    assert info["streamkit"]["txn"] == {"writer": "w", "seq": 7, "meta": {"b": 1}}
    assert _of(actions, "txn")[0]["appId"] == "w" and _of(actions, "txn")[0]["version"] == 7
    assert not _of(actions, "protocol")  # integer time: reader 1 / writer 2 stays
    (meta,) = _of(actions, "metaData")
    assert [f["type"] for f in json.loads(meta["schemaString"])["fields"]] == ["string", "long"]
    assert meta["id"] == _of(created, "metaData")[0]["id"]
    assert sk.storage.log.schema_from_b64(meta["configuration"]["streamkit.schema"], "x") == (
        frame.schema
    )
    adds = _of(actions, "add")
    segments = log.segments()
    assert sorted(a["path"] for a in adds) == sorted(segments["path"])
    for add in adds:
        row = segments.filter(pl.col("path") == add["path"]).row(0, named=True)
        stats = json.loads(add["stats"])
        assert stats["numRecords"] == row["rows"]
        assert (stats["minValues"]["t"], stats["maxValues"]["t"]) == (
            row["min_time"],
            row["max_time"],
        )
        assert add["tags"]["streamkit.offset"] == str(row["offset"])
        assert add["tags"]["streamkit.writer"] == "w" and add["tags"]["streamkit.writerSeq"] == "7"
        assert add["size"] == row["bytes"] and add["dataChange"] is True
    log.truncate(before=sk.Position(3))
    removed = _commit(log, 2)
    assert {r["path"] for r in _of(removed, "remove")} == set(segments["path"])
    assert _of(removed, "commitInfo")[0]["streamkit"]["next_offset"] == 3  # offsets never reused


@pytest.mark.parametrize(
    ("dtype", "protocol"),
    [
        (pl.Int64(), (1, 2, None)),
        (pl.Datetime("us", "UTC"), (1, 2, None)),
        (pl.Datetime("ms", "Europe/Berlin"), (1, 2, None)),
        (pl.Datetime("us"), (3, 7, ["timestampNtz"])),
    ],
)
def test_the_protocol_is_the_smallest_the_schema_needs(
    tmp_path: Path, dtype: pl.DataType, protocol: tuple[int, int, list[str] | None]
) -> None:
    log = sk.Store(str(tmp_path)).log("l", key="k", time="t")
    values = pl.Series([1_700_000_000_000, 1_700_000_000_500]).cast(pl.Int64)
    frame = pl.DataFrame({"k": [1, 2], "t": values}).with_columns(pl.col("t").cast(dtype))
    log.append(frame)
    got = DeltaTable(f"{log.url}").protocol()
    assert (got.min_reader_version, got.min_writer_version, got.reader_features) == protocol
    _assert_engines_read(log, log.url, {})


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (
            pl.Series("t", [1, 2]).cast(pl.Datetime("ns")),
            r"column 't' is Datetime.*cast\(pl\.Datetime\('us'\)",
        ),
        (pl.Series("x", [1, 2], dtype=pl.UInt64), r"column 'x' has type uint64"),
        (pl.Series("x", [dt.timedelta(1), None]), r"column 'x' has type duration"),
    ],
)
def test_types_a_delta_table_cannot_hold_are_refused_at_the_first_append(
    column: pl.Series, message: str
) -> None:
    log = sk.Store(f"memory://delta-types-{uuid.uuid4().hex}").log("l", key="k", time="t")
    frame = pl.DataFrame({"k": [1, 2], "t": [1, 2]}).with_columns(column)
    with pytest.raises(SchemaError, match=message):
        log.append(frame)
    with pytest.raises(SchemaError, match=message):
        log.write_segments(frame)
    assert log.version == 0 and log.schema is None  # nothing committed


def _mixed(i: int) -> pl.DataFrame:
    """Columns of many kinds; odd batches hold a NaN, a long string and a null flag."""
    n = 5
    odd = i % 2 == 1
    return pl.DataFrame(
        {
            "k": [f"k{j}" for j in range(n)],
            "t": [dt.datetime(2026, 1, 1, i, j, tzinfo=UTC) for j in range(n)],
            "v": [float("nan") if odd and j == 0 else float(i * n + j) for j in range(n)],
            "s": [("long " * 10 if odd and j == 1 else "") + f"s{i}{j}" for j in range(n)],
            "flag": [None if odd else j % 2 == 0 for j in range(n)],
            "u": pl.Series([2**32 - 1 - i * n - j for j in range(n)], dtype=pl.UInt32),
            "small": pl.Series([200 + j for j in range(n)], dtype=pl.UInt8),
            "lst": [[i, j] for j in range(n)],
        },
        schema_overrides={"flag": pl.Boolean},
    )


def test_filters_pushed_into_engines_agree_with_the_log(tmp_path: Path) -> None:
    """Per-file bounds let engines skip files, never a file they need: delta-rs'
    dataset (and so DuckDB) takes a column missing from the bounds for nulls,
    so a segment with a column without sound bounds records none at all."""
    log = sk.Store(str(tmp_path)).log("l", key="k", time="t")
    for i in range(4):
        log.append(_mixed(i))
    uri = log.url
    table = DeltaTable(uri)
    dataset = table.to_pyarrow_dataset()  # noqa: F841 - DuckDB finds it by name
    stats = [json.loads(a["stats"]) for a in _of(_commit(log, 1), "add")]
    assert "minValues" in stats[0] and stats[0]["minValues"]["u"] == 2**32 - 5
    assert all("minValues" not in json.loads(a["stats"]) for a in _of(_commit(log, 2), "add"))
    expected = log.scan().collect()
    cases = [
        ("v > 12", pl.col("v") > 12),
        ("v < 3", pl.col("v") < 3),
        (
            "t >= TIMESTAMPTZ '2026-01-01 02:00:00+00'",
            pl.col("t") >= dt.datetime(2026, 1, 1, 2, tzinfo=UTC),
        ),
        ("k = 'k3'", pl.col("k") == "k3"),
        ("s > 'r'", pl.col("s") > "r"),
        ("flag", pl.col("flag")),
        ("flag IS NULL", pl.col("flag").is_null()),
        ("u > 4294967290", pl.col("u") > 4294967290),
        ("small >= 203", pl.col("small") >= 203),
    ]
    for sql, expr in cases:
        want = expected.filter(expr).height
        assert want > 0, sql
        assert duckdb.sql(f"SELECT count(*) FROM dataset WHERE {sql}").fetchall() == [(want,)], sql
        assert pl.scan_delta(uri).filter(expr).collect().height == want, sql
    for column, op, value in [("u", ">", 4294967290), ("k", "=", "k3"), ("v", "<", 3.0)]:
        expr = {">": pl.col(column) > value, "=": pl.col(column) == value}.get(op)
        expr = pl.col(column) < value if expr is None else expr
        got = table.to_pyarrow_table(filters=[(column, op, value)]).num_rows
        assert got == expected.filter(expr).height, column
    _assert_engines_read(log, uri, {})


def test_a_changed_byte_in_any_action_is_caught_before_it_is_trusted(tmp_path: Path) -> None:
    log = sk.Store(str(tmp_path)).log("l", key="k", time="t")
    log.append(pl.DataFrame({"k": [1, 2], "t": [1, 2]}))
    fs = log.filesystem
    rel = mf.version_path(1)
    good = fs.get(rel)
    size = str(log.segments()["bytes"][0]).encode()
    assert good.count(b'"size":' + size) == 1
    fs.put(rel, good.replace(b'"size":' + size, b'"size":' + size[:-1]))  # still valid JSON
    with pytest.raises(CorruptFileError, match=r"00000000000000000001\.json: expected checksum"):
        sk.Store(str(tmp_path)).log("l")


def test_a_commit_by_another_engine_is_refused_clearly(tmp_path: Path) -> None:
    log = sk.Store(str(tmp_path)).log("l", key="k", time="t")
    log.append(pl.DataFrame({"k": [1, 2], "t": [1, 2]}))
    write_deltalake(log.url, pl.DataFrame({"k": [3], "t": [3]}).to_arrow(), mode="append")
    with pytest.raises(CorruptFileError, match=r"not written by streamkit.*sk\.DeltaLog"):
        sk.Store(str(tmp_path)).log("l")


# ---------------------------------------------------------------------- upgrade
def _format1_store(where: sk.Store) -> None:
    """Copy the format-1 fixture store into ``where`` (a local folder or S3)."""
    fs = where.filesystem
    src = FORMAT1 / "store"
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        fs.put(str(path.relative_to(src)), path.read_bytes())


def test_upgrade_converts_logs_in_place_and_pipelines_resume(
    lake: tuple[sk.Store, Callable[[str], tuple[str, dict[str, str]]]],
) -> None:
    store, table = lake
    _format1_store(store)
    expected = json.loads((FORMAT1 / "expected.json").read_text())
    for open_it in (lambda: store.log("events"), lambda: store.log("events", key="k", time="t")):
        with pytest.raises(ConfigurationError, match=r"streamkit log upgrade .*events"):
            open_it()
    assert store.logs() == ["events", "history", "orders"]  # listed, so the CLI says it
    options = [
        f"--option={k}={json.dumps(v) if isinstance(v, dict) else v}"
        for k, v in store.filesystem._options.items()
    ]
    result = CliRunner().invoke(main, ["log", "upgrade", store.url, *options])
    assert result.exit_code == 0, result.output
    assert "events: 8 versions converted" in result.output
    assert "_pipelines/fsm/quarantine: 4 versions converted" in result.output

    events = store.log("events")
    got = events.scan(with_offset="o").collect().with_columns(pl.col("t").cast(pl.String))
    assert [list(r) for r in got.rows()] == expected["events"]["rows"]
    assert (events.end().offset, events.version) == (
        expected["events"]["end"],
        expected["events"]["version"],
    )
    txn = events.transaction("w")
    assert txn is not None and [txn.seq, txn.meta] == expected["events"]["txn"]
    assert events.writer_history("w") == {
        int(k): v for k, v in expected["events"]["history"].items()
    }
    uri, options_rs = table("events")
    _assert_engines_read(events, uri, options_rs)
    assert store.filesystem.exists(f"events/{mf.old_version_path(0)}")  # left in place

    # the pipeline's checkpoint positions are offsets: it resumes where it stopped
    assert store.log("orders").end().offset == expected["orders_end"]
    assert store.log("history").count() == expected["history_rows"]
    pipeline(store).run(progress=False)
    fresh = sk.Store(f"memory://delta-upgrade-fresh-{uuid.uuid4().hex}")
    fresh.log("orders", key="order_id", time="ts").append(ORDERS.slice(0, 70))
    pipeline(fresh).run(batch_rows=30, progress=False)
    fresh.log("orders").append(ORDERS.slice(70))
    pipeline(fresh).run(progress=False)
    for name in ("history", "_pipelines/fsm/quarantine"):
        assert_frame_equal(
            store.log_at(name).scan(with_offset="o").collect(),
            fresh.log_at(name).scan(with_offset="o").collect(),
        )
    assert pipeline(store).verify(replay=True).ok

    again = CliRunner().invoke(main, ["log", "upgrade", store.url, *options])
    assert again.exit_code == 0 and "events: a Delta table already" in again.output


def test_an_interrupted_upgrade_is_completed_by_running_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sk.Store(str(tmp_path / "lake"))
    _format1_store(store)
    fs = store.filesystem.child("events")
    real = type(fs).put_new
    calls: list[str] = []

    def crash_after_three(self: Any, path: str, data: bytes) -> bool:
        if len(calls) == 3:
            raise KeyboardInterrupt("crash")
        calls.append(path)
        return real(self, path, data)

    monkeypatch.setattr(type(fs), "put_new", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        upgrade_log(fs, "events")
    monkeypatch.undo()
    assert calls == [mf.version_path(v) for v in (7, 6, 5)]  # newest first, version 0 last
    with pytest.raises(ConfigurationError, match=r"first log format"):
        store.log("events")  # still reads as format 1
    assert store.upgrade_logs()["events"] == 8  # the commits made before are its own
    expected = json.loads((FORMAT1 / "expected.json").read_text())
    assert store.log("events").end().offset == expected["events"]["end"]


def test_upgrade_refuses_a_log_a_delta_table_cannot_hold(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    shutil.copytree(FORMAT1 / "store" / "events", root / "events")
    fs = sk.Store(str(root)).filesystem.child("events")
    rel = mf.old_version_path(1)
    body = mf.decode(fs.get(rel), rel)
    schema = pl.Schema({"k": pl.String, "t": pl.Datetime("ns"), "v": pl.Int64})
    body["schema"] = sk.storage.log.schema_to_b64(schema, "x")
    fs.put(rel, mf.encode(body))
    with pytest.raises(
        SchemaError, match=r"cannot upgrade log .*column 't'.*nothing was converted"
    ):
        sk.Store(str(root)).upgrade_logs()
    assert not fs.exists(mf.version_path(0)) and fs.ls(mf.LOG_DIR) == []


def test_check_manifest_compares_the_delta_checkpoint_with_the_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mf, "SNAPSHOT_EVERY", 4)
    log = sk.Store(str(tmp_path)).log("l", key="k", time="t")
    for i in range(4):
        log.append(pl.DataFrame({"k": [i], "t": [i]}), writer="w", seq=i)
    assert log.check_manifest() == 5 + 4  # commits 0-4, snapshot, hint, checkpoint, hint
    fs = log.filesystem
    wrong = _delta.load_snapshot(fs, 4)
    wrong.files.pop(sorted(wrong.files)[0])  # a checkpoint that forgets a file
    fs.rm([mf.checkpoint_path(4)])
    _delta.write_checkpoint(fs, 4, wrong)
    assert DeltaTable(log.url).to_pyarrow_table().num_rows == 3  # what engines would read
    with pytest.raises(CorruptFileError, match=r"checkpoint\.parquet: its files .* differ"):
        log.check_manifest()


def _reference_stats(frame: pl.DataFrame) -> dict[str, Any]:
    """Delta stats the plain way: ``file_stats`` over the whole frame, booleans
    added, and no bounds at all when a scalar column that is not all null has none."""
    table = frame.to_arrow()
    stats = json.loads(_delta.file_stats(table))
    low, high, nulls = stats["minValues"], stats["maxValues"], stats["nullCount"]
    for name in table.column_names:
        column = pl.Series(table.column(name))
        if column.dtype == pl.Boolean and column.null_count() < len(column):
            low[name], high[name] = column.min(), column.max()
    for name, dtype in frame.schema.items():
        if dtype.is_nested() or nulls.get(name) == frame.height:
            continue
        if name not in low or name not in high:
            return {"numRecords": frame.height, "nullCount": nulls}
    return stats


def test_segment_stats_from_the_parquet_footer_equal_the_plain_reference(tmp_path: Path) -> None:
    from tests.storage.test_log import rich_frame

    frames = [
        rich_frame(),
        *(_mixed(i) for i in range(4)),
        pl.DataFrame({"k": ["a" * 70, "b" * 31], "t": [1, 2]}),  # a long minimum is cut
        pl.DataFrame({"k": ["a", "b" * 70], "t": [1, 2]}),  # a long maximum: no bounds
        pl.DataFrame({"k": ["a", "b"], "t": [1, 2], "n": pl.Series([None, None], dtype=pl.Int64)}),
        pl.DataFrame({"k": [1, 2], "f": [float("inf"), 0.5], "t": [dt.date(2024, 1, 1)] * 2}),
        pl.DataFrame({"k": [1, 2, 3], "t": pl.Series([5, 1, 3]).cast(pl.Datetime("ms", "UTC"))}),
    ]
    big = pl.DataFrame({"k": [f"k{i % 7}" for i in range(30_000)], "t": list(range(30_000))})
    for i, frame in enumerate([*frames, big]):
        path = tmp_path / f"{i}.parquet"
        frame.write_parquet(path, compression="zstd", statistics=True, row_group_size=10_000)
        footer = pq.read_metadata(path)
        expected = _reference_stats(frame)
        assert json.loads(mf.data_stats(frame)) == expected, i
        assert json.loads(mf.parquet_stats(footer, frame)) == expected, i
    assert "minValues" in expected and footer.num_row_groups == 3
