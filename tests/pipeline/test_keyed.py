"""Key groups and incremental checkpoints: chains, compaction, re-sharding, old formats."""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.pipeline import _keyed
from streamkit.pipeline._checkpoints import CheckpointStore, FileRef, _canonical
from streamkit.pipeline._keyed import GroupedState, group_of
from streamkit.storage import crc32, partition_of
from tests.pipeline.oracle import history_by_key, lamp_machine, state_dict

_machine = lamp_machine


def _events(n: int, keys: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "lamp": pl.Series(rng.integers(0, keys, n)).cast(pl.String).str.replace(r"^", "l"),
            "t": np.cumsum(rng.integers(0, 4, n)).astype(np.int64),
            "ev": rng.choice(["on", "off", "hit"], n),
        }
    )


def _pipe(store: sk.Store, **kw: Any) -> sk.Pipeline:
    from datetime import timedelta

    return (
        sk.Pipeline("lamps", store, **kw)
        .read(store.log("lamps", key="lamp", time="t"))
        .transitions(_machine(), event="ev", tick=timedelta(seconds=1))
        .write(store.log("history", key="key", time="time"))
    )


def _seed(url: str, frame: pl.DataFrame) -> sk.Store:
    store = sk.Store(url)
    store.log("lamps", key="lamp", time="t").append(frame)
    return store


def _outcome(store: sk.Store) -> tuple[Any, ...]:
    pipe = _pipe(store)
    history = store.log("history").scan().collect()
    q = pipe.quarantine().sort("offset").select("offset", "reason").rows()
    return sorted(history.rows()), history_by_key(history), state_dict(pipe.state()), q


