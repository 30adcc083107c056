"""Event time with lateness: waiting events, batch independence, end of input."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.pipeline._checkpoints import FileRef
from streamkit.pipeline._eventtime import NOTHING, release
from tests.pipeline.oracle import history_by_key, lamp_machine, state_dict

_machine = lamp_machine


def _pipe(store: sk.Store, lateness: Any, **kw: Any) -> sk.Pipeline:
    return (
        sk.Pipeline("lamps", store, **kw)
        .read(store.log("lamps", key="lamp", time="t"))
        .transitions(_machine(), event="ev", tick=timedelta(seconds=1), lateness=lateness)
        .write(store.log("history", key="key", time="time"))
    )


def _events(n: int, keys: int, disorder: int, seed: int) -> pl.DataFrame:
    """Times rise by 0-4 per event; a fraction arrive up to ``disorder`` late."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(0, 5, n)).astype(np.int64)
    late = rng.random(n) < 0.3
    t = np.where(late, np.maximum(t - rng.integers(0, disorder + 1, n), 0), t)
    return pl.DataFrame(
        {
            "lamp": pl.Series(rng.integers(0, keys, n)).cast(pl.String).str.replace(r"^", "l"),
            "t": t,
            "ev": rng.choice(["on", "off", "hit"], n),
            "note": rng.integers(0, 100, n),
        }
    )


def _store(frame: pl.DataFrame, rows: int = 7) -> sk.Store:
    """A log of ``frame`` in appends of ``rows`` rows: an append is stored in time
    order, so the disorder is what lies between appends (like collectors' batches)."""
    store = sk.Store(f"memory://late-{uuid.uuid4().hex}")
    log = store.log("lamps", key="lamp", time="t")
    for part in frame.iter_slices(rows):
        log.append(part)
    return store


def _lamp_oracle(events: pl.DataFrame, lateness: Any, **kw: Any) -> dict[str, Any]:
    """The streaming oracle over the lamps log (events in log order, with offsets)."""
    from tests.pipeline.oracle import run_oracle

    return run_oracle(
        events,
        _machine(),
        key="lamp",
        time="t",
        event="ev",
        tick=timedelta(seconds=1),
        lateness=lateness,
        **kw,
    )


def _outcome(store: sk.Store, lateness: Any) -> tuple[Any, ...]:
    pipe = _pipe(store, lateness)
    history = store.log("history").scan().collect()
    q = pipe.quarantine().sort("offset").select("offset", "reason", "data").rows()
    return history_by_key(history), state_dict(pipe.state()), q


def test_release_applies_events_once_the_watermark_passes_them() -> None:
    t = np.array([10, 30, 12, 50, 20])
    r = release(t, np.arange(5), t[:0], t[:0], watermark=NOTHING, max_time=NOTHING, lateness=15)
    # watermarks after each read: -5, 15, 15, 35, 35
    # 10 by read 1, 12 by its own read, 30 by read 3; 20 arrives after the
    # watermark passed it: applied by its own read, after timeouts up to 35
    assert r.order.tolist() == [0, 2, 1, 4]
    assert r.held_new.tolist() == [False, False, False, True, False]
    assert r.watermark == 35 and r.max_time == 50
    assert r.wm.tolist() == [10, 15, 30, 35]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    lateness=st.sampled_from([0, 3, 12, 40]),
    batch_rows=st.integers(1, 60),
    cuts=st.lists(st.integers(1, 5), max_size=3),
    groups=st.sampled_from([1, 16]),
)
def test_results_do_not_depend_on_the_batches(
    seed: int, lateness: int, batch_rows: int, cuts: list[int], groups: int
) -> None:
    # One batch over everything against small batches over several runs (each
    # run restores the waiting events from its checkpoint).
    frame = _events(90, 6, disorder=30, seed=seed)
    ref = _store(frame)
    _pipe(ref, lateness).run(progress=False)
    store = _store(frame)
    for n in cuts:
        _pipe(store, lateness, batch_rows=batch_rows, key_groups=groups).run(
            progress=False, max_batches=n
        )
    _pipe(store, lateness, batch_rows=batch_rows, key_groups=groups).run(progress=False)
    assert _outcome(store, lateness) == _outcome(ref, lateness)
    # ... and after the end of input too
    _pipe(ref, lateness).run(progress=False, final=True)
    _pipe(store, lateness, batch_rows=batch_rows, key_groups=groups).run(progress=False, final=True)
    assert _outcome(store, lateness) == _outcome(ref, lateness)
    report = _pipe(store, lateness).verify(replay=True)
    assert report.ok, report


