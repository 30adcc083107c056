"""Per-key state at scale: what a batch costs as the number of keys held grows.

For each key count K (default 10k, 1M, 4M) a fresh local store gets a prefill in
which each of the K keys has one event, run in one big batch, then 100,000-event
batches whose keys mix a zipf-distributed hot set (60 %) with keys drawn
uniformly over all K (40 %), so that a batch touches some 30k-60k keys ("mixed":
the larger K, the more keys a batch touches). Each K above 10,000 also runs
batches drawn the same way from a fixed working set of 10,000 keys spread over
the K ("10k set"): the very batch of the 10k-key run, so that time per batch
against K shows what holding more keys costs, the batch held constant
(``--working``). The pipeline is bench_pipeline's: the 8-state machine, the
history written to a log.

* time per batch: wall time of ``run(batch_rows=100_000)`` over the batches,
  divided by the batches, and the median, mean and maximum of
  ``RunReport.batch_seconds`` (40 batches by default: with 4M keys the bands'
  first compactions fall inside, so the mean carries their cost);
* bytes written per checkpoint: files created (or resized) under
  ``<store>/_pipelines/<name>/state/`` by single-batch runs, found by listing the
  directory before and after, so it holds for any state file layout;
* state on disk after the run against one full snapshot (the final
  ``pipe.state()`` frame as Arrow IPC, zstd); the recovery table gives it again
  after 5, 20 and 50 checkpoints, once compaction has run (the goal is <= 3x);
* recovery, with the largest K: a new ``Pipeline`` object (a restarted process)
  runs one pending batch after 5, 20 and 50 checkpoints were taken (default
  ``keep_checkpoints=20``); the figure is ``run()`` start to that batch committed
  (beside it: ``pipe.state()`` alone, and the batch's read and compute, i.e. its
  ``RunReport.batch_seconds``, which the commit of a last batch is not part of).

``median`` in the table is the median of ``RunReport.batch_seconds`` (one turn
of the pipelined batch loop: compute one batch, land the previous one);
``ms/batch`` also carries the run's start (opening the state) and its end.

The end-to-end check (4M events, 200k keys, against a raw copy of the same rows)
is ``benchmarks.bench_pipeline``; it is not repeated here.

Usage: ``python -m benchmarks.bench_state [--quick] [--keys 10000,1000000,4000000]
[--batches 40] [--checkpoints 5,20,50] [--working 10000]``. ``--quick`` (10k and 100k keys, a few
batches, recovery after 2, 4 and 8 checkpoints) takes well under a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

import streamkit as sk
from benchmarks.bench_pipeline import N_EVENTS, bench_machine

BATCH = 100_000
HOT_SHARE = 0.6  # of a batch's events go to the zipf hot set, the rest uniformly to all keys
HOT_KEYS = 100_000  # the hot set: the zipf ranks 1..HOT_KEYS (at most all keys)
NAME = "state-bench"


class _Feed:
    """Appends events to one source log, on one clock that only moves forward."""

    def __init__(self, src: sk.Log, n_keys: int, seed: int, working: int | None = None) -> None:
        self.src = src
        self.n_keys = n_keys
        self.rng = np.random.default_rng(seed)
        # A fixed working set: every batch draws its keys from these (hot set
        # and spread alike), so a batch touches as many keys whatever is held.
        self.working = (
            None
            if working is None or working >= n_keys
            else self.rng.choice(n_keys, working, replace=False) + 1
        )
        self.clock = int(np.datetime64(datetime(2026, 1, 1), "us").astype(np.int64))

    def _frame(self, ids: np.ndarray) -> pl.DataFrame:
        n = len(ids)
        ts = self.clock + np.cumsum(self.rng.integers(0, 2_000_000, n))
        self.clock = int(ts[-1])
        return pl.DataFrame(
            {
                "device": pl.Series(ids.astype(np.int64)).cast(pl.String),
                "ts": pl.Series(ts).cast(pl.Datetime("us")),
                "event": pl.Series(self.rng.integers(0, N_EVENTS, n))
                .cast(pl.String)
                .str.replace(r"^", "e"),
                "value": self.rng.normal(size=n),
            }
        )

    def prefill(self) -> None:
        """One event for each of the keys 1..n_keys, in random order."""
        ids = self.rng.permutation(self.n_keys) + 1
        for lo in range(0, self.n_keys, 1_000_000):
            self.src.append(self._frame(ids[lo : lo + 1_000_000]))

    def batches(self, count: int) -> float:
        """Append ``count`` batches of BATCH events; the mean distinct keys per batch."""
        touched = []
        pool = self.n_keys if self.working is None else len(self.working)
        hot_keys = min(pool, HOT_KEYS)
        n_hot = int(BATCH * HOT_SHARE)
        for _ in range(count):
            ranks = self.rng.zipf(1.1, size=n_hot * 3)
            ranks = ranks[ranks <= hot_keys][:n_hot]
            if len(ranks) < n_hot:  # pragma: no cover - only with tiny hot sets
                extra = self.rng.integers(1, hot_keys + 1, n_hot - len(ranks))
                ranks = np.concatenate([ranks, extra])
            spread = self.rng.integers(1, pool + 1, BATCH - n_hot)
            ids = self.rng.permutation(np.concatenate([ranks, spread]))
            if self.working is not None:
                ids = self.working[ids - 1]
            touched.append(len(np.unique(ids)))
            self.src.append(self._frame(ids))
        return float(np.mean(touched))


def _pipeline(store: sk.Store, src: sk.Log) -> sk.Pipeline:
    return (
        sk.Pipeline(NAME, store, batch_rows=BATCH)
        .read(src)
        .transitions(bench_machine(), event="event", on_undefined="ignore")
        .write(store.log("history", key="key", time="time"))
    )


def _files(root: Path) -> dict[str, int]:
    """Relative path -> size of every file under ``root`` (any depth)."""
    out: dict[str, int] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            with contextlib.suppress(FileNotFoundError):  # deleted while listing
                out[str(path.relative_to(root))] = path.stat().st_size
    return out


def _written(before: dict[str, int], after: dict[str, int]) -> int:
    """Bytes of the files that are new in ``after`` or changed size."""
    return sum(size for path, size in after.items() if before.get(path) != size)


def _snapshot_bytes(frame: pl.DataFrame) -> int:
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="zstd")
    return buf.getbuffer().nbytes


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _keys_run(
    n_keys: int, batches: int, probes: int, seed: int, working: int | None = None
) -> dict[str, float]:
    """Time per batch, bytes per checkpoint and state on disk with ``n_keys`` held
    (batches drawn from a working set of ``working`` keys, if given)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = sk.Store(tmp)
        src = store.log("events", key="device", time="ts")
        feed = _Feed(src, n_keys, seed, working)
        feed.prefill()
        pipe = _pipeline(store, src)
        t0 = time.perf_counter()
        pipe.run(batch_rows=n_keys, progress=False)
        t_fill = time.perf_counter() - t0

        touched = feed.batches(batches)
        t0 = time.perf_counter()
        report = pipe.run(progress=False)
        wall = time.perf_counter() - t0
        assert report.batches == batches, report

        # Bytes per checkpoint: one batch per run, the state folder listed around it.
        state_dir = Path(tmp, "_pipelines", NAME, "state")
        feed.batches(probes)
        written = []
        for _ in range(probes):
            before = _files(state_dir)
            pipe.run(max_batches=1, progress=False)
            written.append(_written(before, _files(state_dir)))
        on_disk = sum(_files(state_dir).values())
        state = pipe.state()
        assert state.height == n_keys, (state.height, n_keys)
        snapshot = _snapshot_bytes(state)
    return {
        "prefill_s": t_fill,
        "ms_per_batch": wall / batches * 1e3,
        "median_batch_ms": float(np.median(report.batch_seconds)) * 1e3,
        "mean_batch_ms": float(np.mean(report.batch_seconds)) * 1e3,
        "max_batch_ms": float(np.max(report.batch_seconds)) * 1e3,
        "keys_touched": touched,
        "bytes_per_checkpoint": float(np.median(written)),
        "state_bytes": float(on_disk),
        "snapshot_bytes": float(snapshot),
    }


