"""FileLog: existing files read as a read-only log, on local disk and in memory."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import streamkit as sk
from streamkit.errors import ConfigurationError, SchemaError
from streamkit.storage import FileLog, Position
from streamkit.storage._fs import FileSystem

FORMATS = {
    "parquet": lambda df, buf: df.write_parquet(buf),
    "arrow": lambda df, buf: df.write_ipc(buf),
    "csv": lambda df, buf: df.write_csv(buf),
    "ndjson": lambda df, buf: df.write_ndjson(buf),
}


def _frames() -> list[pl.DataFrame]:
    base = dt.datetime(2024, 5, 1)
    return [
        pl.DataFrame(
            {
                "k": ["a", "b", "a"],
                "t": [base + dt.timedelta(minutes=m) for m in (3, 1, 2)],
                "v": [1, 2, 3],
            }
        ),
        pl.DataFrame({"k": ["c"], "t": [base + dt.timedelta(minutes=9)], "v": [4]}),
        pl.DataFrame(
            {"k": ["b", "c"], "t": [base + dt.timedelta(minutes=m) for m in (7, 5)], "v": [5, 6]}
        ),
    ]


@pytest.fixture(params=["memory", "local"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> FileSystem:
    if request.param == "memory":
        return FileSystem(f"memory://streamkit-filelog-{uuid.uuid4().hex}")
    return FileSystem(str(tmp_path / "files"))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_filelog_reads_like_a_log(folder: FileSystem, fmt: str) -> None:
    frames = _frames()
    for i, frame in enumerate(frames):
        buf = io.BytesIO()
        FORMATS[fmt](frame, buf)
        folder.put(f"part-{i:02d}.{fmt}", buf.getvalue())
    folder.put("README.txt", b"not data")
    flog = sk.FileLog(folder.url, f"*.{fmt}", key="k", time="t")
    expected = pl.concat([f.with_row_index("_i").sort("t", "_i").drop("_i") for f in frames])
    got = flog.scan().collect()
    assert_frame_equal(got, expected, check_dtypes=False)
    assert got.schema["t"] == pl.Datetime("us")
    assert flog.end() == Position(6) and flog.start() == Position(0) and flog.count() == 6
    segs = flog.segments()
    assert segs["offset"].to_list() == [0, 3, 4]
    assert segs["rows"].to_list() == [3, 1, 2]
    assert segs["min_time"].to_list() == [dt.datetime(2024, 5, 1, 0, m) for m in (1, 9, 5)]
    assert segs["path"].to_list() == [f"part-{i:02d}.{fmt}" for i in range(3)]
    part = flog.scan(Position(2), Position(5), with_offset="o").collect()
    assert part["o"].to_list() == [2, 3, 4]
    assert part["v"].to_list() == [1, 4, 6]
    assert flog.scan().filter(pl.col("k") == "c").select("v").collect()["v"].to_list() == [4, 6]
    assert flog.transaction("any") is None
    assert flog.key == "k" and flog.time == "t" and flog.schema is not None
    assert "files=3" in repr(flog) and "FileLog" in flog._repr_html_()
    # New files sorting after the existing ones extend the log.
    buf = io.BytesIO()
    FORMATS[fmt](frames[1], buf)
    folder.put(f"part-99.{fmt}", buf.getvalue())
    assert flog.end() == Position(7)
    assert flog.scan(start=6).collect()["v"].to_list() == [4]


def test_filelog_is_read_only_and_checks_inputs(folder: FileSystem) -> None:
    folder.put("a.parquet", _parquet(pl.DataFrame({"k": [1], "t": [1]})))
    flog = FileLog(folder.url, key="k", time="t")
    with pytest.raises(ConfigurationError, match=r"read-only"):
        flog.append(pl.DataFrame({"k": [1], "t": [1]}))
    with pytest.raises(ConfigurationError, match=r"format"):
        FileLog(folder.url, key="k", time="t", format="xml")  # type: ignore[arg-type]
    folder.put("b.parquet", _parquet(pl.DataFrame({"k": [1], "t": [1], "x": [2]})))
    with pytest.raises(SchemaError, match=r"b.parquet.*unexpected \['x'\]"):
        flog.scan().collect()
    folder.rm(["b.parquet"])
    folder.put(
        "c.parquet",
        _parquet(pl.DataFrame({"k": [None], "t": [1]}, schema={"k": pl.Int64, "t": pl.Int64})),
    )
    with pytest.raises(SchemaError, match=r"c.parquet: the key column 'k' has 1 null"):
        flog.end()
    nokey = FileLog(folder.url, "a.parquet", key="user", time="t")
    with pytest.raises(SchemaError, match=r"expected a key column 'user'"):
        nokey.end()


def test_filelog_explicit_format_and_nested_pattern(folder: FileSystem) -> None:
    folder.put("2024/01/x.data", b"k,t\n1,2\n")
    folder.put("2024/02/y.data", b"k,t\n3,1\n")
    flog = FileLog(folder.url, "2024/*/*.data", key="k", time="t", format="csv")
    assert flog.scan().collect().rows() == [(1, 2), (3, 1)]


def test_filelog_unknown_extension(folder: FileSystem) -> None:
    folder.put("x.data", b"k,t\n1,2\n")
    with pytest.raises(ConfigurationError, match=r"cannot tell the format of .*x.data"):
        FileLog(folder.url, "*.data", key="k", time="t").end()


def _parquet(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()
