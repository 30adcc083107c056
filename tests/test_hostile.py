"""Damage and hostile input: every bad file or value gets a clear error or the
quarantine, never a traceback from deep inside, never unbounded memory, never a
read or a delete outside the store.

Layout: damaged pipeline files and their recoveries; tampered paths; hostile
values (huge rows, decompression bombs, extension types, schema drift, nulls);
names that try to leave the store.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pytest
from click.testing import CliRunner

import streamkit as sk
from streamkit.cli import main
from streamkit.datasets import generate_orders, order_machine
from streamkit.pipeline._checkpoints import _canonical
from streamkit.storage import _manifest as mf
from streamkit.storage._fs import crc32
from streamkit.storage._reader import DECODE_FLOOR
from streamkit.storage.log import schema_to_b64

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
NAME = "hostile"


# ---------------------------------------------------------------------- helpers
def _damage(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :]


@pytest.fixture(scope="module")
def orders() -> pl.DataFrame:
    return generate_orders(120, span="3h", seed=7)


def build(store: sk.Store, **kw: Any) -> sk.Pipeline:
    return (
        sk.Pipeline(NAME, store, **kw)
        .read(store.log("orders", key="order_id", time="ts"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


def outcome(store: sk.Store) -> tuple[list[Any], list[Any], list[Any]]:
    """History, state and quarantine of the pipeline, in a canonical order."""
    pipe = build(store)
    history = store.log("history").scan().collect().sort(pl.all()).rows()
    state = pipe.state().sort("key").rows()
    quarantine = pipe.quarantine().select("offset", "reason").sort("offset").rows()
    return history, state, quarantine


@pytest.fixture(scope="module")
def fresh(orders: pl.DataFrame) -> tuple[list[Any], list[Any], list[Any]]:
    """What an undisturbed run gives."""
    store = sk.Store("memory://hostile-fresh")
    store.log("orders", key="order_id", time="ts").append(orders)
    build(store).run(progress=False)
    return outcome(store)


def ran(store: sk.Store, orders: pl.DataFrame, batch_rows: int = 100) -> sk.Pipeline:
    """The pipeline after a run over ``orders`` in batches (five checkpoints)."""
    store.log("orders", key="order_id", time="ts").append(orders)
    pipe = build(store)
    assert pipe.run(batch_rows=batch_rows, progress=False).checkpoint == 5
    return pipe


def pipeline_fs(store: sk.Store) -> Any:
    return store.filesystem.child(f"_pipelines/{NAME}")


def rewrite_checkpoint(store: sk.Store, cid: int, change: Any) -> None:
    """Change checkpoint ``cid`` and re-checksum it: a tampered, not a damaged, file."""
    fs = pipeline_fs(store)
    rel = f"checkpoints/{cid:012d}.json"
    doc = json.loads(fs.get(rel))
    doc.pop("crc32")
    change(doc)
    doc["crc32"] = crc32(_canonical(doc))
    fs.put(rel, _canonical(doc))


def state_entry(doc: dict[str, Any]) -> dict[str, Any]:
    """The newest state file a checkpoint lists: the one only that checkpoint uses
    (key groups' chains share older files with earlier checkpoints)."""
    files = next(iter(doc["operators"].values()))["state"]["files"]
    entry: dict[str, Any] = max(files, key=lambda f: f["path"])
    return entry


def problems(report: Any) -> str:
    return "\n".join(c.message for c in report.problems)


# ------------------------------------------------------------- damaged pipeline files
@pytest.mark.parametrize("how", ["bitflip", "truncated"])
def test_a_damaged_newest_checkpoint_is_named_and_rewound_past(
    store: sk.Store, backend: str, orders: pl.DataFrame, fresh: Any, how: str
) -> None:
    ran(store, orders)
    fs = pipeline_fs(store)
    rel = "checkpoints/000000000005.json"
    fs.put(rel, _damage(fs.get(rel), how))

    with pytest.raises(sk.CorruptFileError, match=r"000000000005\.json.*from_checkpoint=N"):
        build(store).run(progress=False)
    report = build(store).verify()
    assert not report.ok and "000000000005.json" in problems(report)
    if backend != "s3":  # the CLI in this process reaches memory and local stores
        result = CliRunner().invoke(main, ["verify", store.url, NAME])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "000000000005.json" in result.output and "from_checkpoint" in result.output
    table = build(store).checkpoints()
    assert table.filter(pl.col("kind") == "damaged")["id"].to_list() == [5]
    assert build(store).verify(checkpoint=4).ok  # the way out, checked first

    build(store).run(from_checkpoint=4, progress=False)
    assert outcome(store) == fresh
    assert build(store).verify(replay=True).ok


@pytest.mark.parametrize("how", ["bitflip", "truncated"])
def test_a_damaged_state_file_is_named_and_rewound_past(
    store: sk.Store, orders: pl.DataFrame, fresh: Any, how: str
) -> None:
    pipe = ran(store, orders)
    fs = pipeline_fs(store)
    latest = json.loads(fs.get("checkpoints/000000000005.json"))
    rel = state_entry(latest)["path"]
    fs.put(rel, _damage(fs.get(rel), how))

    name = rel.split("/")[-1]
    with pytest.raises(sk.CorruptFileError, match=rf"{name}.*from_checkpoint=N"):
        build(store).run(progress=False)
    with pytest.raises(sk.CorruptFileError, match=name):
        pipe.state()
    report = pipe.verify()
    assert not report.ok and name in problems(report)

    build(store).run(from_checkpoint=4, progress=False)
    assert outcome(store) == fresh
    assert build(store).verify(replay=True).ok


def test_a_damaged_output_segment_is_rewritten_by_a_rewind(
    orders: pl.DataFrame, fresh: Any
) -> None:
    """A damaged segment of the output log: verify names it; rewinding to the
    checkpoint before its batch retracts it and writes the batch again."""
    import datetime as dt

    store = sk.Store("memory://hostile-output-segment")
    pipe = ran(store, orders)
    history = store.log("history")
    seg = history.segments().filter(pl.col("writer_seq") == 3).row(0, named=True)
    fs = store.filesystem.child("history")
    fs.put(seg["path"], _damage(fs.get(seg["path"]), "bitflip"))
    name = seg["path"].split("/")[-1]
    report = pipe.verify()
    assert not report.ok and name in problems(report)

    build(store).run(from_checkpoint=2, progress=False)
    assert outcome(store) == fresh
    assert build(store).verify().ok
    assert seg["path"] in history.vacuum(retain=dt.timedelta(0))


def test_verify_and_the_cli_name_damaged_source_files(
    orders: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "lake")
    store = sk.Store(url)
    source = store.log("orders", key="order_id", time="ts")
    source.append(orders.head(200))
    pipe = build(store)
    pipe.run(progress=False)
    source.append(orders.slice(200, 100))  # not processed yet
    seg = source.segments().row(-1, named=True)
    path = tmp_path / "lake/orders" / seg["path"]
    path.write_bytes(_damage(path.read_bytes(), "bitflip"))
    report = pipe.verify()
    assert [c.name for c in report.problems] == ["source log"]
    assert path.name in problems(report)

    runner = CliRunner()
    result = runner.invoke(main, ["verify", url, NAME])
    assert result.exit_code == 1, result.output
    assert path.name in result.output and "Traceback" not in result.output

    version = tmp_path / "lake/orders" / mf.version_path(1)
    version.write_bytes(_damage(version.read_bytes(), "truncated"))
    result = runner.invoke(main, ["verify", url, NAME])
    assert result.exit_code == 1, result.output
    assert version.name in result.output and "Traceback" not in result.output


def test_verify_refuses_a_checkpoint_on_an_abandoned_line(orders: pl.DataFrame) -> None:
    """After a rewind to 2, checkpoints 3-5 are abandoned (their outputs were
    retracted): verify says so before anyone rewinds to one of them."""
    store = sk.Store("memory://hostile-abandoned")
    ran(store, orders)
    build(store).run(from_checkpoint=2, progress=False)
    assert build(store).verify(checkpoint=2).ok
    report = build(store).verify(checkpoint=4)
    assert not report.ok and "abandoned line" in problems(report)
    assert build(store).verify().ok


# ---------------------------------------------------------------------- tampered paths
@pytest.mark.parametrize(
    "bad",
    [
        "../../outside.arrow",
        "state/../../../outside.arrow",
        "ABSOLUTE",
        "quarantine/_log/00000000000000000000.json",
    ],
)
def test_state_file_paths_in_a_checkpoint_cannot_leave_the_state_folder(
    orders: pl.DataFrame, tmp_path: Path, bad: str
) -> None:
    """A checkpoint (checksum recomputed) naming a state file elsewhere is refused
    by run, state, verify and retention; nothing is read or deleted there."""
    lake = tmp_path / "lake"
    store = sk.Store(str(lake))
    pipe = ran(store, orders)
    outside = tmp_path / "outside.arrow"  # where "../../" from the pipeline folder leads
    outside.write_bytes(b"precious")
    (lake / "outside.arrow").write_bytes(b"precious")
    target = str(outside) if bad == "ABSOLUTE" else bad
    quarantine_v0 = lake / f"_pipelines/{NAME}/quarantine" / mf.version_path(0)
    assert quarantine_v0.exists()

    def tamper(doc: dict[str, Any]) -> None:
        state_entry(doc)["path"] = target

    fs = pipeline_fs(store)
    newest = fs.get("checkpoints/000000000005.json")
    for cid in (1, 5):
        rewrite_checkpoint(store, cid, tamper)
    with pytest.raises(sk.CorruptFileError, match=r"000000000005\.json.*a state file path"):
        build(store).run(progress=False)
    with pytest.raises(sk.CorruptFileError, match="a state file path"):
        pipe.state()
    assert not pipe.verify().ok
    assert pipe._ckpts().prune(1, protect=set()) == 0  # retention stops at checkpoint 5
    fs.put("checkpoints/000000000005.json", newest)  # restored; checkpoint 1 stays tampered
    assert pipe._ckpts().prune(1, protect={5}) == 4  # 1 goes without touching its "state"
    assert outside.read_bytes() == b"precious"
    assert (lake / "outside.arrow").read_bytes() == b"precious"
    assert quarantine_v0.exists()


# ---------------------------------------------------------------------- extension types
class _Evil(pa.ExtensionType):
    """An extension type no one registered: it travels as field metadata."""

    def __init__(self) -> None:
        super().__init__(pa.large_string(), "evil.payload")

    def __arrow_ext_serialize__(self) -> bytes:
        return b"\x80\x05\x95 not a pickle streamkit would ever load"

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: Any, serialized: bytes) -> _Evil:
        raise AssertionError("streamkit decoded an extension type")


