"""FileLog: existing files read as a read-only log, on local disk and in memory."""

from __future__ import annotations

import datetime as dt
import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import streamkit as sk
from streamkit.errors import (
    CheckpointError,
    ConfigurationError,
    CorruptFileError,
    SchemaError,
    StorageError,
)
from streamkit.storage import FileLog, Position
from streamkit.storage._fs import FileSystem
from streamkit.storage.position import FileCursor, FileMark

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


# ------------------------------------------------------------------ positions
@dataclass
class Drop:
    """A folder files are dropped into, with the options to read it."""

    fs: FileSystem
    options: dict[str, Any]

    def put(self, name: str, ids: list[int], t0: int = 0) -> None:
        frame = pl.DataFrame(
            {"k": [i % 5 for i in ids], "t": [t0 + i for i in ids], "id": ids},
            schema={"k": pl.Int64, "t": pl.Int64, "id": pl.Int64},
        )
        self.fs.put(name, _parquet(frame))

    def flog(self, pattern: str = "*.parquet", **kw: Any) -> FileLog:
        return FileLog(self.fs.url, pattern, key="k", time="t", storage_options=self.options, **kw)

    def age(self, name: str, seconds: float) -> None:
        """Set a local file's modification time (other backends stamp files themselves)."""
        if self.fs.is_local:
            full = os.path.join(self.fs.root, name)
            os.utime(full, (seconds, seconds))


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def drop(request: pytest.FixtureRequest, tmp_path: Path) -> Drop:
    """An empty folder on each backend."""
    if request.param == "memory":
        return Drop(FileSystem(f"memory://streamkit-filelog-{uuid.uuid4().hex}"), {})
    if request.param == "local":
        (tmp_path / "drop").mkdir()
        return Drop(FileSystem(str(tmp_path / "drop")), {})
    server = request.getfixturevalue("seaweedfs")
    options = request.getfixturevalue("s3_storage_options")
    return Drop(FileSystem(f"s3://{server['bucket']}/filelog-{uuid.uuid4().hex}", options), options)


def _ids(flog: FileLog, start: Position | None = None) -> list[int]:
    return sorted(flog.scan(start=start).collect()["id"].to_list())


def test_a_position_reads_files_arriving_out_of_name_order_once(drop: Drop) -> None:
    drop.put("a.parquet", [0, 1])
    drop.put("c.parquet", [4, 5, 6])
    flog = drop.flog()
    seen = flog.end()
    assert seen.offset == 5 and [m.path for m in seen.files.files] == ["a.parquet", "c.parquet"]
    drop.put("b.parquet", [2, 3])
    # the canonical offsets shift (b sorts between a and c); the position does not
    assert flog.scan(start=2).collect()["id"].to_list() == [2, 3, 4, 5, 6]
    later = flog.scan(start=seen, with_offset="o").collect()
    assert later["id"].to_list() == [2, 3] and later["o"].to_list() == [5, 6]
    assert flog.plan(seen).end.offset == 7
    # JSON round trip (what a checkpoint stores) keeps the consumed files
    again = Position.from_json(seen.to_json())
    assert again == seen and again.files == seen.files
    assert _ids(flog, again) == [2, 3]


def test_deleted_consumed_files_shift_nothing(drop: Drop) -> None:
    drop.put("a.parquet", [0, 1])
    drop.put("b.parquet", [2])
    flog = drop.flog()
    seen = flog.end()
    drop.fs.rm(["a.parquet"])
    drop.put("c.parquet", [3, 4])
    assert _ids(flog, seen) == [3, 4]
    drop.fs.rm(["b.parquet", "c.parquet"])
    assert flog.plan(seen).end.offset == seen.offset == 3  # nothing pending, nothing lost


def test_a_changed_consumed_file_is_an_error_naming_it(drop: Drop) -> None:
    drop.put("a.parquet", [0, 1])
    drop.put("b.parquet", [2])
    flog = drop.flog()
    seen = flog.end()
    drop.put("a.parquet", [0, 1, 99])  # rewritten with another row
    with pytest.raises(CorruptFileError, match=r"a\.parquet changed after it was consumed"):
        flog.plan(seen)
    drop.fs.rm(["a.parquet"])  # consumed files may go: the remedy
    assert _ids(flog, seen) == []


