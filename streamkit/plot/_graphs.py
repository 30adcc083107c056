"""Structure plots of a transition history: the transition matrix and the process map."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from streamkit.plot import _common as c

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from streamkit.machines import Machine

#: ``gid`` of the cell outlines marking transitions the machine does not declare.
UNDECLARED_GID = "undeclared"


def transition_matrix(
    history: pl.DataFrame | pl.LazyFrame,
    *,
    normalize: bool = False,
    machine: Machine | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Heatmap of how often keys went from each state (rows) to each state (columns).

    Every non-empty cell is annotated with its count (or, with ``normalize``, the
    row probability: the share of the transitions out of the row's state). With a
    ``machine``, its states come first in declaration order, and cells of observed
    transitions the machine does not declare (neither a transition nor a timeout)
    are outlined in red and hatched. Counts are aggregated over all keys, so the
    plot stays readable for any number of keys.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).
    normalize
        Show row probabilities instead of counts.
    machine
        The machine the history should follow; marks undeclared transitions.
    ax
        Axes to draw on; a new figure by default.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import polars as pl
    >>> import streamkit as sk
    >>> history = pl.DataFrame({
    ...     "key": [1, 2, 2], "time": [0, 0, 5], "event": ["pay", "pay", "ship"],
    ...     "from_state": ["created", "created", "paid"],
    ...     "to_state": ["paid", "paid", "shipped"],
    ... })
    >>> ax = sk.plot.transition_matrix(history)
    >>> sorted(t.get_text() for t in ax.texts)
    ['1', '2']
    >>> plt.close("all")
    """
    h = c.collect(history, "transition_matrix")
    states = c.state_order(h, machine)
    index = {s: i for i, s in enumerate(states)}
    pairs = h.group_by("from_state", "to_state").agg(pl.len().alias("count"))
    counts = np.zeros((len(states), len(states)), dtype=np.int64)
    for src, dst, n in pairs.iter_rows():
        counts[index[src], index[dst]] = n
    values = counts.astype(np.float64)
    if normalize:
        totals = values.sum(axis=1, keepdims=True)
        values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)

    ax = c.axes(ax, figsize=(1.0 + 0.75 * max(len(states), 4), 0.5 + 0.65 * max(len(states), 4)))
    image = ax.imshow(
        np.ma.masked_equal(values, 0.0), cmap="Blues", vmin=0.0, aspect="equal", origin="upper"
    )
    colorbar = ax.figure.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("row probability" if normalize else "transitions (count)")
    peak = float(values.max()) if values.size else 0.0
    declared = c.declared_pairs(machine) if machine is not None else None
    from matplotlib.patches import Rectangle

    marked = 0
    for i, src in enumerate(states):
        for j, dst in enumerate(states):
            if counts[i, j] == 0:
                continue
            text = f"{values[i, j]:.2f}" if normalize else f"{counts[i, j]:,}"
            dark = peak > 0 and values[i, j] > 0.6 * peak
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
            if declared is not None and (src, dst) not in declared:
                marked += 1
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, i - 0.5),
                        1.0,
                        1.0,
                        fill=False,
                        edgecolor="red",
                        hatch="//",
                        linewidth=2.0,
                        gid=UNDECLARED_GID,
                        label="not declared in machine" if marked == 1 else None,
                    )
                )
    ax.set_xticks(range(len(states)))
    ax.set_xticklabels(states, rotation=40, ha="right")
    ax.set_yticks(range(len(states)))
    ax.set_yticklabels(states)
    ax.set_xlabel("to state")
    ax.set_ylabel("from state")
    what = "row probabilities" if normalize else "counts"
    ax.set_title(
        f"transition matrix, {what} ({c.counted(h.height, 'transition')} of {c.keys_of(h)})"
    )
    if marked:
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.18), fontsize=8, frameon=False)
    return ax


def _observed_machine(h: pl.DataFrame) -> Machine:
    """A minimal machine of the states and transitions seen in the history."""
    from streamkit.machines import Machine

    states = c.state_order(h)
    firsts = h.group_by("key").agg(pl.col("from_state").first())["from_state"]
    initial = str(firsts.mode().sort()[0]) if firsts.len() else states[0]
    triples = (
        h.group_by("from_state", "event", "to_state")
        .agg(pl.len().alias("n"))
        .sort(["n", "from_state", "event", "to_state"], descending=[True, False, False, False])
    )
    transitions: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for src, event, dst, _ in triples.iter_rows():
        if (src, event) in seen:  # one target per (state, event): the most frequent
            continue
        seen.add((src, event))
        transitions.append((src, event, dst))
    leaving = {src for src, _, dst in transitions if src != dst}
    final = [s for s in states if s not in leaving]
    return Machine("observed", states=states, initial=initial, final=final, transitions=transitions)


