"""The loopback TCP capture, its event derivation and the conntrack machine."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from streamkit import kernel
from streamkit.datasets import tcp
from streamkit.datasets.tcp import EVENTS, SCHEMA, load_tcp, tcp_events, tcp_machine
from streamkit.kernel.reference import run_batch_reference
from streamkit.machines import Machine

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "streamkit" / "datasets" / "data" / "tcp_loopback.parquet"
YAML = ROOT / "examples" / "machines" / "tcp_conntrack.yaml"
CAPTURE_DIR = ROOT / "datasets" / "tcp"
US = timedelta(microseconds=1)


@pytest.fixture(scope="module")
def packets() -> pl.DataFrame:
    return load_tcp()


def has_flag(name: str) -> pl.Expr:
    return pl.col("flags").str.split("|").list.contains(name)


def replay(frame: pl.DataFrame, machine: Machine) -> tuple[pl.DataFrame, kernel.BatchResult]:
    """Replay ``frame`` through the plain kernel reference as one batch; final state per conn."""
    cm = kernel.compile(machine, tick=US)
    index = kernel.KeyIndex()
    ids = index.lookup_or_insert(frame["conn"])
    state = kernel.KeyState.empty(len(index))
    result = run_batch_reference(
        cm,
        ids,
        cm.encode_events(frame["event"]),
        frame["ts"].dt.epoch("us").to_numpy(),
        state,
        watermark=kernel.NO_WATERMARK,
    )
    final = pl.DataFrame({"conn": index.keys, "state": cm.state_names(state.state)})
    return final, result


def conns_where(frame: pl.DataFrame, predicate: pl.Expr) -> set[str]:
    """Connections for which the per-connection aggregate ``predicate`` holds."""
    agg = frame.group_by("conn").agg(predicate.alias("hit"))
    return set(agg.filter(pl.col("hit"))["conn"])


# ----------------------------------------------------------------- the shipped file


def test_shipped_file_schema_size_and_order(packets: pl.DataFrame) -> None:
    assert DATA.stat().st_size < 2 * 1024 * 1024
    assert packets.schema == SCHEMA
    assert 2_000 <= packets.height <= 20_000
    assert packets["ts"].is_sorted()
    assert packets.null_count().sum_horizontal().item() == 0
    assert set(packets["event"].unique()) == set(EVENTS)
    assert set(packets["direction"].unique()) == {"c2s", "s2c"}
    assert packets["conn"].n_unique() >= 200
    # Payload lengths are real: bare ACKs carry none, data segments some.
    assert (packets.filter(pl.col("event") == "ack")["length"] == 0).all()
    assert (packets.filter(pl.col("event") == "data")["length"] > 0).all()


def test_shipped_file_has_no_pickled_metadata() -> None:
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(DATA).metadata or {}
    assert not any(b"pickle" in key.lower() for key in metadata)
    assert b"pandas" not in metadata


def test_conn_is_canonical_and_direction_follows_the_first_syn(packets: pl.DataFrame) -> None:
    pair = pl.concat_str("src", pl.lit("-"), "dst")
    rev = pl.concat_str("dst", pl.lit("-"), "src")
    # conn names the two endpoints of the segment, the same for both directions.
    assert packets.select(((pl.col("conn") == pair) | (pl.col("conn") == rev)).all()).item()
    per_conn = packets.group_by("conn").agg(
        pl.concat_str("src", "dst").n_unique().alias("ends"),
        pl.col("direction").filter(has_flag("SYN") & ~has_flag("ACK")).unique().alias("syn_dir"),
        pl.col("src").filter(pl.col("direction") == "c2s").n_unique().alias("clients"),
    )
    assert (per_conn["ends"] <= 2).all()
    assert (per_conn["clients"] <= 1).all()
    # Every connection in this capture starts with a SYN, sent by the "client".
    assert per_conn["syn_dir"].to_list() == [["c2s"]] * per_conn.height
    # The lower endpoint comes first, compared as numbers (ports are not zero-padded).
    ports = (
        packets["conn"]
        .str.extract_all(r":(\d+)")
        .list.eval(pl.element().str.slice(1).cast(pl.Int64))
    )
    assert (ports.list.get(0) < ports.list.get(1)).all()


def test_events_of_hand_checked_packets(packets: pl.DataFrame) -> None:
    # Checked against ``tcpdump -nn -r datasets/tcp/capture.pcap``.
    rows = packets.with_row_index()
    refused = rows.filter(pl.col("conn") == "127.0.0.1:39516-127.0.0.1:46389")
    assert refused.select("index", "src", "flags", "direction", "event", "seq", "ack").rows() == [
        (69, "127.0.0.1:39516", "SYN", "c2s", "syn", 4119011106, 0),
        (70, "127.0.0.1:46389", "RST|ACK", "s2c", "rst", 0, 4119011107),
    ]
    # A real simultaneous close: both FINs cross (neither acknowledges the other).
    sim = rows.filter(pl.col("conn") == "127.0.0.1:43709-127.0.0.1:59338")
    assert sim["flags"].to_list() == [
        "SYN", "SYN|ACK", "ACK", "PSH|ACK", "ACK", "PSH|ACK", "ACK", "PSH|ACK", "ACK",
        "FIN|ACK", "FIN|ACK", "ACK", "ACK",
    ]  # fmt: skip
    assert sim["event"].to_list() == [
        "syn", "syn_ack", "ack", "data", "ack", "data", "ack", "data", "ack",
        "fin_s", "fin_c", "ack", "ack",
    ]  # fmt: skip
    assert sim["direction"].to_list()[:4] == ["c2s", "s2c", "c2s", "c2s"]
    assert sim["length"].to_list()[3] == 42
    fin_s, fin_c = sim.row(9, named=True), sim.row(10, named=True)
    assert fin_s["ack"] == fin_c["seq"] and fin_c["ack"] == fin_s["seq"]


def test_events_follow_flags_and_direction(packets: pl.DataFrame) -> None:
    syn, ack, fin, rst = (has_flag(f) for f in ("SYN", "ACK", "FIN", "RST"))
    expected = {
        "rst": rst,
        "syn_ack": ~rst & syn & ack,
        "syn": ~rst & syn & ~ack,
        "fin_c": ~rst & ~syn & fin & (pl.col("direction") == "c2s"),
        "fin_s": ~rst & ~syn & fin & (pl.col("direction") == "s2c"),
        "data": ~rst & ~syn & ~fin & (pl.col("length") > 0),
        "ack": ~rst & ~syn & ~fin & (pl.col("length") == 0),
    }
    for event, predicate in expected.items():
        assert packets.select(((pl.col("event") == event) == predicate).all()).item(), event


# ----------------------------------------------------------------- tcp_events


def raw(rows: list[tuple[str, str, str, int]]) -> pl.DataFrame:
    """Raw segments (src, dst, flags, length), one microsecond apart."""
    return pl.DataFrame(
        {
            "ts": [datetime(2024, 1, 1) + i * US for i in range(len(rows))],
            "src": [r[0] for r in rows],
            "dst": [r[1] for r in rows],
            "flags": [r[2] for r in rows],
            "seq": [1000 + i for i in range(len(rows))],
            "ack": [0] * len(rows),
            "length": [r[3] for r in rows],
        }
    )


def test_tcp_events_rules_and_precedence() -> None:
    c, s = "10.0.0.9:50000", "10.0.0.10:80"
    out = tcp_events(
        raw(
            [
                (c, s, "SYN", 0),
                (s, c, "SYN|ACK", 0),
                (c, s, "ACK", 0),
                (c, s, "PSH|ACK", 12),
                (s, c, "FIN|PSH|ACK", 30),  # data with a FIN counts as the FIN
                (c, s, "FIN|ACK", 0),
                (s, c, "RST|ACK", 0),
                (c, s, "SYN|RST", 0),  # RST wins over everything
            ]
        )
    )
    assert out.schema == SCHEMA
    assert out["event"].to_list() == [
        "syn", "syn_ack", "ack", "data", "fin_s", "fin_c", "rst", "rst",
    ]  # fmt: skip
    # 10.0.0.9 < 10.0.0.10 as addresses, although not as strings.
    assert out["conn"].unique().to_list() == [f"{c}-{s}"]


def test_tcp_events_direction_without_a_syn_and_lazy_input() -> None:
    a, b = "127.0.0.1:9", "127.0.0.1:10"
    frame = raw([(b, a, "ACK", 5), (a, b, "ACK", 0), (b, a, "FIN|ACK", 0)])
    lazy = tcp_events(frame.lazy())
    assert isinstance(lazy, pl.LazyFrame)
    out = lazy.collect()
    assert_frame_equal(out, tcp_events(frame))
    # No SYN captured: the first sender is taken as the client.
    assert out["direction"].to_list() == ["c2s", "s2c", "c2s"]
    assert out["event"].to_list() == ["data", "ack", "fin_c"]
    assert out["conn"][0] == f"{a}-{b}"  # port 9 before port 10


def test_tcp_events_sorts_by_time_keeping_capture_order_for_ties() -> None:
    c, s = "127.0.0.1:40000", "127.0.0.1:80"
    frame = raw([(c, s, "ACK", 1), (c, s, "ACK", 2), (s, c, "SYN|ACK", 0)])
    frame = frame.with_columns(
        pl.Series("ts", [datetime(2024, 1, 1, 0, 0, 1)] * 2 + [datetime(2024, 1, 1)])
    )
    out = tcp_events(frame)
    assert out["length"].to_list() == [0, 1, 2]
    assert out["ts"].is_sorted()


def test_tcp_events_names_a_missing_column() -> None:
    frame = raw([("127.0.0.1:1", "127.0.0.1:2", "SYN", 0)]).drop("flags")
    with pytest.raises(pl.exceptions.ColumnNotFoundError, match="flags"):
        tcp_events(frame)


# ----------------------------------------------------------------- the machine


def test_machine_validates_and_matches_the_yaml_example() -> None:
    m = tcp_machine()
    report = m.validate()
    assert report.ok, report.problems
    assert m.check() is not None
    assert m.name == "tcp_conntrack"
    assert m.initial == "new"
    assert set(m.final) == {"closed", "reset"}
    assert set(m.events) == set(EVENTS)
    assert tuple(m.states) == tcp.STATES
    assert Machine.from_yaml(YAML) == m
    assert Machine.from_dict(m.to_dict()) == m


def test_machine_walks_the_textbook_closes() -> None:
    cm = kernel.compile(tcp_machine(), tick=US)

    def walk(events: list[str]) -> str:
        state = "new"
        for event in events:
            target = cm.target(state, event)
            assert target is not None, (state, event)
            state = target
        return state

    handshake = ["syn", "syn_ack", "ack", "data", "ack"]
    assert walk([*handshake, "fin_c", "ack", "data", "ack", "fin_s", "ack"]) == "time_wait"
    assert walk([*handshake, "fin_s", "ack", "fin_c", "ack"]) == "time_wait"
    assert walk([*handshake, "fin_c", "fin_s", "ack"]) == "time_wait"  # FIN|ACK reply
    assert walk([*handshake, "fin_s", "fin_c", "ack", "ack"]) == "time_wait"  # simultaneous
    assert walk(["syn", "rst"]) == "reset"
    assert walk(["syn", "syn", "syn"]) == "syn_sent"
    assert walk([*handshake, "rst", "rst", "syn"]) == "syn_sent"  # port pair reused
    assert cm.target("last_ack", "data") is None


# ----------------------------------------------------------------- replaying the capture


def test_replay_puts_connections_where_their_packets_say(packets: pl.DataFrame) -> None:
    final, result = replay(packets, tcp_machine())
    state_of = dict(final.iter_rows())
    conns = set(state_of)

    reset = conns_where(packets, has_flag("RST").any())
    both_fins = conns_where(
        packets,
        (has_flag("FIN") & (pl.col("direction") == "c2s")).any()
        & (has_flag("FIN") & (pl.col("direction") == "s2c")).any(),
    )
    answered = conns_where(packets, (has_flag("SYN") & has_flag("ACK")).any())
    unanswered = conns - answered - reset
    client_fin_only = conns_where(
        packets,
        (has_flag("FIN") & (pl.col("direction") == "c2s")).any()
        & ~(has_flag("FIN") & (pl.col("direction") == "s2c")).any(),
    )
    no_fin = conns_where(packets, ~has_flag("FIN").any())

    # Derived from flags alone; each kind of scenario is present in the capture.
    assert len(reset) >= 40 and len(both_fins) >= 150 and len(unanswered) >= 1
    assert {c for c in conns if state_of[c] == "reset"} == reset
    # Both FINs and the last ACK seen, then 4 s of TIME_WAIT elapsed within the capture;
    # unanswered SYNs were forgotten after 10 s.
    assert {c for c in conns if state_of[c] == "closed"} == (both_fins - reset) | unanswered
    # What is left is still open when the capture stops: idle and half-open connections.
    still_open = conns - reset - both_fins - unanswered
    assert {c for c in conns if state_of[c] == "established"} == still_open & no_fin
    assert {c for c in conns if state_of[c] == "close_wait_c"} == still_open & client_fin_only
    assert 1 <= len(still_open) <= 0.05 * len(conns)
    assert final["state"].is_in(["closed", "reset"]).sum() >= 0.95 * final.height

    # Every event fires a declared transition; nothing is late (capture order).
    assert result.n_undefined <= 0.01 * packets.height
    assert result.n_late == 0
    # Only timeouts lead to ``closed``: one per closed connection, at since + after.
    cm = kernel.compile(tcp_machine(), tick=US)
    closed = cm.state_names(result.t_to)
    assert (closed == "closed").all()
    assert result.n_timeouts == len((both_fins - reset) | unanswered)
    from_names = cm.state_names(result.t_from)
    assert (from_names == "syn_sent").sum() == len(unanswered)
    assert (from_names == "time_wait").sum() == len(both_fins - reset)


def test_replay_with_the_numba_kernel_matches_the_reference(packets: pl.DataFrame) -> None:
    cm = kernel.compile(tcp_machine(), tick=US)
    index = kernel.KeyIndex()
    ids = index.lookup_or_insert(packets["conn"])
    times = packets["ts"].dt.epoch("us").to_numpy()
    events = cm.encode_events(packets["event"])
    fast_state, slow_state = kernel.KeyState.empty(len(index)), kernel.KeyState.empty(len(index))
    half = packets.height // 2
    # The numba kernel in two batches, the reference in one: the same outcome.
    first = kernel.run_batch(
        cm, ids[:half], events[:half], times[:half], fast_state, watermark=kernel.NO_WATERMARK
    )
    second = kernel.run_batch(
        cm, ids[half:], events[half:], times[half:], fast_state, watermark=first.watermark
    )
    slow = run_batch_reference(cm, ids, events, times, slow_state, watermark=kernel.NO_WATERMARK)
    assert fast_state.equals(slow_state)
    np.testing.assert_array_equal(np.concatenate([first.to_state, second.to_state]), slow.to_state)
    assert first.n_timeouts + second.n_timeouts == slow.n_timeouts


# ----------------------------------------------------------------- regeneration


def test_convert_reproduces_the_shipped_file_from_the_shipped_capture(tmp_path: Path) -> None:
    pytest.importorskip("dpkt")
    out = tmp_path / "tcp.parquet"
    subprocess.run(
        [
            sys.executable,
            str(CAPTURE_DIR / "convert.py"),
            str(CAPTURE_DIR / "capture.pcap"),
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert_frame_equal(pl.read_parquet(out), load_tcp())


def _load_capture_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tcp_capture", CAPTURE_DIR / "capture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _can_capture() -> str | None:
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed"
    if sys.platform != "linux" or os.geteuid() != 0:
        return "capturing on lo needs root on Linux"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_can_capture() is not None, reason=str(_can_capture()))
def test_capture_and_convert_regenerate_the_dataset(tmp_path: Path) -> None:
    pytest.importorskip("dpkt")
    pcap, out = tmp_path / "small.pcap", tmp_path / "small.parquet"
    capture = [sys.executable, str(CAPTURE_DIR / "capture.py"), "--out", str(pcap)]
    subprocess.run(
        [*capture, "--scale", "0.05", "--tail", "5", "--seed", "1"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [sys.executable, str(CAPTURE_DIR / "convert.py"), str(pcap), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = pl.read_parquet(out)
    assert fresh.schema == SCHEMA
    assert fresh["ts"].is_sorted()
    # Each scenario at least once (scale 0.05), plus the filler of the stuck listener,
    # one idle and one half-open connection.
    scenarios = _load_capture_module().SCENARIOS
    expected = sum(max(1, round(n * 0.05)) for n in scenarios.values()) + 3
    assert fresh["conn"].n_unique() == expected
    final, result = replay(fresh, tcp_machine())
    assert result.n_late == 0
    assert result.n_undefined <= 0.01 * fresh.height
    assert set(final["state"]) >= {"closed", "reset", "established"}
    assert conns_where(fresh, has_flag("RST").any()) == set(
        final.filter(pl.col("state") == "reset")["conn"]
    )
