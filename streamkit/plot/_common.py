"""Helpers shared by the plots: axes, colours, time conversion, sampling, units."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from streamkit.analytics import HISTORY_COLUMNS
from streamkit.errors import SchemaError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from streamkit.machines import Machine

#: Default seed of the deterministic key sample of the timeline.
SAMPLE_SEED = 0

_UNITS: tuple[tuple[str, float], ...] = (
    ("days", 86_400.0),
    ("hours", 3_600.0),
    ("minutes", 60.0),
    ("seconds", 1.0),
)


def collect(history: pl.DataFrame | pl.LazyFrame, where: str) -> pl.DataFrame:
    """The history as a DataFrame (a plot needs the data), schema checked."""
    if isinstance(history, pl.LazyFrame):
        history = history.collect()
    if not isinstance(history, pl.DataFrame):
        raise TypeError(
            f"{where}: expected a polars DataFrame or LazyFrame transition history; "
            f"got {type(history).__name__}"
        )
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise SchemaError(
            f"{where}: a transition history needs columns {list(HISTORY_COLUMNS)}; "
            f"missing {missing} (found {history.columns})"
        )
    return history.with_columns(pl.col("event", "from_state", "to_state").cast(pl.String))


def axes(ax: Axes | None, figsize: tuple[float, float] = (9.0, 5.0)) -> Axes:
    """``ax``, or the Axes of a new pyplot figure (shown inline in notebooks)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=figsize, layout="constrained")
    return new


def time_axis(ax: Axes, history: pl.DataFrame, suffix: str = "") -> None:
    """Label the x axis as event time (plus ``suffix``), with date ticks for Datetime times."""
    if isinstance(history.schema["time"], pl.Datetime):
        import matplotlib.dates as mdates

        ax.xaxis_date()
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.set_xlabel(time_label(history) + suffix)


def state_legend(ax: Axes, handles: Sequence[Any]) -> None:
    """A legend of ``handles`` (labelled by state) to the right of the Axes."""
    ax.legend(
        handles=handles, title="state", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8
    )


def state_order(history: pl.DataFrame, machine: Machine | None = None) -> list[str]:
    """Machine states first (declaration order), then the others by first appearance."""
    seen: dict[str, None] = {}
    if machine is not None:
        seen.update(dict.fromkeys(machine.states))
    pairs = history.select(pl.concat_list("from_state", "to_state").explode())
    seen.update(dict.fromkeys(pairs.to_series().unique(maintain_order=True).to_list()))
    return [s for s in seen if s is not None]


def state_colors(states: Sequence[str]) -> dict[str, Any]:
    """One stable colour per state (tab10, then tab20 for more than ten states)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(states) <= 10 else "tab20"]
    return {s: cmap(i % cmap.N) for i, s in enumerate(states)}


def to_x(values: pl.Series) -> np.ndarray:
    """Times as matplotlib x coordinates: date numbers for Datetime, floats otherwise."""
    if isinstance(values.dtype, pl.Datetime):
        from matplotlib import dates as mdates

        naive = values.dt.replace_time_zone(None) if values.dtype.time_zone else values
        return np.asarray(mdates.date2num(naive.to_numpy()), dtype=np.float64)  # type: ignore[no-untyped-call]
    return values.cast(pl.Float64).to_numpy()


def span_to_x(values: pl.Series) -> np.ndarray:
    """Durations as x widths: days for Duration, floats otherwise."""
    if isinstance(values.dtype, pl.Duration):
        return values.dt.total_microseconds().cast(pl.Float64).to_numpy() / 86_400e6
    return values.cast(pl.Float64).to_numpy()


def time_label(history: pl.DataFrame) -> str:
    dtype = history.schema["time"]
    if isinstance(dtype, pl.Datetime):
        return f"event time ({dtype.time_zone or 'date and time'})"
    return "event time (integer time units)"


def duration_unit(durations: pl.Series) -> tuple[str, float]:
    """A readable unit for Duration values (by their median) and its size in seconds."""
    if not isinstance(durations.dtype, pl.Duration):
        return "time units", 1.0
    seconds = durations.dt.total_microseconds().cast(pl.Float64) / 1e6
    median = seconds.median()
    typical = float(median) if isinstance(median, int | float) else 0.0
    for name, size in _UNITS:
        if typical >= size:
            return name, size
    return "seconds", 1.0


def durations_in(durations: pl.Series, size: float) -> np.ndarray:
    """Durations as floats in a unit of ``size`` seconds (integers stay as they are)."""
    if isinstance(durations.dtype, pl.Duration):
        micros = durations.dt.total_microseconds().cast(pl.Float64).to_numpy()
        return micros / (size * 1e6)
    return durations.cast(pl.Float64).to_numpy()


def sample_keys(keys: Sequence[Any], k: int, seed: int = SAMPLE_SEED) -> list[Any]:
    """A deterministic sample of ``k`` keys, kept in their original order."""
    if len(keys) <= k:
        return list(keys)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(keys), size=k, replace=False))
    return [keys[int(i)] for i in idx]


_HUMAN_UNITS: tuple[tuple[str, float], ...] = (
    ("d", 86_400.0),
    ("h", 3_600.0),
    ("min", 60.0),
    ("s", 1.0),
    ("ms", 1e-3),
    ("µs", 1e-6),
)


def human_seconds(seconds: float) -> str:
    """Seconds as short text in the largest unit that keeps the number at least 1.

    Units are ``d``, ``h``, ``min``, ``s``, ``ms`` and ``µs``, with up to three
    significant digits (``"1.5 h"``, ``"12 µs"``, ``"0 s"``).

    Examples
    --------
    >>> human_seconds(1.2e-05), human_seconds(0.0021), human_seconds(1800.0)
    ('12 µs', '2.1 ms', '30 min')
    >>> human_seconds(0.0), human_seconds(5400.0), human_seconds(-90.0)
    ('0 s', '1.5 h', '-1.5 min')
    """
    if seconds == 0 or not math.isfinite(seconds):
        return "0 s" if seconds == 0 else str(seconds)
    sign = "-" if seconds < 0 else ""
    size_s = abs(seconds)
    for name, size in _HUMAN_UNITS:
        if size_s >= size * 0.9995:  # what would round up to 1000 ms is "1 s"
            return f"{sign}{_sig3(size_s / size)} {name}"
    return f"{sign}{_sig3(size_s / 1e-6)} µs"


def _sig3(value: float) -> str:
    text = f"{value:.3g}"
    if "e" in text:  # 1000+ days: plain digits, no exponent
        text = f"{value:,.0f}"
    return text


def format_duration(value: Any) -> str:
    """Short text for a duration (``timedelta``, see :func:`human_seconds`) or a time span."""
    if isinstance(value, timedelta):
        return human_seconds(value.total_seconds())
    if isinstance(value, float):
        return _sig3(value)
    return str(value)


def counted(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def keys_of(history: pl.DataFrame) -> str:
    """How many distinct keys the history has, as text (``"1 key"``, ``"10,000 keys"``)."""
    return counted(history["key"].n_unique(), "key")


def declared_pairs(machine: Machine) -> set[tuple[str, str]]:
    """``(from, to)`` pairs the machine declares, by transition or timeout."""
    pairs = {(t.source, t.target) for t in machine.transitions}
    pairs |= {(t.state, t.target) for t in machine.timeouts}
    return pairs


def unique_in_order(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))
