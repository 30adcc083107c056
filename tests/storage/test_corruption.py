"""Damaged files are detected and named; snapshots bound the work of opening a log."""

from __future__ import annotations

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
    fs.put(mf.version_path(3), mf.encode({"format": 1, "version": 3}))
    with pytest.raises(CorruptFileError, match=r"00000000000000000003.json: expected fields"):
        store.log("c")
    fs.put(
        mf.version_path(3),
        mf.encode(
            {"format": 1, "version": 4, "op": "append", "add": [], "remove": [], "next_offset": 6}
        ),
    )
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
    names = fs.ls(mf.LOG_DIR)
    assert mf.snapshot_path(288).split("/")[-1] in names
    assert fs.ls(mf.LOG_DIR).count("_last_snapshot.json") == 1

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
    assert mf.snapshot_path(320).split("/")[-1] in fs.ls(mf.LOG_DIR)
    assert Store(url, storage_options=options).log("big").count() == 320