def _keys(kind: str, n: int) -> pa.Array:
    if kind == "registered extension":
        return pa.array([os.urandom(16) for _ in range(n)], pa.uuid())
    if kind == "unregistered extension":
        storage = pa.array([str(i) for i in range(n)], pa.large_string())
        return pa.ExtensionArray.from_storage(_Evil(), storage)
    if kind == "nested":
        return pa.array([[i] for i in range(n)])
    return pa.array([str(i) for i in range(n)], pa.large_string())


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("registered extension", "extension type 'arrow.uuid'"),
        ("unregistered extension", "extension type 'evil.payload'"),
        ("nested", "has type list"),
        ("string events", "unexpected column types"),
    ],
)
def test_unexpected_types_in_a_state_file_are_refused(
    orders: pl.DataFrame, kind: str, message: str
) -> None:
    """A state file (and its checkpoint, checksums recomputed) replaced with
    extension, nested or mistyped columns: CorruptFileError naming the file,
    before any extension type is decoded."""
    store = sk.Store(f"memory://hostile-ext-{kind.replace(' ', '-')}")
    pipe = ran(store, orders)
    fs = pipeline_fs(store)
    n = 3
    events = pa.array(["x"] * n) if kind == "string events" else pa.array([1] * n, pa.int64())
    table = pa.table(
        {
            "key": _keys(kind, n),
            "state": pa.array(["created"] * n, pa.large_string()),
            "since": pa.array([0] * n, pa.timestamp("us")),
            "last_time": pa.array([0] * n, pa.timestamp("us")),
            "events": events,
        }
    )
    sink = pa.BufferOutputStream()
    with pa_ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    path = "state/0000000000000-forged.arrow"
    fs.put(path, data)

    def point(doc: dict[str, Any]) -> None:
        state_entry(doc).update(path=path, bytes=len(data), crc32=crc32(data))

    rewrite_checkpoint(store, 5, point)
    with pytest.raises(sk.CorruptFileError, match=rf"0000000000000-forged\.arrow.*{message}"):
        build(store).run(progress=False)
    with pytest.raises(sk.CorruptFileError, match=message):
        pipe.state()
    report = pipe.verify()
    assert not report.ok and message in problems(report)


