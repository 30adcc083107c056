"""Subprocess appender for the concurrency and crash tests.

Usage: python _append_worker.py URL OPTIONS_JSON LOG WRITER FIRST_SEQ COUNT ROWS [GO_FILE]

Appends COUNT frames of ROWS rows (seq FIRST_SEQ, FIRST_SEQ + 1, ...) as writer
WRITER; every row records (writer, seq, row). Prints "ready" once imports are done
and, if GO_FILE is given, waits for that file to exist before appending.
"""

from __future__ import annotations

import json
import os
import sys
import time

import polars as pl

from streamkit.storage import Store


def main(argv: list[str]) -> None:
    url, options, name, writer = argv[0], json.loads(argv[1]), argv[2], argv[3]
    first, count, rows = int(argv[4]), int(argv[5]), int(argv[6])
    go = argv[7] if len(argv) > 7 else None
    log = Store(url, storage_options=options).log(name, key="k", time="t", partitions=2)
    print("ready", flush=True)
    while go is not None and not os.path.exists(go):
        time.sleep(0.01)
    for seq in range(first, first + count):
        frame = pl.DataFrame(
            {
                "k": [f"{writer}-{r % 7}" for r in range(rows)],
                "t": [seq * 1000 + (rows - r) for r in range(rows)],
                "w": [writer] * rows,
                "seq": [seq] * rows,
                "r": list(range(rows)),
            }
        )
        log.append(frame, writer=writer, seq=seq, meta={"rows": rows})
        print(f"committed {seq}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
