"""Wire-fault torture: appends and pipeline runs through a FaultProxy, each trial
compared with the same work done without faults.

Run it against a throwaway SeaweedFS (started here)::

    python -m tests.wire.torture --trials 100 --rates 0.1,0.3 --seed 1

Each trial generates an order log (``generate_orders``), cuts it into chunks and,
through a :class:`~tests.wire.proxy.FaultProxy` injecting random faults on every
request at the given total rate (split evenly over the kinds), appends the chunks
with ``writer=``/``seq=`` and runs the order pipeline after every second chunk and
at the end. An operation that raises is retried as a user would: the same append
(same writer and seq), or a plain ``run()``. Trials alternate between the SDK's
retries on and off. The result, read directly from SeaweedFS, is compared with the
same work on a fault-free memory store: events lost and duplicated (in the log and
in the transition history), unreadable logs, and any difference in the pipeline's
history, state or quarantine. The exit code is 0 only when every trial matched.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

import polars as pl

import streamkit as sk
from streamkit._testing import SeaweedFS, seaweedfs
from streamkit.datasets import generate_orders, order_machine
from streamkit.errors import OutcomeUnknownError, StorageError
from tests.pipeline.oracle import history_by_key, state_dict
from tests.wire.proxy import KINDS, FaultProxy

__all__ = [
    "Summary",
    "Work",
    "build_pipeline",
    "exercise",
    "main",
    "open_store",
    "outcome",
    "run_torture",
    "s3_options",
]

T = TypeVar("T")
RETRIES = ("on", "off")
WRITER = "torture"
#: Attempts of one operation before a trial gives up on it (a failed trial).
ATTEMPTS = 10


# ---------------------------------------------------------------- stores
def s3_options(
    server: SeaweedFS, endpoint: str | None = None, *, retries: str = "on", private: bool = False
) -> dict[str, Any]:
    """s3fs storage options for ``server``, talking to ``endpoint`` (a proxy) if given.

    ``retries="off"`` turns botocore's retries off with ``total_max_attempts=1``
    (its ``max_attempts`` counts retries, not attempts); :func:`open_store` turns
    off s3fs's own retry loop. ``private`` gives the store an s3fs instance of its
    own (not cached), to be closed with :func:`close_store`.
    """
    if retries not in RETRIES:
        raise ValueError(f"retries must be one of {RETRIES}, found {retries!r}")
    options: dict[str, Any] = {
        "key": server["key"],
        "secret": server["secret"],
        "client_kwargs": {
            "endpoint_url": endpoint or server["endpoint_url"],
            "region_name": "us-east-1",
        },
    }
    if retries == "off":
        options["config_kwargs"] = {"retries": {"total_max_attempts": 1}}
    if private:
        options["skip_instance_cache"] = True
    return options


def open_store(url: str, options: dict[str, Any], *, retries: str = "on") -> sk.Store:
    """A store on ``url``; with ``retries="off"`` s3fs's own retry loop is off too.

    ``S3FileSystem.retries`` (5 attempts) is a class attribute, not a constructor
    argument: ``retries=`` in the storage options reaches aiobotocore's session
    and fails with a TypeError. So it is set on the store's s3fs instance (which
    is shared only by stores with the very same options).
    """
    store = sk.Store(url, storage_options=options)
    if retries == "off":
        store.filesystem.fsspec.retries = 1
    return store


def close_store(store: sk.Store) -> None:
    """Close the aiohttp session of a store opened with ``private=True`` options."""
    fs = store.filesystem.fsspec
    client = getattr(fs, "_s3", None)
    if client is not None:
        fs.close_session(fs.loop, client)
        fs._s3 = None


# ------------------------------------------------------------- the work
def build_pipeline(store: sk.Store, batch_rows: int = 45) -> sk.Pipeline:
    """The order pipeline of ``tests/pipeline/test_faults.py``, on ``store``."""
    return (
        sk.Pipeline("orders-fsm", store, batch_rows=batch_rows)
        .read(store.log("orders", key="order_id", time="ts"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


@dataclass
class Work:
    """What it took to get the work done: operations that failed and were retried."""

    failed: int = 0
    outcome_unknown: int = 0
    unexpected: Counter[str] = field(default_factory=Counter)  # not a StorageError
    gave_up: list[str] = field(default_factory=list)

    def attempt(self, what: str, op: Callable[[], T]) -> T | None:
        """``op()``, retried after a failure as a user would; None if it never succeeds."""
        for _ in range(ATTEMPTS):
            try:
                return op()
            except Exception as exc:
                self.failed += 1
                if isinstance(exc, OutcomeUnknownError):
                    self.outcome_unknown += 1
                elif not isinstance(exc, StorageError):
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    self.unexpected[f"{what}: {type(exc).__name__}: {first[:160]}"] += 1
        self.gave_up.append(what)
        return None


def exercise(
    store: sk.Store, chunks: Sequence[pl.DataFrame], work: Work | None = None, partitions: int = 1
) -> Work:
    """Append ``chunks`` (writer/seq) to a log of ``partitions`` and run the pipeline
    after every second one and at the end, retrying what fails."""
    work = work or Work()
    log = work.attempt(
        "open log",
        lambda: store.log("orders", key="order_id", time="ts", partitions=partitions),
    )
    if log is None:
        return work
    for i, chunk in enumerate(chunks, start=1):
        done = work.attempt(f"append {i}", partial(log.append, chunk, writer=WRITER, seq=i))
        if done is None:
            # A writer's seqs commit in order (a seq at or below the last committed is a
            # duplicate, as Delta's txn and Kafka's idempotent producer): a writer that
            # gave up on seq i must not go on with i + 1. The rerun picks up from here.
            return work
        if i % 2 == 0 or i == len(chunks):
            work.attempt(f"run after {i}", lambda: build_pipeline(store).run(progress=False))
    return work


def outcome(store: sk.Store) -> dict[str, Any]:
    """Everything the work leaves behind that a user can observe."""
    pipe = build_pipeline(store)
    history = store.log("history").scan().collect()
    return {
        "events": store.log("orders").scan().collect().rows(),
        "history": history_by_key(history),
        "history_rows": history.rows(),
        "state": state_dict(pipe.state()),
        "quarantine": pipe.quarantine().sort("offset").rows(),
        "verified": pipe.verify().ok,
    }


def _surplus(got: list[Any], want: list[Any]) -> tuple[int, int]:
    """(lost, duplicated) rows of ``got`` against ``want``, as multisets."""
    have, need = Counter(got), Counter(want)
    return sum((need - have).values()), sum((have - need).values())


# -------------------------------------------------------------- trials
@dataclass
class Summary:
    """Totals over torture trials."""

    trials: int = 0
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    events_lost: int = 0
    events_duplicated: int = 0
    unreadable_logs: int = 0
    mismatches: int = 0  # history, state, quarantine or verify differ from fault-free
    failed_operations_retried: int = 0
    outcome_unknown: int = 0
    abandoned: int = 0  # operations that kept failing under faults (then rerun without)
    unexpected_errors: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No trial lost, duplicated, corrupted or changed anything."""
        return not self.problems

    def figures(self) -> dict[str, Any]:
        """The totals as JSON-able data."""
        figures = asdict(self)
        figures["faults"] = {k: self.faults[k] for k in KINDS}
        figures["unexpected_errors"] = dict(self.unexpected_errors)
        figures["ok"] = self.ok
        return figures

    def render(self) -> str:
        faults = ", ".join(f"{k} {self.faults[k]}" for k in KINDS)
        lines = [
            f"trials                     {self.trials}",
            f"requests                   {self.requests}",
            f"faults injected            {sum(self.faults.values())} ({faults})",
            f"events lost                {self.events_lost}",
            f"events duplicated          {self.events_duplicated}",
            f"unreadable logs            {self.unreadable_logs}",
            f"results differing          {self.mismatches}",
            f"failed operations retried  {self.failed_operations_retried}"
            f" (outcome unknown: {self.outcome_unknown})",
            f"abandoned under faults     {self.abandoned} (each rerun without faults)",
            f"seconds                    {self.seconds:.0f}",
        ]
        lines += [f"unexpected error x{n}: {text}" for text, n in self.unexpected_errors.items()]
        lines += [f"PROBLEM {p}" for p in self.problems]
        return "\n".join(lines)


