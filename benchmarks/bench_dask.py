"""A Dask run against a local run of the same pipeline on the same data.

The issue-14 benchmark: 4M events (``bench_pipeline``'s machine and keys, and a
variant with 4M distinct keys so that the state holds 4M keys) in a source log
on local disk with 8 partitions (and with 1: then every task reads the whole
batch). The same data is appended the same way to two stores; one pipeline runs
in-process (``pipe.run()``), the other on a ``LocalCluster`` of 2 single-thread
worker processes (``pipe.run(executor=sk.DaskExecutor(client))``). Repeats
alternate which of the two runs first (medians). Reported: wall time,
events/s, the ratio dask/local (goal >= 0.8), batch seconds, the tasks'
compute times (``distributed.get_task_stream``), the driver's commit time per
batch, whether the results are identical (history and quarantine as sets,
per key in order; state by key), the driver's peak RSS in a fresh process, and
the per-task overhead of an empty and a 1-row batch.

Usage: ``python -m benchmarks.bench_dask [--events N] [--repeat R] [--quick]
[--only zipf8,zipf1,distinct8,overhead,restore,rss,s3] [--tasks T]
[--worker-env POLARS_MAX_THREADS=1]`` (``--quick``: 200k events, one repeat,
8 partitions only, no subprocesses; ``s3`` runs only when named: a SeaweedFS
server on loopback, request latencies and the comparison on 1M events).
Internal: ``--driver-only DIR`` runs one pipeline over the source in ``DIR``
and prints its peak RSS as JSON (``--mode local|dask``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import polars as pl

import streamkit as sk
from benchmarks.bench_pipeline import bench_machine, make_events

KEYS = 120_000  # as bench_pipeline


def kernel_warmup() -> None:
    """Compile the kernel in a worker before timing (sent by reference)."""
    from streamkit.kernel import warmup

    warmup()


# ------------------------------------------------------------------ helpers
def distinct_events(n: int, seed: int = 0) -> pl.DataFrame:
    """``make_events`` with every event under its own key (in random order)."""
    frame = make_events(n, KEYS, seed)
    ids = np.random.default_rng(seed + 1).permutation(n)
    return frame.with_columns(pl.Series("device", ids).cast(pl.String))


def fill(store: sk.Store, frame: pl.DataFrame, partitions: int) -> sk.Log:
    """The source log, appended in slices of 500k rows (as bench_pipeline)."""
    src = store.log("events", key="device", time="ts", partitions=partitions)
    if src.count() == 0:
        for part in frame.iter_slices(500_000):
            src.append(part)
    return src


def build(store: sk.Store, name: str, batch_rows: int, lateness: str | None = None) -> sk.Pipeline:
    return (
        sk.Pipeline(name, store, batch_rows=batch_rows)
        .read(store.log("events"))
        .transitions(bench_machine(), event="event", on_undefined="ignore", lateness=lateness)
        .write(store.log(f"history-{name}", key="key", time="time"))
    )


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: ``VmHWM`` where Linux has it, else ``ru_maxrss``.

    On Linux ``ru_maxrss`` survives ``exec``: a child started from a large
    process (this benchmark's parent holds the data) reports the parent's peak.
    ``VmHWM`` belongs to the process image and starts afresh at ``exec``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return maxrss_mb()


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cluster_cpu(client: Any) -> tuple[float, float]:
    """CPU seconds of this process (driver and scheduler) and of all workers."""
    return cpu_seconds(), float(sum(client.run(cpu_seconds).values()))


def rss_now_mb() -> float:
    """This process's resident memory now (``VmRSS``), in MB; NaN where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MB (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timers:
    """Durations of the driver's commits, by wrapping (measurement only).

    ``Log.commit_segments`` is public; the checkpoint commit and the whole
    commit step are wrapped by name, and skipped if those names move.
    """

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:
            return
        calls = self.calls.setdefault(label, [])

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                calls.append(time.perf_counter() - t0)

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original))

    def install(self) -> Timers:
        self.wrap(sk.Log, "commit_segments", "commit_segments")
        for module, cls, attr, label in (
            ("streamkit.pipeline._checkpoints", "CheckpointStore", "commit", "checkpoint"),
            ("streamkit.pipeline._runner", "Runner", "commit", "commit_step"),
        ):
            try:
                owner = getattr(importlib.import_module(module), cls)
            except (ImportError, AttributeError):
                continue
            self.wrap(owner, attr, label)
        return self

    def reset(self) -> None:
        for v in self.calls.values():
            v.clear()

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()