def test_the_window_bounds_a_position_and_late_files_below_it_are_errors(drop: Drop) -> None:
    for i, name in enumerate("bcdef"):
        drop.put(f"{name}.parquet", [i])
        drop.age(f"{name}.parquet", 1_000_000 + i)
    flog = drop.flog(window=2)
    seen = flog.end()
    cursor = seen.files
    assert cursor is not None
    assert cursor.watermark == "d.parquet"
    assert [m.path for m in cursor.files] == ["e.parquet", "f.parquet"]
    assert len(seen.to_json()) < 400
    # a consumed file below the watermark may go; a changed one above it is caught
    drop.fs.rm(["b.parquet"])
    assert _ids(flog, seen) == []
    # a file arriving above the watermark, even between consumed ones, is read
    drop.put("e1.parquet", [10])
    assert _ids(flog, seen) == [10]
    if drop.fs.protocol == "s3":
        return  # S3 stamps files to the second: the rest needs a settable clock
    drop.put("a.parquet", [11])  # newer than every file the watermark passed
    with pytest.raises(
        CheckpointError,
        match=r"a\.parquet appeared below the read position's watermark 'd\.parquet'",
    ):
        flog.plan(seen)
    drop.fs.rm(["a.parquet"])
    drop.put("e2.parquet", [11])  # the remedy: a name above the watermark
    assert _ids(flog, seen) == [10, 11]


def test_the_watermark_never_passes_a_file_still_to_read(drop: Drop) -> None:
    """Consuming files that sort high must not move the watermark over a pending one."""
    drop.put("x.parquet", [0])
    drop.put("z.parquet", [1, 2, 3])
    flog = drop.flog(window=1)
    plan = flog.plan(flog.start())
    first = flog.advance(plan.start, plan.batch(0, 2))  # x whole, z in part
    assert first.files is not None and first.files.partial is not None
    assert first.files.partial.path == "z.parquet" and first.files.partial_rows == 1
    drop.put("b.parquet", [4])
    drop.put("d.parquet", [5])
    plan = flog.plan(first)
    assert plan.files["path"].to_list() == ["z.parquet", "b.parquet", "d.parquet"]
    # the rest of z and b: three files consumed, window 1, but d is still to read
    after = flog.advance(first, plan.batch(2, 5))
    assert after.files is not None and after.files.watermark is not None
    assert after.files.watermark < "d.parquet"
    assert flog.plan(after).files["path"].to_list() == ["d.parquet"]
    assert _ids(flog, after) == [5]


def test_a_file_read_in_part_is_read_on_and_must_stay(drop: Drop) -> None:
    drop.put("a.parquet", [0, 1, 2, 3])
    flog = drop.flog()
    plan = flog.plan(flog.start())
    mid = flog.advance(plan.start, plan.batch(0, 3))
    assert "partial='a.parquet'@3" in repr(mid)
    drop.put("0.parquet", [7])  # arrives meanwhile, sorts first: read after a's rest
    rest = flog.scan(start=mid, with_offset="o").collect()
    assert rest["id"].to_list() == [3, 7] and rest["o"].to_list() == [3, 4]
    # canonical positions (an int) still count through the files in name order
    assert flog.scan(start=Position(1), end=3).collect()["id"].to_list() == [0, 1]
    drop.fs.rm(["a.parquet"])
    with pytest.raises(CheckpointError, match=r"a\.parquet was read up to row 3 and has since"):
        flog.plan(mid)


def test_a_batch_reads_exactly_its_files(drop: Drop) -> None:
    drop.put("a.parquet", [0, 1])
    drop.put("c.parquet", [2])
    flog = drop.flog()
    plan = flog.plan(flog.start())
    batch = plan.batch(0, plan.end_offset)
    drop.put("b.parquet", [9])  # arrives after the plan: not part of the batch
    got = flog.read_batch(batch, with_offset="o").collect()
    assert got["id"].to_list() == [0, 1, 2] and got["o"].to_list() == [0, 1, 2]
    assert [f[0] for f in batch["files"]] == ["a.parquet", "c.parquet"]
    drop.fs.rm(["c.parquet"])
    with pytest.raises(sk.LogNotFoundError, match=r"c\.parquet disappeared"):
        flog.read_batch(batch).collect()


def test_hive_folders_order_by_path(drop: Drop) -> None:
    drop.put("dt=2026-11-26/hour=07/b.parquet", [2])
    drop.put("dt=2026-11-25/hour=23/z.parquet", [0])
    drop.put("dt=2026-11-26/hour=07/a.parquet", [1])
    drop.put("dt=2026-11-26/_SUCCESS", [])
    flog = drop.flog("dt=*/hour=*/*.parquet")
    assert flog.segments()["path"].to_list() == [
        "dt=2026-11-25/hour=23/z.parquet",
        "dt=2026-11-26/hour=07/a.parquet",
        "dt=2026-11-26/hour=07/b.parquet",
    ]
    seen = flog.end()
    drop.put("dt=2026-11-26/hour=06/late.parquet", [3])
    assert flog.scan(start=seen, with_offset="o").collect().select("id", "o").rows() == [(3, 3)]


