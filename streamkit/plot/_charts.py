"""Time-based plots of a transition history: timeline, occupancy, dwell times."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from streamkit import analytics
from streamkit.plot import _common as c

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from streamkit.machines import Machine

#: Legend text of the hatched bars of :func:`timeline`.
OPEN_LABEL = "hatched: still open at\nthe end of the data"


def timeline(
    history: pl.DataFrame | pl.LazyFrame,
    keys: Sequence[Any] | None = None,
    *,
    max_keys: int = 40,
    until: datetime | int | None = None,
    seed: int = c.SAMPLE_SEED,
    machine: Machine | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Per-key Gantt chart of the states each key was in.

    One row per key, one horizontal bar per state visit (``enter`` to ``exit``), one
    colour per state. The keys' current states run to ``until`` (by default the
    last event time of the keys shown). Those that are open, still running at the
    end of the data in a state that is not final, are hatched; a key that reached
    a final state is done, and its last bar is solid. Final states are the
    ``machine``'s, or else the states no key of the history ever left. Zero-length
    visits (such as the initial state's, see :func:`streamkit.analytics.visits`)
    have no width and are not drawn.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).
    keys
        The keys to show, in this order; by default all keys.
    max_keys
        At most this many rows: with more keys, a deterministic sample (``seed``)
        of ``max_keys`` keys is drawn and the title says so.
    until
        Time up to which open visits are drawn (default: the last event time of
        the keys shown).
    seed
        Seed of the key sample.
    machine
        The machine of the history: its final states are never drawn as open.
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
    ...     "key": ["a", "a", "b"], "time": [0, 5, 2], "event": ["pay", "ship", "pay"],
    ...     "from_state": ["created", "paid", "created"],
    ...     "to_state": ["paid", "shipped", "paid"],
    ... })
    >>> ax = sk.plot.timeline(history, until=8)
    >>> ax.get_title()
    'timeline (2 keys)'
    >>> [(float(p.get_x()), float(p.get_width())) for p in ax.containers[0]]  # paid bars
    [(0.0, 5.0), (2.0, 6.0)]
    >>> plt.close("all")
    """
    h = c.collect(history, "timeline")
    if max_keys < 1:
        raise ValueError(f"timeline: max_keys must be at least 1; got {max_keys}")
    v = analytics.visits(h)
    if machine is not None:
        finals = list(machine.final)
    else:
        left = set(h.filter(pl.col("from_state") != pl.col("to_state"))["from_state"].to_list())
        finals = [s for s in c.state_order(h) if s not in left]
    all_keys = v["key"].unique(maintain_order=True).to_list()
    if keys is not None:
        known = set(all_keys)
        missing = [k for k in keys if k not in known]
        if missing:
            raise KeyError(
                f"timeline: keys not in the history: {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}; it has {len(all_keys):,} keys"
            )
        candidates = c.unique_in_order(keys)
    else:
        candidates = all_keys
    shown = c.sample_keys(candidates, max_keys, seed)
    sampled = len(shown) < len(candidates)
    end: datetime | int | None = until
    if end is None:  # open visits run to the last event of the keys shown
        last = h.filter(pl.col("key").is_in(shown))["time"].max()
        end = last if isinstance(last, datetime | int) else None

    ax = c.axes(ax, figsize=(10.0, max(3.0, 0.28 * len(shown) + 1.5)))
    row_of = {k: i for i, k in enumerate(shown)}
    v = v.filter(pl.col("key").is_in(shown)).with_columns(
        row=pl.col("key").replace_strict(row_of, return_dtype=pl.Int64),
        is_open=pl.col("exit").is_null() & ~pl.col("state").is_in(finals),
    )
    if end is not None:
        limit = pl.lit(end).cast(h.schema["time"])
        v = v.with_columns(exit=pl.coalesce("exit", pl.max_horizontal("enter", limit)))
    v = v.with_columns(duration=pl.col("exit") - pl.col("enter")).filter(
        pl.col("duration").is_not_null() & (pl.col("duration").cast(pl.Int64) > 0)
    )
    states = c.state_order(h, machine)
    colors = c.state_colors(states)
    for state in states:
        part = v.filter(pl.col("state") == state)
        if part.height == 0:
            continue
        bars = ax.barh(
            part["row"].to_numpy(),
            c.span_to_x(part["duration"]),
            left=c.to_x(part["enter"]),
            height=0.7,
            color=colors[state],
            label=state,
            edgecolor="white",
            linewidth=0.3,
        )
        for bar, is_open in zip(bars, part["is_open"].to_list(), strict=True):
            if is_open:
                bar.set_hatch("///")
                bar.set_alpha(0.6)
    c.time_axis(ax, h)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([str(k) for k in shown], fontsize=8 if len(shown) <= 40 else 5)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_ylabel("key")
    if sampled:
        title = f"timeline ({len(shown):,} of {len(candidates):,} keys, sampled)"
    else:
        title = f"timeline ({c.counted(len(shown), 'key')})"
    ax.set_title(title)
    if ax.containers:
        from matplotlib.patches import Patch

        drawn = [str(cont.get_label()) for cont in ax.containers]
        handles = [Patch(facecolor=colors[s], label=s) for s in drawn]
        if v["is_open"].any():
            handles.append(
                Patch(facecolor="white", edgecolor="grey", hatch="///", label=OPEN_LABEL)
            )
        c.state_legend(ax, handles)
    return ax


