"""Write the format-1 store that ``test_delta_native.py`` upgrades (``store/``).

Run with streamkit before logs became Delta tables (commit 0a704bd)::

    git archive 0a704bd streamkit | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/storage/format1/make_format1.py tests/storage/format1/store

It writes ``events`` (two partitions, a Datetime time column, appends with and
without a writer, a truncate and a retract), ``orders`` and a pipeline ``fsm``
over it (an output log ``history`` and its quarantine) that has read part of
``orders``, and then more ``orders``; ``expected.json`` records what the old code
read: rows with offsets, ends and transactions.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path

import polars as pl

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine

#: Orders read by the pipeline before the upgrade, and those appended after its run.
ORDERS = generate_orders(30, span="2h", seed=5)
FIRST = 70


def pipeline(store: sk.Store) -> sk.Pipeline:
    """The pipeline of the fixture (the test builds the same one)."""
    return (
        sk.Pipeline("fsm", store, key_groups=4)
        .read(store.log("orders"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


def events(i: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "k": [f"k{j % 5}" for j in range(4)],
            "t": [dt.datetime(2026, 1, 1) + dt.timedelta(seconds=10 * i + 3 - j) for j in range(4)],
            "v": [i * 10 + j for j in range(4)],
        }
    )


def main(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    store = sk.Store(str(root))
    ev = store.log("events", key="k", time="t", partitions=2)
    ev.append(events(0))
    for seq in range(1, 4):
        ev.append(events(seq), writer="w", seq=seq, meta={"batch": seq})
    ev.append(events(4))
    ev.truncate(before=sk.Position(4))  # drops the first append
    ev.retract("w", [(3, 3)])
    orders = store.log("orders", key="order_id", time="ts")
    orders.append(ORDERS.slice(0, FIRST))
    pipeline(store).run(batch_rows=30, progress=False)
    orders.append(ORDERS.slice(FIRST))
    expected = {
        "events": {
            "rows": ev.scan(with_offset="o")
            .collect()
            .with_columns(pl.col("t").cast(pl.String))
            .rows(),
            "end": ev.end().offset,
            "version": ev.version,
            "txn": [ev.transaction("w").seq, ev.transaction("w").meta],
            "history": {str(k): v for k, v in ev.writer_history("w").items()},
        },
        "orders_end": orders.end().offset,
        "history_rows": store.log("history").count(),
    }
    (root.parent / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
