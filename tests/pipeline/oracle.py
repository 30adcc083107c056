"""A plain Python oracle of a transitions pipeline: one loop, dicts, no numpy.

It restates the contract (docs/design.md, "Machines and the kernel") as simply
as possible, so the vectorized pipeline can be checked against it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

import polars as pl


def run_oracle(
    events: pl.DataFrame,
    machine: Any,
    *,
    key: str,
    time: str,
    event: str,
    tick: timedelta = timedelta(microseconds=1),
    on_undefined: str = "quarantine",
) -> dict[str, Any]:
    """Process ``events`` (already filtered, in log order) in one go.

    Returns per-key history lists, the final state per key and the quarantine
    as a list of (offset, reason) pairs.
    """
    table = {(t.source, t.event): t.target for t in machine.transitions}
    timeouts = {t.state: (t.after // tick, t.target) for t in machine.timeouts}
    state: dict[Any, list[Any]] = {}
    history: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
    quarantine: list[tuple[int, str]] = []
    watermark = None
    times = events[time].cast(pl.Int64).to_list()

    def fire(k: Any, bound: int) -> None:
        s = state[k]
        while s[0] in timeouts and s[1] + timeouts[s[0]][0] <= bound:
            after, target = timeouts[s[0]]
            deadline = s[1] + after
            history[k].append((deadline, "timeout", s[0], target))
            s[0], s[1], s[2] = target, deadline, max(s[2], deadline)

    for row, t in zip(events.iter_rows(named=True), times, strict=True):
        k, ev = row[key], row[event]
        watermark = t if watermark is None else max(watermark, t)
        if k not in state:
            state[k] = [machine.initial, t, t, 0]
        fire(k, watermark)
        s = state[k]
        if t < s[2]:
            quarantine.append((row["offset"], "late"))
            continue
        s[3] += 1
        target = table.get((s[0], ev))
        if target is None:
            s[2] = t
            if on_undefined == "quarantine":
                quarantine.append((row["offset"], "undefined"))
            continue
        history[k].append((t, ev, s[0], target))
        s[0], s[1], s[2] = target, t, t
    for k in state:
        fire(k, watermark if watermark is not None else 0)
    final = {k: (s[0], s[1], s[2], s[3]) for k, s in state.items()}
    return {"history": dict(history), "state": final, "quarantine": sorted(quarantine)}


def history_by_key(history: pl.DataFrame) -> dict[Any, list[tuple[Any, ...]]]:
    """Group a history frame (in log order) into per-key lists like the oracle's."""
    out: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
    times = history["time"].cast(pl.Int64).to_list()
    for row, t in zip(history.iter_rows(named=True), times, strict=True):
        out[row["key"]].append((t, row["event"], row["from_state"], row["to_state"]))
    return dict(out)


def state_dict(state: pl.DataFrame) -> dict[Any, tuple[Any, ...]]:
    since = state["since"].cast(pl.Int64).to_list()
    last = state["last_time"].cast(pl.Int64).to_list()
    return {
        k: (s, a, b, e)
        for k, s, a, b, e in zip(
            state["key"].to_list(),
            state["state"].to_list(),
            since,
            last,
            state["events"].to_list(),
            strict=True,
        )
    }