# ---------------------------------------------------------------------- bombs
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Struct:
    """A Thrift compact-protocol struct (the encoding of Parquet's metadata)."""

    def __init__(self) -> None:
        self.buf, self.last = bytearray(), 0

    def _field(self, fid: int, kind: int) -> _Struct:
        self.buf.append(((fid - self.last) << 4) | kind)
        self.last = fid
        return self

    def i32(self, fid: int, v: int, kind: int = 5) -> _Struct:
        self._field(fid, kind).buf.extend(_varint(v << 1))  # zigzag of v >= 0
        return self

    def i64(self, fid: int, v: int) -> _Struct:
        return self.i32(fid, v, kind=6)

    def text(self, fid: int, v: str) -> _Struct:
        self._field(fid, 8).buf.extend(_varint(len(v)) + v.encode())
        return self

    def struct(self, fid: int, s: _Struct) -> _Struct:
        self._field(fid, 12).buf.extend(s.end())
        return self

    def ints(self, fid: int, items: list[int]) -> _Struct:
        self._field(fid, 9).buf.append((len(items) << 4) | 5)
        for v in items:
            self.buf.extend(_varint(v << 1))
        return self

    def texts(self, fid: int, items: list[str]) -> _Struct:
        self._field(fid, 9).buf.append((len(items) << 4) | 8)
        for v in items:
            self.buf.extend(_varint(len(v)) + v.encode())
        return self

    def structs(self, fid: int, items: list[_Struct]) -> _Struct:
        self._field(fid, 9).buf.append((len(items) << 4) | 12)
        for s in items:
            self.buf.extend(s.end())
        return self

    def end(self) -> bytes:
        return bytes(self.buf) + b"\x00"


