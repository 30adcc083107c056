"""Disk full during a pipeline run: the run stops with a clear error, nothing is
half-committed, and the run after space is freed equals an uninterrupted one.

Like tests/pipeline/test_faults.py, but the store refuses writes the way a full
disk does (``ENOSPC``), and only until space is freed: on the size-limited memory
store (tests/storage/_fullfs.py) every write of a run is refused in turn; on a
real tmpfs the run starts with 0, 1, 2, ... free pages until it fits.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine
from streamkit.errors import StorageError
from tests.pipeline.oracle import history_by_key, state_dict
from tests.storage import _fullfs as ff

pytestmark = pytest.mark.timeout(300)

NO_SPACE = re.compile(r"no space left", re.IGNORECASE)
FRAME = generate_orders(
    40, span="2h", seed=11, anomalies={"unknown_event": 0.3, "late": 0.1, "skipped_step": 0.2}
)


def build(store: sk.Store) -> sk.Pipeline:
    return (
        sk.Pipeline("full", store, batch_rows=80)
        .read(store.log("orders", key="order_id", time="ts"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


def seed(url: str) -> sk.Store:
    store = sk.Store(url)
    store.log("orders", key="order_id", time="ts").append(FRAME)
    return store


def outcome(store: sk.Store) -> tuple[Any, ...]:
    pipe = build(store)
    quarantine = pipe.quarantine().sort("offset").select("offset", "reason").rows()
    history = history_by_key(store.log("history").scan().collect())
    return history, state_dict(pipe.state()), quarantine


def role(path: str) -> str:
    """A written file's role in a run: its path without timestamps and uuids."""
    return re.sub(r"\d{13}-[0-9a-f]{32}", "*", path.split("/lake/", 1)[-1])


def assert_nothing_half_committed(store: sk.Store, ref: sk.Store) -> None:
    """Every log reads whole; outputs are a prefix of the uninterrupted run's;
    the latest checkpoint verifies; no temporary files."""
    for name in ("history", "_pipelines/full/quarantine"):
        if not store.filesystem.exists(f"{name}/_delta_log/00000000000000000000.json"):
            continue  # refused at its creation
        got = store.log_at(name).scan().collect().rows()
        full = ref.log_at(name).scan().collect().rows()
        assert got == full[: len(got)], name
    if store.filesystem.ls("_pipelines/full/checkpoints"):
        report = sk.Pipeline.open(store, "full").verify()  # opening writes nothing
        assert report.ok, report
    assert not [f for f in store.filesystem.find("") if ".tmp-" in f]


@pytest.fixture(scope="module")
def reference() -> tuple[str, list[tuple[str, int, bool]]]:
    """An uninterrupted run on a volume with room: its URL and its writes in order."""
    url = ff.new_volume()
    store = seed(f"{url}/lake")
    first = len(ff.journal(url))
    build(store).run(progress=False)
    return url, ff.journal(url)[first:]


@pytest.mark.parametrize("passing", [False, True], ids=["stays-full", "freed-at-once"])
def test_a_run_refused_at_each_write_stops_clearly_and_resumes_after_freeing(
    reference: tuple[str, list[tuple[str, int, bool]]], passing: bool
) -> None:
    # stays-full: every later write is refused too, until space is freed.
    # freed-at-once: only write k is refused; a run that swallowed that refusal
    # would go on and commit a checkpoint referencing a file that is not there.
    ref_url, writes = reference
    ref = sk.Store(f"{ref_url}/lake")
    expected = outcome(ref)
    assert len(writes) > 10 and any("quarantine/data" in p for p, _, _ in writes)
    for k, (path, size, _) in enumerate(writes):
        url = ff.new_volume()
        store = seed(f"{url}/lake")
        room = sum(s for _, s, _ in writes[:k]) + size // 2  # write k does not fit
        ff.set_free(url, room, passing=passing)
        first = len(ff.journal(url))
        if path.endswith(".beat") and (
            passing or all(p.endswith(".beat") for p, _, _ in writes[k:])
        ):
            # a heartbeat is advisory: its refusal is logged, the run goes on
            assert build(store).run(progress=False).caught_up
            assert outcome(store) == expected, f"refused heartbeat {k}"
            continue
        with pytest.raises(StorageError) as info:
            build(store).run(progress=False)
        text = str(info.value)
        assert NO_SPACE.search(text) and store.url in text, text
        refused = [p for p, _, stored in ff.journal(url)[first:] if not stored]
        assert role(refused[0]) == role(path), f"write {k}: {refused[0]}"
        assert len(refused) == 1 or not passing
        assert_nothing_half_committed(store, ref)

        ff.set_capacity(url, None)  # space freed
        report = build(store).run(progress=False)
        assert report.caught_up
        assert outcome(store) == expected, f"refused write {k} ({role(path)})"
        assert build(store).verify(replay=k % 4 == 0).ok


def test_a_run_on_a_full_tmpfs_stops_clearly_and_resumes_after_freeing(
    reference: tuple[str, list[tuple[str, int, bool]]], tmp_path: Path
) -> None:
    ref = sk.Store(f"{reference[0]}/lake")
    expected = outcome(ref)
    failed = 0
    with ff.small_tmpfs(tmp_path / "disk", size="2m") as disk:
        page = os.statvfs(disk).f_frsize
        for pages in range(64):  # free pages left when the run starts
            lake = disk / f"lake-{pages}"
            store = seed(str(lake))
            filler = ff.fill(disk, leave=pages * page)
            try:
                build(store).run(progress=False)
            except StorageError as exc:
                failed += 1
                assert str(lake) in str(exc), exc
                assert_nothing_half_committed(store, ref)
            else:
                break  # the run fits
            finally:
                filler.unlink()
            assert build(store).run(progress=False).caught_up  # space freed
            assert outcome(store) == expected, f"{pages} pages free"
            shutil.rmtree(lake)
        else:
            raise AssertionError("the run never fitted in 64 free pages")
    assert failed == pages > 10  # every level short of the run's needs failed
