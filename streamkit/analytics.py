"""Polars functions over a transition history.

A *transition history* is what ``Pipeline.transitions(...)`` writes: a frame with
columns ``key`` (any dtype), ``time`` (Datetime or integer), ``event`` (str,
``"timeout"`` for timeouts), ``from_state`` and ``to_state`` (str), one row per
fired transition, rows of one key in time order (ties keep row order). A key's
first row has the machine's initial state as ``from_state``.

Every function accepts a :class:`polars.DataFrame` or :class:`polars.LazyFrame`
and returns the same kind: a DataFrame for a DataFrame, a LazyFrame (nothing
computed yet) for a LazyFrame. Durations are ``Duration`` for a Datetime
``time`` column and integers (the time column's own units) for an integer one.

Visits
    A key *visits* a state from the time it enters it to the time it leaves it.
    A key enters its initial state at its first event (the machine's semantics),
    so the first visit of every key is a zero-length visit of the initial state.
    A self-loop leaves and re-enters its state: it closes one visit and opens
    another. The last visit of a key is *open* (no exit) unless ``until`` closes
    it.

Examples
--------
>>> import polars as pl
>>> from streamkit import analytics
>>> history = pl.DataFrame({
...     "key": ["a", "a", "b"],
...     "time": [0, 5, 2],
...     "event": ["pay", "ship", "pay"],
...     "from_state": ["created", "paid", "created"],
...     "to_state": ["paid", "shipped", "paid"],
... })
>>> analytics.variants(history)
shape: (2, 3)
┌──────────────────────┬───────┬───────┐
│ variant              ┆ count ┆ share │
│ ---                  ┆ ---   ┆ ---   │
│ str                  ┆ u32   ┆ f64   │
╞══════════════════════╪═══════╪═══════╡
│ created→paid         ┆ 1     ┆ 0.5   │
│ created→paid→shipped ┆ 1     ┆ 0.5   │
└──────────────────────┴───────┴───────┘
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

import polars as pl

from streamkit.errors import SchemaError

__all__ = [
    "HISTORY_COLUMNS",
    "dwell_times",
    "occupancy",
    "throughput_times",
    "time_in_state",
    "transition_counts",
    "variants",
    "visits",
]

#: The columns every transition history has.
HISTORY_COLUMNS: tuple[str, ...] = ("key", "time", "event", "from_state", "to_state")

#: Separator of the states in a :func:`variants` path.
VARIANT_SEPARATOR = "→"

TimeLike = datetime | int

#: A transition history as given: every function returns the same kind of frame.
Frame = TypeVar("Frame", bound=pl.DataFrame | pl.LazyFrame)


class _HasFinal(Protocol):
    @property
    def final(self) -> Any: ...


# --- input handling -------------------------------------------------------------------


def _as_lazy(history: pl.DataFrame | pl.LazyFrame, where: str) -> pl.LazyFrame:
    """Check the history's schema and return it as a LazyFrame with str state columns."""
    if isinstance(history, pl.DataFrame):
        lf = history.lazy()
    elif isinstance(history, pl.LazyFrame):
        lf = history
    else:
        raise TypeError(
            f"{where}: expected a polars DataFrame or LazyFrame transition history; "
            f"got {type(history).__name__}"
        )
    schema = lf.collect_schema()
    missing = [c for c in HISTORY_COLUMNS if c not in schema]
    if missing:
        raise SchemaError(
            f"{where}: a transition history needs columns {list(HISTORY_COLUMNS)}; "
            f"missing {missing} (found {list(schema.names())}). Pass the output of "
            f"Pipeline.transitions(...), e.g. store.log('...-transitions').scan()."
        )
    time_dtype = schema["time"]
    if not (time_dtype.is_integer() or isinstance(time_dtype, pl.Datetime)):
        raise SchemaError(
            f"{where}: column 'time' must be a Datetime or an integer column; got {time_dtype}"
        )
    casts: list[pl.Expr] = []
    for name in ("event", "from_state", "to_state"):
        dtype = schema[name]
        if isinstance(dtype, pl.Categorical | pl.Enum):
            casts.append(pl.col(name).cast(pl.String))
        elif dtype not in (pl.String, pl.Null):
            raise SchemaError(
                f"{where}: column {name!r} must hold strings (state and event names); got {dtype}"
            )
    return lf.with_columns(casts) if casts else lf