def zstd_zeros(size: int) -> bytes:
    """A zstd frame of RLE blocks: 4 bytes per 128 KiB of zeros."""
    frame = bytearray(struct.pack("<IB", 0xFD2FB528, 0xE0) + struct.pack("<Q", size))
    left = size
    while left:
        n = min(1 << 17, left)
        left -= n
        frame += (int(left == 0) | (1 << 1) | (n << 3)).to_bytes(3, "little") + b"\x00"
    return bytes(frame)


def bomb_parquet(rows: int, *, claimed: int | None = None) -> bytes:
    """Parquet with Int64 columns k, t, v of ``rows`` zeros each, zstd-compressed
    to a few KiB per GiB. With ``claimed``, the footer claims that many rows and
    small sizes while the pages still hold ``rows`` values (a lying footer)."""
    declared = rows if claimed is None else claimed
    payload = zstd_zeros(8 * rows)
    out = bytearray(b"PAR1")
    chunks = []
    for name in ("k", "t", "v"):
        offset = len(out)
        data_page = _Struct().i32(1, rows).i32(2, 0).i32(3, 3).i32(4, 3)
        header = _Struct().i32(1, 0).i32(2, 8 * rows).i32(3, len(payload))
        header_bytes = header.struct(5, data_page).end()
        out += header_bytes + payload
        meta = (
            _Struct()
            .i32(1, 2)
            .ints(2, [0, 3])
            .texts(3, [name])
            .i32(4, 6)
            .i64(5, declared)
            .i64(6, len(header_bytes) + 8 * declared)
            .i64(7, len(header_bytes) + len(payload))
            .i64(9, offset)
        )
        chunks.append(_Struct().i64(2, offset).struct(3, meta))
    schema = [_Struct().text(4, "schema").i32(5, 3)]
    schema += [_Struct().i32(1, 2).i32(3, 0).text(4, n) for n in ("k", "t", "v")]
    group = _Struct().structs(1, chunks).i64(2, 24 * declared).i64(3, declared)
    footer = _Struct().i32(1, 1).structs(2, schema).i64(3, declared).structs(4, [group]).end()
    return bytes(out + footer + struct.pack("<I", len(footer)) + b"PAR1")


