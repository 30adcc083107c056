"""The transitions operator: a finite-state machine per key, in event time.

``Transitions`` keeps per key its state, since, last time and event count
(key-grouped, checkpointed incrementally by :mod:`._keyed`), runs each batch
through the compiled kernel and emits the transition history; with
``lateness`` events first wait for the watermark (:mod:`._eventtime`).
Events it sets aside go to the quarantine in a fixed schema.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from streamkit.errors import (
    CheckpointError,
    ConfigurationError,
    CorruptFileError,
    SchemaError,
    UndefinedTransitionError,
)
from streamkit.pipeline._operators import (
    OFFSET,
    BatchContext,
    KeyedOperator,
    OnUndefined,
    expr_to_json,
)

if TYPE_CHECKING:
    from streamkit.machines import Machine
    from streamkit.pipeline._checkpoints import CheckpointStore


def time_tick(dtype: pl.DataType, tick: timedelta | None) -> timedelta | int:
    """The duration of one integer unit of a time column (an int counts nanoseconds)."""
    if isinstance(dtype, pl.Datetime):
        unit = dtype.time_unit or "us"
        if unit == "ns":
            return 1  # kernel: an int tick counts nanoseconds
        return timedelta(microseconds=1) if unit == "us" else timedelta(milliseconds=1)
    if dtype.is_integer():
        if tick is None:
            raise ConfigurationError(
                "the time column is an integer and the machine has timeouts: say how long "
                "one unit is with .transitions(..., tick=timedelta(milliseconds=1)) (or "
                "seconds=1, ...), so that timeouts fire at the right time"
            )
        return tick
    raise ConfigurationError(
        f"the time column must be Datetime or an integer type, found {dtype}; "
        "cast it with .with_columns(...) before .transitions()"
    )


_STATE_COLUMNS = ("key", "state", "since", "last_time", "events")


def _check_state_table(table: pl.DataFrame, path: str) -> None:
    """Refuse a state table whose columns are not what ``freeze`` writes."""
    missing = [c for c in _STATE_COLUMNS if c not in table.columns]
    if missing:
        raise CorruptFileError(
            f"state file {path} lacks columns {missing}; restore it, or rewind to an older "
            "checkpoint with run(from_checkpoint=N)"
        )
    schema = table.schema
    wrong = [
        f"{name}: {schema[name]}"
        for name, ok in (
            ("key", not (schema["key"].is_nested() or schema["key"] == pl.Null)),
            ("state", schema["state"] in (pl.String, pl.Categorical)),
            ("since", isinstance(schema["since"], pl.Datetime) or schema["since"].is_integer()),
            (
                "last_time",
                isinstance(schema["last_time"], pl.Datetime) or schema["last_time"].is_integer(),
            ),
            ("events", schema["events"].is_integer()),
        )
        if not ok
    ]
    if wrong:
        raise CorruptFileError(
            f"state file {path} has unexpected column types ({', '.join(wrong)}); streamkit "
            "writes a scalar key, a String state, Datetime or integer times and integer "
            "counts. Restore it, or rewind to an older checkpoint with run(from_checkpoint=N)"
        )
    nulls = [c for c in _STATE_COLUMNS if table[c].null_count()]
    if nulls:
        raise CorruptFileError(
            f"state file {path} holds nulls in {nulls}; restore it, or rewind to an older "
            "checkpoint with run(from_checkpoint=N)"
        )


def _refuse_nulls(df: pl.DataFrame, ctx: BatchContext) -> None:
    """A null key or time cannot be ordered or kept: stop with the offsets.

    The source log holds no nulls in its key and time columns (``append`` and
    ``FileLog`` refuse them), so an operator before ``.transitions()`` made them.
    The quarantine cannot keep such rows either: it is a log keyed the same way.
    """
    for role, col in (("key", ctx.key), ("time", ctx.time)):
        nulls = df[col].null_count()
        if not nulls:
            continue
        rows = df.filter(df[col].is_null())
        offsets = rows[OFFSET].head(5).to_list() if OFFSET in rows.columns else []
        raise SchemaError(
            f"the {role} column {col!r} is null in {nulls} event(s) reaching "
            f".transitions() (source offsets {offsets}{'...' if nulls > 5 else ''}); the "
            f"log holds no null {role}s, so an operator before .transitions() produced "
            f"them. Keep {col!r} non-null, e.g. add .filter(pl.col({col!r}).is_not_null()) "
            "before .transitions(); nothing of this batch was committed"
        )


class Transitions(KeyedOperator):
    """Run a finite-state machine per key; emit the transition history."""

    kind = "transitions"

    def __init__(
        self,
        machine: Machine,
        *,
        event: str | pl.Expr,
        on_undefined: OnUndefined,
        tick: timedelta | None,
        lateness: timedelta | str | int | None = None,
    ) -> None:
        super().__init__()
        self.lateness = _check_lateness(lateness)
        if on_undefined not in ("quarantine", "ignore", "error"):
            raise ConfigurationError(
                f"on_undefined must be 'quarantine', 'ignore' or 'error', got {on_undefined!r}"
            )
        machine.check()
        self.machine = machine
        self.event = pl.col(event) if isinstance(event, str) else event
        self.event_name = event if isinstance(event, str) else "event"
        self.on_undefined: OnUndefined = on_undefined
        self.tick = tick

    def describe(self) -> str:
        late = "" if not self.lateness else f", lateness={_format_lateness(self.lateness)!r}"
        return (
            f"transitions({self.machine.name!r}, event={self.event_name!r}, "
            f"on_undefined={self.on_undefined!r}{late})"
        )

    def fingerprint(self) -> str:
        return self.machine.fingerprint()

    def fresh(self, *, on_undefined: OnUndefined | None = None) -> Transitions:
        new = Transitions(
            self.machine,
            event=self.event,
            on_undefined=on_undefined or self.on_undefined,
            tick=self.tick,
            lateness=self.lateness,
        )
        new.op_id = self.op_id
        return new

    def plan(self) -> dict[str, Any] | None:
        event = expr_to_json(self.event)
        if event is None:
            return None
        return {
            "id": self.op_id,
            "kind": self.kind,
            "machine": self.machine.to_dict(),
            "event": event,
            "event_name": self.event_name,
            "on_undefined": self.on_undefined,
            "tick_us": None if self.tick is None else self.tick // timedelta(microseconds=1),
            "lateness": _lateness_to_json(self.lateness),
        }

    # --------------------------------------------------------------- state
    def open(
        self,
        entry: dict[str, Any] | None,
        ckpts: CheckpointStore,
        key_groups: int,
        *,
        groups: set[int] | None = None,
    ) -> None:
        from streamkit.kernel import KeyIndex, KeyState, compile
        from streamkit.pipeline._keyed import GroupedState, group_of

        self._time_dtype: pl.DataType | None = None
        self.index = KeyIndex()
        self.kstate = KeyState.empty(0)
        self.grouped = GroupedState(key_groups)
        timed = {t.state for t in self.machine.timeouts}
        # per state code, and -1 ("never seen") last: no timeout
        self._has_timeout = np.array([s in timed for s in self.machine.states] + [False])
        # Ascending ids of every key whose state has a timeout (and maybe some
        # more); None: unknown, found from the state when next needed.
        self._timed: np.ndarray[Any, Any] | None = None
        self.watermark = int(np.iinfo(np.int64).min)
        self.max_time = self.watermark  # the largest time read (event time)
        self.waiting = _no_waiting()  # events read but not applied yet (lateness)
        self._fresh_waiting: list[pl.DataFrame] = []  # started waiting since changes()
        # Files of the events that started waiting in earlier batches (with the
        # largest time in each): one stays listed until the watermark passes it.
        self._waiting_files: list[dict[str, Any]] = []
        self._key_dtype: pl.DataType | None = None
        self._compile = compile
        self.cm: Any = None
        self.machines_used: list[str] = []
        if entry is None:
            return
        states = list(entry.get("states", []))
        missing = [s for s in states if s not in self.machine.states]
        if missing:
            raise CheckpointError(
                f"the checkpoint was written by machine {entry.get('machine_name')!r} whose "
                f"states {missing} the current machine {self.machine.name!r} does not declare; "
                "keep those states, or reprocess from the start with "
                "run(from_checkpoint=0)"
            )
        if entry.get("state") is not None:  # every file checked as it is read
            table = self.grouped.restore(
                entry["state"], ckpts, only=groups, check=_check_state_table
            )
            where = f"{ckpts.where('state')} (key-group chains)"
        else:  # format 1: the whole state in one file, regrouped at the next checkpoint
            from streamkit.pipeline._checkpoints import FileRef

            ref = FileRef.from_dict(entry["state_file"])
            table = ckpts.read_state(ref)
            where = ref.path
            if table.height:
                _check_state_table(table, where)
                if groups is not None:
                    mine = np.isin(group_of(table["key"], key_groups), list(groups))
                    table = table.filter(pl.Series(mine))
            self.grouped.regroup(key_groups, table["key"] if table.height else pl.Series([]))
        self.watermark = int(entry["watermark"])
        self.max_time = int(entry.get("max_time", self.watermark))
        if entry.get("waiting_files"):
            self.waiting = _read_waiting(
                entry["waiting_files"], ckpts, self.watermark, groups=groups, key_groups=key_groups
            )
            self._waiting_files = [dict(f) for f in entry["waiting_files"]]
        self.machines_used = [str(f) for f in entry.get("machines_used", [entry["machine"]])]
        if table.height:
            self.index = KeyIndex.from_series(table["key"])
            codes = table["state"].replace_strict(
                list(self.machine.states),
                list(range(len(self.machine.states))),
                default=-1,
                return_dtype=pl.Int32,
            )
            if (codes < 0).any():
                bad = table.filter(codes < 0)["state"].unique().to_list()
                raise CheckpointError(f"state file {where} holds unknown states {bad}")
            self.kstate = KeyState.empty(table.height)
            self.kstate.state[:] = codes.to_numpy()
            self.kstate.since[:] = table["since"].cast(pl.Int64).to_numpy()
            self.kstate.last[:] = table["last_time"].cast(pl.Int64).to_numpy()
            self.kstate.events[:] = table["events"].to_numpy()
            self._time_dtype = table["since"].dtype
            self._key_dtype = table["key"].dtype

    @staticmethod
    def empty_state() -> pl.DataFrame:
        """The state of a pipeline that has seen no key yet."""
        return pl.DataFrame(
            schema={
                "key": pl.String,
                "state": pl.String,
                "since": pl.Int64,
                "last_time": pl.Int64,
                "events": pl.Int64,
            }
        )

    def state_frame(self) -> pl.DataFrame:
        """The per-key state as the contract's columns (a copy of the arrays), by key id."""
        return self._rows(None)

    def _rows(self, ids: np.ndarray[Any, Any] | None) -> pl.DataFrame:
        """The state of the keys ``ids`` (None: every key, in id order)."""
        if self._time_dtype is None or self._key_dtype is None:
            return self.empty_state()
        k = self.kstate
        if ids is None:
            n = len(self.index)
            keys = self.index.keys
            state, since, last, events = (
                np.array(a[:n]) for a in (k.state, k.since, k.last, k.events)
            )
        else:
            keys = self.index.gather(ids)
            state, since, last, events = k.take(ids)
        names = pl.Series("state", list(self.machine.states), dtype=pl.String)
        return pl.DataFrame(
            {
                "key": keys,
                "state": names.gather(state),
                "since": pl.Series(since).cast(self._time_dtype),
                "last_time": pl.Series(last).cast(self._time_dtype),
                "events": pl.Series(events, dtype=pl.Int64),
            }
        )

    def changes(self) -> Any:
        fingerprint = self.machine.fingerprint()
        if fingerprint not in self.machines_used:
            self.machines_used.append(fingerprint)
        entry = {
            "kind": self.kind,
            "machine": fingerprint,
            "machines_used": list(self.machines_used),
            "machine_name": self.machine.name,
            "states": list(self.machine.states),
            "watermark": self.watermark,
            "keys": len(self.index),
        }
        if self.lateness:
            entry["max_time"] = self.max_time
            entry["waiting"] = self.waiting.height
        fresh = (
            pl.concat(self._fresh_waiting, how="vertical_relaxed") if self._fresh_waiting else None
        )
        self._fresh_waiting = []
        taken = self.grouped.take()
        rows = None
        if taken.files:
            from streamkit.pipeline._keyed import ID

            stored = self.grouped.stored(taken.ids)
            rows = self._rows(taken.ids).insert_column(0, pl.Series(ID, stored))
        return entry, taken, rows, fresh

    def persist(self, ckpts: CheckpointStore, changes: Any) -> dict[str, Any]:
        entry, taken, rows, fresh = changes
        written = ckpts.write_states(rows, taken.files) if taken.files else []
        # Waiting events, incrementally: each batch writes only the events that
        # started waiting in it; a file drops out once the watermark passed its
        # every event (an event waits exactly while its time is after the watermark).
        wm = int(entry["watermark"])
        files = [f for f in self._waiting_files if int(f["max_time"]) > wm]
        if fresh is not None and fresh.height:
            rows, cut = _group_cut(fresh, self.grouped.key_groups)
            ref = ckpts.write_state(rows).to_dict()
            files.append(
                dict(
                    ref,
                    max_time=int(fresh["time"].max()),
                    key_groups=self.grouped.key_groups,
                    groups=cut,
                )
            )
        self._waiting_files = files
        entry = dict(entry, state=self.grouped.entry(taken, written))
        if files:
            entry["waiting_files"] = files
        return entry

    def regroup(self, key_groups: int) -> None:
        self.grouped.regroup(key_groups, self.index.keys)

    # ------------------------------------------------------------- process
    def process(self, frame: pl.LazyFrame, ctx: BatchContext) -> pl.LazyFrame:
        df = frame.with_columns(__sk_event=self.event.cast(pl.String)).collect()
        _refuse_nulls(df, ctx)
        key_s, time_s = df[ctx.key], df[ctx.time]
        if self.cm is None:
            given = self.tick
            if given is None and not self.machine.timeouts and time_s.dtype.is_integer():
                given = timedelta(seconds=1)  # no timeouts: the unit does not matter
            tick = time_tick(time_s.dtype, given)
            self._tick_value = tick
            self.cm = self._compile(self.machine, tick=tick)
        if self._time_dtype is None:
            self._time_dtype = time_s.dtype
            self._key_dtype = key_s.dtype
        elif time_s.dtype != self._time_dtype:
            raise CheckpointError(
                f"the time column {ctx.time!r} is {time_s.dtype} in this batch but "
                f"{self._time_dtype} in the checkpointed state"
            )
        if self.lateness or self.waiting.height:  # (lateness turned off: apply what waits)
            return self._process_in_time(df, ctx).lazy()
        if df.height == 0:
            empty = np.empty(0, np.int64)
            wm, end = self._read_watermarks(ctx, empty, empty)
            res = self._run_kernel(ctx, empty, empty.astype(np.int32), empty, watermark=end, wm=wm)
            return self._emit(df, res, ctx, empty, empty.astype(np.int32), empty).lazy()
        key_ids = self._key_ids(key_s)
        codes = self.cm.encode_events(df["__sk_event"])
        times = time_s.cast(pl.Int64).to_numpy()
        offsets = df[OFFSET].cast(pl.Int64).to_numpy() if OFFSET in df.columns else None
        wm, end = self._read_watermarks(ctx, times, offsets)
        res = self._run_kernel(ctx, key_ids, codes, times, watermark=end, wm=wm)
        self.max_time = max(self.max_time, self.watermark)
        return self._emit(df, res, ctx, key_ids, codes, times).lazy()

    def _read_watermarks(
        self,
        ctx: BatchContext,
        times: np.ndarray[Any, Any],
        offsets: np.ndarray[Any, Any] | None,
    ) -> tuple[np.ndarray[Any, Any] | None, int]:
        """Without lateness: each event's watermark and the batch's, from the rows read.

        Every source row read moves the watermark (also one a filter dropped),
        and so does every event's own time (an operator may have changed it):
        event ``i``'s watermark is the largest of the carried watermark, the
        times read up to its row and the events' times up to ``i``. None: the
        kernel takes the running maximum of the events' times itself (no reads
        known, or every read is an event).
        """
        reads = ctx.reads
        if reads is None or offsets is None or reads.are(len(times)):
            return None, self.watermark  # the kernel takes the running maximum
        if reads.rows_are(len(times)):  # a Dask task's rows, and stand-ins for the rest
            before, top = reads.stand_ins_before(offsets)
            end = max(self.watermark, top)
            if len(times) == 0:
                return np.empty(0, np.int64), end
            wm = np.maximum.accumulate(np.maximum(np.maximum(times, before), self.watermark))
            return wm.astype(np.int64), max(end, int(wm[-1]))
        wms, _ = reads.watermarks(self.watermark, self.watermark, 0)
        end = int(wms[-1]) if len(wms) else self.watermark
        if len(times) == 0:
            return np.empty(0, np.int64), end
        wm = np.maximum.accumulate(np.maximum(wms[reads.index_of(offsets)], times))
        return wm.astype(np.int64), max(end, int(wm[-1]))

    def _check_timer_budget(self, first: int, watermark: int, chains: int) -> None:
        """Bound what a periodic machine emits in one batch, before anything runs.

        A machine with a cycle of timeouts alone (``periodic=True``) fires, for
        an idle key, a timeout per period for as long as the watermark moves:
        a batch whose watermark jumps over a long quiet stretch of the log
        could emit without limit. At most ``chains`` chains (keys in timed
        states, plus one per event) each fire at most what the machine can fire
        over the span the batch's watermark covers; above
        ``MAX_TIMEOUTS_PER_BATCH`` rows the batch is refused.
        """
        if not getattr(self.machine, "periodic", False) or self.cm is None:
            return
        from streamkit.machines._validate import max_timeouts_within

        start = first if self.watermark == _NO_TIME else min(first, self.watermark)
        ticks = max(watermark - start, 0)
        tick = self._tick_value
        span = (
            tick * ticks if isinstance(tick, timedelta) else timedelta(microseconds=ticks // 1000)
        )
        per_chain = max_timeouts_within(self.machine, span)
        if per_chain * chains > MAX_TIMEOUTS_PER_BATCH:
            raise ConfigurationError(
                f"machine {self.machine.name!r} is periodic and this batch moves the watermark "
                f"over {span}: up to {per_chain:,} timeouts for each of {chains:,} keys and "
                f"events, more than {MAX_TIMEOUTS_PER_BATCH:,} rows in one batch; nothing was "
                "committed. A quiet stretch of the log this long makes every idle key fire "
                "once per period: give the machine a final state its loop can leave, or "
                "process the log with smaller batches around the gap (batch_rows=...)"
            )

    def _key_ids(self, keys: pl.Series) -> np.ndarray[Any, Any]:
        """Ids of ``keys``, new keys registered in their key groups and the state."""
        known = len(self.index)
        key_ids = self.index.lookup_or_insert(keys)
        if len(self.index) > known:
            self.grouped.add_keys(self.index.keys.slice(known))
        self.kstate.grow(len(self.index))
        return key_ids

    def _lateness_ticks(self, dtype: pl.DataType) -> int:
        """``lateness`` in units of the time column."""
        if isinstance(self.lateness, int):
            return self.lateness
        if dtype.is_integer() and self.tick is None:
            raise ConfigurationError(
                f"lateness={_format_lateness(self.lateness)!r} is a duration but the time "
                "column is an integer: say how long one unit is with tick=timedelta(...), "
                "or give lateness in units of the time column (an int)"
            )
        tick = time_tick(dtype, self.tick)
        if isinstance(tick, int):  # nanoseconds
            return int(self.lateness // timedelta(microseconds=1)) * 1000
        return int(self.lateness // tick)

    def _process_in_time(self, df: pl.DataFrame, ctx: BatchContext) -> pl.DataFrame:
        """Apply the events the watermark has passed, in (time, log order); keep the
        others waiting (see :mod:`streamkit.pipeline._eventtime`).

        Only numeric arrays (key ids, event codes, times, offsets) are put in
        release order; the string columns of a released event are gathered only
        for the events the kernel did not apply (see :meth:`_released_frame`).
        """
        from streamkit.pipeline._eventtime import release

        time_dtype = df[ctx.time].dtype
        new_times = df[ctx.time].cast(pl.Int64).to_numpy()
        new_offsets = df[OFFSET].cast(pl.Int64).to_numpy()
        waiting = self.waiting
        wait_times = waiting["time"].cast(pl.Int64).to_numpy()
        wait_offsets = waiting["offset"].to_numpy()
        plan = release(
            new_times,
            new_offsets,
            wait_times,
            wait_offsets,
            watermark=self.watermark,
            max_time=self.max_time,
            lateness=self._lateness_ticks(time_dtype),
            final=ctx.final,
            reads=ctx.reads,
        )
        order = plan.order
        wait_keys = waiting["key"].cast(df[ctx.key].dtype)
        key_ids = self._released_key_ids(wait_keys, df[ctx.key], order)
        codes = np.concatenate(
            [
                self.cm.encode_events(waiting["event"]).astype(np.int32, copy=False),
                self.cm.encode_events(df["__sk_event"]).astype(np.int32, copy=False),
            ]
        )[order]
        times = np.concatenate([wait_times, new_times]).astype(np.int64, copy=False)[order]
        offsets = np.concatenate([wait_offsets, new_offsets]).astype(np.int64, copy=False)[order]
        held_new = df.filter(pl.Series(plan.held_new))
        kept = pl.concat(
            [waiting.filter(pl.Series(plan.held_waiting)), _waiting_rows(held_new, ctx)],
            how="vertical_relaxed",
        )
        if held_new.height:
            self._fresh_waiting.append(kept.tail(held_new.height))
        self.waiting = kept
        self.max_time = plan.max_time
        res = self._run_kernel(ctx, key_ids, codes, times, watermark=plan.watermark, wm=plan.wm)
        m = waiting.height
        src = order - m  # the batch's row of each released event, < 0: a waiting one
        released = self._released_frame(
            df, waiting, wait_keys, order, src, times, offsets, res.status != 0, ctx
        )

        def data_of(rows: pl.DataFrame) -> pl.Series:
            data = rows["__sk_data"]
            src = rows["__sk_src"].to_numpy()
            fresh_rows = np.flatnonzero(src >= 0)
            if len(fresh_rows):
                payload = _payload_json(df[src[fresh_rows]])
                data = data.scatter(fresh_rows, payload)
            return data

        return self._emit(released, res, ctx, key_ids, codes, times, data_of=data_of)

    def _released_key_ids(
        self, wait_keys: pl.Series, new_keys: pl.Series, order: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        """Key ids of the released events (``order`` into ``[waiting..., new...]``).

        Keys never seen get ids in order of first appearance in the release
        order, exactly as if the released keys were looked up in that order;
        keys of events that keep waiting are not inserted.
        """
        parts = [
            self.index.lookup(k) if len(k) else np.empty(0, np.int64) for k in (wait_keys, new_keys)
        ]
        key_ids: np.ndarray[Any, Any] = np.concatenate(parts).astype(np.int64, copy=False)[order]
        unknown = np.flatnonzero(key_ids < 0)
        if len(unknown):
            both = pl.concat([wait_keys, new_keys], rechunk=False) if len(wait_keys) else new_keys
            key_ids[unknown] = self._key_ids(both.gather(order[unknown]))
        else:
            self.kstate.grow(len(self.index))
        return key_ids

    @staticmethod
    def _released_frame(
        df: pl.DataFrame,
        waiting: pl.DataFrame,
        wait_keys: pl.Series,
        order: np.ndarray[Any, Any],
        src: np.ndarray[Any, Any],
        times: np.ndarray[Any, Any],
        offsets: np.ndarray[Any, Any],
        rows: np.ndarray[Any, Any],
        ctx: BatchContext,
    ) -> pl.DataFrame:
        """The released events, in release order, as ``_emit`` reads them.

        ``_emit`` reads the key and time dtypes, the event count, and the values
        of the events the kernel did not apply (late or undefined: quarantine,
        error message). Those events (``rows``) get every column; the others
        get their time, offset and source row, and nulls for key, event and
        payload, which spares gathering the batch's strings in release order.
        """
        n = len(order)
        at = np.flatnonzero(rows)
        both = (
            pl.concat(
                [
                    pl.DataFrame(
                        {
                            "k": wait_keys,
                            "e": waiting["event"],
                            "d": waiting["data"],
                        }
                    ),
                    pl.DataFrame(
                        {
                            "k": df[ctx.key],
                            "e": df["__sk_event"],
                            "d": pl.repeat(None, df.height, dtype=pl.String, eager=True),
                        }
                    ),
                ],
                rechunk=False,
            )
            if len(at)
            else None
        )

        where = np.full(n, len(at), dtype=np.int64)  # a null row past the gathered ones
        where[at] = np.arange(len(at))

        def column(name: str, dtype: Any) -> pl.Series:
            if both is None:
                return pl.repeat(None, n, dtype=dtype, eager=True)
            return both[name].gather(order[at]).extend_constant(None, 1).gather(where)

        return pl.DataFrame(
            {
                ctx.key: column("k", df[ctx.key].dtype),
                ctx.time: pl.Series(times, dtype=pl.Int64).cast(df[ctx.time].dtype),
                "__sk_event": column("e", pl.String),
                OFFSET: pl.Series(offsets, dtype=pl.Int64),
                "__sk_src": pl.Series(np.where(src >= 0, src, -1).astype(np.int64)),
                "__sk_data": column("d", pl.String),
            }
        )

    def _run_kernel(
        self,
        ctx: BatchContext,
        key_ids: np.ndarray[Any, Any],
        codes: np.ndarray[Any, Any],
        times: np.ndarray[Any, Any],
        *,
        watermark: int,
        wm: np.ndarray[Any, Any] | None = None,
    ) -> Any:
        """The kernel over a batch's events (in the order given), with the flush
        over the keys that may be timed; a periodic machine's output bounded first."""
        flush_keys = self._flush_keys(key_ids)
        if len(times):
            after = watermark if wm is not None else max(watermark, int(times.max()))
            flushed = len(self.index) if flush_keys is None else len(flush_keys)
            self._check_timer_budget(int(times.min()), after, flushed + len(times))
        try:
            res = ctx.executor.run_batch(
                self.cm,
                key_ids,
                codes,
                times,
                self.kstate,
                watermark=watermark,
                flush_keys=flush_keys,
                wm=wm,
            )
        except BaseException:
            self._timed = None  # the state may be partly updated
            raise
        if flush_keys is not None:
            # Every key whose state may have changed was listed: the timed ones
            # among them are now exactly the timed keys.
            self._timed = flush_keys[self._has_timeout[self.kstate.state[flush_keys]]]
        return res

    def _flush_keys(self, key_ids: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
        """The keys the batch-end flush must look at: the batch's own and those in
        a state with a timeout, ascending; None: every key.

        Only a key in a timed state can fire at the flush, so the flush costs
        what the batch and the timed keys cost, however many idle keys the
        state holds. A batch about as large as the key space touches most keys
        anyway: then every key is scanned (cheaper than keeping the list), and
        the list is found from the state when a later batch needs it.
        """
        n = len(self.index)
        if n <= 4 * len(key_ids):
            self._timed = None
            return None
        if self._timed is None:
            self._timed = np.flatnonzero(self._has_timeout[self.kstate.state]).astype(np.int64)
        from streamkit.pipeline._keyed import sorted_unique

        return sorted_unique([key_ids, self._timed])

    @staticmethod
    def _quarantine_rows(
        df: pl.DataFrame,
        setaside: np.ndarray[Any, Any],
        late: np.ndarray[Any, Any],
        res: Any,
        states: pl.Series,
        ctx: BatchContext,
        data_of: Any = None,
    ) -> pl.DataFrame:
        """Set-aside events in the quarantine's fixed schema.

        Key, time and event stay typed columns; the whole event row is kept as
        JSON in ``data``, so the quarantine survives changes to the operators.
        """
        q = df.filter(pl.Series(setaside)) if setaside.any() else df.clear()
        # from two names by code: a numpy array of str would cost ~100x more
        reason = _REASONS.gather(late[setaside].astype(np.uint32))
        data = _payload_json(q) if data_of is None else data_of(q).rename("data")
        return pl.DataFrame(
            {
                ctx.key: q[ctx.key],
                ctx.time: q[ctx.time],
                "event": q["__sk_event"],
                "reason": reason,
                "state": states.gather(res.from_state[setaside]),
                "offset": q[OFFSET].cast(pl.Int64),
                "data": data,
            }
        )

    def _emit(
        self,
        df: pl.DataFrame,
        res: Any,
        ctx: BatchContext,
        key_ids: np.ndarray[Any, Any],
        codes: np.ndarray[Any, Any],
        times: np.ndarray[Any, Any],
        data_of: Any = None,
    ) -> pl.DataFrame:
        self.watermark = int(res.watermark)
        self.grouped.touch(key_ids)
        self.grouped.touch(res.t_key)
        states = pl.Series("s", list(self.machine.states), dtype=pl.String)
        status = res.status
        n = df.height
        undefined = status == 1
        late = status == 2
        ctx.count("late", int(late.sum()))
        ctx.count("undefined", int(undefined.sum()))
        ctx.count("applied", n - int(late.sum()))
        if self.on_undefined == "error" and undefined.any():
            i = int(np.flatnonzero(undefined)[0])
            raise UndefinedTransitionError(
                f"undefined transition: key={df[ctx.key][i]!r} time={df[ctx.time][i]} "
                f"state={states[int(res.from_state[i])]!r} event={df['__sk_event'][i]!r} "
                f"(source offset {df[OFFSET][i]}); nothing of this batch was committed. "
                "Declare the transition or use on_undefined='quarantine'"
            )
        if self.on_undefined == "ignore":
            ctx.count("ignored", int(undefined.sum()))
        setaside = late | undefined if self.on_undefined == "quarantine" else late
        ctx.quarantine.append(
            self._quarantine_rows(df, setaside, late, res, states, ctx, data_of=data_of)
        )
        # History rows: fired events and timeouts, ordered by (time, firing order):
        # per key that is firing order (a key's times never decrease), and the
        # output log, which stores each append in time order, finds them sorted.
        # Built from integer codes; names come from small dictionaries.
        from streamkit.kernel import history_arrays

        events = self.machine.events
        k, t, e, f, to = history_arrays(res, key_ids, times, codes, timeout_code=len(events))
        names = pl.Series("e", [*events, "timeout"], dtype=pl.String)
        return pl.DataFrame(
            {
                "key": self.index.gather(k).cast(df[ctx.key].dtype),
                "time": pl.Series(t, dtype=pl.Int64).cast(df[ctx.time].dtype),
                "event": names.gather(_idx(e)),
                "from_state": states.gather(_idx(f)),
                "to_state": states.gather(_idx(to)),
            }
        )


def _idx(codes: np.ndarray[Any, Any]) -> pl.Series:
    """Codes as Polars' index type: a gather by them then converts nothing."""
    return pl.Series(codes.astype(np.uint32, copy=False))


def _payload_json(rows: pl.DataFrame) -> pl.Series:
    """Each event row (without streamkit's own columns) as JSON: the quarantine's ``data``."""
    payload = rows.drop(
        [c for c in (OFFSET, "__sk_event", "__sk_src", "__sk_data") if c in rows.columns]
    )
    if not payload.width:
        return pl.Series("data", [None] * rows.height, dtype=pl.String)
    return payload.select(pl.struct(pl.all()).struct.json_encode().alias("data"))["data"]


_WAITING_SCHEMA = ("key", "time", "event", "offset", "data")
_REASONS = pl.Series("reason", ["undefined", "late"], dtype=pl.String)
_NO_TIME = int(np.iinfo(np.int64).min)
#: The most timeout rows a periodic machine may fire in one batch.
MAX_TIMEOUTS_PER_BATCH = 50_000_000


def _no_waiting() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "key": pl.Null,  # the source key's type once an event waits
            "time": pl.Int64,  # in ticks
            "event": pl.String,
            "offset": pl.Int64,
            "data": pl.String,
        }
    )


def _waiting_rows(rows: pl.DataFrame, ctx: BatchContext) -> pl.DataFrame:
    """Events that start to wait, in the waiting buffer's columns."""
    return pl.DataFrame(
        {
            "key": rows[ctx.key],
            "time": rows[ctx.time].cast(pl.Int64),
            "event": rows["__sk_event"],
            "offset": rows[OFFSET].cast(pl.Int64),
            "data": _payload_json(rows),
        }
    )


def _check_waiting(frame: pl.DataFrame, where: str) -> pl.DataFrame:
    """Refuse a waiting-events file whose columns are not what streamkit writes."""
    schema = frame.schema
    if (
        tuple(frame.columns) != _WAITING_SCHEMA
        or schema["offset"] != pl.Int64
        or schema["time"] != pl.Int64
    ):
        raise CorruptFileError(
            f"state file {where} (events waiting for the watermark) has columns "
            f"{frame.columns}, expected {list(_WAITING_SCHEMA)}; restore it, or rewind to an "
            "older checkpoint with run(from_checkpoint=N)"
        )
    return frame


def _read_waiting(
    files: list[dict[str, Any]],
    ckpts: CheckpointStore,
    watermark: int,
    *,
    groups: set[int] | None = None,
    key_groups: int = 1,
) -> pl.DataFrame:
    """The events still waiting: those of the listed files after the watermark.

    A file's rows are sorted by key group and it lists each group's rows
    (``groups``: ``{"g": [first, rows]}``, for ``key_groups`` groups), so a
    reader of some groups (a Dask task) skips the files without them and slices
    the rest; a file without that list (an older checkpoint, or one cut for
    another number of groups) is read whole and filtered.
    """
    from streamkit.pipeline._checkpoints import FileRef
    from streamkit.pipeline._keyed import group_of

    frames = []
    for f in files:
        cut = f.get("groups") if f.get("key_groups") == key_groups else None
        if groups is not None and cut is not None and not any(int(g) in groups for g in cut):
            continue
        ref = FileRef.from_dict(f)
        where = ckpts.where(ref.path)
        frame = _check_waiting(ckpts.read_state(ref), where)
        if groups is None:
            frames.append(frame)
        elif cut is None:
            mine = np.isin(group_of(frame["key"], key_groups), list(groups))
            frames.append(frame.filter(pl.Series(mine)))
        else:
            for g, (first, rows) in cut.items():
                if int(g) not in groups:
                    continue
                if int(first) + int(rows) > frame.height:
                    raise CorruptFileError(
                        f"state file {where} (events waiting for the watermark) has "
                        f"{frame.height} rows, the checkpoint lists rows {first}.."
                        f"{int(first) + int(rows) - 1} for key group {g}; restore it, or "
                        "rewind to an older checkpoint with run(from_checkpoint=N)"
                    )
                frames.append(frame.slice(int(first), int(rows)))
    if not frames:
        return _no_waiting()
    every = pl.concat(frames, how="vertical_relaxed")
    return every.filter(pl.col("time") > watermark).sort("offset")


def _group_cut(rows: pl.DataFrame, key_groups: int) -> tuple[pl.DataFrame, dict[str, list[int]]]:
    """Waiting rows sorted by key group (log order within one), and each group's rows."""
    from streamkit.pipeline._keyed import group_of

    g = group_of(rows["key"], key_groups)
    order = np.argsort(g, kind="stable")
    counts = np.bincount(g, minlength=key_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    cut = {str(i): [int(starts[i]), int(counts[i])] for i in np.flatnonzero(counts)}
    return rows[order], cut


def _check_lateness(value: Any) -> timedelta | int:
    """``lateness=``: a duration (``"10m"``, a timedelta) or ticks (an int >= 0)."""
    from streamkit.machines._duration import parse_duration

    if value is None:
        return 0
    if isinstance(value, bool):
        raise ConfigurationError(f"lateness must be a duration or a number of ticks, got {value!r}")
    if isinstance(value, int | np.integer):
        if not 0 <= value < 1 << 62:
            raise ConfigurationError(f"lateness must be >= 0 and < 2**62 ticks, got {value}")
        return int(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except Exception as exc:  # MachineError with the grammar's hint
            raise ConfigurationError(f"lateness {value!r} is not a duration: {exc}") from None
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ConfigurationError(f"lateness must be >= 0, got {value}")
        return value
    raise ConfigurationError(
        f"lateness must be a duration ('10m', a timedelta) or ticks (an int), got {value!r}"
    )


def _format_lateness(value: timedelta | int) -> str:
    from streamkit.machines._duration import format_duration

    return format_duration(value) if isinstance(value, timedelta) else f"{value} ticks"


def _lateness_to_json(value: timedelta | int) -> dict[str, int] | None:
    if not value:
        return None
    if isinstance(value, timedelta):
        return {"us": value // timedelta(microseconds=1)}
    return {"ticks": value}


def _lateness_from_json(d: Any) -> timedelta | int:
    if not d:
        return 0
    if "us" in d:
        return timedelta(microseconds=int(d["us"]))
    return int(d["ticks"])
