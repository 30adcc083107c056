"""The shared log suite: every test runs on memory, local and S3 (SeaweedFS)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

import streamkit as sk
from streamkit.errors import ConfigurationError, LogNotFoundError, SchemaError
from streamkit.storage import Position, Store

UTC = dt.UTC


def events(n: int, *, start: int = 0, keys: int = 5) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "k": [f"key-{i % keys}" for i in range(start, start + n)],
            "t": list(range(start, start + n)),
            "v": [float(i) for i in range(start, start + n)],
        },
        schema={"k": pl.String, "t": pl.Int64, "v": pl.Float64},
    )


def rich_frame() -> pl.DataFrame:
    n = 6
    return pl.DataFrame(
        {
            "k": pl.Series([1, 2, 3, 1, 2, 3], dtype=pl.Int64),
            "t": pl.Series(
                [dt.datetime(2024, 1, 1, 0, 0, i, tzinfo=UTC) for i in (5, 1, 3, 0, 2, 4)]
            ).cast(pl.Datetime("us", "Europe/Berlin")),
            "dec": pl.Series(
                [decimal.Decimal("1.25"), None, decimal.Decimal("-3.50")] * 2,
                dtype=pl.Decimal(10, 2),
            ),
            "cat": pl.Series(["a", "b", None, "a", "b", "c"], dtype=pl.Categorical),
            "enum": pl.Series(["x", "y", "x", None, "y", "x"], dtype=pl.Enum(["x", "y", "z"])),
            "lst": [[1, 2], None, [], [3], [4, 5, 6], None],
            "st": [{"a": i, "b": str(i)} if i % 2 else None for i in range(n)],
            "flag": [True, False, None, True, False, None],
            "d": [dt.date(2024, 1, i + 1) if i % 3 else None for i in range(n)],
            "bin": [bytes([i]) if i % 2 else None for i in range(n)],
            "i8": pl.Series(list(range(n)), dtype=pl.Int8),
            "f32": pl.Series([0.5 * i for i in range(n)], dtype=pl.Float32),
            "s": ["é", "ü", None, "日本", "", "x"],
            "arr": pl.Series([[i, i + 1] for i in range(n)], dtype=pl.Array(pl.Int16, 2)),
        }
    )


# ---------------------------------------------------------------------- round trips
def test_round_trip_many_dtypes(store: Store) -> None:
    df = rich_frame()
    log = store.log("rich", key="k", time="t")
    res = log.append(df)
    assert (res.rows, res.start, res.end, res.duplicate) == (6, Position(0), Position(6), False)
    got = log.scan().collect()
    expected = df.with_row_index("_i").sort("t", "_i").drop("_i")
    assert_frame_equal(got, expected, categorical_as_str=True)
    assert got.schema == df.schema
    assert log.schema == df.schema
    # Reopening from storage gives the same schema and rows.
    again = Store(store.url, storage_options=store_options(store)).log("rich")
    assert again.schema == df.schema
    assert_frame_equal(again.scan().collect(), expected, categorical_as_str=True)


def store_options(store: Store) -> dict[str, Any]:
    return dict(store.filesystem._options)


def test_time_order_within_append_is_stable(store: Store) -> None:
    log = store.log("stable", key="k", time="t")
    df = pl.DataFrame({"k": ["a", "b", "a", "b", "a"], "t": [2, 1, 1, 2, 1], "i": range(5)})
    log.append(df)
    got = log.scan().collect()
    assert got["i"].to_list() == [1, 2, 4, 0, 3]


def test_pandas_and_pyarrow_inputs(store: Store) -> None:
    log = store.log("inputs", key="k", time="t")
    log.append(pd.DataFrame({"k": ["a"], "t": [1]}))
    log.append(pa.table({"k": ["b"], "t": [2]}))
    log.append(pl.LazyFrame({"k": ["c"], "t": [3]}))
    assert log.scan().collect().rows() == [("a", 1), ("b", 2), ("c", 3)]
    with pytest.raises(TypeError, match=r"expected a polars DataFrame"):
        log.append([1, 2, 3])


# ---------------------------------------------------------------------- positions
def test_positions_and_scan_ranges(store: Store) -> None:
    log = store.log("ranges", key="k", time="t")
    results = [log.append(events(10, start=10 * i)) for i in range(3)]
    assert [r.start.offset for r in results] == [0, 10, 20]
    assert log.end() == Position(30) == results[-1].end
    assert log.start() == Position(0)
    full = log.scan(with_offset="off").collect()
    assert full["off"].to_list() == list(range(30))
    assert full["off"].dtype == pl.Int64
    for lo, hi in [(0, 30), (5, 25), (10, 20), (9, 11), (29, 30), (30, 30), (3, 3), (0, 1)]:
        part = log.scan(Position(lo), Position(hi), with_offset="off").collect()
        assert part["off"].to_list() == list(range(lo, hi)), (lo, hi)
        assert_frame_equal(part, full.slice(lo, hi - lo))
    assert log.scan(start=25).collect().height == 5
    assert log.scan(start=Position(100)).collect().height == 0
    # Projection, predicates and head are pushed into the reader correctly.
    assert log.scan().select("v").collect()["v"].to_list() == [float(i) for i in range(30)]
    assert log.scan().filter(pl.col("t") >= 28).collect()["t"].to_list() == [28, 29]
    assert log.scan().head(3).collect()["t"].to_list() == [0, 1, 2]
    assert log.scan(start=12).select(pl.len()).collect().item() == 18
    assert log.scan(with_offset="o").select("o").tail(1).collect().item() == 29
    with pytest.raises(TypeError, match=r"Position or an int"):
        log.scan(start=-1)
    with pytest.raises(ValueError, match=r"collides"):
        log.scan(with_offset="v")


def test_position_api() -> None:
    p = Position(5)
    assert Position.from_json(p.to_json()) == p
    assert Position.from_dict(p.to_dict()) == p
    assert sorted([Position(3), Position(1)]) == [Position(1), Position(3)]
    assert len({Position(1), Position(1)}) == 1
    with pytest.raises(ValueError, match=r">= 0"):
        Position(-1)
    with pytest.raises(TypeError):
        Position("3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected JSON"):
        Position.from_json("nope")


def test_empty_log(store: Store) -> None:
    log = store.log("empty", key="k", time="t")
    assert log.schema is None
    assert log.end() == log.start() == Position(0)
    assert log.segments().height == 0
    assert log.scan().collect().shape == (0, 0)
    assert log.scan(with_offset="o").collect().columns == ["o"]
    assert log.count() == 0
    assert "rows=0" in repr(log)


# ---------------------------------------------------------------------- reopen & names
def test_reopen_and_schema_errors(store: Store) -> None:
    store.log("orders", key="id", time="ts", partitions=2)
    again = store.log("orders")
    assert (again.key, again.time, again.partitions) == ("id", "ts", 2)
    assert store.log("orders", key="id", time="ts").partitions == 2
    with pytest.raises(SchemaError, match=r"key='id'.*reopened with key='other'"):
        store.log("orders", key="other", time="ts")
    with pytest.raises(SchemaError, match=r"time"):
        store.log("orders", key="id", time="when")
    with pytest.raises(SchemaError, match=r"partitions"):
        store.log("orders", partitions=4)
    with pytest.raises(LogNotFoundError, match=r"'missing' does not exist"):
        store.log("missing")
    assert isinstance(LogNotFoundError("x"), FileNotFoundError)
    assert store.logs() == ["orders"]


def test_logs_lists_only_user_logs(store: Store) -> None:
    assert store.logs() == []
    store.log("b", key="k", time="t")
    store.log("a", key="k", time="t")
    internal = store.log_at("_pipelines/p/quarantine", key="k", time="t")
    internal.append(pl.DataFrame({"k": [1], "t": [1]}))
    assert store.logs() == ["a", "b"]
    assert store.log_at("_pipelines/p/quarantine").count() == 1
    with pytest.raises(ConfigurationError):
        store.log_at("../escape", key="k", time="t")


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".hidden",
        "_private",
        "a/b",
        "a\\b",
        "..",
        "x..y",
        "../../etc",
        "a" * 129,
        "tab\there",
        "nl\n",
        " lead",
    ],
)
def test_bad_names_rejected(store: Store, name: str) -> None:
    with pytest.raises(ConfigurationError, match=r"invalid log name"):
        store.log(name, key="k", time="t")
    assert store.logs() == []
    assert store.filesystem.find("") == []


def test_good_names(store: Store) -> None:
    for name in ["a", "orders-2024.v1", "x" * 128, "événements"]:
        store.log(name, key="k", time="t")
    assert store.logs() == sorted(["a", "orders-2024.v1", "x" * 128, "événements"])


def test_bad_create_args(store: Store) -> None:
    with pytest.raises(ConfigurationError, match=r"different columns"):
        store.log("x", key="k", time="k")
    with pytest.raises(ConfigurationError, match=r"partitions"):
        store.log("x", key="k", time="t", partitions=0)
    with pytest.raises(LogNotFoundError):
        store.log("x", key="k")


# ---------------------------------------------------------------------- bad appends
BAD_APPENDS = [
    ("wrong dtype", pl.DataFrame({"k": ["a"], "t": [1], "v": ["x"]}), "column 'v' expected dtype"),
    ("missing column", pl.DataFrame({"k": ["a"], "t": [1]}), "missing \\['v'\\]"),
    ("extra column", pl.DataFrame({"k": ["a"], "t": [1], "v": [1.0], "w": [1]}), "unexpected"),
    ("null key", pl.DataFrame({"k": [None, "a"], "t": [1, 2], "v": [1.0, 2.0]}), "null"),
    ("null time", pl.DataFrame({"k": ["a", "b"], "t": [1, None], "v": [1.0, 2.0]}), "row 1"),
    ("no key", pl.DataFrame({"t": [1], "v": [1.0]}), "key column 'k'"),
    ("no time", pl.DataFrame({"k": ["a"], "v": [1.0]}), "time column 't'"),
    ("time dtype", pl.DataFrame({"k": ["a"], "t": ["2024"], "v": [1.0]}), "Datetime or an integer"),
    ("float time", pl.DataFrame({"k": ["a"], "t": [1.5], "v": [1.0]}), "Datetime or an integer"),
    ("list key", pl.DataFrame({"k": [[1]], "t": [1], "v": [1.0]}), "scalar type"),
    (
        "time width",
        pl.DataFrame({"k": ["a"], "t": pl.Series([1], dtype=pl.Int32), "v": [1.0]}),
        "column 't' expected dtype Int64, found Int32",
    ),
    ("order", pl.DataFrame({"t": [1], "k": ["a"], "v": [1.0]}), "column order"),
]


@pytest.mark.parametrize(("case", "df", "match"), BAD_APPENDS, ids=[c[0] for c in BAD_APPENDS])
def test_bad_appends_commit_nothing(store: Store, case: str, df: pl.DataFrame, match: str) -> None:
    log = store.log("strict", key="k", time="t")
    log.append(events(3))
    before = (log.version, log.end(), sorted(store.filesystem.find("strict")))
    with pytest.raises(SchemaError, match=match):
        log.append(df)
    assert (log.version, log.end(), sorted(store.filesystem.find("strict"))) == before
    assert log.scan().collect().height == 3


def test_first_append_sets_schema_and_checks_time_dtype(store: Store) -> None:
    log = store.log("first", key="k", time="t")
    with pytest.raises(SchemaError, match=r"null"):
        log.append(pl.DataFrame({"k": ["a", None], "t": [1, 2]}))
    assert log.schema is None and log.version == 0
    log.append(pl.DataFrame({"k": ["a"], "t": [dt.datetime(2024, 1, 1)]}))
    assert log.schema == pl.Schema({"k": pl.String, "t": pl.Datetime("us")})
    with pytest.raises(SchemaError, match=r"Datetime\(time_unit='ns'"):
        log.append(pl.DataFrame({"k": ["a"], "t": [1]}).cast({"t": pl.Datetime("ns")}))


def test_empty_appends(store: Store) -> None:
    log = store.log("e", key="k", time="t")
    res = log.append(events(0))
    assert (res.rows, res.version, res.segments) == (0, 0, 0)
    assert log.version == 0
    res = log.append(events(0), writer="w", seq=1, meta={"range": [0, 0]})
    assert (res.rows, res.version, res.duplicate) == (0, 1, False)
    assert log.transaction("w") == sk.storage.Transaction("w", 1, {"range": [0, 0]}, 1)
    assert log.append(events(0), writer="w", seq=1).duplicate


def test_append_argument_errors(store: Store) -> None:
    log = store.log("args", key="k", time="t")
    with pytest.raises(ConfigurationError, match=r"writer and seq go together"):
        log.append(events(1), writer="w")
    with pytest.raises(ConfigurationError, match=r"JSON-able"):
        log.append(events(1), writer="w", seq=1, meta={"x": object()})
    with pytest.raises(ConfigurationError, match=r"seq must be an int"):
        log.append(events(1), writer="w", seq="1")  # type: ignore[arg-type]
    assert log.version == 0


# ---------------------------------------------------------------------- partitions
def test_multiple_partitions(store: Store) -> None:
    log = store.log("parts", key="k", time="t", partitions=4)
    df = pl.DataFrame(
        {
            "k": [f"u{i % 37}" for i in range(500)],
            "t": [(i * 7919) % 1000 for i in range(500)],
            "i": range(500),
        }
    )
    res = log.append(df)
    segs = log.segments()
    assert res.segments == segs.height > 1
    assert segs["partition"].to_list() == sorted(segs["partition"].to_list())
    assert segs["offset"].to_list() == [0, *segs["rows"].cum_sum().to_list()[:-1]]
    got = log.scan(with_offset="o").collect()
    assert sorted(got["i"].to_list()) == list(range(500))
    # Every key lives in exactly one partition, and within it rows follow (time, input order).
    joined = got.join(segs.select("partition", "offset", "rows"), how="cross").filter(
        (pl.col("o") >= pl.col("offset")) & (pl.col("o") < pl.col("offset") + pl.col("rows"))
    )
    assert joined.group_by("k").agg(pl.col("partition").n_unique())["partition"].max() == 1
    per_key = got.group_by("k", maintain_order=True).agg("t", "i")
    for ts, idx in zip(per_key["t"].to_list(), per_key["i"].to_list()):
        assert list(zip(ts, idx)) == sorted(zip(ts, idx))
    # The same key goes to the same partition on the next append.
    log.append(df.head(37))
    segs2 = log.segments().filter(pl.col("version") == 2)
    assert set(segs2["partition"].to_list()) <= set(segs["partition"].to_list())
    assert log.scan(start=res.end).collect().height == 37


def test_segments_columns_and_time_dtype(store: Store) -> None:
    log = store.log("segs", key="k", time="t")
    ts = [dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(hours=h) for h in (3, 1, 2)]
    log.append(pl.DataFrame({"k": ["a", "b", "c"], "t": ts}), writer="w", seq=7)
    segs = log.segments()
    for col in [
        "partition",
        "seq",
        "offset",
        "rows",
        "min_time",
        "max_time",
        "bytes",
        "version",
        "path",
        "writer",
        "writer_seq",
    ]:
        assert col in segs.columns
    row = segs.row(0, named=True)
    assert row["min_time"] == ts[1] and row["max_time"] == ts[0]
    assert segs.schema["min_time"] == pl.Datetime("us", "UTC")
    assert (row["rows"], row["writer"], row["writer_seq"], row["offset"]) == (3, "w", 7, 0)
    assert row["bytes"] == len(store.filesystem.child("segs").get(row["path"]))
    log.append(pl.DataFrame({"k": ["a"], "t": [ts[0]]}))
    assert log.segments()["seq"].to_list() == [0, 1]


# ---------------------------------------------------------------------- retention
def test_truncate_by_position_and_time(store: Store) -> None:
    log = store.log("trunc", key="k", time="t")
    for i in range(4):
        log.append(events(10, start=10 * i))
    assert log.truncate(before=Position(15)) == 1
    assert log.start() == Position(10)
    assert log.scan(with_offset="o").collect()["o"].min() == 10
    assert log.truncate(before=Position(15)) == 0  # nothing to do: no new version
    v = log.version
    assert log.truncate(before=25) == 1  # segment [10, 20) has max_time 19 < 25
    assert log.version == v + 1
    assert log.start() == Position(20)
    assert log.end() == Position(40)
    assert log.append(events(1, start=99)).start == Position(40)  # offsets never reused
    with pytest.raises(TypeError, match=r"integer time column"):
        log.truncate(before=dt.datetime(2024, 1, 1))


def test_truncate_datetime(store: Store) -> None:
    log = store.log("trunc-dt", key="k", time="t")
    base = dt.datetime(2024, 1, 1, tzinfo=UTC)
    for day in range(3):
        log.append(pl.DataFrame({"k": ["a"], "t": [base + dt.timedelta(days=day)]}))
    assert log.truncate(before=base + dt.timedelta(days=1, hours=1)) == 2
    assert log.scan().collect()["t"].to_list() == [base + dt.timedelta(days=2)]


def test_vacuum_deletes_orphans_only(store: Store) -> None:
    log = store.log("vac", key="k", time="t")
    for i in range(3):
        log.append(events(5, start=5 * i))
    fs = store.filesystem.child("vac")
    orphan = "data/p=000/1000-deadbeef.parquet"  # an old, never committed segment
    fs.put(orphan, b"junk")
    fresh = f"data/p=000/{sk.storage.log.mf.now_ms()}-cafe.parquet"  # in-flight append
    fs.put(fresh, b"junk")
    log.truncate(before=Position(5))
    gone = log.vacuum(retain=dt.timedelta(hours=1))
    assert gone == [orphan]
    removed_path = None
    for seg_path in fs.find("data"):
        if seg_path not in set(log.segments()["path"]) and seg_path != fresh:
            removed_path = seg_path
    assert removed_path is not None  # truncated segment is recent: retained
    gone = log.vacuum(retain=dt.timedelta(0))
    assert set(gone) == {removed_path, fresh}
    assert sorted(fs.find("data")) == sorted(log.segments()["path"].to_list())
    assert log.scan().collect().height == 10
    assert log.vacuum(retain=dt.timedelta(0)) == []


# ---------------------------------------------------------------------- transactions
def test_idempotent_append_committed_once(store: Store) -> None:
    log = store.log("idem", key="k", time="t")
    first = log.append(events(4), writer="job", seq=1, meta={"batch": [0, 4]})
    files = sorted(store.filesystem.find("idem/data"))
    retry = log.append(events(4), writer="job", seq=1, meta={"batch": [0, 4]})
    assert retry.duplicate and retry.rows == 0 and retry.version == first.version
    older = store.log("idem").append(events(4), writer="job", seq=0)
    assert older.duplicate
    assert sorted(store.filesystem.find("idem/data")) == files  # duplicate files removed
    assert log.count() == 4
    nxt = log.append(events(2), writer="job", seq=2, meta={"batch": [4, 6]})
    assert not nxt.duplicate and nxt.start == Position(4)
    assert log.transaction("job") == sk.storage.Transaction("job", 2, {"batch": [4, 6]}, 2)
    assert log.append(events(1), writer="other", seq=1).rows == 1


def test_duplicate_detected_by_other_handle(store: Store) -> None:
    a = store.log("idem2", key="k", time="t")
    b = store.log("idem2")
    assert a.version == b.version == 0
    a.append(events(3), writer="w", seq=5)
    # b's cached state is stale; the check happens against the latest version.
    assert b.append(events(3), writer="w", seq=5).duplicate
    assert b.count() == 3


def test_retract(store: Store) -> None:
    log = store.log("retr", key="k", time="t", partitions=2)
    for s in range(6):
        log.append(events(4, start=4 * s), writer="pipe", seq=s)
    log.append(events(4, start=100), writer="other", seq=3)
    v = log.version
    n_before = log.segments().height
    removed = log.retract("pipe", [(1, 2), (5, 9)])
    assert removed == n_before - log.segments().height > 0
    assert log.version == v + 1
    left = log.segments()
    assert set(left.filter(pl.col("writer") == "pipe")["writer_seq"].to_list()) == {0, 3, 4}
    assert left.filter(pl.col("writer") == "other").height >= 1
    assert log.retract("pipe", [(1, 2)]) == 0
    assert log.version == v + 1
    assert log.end() == Position(28)
    assert store.log("retr").count() == log.count() == 16


# ---------------------------------------------------------------------- display
def test_reprs_show_extent_and_no_credentials(store: Store) -> None:
    log = store.log("shown", key="user", time="ts")
    log.append(
        pl.DataFrame({"user": ["a", "b"], "ts": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)]})
    )
    text = repr(log)
    for part in [
        "'shown'",
        "key='user'",
        "time='ts'",
        "rows=2",
        "segments=1",
        "2024-01-01",
        "2024-01-02",
    ]:
        assert part in text
    html = log._repr_html_()
    assert "user" in html and "2024-01-02" in html
    assert repr(store).startswith("Store(") and "shown" in store._repr_html_()
    secrets = [v for k, v in store_options(store).items() if k in {"key", "secret"}]
    for secret in secrets:
        assert secret not in text + html + repr(store) + store._repr_html_()
        for rel in store.filesystem.find("shown/_log"):
            assert secret.encode() not in store.filesystem.get(rel)


def test_lazy_public_names() -> None:
    assert sk.Store is Store
    assert sk.Position is Position
    assert sk.Log is sk.storage.Log
    assert sk.FileLog is sk.storage.FileLog
    assert sk.AppendResult is sk.storage.AppendResult


def test_repetitive_appends_stay_readable_below_the_decode_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Readers refuse segments that decode to more than DECODE_FLOOR at a bomb's
    # compression ratio; an append must never write one. Scaled down: 1 MiB.
    from streamkit.storage import _reader

    monkeypatch.setattr(_reader, "DECODE_FLOOR", 2**20)
    log = Store(f"memory://streamkit-test-{uuid.uuid4().hex}").log("l", key="k", time="t")
    frame = pl.DataFrame({"k": ["same-key"] * 400_000, "t": [7] * 400_000, "v": [1] * 400_000})
    assert frame.estimated_size() > 8 * 2**20
    res = log.append(frame)
    assert res.segments > 1  # cut into pieces
    segs = log.segments()
    assert segs["rows"].sum() == 400_000 and segs["offset"].is_sorted()
    assert log.scan().collect().equals(frame)
