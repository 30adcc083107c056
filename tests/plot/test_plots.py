"""The plots draw what the analytics compute, label their axes, and sample visibly."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from matplotlib import dates as mdates
from matplotlib.collections import PolyCollection
from matplotlib.patches import Rectangle

import streamkit as sk
from streamkit import analytics
from streamkit.machines import Machine
from streamkit.plot._charts import OPEN_LABEL
from streamkit.plot._graphs import UNDECLARED_GID

T0 = datetime(2026, 1, 1)


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def history(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["key", "time", "event", "from_state", "to_state"], orient="row"
    )


@pytest.fixture
def small() -> pl.DataFrame:
    h = timedelta(hours=1)
    return history(
        [
            ("o1", T0, "pay", "created", "paid"),
            ("o2", T0 + 0.5 * h, "timeout", "created", "cancelled"),
            ("o3", T0 + h, "pay", "created", "paid"),
            ("o1", T0 + 2 * h, "ship", "paid", "shipped"),
            ("o3", T0 + 3 * h, "ship", "paid", "shipped"),
            ("o1", T0 + 5 * h, "deliver", "shipped", "delivered"),
            ("o3", T0 + 6 * h, "oops", "shipped", "created"),
        ]
    )


@pytest.fixture(scope="module")
def big() -> pl.DataFrame:
    """10,000 keys walking created -> paid -> shipped, some cancelled."""
    rng = np.random.default_rng(0)
    n = 10_000
    start = rng.integers(0, 86_400, n)
    pay = start + rng.integers(60, 1_800, n)
    ship = pay + rng.integers(3_600, 30_000, n)
    keys = np.arange(n)
    cancelled = rng.random(n) < 0.1

    def step(mask: np.ndarray, time: np.ndarray, event: str, src: str, dst: str) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "key": keys[mask],
                "time": time[mask],
                "event": event,
                "from_state": src,
                "to_state": dst,
            }
        )

    parts = [
        step(~cancelled, pay, "pay", "created", "paid"),
        step(~cancelled, ship, "ship", "paid", "shipped"),
        step(cancelled, start + 1_800, "timeout", "created", "cancelled"),
    ]
    return pl.concat(parts).sort("time", maintain_order=True)


def machine() -> Machine:
    return Machine(
        "order",
        states=["created", "paid", "shipped", "delivered", "cancelled"],
        initial="created",
        final=["delivered", "cancelled"],
        transitions=[
            ("created", "pay", "paid"),
            ("paid", "ship", "shipped"),
            ("shipped", "deliver", "delivered"),
        ],
        timeouts=[("created", "30m", "cancelled")],
    )


def bars_by_state(ax: Any) -> dict[str, list[Rectangle]]:
    return {cont.get_label(): list(cont) for cont in ax.containers}


def test_timeline_bars_are_the_visits(small: pl.DataFrame) -> None:
    until = T0 + timedelta(hours=8)
    ax = sk.plot.timeline(small, until=until)
    assert ax.get_title() == "timeline (3 keys)"
    assert ax.get_xlabel().startswith("event time")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["o1", "o2", "o3"]
    visits = analytics.visits(small, until=until).filter(pl.col("duration") > timedelta(0))
    bars = bars_by_state(ax)
    assert set(bars) == set(visits["state"])
    for state, rects in bars.items():
        expected = visits.filter(pl.col("state") == state)
        got = sorted((r.get_y() + r.get_height() / 2, r.get_x(), r.get_width()) for r in rects)
        rows = {"o1": 0, "o2": 1, "o3": 2}
        want = sorted(
            (
                rows[k],
                mdates.date2num(enter),
                duration / timedelta(days=1),
            )
            for k, enter, duration in expected.select("key", "enter", "duration").iter_rows()
        )
        assert np.allclose(np.array(got), np.array(want)), state
    # Open visits (current, not final) are hatched; closed ones and final states are not:
    # cancelled and delivered were never left, so they are final.
    assert [bool(r.get_hatch()) for r in bars["cancelled"]] == [False]
    assert [bool(r.get_hatch()) for r in bars["delivered"]] == [False]
    assert [bool(r.get_hatch()) for r in bars["created"]] == [True]  # o3 came back
    assert not any(r.get_hatch() for r in bars["paid"])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[-1] == OPEN_LABEL
    assert "(open)" not in legend


def test_timeline_machine_finals_are_not_open() -> None:
    h = history([("k", 0, "go", "a", "b"), ("j", 0, "go", "a", "c")])
    m = Machine(
        "m",
        states=["a", "b", "c"],
        initial="a",
        final=["b"],
        transitions=[("a", "go", "b"), ("a", "go2", "c")],
    )
    hatched = {
        s: [bool(r.get_hatch()) for r in rs]
        for s, rs in bars_by_state(sk.plot.timeline(h, until=5, machine=m)).items()
    }
    assert hatched == {"b": [False], "c": [True]}
    # Without the machine, both are states no key left: final, so nothing is hatched.
    plain = bars_by_state(sk.plot.timeline(h, until=5))
    assert not any(r.get_hatch() for rs in plain.values() for r in rs)
    assert plt.gca().get_legend() is None or OPEN_LABEL not in [
        t.get_text() for t in plt.gca().get_legend().get_texts()
    ]


def test_timeline_integer_times_and_chosen_keys() -> None:
    h = history([(k, k, "go", "a", "b") for k in range(5)] + [(2, 9, "stop", "b", "c")])
    ax = sk.plot.timeline(h, keys=[2, 0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "0"]
    rects = bars_by_state(ax)["b"]
    assert sorted((r.get_x(), r.get_width()) for r in rects) == [(0.0, 9.0), (2.0, 7.0)]
    assert ax.get_xlabel() == "event time (integer time units)"
    with pytest.raises(KeyError, match="keys not in the history"):
        sk.plot.timeline(h, keys=[99])


def test_timeline_samples_10000_keys_and_says_so(big: pl.DataFrame) -> None:
    ax = sk.plot.timeline(big)
    assert ax.get_title() == "timeline (40 of 10,000 keys, sampled)"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 40
    assert labels == [str(k) for k in sorted(int(x) for x in labels)]  # kept in key order
    # Deterministic: the same sample every time; another seed gives another one.
    plt.close("all")
    again = [t.get_text() for t in sk.plot.timeline(big).get_yticklabels()]
    assert again == labels
    other = [t.get_text() for t in sk.plot.timeline(big, seed=1).get_yticklabels()]
    assert other != labels


def test_occupancy_areas_equal_analytics(small: pl.DataFrame) -> None:
    ax = sk.plot.occupancy(small, "1h")
    occ = analytics.occupancy(small, "1h").pivot("state", index="time", values="keys")
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    drawn = [p.get_label() for p in polys]
    # States with keys at some bucket start, stacked in state order.
    assert drawn == ["created", "paid", "cancelled", "shipped", "delivered"]
    xs = mdates.date2num(occ["time"].to_numpy())
    cumulative = np.zeros(occ.height)
    for poly in polys:
        cumulative = cumulative + occ[poly.get_label()].to_numpy()
        vertices = poly.get_paths()[0].vertices
        # Steps: bucket i's level runs from x[i] to x[i+1] (the last one has no width).
        for i, top in enumerate(cumulative[:-1]):
            for x in xs[i : i + 2]:
                at_x = vertices[np.isclose(vertices[:, 0], x)][:, 1]
                assert np.isclose(at_x, top).any(), (poly.get_label(), i)
    assert ax.get_ylabel() == "keys in state (count)"
    assert "3 keys, aggregated" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    peak = int(occ["created"].max())  # type: ignore[arg-type]
    assert legend[-1] == f"created (peak {peak})"  # top of the stack first, with its peak


def test_occupancy_lines_show_small_states() -> None:
    rows = [(str(k), 0, "go", "a", "big") for k in range(1000)] + [("x", 0, "go", "a", "tiny")]
    ax = sk.plot.occupancy(history(rows), every=1, stacked=False)
    assert ax.get_yscale() == "log"
    peaks = {line.get_label(): max(line.get_ydata()) for line in ax.lines}
    assert peaks == {"big (peak 1,000)": 1000, "tiny (peak 1)": 1}
    assert ax.get_ylabel() == "keys in state (count, log scale)"


def test_occupancy_at_10000_keys_is_aggregated(big: pl.DataFrame) -> None:
    ax = sk.plot.occupancy(big, every=3_600)
    assert "10,000 keys, aggregated" in ax.get_title()
    assert {c.get_label() for c in ax.collections} == {"paid", "shipped", "cancelled"}


def test_transition_matrix_counts_and_undeclared(small: pl.DataFrame) -> None:
    ax = sk.plot.transition_matrix(small, machine=machine())
    states = [t.get_text() for t in ax.get_yticklabels()]
    assert states[:5] == ["created", "paid", "shipped", "delivered", "cancelled"]
    cells = {
        (states[round(t.get_position()[1])], states[round(t.get_position()[0])]): t.get_text()
        for t in ax.texts
    }
    assert cells == {
        ("created", "paid"): "2",
        ("created", "cancelled"): "1",
        ("paid", "shipped"): "2",
        ("shipped", "delivered"): "1",
        ("shipped", "created"): "1",
    }
    image = ax.get_images()[0].get_array()
    assert image[states.index("created"), states.index("paid")] == 2
    marked = [p for p in ax.patches if p.get_gid() == UNDECLARED_GID]
    assert len(marked) == 1
    (x, y) = marked[0].get_xy()
    assert (states[round(y + 0.5)], states[round(x + 0.5)]) == ("shipped", "created")
    assert ax.get_xlabel() == "to state"
    assert ax.get_ylabel() == "from state"


def test_transition_matrix_normalized_rows(small: pl.DataFrame) -> None:
    ax = sk.plot.transition_matrix(small, normalize=True)
    states = [t.get_text() for t in ax.get_yticklabels()]
    row = {
        states[round(t.get_position()[0])]: t.get_text()
        for t in ax.texts
        if states[round(t.get_position()[1])] == "created"
    }
    assert row == {"paid": "0.67", "cancelled": "0.33"}
    assert "row probabilities" in ax.get_title()
    assert not [p for p in ax.patches if p.get_gid() == UNDECLARED_GID]


def test_transition_matrix_at_10000_keys(big: pl.DataFrame) -> None:
    ax = sk.plot.transition_matrix(big)
    assert "of 10,000 keys" in ax.get_title()
    total = sum(int(t.get_text().replace(",", "")) for t in ax.texts)
    assert total == big.height


def test_dwell_times_one_box_per_state(small: pl.DataFrame) -> None:
    ax = sk.plot.dwell_times(small)
    states = [t.get_text() for t in ax.get_xticklabels()]
    # Closed, non-zero visits only: created's visits are zero-length or still open.
    assert states == ["paid", "shipped"]
    assert ax.get_yscale() == "log"
    assert ax.get_ylabel() == "time in state per visit (hours, log scale)"
    boxes = [p for p in ax.patches if p.get_gid() in states]
    assert [b.get_gid() for b in boxes] == states
    medians = {
        line.get_gid().removeprefix("median:"): line.get_ydata()[0]
        for line in ax.lines
        if (line.get_gid() or "").startswith("median:")
    }
    expected = (
        analytics.visits(small)
        .filter(pl.col("duration") > timedelta(0))
        .group_by("state")
        .agg(pl.col("duration").median())
    )
    want = {s: d / timedelta(hours=1) for s, d in expected.iter_rows()}
    assert medians == pytest.approx({s: want[s] for s in states})
    assert "3 visits shorter than the time resolution (same-timestamp" in ax.get_title()


def test_dwell_times_linear_integer(big: pl.DataFrame) -> None:
    ax = sk.plot.dwell_times(big, log=False)
    assert ax.get_yscale() == "linear"
    assert ax.get_ylabel() == "time in state per visit (time units)"
    assert "of 10,000 keys" in ax.get_title()


def test_process_map_labels_observed_counts(small: pl.DataFrame) -> None:
    ax = sk.plot.process_map(small, machine())
    texts = [t.get_text() for t in ax.texts]
    assert "pay (2)\nmed 0 s" in texts  # keys enter created at their first event
    assert "ship (2)\nmed 2 h" in texts
    assert "deliver (1)\nmed 3 h" in texts
    assert "oops (1)\nmed 3 h" in texts  # undeclared: drawn as an extra edge
    # The timeout and the events of created -> cancelled share one edge and label.
    assert "timeout 30m (1)\nmed 0 s" in texts
    assert "1 undeclared edge dotted" in ax.get_title()
    assert any(t.startswith("created\n") and t.endswith("now") for t in texts)


def test_process_map_infers_a_machine(big: pl.DataFrame) -> None:
    ax = sk.plot.process_map(big)
    texts = [t.get_text() for t in ax.texts]
    paid = big.filter(pl.col("event") == "pay").height
    assert any(t.startswith(f"pay ({paid:,})\nmed ") for t in texts)
    assert "machine inferred from the data" in ax.get_title()
    assert "10,000 keys" in ax.get_title()


def test_plots_draw_on_a_given_axes(small: pl.DataFrame) -> None:
    _fig, axes = plt.subplots(2, 3)
    flat = axes.ravel()
    assert sk.plot.timeline(small, ax=flat[0]) is flat[0]
    assert sk.plot.occupancy(small, ax=flat[1]) is flat[1]
    assert sk.plot.transition_matrix(small, ax=flat[2]) is flat[2]
    assert sk.plot.dwell_times(small, ax=flat[3]) is flat[3]
    assert sk.plot.process_map(small.lazy(), machine(), ax=flat[4]) is flat[4]
    assert len(plt.get_fignums()) == 1


def test_lazy_history_is_accepted(small: pl.DataFrame) -> None:
    ax = sk.plot.transition_matrix(small.lazy())
    assert len(ax.texts) == 5


def test_bad_history_raises_schema_error() -> None:
    with pytest.raises(sk.SchemaError, match="missing"):
        sk.plot.timeline(pl.DataFrame({"key": [1]}))


def test_exported_names() -> None:
    assert sk.plot.__all__ == [
        "dwell_times",
        "occupancy",
        "process_map",
        "timeline",
        "transition_matrix",
    ]