def _chunks(seed: int) -> tuple[list[pl.DataFrame], int]:
    """The chunks a trial appends and the partitions of its log."""
    rng = random.Random(seed)
    frame = generate_orders(25 + rng.randrange(25), span="2h", seed=seed)
    cuts = sorted(rng.sample(range(1, frame.height), 3))
    bounds = [0, *cuts, frame.height]
    return [frame.slice(a, b - a) for a, b in itertools.pairwise(bounds)], rng.choice((1, 3))


def trial(
    server: SeaweedFS,
    summary: Summary,
    *,
    seed: int,
    rate: float,
    retries: str,
    kinds: Sequence[str] = KINDS,
    methods: Sequence[str] | None = None,
) -> None:
    """One trial: the work through a faulty proxy, compared with a fault-free run.

    Every request may meet a fault. With the SDK's retries off most faults
    surface, so at high rates an operation may keep failing: after ``ATTEMPTS``
    tries the work is redone once without faults (a plain rerun), which must
    converge to the fault-free result however many attempts were cut short.
    ``methods`` limits the faults to requests with those HTTP methods.
    """
    label = f"seed={seed} rate={rate} retries={retries}"
    chunks, partitions = _chunks(seed)
    reference_store = sk.Store(f"memory://streamkit-torture-{uuid.uuid4().hex}")
    exercise(reference_store, chunks, partitions=partitions)
    want = outcome(reference_store)
    url = f"s3://{server['bucket']}/torture-{uuid.uuid4().hex}"
    rates = dict.fromkeys(kinds, rate / len(kinds))
    with FaultProxy(server["endpoint_url"], seed=seed, rates=rates, methods=methods) as proxy:
        options = s3_options(server, proxy.url, retries=retries, private=True)
        faulty = open_store(url, options, retries=retries)
        try:
            work = exercise(faulty, chunks, partitions=partitions)
        finally:
            close_store(faulty)
        counts = proxy.counts()
    summary.trials += 1
    summary.requests += counts.pop("requests")
    summary.faults.update(counts)
    direct = open_store(url, s3_options(server))
    if work.gave_up:
        summary.abandoned += len(work.gave_up)
        before = len(work.gave_up)
        exercise(direct, chunks, work, partitions)  # a plain rerun, without faults
        if len(work.gave_up) > before:
            summary.problems.append(
                f"{label}: a rerun without faults failed: {work.gave_up[before:]}"
            )
    summary.failed_operations_retried += work.failed
    summary.outcome_unknown += work.outcome_unknown
    summary.unexpected_errors.update(work.unexpected)
    if work.unexpected:
        summary.problems.append(f"{label}: errors other than StorageError: {dict(work.unexpected)}")
    try:
        got = outcome(direct)
    except Exception as exc:
        summary.unreadable_logs += 1
        summary.problems.append(f"{label}: unreadable: {type(exc).__name__}: {exc}")
        return
    lost, dup = _surplus(got["events"], want["events"])
    h_lost, h_dup = _surplus(got["history_rows"], want["history_rows"])
    summary.events_lost += lost + h_lost
    summary.events_duplicated += dup + h_dup
    differ = [
        k for k in ("events", "history", "state", "quarantine", "verified") if got[k] != want[k]
    ]
    if differ or lost or dup or h_lost or h_dup:
        summary.mismatches += bool(differ)
        summary.problems.append(
            f"{label}: differs in {differ}; log lost {lost} duplicated {dup}, "
            f"history lost {h_lost} duplicated {h_dup}"
        )


