"""Disk full: an append the store refuses (ENOSPC) fails with a clear error,
commits nothing, leaves no debris, and succeeds once space is freed.

Two stores run out of space: a size-limited fsspec memory store (``fullmem``,
tests/storage/_fullfs.py: it takes streamkit's object-store path) where every
write of an append is refused in turn, and a real 2 MiB tmpfs (streamkit's local
path: temporary file, fsync, link) filled to every page count an append needs.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import streamkit as sk
from streamkit.errors import StorageError
from streamkit.storage._manifest import SNAPSHOT_EVERY
from tests.storage import _fullfs as ff

NO_SPACE = re.compile(r"no space left", re.IGNORECASE)


def frame(n: int, start: int = 0, keys: int = 7) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "k": [f"key-{i % keys}" for i in range(start, start + n)],
            "t": [(i * 7919) % 1000 for i in range(start, start + n)],
            "v": [float(i) for i in range(start, start + n)],
        }
    )


def contents(log: sk.Log) -> tuple[Any, ...]:
    """What a reader of ``log`` can observe, and its metadata files."""
    rows = log.scan(with_offset="o").collect().rows()
    meta = [f for f in log.filesystem.find("") if not f.startswith("data/")]
    return log.version, log.end(), rows, log.segments().rows(), meta


def kind(path: str) -> str:
    """Which file of the log format ``path`` is."""
    name = path.rsplit("/", 1)[-1]
    if "/data/" in path:
        return "segment"
    if name in ("_last_snapshot.json", "_last_checkpoint"):
        return "hint"
    if name.endswith(".checkpoint.parquet"):
        return "checkpoint"
    return "snapshot" if name.endswith(".snapshot.json") else "version"


def assert_clear(exc: BaseException, log: sk.Log) -> None:
    """A StorageError that says the store is full and names a file of ``log``."""
    assert isinstance(exc, StorageError)
    text = str(exc)
    assert NO_SPACE.search(text), text
    assert log.url in text, text


def debris(log: sk.Log) -> list[str]:
    """Files no committed version references (temporary files included)."""
    live = set(log.segments()["path"])
    return [
        f
        for f in log.filesystem.find("")
        if (f.startswith("data/") and f not in live) or ".tmp-" in f
    ]


def assert_clean_after_vacuum(log: sk.Log) -> None:
    """At most unreferenced segment files are left, and vacuum removes them."""
    assert all(f.startswith("data/") and ".tmp-" not in f for f in debris(log)), debris(log)
    log.vacuum(retain=dt.timedelta(0))
    assert debris(log) == []


def _volume_one_version_short_of_a_snapshot() -> str:
    url = ff.new_volume()
    log = sk.Store(f"{url}/lake").log("ev", key="k", time="t", partitions=2)
    for i in range(SNAPSHOT_EVERY - 1):
        log.append(frame(10, start=10 * i), writer="w", seq=i)
    return url


NEW, SEQ = frame(300, start=10_000), SNAPSHOT_EVERY - 1


@pytest.mark.parametrize("passing", [False, True], ids=["stays-full", "freed-at-once"])
def test_an_append_refused_at_each_write_commits_nothing_and_succeeds_after_freeing(
    passing: bool,
) -> None:
    # One version short of a snapshot: the append writes two segments, the
    # version, the snapshot and its hint, the Delta checkpoint and its hint, in
    # this order.
    base = _volume_one_version_short_of_a_snapshot()
    ref = ff.clone(base)
    first = len(ff.journal(ref))
    ref_log = sk.Store(f"{ref}/lake").log("ev")
    assert ref_log.append(NEW, writer="w", seq=SEQ).rows == 300
    writes = ff.journal(ref)[first:]
    assert [kind(p) for p, _, _ in writes] == [
        "segment",
        "segment",
        "version",
        "snapshot",
        "hint",
        "checkpoint",
        "hint",
    ]
    final = contents(ref_log)[2]

    for k, (path, size, _) in enumerate(writes):
        url = ff.clone(base)
        room = sum(s for _, s, _ in writes[:k]) + size // 2  # write k does not fit
        ff.set_free(url, room, passing=passing)  # passing: only write k is refused
        first = len(ff.journal(url))
        log = sk.Store(f"{url}/lake").log("ev")
        before = contents(log)
        if kind(path) in ("segment", "version"):
            with pytest.raises(StorageError) as info:
                log.append(NEW, writer="w", seq=SEQ)
            assert_clear(info.value, log)
            refused = [p for p, _, stored in ff.journal(url)[first:] if not stored]
            assert kind(refused[0]) == kind(path), f"write {k}: {refused}"
            assert contents(log) == before, f"write {k}"
            assert contents(sk.Store(f"{url}/lake").log("ev")) == before  # a new reader too
        else:  # snapshots, checkpoints and hints are best effort: the version is committed
            assert log.append(NEW, writer="w", seq=SEQ).rows == 300
            assert ff.refusals(url) > 0

        ff.set_capacity(url, None)  # space freed
        again = log.append(NEW, writer="w", seq=SEQ)
        assert again.duplicate == (kind(path) in ("snapshot", "checkpoint", "hint")), f"write {k}"
        fresh = sk.Store(f"{url}/lake").log("ev")
        assert contents(fresh)[2] == final, f"write {k}"
        assert fresh.transaction("w").seq == SEQ  # type: ignore[union-attr]
        fresh.append(frame(5, start=20_000))  # and the log goes on
        assert fresh.count() == len(final) + 5
        assert_clean_after_vacuum(fresh)


def test_a_commit_refused_for_lack_of_space_deletes_its_segment_files() -> None:
    url = ff.new_volume()
    log = sk.Store(f"{url}/lake").log("ev", key="k", time="t", partitions=2)
    log.append(frame(10))
    ref = ff.clone(url)
    sk.Store(f"{ref}/lake").log("ev").append(NEW)
    segments = [size for path, size, _ in ff.journal(ref) if kind(path) == "segment"]
    first = len(ff.journal(url))
    ff.set_free(url, sum(segments) + 100)  # the segments fit, the version does not
    with pytest.raises(StorageError):
        log.append(NEW)
    refused = [kind(p) for p, _, stored in ff.journal(url)[first:] if not stored]
    assert refused[:1] == ["version"]
    assert debris(log) == []


def test_an_append_to_a_full_tmpfs_commits_nothing_and_succeeds_after_freeing(
    tmp_path: Path,
) -> None:
    new = frame(4000, start=10_000)
    refused: set[str] = set()
    with ff.small_tmpfs(tmp_path / "disk", size="2m") as disk:
        page = os.statvfs(disk).f_frsize
        for pages in range(64):  # free pages left when the append starts
            lake = disk / f"lake-{pages}"
            log = sk.Store(str(lake)).log("ev", key="k", time="t", partitions=2)
            log.append(frame(50))
            before = contents(log)
            filler = ff.fill(disk, leave=pages * page)
            try:
                log.append(new)
            except StorageError as exc:
                assert log.url in str(exc), exc
                refused.add(kind(str(exc).split(": ", 1)[0]))
                assert contents(log) == before, f"{pages} pages free"
                assert contents(sk.Store(str(lake)).log("ev")) == before
            else:
                break  # the append fits
            finally:
                filler.unlink()
            assert log.append(new).rows == 4000  # space freed
            assert log.count() == 4050
            assert_clean_after_vacuum(log)
            shutil.rmtree(lake)
        else:
            raise AssertionError("the append never fitted in 64 free pages")
    assert pages > 2
    assert refused == {"segment", "version"}  # refused before and at the commit itself


def test_a_segment_write_on_a_full_tmpfs_says_no_space_left(tmp_path: Path) -> None:
    with ff.small_tmpfs(tmp_path / "disk", size="1m") as disk:
        log = sk.Store(str(disk / "lake")).log("ev", key="k", time="t", partitions=2)
        log.append(frame(50))
        filler = ff.fill(disk, leave=0)
        try:
            with pytest.raises(StorageError) as info:
                log.append(frame(4000, start=10_000))
        finally:
            filler.unlink()
        assert_clear(info.value, log)