def forge_segment(store: sk.Store, name: str, data: bytes, rows: int) -> str:
    """A log ``name`` whose one committed segment is ``data`` (a consistent,
    checksummed manifest: what a hostile writer with store access can do)."""
    log = store.log(name, key="k", time="t")
    fs = store.filesystem.child(name)
    path = f"data/p=000/{mf.now_ms()}-forged.parquet"
    fs.put(path, data)
    seg = mf.Segment(path, 0, 0, 0, rows, 0, 0, len(data), crc32(data), 1).to_dict()
    schema = schema_to_b64(pl.Schema({"k": pl.Int64, "t": pl.Int64, "v": pl.Int64}), name)
    body = {
        "timestamp": mf.now_ms(),
        "commit": "forged",
        "op": "append",
        "add": [seg],
        "remove": [],
        "schema": schema,
        "txn": None,
        "next_offset": rows,
    }
    created = mf.apply_version(None, fs.get(mf.version_path(0)), 0, name)
    fs.put(mf.version_path(1), mf.encode_version(created, body, 1))
    assert log.end().offset == rows
    return path


@pytest.mark.parametrize("kind", ["bomb", "lying footer", "row count"])
def test_decompression_bombs_are_refused_before_inflating(kind: str) -> None:
    store = sk.Store(f"memory://hostile-bomb-{kind.replace(' ', '-')}")
    if kind == "bomb":  # 3 GiB of zeros in ~100 KiB
        data, rows, message = bomb_parquet(1 << 27), 1 << 27, "refused to decode"
    elif kind == "lying footer":  # the footer claims 1,000 rows; the pages inflate to 3 GiB
        data, rows, message = bomb_parquet(1 << 27, claimed=1000), 1000, "refused to decode"
    else:
        data, rows, message = bomb_parquet(1000), 999, "expected 999 rows"
    path = forge_segment(store, "bombed", data, rows)
    with pytest.raises(sk.CorruptFileError, match=rf"{message}") as info:
        store.log("bombed").scan().select("k").head(1).collect()
    assert path.split("/")[-1] in str(info.value)
    assert len(data) * 100 < DECODE_FLOOR  # the floor is what applies here