def run_torture(
    server: SeaweedFS,
    *,
    trials: int,
    rates: Sequence[float] = (0.1, 0.3),
    seed: int = 0,
    retries: Sequence[str] = RETRIES,
    kinds: Sequence[str] = KINDS,
    progress: Callable[[str], None] | None = None,
) -> Summary:
    """``trials`` trials per rate against ``server``, alternating ``retries``."""
    summary = Summary()
    started = time.perf_counter()
    for rate in rates:
        for i in range(trials):
            mode = retries[i % len(retries)]
            trial(server, summary, seed=seed * 100_003 + i, rate=rate, retries=mode, kinds=kinds)
            if progress is not None:
                progress(
                    f"rate {rate} trial {i + 1}/{trials} ({mode}): {len(summary.problems)} problems"
                )
    summary.seconds = time.perf_counter() - started
    return summary


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """streamkit logs a warning for every kept segment or failed snapshot: mute them."""
    import logging

    logger = logging.getLogger("streamkit")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: prints the summary, returns 0 when every trial matched."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.wire.torture", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--trials", type=int, default=10, help="trials per rate (default 10)")
    parser.add_argument("--rates", default="0.1,0.3", help="total fault rates (default 0.1,0.3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retries", default="on,off", help="SDK retries per trial, alternating")
    parser.add_argument("--kinds", default=",".join(KINDS), help="fault kinds to inject")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    kinds = [k for k in args.kinds.split(",") if k]
    with seaweedfs() as server, _quiet():
        summary = run_torture(
            server,
            trials=args.trials,
            rates=rates,
            seed=args.seed,
            retries=[r for r in args.retries.split(",") if r],
            kinds=kinds,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    print(summary.render())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary.figures(), fh, indent=2)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
