"""Every plot kind against a committed baseline image, legible text, no overlapping labels.

The baselines live in ``tests/plot/baseline/``; see ``tests/plot/README.md`` for how to
regenerate them (``STREAMKIT_UPDATE_BASELINES=1``) after an intended change of a plot.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import polars as pl
import pytest
from matplotlib.axes import Axes
from matplotlib.testing.compare import compare_images
from matplotlib.text import Text

import streamkit as sk
from streamkit.datasets import order_machine, tcp_machine

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "baseline"
DATA = HERE / "data"
UPDATE = os.environ.get("STREAMKIT_UPDATE_BASELINES") == "1"
DPI = 60
#: RMS difference (0-255 grey levels) tolerated: font hinting differs across FreeType builds.
TOLERANCE = 3.0
MIN_POINTS = 8.0


@pytest.fixture(autouse=True)
def _fixed_style() -> Iterator[None]:
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams["font.family"] = "DejaVu Sans"  # ships with matplotlib
        matplotlib.rcParams["hatch.linewidth"] = 1.0
        matplotlib.rcParams["svg.hashsalt"] = "streamkit"
        yield
    plt.close("all")


def orders() -> pl.DataFrame:
    return pl.read_parquet(DATA / "order_history.parquet")


def tcp() -> pl.DataFrame:
    return pl.read_parquet(DATA / "tcp_history.parquet")


def timeline_keys() -> list[str]:
    """Eight keys still open at the end of the data (hatched) and eight that finished."""
    last = orders().group_by("key").agg(pl.col("to_state").last()).sort("key")
    done = pl.col("to_state").is_in(order_machine().final)
    return sorted(
        last.filter(~done)["key"].head(8).to_list() + last.filter(done)["key"].head(8).to_list()
    )


PLOTS: dict[str, Callable[[], Axes]] = {
    "timeline": lambda: sk.plot.timeline(orders(), keys=timeline_keys(), machine=order_machine()),
    "occupancy": lambda: sk.plot.occupancy(orders(), every="1h"),
    "occupancy_lines": lambda: sk.plot.occupancy(orders(), every="1h", stacked=False),
    "transition_matrix": lambda: sk.plot.transition_matrix(orders(), machine=order_machine()),
    "dwell_times": lambda: sk.plot.dwell_times(orders()),
    "process_map": lambda: sk.plot.process_map(orders(), machine=order_machine()),
    "process_map_tcp": lambda: sk.plot.process_map(tcp(), machine=tcp_machine()),
}


def texts(ax: Axes) -> list[Text]:
    figure = ax.get_figure(root=True)
    assert figure is not None
    return [t for t in figure.findobj(Text) if isinstance(t, Text) and t.get_text().strip()]


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_plot_matches_baseline(name: str, tmp_path: Path) -> None:
    ax = PLOTS[name]()
    figure = ax.get_figure(root=True)
    assert figure is not None
    actual = tmp_path / f"{name}.png"
    figure.savefig(actual, dpi=DPI, metadata={"Software": None})
    expected = BASELINE / f"{name}.png"
    if UPDATE:
        BASELINE.mkdir(exist_ok=True)
        shutil.copyfile(actual, expected)
    assert expected.exists(), (
        f"no baseline image {expected}; create it with "
        f"STREAMKIT_UPDATE_BASELINES=1 pytest tests/plot/test_images.py (see tests/plot/README.md)"
    )
    diff = compare_images(str(expected), str(actual), tol=TOLERANCE)
    assert diff is None, (
        f"{name} no longer looks like its baseline: {diff}; look at the -failed-diff image; "
        "if the change is intended, regenerate the baselines (tests/plot/README.md)"
    )


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_every_text_is_at_least_8_points(name: str) -> None:
    ax = PLOTS[name]()
    sizes = {t.get_text(): float(t.get_fontsize()) for t in texts(ax)}
    small = {text: size for text, size in sizes.items() if size < MIN_POINTS}
    assert small == {}


def edge_labels(ax: Axes, states: list[str]) -> list[Text]:
    """The texts of a process map that are not state names (edge labels)."""
    return [t for t in ax.texts if t.get_text().split("\n")[0] not in states]


@pytest.mark.parametrize("name", ["process_map", "process_map_tcp"])
def test_process_map_labels_do_not_overlap(name: str) -> None:
    ax = PLOTS[name]()
    figure = ax.get_figure(root=True)
    assert figure is not None
    renderer: Any = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    machine = tcp_machine() if name.endswith("tcp") else order_machine()
    states = list(machine.states)
    labels = edge_labels(ax, states)
    assert len(labels) >= 5
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
    overlapping = [
        (a, b) for (a, ea), (b, eb) in itertools.combinations(boxes, 2) if ea.overlaps(eb)
    ]
    assert overlapping == []
    names = [t for t in ax.texts if t not in labels]
    covered = [
        (a, n.get_text())
        for a, ea in boxes
        for n in names
        if ea.overlaps(n.get_window_extent(renderer))
    ]
    assert covered == []


def test_process_map_merges_the_events_and_the_timeout_of_a_pair() -> None:
    h = orders()
    ax = sk.plot.process_map(h, machine=order_machine())
    to_cancelled = h.filter(
        (pl.col("from_state") == "created") & (pl.col("to_state") == "cancelled")
    )
    timeouts = to_cancelled.filter(pl.col("event") == "timeout").height
    cancels = to_cancelled.height - timeouts
    both = [t.get_text() for t in ax.texts if "timeout 30m" in t.get_text()]
    assert len(both) == 1  # one edge, one label
    assert f"timeout 30m ({timeouts:,})" in both[0]
    assert f"cancel ({cancels:,})" in both[0]
    assert "e-0" not in " ".join(t.get_text() for t in ax.texts)  # no 1.2e-05s


def test_process_map_on_the_default_figure_is_not_mostly_empty() -> None:
    ax = sk.plot.process_map(orders(), machine=order_machine())
    figure = ax.get_figure(root=True)
    assert figure is not None
    figure.canvas.draw()
    drawn = ax.get_tightbbox()
    assert drawn is not None
    frame = figure.bbox
    # The diagram fills most of the figure: not 1800x500 px of mostly white space.
    assert drawn.width * drawn.height > 0.6 * frame.width * frame.height


def test_process_map_on_a_bare_figure_separates_labels_too() -> None:
    # The demo draws on matplotlib.figure.Figure (no pyplot, no canvas renderer).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15.0, 8.3))
    ax = sk.plot.process_map(tcp(), machine=tcp_machine(), ax=figure.add_subplot())
    renderer = FigureCanvasAgg(figure).get_renderer()  # type: ignore[no-untyped-call]
    boxes = [t.get_window_extent(renderer) for t in edge_labels(ax, list(tcp_machine().states))]
    assert [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)] == []


def test_process_map_on_the_demo_figure_keeps_8_points() -> None:
    # `streamkit demo` draws the order map on an 18 x 5 inch Figure, a bit short of
    # room for it once the title and margins are taken: the text stays at 8 points.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(18.0, 5.0))
    ax = sk.plot.process_map(orders(), machine=order_machine(), ax=figure.add_subplot())
    assert min(float(t.get_fontsize()) for t in ax.texts) >= MIN_POINTS