def task_times(data: list[dict[str, Any]]) -> list[float]:
    """Compute seconds of every streamkit task in a task stream."""
    out = []
    for rec in data:
        if not str(rec.get("key", "")).startswith("('streamkit-") and not str(
            rec.get("key", "")
        ).startswith("streamkit-"):
            continue
        for ss in rec.get("startstops", []):
            if ss.get("action") == "compute":
                out.append(ss["stop"] - ss["start"])
    return out


def compare(a: sk.Pipeline, b: sk.Pipeline) -> dict[str, bool]:
    """Whether two pipelines' results are identical (as the issue asks)."""
    assert a.sink is not None and b.sink is not None
    ha, hb = a.sink.scan().collect(), b.sink.scan().collect()
    cols = ha.columns
    by_key = ["key"]
    return {
        "history_as_set": ha.sort(cols).equals(hb.sort(cols)),
        "history_per_key": ha.sort(by_key, maintain_order=True).equals(
            hb.sort(by_key, maintain_order=True)
        ),
        "history_global_order": ha.equals(hb),
        "state": a.state().sort("key").equals(b.state().sort("key")),
        "quarantine": _sorted(a.quarantine()).equals(_sorted(b.quarantine())),
    }


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns) if df.height else df


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


@contextmanager
def cluster(workers: int = 2, env: dict[str, str] | None = None) -> Iterator[Any]:
    import distributed

    with (
        distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=env or {},
        ) as lc,
        distributed.Client(lc) as client,  # type: ignore[no-untyped-call]
    ):
        client.run(kernel_warmup)
        yield client