def _finish(result: pl.LazyFrame, history: Frame) -> Frame:
    """``result`` as the kind of frame ``history`` is: lazy for lazy, collected otherwise."""
    return cast("Frame", result if isinstance(history, pl.LazyFrame) else result.collect())


def _time_literal(value: TimeLike, dtype: pl.DataType, name: str, where: str) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        if not isinstance(value, datetime):
            raise TypeError(
                f"{where}: {name} must be a datetime for a Datetime 'time' column; got {value!r}"
            )
    elif isinstance(value, datetime) or not isinstance(value, int):
        raise TypeError(
            f"{where}: {name} must be an int for an integer 'time' column; got {value!r}"
        )
    return pl.lit(value).cast(dtype)


def _sorted(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Rows in time order, ties in row order (the per-key order of the history)."""
    return lf.with_row_index("_row").sort("time", "_row")


# --- visits ---------------------------------------------------------------------------


def visits(history: Frame, *, until: TimeLike | None = None) -> Frame:
    """One row per state visit of each key.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).
    until
        The time up to which the history is known (a datetime for a Datetime
        ``time`` column, an int for an integer one). Open visits are closed at
        ``until`` (or at their entry, if ``until`` is earlier). Without it, open
        visits keep a null ``exit`` and ``duration``.

    Returns
    -------
    DataFrame or LazyFrame
        Columns ``key``, ``state``, ``enter``, ``exit``, ``duration``, grouped by
        key (keys sorted) and in time order within a key. The first visit of each
        key is its zero-length visit of the initial state (``from_state`` of its
        first row); every transition, self-loops included, closes one visit and
        opens the next.

    Examples
    --------
    >>> import polars as pl
    >>> from streamkit.analytics import visits
    >>> history = pl.DataFrame({
    ...     "key": ["a", "a", "a"],
    ...     "time": [1, 4, 9],
    ...     "event": ["pay", "ping", "ship"],
    ...     "from_state": ["created", "paid", "paid"],
    ...     "to_state": ["paid", "paid", "shipped"],
    ... })
    >>> visits(history, until=10)
    shape: (4, 5)
    ┌─────┬─────────┬───────┬──────┬──────────┐
    │ key ┆ state   ┆ enter ┆ exit ┆ duration │
    │ --- ┆ ---     ┆ ---   ┆ ---  ┆ ---      │
    │ str ┆ str     ┆ i64   ┆ i64  ┆ i64      │
    ╞═════╪═════════╪═══════╪══════╪══════════╡
    │ a   ┆ created ┆ 1     ┆ 1    ┆ 0        │
    │ a   ┆ paid    ┆ 1     ┆ 4    ┆ 3        │
    │ a   ┆ paid    ┆ 4     ┆ 9    ┆ 5        │
    │ a   ┆ shipped ┆ 9     ┆ 10   ┆ 1        │
    └─────┴─────────┴───────┴──────┴──────────┘
    """
    lf = _visits(_as_lazy(history, "visits"), until, "visits")
    return _finish(lf, history)


def _visits(lf: pl.LazyFrame, until: TimeLike | None, where: str) -> pl.LazyFrame:
    dtype = lf.collect_schema()["time"]
    rows = _sorted(lf)
    initial = rows.filter(pl.col("_row") == pl.col("_row").first().over("key")).select(
        "key",
        pl.col("from_state").alias("state"),
        pl.col("time").alias("enter"),
        pl.col("time").alias("exit"),
        "_row",
        pl.lit(0, dtype=pl.UInt8).alias("_seq"),
    )
    moves = rows.select(
        "key",
        pl.col("to_state").alias("state"),
        pl.col("time").alias("enter"),
        pl.col("time").shift(-1).over("key").alias("exit"),
        "_row",
        pl.lit(1, dtype=pl.UInt8).alias("_seq"),
    )
    out = pl.concat([initial, moves]).sort("key", "_row", "_seq")
    if until is not None:
        limit = _time_literal(until, dtype, "until", where)
        out = out.with_columns(exit=pl.coalesce("exit", pl.max_horizontal("enter", limit)))
    return out.select(
        "key", "state", "enter", "exit", (pl.col("exit") - pl.col("enter")).alias("duration")
    )


# --- per-state and per-key summaries ---------------------------------------------------


def dwell_times(history: Frame, *, until: TimeLike | None = None) -> Frame:
    """Statistics of the time spent per visit, per state.

    Only closed visits count: those a transition ended and, when ``until`` is
    given, the open visits it closes (their durations are then lower bounds, as
    the keys are still in those states). Zero-length visits of the initial state
    count too (see :func:`visits`).

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).
    until
        Close open visits at this time (see :func:`visits`).

    Returns
    -------
    DataFrame or LazyFrame
        Columns ``state``, ``count`` (closed visits), ``mean``, ``median``,
        ``p90`` (linear interpolation) and ``max``, sorted by state. States with
        only open visits are absent.

    Examples
    --------
    >>> import polars as pl
    >>> from streamkit.analytics import dwell_times
    >>> history = pl.DataFrame({
    ...     "key": [1, 1, 2, 2],
    ...     "time": [0, 10, 0, 30],
    ...     "event": ["pay", "ship", "pay", "ship"],
    ...     "from_state": ["created", "paid", "created", "paid"],
    ...     "to_state": ["paid", "shipped", "paid", "shipped"],
    ... })
    >>> dwell_times(history).filter(pl.col("state") == "paid")
    shape: (1, 6)
    ┌───────┬───────┬──────┬────────┬──────┬─────┐
    │ state ┆ count ┆ mean ┆ median ┆ p90  ┆ max │
    │ ---   ┆ ---   ┆ ---  ┆ ---    ┆ ---  ┆ --- │
    │ str   ┆ u32   ┆ f64  ┆ f64    ┆ f64  ┆ i64 │
    ╞═══════╪═══════╪══════╪════════╪══════╪═════╡
    │ paid  ┆ 2     ┆ 20.0 ┆ 20.0   ┆ 28.0 ┆ 30  │
    └───────┴───────┴──────┴────────┴──────┴─────┘
    """
    v = _visits(_as_lazy(history, "dwell_times"), until, "dwell_times")
    d = pl.col("duration")
    out = (
        v.filter(d.is_not_null())
        .group_by("state")
        .agg(
            pl.len().alias("count"),
            d.mean().alias("mean"),
            d.median().alias("median"),
            d.quantile(0.9, interpolation="linear").alias("p90"),
            d.max().alias("max"),
        )
        .sort("state")
    )
    return _finish(out, history)


def time_in_state(history: Frame, *, until: TimeLike | None = None) -> Frame:
    """Total time each key spent in each state.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).
    until
        Close open visits at this time (see :func:`visits`); without it the open
        visit of a key adds nothing to its total.

    Returns
    -------
    DataFrame or LazyFrame
        Columns ``key``, ``state``, ``visits`` (number of visits, open ones
        included) and ``total`` (sum of the closed visits' durations), sorted by
        key then state.

    Examples
    --------
    >>> import polars as pl
    >>> from streamkit.analytics import time_in_state
    >>> history = pl.DataFrame({
    ...     "key": ["a", "a", "a"],
    ...     "time": [0, 3, 7],
    ...     "event": ["pay", "ping", "ship"],
    ...     "from_state": ["created", "paid", "paid"],
    ...     "to_state": ["paid", "paid", "shipped"],
    ... })
    >>> time_in_state(history, until=10)
    shape: (3, 4)
    ┌─────┬─────────┬────────┬───────┐
    │ key ┆ state   ┆ visits ┆ total │
    │ --- ┆ ---     ┆ ---    ┆ ---   │
    │ str ┆ str     ┆ u32    ┆ i64   │
    ╞═════╪═════════╪════════╪═══════╡
    │ a   ┆ created ┆ 1      ┆ 0     │
    │ a   ┆ paid    ┆ 2      ┆ 7     │
    │ a   ┆ shipped ┆ 1      ┆ 3     │
    └─────┴─────────┴────────┴───────┘
    """
    v = _visits(_as_lazy(history, "time_in_state"), until, "time_in_state")
    out = (
        v.group_by("key", "state")
        .agg(pl.len().alias("visits"), pl.col("duration").sum().alias("total"))
        .sort("key", "state")
    )
    return _finish(out, history)


def variants(history: Frame) -> Frame:
    """Process variants: the distinct paths keys took through the states.

    A key's path is its initial state followed by the target of every transition
    it made (self-loops repeat the state), joined with ``"→"``.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).

    Returns
    -------
    DataFrame or LazyFrame
        Columns ``variant`` (str), ``count`` (keys that took it) and ``share``
        (fraction of all keys), sorted by count descending, then variant.

    Examples
    --------
    >>> import polars as pl
    >>> from streamkit.analytics import variants
    >>> history = pl.DataFrame({
    ...     "key": [1, 2, 2, 3],
    ...     "time": [0, 0, 5, 1],
    ...     "event": ["cancel", "pay", "ship", "cancel"],
    ...     "from_state": ["created", "created", "paid", "created"],
    ...     "to_state": ["cancelled", "paid", "shipped", "cancelled"],
    ... })
    >>> variants(history)["variant"].to_list()
    ['created→cancelled', 'created→paid→shipped']
    """
    lf = _sorted(_as_lazy(history, "variants"))
    out = (
        lf.group_by("key")
        .agg(
            pl.col("from_state").first().alias("_first"),
            pl.col("to_state").str.join(VARIANT_SEPARATOR).alias("_rest"),
        )
        .select(pl.concat_str(["_first", "_rest"], separator=VARIANT_SEPARATOR).alias("variant"))
        .group_by("variant")
        .agg(pl.len().alias("count"))
        .with_columns(share=pl.col("count") / pl.col("count").sum())
        .sort(["count", "variant"], descending=[True, False])
    )
    return _finish(out, history)


def _final_states(final: str | Iterable[str] | _HasFinal) -> list[str]:
    if isinstance(final, str):
        return [final]
    if hasattr(final, "final"):
        return sorted(str(s) for s in final.final)
    return [str(s) for s in final]


def throughput_times(history: Frame, *, final: str | Iterable[str] | _HasFinal) -> Frame:
    """Time from each key's first event to its first entry into a final state.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).
    final
        A final state, several, or a machine (its ``final`` states are used).

    Returns
    -------
    DataFrame or LazyFrame
        Columns ``key``, ``start`` (time of the first row), ``end`` (time of the
        first entry into a final state), ``final_state`` (which one) and
        ``throughput`` (``end - start``), sorted by key. Keys that never reached a
        final state are **kept**, with null ``end``, ``final_state`` and
        ``throughput``; drop them with ``.drop_nulls("throughput")``. A key whose
        initial state is final has throughput 0.

    Examples
    --------
    >>> import polars as pl
    >>> from streamkit.analytics import throughput_times
    >>> history = pl.DataFrame({
    ...     "key": ["a", "a", "b"],
    ...     "time": [2, 9, 4],
    ...     "event": ["pay", "ship", "pay"],
    ...     "from_state": ["created", "paid", "created"],
    ...     "to_state": ["paid", "shipped", "paid"],
    ... })
    >>> throughput_times(history, final=["shipped", "cancelled"])
    shape: (2, 5)
    ┌─────┬───────┬──────┬─────────────┬────────────┐
    │ key ┆ start ┆ end  ┆ final_state ┆ throughput │
    │ --- ┆ ---   ┆ ---  ┆ ---         ┆ ---        │
    │ str ┆ i64   ┆ i64  ┆ str         ┆ i64        │
    ╞═════╪═══════╪══════╪═════════════╪════════════╡
    │ a   ┆ 2     ┆ 9    ┆ shipped     ┆ 7          │
    │ b   ┆ 4     ┆ null ┆ null        ┆ null       │
    └─────┴───────┴──────┴─────────────┴────────────┘
    """
    finals = _final_states(final)
    lf = _sorted(_as_lazy(history, "throughput_times"))
    reached = pl.col("to_state").is_in(finals)
    initial_final = pl.col("from_state").first().is_in(finals)
    out = (
        lf.group_by("key")
        .agg(
            pl.col("time").first().alias("start"),
            pl.when(initial_final)
            .then(pl.col("time").first())
            .otherwise(pl.col("time").filter(reached).first())
            .alias("end"),
            pl.when(initial_final)
            .then(pl.col("from_state").first())
            .otherwise(pl.col("to_state").filter(reached).first())
            .alias("final_state"),
        )
        .with_columns(throughput=pl.col("end") - pl.col("start"))
        .sort("key")
    )
    return _finish(out, history)


# --- occupancy --------------------------------------------------------------------------


def occupancy(
    history: Frame,
    every: str | timedelta | int = "1h",
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> Frame:
    """Number of keys in each state at the start of each time bucket.

    A key counts in state ``s`` at bucket start ``t`` when one of its visits of
    ``s`` has ``enter <= t < exit`` (open visits never end). This is a snapshot at
    each bucket start, not a time-weighted average, so zero-length visits (such as
    the initial state's) never count, and a key counts before its first event in
    no state at all.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).
    every
        Bucket width: a Polars duration string (``"15m"``, ``"1h"``, ``"1d"``,
        ``"1mo"``) or a :class:`~datetime.timedelta` for a Datetime ``time``
        column; a positive int for an integer one.
    start, end
        First bucket start and the last time covered (inclusive). By default the
        earliest time truncated to ``every`` (integer: rounded down to a multiple
        of ``every``) and the latest time of the history.

    Returns
    -------
    DataFrame or LazyFrame
        Long form, columns ``time`` (bucket start), ``state`` and ``keys`` (u32),
        one row per bucket and per state seen in the history (zeros included),
        sorted by time then state. ``df.pivot("state", index="time",
        values="keys")`` gives the wide form.

    Examples
    --------
    >>> import polars as pl
    >>> from streamkit.analytics import occupancy
    >>> history = pl.DataFrame({
    ...     "key": [1, 1, 2],
    ...     "time": [0, 15, 5],
    ...     "event": ["pay", "ship", "pay"],
    ...     "from_state": ["created", "paid", "created"],
    ...     "to_state": ["paid", "shipped", "paid"],
    ... })
    >>> occupancy(history, every=10).pivot("state", index="time", values="keys")
    shape: (2, 4)
    ┌──────┬─────────┬──────┬─────────┐
    │ time ┆ created ┆ paid ┆ shipped │
    │ ---  ┆ ---     ┆ ---  ┆ ---     │
    │ i64  ┆ u32     ┆ u32  ┆ u32     │
    ╞══════╪═════════╪══════╪═════════╡
    │ 0    ┆ 0       ┆ 1    ┆ 0       │
    │ 10   ┆ 0       ┆ 2    ┆ 0       │
    └──────┴─────────┴──────┴─────────┘
    """
    where = "occupancy"
    lf = _as_lazy(history, where)
    dtype = lf.collect_schema()["time"]
    grid = _grid(lf, dtype=dtype, every=every, start=start, end=end, where=where)
    v = _visits(lf, None, where).filter(
        pl.col("exit").is_null() | (pl.col("exit") > pl.col("enter"))
    )
    # +1 at the first bucket start >= enter, -1 at the first bucket start >= exit.
    deltas = pl.concat(
        [
            v.select("state", pl.col("enter").alias("at"), pl.lit(1, pl.Int64).alias("d")),
            v.filter(pl.col("exit").is_not_null()).select(
                "state", pl.col("exit").alias("at"), pl.lit(-1, pl.Int64).alias("d")
            ),
        ]
    ).sort("at")
    placed = (
        deltas.join_asof(grid, left_on="at", right_on="time", strategy="forward")
        .filter(pl.col("time").is_not_null())
        .group_by("time", "state")
        .agg(pl.col("d").sum())
    )
    states = pl.concat(
        [
            lf.select(pl.col("from_state").alias("state")),
            lf.select(pl.col("to_state").alias("state")),
        ]
    ).unique()
    out = (
        grid.join(states, how="cross")
        .join(placed, on=["time", "state"], how="left")
        .sort("state", "time")
        .select(
            "time",
            "state",
            pl.col("d").fill_null(0).cum_sum().over("state").cast(pl.UInt32).alias("keys"),
        )
        .sort("time", "state")
    )
    return _finish(out, history)


def _grid(
    lf: pl.LazyFrame,
    *,
    dtype: pl.DataType,
    every: str | timedelta | int,
    start: TimeLike | None,
    end: TimeLike | None,
    where: str,
) -> pl.LazyFrame:
    """The bucket starts as a sorted one-column LazyFrame ``time``."""
    lo: pl.Expr
    hi: pl.Expr
    if isinstance(dtype, pl.Datetime):
        if isinstance(every, int):
            raise TypeError(
                f"{where}: every must be a duration string such as '1h' or a timedelta "
                f"for a Datetime 'time' column; got the int {every!r}"
            )
        epoch = pl.lit(datetime(1970, 1, 1)).cast(dtype)
        lo = (
            pl.coalesce(pl.col("time").min().dt.truncate(every), epoch)
            if start is None
            else _time_literal(start, dtype, "start", where)
        )
        hi = (
            pl.coalesce(pl.col("time").max(), epoch)
            if end is None
            else _time_literal(end, dtype, "end", where)
        )
        rng = pl.datetime_range(lo, hi, every, time_unit=dtype.time_unit, time_zone=dtype.time_zone)
    else:
        if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
            raise TypeError(
                f"{where}: every must be a positive int (in time units) for an integer "
                f"'time' column; got {every!r}"
            )
        lo = (
            pl.coalesce((pl.col("time").min() // every) * every, pl.lit(0).cast(dtype))
            if start is None
            else _time_literal(start, dtype, "start", where)
        )
        hi = (
            pl.coalesce(pl.col("time").max(), pl.lit(0).cast(dtype))
            if end is None
            else _time_literal(end, dtype, "end", where)
        )
        rng = pl.int_range(lo, hi + 1, every).cast(dtype)
    grid = lf.select(rng.alias("time"))
    if start is None or end is None:
        # An empty history has no bounds: fall back to a dummy range, then drop it.
        grid = (
            lf.select(rng.alias("time"))
            .join(lf.select(pl.len().alias("_rows")), how="cross")
            .filter(pl.col("_rows") > 0)
            .drop("_rows")
        )
    return grid.sort("time")


# --- transition counts ---------------------------------------------------------------


def transition_counts(history: Frame) -> Frame:
    """How often each transition fired.

    Parameters
    ----------
    history
        A transition history (DataFrame or LazyFrame).

    Returns
    -------
    DataFrame or LazyFrame
        Long form, columns ``from_state``, ``to_state``, ``event`` and ``count``
        (u32), sorted by count descending, then from, to and event.

    Examples
    --------
    >>> import polars as pl
    >>> from streamkit.analytics import transition_counts
    >>> history = pl.DataFrame({
    ...     "key": [1, 2, 2],
    ...     "time": [0, 0, 30],
    ...     "event": ["pay", "pay", "timeout"],
    ...     "from_state": ["created", "created", "paid"],
    ...     "to_state": ["paid", "paid", "cancelled"],
    ... })
    >>> transition_counts(history)
    shape: (2, 4)
    ┌────────────┬───────────┬─────────┬───────┐
    │ from_state ┆ to_state  ┆ event   ┆ count │
    │ ---        ┆ ---       ┆ ---     ┆ ---   │
    │ str        ┆ str       ┆ str     ┆ u32   │
    ╞════════════╪═══════════╪═════════╪═══════╡
    │ created    ┆ paid      ┆ pay     ┆ 2     │
    │ paid       ┆ cancelled ┆ timeout ┆ 1     │
    └────────────┴───────────┴─────────┴───────┘
    """
    out = (
        _as_lazy(history, "transition_counts")
        .group_by("from_state", "to_state", "event")
        .agg(pl.len().alias("count"))
        .sort(["count", "from_state", "to_state", "event"], descending=[True, False, False, False])
    )
    return _finish(out, history)
