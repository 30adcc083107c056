"""Benchmark the event log: append and full-scan throughput against plain Parquet.

For each backend (a local folder; S3 on a throwaway SeaweedFS server on loopback)
the same frames are

- appended to a streamkit log (validation, time sort check, zstd Parquet, crc32,
  create-if-absent segment and version files, fsync on local disk), and written
  with plain ``pl.DataFrame.write_parquet`` (zstd) to files - on S3 through the
  same fsspec file system;
- read back in full: ``log.scan().collect()`` (reads and verifies every segment)
  against plain ``pl.read_parquet`` of the files (on local disk one call over the
  list of files; on S3 a concurrent ``fs.cat`` of the files, then
  ``pl.read_parquet`` of each).

Figures are rows/s and MB/s (in-memory size of the frames), best of
``--repeat`` runs, and ratios streamkit/raw (goals on local disk: append >= 0.7,
scan >= 0.8). ``python -m benchmarks.bench_log --quick`` runs a smaller workload;
``--no-s3`` skips SeaweedFS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from streamkit._testing import seaweedfs
from streamkit.storage import Log, Store
from streamkit.storage._fs import FileSystem

GOALS = {"append": 0.7, "scan": 0.8}


def make_frames(batches: int, rows: int, seed: int = 7) -> list[pl.DataFrame]:
    """``batches`` frames of ``rows`` events: string keys, increasing µs times."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    frames = []
    t0 = 0
    for _ in range(batches):
        steps = rng.integers(0, 2_000, size=rows).cumsum() + t0
        t0 = int(steps[-1])
        keys = rng.integers(0, 100_000, size=rows)
        frames.append(
            pl.DataFrame(
                {
                    "k": pl.Series(keys).cast(pl.String).str.pad_start(6, "0"),
                    "t": pl.Series(steps) + int(start.timestamp() * 1_000_000),
                    "kind": pl.Series(rng.integers(0, 6, size=rows)).cast(pl.Int8),
                    "amount": rng.normal(100.0, 25.0, size=rows).round(2),
                    "qty": rng.integers(1, 20, size=rows),
                }
            ).with_columns(pl.col("t").cast(pl.Datetime("us")))
        )
    return frames


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _figures(seconds: float, rows: int, nbytes: int) -> dict[str, float]:
    return {"seconds": seconds, "rows_per_s": rows / seconds, "mb_per_s": nbytes / seconds / 1e6}


def bench_backend(
    name: str,
    url_for: Callable[[], str],
    options: dict[str, Any],
    frames: Sequence[pl.DataFrame],
    repeat: int,
) -> dict[str, dict[str, float]]:
    """Measure log append/scan and raw write/read on one backend."""
    rows = sum(f.height for f in frames)
    nbytes = sum(int(f.estimated_size()) for f in frames)
    expected = pl.concat(frames)

    logs: list[Log] = []

    def append() -> None:
        log = Store(url_for(), storage_options=options).log("bench", key="k", time="t")
        for frame in frames:
            log.append(frame)
        logs.append(log)

    raw_roots: list[FileSystem] = []

    def raw_write() -> None:
        fs = FileSystem(url_for(), options)
        for i, frame in enumerate(frames):
            if fs.is_local:
                path = Path(fs.full_path(f"raw/{i:05d}.parquet"))
                path.parent.mkdir(parents=True, exist_ok=True)
                frame.write_parquet(path, compression="zstd")
            else:
                with fs.fsspec.open(fs.full_path(f"raw/{i:05d}.parquet"), "wb") as fh:
                    frame.write_parquet(fh, compression="zstd")
        raw_roots.append(fs)

    t_append = _best(append, repeat)
    t_raw_write = _best(raw_write, repeat)
    log = logs[-1]
    raw = raw_roots[-1]
    paths = [raw.full_path(f"raw/{i:05d}.parquet") for i in range(len(frames))]

    def scan() -> pl.DataFrame:
        return log.scan().collect()

    def raw_read() -> pl.DataFrame:
        if raw.is_local:
            return pl.read_parquet(paths)
        blobs = raw.fsspec.cat(paths)
        return pl.concat([pl.read_parquet(blobs[p]) for p in paths])

    if not scan().equals(expected) or not raw_read().equals(expected):
        raise AssertionError(f"{name}: read back data differs from the frames written")
    t_scan = _best(scan, repeat)
    t_raw_read = _best(raw_read, repeat)
    return {
        "append": _figures(t_append, rows, nbytes),
        "raw_write": _figures(t_raw_write, rows, nbytes),
        "scan": _figures(t_scan, rows, nbytes),
        "raw_read": _figures(t_raw_read, rows, nbytes),
        "ratio": {"append": t_raw_write / t_append, "scan": t_raw_read / t_scan},
    }


def print_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    """Print one line per backend and operation, with ratios and goals."""
    head = f"{'backend':<8} {'operation':<10} {'rows/s':>14} {'MB/s':>9} {'raw rows/s':>14} "
    print(head + f"{'raw MB/s':>9} {'ratio':>6}  goal")
    for backend, figs in results.items():
        for op, raw in (("append", "raw_write"), ("scan", "raw_read")):
            ratio = figs["ratio"][op]
            goal = GOALS[op]
            mark = "" if backend != "local" else ("ok" if ratio >= goal else "MISSED")
            print(
                f"{backend:<8} {op:<10} {figs[op]['rows_per_s']:>14,.0f} "
                f"{figs[op]['mb_per_s']:>9.1f} {figs[raw]['rows_per_s']:>14,.0f} "
                f"{figs[raw]['mb_per_s']:>9.1f} {ratio:>6.2f}  >= {goal} {mark}"
            )


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Run the benchmark; returns ``{backend: {operation: figures}}``.

    Options: ``--quick``, ``--batches N``, ``--rows N``, ``--repeat N``, ``--no-s3``.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_log")
    parser.add_argument("--quick", action="store_true", help="small workload")
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true", help="skip the SeaweedFS backend")
    args = parser.parse_args(list(argv) if argv is not None else None)
    batches = args.batches or (8 if args.quick else 20)
    rows = args.rows or (50_000 if args.quick else 250_000)
    frames = make_frames(batches, rows)
    total = batches * rows
    print(f"{batches} appends x {rows:,} rows = {total:,} rows, best of {args.repeat}")

    results: dict[str, dict[str, dict[str, float]]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="streamkit-bench-log-"))
    try:
        results["local"] = bench_backend(
            "local", lambda: str(tmp / uuid.uuid4().hex), {}, frames, args.repeat
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_s3:
        with seaweedfs() as s3:
            options = {
                "key": s3["key"],
                "secret": s3["secret"],
                "client_kwargs": {"endpoint_url": s3["endpoint_url"], "region_name": "us-east-1"},
            }
            results["s3"] = bench_backend(
                "s3",
                lambda: f"s3://{s3['bucket']}/{uuid.uuid4().hex}",
                options,
                frames,
                max(1, args.repeat - 1),
            )
    print_table(results)
    return results


if __name__ == "__main__":
    main()