def test_lateness_zero_is_the_default_behaviour() -> None:
    frame = _events(300, 8, disorder=30, seed=4)
    plain = _store(frame)
    (
        sk.Pipeline("lamps", plain, batch_rows=37)
        .read(plain.log("lamps"))
        .transitions(_machine(), event="ev", tick=timedelta(seconds=1))
        .write(plain.log("history", key="key", time="time"))
        .run(progress=False)
    )
    zero = _store(frame)
    _pipe(zero, 0, batch_rows=37).run(progress=False)
    assert plain.log("history").scan().collect().equals(zero.log("history").scan().collect())
    assert state_dict(_pipe(plain, None).state()) == state_dict(_pipe(zero, 0).state())


def test_lateness_turns_disorder_into_order_and_late_counts_fall() -> None:
    frame = _events(1000, 3, disorder=25, seed=7)
    without = _store(frame)
    r0 = _pipe(without, None).run(progress=False)
    within = _store(frame)
    r1 = _pipe(within, "30s").run(progress=False, final=True)
    assert r0.late > 100
    assert r1.late == 0  # every displacement is within the lateness
    assert r1.rows_in == r0.rows_in == 1000


def test_waiting_events_are_state_counted_and_survive_a_restart() -> None:
    store = _store(
        pl.DataFrame(
            {"lamp": ["a", "a", "b", "a"], "t": [10, 30, 12, 20], "ev": ["on", "off", "on", "on"],
             "note": [1, 2, 3, 4]}
        ),
        rows=1,
    )  # fmt: skip
    _pipe(store, 15).run(progress=False)
    state = _pipe(store, 15).state().sort("key")
    assert state.select("key", "state", "waiting").rows() == [("a", "on", 2), ("b", "on", 0)]
    cp = _pipe(store, 15)._ckpts().latest()
    assert cp is not None and cp.operators["0-transitions"]["waiting"] == 2
    # nothing new: an idle run leaves everything waiting as it was
    assert _pipe(store, 15).run(progress=False).batches == 0
    assert _pipe(store, 15).state().sort("key")["waiting"].to_list() == [2, 0]
    report = _pipe(store, 15).run(progress=False, final=True)
    assert report.batches == 1 and report.checkpoint == 2
    assert _pipe(store, 15)._ckpts().latest().kind == "final"  # type: ignore[union-attr]
    assert _pipe(store, 15).state()["waiting"].sum() == 0
    history = store.log("history").scan().collect().filter(pl.col("key") == "a")
    assert history.select("time", "event").rows() == [
        (10, "on"),
        (20, "timeout"),
        (20, "on"),
        (30, "timeout"),
    ]
    # the late "off" at 30 found the key off: quarantined as undefined, its row kept
    q = _pipe(store, 15).quarantine()
    assert q.select("offset", "reason").rows() == [(1, "undefined")]
    assert '"note":2' in q["data"][0]
    # a second final run has nothing to do
    assert _pipe(store, 15).run(progress=False, final=True).batches == 0
    # events appended after the end: older than their key's last -> late
    store.log("lamps").append(
        pl.DataFrame({"lamp": ["a", "c"], "t": [25, 26], "ev": ["on", "on"], "note": [5, 6]})
    )
    report = _pipe(store, 15).run(progress=False, final=True)
    assert report.late == 1
    assert _pipe(store, 15).verify(replay=True).ok


def test_a_rewind_restores_the_waiting_events() -> None:
    frame = _events(400, 10, disorder=30, seed=9)
    ref = _store(frame)
    _pipe(ref, 40).run(progress=False)
    store = _store(frame)
    _pipe(store, 40, batch_rows=50).run(progress=False)
    _pipe(store, 40, batch_rows=50).run(progress=False, from_checkpoint=3)
    assert _outcome(store, 40) == _outcome(ref, 40)
    assert _pipe(store, 40).verify(replay=True).ok


@pytest.mark.parametrize("bad", [-1, "soon", True, 1.5])
def test_lateness_must_be_a_duration_or_ticks(bad: Any) -> None:
    store = _store(_events(5, 2, 0, 1))
    with pytest.raises(sk.ConfigurationError, match="lateness"):
        _pipe(store, bad)


