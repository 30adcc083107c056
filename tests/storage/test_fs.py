"""The file system primitive on every backend."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from streamkit.errors import CorruptFileError, LogNotFoundError, StorageError
from streamkit.storage._fs import FileSystem, crc32, verify


@pytest.fixture
def fs(store_url: tuple[str, dict[str, Any]]) -> FileSystem:
    url, options = store_url
    return FileSystem(url, options)


def test_put_new_is_create_if_absent(fs: FileSystem) -> None:
    assert fs.put_new("a/b/c.json", b"first")
    assert not fs.put_new("a/b/c.json", b"second")
    assert fs.get("a/b/c.json") == b"first"
    assert fs.exists("a/b/c.json")
    assert fs.ls("a/b") == ["c.json"]  # no temporary files left behind
    fs.put("a/b/c.json", b"over")
    assert fs.get("a/b/c.json") == b"over"
    assert fs.ls("a/b") == ["c.json"]


def test_put_new_race_has_one_winner(fs: FileSystem) -> None:
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        if fs.put_new("race/x", str(i).encode()):
            wins.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert fs.get("race/x") == str(wins[0]).encode()


def test_reads_listing_and_delete(fs: FileSystem) -> None:
    assert fs.ls("nothing") == []
    assert fs.find("nothing") == []
    for name in ["d/2", "d/1", "d/e/3"]:
        fs.put(name, name.encode())
    assert fs.ls("d") == ["1", "2", "e"]
    assert fs.find("d") == ["d/1", "d/2", "d/e/3"]
    assert fs.get_many(["d/1", "d/e/3"]) == {"d/1": b"d/1", "d/e/3": b"d/e/3"}
    assert fs.get_many(["d/1", "d/9"], missing_ok=True) == {"d/1": b"d/1"}
    with pytest.raises(LogNotFoundError, match=r"d/9"):
        fs.get_many(["d/1", "d/9"])
    with pytest.raises(LogNotFoundError, match=r"no such file"):
        fs.get("d/9")
    fs.rm(["d/1", "d/missing"])
    assert fs.ls("d") == ["2", "e"]
    assert not fs.exists("d/1")


def test_listing_sees_new_files_immediately(fs: FileSystem) -> None:
    fs.put("l/a", b"")
    assert fs.ls("l") == ["a"]
    other = fs.child("")  # shares the fsspec instance (and its listings cache)
    other.put_new("l/b", b"")
    assert fs.ls("l") == ["a", "b"]


def test_sizes_of_files_present_missing_and_rewritten(fs: FileSystem) -> None:
    fs.put("d/a", b"abc")
    fs.put("d/e/b", b"")
    assert fs.sizes(["d/a", "d/e/b", "d/missing", "nowhere/x", "d/a"]) == {"d/a": 3, "d/e/b": 0}
    assert fs.sizes([]) == {}
    before = fs.sizes(["d/a"])  # then rewritten, as by another process
    fs.put("d/a", b"abcdef")
    assert (before, fs.sizes(["d/a"])) == ({"d/a": 3}, {"d/a": 6})
    fs.rm(["d/a"])
    assert fs.sizes(["d/a", "d/e/b"]) == {"d/e/b": 0}


def test_child_roots(fs: FileSystem) -> None:
    child = fs.child("x/y")
    child.put("f", b"1")
    assert fs.get("x/y/f") == b"1"
    assert child.url.endswith("x/y")


def test_verify_and_crc() -> None:
    data = b"hello world"
    verify("f", data, len(data), crc32(data))
    with pytest.raises(CorruptFileError, match=r"corrupt file f: expected 11 bytes, found 10"):
        verify("f", data[:-1], len(data), crc32(data))
    flipped = bytes([data[0] ^ 1]) + data[1:]
    with pytest.raises(CorruptFileError, match=r"corrupt file f: expected crc32"):
        verify("f", flipped, len(data), crc32(data))


def test_local_put_new_leaves_no_torn_file(tmp_path: Any) -> None:
    fs = FileSystem(str(tmp_path))
    assert fs.put_new("v/1.json", b"x" * 1000)
    assert os.listdir(tmp_path / "v") == ["1.json"]
    assert FileSystem(f"file://{tmp_path}").get("v/1.json") == b"x" * 1000
    rel = FileSystem(os.path.relpath(tmp_path))
    assert rel.url == str(tmp_path)


def test_errors_name_path_not_credentials(s3_storage_options: dict[str, Any]) -> None:
    options = dict(s3_storage_options)
    bad = dict(options, secret="wrong-secret-value-123")
    fs = FileSystem("s3://no-such-bucket-streamkit/p", bad)
    with pytest.raises((StorageError, LogNotFoundError)) as info:
        fs.get("f")
    text = str(info.value)
    assert "no-such-bucket-streamkit/p/f" in text
    assert "wrong-secret-value-123" not in text
    assert options["key"] not in text
    assert "wrong-secret-value-123" not in repr(fs) + fs.url


def test_memory_and_local_errors_translated(tmp_path: Any) -> None:
    fs = FileSystem(str(tmp_path))
    (tmp_path / "dir").mkdir()
    with pytest.raises(StorageError, match=r"cannot read .*dir"):
        fs.get("dir")


@pytest.mark.s3
def test_s3_listing_cache_never_hides_new_files(
    seaweedfs: dict[str, str], s3_storage_options: dict[str, Any]
) -> None:
    url = f"s3://{seaweedfs['bucket']}/cache-{os.getpid()}-{id(s3_storage_options)}"
    reader = FileSystem(url, s3_storage_options)
    writer = FileSystem(url, {**s3_storage_options, "skip_instance_cache": True})
    assert writer.fsspec is not reader.fsspec  # like another process
    writer.put_new("d/a", b"1")
    assert reader.ls("d") == ["a"]
    assert reader.get_many(["d/a", "d/b"], missing_ok=True) == {"d/a": b"1"}
    writer.put_new("d/b", b"2")
    assert reader.get("d/b") == b"2"
    assert reader.exists("d/b")
    assert reader.ls("d") == ["a", "b"]
    assert reader.get_many(["d/a", "d/b"]) == {"d/a": b"1", "d/b": b"2"}
    assert not reader.put_new("d/b", b"3")


def test_store_urls_local_forms(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl

    from streamkit.storage import Store

    monkeypatch.chdir(tmp_path)
    rel = Store("./lake")
    assert rel.url == str(tmp_path / "lake")
    rel.log("e", key="k", time="t").append(pl.DataFrame({"k": [1], "t": [1]}))
    assert Store(f"file://{tmp_path}/lake").log("e").count() == 1
    assert Store(str(tmp_path / "lake")).logs() == ["e"]
    assert (tmp_path / "lake" / "e" / "_delta_log" / "00000000000000000001.json").is_file()