def test_empty_files_are_consumed_with_their_neighbours(drop: Drop) -> None:
    drop.put("a.parquet", [])
    drop.put("b.parquet", [0])
    drop.put("c.parquet", [])
    flog = drop.flog()
    plan = flog.plan(flog.start())
    assert [f[0] for f in plan.batch(0, 1)["files"]] == ["a.parquet", "b.parquet", "c.parquet"]
    assert flog.plan(plan.end).files.height == 0


def test_batches_hold_at_most_batch_files(drop: Drop, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamkit.storage import filelog

    monkeypatch.setattr(filelog, "BATCH_FILES", 2)
    for i in range(5):
        drop.put(f"{i}.parquet", [2 * i, 2 * i + 1])
    plan = drop.flog().plan(0)
    assert [plan.cut(lo, 100) for lo in (0, 3, 4)] == [4, 6, 8]
    assert plan.cut(8, 100) == 10


def test_positions_compare_by_offset_and_keep_their_files() -> None:
    cursor = FileCursor("b", 5, (FileMark("c", 1, "e", 6),), FileMark("d", 9, "f", 7), 2)
    pos = Position(10, files=cursor)
    assert pos == Position(10) and hash(pos) == hash(Position(10)) and pos < Position(11)
    assert Position.from_dict(pos.to_dict()).files == cursor
    assert repr(pos) == "Position(offset=10, watermark='b', consumed=['c'], partial='d'@2)"
    with pytest.raises(ValueError, match=r"FileLog cursor"):
        Position.from_dict({"offset": 1, "files": {"files": [["a"]]}})
    with pytest.raises(ConfigurationError, match=r"window"):
        FileLog("memory://streamkit-filelog-window", key="k", time="t", window=0)


def test_a_batch_cannot_consume_a_file_twice(drop: Drop) -> None:
    drop.put("a.parquet", [0])
    flog = drop.flog()
    plan = flog.plan(flog.start())
    batch = plan.batch(0, 1)
    with pytest.raises(CheckpointError, match=r"a\.parquet again"):
        flog.advance(plan.end, {**batch, "start": 1, "end": 2})


# ------------------------------------------------------------------ listing
def test_describe_says_what_a_position_has_read(tmp_path: Path) -> None:
    """In files, as verify reports a FileLog's position: within a file, by name
    above the watermark, then up to the watermark once the window is full."""
    for name in "abcd":
        pl.DataFrame({"k": [1, 2, 3], "t": [1, 2, 3]}).write_parquet(tmp_path / f"{name}.parquet")
    flog = sk.FileLog(str(tmp_path), key="k", time="t", window=2)
    plan = flog.plan()

    def at(hi: int) -> str:
        return flog.describe(flog.advance(plan.start, plan.batch(0, hi)))

    assert flog.describe(flog.start()) == "no file read yet"
    assert at(1) == "read: the first 1 row of 'a.parquet'"
    assert at(3) == "read: 1 file by name"
    assert at(8) == "read: 2 files by name, and the first 2 rows of 'c.parquet'"
    assert at(12) == flog.describe(flog.end())
    assert at(12) == "read: every file up to 'b.parquet' in path order, and 2 more files by name"


def test_find_details_lists_the_files_as_they_are_now(drop: Drop) -> None:
    """One listing with sizes and change tags; a listing cached by the backend
    (s3fs keeps one per directory) never hides a file another process wrote."""
    drop.put("a.parquet", [0])
    drop.put("sub/b.parquet", [1, 2])
    got = drop.fs.find_details()
    assert [d["path"] for d in got] == ["a.parquet", "sub/b.parquet"]
    assert [d["size"] for d in got] == [len(drop.fs.get(d["path"])) for d in got]
    assert all(isinstance(d["mtime"], int) and d["mtime"] > 0 for d in got)
    assert all((d["etag"] is not None) == (drop.fs.protocol == "s3") for d in got)
    assert [d["path"] for d in drop.fs.find_details(recursive=False)] == ["a.parquet"]
    assert drop.fs.find_details("nowhere") == []
    raw, root = drop.fs.fsspec, drop.fs.root
    if drop.fs.protocol == "s3":  # another client, as another process would have
        import s3fs

        raw = s3fs.S3FileSystem(skip_instance_cache=True, **drop.options)
        assert len(drop.fs.fsspec.ls(root, detail=True)) == 2  # fills s3fs' listing cache
    before = {d["path"]: d for d in got}
    raw.pipe_file(f"{root}/c.parquet", b"new")
    raw.pipe_file(f"{root}/a.parquet", b"rewritten" * 100)
    raw.rm_file(f"{root}/sub/b.parquet")
    if drop.fs.protocol == "s3":  # the cached listing is stale indeed ...
        assert len(drop.fs.fsspec.ls(root, detail=True)) == 2
    now = {d["path"]: d for d in drop.fs.find_details()}  # ... find_details is not
    assert sorted(now) == ["a.parquet", "c.parquet"]
    assert drop.fs.find_details(recursive=False) == [now["a.parquet"], now["c.parquet"]]
    assert now["a.parquet"]["size"] == 900 != before["a.parquet"]["size"]
    assert drop.fs.protocol != "s3" or now["a.parquet"]["etag"] != before["a.parquet"]["etag"]


def test_find_details_errors_name_the_folder_not_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fs = FileSystem(f"memory://streamkit-find-details-{uuid.uuid4().hex}", {"secret": "hunter22"})

    def broken(*_a: Any, **_k: Any) -> Any:
        raise ConnectionError("reset by peer (secret=hunter22)")

    monkeypatch.setattr(fs.fsspec, "find", broken)
    with pytest.raises(StorageError, match=r"cannot list memory://streamkit-find-details-\w+/d: "):
        fs.find_details("d")
    with pytest.raises(StorageError) as info:
        fs.find_details()
    assert "hunter22" not in str(info.value) and "***" in str(info.value)


def test_storage_exports_what_a_filelog_hands_out(folder: FileSystem) -> None:
    import streamkit.storage as storage

    assert storage.__all__ == sorted(storage.__all__)
    assert {"FileCursor", "FileLog", "FileMark", "FilePlan"} <= set(storage.__all__)
    folder.put("a.csv", b"k,t\n1,1\n")
    flog = FileLog(folder.url, "*.csv", key="k", time="t")
    end = flog.end()
    assert isinstance(flog.plan(), storage.FilePlan)
    assert isinstance(end.files, storage.FileCursor)
    assert isinstance(end.files.files[0], storage.FileMark)
    assert flog.filesystem.url == folder.url


# ------------------------------------------------------------------ damaged and compressed files
def _ipc(df: pl.DataFrame, compression: str = "uncompressed") -> bytes:
    buf = io.BytesIO()
    df.write_ipc(buf, compression=compression)  # type: ignore[arg-type]
    return buf.getvalue()


def test_compressed_ipc_is_read_and_damaged_files_are_named(folder: FileSystem) -> None:
    frame = pl.DataFrame({"k": [1, 2, 3], "t": [3, 1, 2], "s": ["x", None, "zz"]})
    for i, compression in enumerate(("uncompressed", "lz4", "zstd")):
        folder.put(f"{i}.arrow", _ipc(frame, compression))
    flog = FileLog(folder.url, "*.arrow", key="k", time="t")
    assert flog.scan().collect()["t"].to_list() == [1, 2, 3] * 3
    good = _parquet(frame)
    for name, data in (("cut.parquet", good[: len(good) // 2]), ("cut.arrow", _ipc(frame)[:-40])):
        folder.put(name, data)
        with pytest.raises(CorruptFileError) as info:
            FileLog(folder.url, name, key="k", time="t").end()
        message = str(info.value)
        assert f"corrupt file {folder.url}/{name}: not a readable" in message, message
        assert "move the file out of the FileLog's folder" in message, message
        assert "truncate/retract" not in message


def test_ipc_decoded_size_covers_what_polars_allocates() -> None:
    """The estimate from the IPC metadata is at least what decoding takes, for
    every column kind, compressed or not, in several batches; garbage is refused."""
    import pyarrow as pa
    import pyarrow.ipc as pa_ipc

    from streamkit.storage._ipc import ipc_decoded_size

    n = 20_000
    table = pa.table(
        {
            "i": pa.array(range(n), pa.int64()),
            "s": pa.array([f"v{i % 97}" for i in range(n)]),
            "ls": pa.array([f"w{i}" for i in range(n)], pa.large_string()),
            "d": pa.array([f"z{i % 7}" for i in range(n)]).dictionary_encode(),
            "l": pa.array([[i, i + 1] for i in range(n)]),
            "st": pa.array([{"a": i, "b": str(i)} for i in range(n)]),
            "b": pa.array([i % 2 == 0 for i in range(n)]),
        }
    )
    for compression in (None, "lz4", "zstd"):
        sink = io.BytesIO()
        options = pa_ipc.IpcWriteOptions(compression=compression)
        with pa_ipc.new_file(sink, table.schema, options=options) as writer:
            for batch in table.to_batches(max_chunksize=6_000):
                writer.write_batch(batch)
        data = sink.getvalue()
        size, rows = ipc_decoded_size(data)
        decoded = pl.read_ipc(data).estimated_size()
        assert rows == n and decoded <= size < 4 * decoded, (compression, size, decoded)
    for bad in (b"", b"ARROW1\x00\x00" + b"\x00" * 20 + b"ARROW1", data[:-10] + data[-6:]):
        with pytest.raises(ValueError):
            ipc_decoded_size(bad)
