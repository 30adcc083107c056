"""``streamkit demo``: the main job on a local default store.

Each run appends one more simulated day of orders to the ``orders`` log,
processes only what arrived since the last checkpoint in several micro-batches,
prints a summary and writes the plots as PNG files next to the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

DEMO_WRITER = "streamkit-demo"


def demo_pipeline(store: Any) -> Any:
    """The demo's pipeline: orders -> order lifecycle transitions.

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
        .transitions(order_machine(), event="event")
        .write(store.log("order-transitions", key="key", time="time"))
    )


LOOKBACK_DAYS = 30


def day_of_events(orders: int, day: int) -> pl.DataFrame:
    """The events that *arrive* on simulated day ``day`` (0-based).

    Orders created on earlier days keep producing events (payments, shipping,
    deliveries, returns) for weeks, so a day's delivery holds the events that
    arrive during that day, from the orders of the last ``LOOKBACK_DAYS`` days,
    in arrival order; the generator's late arrivals stay late.

    Examples
    --------
    >>> d0 = day_of_events(50, 0)
    >>> str(d0["ts"].max()) < "2026-01-02"
    True
    """
    from streamkit.datasets import generate_orders

    frames = []
    for j in range(max(0, day - LOOKBACK_DAYS), day + 1):
        f = generate_orders(orders, day=j, seed=j).with_row_index("__arrival")
        # When a row arrives: the generator's late rows sit after later events,
        # so a row arrives at the running maximum of the times before it.
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
    txn = log.transaction(DEMO_WRITER)
    day = txn.seq if txn is not None else 0
    frame = day_of_events(orders, day)
    log.append(frame, writer=DEMO_WRITER, seq=day + 1, meta={"day": day})
    echo(f"appended day {day + 1}: {frame.height:,} order events to {store.url}/orders")

    pipe = demo_pipeline(store)
    # Compile (or load from the disk cache) the kernel before the timed run, so
    # the run's events/s measure processing, not a one-off compilation.
    kernel.ensure_compiled()
    report = pipe.run(batch_rows=max(frame.height // 4, 1), progress=False)
    echo(f"\nthis run (the events of day {day + 1}):")
    echo(str(report))

    state = pipe.state()
    counts = state.group_by("state").agg(pl.len().alias("orders")).sort("orders", descending=True)
    reasons = quarantine_by_reason(pipe.quarantine(), report.start_offset, report.end_offset)
    days = "day 1" if day == 0 else f"days 1-{day + 1}"
    echo(f"\norders by state after this run (all orders of {days}):")
    echo(_table(counts))
    echo("\nquarantined events by reason, this run and all runs so far:")
    echo(_table(reasons))

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
    return {"report": report, "states": counts, "quarantine": reasons, "plots": paths}


def quarantine_by_reason(quarantine: pl.DataFrame, start: int, end: int) -> pl.DataFrame:
    """Quarantined events per reason: from source offsets ``[start, end)`` and in all.

    Examples
    --------
    >>> q = pl.DataFrame({"reason": ["late", "undefined", "late"], "offset": [1, 5, 7]})
    >>> quarantine_by_reason(q, 5, 8).rows()
    [('late', 1, 2), ('undefined', 1, 1)]
    """
    this_run = pl.col("offset").is_between(start, end, closed="left")
    return (
        quarantine.group_by("reason")
        .agg(this_run.sum().cast(pl.Int64).alias("this run"), pl.len().alias("all runs"))
        .sort("reason")
        if quarantine.height
        else pl.DataFrame(schema={"reason": pl.String, "this run": pl.Int64, "all runs": pl.Int64})
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