_MEMORY_SCRIPT = """
import json, os, resource, sys
import polars as pl
import streamkit as sk
from tests.test_hostile import bomb_parquet, forge_segment

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

store = sk.Store("memory://rss")
out = {}
forge_segment(store, "warm", bomb_parquet(1000), 1000)
store.log("warm").scan().collect()  # readers, thread pools and allocators warmed up
base = peak()
for claimed in (None, 1000):
    forge_segment(store, f"bomb{claimed}", bomb_parquet(1 << 27, claimed=claimed),
                  claimed or 1 << 27)
    try:
        store.log(f"bomb{claimed}").scan().collect()
    except sk.CorruptFileError:
        pass
    else:
        sys.exit("the bomb was decoded")
out["bomb"] = peak() - base

m = sk.Machine("door", states=["closed", "opened"], initial="closed", final=["closed"],
               transitions=[("closed", "open", "opened"), ("opened", "close", "closed")])
log = store.log("ev", key="k", time="t")
log.append(pl.DataFrame({"k": ["a"], "t": [0], "e": ["open"], "payload": ["x"]}))
pipe = (sk.Pipeline("p", store).read(log).transitions(m, event="e")
        .write(store.log("h", key="key", time="time")))
pipe.run(progress=False)
big = os.urandom(25_000_000).hex()  # a 50 MB value that does not compress
base = peak()
log.append(pl.DataFrame({"k": ["a", "b"], "t": [1, 2], "e": ["close", "bogus"],
                         "payload": [big, "y"]}))
assert log.scan().collect()["payload"].str.len_bytes().max() == len(big)
report = pipe.run(progress=False)
quarantined = pipe.quarantine()
out["huge_row"] = peak() - base
out["rows"] = [report.rows_in, report.rows_out, report.quarantined]
out["reasons"] = quarantined["reason"].to_list()
print(json.dumps(out))
"""


def test_bombs_and_huge_rows_in_bounded_memory() -> None:
    """Peak RSS in a fresh process: refusing a 3 GiB bomb (honest or lying
    footer) costs next to nothing; a 50 MB value is appended, read and run
    through a pipeline within a small multiple of its size."""
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["bomb"] < 64 * 2**20, got
    assert got["huge_row"] < 10 * 50_000_000, got
    assert got["rows"] == [2, 1, 1] and got["reasons"] == ["undefined"], got


def bomb_ipc(rows: int) -> bytes:
    """An Arrow IPC file (zstd buffers) with Int64 columns k, t, v of ``rows``
    zeros each: about 50 KiB per 1.5 GiB decoded."""
    zeros = pa.py_buffer(bytes(8 * rows))  # calloc'd: pages never written cost no memory
    column = pa.Array.from_buffers(pa.int64(), rows, [None, zeros])
    table = pa.table({"k": column, "t": column, "v": column})
    sink = pa.BufferOutputStream()
    options = pa_ipc.IpcWriteOptions(compression="zstd")
    with pa_ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _drop_bombs(folder: Path) -> dict[str, bytes]:
    """A FileLog folder with a good file and a Parquet and an IPC bomb."""
    folder.mkdir()
    pl.DataFrame({"k": [1], "t": [1], "v": [1]}).write_parquet(folder / "a-good.parquet")
    bombs = {"b-bomb.parquet": bomb_parquet(1 << 27), "b-bomb.arrow": bomb_ipc(1 << 26)}
    for name, data in bombs.items():
        (folder / name).write_bytes(data)
        assert len(data) * 100 < DECODE_FLOOR  # the floor is what applies here
    return bombs


@pytest.mark.parametrize("name", ["b-bomb.parquet", "b-bomb.arrow"])
def test_decompression_bombs_dropped_in_a_filelog_folder_are_refused(
    tmp_path: Path, name: str
) -> None:
    """A Parquet or compressed Arrow IPC bomb among dropped files: refused before
    inflating, named, with the way out (move it out of the folder) -- which works."""
    folder = tmp_path / "drops"
    _drop_bombs(folder)
    files = sk.FileLog(str(folder), f"*{Path(name).suffix}", key="k", time="t")
    store = sk.Store(str(tmp_path / "lake"))
    pipe = sk.Pipeline("p", store).read(files).write(store.log("out", key="k", time="t"))
    for attempt in (files.end, lambda: pipe.run(progress=False)):
        with pytest.raises(sk.CorruptFileError) as info:
            attempt()
        message = str(info.value)
        assert f"refused to decode {folder}/{name}" in message, message
        assert "move the file out of the FileLog's folder" in message, message
    assert pipe.checkpoints().height == 0
    (folder / name).rename(tmp_path / name)
    rows = 1 if name.endswith(".parquet") else 0
    assert pipe.run(progress=False).rows_in == rows