# ------------------------------------------------------------------ the comparison
def compare_runs(
    client: Any,
    tmp: str,
    label: str,
    frame: pl.DataFrame,
    partitions: int,
    batch_rows: int,
    repeat: int,
    timers: Timers,
    tasks: int | None = None,
    store_urls: dict[str, tuple[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Local and Dask runs over the same data, alternating which runs first."""
    from distributed import get_task_stream

    if store_urls is None:
        stores = {m: sk.Store(os.path.join(tmp, f"{label}-{m}")) for m in ("local", "dask")}
    else:
        stores = {m: sk.Store(u, storage_options=o) for m, (u, o) in store_urls.items()}
    t0 = time.perf_counter()
    for s in stores.values():
        fill(s, frame, partitions)
    setup = time.perf_counter() - t0
    n = frame.height
    wall: dict[str, list[float]] = {"local": [], "dask": []}
    cpu: dict[str, list[float]] = {"local": [], "dask": [], "driver": []}
    batch_s: dict[str, list[float]] = {"local": [], "dask": []}
    task_s: list[float] = []
    commits: dict[str, list[float]] = {}
    checks: dict[str, bool] = {}
    restored = 0
    batches = 0
    for rep in range(repeat):
        order = ("local", "dask") if rep % 2 == 0 else ("dask", "local")
        for mode in order:
            pipe = build(stores[mode], f"p{rep}", batch_rows)
            if mode == "local":
                c, t = cpu_seconds(), time.perf_counter()
                report = pipe.run(progress=False)
                wall["local"].append(time.perf_counter() - t)
                cpu["local"].append(cpu_seconds() - c)
            else:
                timers.reset()
                d0, w0 = cluster_cpu(client)
                with get_task_stream(client) as ts:
                    t = time.perf_counter()
                    report = pipe.run(executor=sk.DaskExecutor(client, tasks=tasks), progress=False)
                    wall["dask"].append(time.perf_counter() - t)
                d, w = cluster_cpu(client)
                cpu["dask"].append(d + w - d0 - w0)
                cpu["driver"].append(d - d0)
                task_s.extend(task_times(ts.data))
                for k, v in timers.calls.items():
                    commits.setdefault(k, []).extend(v)
            batch_s[mode].extend(report.batch_seconds)
            batches = report.batches
        got = compare(
            build(stores["local"], f"p{rep}", batch_rows),
            build(stores["dask"], f"p{rep}", batch_rows),
        )
        checks = {k: checks.get(k, True) and v for k, v in got.items()}
    t_local, t_dask = med(wall["local"]), med(wall["dask"])
    return {
        "label": label,
        "events": n,
        "partitions": partitions,
        "setup_s": setup,
        "batches": batches,
        "local_s": t_local,
        "dask_s": t_dask,
        "local_runs": wall["local"],
        "dask_runs": wall["dask"],
        "local_eps": n / t_local,
        "dask_eps": n / t_dask,
        "ratio": t_local / t_dask,
        "local_cpu_s": med(cpu["local"]),
        "dask_cpu_s": med(cpu["dask"]),
        "driver_cpu_s": med(cpu["driver"]),
        "local_batch_s": med(batch_s["local"]),
        "dask_batch_s": med(batch_s["dask"]),
        "task_s_median": med(task_s),
        "task_s_max": max(task_s) if task_s else float("nan"),
        "tasks": len(task_s),
        "commit_s": {k: med(v) for k, v in commits.items()},
        "checks": checks,
        "restored": restored,
    }


def overhead(client: Any, tmp: str, timers: Timers, rounds: int = 5) -> dict[str, float]:
    """An empty batch (the end-of-input batch of a pipeline with lateness, no rows)
    and a 1-row batch: wall time, the tasks' compute time, the driver's commits."""
    from distributed import get_task_stream

    store = sk.Store(os.path.join(tmp, "overhead"))
    frame = make_events(1_000, 100, seed=3)
    fill(store, frame.head(500), 8)
    src = store.log("events")
    out: dict[str, list[float]] = {}
    for r in range(rounds):
        pipe = build(store, f"o{r}", 1_000_000, lateness="1m")
        pipe.run(executor=sk.DaskExecutor(client), progress=False)  # catch up (state)
        for kind in ("empty", "one_row"):
            if kind == "one_row":
                src.append(frame.slice(500 + r, 1))
            timers.reset()
            with get_task_stream(client) as ts:
                t = time.perf_counter()
                report = pipe.run(
                    executor=sk.DaskExecutor(client), progress=False, final=(kind == "empty")
                )
                wall = time.perf_counter() - t
            assert report.batches == 1, (kind, report)
            out.setdefault(f"{kind}_wall", []).append(wall)
            out.setdefault(f"{kind}_batch", []).extend(report.batch_seconds)
            out.setdefault(f"{kind}_task", []).extend(task_times(ts.data))
            for k, v in timers.calls.items():
                out.setdefault(f"{kind}_{k}", []).extend(v)
    return {k: med(v) for k, v in out.items()}


def restore(client: Any, tmp: str, n: int, batch_rows: int) -> dict[str, float]:
    """A new run's first batch after a run that left ``n`` keys in the state.

    A worker keeps its groups' state between the batches of one run; a new
    run restores every task's groups from the checkpoint's files. One run of
    two 10k-row batches (new keys) gives both: its first batch's tasks restore
    ``n`` keys, its second's follow in memory.
    """
    from distributed import get_task_stream

    store = sk.Store(os.path.join(tmp, "restore"))
    frame = distinct_events(n + 20_000)
    src = fill(store, frame.head(n), 8)
    pipe = build(store, "r", batch_rows)
    pipe.run(executor=sk.DaskExecutor(client), progress=False)
    src.append(frame.slice(n, 10_000))
    src.append(frame.slice(n + 10_000, 10_000))
    with get_task_stream(client) as ts:
        report = pipe.run(executor=sk.DaskExecutor(client), progress=False, batch_rows=10_000)
    by_batch: dict[int, list[float]] = {}
    for rec in ts.data:
        key = str(rec.get("key", ""))
        if "streamkit-r-" not in key:
            continue
        seq = int(key.split("streamkit-r-")[1].split("-", maxsplit=1)[0])
        for ss in rec.get("startstops", []):
            if ss.get("action") == "compute":
                by_batch.setdefault(seq, []).append(ss["stop"] - ss["start"])
    first, *rest = sorted(by_batch)
    return {
        "state_keys": float(n),
        "batches": float(report.batches),
        "restored_task_s": max(by_batch[first]),
        "in_memory_task_s": max(t for b in rest for t in by_batch[b]) if rest else float("nan"),
        "restored_batch_s": report.batch_seconds[0],
        "in_memory_batch_s": report.batch_seconds[-1],
    }


def s3_figures(client: Any, n: int, batch_rows: int, repeat: int, timers: Timers) -> dict[str, Any]:
    """SeaweedFS S3 on loopback: request latencies, bandwidth, and the comparison."""
    import fsspec

    from streamkit._testing import seaweedfs

    out: dict[str, Any] = {}
    with seaweedfs() as s3:
        options = {
            "key": s3["key"],
            "secret": s3["secret"],
            "client_kwargs": {"endpoint_url": s3["endpoint_url"], "region_name": "us-east-1"},
        }
        fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
        base = f"{s3['bucket']}/probe"
        blob = os.urandom(32 << 20)
        small = b"x" * 1024
        lat: dict[str, list[float]] = {"put_1k": [], "get_1k": [], "list_100": [], "head": []}
        for i in range(100):
            fs.pipe_file(f"{base}/d/{i:04d}", small)
        for i in range(20):
            t = time.perf_counter()
            fs.pipe_file(f"{base}/s/{i}", small)
            lat["put_1k"].append(time.perf_counter() - t)
            t = time.perf_counter()
            fs.cat_file(f"{base}/s/{i}")
            lat["get_1k"].append(time.perf_counter() - t)
            t = time.perf_counter()
            fs.info(f"{base}/s/{i}")
            lat["head"].append(time.perf_counter() - t)
            fs.invalidate_cache()
            t = time.perf_counter()
            fs.ls(f"{base}/d", refresh=True)
            lat["list_100"].append(time.perf_counter() - t)
        out.update({f"{k}_ms": med(v) * 1000 for k, v in lat.items()})
        t = time.perf_counter()
        fs.pipe_file(f"{base}/big", blob)
        out["put_mb_s"] = 32 / (time.perf_counter() - t)
        t = time.perf_counter()
        fs.cat_file(f"{base}/big")
        out["get_mb_s"] = 32 / (time.perf_counter() - t)
        frame = make_events(n, KEYS)
        res = compare_runs(
            client,
            "",
            "s3-zipf8",
            frame,
            8,
            batch_rows,
            repeat,
            timers,
            store_urls={m: (f"s3://{s3['bucket']}/{m}", options) for m in ("local", "dask")},
        )
        out["run"] = res
    return out


# ------------------------------------------------------------------ RSS, fresh process
def driver_only(directory: str, mode: str, batch_rows: int) -> dict[str, Any]:
    """One run over the source in ``directory``, in this (fresh) process."""
    store = sk.Store(directory)
    pipe = build(store, f"rss-{mode}", batch_rows)
    before = peak_rss_mb()
    t = time.perf_counter()
    workers: list[float] = []
    if mode == "local":
        from streamkit.kernel import warmup

        warmup()
        report = pipe.run(progress=False)
    else:
        with cluster() as client:
            report = pipe.run(executor=sk.DaskExecutor(client), progress=False)
            workers = sorted(client.run(rss_now_mb).values())
    seconds = time.perf_counter() - t
    keys = int(pipe.checkpoints()["keys"][-1]) if "keys" in pipe.checkpoints().columns else -1
    return {
        "mode": mode,
        "peak_rss_mb": peak_rss_mb(),
        "ru_maxrss_mb": maxrss_mb(),
        "rss_before_run_mb": before,
        "seconds": seconds,
        "batches": report.batches,
        "state_keys": keys,
        "workers_rss_mb": workers,
    }


def rss_in_subprocess(directory: str, mode: str, batch_rows: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_dask", "--driver-only", directory]
    cmd += ["--mode", mode, "--batch-rows", str(batch_rows)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--batch-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="alternating repeats (medians)")
    ap.add_argument("--quick", action="store_true", help="200k events, one repeat")
    ap.add_argument(
        "--only",
        default="",
        help="comma list of: zipf8,zipf1,distinct8,overhead,restore,rss,s3 (default: all but s3)",
    )
    ap.add_argument("--tasks", type=int, default=None, help="DaskExecutor(tasks=)")
    ap.add_argument("--worker-env", action="append", default=[], help="KEY=VALUE for the workers")
    ap.add_argument("--driver-only", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("local", "dask"), default="dask", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.driver_only:
        res = driver_only(args.driver_only, args.mode, args.batch_rows)
        print(json.dumps(res))
        return res
    try:
        import distributed  # noqa: F401
    except ImportError:
        print("distributed is not installed: skipped")
        return {}
    n = 200_000 if args.quick else args.events
    if args.quick:
        args.repeat = 1
    batch_rows = min(args.batch_rows, max(n // 4, 1))
    wanted = (
        {"zipf8"}
        if args.quick
        else set(filter(None, args.only.split(",")))
        or {"zipf8", "zipf1", "distinct8", "rss", "overhead", "restore"}
    )
    from streamkit.kernel import warmup

    warmup()
    results: dict[str, Any] = {"commit": _commit_id()}
    timers = Timers().install()
    try:
        with (
            tempfile.TemporaryDirectory(dir="/tmp") as tmp,
            cluster(env=dict(kv.split("=", 1) for kv in args.worker_env)) as client,
        ):
            zipf = make_events(n, KEYS)
            dirty = False
            for name, frame, parts in (
                ("zipf8", zipf, 8),
                ("zipf1", zipf, 1),
                ("distinct8", None, 8),
            ):
                if name not in wanted:
                    continue
                dirty = fresh(client, dirty)
                frame = distinct_events(n) if frame is None else frame
                res = compare_runs(
                    client, tmp, name, frame, parts, batch_rows, args.repeat, timers, args.tasks
                )
                results[name] = res
                _print_run(res, args.repeat)
            if "overhead" in wanted:
                dirty = fresh(client, dirty)
                results["overhead"] = ov = overhead(client, tmp, timers)
                print("per-task overhead (medians of 5, 2 tasks per batch):")
                for k, v in sorted(ov.items()):
                    print(f"  {k:28s} {v * 1000:8.1f} ms")
            if "s3" in wanted:
                dirty = fresh(client, dirty)
                results["s3"] = s3 = s3_figures(
                    client, min(n, 1_000_000), min(batch_rows, 250_000), args.repeat, timers
                )
                print(
                    "SeaweedFS S3 on loopback: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in s3.items() if k != "run")
                )
                _print_run(s3["run"], args.repeat)
            if "restore" in wanted:
                dirty = fresh(client, dirty)
                results["restore"] = rs = restore(client, tmp, n, batch_rows)
                print(
                    f"state restore ({n:,} keys, 2 tasks): a new run's first 10k-row batch "
                    f"{rs['restored_batch_s']:.2f} s (slowest task {rs['restored_task_s']:.2f} s); "
                    f"the next batch, state in memory, {rs['in_memory_batch_s']:.2f} s "
                    f"(slowest task {rs['in_memory_task_s']:.3f} s)"
                )
            if "rss" in wanted:
                src_dir = os.path.join(tmp, "rss")
                fill(sk.Store(src_dir), distinct_events(n), 8)
                for mode in ("local", "dask"):
                    results[f"rss_{mode}"] = r = rss_in_subprocess(src_dir, mode, batch_rows)
                    print(
                        f"driver peak RSS, {mode:5s} run ({r['state_keys']:,} keys in state): "
                        f"{r['peak_rss_mb']:7.0f} MB (before the run {r['rss_before_run_mb']:.0f} "
                        f"MB; {r['seconds']:.2f} s)" + ("  goal < 300 MB" if mode == "dask" else "")
                    )
                    if r["workers_rss_mb"]:
                        rss = ", ".join(f"{x:.0f}" for x in r["workers_rss_mb"])
                        print(f"  workers' RSS after the run (state in memory): {rss} MB")
    finally:
        timers.restore()
    return results


def fresh(client: Any, dirty: bool) -> bool:
    """Restart the workers if an earlier step left pipelines' state in them; True."""
    if dirty:
        client.restart()
        client.run(kernel_warmup)
    return True


def _print_run(res: dict[str, Any], repeat: int) -> None:
    def runs(xs: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    print(
        f"{res['label']}: {res['events']:,} events, source partitions={res['partitions']}, "
        f"{res['batches']} batches; medians of {repeat} alternating runs "
        f"(local {runs(res['local_runs'])} s; dask {runs(res['dask_runs'])} s)"
    )
    print(f"  local   {res['local_s']:7.2f} s {res['local_eps']:>12,.0f} events/s")
    print(f"  dask    {res['dask_s']:7.2f} s {res['dask_eps']:>12,.0f} events/s")
    goal = "  (goal >= 0.8x)" if res["events"] >= 4_000_000 else ""
    print(f"  dask / local throughput {res['ratio']:.2f}x{goal}")
    print(
        f"  CPU seconds: local {res['local_cpu_s']:.2f}, dask {res['dask_cpu_s']:.2f} "
        f"(of which driver and scheduler {res['driver_cpu_s']:.2f}); "
        f"local / dask {res['local_cpu_s'] / res['dask_cpu_s']:.2f}x"
    )
    print(
        f"  batch s: local {res['local_batch_s']:.3f}, dask {res['dask_batch_s']:.3f}; "
        f"tasks: {res['tasks']}, compute median {res['task_s_median']:.3f} s, "
        f"max {res['task_s_max']:.3f} s"
    )
    commit = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in res["commit_s"].items())
    print(f"  driver commit per batch: {commit}")
    print(f"  identical: {res['checks']}")


def _commit_id() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return done.stdout.strip()


if __name__ == "__main__":
    main()
