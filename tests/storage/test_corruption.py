"""Damaged files are detected and named; snapshots bound the work of opening a log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest

from streamkit.errors import CorruptFileError
from streamkit.storage import Store
from streamkit.storage import _manifest as mf
from streamkit.storage._fs import FileSystem


def _damage(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :]


def _rewrite_commit(fs: FileSystem, rel: str, change: Any) -> None:
    """Change the actions of commit ``rel`` in place, checksum recomputed (a tamperer)."""
    actions = mf.decode_checked(fs.get(rel), rel)
    change(actions)
    fs.put(rel, mf.encode_checked(actions))


def _info(actions: list[dict[str, Any]]) -> dict[str, Any]:
    return next(a["commitInfo"] for a in actions if "commitInfo" in a)


def _fill(store: Store, name: str = "c") -> None:
    log = store.log(name, key="k", time="t")
    for i in range(3):
        log.append(pl.DataFrame({"k": ["a", "b"], "t": [i, i], "v": [i * 1.5, 2.0]}))


@pytest.mark.parametrize("how", ["truncated", "bitflip"])
def test_corrupt_segment_named(store: Store, how: str) -> None:
    _fill(store)
    log = store.log("c")
    seg = log.segments().row(1, named=True)
    fs = store.filesystem.child("c")
    fs.put(seg["path"], _damage(fs.get(seg["path"]), how))
    with pytest.raises(CorruptFileError, match=seg["path"].replace("=", ".")) as info:
        log.scan().collect()
    assert "expected" in str(info.value) and "found" in str(info.value)
    # Ranges that avoid the damaged segment still read.
    assert log.scan(end=seg["offset"]).collect().height == seg["offset"]
    assert log.scan(start=seg["offset"] + seg["rows"]).collect().height == 2


def test_missing_segment_named(store: Store) -> None:
    _fill(store)
    log = store.log("c")
    seg = log.segments().row(0, named=True)
    store.filesystem.child("c").rm([seg["path"]])
    with pytest.raises(CorruptFileError, match=r"missing file .*" + seg["path"].split("/")[-1]):
        log.scan().collect()


@pytest.mark.parametrize("how", ["truncated", "bitflip"])
def test_corrupt_version_file_named(store: Store, how: str) -> None:
    _fill(store)
    fs = store.filesystem.child("c")
    rel = mf.version_path(2)
    fs.put(rel, _damage(fs.get(rel), how))
    with pytest.raises(CorruptFileError, match=r"00000000000000000002.json"):
        store.log("c")


def test_version_file_missing_fields(store: Store) -> None:
    _fill(store)
    fs = store.filesystem.child("c")
    rel = mf.version_path(3)
    good = fs.get(rel)
    _rewrite_commit(fs, rel, lambda actions: _info(actions)["streamkit"].pop("next_offset"))
    with pytest.raises(
        CorruptFileError, match=r"00000000000000000003.json: no streamkit commitInfo"
    ):
        store.log("c")
    fs.put(rel, good)
    _rewrite_commit(fs, rel, lambda actions: _info(actions)["streamkit"].update(version=4))
    with pytest.raises(CorruptFileError, match=r"expected version 3, found 4"):
        store.log("c")


# ---------------------------------------------------------------------- snapshots
class CountingFS(FileSystem):
    """Counts files read (a get_many of n files counts n, missing files included)."""

    reads = 0
    listings = 0

    def get(self, path: str) -> bytes:
        CountingFS.reads += 1
        return super().get(path)

    def get_many(self, paths: Any, *, missing_ok: bool = False) -> dict[str, bytes]:
        paths = list(paths)
        CountingFS.reads += len(paths)
        return {p: d for p in paths for d in [self._get_quiet(p, missing_ok)] if d is not None}

    def _get_quiet(self, path: str, missing_ok: bool) -> bytes | None:
        try:
            return super().get(path)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise

    def ls(self, path: str = "") -> list[str]:
        CountingFS.listings += 1
        return super().ls(path)

    def child(self, relpath: str) -> FileSystem:
        return CountingFS(
            "", self._options, _fs=self._fs, _root=self.full_path(relpath), _protocol=self._protocol
        )


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[CountingFS]]:
    import streamkit.storage.store as store_mod

    monkeypatch.setattr(store_mod, "FileSystem", CountingFS)
    CountingFS.reads = CountingFS.listings = 0
    yield CountingFS


def _reads_to_open(
    url: str, options: dict[str, Any], counting: type[CountingFS]
) -> tuple[int, int]:
    counting.reads = counting.listings = 0
    log = Store(url, storage_options=options).log("big")
    assert log.count() == 300
    return counting.reads, counting.listings


@pytest.mark.slow
def test_snapshot_bounds_files_read_on_open(
    store_url: tuple[str, dict[str, Any]], counting: type[CountingFS], backend: str
) -> None:
    if backend == "s3":
        pytest.skip("300 appends over S3 are covered by the local and memory runs")
    url, options = store_url
    log = Store(url, storage_options=options).log("big", key="k", time="t")
    for i in range(300):
        log.append(pl.DataFrame({"k": [i % 3], "t": [i]}))
    fs = Store(url, storage_options=options).filesystem.child("big")
    names = fs.ls(mf.SK_DIR)
    assert mf.snapshot_path(288).split("/")[-1] in names
    assert names.count("_last_snapshot.json") == 1
    assert mf.checkpoint_path(288).split("/")[-1] in fs.ls(mf.LOG_DIR)

    reads, listings = _reads_to_open(url, options, counting)
    assert reads <= 35, reads
    assert listings == 0

    # Refreshing a cached log with nothing new reads a single (missing) file.
    log2 = Store(url, storage_options=options).log("big")
    counting.reads = 0
    assert log2.end().offset == 300
    assert counting.reads == 1

    # A corrupt hint falls back to listing; still few reads, same state.
    fs.put(mf.HINT, b"{not json")
    reads, listings = _reads_to_open(url, options, counting)
    assert reads <= 40 and listings >= 1

    # A missing hint and a corrupt latest snapshot fall back to the previous snapshot.
    fs.rm([mf.HINT])
    fs.put(mf.snapshot_path(288), b"garbage")
    reads, _ = _reads_to_open(url, options, counting)
    assert reads <= 80
    scanned = Store(url, storage_options=options).log("big").scan().collect()
    assert scanned["t"].to_list() == list(range(300))

    # Appending after the fallback keeps working and writes the next snapshot.
    again = Store(url, storage_options=options).log("big")
    for i in range(300, 320):
        again.append(pl.DataFrame({"k": [0], "t": [i]}))
    assert mf.snapshot_path(320).split("/")[-1] in fs.ls(mf.SK_DIR)
    assert Store(url, storage_options=options).log("big").count() == 320


# ---------------------------------------------------------------------- snapshots, hint
def _fill_to_snapshot(store: Store, name: str = "snap") -> Any:
    log = store.log(name, key="k", time="t")
    for i in range(mf.SNAPSHOT_EVERY):  # version 32 writes the first snapshot and the hint
        log.append(pl.DataFrame({"k": [i % 3], "t": [i]}))
    fs = store.filesystem.child(name)
    assert mf.snapshot_path(32).split("/")[-1] in fs.ls(mf.SK_DIR)
    return fs


def test_damaged_snapshot_hint_and_covered_version(store: Store, backend: str) -> None:
    """Snapshots and the hint are redundant: damaged, they cost time, never data,
    and a check of every manifest file names them with that remedy. A damaged
    version file that a snapshot covers is not needed to open the log, but the
    same check names it."""

    fs = _fill_to_snapshot(store)
    rel = mf.version_path(5)
    good = fs.get(rel)
    fs.put(rel, _damage(good, "bitflip"))
    log = store.log("snap")  # opened from the snapshot: version 5 is not needed
    assert log.count() == 32
    with pytest.raises(CorruptFileError, match=rel.split("/")[-1]) as info:
        log.check_manifest()
    assert "redundant" not in str(info.value)  # the commit record: restore it
    fs.put(rel, good)

    fs.put(mf.snapshot_path(32), _damage(fs.get(mf.snapshot_path(32)), "truncated"))
    fs.put(mf.HINT, _damage(fs.get(mf.HINT), "bitflip"))
    log = store.log("snap")  # opened from the version files
    assert log.scan().collect()["t"].to_list() == list(range(32))
    for rel in (mf.snapshot_path(32), mf.HINT):
        with pytest.raises(CorruptFileError, match=rel.split("/")[-1]) as info:
            log.check_manifest()
        assert "redundant" in str(info.value)
        fs.rm([rel])  # the remedy the message gives
    # the same for the Delta checkpoint other engines open from, and its hint
    fs.put(mf.checkpoint_path(32), _damage(fs.get(mf.checkpoint_path(32)), "truncated"))
    fs.put(mf.CHECKPOINT_HINT, b"{")
    assert store.log("snap").count() == 32  # streamkit does not need them
    for rel in (mf.checkpoint_path(32), mf.CHECKPOINT_HINT):
        with pytest.raises(CorruptFileError, match=rel.split("/")[-1]) as info:
            log.check_manifest()
        assert "redundant" in str(info.value)
        fs.rm([rel])
    assert log.check_manifest() == 33  # versions 0-32, nothing else left
    if backend == "s3":
        return  # 32 more appends over S3 add nothing the other backends do not show
    for i in range(32, 64):  # version 64 writes the next snapshot and a good hint
        log.append(pl.DataFrame({"k": [0], "t": [i]}))
    assert mf.decode(fs.get(mf.HINT), mf.HINT, ("version",))["version"] == 64
    assert store.log("snap").count() == 64


# ---------------------------------------------------------------------- tampering
@pytest.mark.parametrize(
    "path", ["../outside.parquet", "data/../../outside.parquet", "/tmp/outside.parquet", ""]
)
def test_segment_paths_in_a_version_file_cannot_leave_the_log(store: Store, path: str) -> None:
    """A version file naming a segment outside the log's folder is refused, even
    with a valid checksum and a real file at that place."""
    _fill(store)
    store.filesystem.put("outside.parquet", b"")  # a file the tampered path could reach
    fs = store.filesystem.child("c")
    rel = mf.version_path(3)

    def tamper(actions: list[dict[str, Any]]) -> None:
        next(a["add"] for a in actions if "add" in a)["path"] = path

    _rewrite_commit(fs, rel, tamper)
    with pytest.raises(CorruptFileError, match=r"00000000000000000003.json: a segment path"):
        store.log("c").scan().collect()
    with pytest.raises(CorruptFileError, match=r"00000000000000000003.json: a segment path"):
        store.log("c").vacuum(retain=dt.timedelta(0))
    assert store.filesystem.exists("outside.parquet")  # neither read nor deleted


# ---------------------------------------------------------------------- recovery
@pytest.mark.parametrize("how", ["truncated", "bitflip"])
def test_a_damaged_old_segment_is_dropped_with_truncate_and_vacuum(store: Store, how: str) -> None:
    """The documented recovery for a damaged segment that need not be kept:
    ``truncate`` past it (a new version without it), then ``vacuum`` the file."""
    from streamkit.storage import Position

    _fill(store)
    log = store.log("c")
    first = log.segments().row(0, named=True)
    fs = store.filesystem.child("c")
    fs.put(first["path"], _damage(fs.get(first["path"]), how))
    with pytest.raises(CorruptFileError, match=first["path"].split("/")[-1]):
        log.scan().collect()
    assert log.truncate(before=Position(first["offset"] + first["rows"])) == 1
    assert log.scan().collect()["t"].to_list() == [1, 1, 2, 2]
    assert first["path"] in log.vacuum(retain=dt.timedelta(0))
    assert not fs.exists(first["path"])
    assert store.log("c").scan(with_offset="o").collect()["o"].to_list() == [2, 3, 4, 5]