def occupancy(
    history: pl.DataFrame | pl.LazyFrame,
    every: str | timedelta | int = "1h",
    *,
    stacked: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Stacked areas (or lines) of the number of keys in each state over time.

    The values are :func:`streamkit.analytics.occupancy`: the keys in each state at
    the start of each bucket (a snapshot, not a time average), aggregated over all
    keys, so the plot stays readable for any number of keys. States that never
    hold a key at a bucket start are left out. The legend gives each state's peak
    count, so a state too small to see in the stack still shows how many keys it
    held; ``stacked=False`` draws one step line per state on a log count axis
    instead, where small states are as visible as large ones.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).
    every
        Bucket width: ``"15m"``, ``"1h"``, a ``timedelta`` (Datetime times) or an
        int (integer times).
    stacked
        Stacked areas (default); False for one line per state, log count axis.
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
    ...     "key": [1, 1, 2], "time": [0, 15, 5], "event": ["pay", "ship", "pay"],
    ...     "from_state": ["created", "paid", "created"],
    ...     "to_state": ["paid", "shipped", "paid"],
    ... })
    >>> ax = sk.plot.occupancy(history, every=5)
    >>> [p.get_label() for p in ax.collections]
    ['paid', 'shipped']
    >>> plt.close("all")
    """
    h = c.collect(history, "occupancy")
    occ = analytics.occupancy(h, every)
    order = c.state_order(h)
    states = [s for s in order if occ.filter(pl.col("state") == s)["keys"].sum() > 0]
    colors = c.state_colors(order)
    ax = c.axes(ax)
    times = occ["time"].unique().sort()
    x = c.to_x(times)
    bottom = np.zeros(len(times))
    from matplotlib.patches import Patch

    handles: list[Any] = []
    for state in states:
        ys = occ.filter(pl.col("state") == state).sort("time")["keys"].cast(pl.Float64).to_numpy()
        legend = f"{state} (peak {int(ys.max()):,})"
        if stacked:
            top = bottom + ys
            ax.fill_between(x, bottom, top, step="post", color=colors[state], label=state, lw=0)
            bottom = top
            handles.append(Patch(facecolor=colors[state], label=legend))
        else:
            (line,) = ax.step(x, ys, where="post", color=colors[state], label=legend, lw=1.5)
            handles.append(line)
    width = every if isinstance(every, str) else c.format_duration(every)
    c.time_axis(ax, h, f", buckets of {width}")
    ax.set_ylabel("keys in state (count" + ("" if stacked else ", log scale") + ")")
    ax.set_title(f"occupancy: keys per state at each bucket start ({c.keys_of(h)}, aggregated)")
    if states:
        c.state_legend(ax, handles[::-1] if stacked else handles)  # top of the stack first
    if stacked:
        ax.set_ylim(bottom=0)
    else:
        ax.set_yscale("log")
    return ax


def dwell_times(
    history: pl.DataFrame | pl.LazyFrame,
    *,
    log: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Box plots of the time keys spent per visit in each state.

    One box per state over its closed visits (a transition ended them; open visits
    are still running and left out): the box spans the quartiles, the line is the
    median, whiskers reach the 5th and 95th percentiles, outliers are not drawn, so
    the plot stays readable for any number of keys. On a log scale zero-length
    visits (such as the initial state's) cannot be shown; the title says how many
    were left out.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).
    log
        Logarithmic duration axis (default).
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
    ...     "key": [1, 1, 2, 2], "time": [0, 10, 0, 30],
    ...     "event": ["pay", "ship", "pay", "ship"],
    ...     "from_state": ["created", "paid", "created", "paid"],
    ...     "to_state": ["paid", "shipped", "paid", "shipped"],
    ... })
    >>> ax = sk.plot.dwell_times(history)
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['paid']
    >>> plt.close("all")
    """
    h = c.collect(history, "dwell_times")
    v = analytics.visits(h).filter(pl.col("duration").is_not_null())
    unit, size = c.duration_unit(v["duration"])
    values = c.durations_in(v["duration"], size)
    v = v.with_columns(value=pl.Series(values, dtype=pl.Float64))
    omitted = 0
    if log:
        omitted = int((v["value"] <= 0).sum())
        v = v.filter(pl.col("value") > 0)
    order = c.state_order(h)
    states = [s for s in order if s in set(v["state"].to_list())]
    colors = c.state_colors(order)
    data = [v.filter(pl.col("state") == s)["value"].to_numpy() for s in states]
    ax = c.axes(ax)
    if states:
        parts = ax.boxplot(
            data,
            tick_labels=states,
            whis=(5.0, 95.0),
            showfliers=False,
            patch_artist=True,
            medianprops={"color": "black"},
        )
        for box, state in zip(parts["boxes"], states, strict=True):
            box.set_facecolor(colors[state])
            box.set_alpha(0.8)
            box.set_gid(state)
        for line, state in zip(parts["medians"], states, strict=True):
            line.set_gid(f"median:{state}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("state")
    ax.set_ylabel(f"time in state per visit ({unit}{', log scale' if log else ''})")
    note = (
        f";\n{c.counted(omitted, 'visit')} shorter than the time resolution"
        " (same-timestamp transitions) not shown"
        if omitted
        else ""
    )
    ax.set_title(
        f"dwell times ({c.counted(v.height, 'closed visit')} of {c.keys_of(h)}; "
        f"whiskers 5-95%{note})"
    )
    ax.tick_params(axis="x", labelrotation=30)
    return ax