@pytest.fixture
def tight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compact often: chains of at most 3 links, deltas of 10 % of a base."""
    monkeypatch.setattr(_keyed, "MAX_CHAIN", 3)
    monkeypatch.setattr(_keyed, "DELTA_RATIO", 0.1)
    monkeypatch.setattr(_keyed, "DELTA_BUDGET", 0.05)


def test_key_groups_are_the_log_partitions_refined() -> None:
    keys = pl.Series([f"k{i}" for i in range(1000)])
    groups = group_of(keys, 64)
    assert np.array_equal(groups % 8, partition_of(keys, 8))  # partition p: groups g = p mod 8
    assert np.array_equal(groups, partition_of(keys, 64))
    ints = pl.Series(list(range(1000)))
    assert np.array_equal(group_of(ints, 16) % 4, partition_of(ints, 4))


@pytest.mark.parametrize("bad", [0, 3, 100, 1 << 17, -4, 2.0, True, "8"])
def test_key_groups_must_be_a_power_of_two(bad: Any) -> None:
    with pytest.raises(sk.ConfigurationError, match="power of two"):
        sk.Pipeline("p", sk.Store("memory://kg-bad"), key_groups=bad)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 10_000),
    keys=st.integers(1, 60),
    groups=st.sampled_from([1, 2, 8, 64]),
    cuts=st.lists(st.integers(1, 120), min_size=1, max_size=6),
    batch_rows=st.integers(3, 50),
)
def test_incremental_checkpoints_equal_one_uninterrupted_batch(
    tight: None, seed: int, keys: int, groups: int, cuts: list[int], batch_rows: int
) -> None:
    # Runs stopped after a few batches each (a crash between runs in effect:
    # every run restores from the chains), with compaction at every few links,
    # give exactly the output, state and quarantine of one batch over everything.
    frame = _events(200, keys, seed)
    ref = _seed(f"memory://kg-ref-{uuid.uuid4().hex}", frame)
    _pipe(ref).run(progress=False)
    store = _seed(f"memory://kg-{uuid.uuid4().hex}", frame)
    for n in cuts:
        _pipe(store, key_groups=groups, batch_rows=batch_rows).run(progress=False, max_batches=n)
    _pipe(store, key_groups=groups, batch_rows=batch_rows).run(progress=False)
    assert _outcome(store) == _outcome(ref)
    pipe = _pipe(store)
    report = pipe.verify(replay=True)
    assert report.ok, report
    # every retained checkpoint restores to the state a replay computes
    ckpts = pipe._ckpts()
    for cid in ckpts.ids()[-3:]:
        assert pipe.verify(checkpoint=cid, replay=True).ok
    on_disk = {f"state/{n}" for n in ckpts.fs.ls("state")}
    live = set().union(*(ckpts._state_files(ckpts.read(i)) for i in ckpts.ids()))
    assert on_disk == live


def _prefilled(url: str, keys: int, groups: int = 64) -> tuple[sk.Store, sk.Pipeline]:
    frame = pl.DataFrame(
        {"lamp": [f"l{i}" for i in range(keys)], "t": list(range(keys)), "ev": ["on"] * keys}
    )
    store = _seed(url, frame)
    pipe = _pipe(store, key_groups=groups)
    pipe.run(progress=False)
    return store, pipe


def test_timeouts_of_keys_without_events_fire_whatever_the_batches() -> None:
    # 3,000 keys switched on one by one, then sparse events on a few: most keys
    # time out in batches that hold none of their events. Small batches over a
    # large key space flush only the batch's keys and the listed timed keys;
    # the list must survive restores (every run here starts from the chains)
    # and a batch as large as the key space (every key scanned, list dropped).
    keys = 3000
    rng = np.random.default_rng(7)
    tail = 300
    frame = pl.concat(
        [
            pl.DataFrame(
                {
                    "lamp": [f"l{i}" for i in range(keys)],
                    "t": list(range(keys)),
                    "ev": ["on"] * keys,
                }
            ),
            pl.DataFrame(
                {
                    "lamp": [f"l{i}" for i in rng.integers(0, keys, tail)],
                    "t": (keys + np.cumsum(rng.integers(1, 6, tail))).tolist(),
                    "ev": rng.choice(["on", "off", "hit"], tail).tolist(),
                }
            ),
        ]
    )
    ref = _seed(f"memory://kg-tref-{uuid.uuid4().hex}", frame)
    _pipe(ref).run(progress=False)
    small = _seed(f"memory://kg-tsmall-{uuid.uuid4().hex}", frame)
    for _ in range(6):
        _pipe(small, batch_rows=40).run(progress=False, max_batches=20)
    _pipe(small, batch_rows=40).run(progress=False)
    mixed = _seed(f"memory://kg-tmixed-{uuid.uuid4().hex}", frame)
    _pipe(mixed, batch_rows=keys).run(progress=False, max_batches=1)
    _pipe(mixed, batch_rows=7).run(progress=False)
    expected = _outcome(ref)
    fired = ref.log("history").scan().filter(pl.col("event") == "timeout").collect()
    assert fired.height > keys // 2  # most keys time out
    assert _outcome(small) == expected
    assert _outcome(mixed) == expected


def _links(entry: dict[str, Any]) -> dict[int, list[list[int]]]:
    return {int(g): links for g, links in entry["state"]["groups"].items()}


def test_a_checkpoint_writes_only_the_keys_a_batch_changed() -> None:
    store, pipe = _prefilled("memory://kg-delta", 5000)
    ckpts = pipe._ckpts()
    first = ckpts.latest()
    assert first is not None
    before = _links(first.operators["0-transitions"])
    assert sum(links[0][2] for links in before.values()) == 5000  # every key in a base
    touched = ["l7", "l4242", "l999"]
    # at the last time seen: the watermark stays, no timeout fires elsewhere
    store.log("lamps").append(pl.DataFrame({"lamp": touched, "t": [4999] * 3, "ev": ["on"] * 3}))
    pipe.run(progress=False)
    cp = ckpts.latest()
    assert cp is not None
    after = _links(cp.operators["0-transitions"])
    new_file = {f["path"] for f in cp.operators["0-transitions"]["state"]["files"]} - {
        f["path"] for f in first.operators["0-transitions"]["state"]["files"]
    }
    assert len(new_file) == 1
    (path,) = new_file
    written = ckpts.read_state_batches(
        next(
            FileRef.from_dict(f)
            for f in cp.operators["0-transitions"]["state"]["files"]
            if f["path"] == path
        )
    )
    assert sum(b.num_rows for b in written) == 3  # three deltas of one key each
    groups = set(group_of(pl.Series(touched), 64).tolist())
    assert {g for g, links in after.items() if len(links) == 2} == groups
    assert pipe.state().filter(pl.col("key").is_in(touched))["state"].to_list() == ["on"] * 3


def test_chains_are_compacted_and_stay_bounded(tight: None) -> None:
    store, pipe = _prefilled("memory://kg-compact", 400, groups=4)
    log = store.log("lamps")
    t = 400
    for i in range(12):
        log.append(pl.DataFrame({"lamp": [f"l{i}"], "t": [t + i], "ev": ["off"]}))
        pipe.run(progress=False)
    cp = pipe._ckpts().latest()
    assert cp is not None
    chains = _links(cp.operators["0-transitions"])
    assert max(len(links) for links in chains.values()) <= 3
    assert pipe.verify(replay=True).ok


def test_bands_spread_compaction_and_bound_the_state_on_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 20,000 keys in 8 bands of 8 groups, 120 batches touching 1.5 % of the keys
    # each, 20 checkpoints retained. A file holds one band, compactions go band
    # by band (never most groups at once, as chains that all grow together would
    # have them), and the rows on disk stay a small multiple of the state; the
    # former policy (one file per checkpoint) swung from 1.4x to 2.7x here.
    monkeypatch.setattr(_keyed, "BAND_KEYS", 2_500)
    monkeypatch.setattr(_keyed, "POOL_ROWS", 0)
    n, groups, kept = 20_000, 64, 20
    state = GroupedState(groups)
    state.add_keys(pl.Series([f"k{i}" for i in range(n)]))
    state.touch(np.arange(n))
    rng = np.random.default_rng(1)
    rows: dict[str, int] = {}
    listed: list[set[str]] = []
    on_disk, rebased = [], []
    for t in range(120):
        if t:
            state.touch(rng.integers(0, n, 300))
        changes = state.take()
        new = {path for path, _, _ in changes.files}
        for path, start, stop in changes.files:
            rows[path] = stop - start
            bands = {g % 8 for g, c in enumerate(changes.chains) for p, _, _ in c if p == path}
            assert t == 0 or len(bands) == 1, (t, path, bands)  # the first: every group
        assert max(len(c) for c in changes.chains) <= _keyed.MAX_CHAIN
        listed.append({path for chain in changes.chains for path, _, _ in chain})
        on_disk.append(sum(rows[p] for p in set().union(*listed[-kept:])) / n)
        rebased.append(sum(len(c) == 1 and c[0][0] in new for c in changes.chains))
    assert rebased[0] == groups and max(rebased[1:]) <= groups // 4, rebased
    assert max(on_disk[60:]) < 2.4, on_disk[60:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chains_merged_compacted_and_restored_give_every_keys_newest_row(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    # A plain model: every key holds the number of the step that last changed
    # it. Keys arrive over time, steps change a random handful; chains are cut
    # into bands of 50 keys with a file each, merged at 4 links and compacted
    # past 0.5 delta rows per key. Every few steps the state is restored from
    # the files alone, and the run goes on from the restored object (whose
    # record of the keys changed since their base must feed later merges).
    for name, value in {"BAND_KEYS": 50, "POOL_ROWS": 0, "MAX_CHAIN": 4}.items():
        monkeypatch.setattr(_keyed, name, value)
    monkeypatch.setattr(_keyed, "DELTA_BUDGET", 0.5)
    store = sk.Store(f"memory://kg-model-{uuid.uuid4().hex}")
    ckpts = _pipe(store)._ckpts()
    rng = np.random.default_rng(seed)
    groups, keys, value = 16, [f"k{i}" for i in range(600)], np.zeros(600, dtype=np.int64)
    state, n = GroupedState(groups), 0
    merged = compacted = restores = 0
    for step in range(1, 80):
        if n < len(keys) and step % 6 == 1:
            state.add_keys(pl.Series(keys[n : n + 100]))
            state.touch(np.arange(n, n + 100))
            value[n : n + 100] = step
            n += 100
        ids = rng.integers(0, n, int(rng.integers(1, 60)))
        value[ids] = step
        state.touch(ids)
        before = [list(c) for c in state.chains]
        changes = state.take()
        rows = pl.DataFrame(
            {"id": changes.ids, "key": [keys[i] for i in changes.ids], "v": value[changes.ids]}
        )
        written = ckpts.write_states(rows, changes.files)
        entry = state.entry(changes, written)
        for old, new in zip(before, changes.chains, strict=True):
            if len(old) > 2 and len(new) == 2 and new[0] == old[0]:
                merged += 1
            if len(old) > 1 and len(new) == 1:
                compacted += 1
        assert max(len(c) for c in changes.chains) <= _keyed.MAX_CHAIN
        if step % 7 == 0:
            state = GroupedState(groups)
            frame = state.restore(entry, ckpts)
            assert dict(zip(frame["key"], frame["v"], strict=True)) == {
                keys[i]: value[i] for i in range(n)
            }
            assert frame["id"].to_list() == list(range(n))  # ids as they were
            restores += 1
    assert merged and compacted and restores >= 10, (merged, compacted, restores)


def test_restoring_some_groups_reads_only_their_files(monkeypatch: pytest.MonkeyPatch) -> None:
    store, pipe = _prefilled("memory://kg-lazy", 2000, groups=8)
    log = store.log("lamps")
    log.append(pl.DataFrame({"lamp": ["l1"], "t": [1999], "ev": ["on"]}))
    pipe.run(progress=False)
    ckpts = pipe._ckpts()
    cp = ckpts.latest()
    assert cp is not None
    entry = cp.operators["0-transitions"]["state"]
    _, files, chains = GroupedState.parse(entry, "test")
    read: list[str] = []
    real = CheckpointStore.read_state_batches

    def spy(self: CheckpointStore, ref: FileRef) -> Any:
        read.append(ref.path)
        return real(self, ref)

    monkeypatch.setattr(CheckpointStore, "read_state_batches", spy)
    (g1,) = group_of(pl.Series(["l1"]), 8).tolist()
    other = next(g for g in chains if g != g1 and len(chains[g]) == 1)
    frame = GroupedState(8).restore(entry, ckpts, only={other})
    assert read == [chains[other][0][0]]  # one base file, not the delta of l1's group
    assert set(group_of(frame["key"], 8).tolist()) == {other}
    assert len(files) >= 2


def test_opening_with_other_key_groups_says_how_to_reshard() -> None:
    store, _ = _prefilled("memory://kg-other", 50, groups=16)
    with pytest.raises(sk.ConfigurationError, match=r"16 key groups.*reshard\(key_groups=32\)"):
        _pipe(store, key_groups=32).run(progress=False)
    assert _pipe(store).run(progress=False).batches == 0  # without key_groups: its own


def test_reshard_rewrites_the_state_once_and_results_do_not_change(tight: None) -> None:
    frame = _events(300, 40, seed=5)
    ref = _seed("memory://kg-reshard-ref", frame)
    _pipe(ref, batch_rows=30).run(progress=False)
    store = _seed("memory://kg-reshard", frame)
    _pipe(store, key_groups=4, batch_rows=30).run(progress=False, max_batches=4)
    before = _pipe(store).state()
    report = _pipe(store).reshard(32, progress=False)
    cp = _pipe(store)._ckpts().latest()
    assert cp is not None and cp.kind == "reshard" and cp.key_groups == 32
    assert report.checkpoint == cp.id and report.batches == 0
    assert _pipe(store).state().equals(before)
    _pipe(store, key_groups=32, batch_rows=30).run(progress=False)
    assert _outcome(store) == _outcome(ref)
    assert _pipe(store).verify(replay=True).ok
    # a rewind to before the re-shard returns to that checkpoint's groups
    _pipe(store).run(progress=False, from_checkpoint=2)
    latest = _pipe(store)._ckpts().latest()
    assert latest is not None and latest.key_groups == 4
    _pipe(store).run(progress=False)
    assert _outcome(store) == _outcome(ref)


def test_reshard_of_a_new_pipeline_is_refused() -> None:
    store = _seed("memory://kg-reshard-new", _events(10, 3, seed=1))
    with pytest.raises(sk.ConfigurationError, match="no checkpoint yet"):
        _pipe(store).reshard(8)


def _rewrite_checkpoint(ckpts: CheckpointStore, cid: int, change: Any) -> None:
    path = f"checkpoints/{cid:012d}.json"
    doc = json.loads(ckpts.fs.get(path))
    doc.pop("crc32")
    change(doc)
    doc["crc32"] = crc32(_canonical(doc))
    ckpts.fs.put(path, _canonical(doc))


def test_a_format_1_checkpoint_resumes_and_is_regrouped() -> None:
    # Format 1 kept each operator's whole state in one file ("state_file").
    frame = _events(400, 30, seed=3)
    ref = _seed("memory://kg-v1-ref", frame)
    _pipe(ref, batch_rows=50).run(progress=False)
    store = _seed("memory://kg-v1", frame)
    pipe = _pipe(store, batch_rows=50)
    pipe.run(progress=False, max_batches=3)
    ckpts = pipe._ckpts()
    cid = ckpts.ids()[-1]
    whole = ckpts.write_state(pipe.state()).to_dict()

    def to_v1(doc: dict[str, Any]) -> None:
        doc["format"] = 1
        del doc["key_groups"]
        op = doc["operators"]["0-transitions"]
        del op["state"]
        op["state_file"] = whole

    _rewrite_checkpoint(ckpts, cid, to_v1)
    assert _pipe(store).verify().ok
    _pipe(store, batch_rows=50).run(progress=False)
    assert _outcome(store) == _outcome(ref)
    latest = ckpts.latest()
    assert latest is not None and "state" in latest.operators["0-transitions"]
    assert _pipe(store).verify(replay=True).ok


def test_a_damaged_delta_is_named_by_run_and_verify() -> None:
    store, pipe = _prefilled("memory://kg-damaged", 300, groups=8)
    store.log("lamps").append(pl.DataFrame({"lamp": ["l3"], "t": [900], "ev": ["off"]}))
    pipe.run(progress=False)
    ckpts = pipe._ckpts()
    cp = ckpts.latest()
    assert cp is not None
    delta = cp.operators["0-transitions"]["state"]["files"][-1]["path"]
    data = ckpts.fs.get(delta)
    ckpts.fs.put(delta, data[:-5] + b"xxxxx")
    report = _pipe(store).verify()
    assert not report.ok and delta.split("/")[-1] in str(report)
    store.log("lamps").append(pl.DataFrame({"lamp": ["l4"], "t": [901], "ev": ["on"]}))
    with pytest.raises(sk.CorruptFileError, match=delta.split("/")[-1]):
        _pipe(store).run(progress=False)


def test_verify_finds_a_key_in_the_wrong_group() -> None:
    store, pipe = _prefilled("memory://kg-wrong-group", 200, groups=4)
    ckpts = pipe._ckpts()
    cid = ckpts.ids()[-1]

    def swap(doc: dict[str, Any]) -> None:
        groups = doc["operators"]["0-transitions"]["state"]["groups"]
        a, b = sorted(groups)[:2]
        groups[a], groups[b] = groups[b], groups[a]

    _rewrite_checkpoint(ckpts, cid, swap)
    report = _pipe(store).verify()
    assert not report.ok
    assert "belong to other groups" in str(report)


def test_a_rewind_to_the_start_keeps_the_key_groups() -> None:
    store, _ = _prefilled("memory://kg-rewind0", 40, groups=16)
    _pipe(store, key_groups=16).run(progress=False, from_checkpoint=0)
    assert set(_pipe(store).checkpoints()["key_groups"].to_list()) == {16}
    _pipe(store, key_groups=16).run(progress=False)  # no ConfigurationError


def test_scanned_and_listed_flushes_mix_without_losing_a_timeout() -> None:
    # Early batches touch about every key known so far (the flush scans every
    # key); once keys accumulate the flush takes the list of timed keys. Runs
    # and replays (which take no checkpoint between batches) cross from one to
    # the other; timeouts of keys idle since a scanned batch must still fire.
    from datetime import timedelta

    from tests.pipeline.oracle import run_oracle

    rng = np.random.default_rng(3)
    n = 600
    frame = pl.DataFrame(
        {
            "lamp": [f"l{int(k)}" for k in np.minimum(np.arange(n) // 3, rng.integers(0, 400, n))],
            "t": np.arange(n, dtype=np.int64) * 2,
            "ev": rng.choice(["on", "off", "hit"], n),
        }
    )
    store = _seed("memory://kg-flush-mix", frame)
    _pipe(store, batch_rows=10).run(progress=False)
    want = run_oracle(
        store.log("lamps").scan(with_offset="offset").collect(),
        _machine(),
        key="lamp",
        time="t",
        event="ev",
        tick=timedelta(seconds=1),
    )
    assert history_by_key(store.log("history").scan().collect()) == want["history"]
    assert state_dict(_pipe(store).state()) == want["state"]
    pipe = _pipe(store, batch_rows=10)
    assert pipe.verify(replay=True).ok