def test_a_duration_on_integer_time_needs_a_tick() -> None:
    store = _store(_events(5, 2, 0, 1))
    pipe = (
        sk.Pipeline("p", store)
        .read(store.log("lamps"))
        .transitions(
            sk.Machine("m", states=["a"], initial="a", final=["a"], transitions=[("a", "on", "a")]),
            event="ev",
            lateness="10s",
        )
    )
    with pytest.raises(sk.ConfigurationError, match="tick"):
        pipe.run(progress=False)


def test_a_periodic_machine_cannot_flood_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamkit.pipeline import _transitions

    blink = sk.Machine(
        "blink",
        states=["on", "off"],
        initial="on",
        final=["off"],
        transitions=[("off", "press", "on")],
        timeouts=[("on", "1s", "off"), ("off", "1s", "on")],
        periodic=True,
    )
    store = _store(
        pl.DataFrame({"lamp": ["a", "b"], "t": [0, 0], "ev": ["press"] * 2, "note": [0, 0]})
    )
    pipe = (
        sk.Pipeline("blink", store)
        .read(store.log("lamps"))
        .transitions(blink, event="ev", tick=timedelta(seconds=1))
        .write(store.log("history", key="key", time="time"))
    )
    pipe.run(progress=False)
    monkeypatch.setattr(_transitions, "MAX_TIMEOUTS_PER_BATCH", 1_000)
    store.log("lamps").append(
        pl.DataFrame({"lamp": ["a"], "t": [3600], "ev": ["press"], "note": [1]})
    )  # an hour later: 3,600 blinks per key
    with pytest.raises(sk.ConfigurationError, match="periodic"):
        pipe.run(progress=False)
    assert pipe.checkpoints().height == 1  # nothing committed
    monkeypatch.setattr(_transitions, "MAX_TIMEOUTS_PER_BATCH", 50_000_000)
    assert pipe.run(progress=False).rows_out > 7_000


def test_datetime_times_and_integer_keys_wait_too() -> None:
    import datetime as dt

    t0 = dt.datetime(2026, 1, 1)
    times = [t0 + dt.timedelta(seconds=s) for s in (0, 30, 5, 60, 20)]
    frame = pl.DataFrame(
        {"lamp": [1, 1, 2, 1, 2], "t": times, "ev": ["on", "off", "on", "on", "off"]}
    )
    store = sk.Store(f"memory://late-{uuid.uuid4().hex}")
    log = store.log("lamps", key="lamp", time="t")
    for part in frame.iter_slices(1):
        log.append(part)
    pipe = (
        sk.Pipeline("p", store, batch_rows=2)
        .read(log)
        .transitions(_machine(), event="ev", lateness="25s")
        .write(store.log("history", key="key", time="time"))
    )
    pipe.run(progress=False, max_batches=1)
    pipe.run(progress=False)
    waiting = pipe.state().sort("key")
    assert waiting["key"].dtype == pl.Int64 and waiting["waiting"].sum() > 0
    pipe.run(progress=False, final=True)
    assert pipe.state()["waiting"].sum() == 0
    history = store.log("history").scan().collect()
    assert history["time"].dtype == pl.Datetime("us")
    assert pipe.verify(replay=True).ok
    ckpts = pipe._ckpts()
    on_disk = {f"state/{n}" for n in ckpts.fs.ls("state")}
    live = set().union(*(ckpts._state_files(ckpts.read(i)) for i in ckpts.ids()))
    assert on_disk == live


