"""End-to-end pipeline behaviour against the plain Python oracle."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import polars as pl
import pytest

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine
from tests.pipeline.oracle import history_by_key, run_oracle, state_dict

pytestmark = pytest.mark.timeout(300)


def build(store: sk.Store, machine: sk.Machine | None = None, **kw: object) -> sk.Pipeline:
    return (
        sk.Pipeline("orders-pipe", store, **kw)  # type: ignore[arg-type]
        .read(store.log("orders", key="order_id", time="ts"))
        .filter(pl.col("amount") >= 0)
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(machine or order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


def expected(store: sk.Store, machine: sk.Machine | None = None) -> dict[str, object]:
    events = (
        store.log("orders")
        .scan(with_offset="offset")
        .filter(pl.col("amount") >= 0)
        .with_columns(event=pl.col("type").str.to_lowercase())
        .collect()
    )
    return run_oracle(events, machine or order_machine(), key="order_id", time="ts", event="event")


def check_against_oracle(
    store: sk.Store, pipe: sk.Pipeline, machine: sk.Machine | None = None
) -> None:
    want = expected(store, machine)
    got_history = history_by_key(store.log("history").scan().collect())
    assert got_history == want["history"]
    assert state_dict(pipe.state()) == want["state"]
    q = pipe.quarantine()
    assert (
        sorted(zip(q["offset"].to_list(), q["reason"].to_list(), strict=True)) == want["quarantine"]
    )


@pytest.fixture
def orders() -> pl.DataFrame:
    return generate_orders(120, span="3h", seed=7)


def append_in_parts(log: sk.Log, frame: pl.DataFrame, parts: int) -> None:
    step = -(-frame.height // parts)
    for i in range(parts):
        log.append(frame.slice(i * step, step))


def test_end_to_end_matches_oracle(store: sk.Store, orders: pl.DataFrame) -> None:
    log = store.log("orders", key="order_id", time="ts")
    append_in_parts(log, orders, 3)
    pipe = build(store)
    report = pipe.run(batch_rows=97, progress=False)
    assert report.batches == -(-log.end().offset // 97)
    assert report.rows_in == orders.height
    assert report.caught_up
    assert report.quarantined == pipe.quarantine().height > 0
    check_against_oracle(store, pipe)
    assert pipe.verify(replay=True).ok


@pytest.mark.parametrize("batch_rows", [1, 13, 250, 10_000])
def test_any_batch_size_gives_the_same_outputs(batch_rows: int, orders: pl.DataFrame) -> None:
    store = sk.Store(f"memory://pipe-batches-{batch_rows}")
    append_in_parts(store.log("orders", key="order_id", time="ts"), orders.head(400), 2)
    pipe = build(store)
    pipe.run(batch_rows=batch_rows, progress=False)
    check_against_oracle(store, pipe)


def test_incremental_runs_process_only_new_events(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-incremental")
    log = store.log("orders", key="order_id", time="ts")
    pipe = build(store, batch_rows=50)
    first, second = orders.head(300), orders.slice(300)
    log.append(first)
    r1 = pipe.run(progress=False)
    assert r1.rows_in == 300
    log.append(second)
    r2 = pipe.run(progress=False)
    assert r2.rows_in == second.height
    assert pipe.run(progress=False).batches == 0  # caught up: nothing to do
    check_against_oracle(store, pipe)


def test_max_batches_bounds_a_run(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-maxbatches")
    store.log("orders", key="order_id", time="ts").append(orders)
    pipe = build(store, batch_rows=100)
    r = pipe.run(max_batches=2, progress=False)
    assert (r.batches, r.rows_in, r.caught_up) == (2, 200, False)
    assert pipe.checkpoints()["id"].to_list() == [1, 2]
    pipe.run(progress=False)
    check_against_oracle(store, pipe)


def test_from_checkpoint_reprocesses_with_a_corrected_machine(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-correct")
    store.log("orders", key="order_id", time="ts").append(orders)
    good = order_machine()
    d = good.to_dict()
    for t in d["transitions"]:
        if t["on"] == "cancel":
            t["from"] = "created"  # forgot that paid orders can be cancelled too
    broken = sk.Machine.from_dict(d)
    first = build(store, broken, batch_rows=100)
    first.run(progress=False)
    undefined_before = (first.quarantine()["reason"] == "undefined").sum()
    fixed = build(store, good, batch_rows=100)
    report = fixed.run(from_checkpoint=0, progress=False)
    assert report.rows_in == orders.height
    check_against_oracle(store, fixed, good)
    assert (fixed.quarantine()["reason"] == "undefined").sum() < undefined_before
    kinds = fixed.checkpoints()["kind"].to_list()
    assert "rewind" in kinds
    assert fixed.verify(replay=True).ok


def test_from_an_intermediate_checkpoint_equals_a_fresh_run(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-rewind-mid")
    store.log("orders", key="order_id", time="ts").append(orders)
    pipe = build(store, batch_rows=60)
    pipe.run(progress=False)
    history_before = store.log("history").scan().collect()
    report = pipe.run(from_checkpoint=2, progress=False)
    assert report.rows_in == orders.height - 120  # checkpoint 2 had read 2 batches of 60
    check_against_oracle(store, pipe)
    # the retracted rows are gone from the log, not duplicated
    after = store.log("history").scan().collect()
    assert after.height == history_before.height
    assert history_by_key(after) == history_by_key(history_before)


def test_on_undefined_ignore_and_error(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-undefined")
    store.log("orders", key="order_id", time="ts").append(orders)
    base = (
        sk.Pipeline("ign", store)
        .read(store.log("orders"))
        .with_columns(event=pl.col("type").str.to_lowercase())
    )
    ignoring = base.transitions(order_machine(), event="event", on_undefined="ignore")
    r = ignoring.run(progress=False)
    assert r.ignored > 0
    assert set(ignoring.quarantine()["reason"].unique().to_list()) <= {"late"}
    strict = (
        sk.Pipeline("strict", store)
        .read(store.log("orders"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event", on_undefined="error")
    )
    with pytest.raises(sk.UndefinedTransitionError, match=r"key=.*state=.*event="):
        strict.run(batch_rows=10_000, progress=False)
    assert strict.checkpoints().height == 0


def test_late_events_are_quarantined_with_reason() -> None:
    store = sk.Store("memory://pipe-late")
    log = store.log("ev", key="k", time="t")
    m = sk.Machine(
        "m",
        states=["a", "b"],
        initial="a",
        final=["a"],
        transitions=[("a", "x", "b"), ("b", "y", "a")],
    )
    log.append(pl.DataFrame({"k": ["u", "u"], "t": [10, 20], "e": ["x", "y"]}))
    log.append(pl.DataFrame({"k": ["u", "v"], "t": [15, 1], "e": ["x", "x"]}))
    pipe = sk.Pipeline("late", store).read(log).transitions(m, event="e")
    pipe.run(progress=False)
    q = pipe.quarantine()
    assert q.select("k", "t", "reason", "state", "offset").rows() == [("u", 15, "late", "a", 3)]


def test_timeouts_fire_in_event_time_once_the_log_moves_past() -> None:
    store = sk.Store("memory://pipe-timeout")
    log = store.log("ev", key="k", time="t")
    m = sk.Machine(
        "m",
        states=["idle", "busy", "done"],
        initial="idle",
        final=["done"],
        transitions=[("idle", "go", "busy"), ("busy", "stop", "done")],
        timeouts=[("busy", "10s", "done")],
    )
    out = store.log("hist", key="key", time="time")
    pipe = (
        sk.Pipeline("to", store)
        .read(log)
        .transitions(m, event="e", tick=timedelta(seconds=1))
        .write(out)
    )
    log.append(pl.DataFrame({"k": ["a", "b"], "t": [0, 5], "e": ["go", "go"]}))
    with pytest.raises(sk.ConfigurationError, match="tick="):  # integer times need a unit
        sk.Pipeline("to0", store).read(log).transitions(m, event="e").run(progress=False)
    pipe.run(progress=False)
    assert out.scan().collect().height == 2  # log at 5 s: nothing timed out yet
    log.append(pl.DataFrame({"k": ["c"], "t": [12], "e": ["go"]}))
    pipe.run(progress=False)
    rows = out.scan().collect().filter(pl.col("event") == "timeout").rows()
    assert rows == [("a", 10, "timeout", "busy", "done")]
    st = pipe.state().sort("key")
    assert st.row(0) == ("a", "done", 10, 10, 1)


def test_lease_error_when_a_newer_run_starts(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-lease")
    store.log("orders", key="order_id", time="ts").append(orders)
    pipe = build(store, batch_rows=100)

    class Intruder(sk.pipeline.LocalExecutor):  # type: ignore[name-defined,misc]
        calls = 0

        def run_batch(self, *a, **kw):  # type: ignore[no-untyped-def]
            Intruder.calls += 1
            if Intruder.calls == 2:  # another run of the pipeline starts meanwhile,
                # once batch 1 (committing on the worker thread) has landed
                deadline = time.monotonic() + 30
                while pipe._ckpts().latest() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                newer = pipe._ckpts().claim_epoch({"who": "newer"}, take_over=True)
                pipe._ckpts().beat(newer, 30.0, released=True)  # ...and finishes
            return super().run_batch(*a, **kw)

    with pytest.raises(sk.LeaseError, match="overtaken"):
        pipe.run(executor=Intruder(), progress=False)
    assert pipe.checkpoints()["id"].to_list() == [1]
    pipe.run(progress=False)  # the next run proceeds at once
    check_against_oracle(store, pipe)


def test_verify_detects_a_flipped_bit_in_every_file_kind(orders: pl.DataFrame, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = sk.Store(str(tmp_path / "lake"))
    store.log("orders", key="order_id", time="ts").append(orders)
    pipe = build(store, batch_rows=200)
    pipe.run(progress=False)
    assert pipe.verify().ok
    root = tmp_path / "lake"
    kinds = {
        "checkpoint": sorted((root / "_pipelines/orders-pipe/checkpoints").glob("*.json"))[-1],
        "state": sorted((root / "_pipelines/orders-pipe/state").glob("*.arrow"))[-1],
        "output segment": sorted((root / "history/data").rglob("*.parquet"))[-1],
        "quarantine segment": sorted(
            (root / "_pipelines/orders-pipe/quarantine/data").rglob("*.parquet")
        )[-1],
        "output manifest": sorted((root / "history/_delta_log").glob("0*[0-9].json"))[-1],
    }
    for kind, path in kinds.items():
        original = path.read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))
        try:
            report = pipe.verify()
            assert not report.ok, kind
            assert any(path.name in c.message for c in report.problems), (kind, str(report))
        finally:
            path.write_bytes(original)
    assert pipe.verify(replay=True).ok


def test_run_refuses_state_it_cannot_verify(orders: pl.DataFrame, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = sk.Store(str(tmp_path / "lake"))
    store.log("orders", key="order_id", time="ts").append(orders.head(200))
    pipe = build(store, batch_rows=100)
    pipe.run(progress=False)
    state_file = sorted((tmp_path / "lake/_pipelines/orders-pipe/state").glob("*.arrow"))[-1]
    state_file.write_bytes(state_file.read_bytes()[:-7])
    with pytest.raises(sk.CorruptFileError, match=state_file.name):
        pipe.run(progress=False)


def test_a_corrupt_source_segment_read_ahead_stops_the_run_after_the_batches_before(
    orders: pl.DataFrame,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """Batch 2 is read on the reader thread while batch 1 computes: its corrupt
    segment must surface as CorruptFileError after batch 1 has committed, and a
    run once the segment is repaired must give exactly the uninterrupted result."""
    store = sk.Store(str(tmp_path / "lake"))
    source = store.log("orders", key="order_id", time="ts")
    for part in orders.head(600).iter_slices(200):
        source.append(part)
    second = source.segments().sort("offset")["path"][1]  # rows 200..399: batch 2
    segment = tmp_path / "lake/orders" / second
    original = segment.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x10
    segment.write_bytes(bytes(damaged))
    pipe = build(store, batch_rows=200)
    with pytest.raises(sk.CorruptFileError, match=segment.name):
        pipe.run(progress=False)
    assert pipe.checkpoints()["id"].to_list() == [1]
    segment.write_bytes(original)
    pipe.run(progress=False)
    check_against_oracle(store, pipe)


def test_changed_machine_with_missing_states_is_a_clear_error(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-machine-change")
    store.log("orders", key="order_id", time="ts").append(orders)
    build(store, batch_rows=10_000).run(progress=False)
    d = order_machine().to_dict()
    d["states"] = [s for s in d["states"] if s != "returned"]
    d["final"] = [s for s in d["final"] if s != "returned"]
    d["transitions"] = [t for t in d["transitions"] if t["to"] != "returned"]
    smaller = sk.Machine.from_dict(d)
    with pytest.raises(sk.CheckpointError, match="from_checkpoint=0"):
        build(store, smaller).run(progress=False)


def test_reports_and_reprs(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-repr")
    store.log("orders", key="order_id", time="ts").append(orders.head(50))
    pipe = build(store)
    assert "transitions" in repr(pipe) and "<ol>" in pipe._repr_html_()
    report = pipe.run(progress=False)
    assert "rows in" in report._repr_html_() and "batches" in str(report)
    v = pipe.verify()
    assert v.ok and "✔" in v._repr_html_()
    cps = pipe.checkpoints()
    assert cps.columns[:3] == ["id", "parent", "kind"]


def test_open_rebuilds_the_pipeline_from_its_stored_plan(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-open")
    store.log("orders", key="order_id", time="ts").append(orders.head(100))
    pipe = build(store)
    pipe.run(progress=False)
    reopened = sk.Pipeline.open(store, "orders-pipe")
    assert [op.kind for op in reopened.operators] == [op.kind for op in pipe.operators]
    assert reopened.state().equals(pipe.state())
    assert reopened.verify(replay=True).ok


def test_integer_time_columns_use_the_tick() -> None:
    store = sk.Store("memory://pipe-int-time")
    log = store.log("ev", key="k", time="t")
    m = sk.Machine(
        "m",
        states=["on", "off"],
        initial="off",
        final=["off"],
        transitions=[("off", "up", "on"), ("on", "down", "off")],
        timeouts=[("on", "2m", "off")],
    )
    log.append(pl.DataFrame({"k": [1, 2], "t": [0, 3], "e": ["up", "up"]}))
    pipe = sk.Pipeline("int", store).read(log).transitions(m, event="e", tick=timedelta(minutes=1))
    pipe.run(progress=False)
    st = pipe.state().sort("key")
    assert st["state"].to_list() == ["off", "on"]
    assert st["since"].to_list() == [2, 3]


def test_empty_log_run_is_a_noop() -> None:
    store = sk.Store("memory://pipe-empty")
    log = store.log("ev", key="k", time="t")
    m = sk.Machine("m", states=["a"], initial="a", final=["a"], transitions=[("a", "x", "a")])
    pipe = sk.Pipeline("e", store).read(log).transitions(m, event="e")
    r = pipe.run(progress=False)
    assert (r.batches, r.checkpoint, r.caught_up) == (0, None, True)
    assert pipe.state().height == 0


def test_bad_configuration_is_reported_clearly() -> None:
    store = sk.Store("memory://pipe-config")
    with pytest.raises(sk.ConfigurationError):
        sk.Pipeline("../escape", store)
    with pytest.raises(sk.ConfigurationError, match="read"):
        sk.Pipeline("p", store).filter(pl.col("x") > 1)
    with pytest.raises(sk.ConfigurationError, match="on_undefined"):
        log = store.log("ev", key="k", time="t")
        sk.Pipeline("p", store).read(log).transitions(order_machine(), on_undefined="drop")  # type: ignore[arg-type]
    bad = sk.Machine("bad", states=["a", "b"], initial="a", final=["a"], transitions=[])
    with pytest.raises(sk.MachineError):
        sk.Pipeline("p", store).read(store.log("ev")).transitions(bad)


def test_time_reported_is_datetime_for_datetime_logs(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-dtypes")
    store.log("orders", key="order_id", time="ts").append(orders.head(80))
    pipe = build(store)
    pipe.run(progress=False)
    h = store.log("history").scan().collect()
    assert h.schema["time"] == pl.Datetime("us")
    assert h.columns == ["key", "time", "event", "from_state", "to_state"]
    st = pipe.state()
    assert st.schema["since"] == pl.Datetime("us")
    assert st["since"].min() >= datetime(2026, 1, 1)  # type: ignore[operator]


def test_a_file_log_is_a_source_like_any_other(tmp_path, orders: pl.DataFrame) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "drop"
    folder.mkdir()
    orders.head(150).write_parquet(folder / "part-000.parquet")
    orders.slice(150, 150).write_parquet(folder / "part-001.parquet")
    files = sk.FileLog(str(folder), pattern="*.parquet", key="order_id", time="ts")
    store = sk.Store(str(tmp_path / "lake"))
    pipe = (
        sk.Pipeline("from-files", store, batch_rows=70)
        .read(files)
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )
    report = pipe.run(progress=False)
    assert report.rows_in == 300
    events = (
        files.scan(with_offset="offset")
        .with_columns(event=pl.col("type").str.to_lowercase())
        .collect()
    )
    want = run_oracle(events, order_machine(), key="order_id", time="ts", event="event")
    assert history_by_key(store.log("history").scan().collect()) == want["history"]
    assert state_dict(pipe.state()) == want["state"]
    assert pipe.verify(replay=True).ok


def test_non_interactive_runs_log_progress_lines(orders: pl.DataFrame, caplog) -> None:  # type: ignore[no-untyped-def]
    store = sk.Store("memory://pipe-progress-lines")
    store.log("orders", key="order_id", time="ts").append(orders.head(100))
    with caplog.at_level("INFO", logger="streamkit.pipeline"):
        build(store, batch_rows=50).run()
    lines = [r.getMessage() for r in caplog.records if "events (" in r.getMessage()]
    assert lines == ["orders-pipe: 50/100 events (50%)", "orders-pipe: 100/100 events (100%)"]
    caplog.clear()
    with caplog.at_level("INFO", logger="streamkit.pipeline"):
        build(store, batch_rows=50).run(from_checkpoint=0, progress=False)
    assert not [r for r in caplog.records if "events (" in r.getMessage()]


def test_retention_keeps_the_newest_checkpoints_and_removes_orphans(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-retention")
    store.log("orders", key="order_id", time="ts").append(orders)
    pipe = build(store, batch_rows=20, keep_checkpoints=3)
    report = pipe.run(progress=False)
    assert pipe.checkpoints()["id"].to_list() == list(range(report.batches - 2, report.batches + 1))
    fs = store.filesystem.child("_pipelines/orders-pipe")
    fs.put_new("state/0000000000001-orphan.arrow", b"left by a crashed batch")
    referenced = set(fs.ls("state"))
    assert pipe._ckpts().prune(3, protect=set()) == 0
    assert set(fs.ls("state")) == referenced - {"0000000000001-orphan.arrow"}
    ckpts = pipe._ckpts()
    live = set().union(*(ckpts._state_files(ckpts.read(i)) for i in ckpts.ids()))
    assert {f"state/{name}" for name in fs.ls("state")} == live  # only what they reference
    assert pipe.verify(replay=True).ok


def test_python_functions_are_never_stored_in_checkpoints(orders: pl.DataFrame) -> None:
    store = sk.Store("memory://pipe-no-pickle")
    store.log("orders", key="order_id", time="ts").append(orders.head(40))
    udf = pl.col("amount").map_batches(lambda s: s > -1e9, return_dtype=pl.Boolean)
    pipe = (
        sk.Pipeline("udf", store)
        .read(store.log("orders"))
        .filter(udf)
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
    )
    pipe.run(progress=False)
    fs = store.filesystem.child("_pipelines/udf/checkpoints")
    stored = b"".join(fs.get(name) for name in fs.ls(""))
    assert b"Anonymous" not in stored and b"pickle" not in stored
    with pytest.raises(sk.CheckpointError, match="from its code"):
        sk.Pipeline.open(store, "udf")
    with pytest.raises(sk.CheckpointError, match="never unpickles"):
        from streamkit.pipeline._operators import expr_from_json

        expr_from_json(udf.meta.serialize(format="json"))


def test_vacuum_removes_what_crashed_batches_left_in_the_output_and_quarantine(
    orders: pl.DataFrame,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    import shutil

    store = sk.Store(str(tmp_path / "lake"))
    store.log("orders", key="order_id", time="ts").append(orders)
    pipe = build(store, batch_rows=200)
    pipe.run(progress=False)
    before = (store.log("history").scan().collect(), pipe.quarantine(), pipe.state())
    root = tmp_path / "lake"
    # what a batch killed between writing its segments and committing them leaves
    leftovers = []
    for folder in ("history/data/p=000", "_pipelines/orders-pipe/quarantine/data/p=000"):
        source = sorted((root / folder).glob("*.parquet"))[0]
        orphan = root / folder / f"{int(time.time() * 1000)}-{'0' * 32}.parquet"
        shutil.copy(source, orphan)
        leftovers.append(orphan)
    assert pipe.vacuum() == []  # younger than the default hour: a batch may be in flight
    removed = pipe.vacuum(retain=timedelta(0))
    assert sorted(removed) == sorted(
        [
            f"history/data/p=000/{leftovers[0].name}",
            f"_pipelines/orders-pipe/quarantine/data/p=000/{leftovers[1].name}",
        ]
    )
    assert not any(p.exists() for p in leftovers)
    after = (store.log("history").scan().collect(), pipe.quarantine(), pipe.state())
    assert all(a.equals(b) for a, b in zip(before, after, strict=True))
    assert pipe.verify().ok