def _lines(parts: list[str], width: int = 26) -> str:
    """``parts`` joined by ", ", broken into lines of about ``width`` characters."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            if lines:
                lines[-1] += ","
            lines.append(part)
    return "\n".join(lines)


def process_map(
    history: pl.DataFrame | pl.LazyFrame,
    machine: Machine | None = None,
    *,
    ax: Axes | None = None,
) -> Axes:
    """The machine's state diagram annotated with what the history shows.

    States are laid out in layers by their distance from the initial state (left
    to right). Each edge ``from → to`` seen in the history is labelled with its
    events and counts and, on a second line, the median time keys spent in
    ``from`` before taking it (e.g. ``"pay (812)\\nmed 4.1 min"``), and drawn wider
    the more often it was taken. Events and a timeout between the same two states
    share one edge and one label (``"cancel (49), timeout 30m (142)"``).
    Transitions seen in the data but absent from the machine are drawn as extra
    dotted orange edges. Under each state's name: the keys in it now (at the end
    of the history). Without a machine, a minimal one is built from the observed
    states and transitions (initial: the most common first state; final: states
    no key ever left). Aggregated over all keys, so readable for any number.
    On a new figure (no ``ax``) the figure is sized to the diagram so every text
    is at least 8 points; on a given small Axes the text shrinks with the drawing.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).
    machine
        The machine to draw; by default one inferred from the history.
    ax
        Axes to draw on; a new figure by default.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import polars as pl
    >>> import streamkit as sk
    >>> history = pl.DataFrame({
    ...     "key": [1, 2, 2], "time": [0, 0, 5], "event": ["pay", "pay", "ship"],
    ...     "from_state": ["created", "created", "paid"],
    ...     "to_state": ["paid", "paid", "shipped"],
    ... })
    >>> ax = sk.plot.process_map(history)
    >>> sorted(t.get_text() for t in ax.texts if "med" in t.get_text())
    ['pay (2)\\nmed 0', 'ship (1)\\nmed 5']
    >>> plt.close("all")
    """
    from streamkit.machines._draw import draw_machine, new_axes
    from streamkit.machines._duration import format_duration

    h = c.collect(history, "process_map")
    m = machine if machine is not None else _observed_machine(h)
    rows = (
        h.with_row_index("_row")
        .sort("time", "_row")
        .with_columns(
            wait=pl.col("time") - pl.col("time").shift(1).over("key").fill_null(pl.col("time"))
        )
    )
    per_event = rows.group_by("from_state", "to_state", "event").agg(pl.len().alias("n"))
    per_pair = rows.group_by("from_state", "to_state").agg(
        pl.len().alias("n"), pl.col("wait").median().alias("median")
    )
    events: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for src, dst, event, n in per_event.sort(["n", "event"], descending=[True, False]).iter_rows():
        events.setdefault((src, dst), []).append((event, n))
    declared = c.declared_pairs(m)
    peak = int(per_pair["n"].max() or 1) if per_pair.height else 1  # type: ignore[arg-type]
    labels: dict[tuple[str, str], str] = {}
    widths: dict[tuple[str, str], float] = {}
    extra: dict[tuple[str, str], str] = {}
    waits = {(t.state, t.target): format_duration(t.after) for t in m.timeouts}
    for src, dst, n, median in per_pair.iter_rows():
        parts = [
            f"timeout {waits[(src, dst)]} ({k:,})"
            if e == "timeout" and (src, dst) in waits
            else f"{e} ({k:,})"
            for e, k in events[(src, dst)]
        ]
        label = f"{_lines(parts)}\nmed {c.format_duration(median)}"
        if (src, dst) in declared:
            labels[(src, dst)] = label
            widths[(src, dst)] = 0.8 + 3.2 * math.log1p(n) / math.log1p(peak)
        else:
            extra[(src, dst)] = label
    for pair in declared - set(labels):
        widths[pair] = 0.6
    now = (
        rows.group_by("key")
        .agg(pl.col("to_state").last())
        .group_by("to_state")
        .agg(pl.len().alias("n"))
    )
    state_labels = {s: f"{n:,} now" for s, n in now.iter_rows()}
    options = {
        "edge_labels": labels,
        "edge_widths": widths,
        "extra_edges": extra,
        "state_labels": state_labels,
        "merge_parallel": True,
    }
    if ax is None:
        ax = new_axes(m, **options)
    draw_machine(m, ax, **options)  # type: ignore[arg-type]
    observed = "" if machine is not None else ", machine inferred from the data"
    unseen = f", {c.counted(len(extra), 'undeclared edge')} dotted" if extra else ""
    ax.set_title(
        f"process map: {m.name} ({c.counted(h.height, 'transition')} of "
        f"{c.keys_of(h)}{observed}{unseen})"
    )
    return ax