def _recovery(n_keys: int, points: list[int], seed: int) -> list[dict[str, float]]:
    """First batch after a restart, after ``points`` checkpoints were taken."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = sk.Store(tmp)
        src = store.log("events", key="device", time="ts")
        feed = _Feed(src, n_keys, seed)
        feed.prefill()
        report = _pipeline(store, src).run(batch_rows=n_keys, progress=False)
        taken = report.checkpoint or 0
        state_dir = Path(tmp, "_pipelines", NAME, "state")
        for point in sorted(points):
            if point > taken:
                feed.batches(point - taken)
                taken = _pipeline(store, src).run(progress=False).checkpoint or 0
            feed.batches(1)
            retained = _pipeline(store, src).checkpoints().height
            t0 = time.perf_counter()
            state = _pipeline(store, src).state()  # reading the state alone, for comparison
            load = time.perf_counter() - t0
            snapshot = _snapshot_bytes(state)
            fresh = _pipeline(store, src)  # what a restarted process builds
            t0 = time.perf_counter()
            report = fresh.run(max_batches=1, progress=False)
            seconds = time.perf_counter() - t0
            assert report.batches == 1, report
            rows.append(
                {
                    "checkpoints": float(taken),
                    "retained": float(retained),
                    "first_batch_s": seconds,
                    "state_s": load,
                    "prepare_s": report.batch_seconds[0],
                    "state_bytes": float(sum(_files(state_dir).values())),
                    "snapshot_bytes": float(snapshot),
                }
            )
            taken = report.checkpoint or 0
    return rows


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", default="10000,1000000,4000000", help="key counts, comma-separated")
    ap.add_argument(
        "--batches",
        type=int,
        default=40,
        help="timed 100,000-event batches (40: past the first compactions with 4M keys)",
    )
    ap.add_argument("--probes", type=int, default=3, help="single-batch runs for bytes/checkpoint")
    ap.add_argument("--checkpoints", default="5,20,50", help="recovery after this many checkpoints")
    ap.add_argument(
        "--working",
        type=int,
        default=10_000,
        help="also run each larger key count with batches drawn from this many keys "
        "(the same batch at every size); 0: skip",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="10k and 100k keys, a few batches")
    args = ap.parse_args(argv)
    if args.quick:
        args.keys, args.batches, args.probes, args.checkpoints = "10000,100000", 4, 2, "2,4,8"
    keys = [int(k) for k in args.keys.split(",")]
    points = [int(c) for c in args.checkpoints.split(",")]
    from streamkit.kernel import warmup

    warmup()

    figures: dict[str, float] = {}
    print(
        f"{BATCH:,}-event batches ({HOT_SHARE:.0%} zipf over a hot set of "
        f"{HOT_KEYS:,} keys, the rest uniform over all keys), 8-state machine, local disk"
    )
    print(
        f"{'keys held':>10} {'batch':>8} {'prefill':>8} {'ms/batch':>9} {'median':>7} "
        f"{'mean':>6} {'max':>6} "
        f"{'touched':>8} {'bytes/checkpoint':>17} {'state on disk':>14} {'snapshot':>10} "
        f"{'disk/snap':>9}"
    )
    runs = [(k, None) for k in keys]
    if args.working:
        runs += [(k, args.working) for k in keys if k > args.working]
    for k, working in runs:
        r = _keys_run(k, args.batches, args.probes, args.seed, working)
        tag = "" if working is None else f"_working{working}"
        for name, value in r.items():
            figures[f"{name}_{k}{tag}"] = value
        kind = "mixed" if working is None else f"{working // 1000}k set"
        print(
            f"{k:>10,} {kind:>8} {r['prefill_s']:>7.1f}s {r['ms_per_batch']:>9.0f} "
            f"{r['median_batch_ms']:>7.0f} {r['mean_batch_ms']:>6.0f} {r['max_batch_ms']:>6.0f} "
            f"{r['keys_touched']:>8,.0f} "
            f"{_mb(r['bytes_per_checkpoint']):>17} {_mb(r['state_bytes']):>14} "
            f"{_mb(r['snapshot_bytes']):>10} {r['state_bytes'] / r['snapshot_bytes']:>8.1f}x",
            flush=True,
        )
    lo, hi = min(keys), max(keys)
    if lo != hi:
        # The goal is about a batch in a running pipeline: the median turn of the
        # batch loop. ms/batch also carries the run's start (restoring the state),
        # which the recovery table below measures on its own.
        figures["ratio_largest_vs_smallest"] = (
            figures[f"median_batch_ms_{hi}"] / figures[f"median_batch_ms_{lo}"]
        )
        figures["ratio_with_start_largest_vs_smallest"] = (
            figures[f"ms_per_batch_{hi}"] / figures[f"ms_per_batch_{lo}"]
        )
        figures["ratio_mean_largest_vs_smallest"] = (
            figures[f"mean_batch_ms_{hi}"] / figures[f"mean_batch_ms_{lo}"]
        )
        print(
            f"  time per batch (median), {hi:,} keys / {lo:,} keys: "
            f"{figures['ratio_largest_vs_smallest']:.2f}x  (goal <= 1.5x); mean (compactions "
            f"included): {figures['ratio_mean_largest_vs_smallest']:.2f}x; with the run's "
            f"start: {figures['ratio_with_start_largest_vs_smallest']:.2f}x"
        )
        same = f"median_batch_ms_{hi}_working{args.working}"
        if same in figures and lo <= args.working:
            # The smallest run's batches touch every one of its keys: drawn from a
            # working set of all its keys, they are the same kind of batch.
            figures["ratio_same_batch_largest_vs_smallest"] = (
                figures[same] / figures[f"median_batch_ms_{lo}"]
            )
            print(
                f"  the same batch ({args.working:,}-key working set) with {hi:,} keys held "
                f"/ {lo:,} keys: {figures['ratio_same_batch_largest_vs_smallest']:.2f}x  "
                f"(goal <= 1.5x)"
            )
    print(
        f"  state on disk / one snapshot, {hi:,} keys: "
        f"{figures[f'state_bytes_{hi}'] / figures[f'snapshot_bytes_{hi}']:.1f}x  (goal <= 3x)"
    )

    print(f"recovery with {hi:,} keys: a new Pipeline runs one pending batch")
    print(
        f"{'checkpoints':>12} {'retained':>9} {'run() to batch':>15} {'state()':>8} "
        f"{'prepare':>8} {'on disk':>10} {'disk/snap':>9}"
    )
    for row in _recovery(hi, points, args.seed):
        n = int(row["checkpoints"])
        figures[f"recovery_s_after_{n}"] = row["first_batch_s"]
        figures[f"recovery_state_s_after_{n}"] = row["state_s"]
        figures[f"recovery_prepare_s_after_{n}"] = row["prepare_s"]
        figures[f"disk_per_snapshot_after_{n}"] = row["state_bytes"] / row["snapshot_bytes"]
        print(
            f"{n:>12} {int(row['retained']):>9} {row['first_batch_s']:>14.2f}s "
            f"{row['state_s']:>7.2f}s {row['prepare_s']:>7.2f}s {_mb(row['state_bytes']):>10} "
            f"{row['state_bytes'] / row['snapshot_bytes']:>8.1f}x",
            flush=True,
        )
    print(
        "end-to-end (4M events, 200k keys, against a raw copy): python -m benchmarks.bench_pipeline"
    )
    return figures


if __name__ == "__main__":
    main()
