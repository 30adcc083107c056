"""State diagrams: layout, drawing, highlight, notebook display; all headless."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import itertools

import matplotlib.pyplot as plt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

from streamkit.machines import Machine
from streamkit.machines._draw import draw_machine, figure_size, layout

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "machines"


@pytest.fixture(autouse=True)
def _no_leaked_figures() -> object:
    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a test left a pyplot figure open"


def order() -> Machine:
    return Machine.from_yaml(EXAMPLES / "order.yaml")


def texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def circles_at(ax: Axes, xy: tuple[float, float]) -> list[Circle]:
    return [
        p
        for p in ax.patches
        if isinstance(p, Circle)
        and abs(p.center[0] - xy[0]) < 1e-9
        and abs(p.center[1] - xy[1]) < 1e-9
    ]


def test_plot_returns_axes_with_one_text_per_state_and_edge_label() -> None:
    m = order()
    ax = m.plot()
    try:
        assert isinstance(ax, Axes)
        assert ax.get_title() == "order"
        labels = texts(ax)
        # 7 states, 7 ordered pairs with transitions, 1 timeout edge.
        assert len(labels) == 7 + 7 + 1
        assert set(m.states) <= set(labels)
        assert {"create", "pay", "ship", "deliver", "cancel", "timeout 30m"} <= set(labels)
        arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
        assert len(arrows) == 7 + 1 + 1  # edges, timeout, initial marker
        dashed = [a for a in arrows if a.get_linestyle() == "--"]
        assert len(dashed) == 1
    finally:
        plt.close(ax.figure)


def test_events_of_one_pair_share_an_edge() -> None:
    m = Machine(
        "m",
        states=["a", "b"],
        initial="a",
        final=["b"],
        transitions=[("a", "x", "b"), ("a", "y", "b"), ("a", "x", "b"), ("b", "z", "b")],
    )
    ax = draw_machine(m, Figure().add_subplot())
    assert sorted(texts(ax)) == ["a", "b", "x, y", "z"]


def test_final_states_are_double_circles() -> None:
    m = order()
    pos = layout(m)
    ax = draw_machine(m, Figure().add_subplot())
    for state in m.states:
        expected = 2 if state in m.final else 1
        assert len(circles_at(ax, pos[state])) == expected, state


def test_initial_marker_is_a_dot_left_of_the_initial_state() -> None:
    m = order()
    pos = layout(m)
    ax = draw_machine(m, Figure().add_subplot())
    x, y = pos[m.initial]
    dots = [p for p in ax.patches if isinstance(p, Circle) and p.radius < 0.2]
    assert len(dots) == 1 and dots[0].center[0] < x and dots[0].center[1] == y


def test_problem_states_are_highlighted_in_red() -> None:
    m = Machine(
        "bad",
        states=["a", "b", "c"],
        initial="a",
        final=["b"],
        transitions=[("a", "x", "b"), ("c", "y", "ghost")],
    )
    ax = m.plot()
    try:
        pos = layout(m)
        red = matplotlib.colors.to_rgba("#c62828")
        assert circles_at(ax, pos["c"])[0].get_edgecolor() == red
        assert circles_at(ax, pos["a"])[0].get_edgecolor() != red
        # The undeclared target is drawn too, dashed and red.
        ghost = circles_at(ax, pos["ghost"])[0]
        assert ghost.get_edgecolor() == red and ghost.get_linestyle() == "--"
        assert "ghost" in texts(ax)
    finally:
        plt.close(ax.figure)
    fig, ax2 = plt.subplots()
    try:
        assert m.plot(ax2, highlight=["a"]) is ax2
        assert circles_at(ax2, pos["a"])[0].get_edgecolor() == red
        assert circles_at(ax2, pos["c"])[0].get_edgecolor() != red
    finally:
        plt.close(fig)


def test_layout_is_layered_from_the_initial_state() -> None:
    m = Machine.from_yaml(EXAMPLES / "tcp.yaml")
    pos = layout(m)
    assert set(pos) == set(m.states)
    x = {s: p[0] for s, p in pos.items()}
    assert x["CLOSED"] == 0
    assert x["LISTEN"] == x["SYN-SENT"] > x["CLOSED"]
    assert x["SYN-RECEIVED"] == x["ESTABLISHED"] > x["LISTEN"]
    assert len(set(pos.values())) == len(pos)  # no two states on one spot


def test_barycentre_ordering_uncrosses_parallel_chains() -> None:
    # Two chains whose second layer is discovered in crossed order.
    m = Machine(
        "m",
        states=["s", "a", "b", "a2", "b2"],
        initial="s",
        final=["a2", "b2"],
        transitions=[("s", "x", "a"), ("s", "y", "b"), ("b", "x", "b2"), ("a", "x", "a2")],
    )
    pos = layout(m)
    assert (pos["a"][1] > pos["b"][1]) == (pos["a2"][1] > pos["b2"][1])


def test_unreachable_states_get_their_own_layers() -> None:
    m = Machine(
        "m", states=["a", "b", "z"], initial="a", final=["b"], transitions=[("a", "x", "b")]
    )
    pos = layout(m)
    assert pos["z"][0] > pos["b"][0] > pos["a"][0]


def test_draw_machine_options_for_process_maps() -> None:
    m = order()
    ax = draw_machine(
        m,
        Figure().add_subplot(),
        edge_labels={("created", "paid"): "pay\n120", ("created", "cancelled"): "cancel\n7"},
        edge_widths={("created", "paid"): 4.0},
        extra_edges={("shipped", "cancelled"): "cancel\n2", ("paid", "lost"): "lose\n1"},
        state_labels={"paid": "n=120"},
        highlight=["shipped"],
    )
    labels = texts(ax)
    assert "pay\n120" in labels and "pay" not in labels
    assert "cancel\n7" in labels and "timeout 30m" in labels
    assert "paid\nn=120" in labels
    assert {"cancel\n2", "lose\n1", "lost"} <= set(labels)
    # 7 states + 1 state only seen in data; 7 pairs + timeout + 2 extra edges.
    assert len(labels) == 8 + 7 + 1 + 2
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert max(a.get_linewidth() for a in arrows) == 4.0
    assert sum(1 for a in arrows if a.get_linestyle() == ":") == 2


def test_self_loops_and_timeouts_to_self() -> None:
    m = Machine(
        "m",
        states=["a", "b"],
        initial="a",
        final=["b"],
        transitions=[("a", "tick", "a"), ("a", "go", "b")],
        timeouts=[("a", "1h30m", "a")],
    )
    ax = draw_machine(m, Figure().add_subplot())
    assert sorted(texts(ax)) == ["a", "b", "go", "tick", "timeout 1h30m"]


def test_long_names_are_wrapped() -> None:
    m = Machine.from_yaml(EXAMPLES / "http2.yaml")
    ax = draw_machine(m, Figure().add_subplot())
    assert "half-closed\n(local)" in texts(ax)


def test_repr_html_inlines_svg_and_summary_without_leaking_figures() -> None:
    m = Machine("bad", states=["a", "b"], initial="a", final=["b"], transitions=[("a", "x", "a")])
    html = m._repr_html_()
    assert html.count("<svg") == 1 and "</svg>" in html
    assert "<?xml" not in html
    assert "invalid" in html and "unreachable" in html and "livelock" in html
    assert plt.get_fignums() == []


def test_repr_html_leaves_out_huge_diagrams() -> None:
    states = [f"s{i}" for i in range(400)]
    m = Machine(
        "big",
        states=states,
        initial="s0",
        final=["s399"],
        transitions=[(a, "n", b) for a, b in itertools.pairwise(states)],
    )
    html = m._repr_html_()
    assert "<svg" not in html and "diagram left out: 400 states" in html


def test_figure_size_grows_with_the_machine() -> None:
    small = figure_size(order())
    big = figure_size(Machine.from_yaml(EXAMPLES / "tcp.yaml"))
    assert big[0] > small[0]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcde"), st.sampled_from(["x", "y"]), st.sampled_from("abcdef")),
        max_size=10,
    ),
    st.lists(
        st.tuples(st.sampled_from("abcde"), st.just("1m"), st.sampled_from("abcde")), max_size=2
    ),
)
def test_any_machine_draws(
    transitions: list[tuple[str, str, str]], timeouts: list[tuple[str, str, str]]
) -> None:
    m = Machine(
        "r",
        states=list("abcde"),
        initial="a",
        final=["e"],
        transitions=transitions,
        timeouts=timeouts,
    )
    fig = Figure()
    ax = draw_machine(m, fig.add_subplot())
    pairs = {(t.source, t.target) for t in m.transitions}
    waits = {(t.state, t.target) for t in m.timeouts}
    nodes = set(layout(m))
    assert len(ax.texts) == len(nodes) + len(pairs) + len(waits)


def test_final_hubs_go_in_a_row_below_the_layers() -> None:
    # "reset" is final and reached from four states: it goes below, not in layer 1,
    # so its edges do not cross the chain; "done" (one predecessor) stays in a layer.
    m = Machine(
        "m",
        states=["a", "b", "c", "d", "done", "reset"],
        initial="a",
        final=["done", "reset"],
        transitions=[("a", "x", "b"), ("b", "x", "c"), ("c", "x", "d"), ("d", "x", "done")]
        + [(s, "rst", "reset") for s in ["a", "b", "c", "d"]]
        + [("reset", "again", "a")],
    )
    pos = layout(m)
    chain = ["a", "b", "c", "d", "done"]
    assert [pos[s][0] for s in chain] == sorted(pos[s][0] for s in chain)
    assert len({pos[s][1] for s in chain}) == 1  # one straight row: nothing pulls it aside
    assert pos["reset"][1] < min(pos[s][1] for s in chain)
    assert min(pos[s][0] for s in chain) < pos["reset"][0] < max(pos[s][0] for s in chain)
    assert len(set(pos.values())) == len(pos)


def test_tcp_machine_plot_is_legible() -> None:
    # The 12-state conntrack machine at its default size: 8-point text, no label on
    # another label or on a state name.
    from streamkit.datasets import tcp_machine

    m = tcp_machine()
    ax = m.plot()
    try:
        assert min(t.get_fontsize() for t in ax.texts) >= 8
        renderer = ax.figure.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        overlaps = [
            (a.get_text(), b.get_text())
            for (a, ea), (b, eb) in itertools.combinations(zip(ax.texts, boxes, strict=True), 2)
            if ea.overlaps(eb)
        ]
        assert overlaps == []
    finally:
        plt.close(ax.figure)
