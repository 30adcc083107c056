"""Subprocess appender and pipeline runner for the concurrency and crash tests.

Usage::

    python _append_worker.py URL OPTIONS_JSON LOG WRITER FIRST_SEQ COUNT ROWS [GO_FILE] [--shared]
    python _append_worker.py --run URL OPTIONS_JSON STOP_FILE
    streamkit run _append_worker.py:pipeline      # store from STREAMKIT_TEST_URL/_OPTIONS

The appender appends COUNT frames of ROWS rows (seq FIRST_SEQ, FIRST_SEQ + 1, ...)
as writer WRITER; every row records (writer, seq, row) and a door event ``ev``.
Keys are the writer's own (``<writer>-<row % 7>``); with ``--shared`` every
fourth row goes to one of three keys all writers share, at interleaved times.
It prints "ready" once imports are done and, if GO_FILE is given, waits for that
file to exist before appending.

The runner runs :func:`pipeline` over the log ``events`` again and again until
STOP_FILE exists, then prints ``{"runs": n, "overtaken": m, "errors": [...]}``:
a run overtaken by a newer one (``LeaseError``) is counted, another streamkit
error is recorded, and the next run starts; anything else ends it with exit code 1.

The tests import :func:`spawn`, :func:`wait_ready` and :func:`check_appends` from
here.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

import streamkit as sk
from streamkit.storage import Store

DOOR = sk.Machine(
    "door",
    states=["closed", "opened"],
    initial="closed",
    final=["closed"],
    transitions=[("closed", "open", "opened"), ("opened", "close", "closed")],
)
EVENTS = ("open", "close", "knock")  # "knock" is undefined: quarantined


def frame(writer: str, seq: int, rows: int, *, shared: bool = False) -> pl.DataFrame:
    """The rows writer ``writer`` appends as its ``seq``-th append."""
    keys = [
        f"shared-{r % 3}" if shared and r % 4 == 0 else f"{writer}-{r % 7}" for r in range(rows)
    ]
    return pl.DataFrame(
        {
            "k": keys,
            "t": [seq * 1000 + (rows - r) for r in range(rows)],
            "w": [writer] * rows,
            "seq": [seq] * rows,
            "r": list(range(rows)),
            "ev": [EVENTS[(seq + r) % 3] for r in range(rows)],
        }
    )


def pipeline(store: Store | None = None, *, batch_rows: int = 150) -> sk.Pipeline:
    """The pipeline of the overlap tests: doors over ``events`` into ``history``.

    Without ``store``, the store comes from STREAMKIT_TEST_URL and
    STREAMKIT_TEST_OPTIONS (JSON), for ``streamkit run _append_worker.py:pipeline``.
    """
    if store is None:
        options = json.loads(os.environ.get("STREAMKIT_TEST_OPTIONS", "null"))
        store = Store(os.environ["STREAMKIT_TEST_URL"], storage_options=options)
    return (
        sk.Pipeline("doors", store, batch_rows=batch_rows, keep_checkpoints=100_000)
        .read(store.log("events"))
        .transitions(DOOR, event="ev")
        .write(store.log("history", key="key", time="time"))
    )


def spawn(*args: str) -> subprocess.Popen[str]:
    """Start this file as a worker with ``args``."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__)), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Wait until a worker has imported everything and says so."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        _out, err = proc.communicate(timeout=30)
        raise AssertionError(f"worker failed to start: {line!r} {err}")


def check_appends(log: sk.Log, appends: dict[str, int], rows: int) -> pl.DataFrame:
    """Assert that ``log`` holds exactly the appends of ``appends`` (writer ->
    count) of :func:`frame`, each once and whole, in a valid order.

    Offsets are contiguous; every (writer, seq, row) is there exactly once; each
    writer's transaction is its last seq; and per key, offsets follow
    (version, time, row): appends in commit order, inside one append by
    (time, input order). Returns the rows with their offsets (``o``) and
    versions.
    """
    got = log.scan(with_offset="o").collect()
    total = sum(appends.values()) * rows
    assert got.height == total
    assert got["o"].to_list() == list(range(total))  # unique and contiguous
    assert log.end() == sk.Position(total)
    counts = got.group_by("w", "seq", "r").len()
    assert counts.height == total and (counts["len"] == 1).all()  # each row once
    want = {(w, s) for w, n in appends.items() for s in range(n)}
    assert set(got.select("w", "seq").unique().rows()) == want
    for writer, count in appends.items():
        txn = log.transaction(writer)
        assert txn is not None and txn.seq == count - 1 and txn.meta == {"rows": rows}
    segs = log.segments().sort("offset")
    assert segs["offset"].to_list() == [0, *segs["rows"].cum_sum().to_list()[:-1]]
    # Every append is one version: its segments carry its writer and seq.
    per_version = segs.group_by("version").agg(pl.col("writer", "writer_seq").n_unique())
    assert (per_version["writer"] == 1).all() and (per_version["writer_seq"] == 1).all()
    located = got.join_asof(segs.select(o="offset", version="version"), on="o")
    per_key = located.group_by("k", maintain_order=True).agg("version", "t", "r")
    for key, versions, ts, rs in per_key.rows():
        order = list(zip(versions, ts, rs, strict=True))
        assert order == sorted(order), f"key {key}: offsets out of (version, time, row) order"
    return located


def append(argv: list[str]) -> None:
    shared = "--shared" in argv
    argv = [a for a in argv if a != "--shared"]
    url, options, name, writer = argv[0], json.loads(argv[1]), argv[2], argv[3]
    first, count, rows = int(argv[4]), int(argv[5]), int(argv[6])
    go = argv[7] if len(argv) > 7 else None
    log = Store(url, storage_options=options).log(name, key="k", time="t", partitions=2)
    print("ready", flush=True)
    while go is not None and not os.path.exists(go):
        time.sleep(0.01)
    for seq in range(first, first + count):
        log.append(
            frame(writer, seq, rows, shared=shared), writer=writer, seq=seq, meta={"rows": rows}
        )
        print(f"committed {seq}", flush=True)


def run(argv: list[str]) -> None:
    url, options, stop = argv[0], json.loads(argv[1]), argv[2]
    pipe = pipeline(Store(url, storage_options=options))
    print("ready", flush=True)
    counts: dict[str, Any] = {"runs": 0, "overtaken": 0, "errors": []}
    rng = random.Random(os.getpid())
    while not os.path.exists(stop):
        try:
            pipe.run(progress=False)
            counts["runs"] += 1
        except sk.LeaseError:
            counts["overtaken"] += 1
        except sk.StreamkitError as exc:  # the test decides whether it may happen
            counts["errors"].append(f"{type(exc).__name__}: {exc}")
        time.sleep(rng.uniform(0.05, 0.25))  # overlap often, spin little
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        run(sys.argv[2:])
    else:
        append(sys.argv[1:])