def test_waiting_events_are_checkpointed_incrementally() -> None:
    # times 0, 1, 2, ... with lateness 20: the 20 newest events wait; each
    # checkpoint writes only the events that started waiting in its batch, and
    # a file leaves the list once the watermark passed all of its events.
    n = 200
    frame = pl.DataFrame(
        {"lamp": [f"l{i % 7}" for i in range(n)], "t": list(range(n)), "ev": ["on"] * n,
         "note": [0] * n}
    )  # fmt: skip
    store = _store(frame, rows=10)
    pipe = _pipe(store, 20, batch_rows=10)
    pipe.run(progress=False)
    ckpts = pipe._ckpts()
    for cid in ckpts.ids():
        entry = ckpts.read(cid).operators["0-transitions"]
        files = entry.get("waiting_files", [])
        assert len(files) <= 3  # 20 waiting events span at most 3 batches of 10
        newest = ckpts.read_state(FileRef.from_dict(files[-1]))
        assert newest.height <= 10
        assert entry["waiting"] == min(20, 10 * cid)
    assert pipe.state()["waiting"].sum() == 20
    # each file is cut per key group: a reader of some groups reads only theirs
    from streamkit.pipeline._keyed import group_of
    from streamkit.pipeline._transitions import _read_waiting

    cp = ckpts.read(ckpts.ids()[-1])
    entry = cp.operators["0-transitions"]
    every = _read_waiting(entry["waiting_files"], ckpts, int(entry["watermark"]))
    groups = group_of(every["key"], cp.key_groups)
    for g in set(groups.tolist()):
        mine = _read_waiting(
            entry["waiting_files"],
            ckpts,
            int(entry["watermark"]),
            groups={g},
            key_groups=cp.key_groups,
        )
        assert mine.equals(every.filter(pl.Series(groups == g)))
    for f in entry["waiting_files"]:
        rows = ckpts.read_state(FileRef.from_dict(f))
        for g, (first, n_rows) in f["groups"].items():
            part = rows.slice(first, n_rows)
            assert (group_of(part["key"], cp.key_groups) == int(g)).all()


def test_a_file_log_source_waits_and_ends_too(tmp_path: Any) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    for i in range(4):  # each file in time order, the files overlapping
        frame = pl.DataFrame({"k": ["a", "b"], "t": [10 * i + 5, 10 * i], "ev": ["on", "off"]})
        frame.write_parquet(drop / f"f{i}.parquet")
    store = sk.Store(str(tmp_path / "lake"))
    pipe = (
        sk.Pipeline("fl", store, batch_rows=2)
        .read(sk.FileLog(str(drop), key="k", time="t"))
        .transitions(_machine(), event="ev", tick=timedelta(seconds=1), lateness=12)
        .write(store.log("h", key="key", time="time"))
    )
    pipe.run(progress=False)
    assert pipe.state()["waiting"].sum() > 0
    pipe.run(progress=False, final=True)
    assert pipe.state()["waiting"].sum() == 0
    report = pipe.verify(replay=True)
    assert report.ok, report


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    lateness=st.sampled_from([1, 5, 20, 60]),
    batch_rows=st.integers(1, 40),
    final=st.booleans(),
)
def test_the_pipeline_equals_the_streaming_oracle(
    seed: int, lateness: int, batch_rows: int, final: bool
) -> None:

    frame = _events(80, 5, disorder=40, seed=seed)
    store = _store(frame, rows=5)
    pipe = _pipe(store, lateness, batch_rows=batch_rows)
    pipe.run(progress=False, final=final)
    log_order = store.log("lamps").scan(with_offset="offset").collect()
    want = _lamp_oracle(log_order, lateness, final=final)
    history = store.log("history").scan().collect()
    assert history_by_key(history) == want["history"]
    state = pipe.state()
    applied = state.filter(pl.col("state").is_not_null()).drop("waiting")
    assert state_dict(applied) == want["state"]
    assert int(state["waiting"].sum()) == want["waiting"]
    q = pipe.quarantine().sort("offset").select("offset", "reason").rows()
    assert q == want["quarantine"]


def test_a_final_batch_dropped_by_a_batch_conflict_comes_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamkit.pipeline._runner import BatchConflict, Runner
    from streamkit.pipeline._source import Todo

    store = _store(_events(90, 5, disorder=25, seed=4))
    real = Runner.commit
    hit = {"done": False}

    def commit(self: Runner, cp: Any, batch: Any, *a: Any) -> Any:
        if not hit["done"] and batch.hi == 90 and not batch.final:
            hit["done"] = True  # as if an overtaken run had written this batch
            raise BatchConflict(Todo(batch.lo, batch.hi, batch.desc))
        return real(self, cp, batch, *a)

    monkeypatch.setattr(Runner, "commit", commit)
    _pipe(store, 20, batch_rows=30).run(progress=False, final=True)
    assert hit["done"]
    kinds = _pipe(store, 20).checkpoints()["kind"].to_list()
    assert kinds[-1] == "final"
    assert _pipe(store, 20).state()["waiting"].sum() == 0


