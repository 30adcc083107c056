"""A plain Python oracle of a transitions pipeline: one loop, dicts, no numpy.

It restates the contract (docs/design.md, "Machines and the kernel") as simply
as possible, so the vectorized pipeline can be checked against it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

import polars as pl

#: A compaction policy for ``streamkit.pipeline._keyed`` that makes a few dozen
#: keys do what millions do: chains of at most two links (the third batch that
#: touches a group compacts it), bands of twenty keys with a file each, and the
#: band budget at one delta row per key held.
TIGHT_POLICY: dict[str, float] = {
    "MAX_CHAIN": 2,
    "REBASE_SHARE": 1.0,
    "DELTA_RATIO": 1.0,
    "DELTA_BUDGET": 1.0,
    "BAND_KEYS": 20,
    "POOL_ROWS": 0,
}


def run_oracle(
    events: pl.DataFrame,
    machine: Any,
    *,
    key: str,
    time: str,
    event: str,
    tick: timedelta = timedelta(microseconds=1),
    on_undefined: str = "quarantine",
    lateness: int | None = None,
    final: bool = False,
    reads: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Process ``events`` (already filtered, in log order) in one go.

    ``reads`` are the source rows read (columns ``offset`` and ``time``, log
    order; default: the events): every one moves the watermark, also a row a
    filter dropped, and ``events`` are those of them that reach the machine.

    Without ``lateness`` each event is applied as it is read, after its key's
    timeouts up to the largest time read so far. With ``lateness`` (in ticks of
    the time column) this is the streaming definition, one event at a time:
    after reading an event the watermark is ``max(previous, largest time -
    lateness)``; every buffered event whose time it reached is applied, in
    (time, offset) order, after its key's timeouts up to ``max(the watermark
    before this read, its time)``. ``final`` then applies what still waits with
    the watermark at the largest time read. At the end every key's timeouts
    fire up to the last watermark.

    Returns per-key history lists, the final state per key, the quarantine as
    a list of (offset, reason) pairs and the number of events still waiting.
    """
    table = {(t.source, t.event): t.target for t in machine.transitions}
    timeouts = {t.state: (t.after // tick, t.target) for t in machine.timeouts}
    state: dict[Any, list[Any]] = {}
    history: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
    quarantine: list[tuple[int, str]] = []
    times = events[time].cast(pl.Int64).to_list()

    def fire(k: Any, bound: int) -> None:
        s = state[k]
        while s[0] in timeouts and s[1] + timeouts[s[0]][0] <= bound:
            after, target = timeouts[s[0]]
            deadline = s[1] + after
            history[k].append((deadline, "timeout", s[0], target))
            s[0], s[1], s[2] = target, deadline, max(s[2], deadline)

    def apply(row: dict[str, Any], t: int, bound: int) -> None:
        k, ev = row[key], row[event]
        if k not in state:
            state[k] = [machine.initial, t, t, 0]
        fire(k, bound)
        s = state[k]
        if t < s[2]:
            quarantine.append((row["offset"], "late"))
            return
        s[3] += 1
        target = table.get((s[0], ev))
        if target is None:
            s[2] = t
            if on_undefined == "quarantine":
                quarantine.append((row["offset"], "undefined"))
            return
        history[k].append((t, ev, s[0], target))
        s[0], s[1], s[2] = target, t, t

    watermark: int | None = None
    buffer: list[tuple[int, int, dict[str, Any]]] = []
    largest: int | None = None
    by_offset = dict(zip(events["offset"].to_list(), zip(events.iter_rows(named=True), times)))
    if reads is None:
        read_rows = [(o, t) for o, (_, t) in by_offset.items()]
    else:
        read_rows = list(zip(reads["offset"].to_list(), reads[time].cast(pl.Int64).to_list()))
    for offset, t_read in read_rows:
        event_row = by_offset.get(offset)
        if lateness is None:
            watermark = t_read if watermark is None else max(watermark, t_read)
            if event_row is not None:
                row, t = event_row
                watermark = max(watermark, t)
                apply(row, t, watermark)
            continue
        largest = t_read if largest is None else max(largest, t_read)
        now = largest - lateness if watermark is None else max(watermark, largest - lateness)
        if event_row is not None:
            row, t = event_row
            buffer.append((t, row["offset"], row))
        ready = sorted((b for b in buffer if b[0] <= now), key=lambda b: (b[0], b[1]))
        buffer = [b for b in buffer if b[0] > now]
        for bt, _, brow in ready:
            apply(brow, bt, bt if watermark is None else max(watermark, bt))
        watermark = now
    if lateness is not None and final and largest is not None:
        before = watermark if watermark is not None else largest
        for bt, _, brow in sorted(buffer, key=lambda b: (b[0], b[1])):
            apply(brow, bt, max(before, bt))
        buffer = []
        watermark = max(before, largest)
    for k in state:
        fire(k, watermark if watermark is not None else 0)
    final_state = {k: (s[0], s[1], s[2], s[3]) for k, s in state.items()}
    return {
        "history": dict(history),
        "state": final_state,
        "quarantine": sorted(quarantine),
        "waiting": len(buffer),
    }


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


def lamp_machine() -> Any:
    """A small machine with a timeout chain: off -on-> on -off-> off, on -hit->
    broken; on times out to off after 10 s, broken after 30 s."""
    import streamkit as sk

    return sk.Machine(
        "lamp",
        states=["off", "on", "broken"],
        initial="off",
        final=["off"],
        transitions=[("off", "on", "on"), ("on", "off", "off"), ("on", "hit", "broken")],
        timeouts=[("on", "10s", "off"), ("broken", "30s", "off")],
    )
