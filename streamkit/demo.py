"""``streamkit demo``: the main job on a local default store.

Each run appends one more simulated day of orders to the ``orders`` log, as a
collector would: in the order the events arrive (a tenth of them up to
``LATENESS`` late), one append per ``COLLECT_EVERY`` of arrivals. It then
processes only what arrived since the last checkpoint in several micro-batches,
with ``.transitions(..., lateness=LATENESS)``, prints a summary (with the
quarantine of the same events applied in log order, without lateness, for
comparison) and writes the plots as PNG files next to the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

DEMO_WRITER = "streamkit-demo"
#: How late events may arrive (the generator's ``delay``, the pipeline's ``lateness``).
LATENESS = "10m"
#: The fraction of events that arrive late (the generator's ``out_of_order``).
OUT_OF_ORDER = 0.1
#: The collector ships what arrived every ``COLLECT_EVERY``: one append each.
COLLECT_EVERY = "15m"


def demo_pipeline(store: Any) -> Any:
    """The demo's pipeline: orders -> order lifecycle transitions.

    Events arrive up to ``LATENESS`` out of time order, so ``.transitions``
    waits that long for them (``lateness=LATENESS``) and applies them in time
    order.

    Examples
    --------
    >>> import streamkit as sk
    >>> store = sk.Store("memory://doc-demo-pipeline")
    >>> _ = store.log("orders", key="order_id", time="ts")
    >>> demo_pipeline(store)
    Pipeline('order-lifecycle': read('orders') -> ...)
    """
    from streamkit.datasets import order_machine
    from streamkit.pipeline import Pipeline

    return (
        Pipeline("order-lifecycle", store, batch_rows=50_000)
        .read(store.log("orders", key="order_id", time="ts"))
        .filter(pl.col("amount") >= 0)
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event", lateness=LATENESS)
        .write(store.log("order-transitions", key="key", time="time"))
    )


def in_log_order_pipeline(store: Any) -> Any:
    """The demo's pipeline without ``lateness`` and without a sink, for comparison.

    It applies every event as it is read, in log order, so an event that arrives
    after a later event of its order is quarantined as late.

    Examples
    --------
    >>> import streamkit as sk
    >>> store = sk.Store("memory://doc-demo-in-log-order")
    >>> _ = store.log("orders", key="order_id", time="ts")
    >>> in_log_order_pipeline(store)
    Pipeline('order-lifecycle-in-log-order': read('orders') -> ...)
    """
    from streamkit.datasets import order_machine
    from streamkit.pipeline import Pipeline

    return (
        Pipeline("order-lifecycle-in-log-order", store, batch_rows=50_000)
        .read(store.log("orders", key="order_id", time="ts"))
        .filter(pl.col("amount") >= 0)
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
    )


LOOKBACK_DAYS = 30


def day_of_events(orders: int, day: int) -> pl.DataFrame:
    """The events that *arrive* on simulated day ``day`` (0-based).

    Orders created on earlier days keep producing events (payments, shipping,
    deliveries, returns) for weeks, so a day's delivery holds the events that
    arrive during that day, from the orders of the last ``LOOKBACK_DAYS`` days,
    in arrival order: a tenth of them (``OUT_OF_ORDER``) up to ``LATENESS``
    after their time, and the generator's late arrivals later still.

    Examples
    --------
    >>> d0 = day_of_events(50, 0)
    >>> str(d0["ts"].max()) < "2026-01-02"
    True
    """
    from streamkit.datasets import generate_orders

    frames = []
    for j in range(max(0, day - LOOKBACK_DAYS), day + 1):
        f = generate_orders(
            orders, day=j, seed=j, out_of_order=OUT_OF_ORDER, delay=LATENESS
        ).with_row_index("__arrival")
        # When a row arrives: late rows sit after later events, so a row
        # arrives at the running maximum of the times before it.
        frames.append(f.with_columns(__day=pl.lit(j), __at=pl.col("ts").cum_max()))
    everything = pl.concat(frames)
    first_day = pl.datetime(2026, 1, 1)
    lo = first_day + pl.duration(days=day)
    hi = first_day + pl.duration(days=day + 1)
    return (
        everything.filter((pl.col("__at") >= lo) & (pl.col("__at") < hi))
        .sort("__at", "__day", "__arrival")
        .drop("__arrival", "__day", "__at")
    )


def collector_batches(frame: pl.DataFrame, every: str = COLLECT_EVERY) -> list[pl.DataFrame]:
    """Cut events in arrival order into what a collector ships every ``every``.

    A row arrives at the running maximum of ``ts`` before it; the batches are
    contiguous pieces of ``frame``, one per ``every`` of arrival time that
    received events. :meth:`~streamkit.Log.append` stores each piece in time
    order, so disorder reaches the log only between pieces.

    Examples
    --------
    >>> from datetime import datetime
    >>> f = pl.DataFrame({"ts": [datetime(2026, 1, 1, 0, m) for m in (1, 14, 9, 16, 40)]})
    >>> [b["ts"].dt.minute().to_list() for b in collector_batches(f, "15m")]
    [[1, 14, 9], [16], [40]]
    """
    window = frame["ts"].cum_max().dt.truncate(every)
    starts = (window != window.shift(1)).fill_null(True).arg_true().to_list()  # never decreases
    ends = [*starts[1:], frame.height]
    return [frame[lo:hi] for lo, hi in zip(starts, ends, strict=True) if hi > lo]


def _next_day(txn: Any) -> tuple[int, int]:
    """``(day, first seq)`` of the day to append: the next one, or one whose
    collector batches were cut short (a crash); its appended batches are then
    duplicates, which append nothing."""
    if txn is None:
        return 0, 1
    meta = txn.meta
    day = int(meta.get("day", txn.seq - 1))
    if "part" in meta and int(meta["part"]) + 1 < int(meta["parts"]):
        return day, int(meta["first_seq"])
    return day + 1, txn.seq + 1


def run_demo(
    store_dir: str | Path = "./streamkit-demo",
    *,
    orders: int = 20_000,
    echo: Callable[[str], Any] = print,
    plots: bool = True,
) -> dict[str, Any]:
    """Append another day of orders, process it, summarise, plot.

    Returns a dict with the run report, the state counts and the plot paths.
    """
    from streamkit import kernel
    from streamkit.storage import Store

    store_dir = Path(store_dir)
    store = Store(str(store_dir))
    log = store.log("orders", key="order_id", time="ts")
    day, first_seq = _next_day(log.transaction(DEMO_WRITER))
    frame = day_of_events(orders, day)
    batches = collector_batches(frame)
    for part, batch in enumerate(batches):
        meta = {"day": day, "part": part, "parts": len(batches), "first_seq": first_seq}
        log.append(batch, writer=DEMO_WRITER, seq=first_seq + part, meta=meta)
    echo(
        f"appended day {day + 1}: {frame.height:,} order events to {store.url}/orders, "
        f"as they arrived ({OUT_OF_ORDER:.0%} up to {LATENESS} late), "
        f"in {len(batches)} collector batches"
    )

    pipe = demo_pipeline(store)
    # Compile (or load from the disk cache) the kernel before the timed run, so
    # the run's events/s measure processing, not a one-off compilation.
    kernel.ensure_compiled()
    before = pipe.quarantine()
    report = pipe.run(batch_rows=max(frame.height // 4, 1), progress=False)
    echo(f"\nthis run (the events of day {day + 1}):")
    echo(str(report))

    state = pipe.state()
    counts = (
        state.with_columns(pl.col("state").fill_null("(first event waiting)"))
        .group_by("state")
        .agg(pl.len().alias("orders"))
        .sort("orders", descending=True)
    )
    reasons = quarantine_by_reason(before, pipe.quarantine())
    days = "day 1" if day == 0 else f"days 1-{day + 1}"
    echo(f"\norders by state after this run (all orders of {days}):")
    echo(_table(counts))
    echo("\nquarantined events by reason, this run and all runs so far:")
    echo(_table(reasons))

    # The same events applied as read, in log order: what lateness saves.
    plain = in_log_order_pipeline(store)
    plain.run(batch_rows=max(frame.height // 4, 1), progress=False)
    compared = compare_lateness(plain.quarantine(), pipe.quarantine())
    waiting = int(state["waiting"].sum()) if "waiting" in state.columns else 0
    echo(f"\nquarantined events of all runs, applied in log order vs with lateness={LATENESS!r}:")
    echo(_table(compared))
    echo(f"({waiting:,} events wait for the watermark, to be applied by the next run)")

    paths: list[Path] = []
    if plots:
        paths = _write_plots(store, pipe, store_dir.parent / f"{store_dir.name}-plots")
        echo(f"\nplots written to {paths[0].parent}/: " + ", ".join(p.name for p in paths))
    echo(
        "\nnext: run `streamkit demo` again to append and process another day; "
        f"`streamkit checkpoints {store_dir} order-lifecycle`; "
        f"`streamkit verify {store_dir} order-lifecycle --replay`; "
        "or open notebooks/01-quickstart.ipynb."
    )
    return {
        "report": report,
        "states": counts,
        "quarantine": reasons,
        "lateness": compared,
        "waiting": waiting,
        "plots": paths,
    }


def compare_lateness(in_log_order: pl.DataFrame, with_lateness: pl.DataFrame) -> pl.DataFrame:
    """Quarantined events per reason: applied in log order vs with lateness.

    Examples
    --------
    >>> a = pl.DataFrame({"reason": ["late", "late", "undefined"]})
    >>> compare_lateness(a, pl.DataFrame({"reason": ["undefined"]})).rows()
    [('late', 2, 0), ('undefined', 1, 1)]
    """
    columns = ("in log order", f"lateness={LATENESS}")
    counts = [
        q.group_by("reason").agg(pl.len().cast(pl.Int64).alias(c))
        for q, c in zip((in_log_order, with_lateness), columns, strict=True)
    ]
    return (
        counts[0]
        .join(counts[1], on="reason", how="full", coalesce=True)
        .with_columns(pl.col(columns).fill_null(0))
        .sort("reason")
    )


def quarantine_by_reason(before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    """Quarantined events per reason: added by this run, and in all.

    ``before`` and ``after`` are the pipeline's quarantine before and after the
    run. (A run may quarantine events read by an earlier run that waited for the
    watermark, so source offsets do not tell a run's own.)

    Examples
    --------
    >>> before = pl.DataFrame({"reason": ["late"]})
    >>> after = pl.DataFrame({"reason": ["late", "undefined", "late"]})
    >>> quarantine_by_reason(before, after).rows()
    [('late', 1, 2), ('undefined', 1, 1)]
    """
    if not after.height:
        schema = {"reason": pl.String, "this run": pl.Int64, "all runs": pl.Int64}
        return pl.DataFrame(schema=schema)
    old = before.group_by("reason").agg(pl.len().cast(pl.Int64).alias("before"))
    return (
        after.group_by("reason")
        .agg(pl.len().cast(pl.Int64).alias("all runs"))
        .join(old, on="reason", how="left")
        .select(
            "reason",
            (pl.col("all runs") - pl.col("before").fill_null(0)).alias("this run"),
            "all runs",
        )
        .sort("reason")
    )


def _table(df: pl.DataFrame) -> str:
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        return str(df)


def _write_plots(store: Any, pipe: Any, folder: Path) -> list[Path]:
    from matplotlib.figure import Figure  # no pyplot: no global backend, nothing left open

    from streamkit import plot
    from streamkit.datasets import order_machine

    folder.mkdir(parents=True, exist_ok=True)
    history = store.log("order-transitions").scan().collect()
    machine = order_machine()
    figures: dict[str, Callable[[Any], Any]] = {
        "timeline.png": lambda ax: plot.timeline(history, ax=ax),
        "occupancy.png": lambda ax: plot.occupancy(history, every="1h", ax=ax),
        "transition_matrix.png": lambda ax: plot.transition_matrix(history, machine=machine, ax=ax),
        "dwell_times.png": lambda ax: plot.dwell_times(history, ax=ax),
        "process_map.png": lambda ax: plot.process_map(history, machine=machine, ax=ax),
    }
    paths = []
    for name, draw in figures.items():
        fig = Figure(figsize=(18, 5) if name == "process_map.png" else (10, 6))
        draw(fig.add_subplot())
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        paths.append(folder / name)
    return paths