def test_turning_lateness_off_applies_what_waits() -> None:
    frame = _events(200, 5, disorder=25, seed=6)
    store = _store(frame)
    _pipe(store, 20, batch_rows=100).run(progress=False, max_batches=1)
    assert _pipe(store, 20).state()["waiting"].sum() > 0
    _pipe(store, None, batch_rows=100).run(progress=False)
    cp = _pipe(store, None)._ckpts().latest()
    assert cp is not None
    counts = cp.counts
    assert counts["rows_in"] == 200 == counts["applied"] + counts["late"]
    assert "waiting_files" not in cp.operators["0-transitions"]


def test_verify_reads_the_waiting_event_files() -> None:
    store = _store(_events(100, 5, disorder=25, seed=8))
    pipe = _pipe(store, 30)
    pipe.run(progress=False)
    ckpts = pipe._ckpts()
    cp = ckpts.latest()
    assert cp is not None
    path = cp.operators["0-transitions"]["waiting_files"][-1]["path"]
    ckpts.fs.put(path, b"not arrow at all")
    report = pipe.verify()
    assert not report.ok and path.split("/")[-1] in str(report)


def test_state_keeps_the_key_and_time_types_while_everything_waits() -> None:
    import datetime as dt

    t0 = dt.datetime(2026, 1, 1)
    store = sk.Store(f"memory://late-{uuid.uuid4().hex}")
    log = store.log("lamps", key="lamp", time="t")
    log.append(pl.DataFrame({"lamp": [1, 2], "t": [t0, t0], "ev": ["on", "on"]}))
    pipe = (
        sk.Pipeline("p", store)
        .read(log)
        .transitions(_machine(), event="ev", lateness="1h")
        .write(store.log("history", key="key", time="time"))
    )
    pipe.run(progress=False)
    state = pipe.state()
    assert state.schema["key"] == pl.Int64 and state.schema["since"] == pl.Datetime("us")
    assert state["waiting"].to_list() == [1, 1]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    lateness=st.sampled_from([None, 1, 20]),
    batch_rows=st.integers(1, 40),
)
def test_rows_a_filter_drops_move_the_watermark_too(
    seed: int, lateness: int | None, batch_rows: int
) -> None:
    """The watermark is taken at the source: every row read moves it, also one a
    filter drops before .transitions() (what lets a Dask task compute it from
    the log's segments alone); the pipeline equals the oracle given every read."""

    frame = _events(80, 5, disorder=40, seed=seed)
    store = _store(frame, rows=5)
    pipe = (
        sk.Pipeline("lamps", store, batch_rows=batch_rows)
        .read(store.log("lamps"))
        .filter(pl.col("note") < 60)
        .transitions(_machine(), event="ev", tick=timedelta(seconds=1), lateness=lateness)
        .write(store.log("history", key="key", time="time"))
    )
    pipe.run(progress=False)
    reads = store.log("lamps").scan(with_offset="offset").collect()
    want = _lamp_oracle(reads.filter(pl.col("note") < 60), lateness, reads=reads)
    assert history_by_key(store.log("history").scan().collect()) == want["history"]
    state = pipe.state()
    if "waiting" in state.columns:
        state = state.filter(pl.col("state").is_not_null()).drop("waiting")
    assert state_dict(state) == want["state"]
    q = pipe.quarantine().sort("offset").select("offset", "reason").rows()
    assert q == want["quarantine"]


def test_a_batch_whose_rows_a_filter_drops_still_fires_timeouts() -> None:
    """A batch with no event left after the filter still moves the watermark: the
    lamp switched on at 0 times out at 10 s because rows up to 50 s were read."""
    store = sk.Store(f"memory://late-{uuid.uuid4().hex}")
    log = store.log("lamps", key="lamp", time="t")
    log.append(pl.DataFrame({"lamp": ["a"], "t": [0], "ev": ["on"], "note": [0]}))
    log.append(
        pl.DataFrame({"lamp": ["b", "b"], "t": [20, 50], "ev": ["on", "on"], "note": [99, 99]})
    )
    pipe = (
        sk.Pipeline("lamps", store, batch_rows=1)
        .read(log)
        .filter(pl.col("note") < 60)
        .transitions(_machine(), event="ev", tick=timedelta(seconds=1))
        .write(store.log("history", key="key", time="time"))
    )
    pipe.run(progress=False)
    history = store.log("history").scan().collect()
    assert history.select("key", "time", "event", "to_state").rows() == [
        ("a", 0, "on", "on"),
        ("a", 10, "timeout", "off"),
    ]
