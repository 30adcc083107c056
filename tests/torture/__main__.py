"""``python -m tests.torture``: the crash-safety torture run behind ``make torture``.

::

    python -m tests.torture --kill-trials 200 --backends local,s3 --seed 1 \\
        --wire-trials 100 --rates 0.1,0.3 [--crashpoints]

* ``--kill-trials N``: N SIGKILL trials (:mod:`tests.torture.kill`) spread evenly
  over the backends and the two kinds (appends, pipeline runs); a summary table.
* ``--wire-trials N --rates R``: the wire-fault half, ``tests.wire.torture.main``
  (imported only when asked for).
* ``--crashpoints``: every crash point of every job of
  :mod:`tests.torture.crashpoint_job`, after and before each call, on a local disk,
  and a sample on S3.

Exits 0 when every trial recovered to the uninterrupted result; 1 otherwise; 2 for
bad usage (or wire trials asked for without ``tests.wire.torture``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

BACKENDS = ("local", "s3")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.torture",
        description="SIGKILL trials, crash-point enumeration and wire-fault trials; "
        "each compared with an uninterrupted run.",
    )
    parser.add_argument("--kill-trials", type=int, default=200, help="SIGKILL trials in all")
    parser.add_argument(
        "--backends", default="local,s3", help="comma-separated: local, s3 (default both)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seeds kill moments and data")
    parser.add_argument("--wire-trials", type=int, default=0, help="runs under wire faults")
    parser.add_argument("--rates", default="0.1,0.3", help="wire fault rates, comma-separated")
    parser.add_argument(
        "--crashpoints", action="store_true", help="enumerate every crash point as well"
    )
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--workdir", default=None, help="where local stores go (a temp dir)")
    return parser


@contextlib.contextmanager
def _s3(wanted: bool) -> Iterator[dict[str, Any] | None]:
    if not wanted:
        yield None
        return
    from streamkit._testing import seaweedfs

    with seaweedfs() as server:
        yield dict(server)


def _say(text: str) -> None:
    print(text, flush=True)


def _crashpoints(backends: Sequence[str], s3: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    import uuid

    from tests.torture import crashpoint_job as cp

    figures: dict[str, Any] = {}
    with cp.ForkServer() as server:
        for backend in backends:
            for name in cp.SCENARIOS:
                started = time.monotonic()
                if backend == "local":
                    with cp.local_stores() as new:
                        plan = dict.fromkeys(cp.WHENS, cp.every_call)
                        result = cp.enumerate_crashpoints(
                            server, name, new, backend="local", plan=plan
                        )
                else:
                    assert s3 is not None
                    options = {
                        "key": s3["key"],
                        "secret": s3["secret"],
                        "client_kwargs": {
                            "endpoint_url": s3["endpoint_url"],
                            "region_name": "us-east-1",
                        },
                    }

                    def new_s3(opts: dict[str, Any] = options) -> tuple[str, dict[str, Any]]:
                        return f"s3://{s3['bucket']}/cp-{uuid.uuid4().hex}", opts

                    plan = {
                        "after": lambda calls: cp.sample_ks(calls, 8, seed),
                        "before": lambda calls: cp.sample_ks(calls, 3, seed),
                    }
                    result = cp.enumerate_crashpoints(
                        server, name, new_s3, backend=backend, plan=plan
                    )
                _say(result.summary() + f"  ({time.monotonic() - started:.0f}s)")
                figures[f"{name}/{backend}"] = {
                    "calls": len(result.calls),
                    "points": len(result.points),
                    "failed": len(result.failures) + len(result.problems),
                }
    return figures


def _wire(trials: int, rates: str, seed: int) -> int:
    try:
        module = importlib.import_module("tests.wire.torture")
    except ModuleNotFoundError as exc:
        if exc.name not in {"tests.wire", "tests.wire.torture"}:
            raise
        _say("wire trials asked for, but tests/wire/torture.py does not exist")
        return 2
    argv = ["--trials", str(trials), "--rates", rates]
    if "--seed" in inspect.getsource(module):
        argv += ["--seed", str(seed)]
    _say(f"wire-fault trials: python -m tests.wire.torture {' '.join(argv)}")
    rc = module.main(argv)
    return int(rc or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run what the arguments ask for; print a summary; return the exit code."""
    args = _parser().parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        _parser().error(f"--backends: unknown {unknown}; choose from {', '.join(BACKENDS)}")
    if args.kill_trials < 0 or args.wire_trials < 0:
        _parser().error("trial counts must be >= 0")
    started = time.monotonic()
    failed = False
    if args.workdir is not None:
        os.makedirs(args.workdir, exist_ok=True)
    figures: dict[str, Any] = {"seed": args.seed, "backends": backends}
    with _s3("s3" in backends and (args.kill_trials > 0 or args.crashpoints)) as s3:
        if args.crashpoints:
            figures["crashpoints"] = _crashpoints(backends, s3, args.seed)
            failed |= any(v["failed"] for v in figures["crashpoints"].values())
        if args.kill_trials:
            from tests.torture.kill import run_kill_trials, summary_table

            _say(f"SIGKILL trials: {args.kill_trials} over {', '.join(backends)}, seed {args.seed}")
            trials = run_kill_trials(
                args.kill_trials, backends, seed=args.seed, s3=s3, workdir=args.workdir,
                progress=_say,
            )  # fmt: skip
            table = summary_table(trials)
            _say("\n" + table)
            bad = [t for t in trials if not t.ok]
            for t in bad:
                _say(t.describe())
            failed |= bool(bad)
            figures["kill"] = {"table": table, "failed": len(bad), "trials": len(trials)}
    if args.wire_trials:
        rc = _wire(args.wire_trials, args.rates, args.seed)
        figures["wire_rc"] = rc
        if rc == 2:
            return 2
        failed |= rc != 0
    elapsed = time.monotonic() - started
    _say(f"\ntorture {'FAILED' if failed else 'passed'} in {elapsed / 60:.1f} min")
    if args.json:
        figures["seconds"] = round(elapsed)
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
