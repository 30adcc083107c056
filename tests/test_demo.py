"""The demo's summary: every table says its scope, throughput is printed once."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from streamkit.demo import demo_pipeline, run_demo
from streamkit.storage import Store


def test_demo_tables_are_labelled_by_scope_and_throughput_printed_once(tmp_path: Path) -> None:
    lines: list[str] = []
    store = tmp_path / "demo"
    run_demo(store, orders=150, echo=lines.append, plots=False)
    lines.clear()
    out = run_demo(store, orders=150, echo=lines.append, plots=False)
    text = "\n".join(lines)
    report = out["report"]
    assert report.batches > 0

    # the run's own numbers are introduced as this run's, the state as all days'
    assert "this run (the events of day 2)" in text
    assert "orders by state after this run (all orders of days 1-2)" in text
    assert text.index("this run (the events of day 2)") < text.index(str(report))
    assert out["states"]["orders"].sum() == 300  # every order of both days

    # one throughput figure, saying what it measures
    assert text.count("events/s") == 1
    assert "throughput" not in text
    assert "source rows read per second of the run" in text

    # the quarantine table has both scopes, and each column adds up to its scope
    assert "quarantined events by reason, this run and all runs so far" in text
    reasons = out["quarantine"]
    assert reasons.columns == ["reason", "this run", "all runs"]
    assert reasons["this run"].sum() == report.quarantined
    everything = demo_pipeline(Store(str(store))).quarantine()
    assert reasons["all runs"].sum() == everything.height > report.quarantined
    assert reasons.filter(pl.col("this run") > pl.col("all runs")).height == 0

    # the same events applied in log order (no lateness) for comparison: lateness
    # quarantines no more late events, and its column is the pipeline's quarantine
    assert "applied in log order vs with lateness='10m'" in text
    compared = out["lateness"].sort("reason")
    assert compared.columns == ["reason", "in log order", "lateness=10m"]
    assert compared["lateness=10m"].sum() == everything.height
    late = compared.filter(pl.col("reason") == "late")
    assert late.height == 0 or late["in log order"][0] >= late["lateness=10m"][0]
    assert f"{out['waiting']:,} events wait for the watermark" in text
