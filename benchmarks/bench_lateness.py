"""End-to-end throughput with ``lateness`` on displaced data against in-order data.

The events of :mod:`benchmarks.bench_pipeline` (``make_events``: zipf keys,
times stepping 0-2 s per event) are written to two logs in the same pieces:

* in order: ``make_events``' rows as they are;
* displaced: the same rows with a fraction of them (10 %) moved later in row
  order by up to ``lateness`` of event time (each such row goes where the rows'
  times pass its own time plus a delay ``d``, ``0 <= d < lateness``).

``Log.append`` stores each append sorted by time, so disorder survives only
between appends: a row displaced within its own piece is put back in place.
Hence the default lateness is 6 hours (about 21,600 events of this data, two
10,000-row pieces), so that most displaced rows cross a piece boundary; with
``--lateness 10m`` (about 600 events) only a few percent of them would.
The benchmark reports how many rows of the displaced log stand behind the
largest time before them.

Runs, interleaved (order rotated per repeat), medians:

* A: ``.transitions(..., lateness=L)`` on the displaced log;
* B: the same pipeline on the in-order log (goal: A >= 0.8x B);
* C: no lateness on the in-order log (today's path, for context);
* D: no lateness on the displaced log, once: its late count, which lateness
  should bring to about 0 (A's).

Usage: ``python -m benchmarks.bench_lateness [--quick] [--events N] [--lateness 6h]``;
``--quick`` runs 400k events once (well under a minute).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta

import numpy as np
import polars as pl

import streamkit as sk
from benchmarks.bench_pipeline import bench_machine, make_events
from streamkit.machines._duration import parse_duration


def displace(frame: pl.DataFrame, fraction: float, lateness_us: int, seed: int = 1) -> pl.DataFrame:
    """``frame`` (time-ordered) with ``fraction`` of its rows moved later in row
    order: each such row goes after the rows whose time is at most its own plus
    a delay drawn from ``[0, lateness_us)``, so its key may see it late but the
    watermark (largest time read minus lateness) has not passed it."""
    rng = np.random.default_rng(seed)
    ts = frame["ts"].cast(pl.Int64).to_numpy()
    moved = rng.random(len(ts)) < fraction
    when = ts.copy()
    when[moved] += rng.integers(0, max(lateness_us, 1), int(moved.sum()))
    return frame[np.argsort(when, kind="stable")]


def behind(log: sk.Log) -> int:
    """Rows of ``log`` (in log order) whose time is below the largest time before them."""
    ts = log.scan().select("ts").collect()["ts"].cast(pl.Int64).to_numpy()
    if len(ts) < 2:
        return 0
    return int((ts[1:] < np.maximum.accumulate(ts)[:-1]).sum())


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--keys", type=int, default=120_000, help="as bench_pipeline")
    ap.add_argument("--batch-rows", type=int, default=1_000_000)
    ap.add_argument("--piece-rows", type=int, default=10_000, help="rows per append")
    ap.add_argument("--lateness", default="6h", help="a duration, e.g. 10m, 6h")
    ap.add_argument("--displaced", type=float, default=0.10, help="fraction of rows moved")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats (medians)")
    ap.add_argument("--quick", action="store_true", help="400k events, one repeat")
    args = ap.parse_args(argv)
    n = 400_000 if args.quick else args.events
    if args.quick:
        args.repeat = 1
    lateness = parse_duration(args.lateness)
    lateness_us = lateness // timedelta(microseconds=1)
    machine = bench_machine()
    frame = make_events(n, args.keys)
    shuffled = displace(frame, args.displaced, lateness_us)
    from streamkit.kernel import warmup

    warmup()
    with tempfile.TemporaryDirectory() as tmp:
        store = sk.Store(tmp)
        logs = {
            "in_order": store.log("in-order", key="device", time="ts"),
            "displaced": store.log("displaced", key="device", time="ts"),
        }
        t0 = time.perf_counter()
        for name, data in (("in_order", frame), ("displaced", shuffled)):
            for part in data.iter_slices(args.piece_rows):
                logs[name].append(part)
        t_append = time.perf_counter() - t0
        n_behind = behind(logs["displaced"])
        n_moved = round(args.displaced * n)

        runs: dict[str, tuple[str, timedelta | None]] = {
            "A": ("displaced", lateness),
            "B": ("in_order", lateness),
            "C": ("in_order", None),
        }

        def run(label: str, source: str, late: timedelta | None, rep: int) -> sk.RunReport:
            pipe = (
                sk.Pipeline(f"{label}-{rep}", store, batch_rows=args.batch_rows)
                .read(logs[source])
                .transitions(machine, event="event", on_undefined="ignore", lateness=late)
                .write(store.log(f"history-{label}-{rep}", key="key", time="time"))
            )
            return pipe.run(progress=False)

        # warmup() compiles the default path; warm the lateness path too (its
        # kernel variant, first-call costs) on a small log, untimed.
        logs["warm"] = store.log("warm", key="device", time="ts")
        for part in shuffled.head(5 * args.piece_rows).iter_slices(args.piece_rows):
            logs["warm"].append(part)
        run("warm-late", "warm", lateness, 0)
        run("warm", "warm", None, 0)

        seconds: dict[str, list[float]] = {k: [] for k in runs}
        reports: dict[str, sk.RunReport] = {}
        labels = list(runs)
        for rep in range(args.repeat):
            for label in labels[rep % 3 :] + labels[: rep % 3]:
                t0 = time.perf_counter()
                reports[label] = run(label, *runs[label], rep)
                seconds[label].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reports["D"] = run("D", "displaced", None, 0)
        t_d = time.perf_counter() - t0
        rows = {
            label: store.log(f"history-{label}-0").scan().select(pl.len()).collect().item()
            for label in ("A", "B", "C", "D")
        }

    t = {k: float(np.median(v)) for k, v in seconds.items()}
    figures = {
        "events": float(n),
        "lateness_s": lateness.total_seconds(),
        "moved_rows": float(n_moved),
        "rows_behind_in_log": float(n_behind),
        "lateness_displaced_events_per_s": n / t["A"],
        "lateness_in_order_events_per_s": n / t["B"],
        "no_lateness_in_order_events_per_s": n / t["C"],
        "no_lateness_displaced_events_per_s": n / t_d,
        "ratio_displaced_vs_in_order": t["B"] / t["A"],
        "ratio_displaced_vs_no_lateness": t["C"] / t["A"],
        "late_with_lateness": float(reports["A"].late),
        "late_without_lateness": float(reports["D"].late),
        "batches": float(reports["A"].batches),
    }
    print(
        f"{n:,} events, {args.keys:,} zipf keys, appended in {args.piece_rows:,}-row pieces "
        f"({t_append:.1f} s for both logs), batches of {args.batch_rows:,}; "
        f"lateness {args.lateness}; {args.displaced:.0%} of rows moved ({n_moved:,}), "
        f"{n_behind:,} of them behind the largest earlier time in the log; "
        f"medians of {args.repeat} interleaved runs"
    )
    for label, text in (
        ("A", "lateness, displaced log"),
        ("B", "lateness, in-order log"),
        ("C", "no lateness, in-order log"),
    ):
        runs_s = ", ".join(f"{s:.2f}" for s in seconds[label])
        print(
            f"  {label} {text:<28} {t[label]:7.2f} s {n / t[label]:>12,.0f} events/s  "
            f"late {reports[label].late:>8,}  history {rows[label]:>9,}  ({runs_s} s)"
        )
    print(
        f"  D {'no lateness, displaced log':<28} {t_d:7.2f} s {n / t_d:>12,.0f} events/s  "
        f"late {reports['D'].late:>8,}  history {rows['D']:>9,}  (once)"
    )
    print(f"  A / B  {figures['ratio_displaced_vs_in_order']:.2f}x  (goal >= 0.8x)")
    print(f"  A / C  {figures['ratio_displaced_vs_no_lateness']:.2f}x  (no lateness, in order)")
    return figures


if __name__ == "__main__":
    main()