_FILELOG_MEMORY_SCRIPT = """
import json, resource, sys
import streamkit as sk

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

folder = sys.argv[1]
sk.FileLog(folder, "a-good.parquet", key="k", time="t").scan().collect()  # warm up
base = peak()
refused = []
for pattern in ("b-bomb.parquet", "b-bomb.arrow", "*"):
    try:
        sk.FileLog(folder, pattern, key="k", time="t").end()
    except sk.CorruptFileError as exc:
        refused.append(str(exc).split(":")[0])
    else:
        sys.exit(f"the bomb {pattern} was decoded")
print(json.dumps({"peak": peak() - base, "refused": refused}))
"""


def test_bombs_in_a_filelog_folder_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    """Peak RSS in a fresh process: listing a folder that holds a 3 GiB Parquet
    bomb and a 1.5 GiB Arrow IPC bomb (zstd, ~50 KiB each) costs next to nothing."""
    folder = tmp_path / "drops"
    _drop_bombs(folder)
    done = subprocess.run(
        [sys.executable, "-c", _FILELOG_MEMORY_SCRIPT, str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["peak"] < 64 * 2**20, got
    assert got["refused"] == [
        f"refused to decode {folder}/b-bomb.{ext}" for ext in ("parquet", "arrow", "arrow")
    ], got


def test_damaged_files_dropped_in_a_filelog_folder_are_named_never_a_panic() -> None:
    """Random byte damage to dropped Parquet and Arrow IPC files (no checksums
    guard them): each read returns rows or a streamkit error naming the file,
    never a Polars panic or another exception from deep inside."""
    import random

    frame = pl.DataFrame({"k": list(range(300)), "t": list(range(300)), "s": ["x"] * 300})
    files = {}
    buf = io.BytesIO()
    frame.write_parquet(buf, row_group_size=100)
    files["parquet"] = buf.getvalue()
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="zstd")
    files["arrow"] = buf.getvalue()
    url = "memory://hostile-filelog-damage"
    fs = sk.Store(url).filesystem
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    for trial in range(600):
        ext = ("parquet", "arrow")[trial % 2]
        data = bytearray(files[ext])
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        name = f"{trial:04d}.{ext}"
        fs.put(name, bytes(data))
        try:
            sk.FileLog(url, name, key="k", time="t").scan().collect()
            outcome = "read"
        except (sk.CorruptFileError, sk.SchemaError) as exc:
            assert f"{url}/{name}" in str(exc), exc
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes["CorruptFileError"] > 300, outcomes


# ---------------------------------------------------------------------- schema drift
def test_schema_drift_is_refused_with_what_to_do(tmp_path: Path) -> None:
    store = sk.Store("memory://hostile-drift")
    log = store.log("drift", key="k", time="t")
    log.append(pl.DataFrame({"k": [1], "t": [1], "v": [1.0]}))
    cases = {
        r"df.select\(log.schema.names\(\)\)": pl.DataFrame({"k": [2], "t": [2], "w": [1.0]}),
        r"cast\(Float64\)": pl.DataFrame({"k": [2], "t": [2], "v": ["1.0"]}),
        r"reorder with df.select": pl.DataFrame({"v": [1.0], "k": [2], "t": [2]}),
    }
    for hint, frame in cases.items():
        with pytest.raises(sk.SchemaError, match=hint):
            log.append(frame)
    assert log.count() == 1

    folder = tmp_path / "drops"
    folder.mkdir()
    pl.DataFrame({"k": [1, 2], "t": [1, 2], "v": [1.0, 2.0]}).write_parquet(folder / "a.parquet")
    pl.DataFrame({"k": [3], "t": [3], "v": ["x"]}).write_parquet(folder / "b.parquet")
    files = sk.FileLog(str(folder), "*.parquet", key="k", time="t")
    pipe = (
        sk.Pipeline("drift", store)
        .read(files)
        .with_columns(event=pl.lit("open"))
        .transitions(order_machine(), event="event", on_undefined="ignore")
    )
    with pytest.raises(sk.SchemaError, match=r"b\.parquet.*'v'"):
        pipe.run(progress=False)
    assert pipe.checkpoints().height == 0


# ---------------------------------------------------------------------- nulls
def test_null_events_are_quarantined_null_keys_and_times_are_clear_errors(
    tmp_path: Path,
) -> None:
    door = sk.Machine(
        "door",
        states=["closed", "opened"],
        initial="closed",
        final=["closed"],
        transitions=[("closed", "open", "opened"), ("opened", "close", "closed")],
    )
    frame = pl.DataFrame({"k": ["a", "a", "b"], "t": [1, 2, 3], "e": ["open", None, "open"]})

    def pipe(name: str, **columns: Any) -> sk.Pipeline:
        store = sk.Store(f"memory://hostile-nulls-{name}")
        store.log("ev", key="k", time="t").append(frame)
        p = sk.Pipeline("p", store).read(store.log("ev"))
        if columns:
            p = p.with_columns(**columns)
        return p.transitions(door, event="e").write(store.log("h", key="key", time="time"))

    nulls = pipe("event")
    report = nulls.run(progress=False)
    assert (report.rows_in, report.rows_out, report.quarantined) == (3, 2, 1)
    q = nulls.quarantine()
    assert q.select("offset", "event", "reason").rows() == [(1, None, "undefined")]
    assert json.loads(q["data"][0]) == {"k": "a", "t": 2, "e": None}

    blank = pl.when(pl.col("t") == 3).then(None)
    for column in ("k", "t"):
        p = pipe(column, **{column: blank.otherwise(pl.col(column))})
        with pytest.raises(sk.SchemaError, match=rf"'{column}' is null .*offsets \[2\]"):
            p.run(progress=False)
        assert p.checkpoints().height == 0 and p.sink is not None and p.sink.count() == 0

    store = sk.Store("memory://hostile-nulls-append")
    with pytest.raises(sk.SchemaError, match="null"):
        store.log("ev", key="k", time="t").append(frame.with_columns(k=pl.lit(None, pl.String)))
    folder = tmp_path / "drops"
    folder.mkdir()
    frame.with_columns(t=blank.otherwise(pl.col("t"))).write_parquet(folder / "a.parquet")
    with pytest.raises(sk.SchemaError, match=r"a\.parquet.*null"):
        sk.FileLog(str(folder), "*.parquet", key="k", time="t").scan().collect()


# ---------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../x",
        "a/../../b",
        "/abs",
        "C:\\x",
        "a\\..\\b",
        ".hidden",
        "_pipelines",
        "a\x00b",
        "a\nb",
        "",
        " x",
        "x" * 129,
    ],
)
def test_names_cannot_leave_the_store(tmp_path: Path, name: str) -> None:
    root = tmp_path / "lake"
    store = sk.Store(str(root))
    with pytest.raises(sk.ConfigurationError):
        store.log(name, key="k", time="t")
    with pytest.raises(sk.ConfigurationError):
        sk.Pipeline(name, store)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created anywhere


def test_internal_paths_and_file_patterns_stay_below_their_folder(tmp_path: Path) -> None:
    store = sk.Store(str(tmp_path / "lake"))
    for rel in ("_pipelines/../../x", "..", "/"):
        with pytest.raises(sk.ConfigurationError):
            store.log_at(rel, key="k", time="t")
    folder = tmp_path / "drops"
    folder.mkdir()
    pl.DataFrame({"k": [1], "t": [1]}).write_parquet(tmp_path / "outside.parquet")
    for pattern in ("../*.parquet", "*/../*.parquet", str(tmp_path / "*.parquet")):
        assert sk.FileLog(str(folder), pattern, key="k", time="t").end().offset == 0
