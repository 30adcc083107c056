"""Micro-batch operators.

An operator turns the frame of one micro-batch into the next frame. Stateless
operators (``Filter``, ``WithColumns``) are plain Polars expressions applied
lazily. A keyed operator (:class:`KeyedOperator`; ``Transitions``) also keeps
state per key, cut into key groups, through one interface the runner uses
without knowing the operator: ``open`` restores the state of a checkpoint
entry, ``process`` runs a batch, ``changes`` takes what the batch changed (on
the run's thread, right after the batch) and ``persist`` writes it and returns
the next checkpoint entry (on the commit thread, while the next batch runs).
New keyed operators (windows, dedupe) slot in beside ``Transitions``.
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import polars as pl

from streamkit.errors import (
    CheckpointError,
    ConfigurationError,
)

if TYPE_CHECKING:
    from streamkit.pipeline._checkpoints import CheckpointStore
    from streamkit.pipeline._executor import Executor

#: Internal column carrying each row's source-log offset through the operators.
OFFSET = "__streamkit_offset"

OnUndefined = Literal["quarantine", "ignore", "error"]


@dataclass
class BatchContext:
    """What an operator may use and report while processing one batch."""

    key: str
    time: str
    executor: Executor
    quarantine: list[pl.DataFrame] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    final: bool = False  # end of input: apply every event still waiting
    reads: Any = None  # the source rows read (``_eventtime.Reads``): they move the watermark

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(n)


def run_operators(
    operators: list[Operator],
    batch: pl.DataFrame,
    ctx: BatchContext,
    *,
    pipeline: str,
    source: str,
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The batch step shared by a local run and a Dask task: the operators over one
    source batch (in log order, with its offsets); returns the output rows and the
    rows set aside for the quarantine (None: no keyed operator ran).

    Raises
    ------
    ConfigurationError
        An operator does not fit the source's columns (naming the operators and
        the columns).
    """
    try:
        lf = batch.lazy()
        for op in operators:
            lf = op.process(lf, ctx)
        out = lf.collect()
    except (
        pl.exceptions.ColumnNotFoundError,
        pl.exceptions.SchemaError,
        pl.exceptions.InvalidOperationError,
    ) as exc:
        detail = str(exc).split("\n\nResolved plan")[0].replace(f', "{OFFSET}"', "")
        steps = " -> ".join(op.describe() for op in operators)
        raise ConfigurationError(
            f"pipeline {pipeline!r} cannot run its operators ({steps}) on the columns "
            f"of {source!r} {[c for c in batch.columns if c != OFFSET]}: "
            f"{type(exc).__name__}: {detail.strip()}"
        ) from None
    if OFFSET in out.columns:
        out = out.drop(OFFSET)
    quarantine = pl.concat(ctx.quarantine, how="vertical_relaxed") if ctx.quarantine else None
    return out, quarantine


class Operator:
    """Base of every operator: a stable id, a description, ``process``."""

    kind: ClassVar[str] = "operator"
    stateful: ClassVar[bool] = False

    def __init__(self) -> None:
        self.op_id = ""  # assigned by the pipeline: "<index>-<kind>"

    def describe(self) -> str:
        return self.kind

    def process(self, frame: pl.LazyFrame, ctx: BatchContext) -> pl.LazyFrame:
        raise NotImplementedError

    def fingerprint(self) -> str:
        return self.kind

    def fresh(self) -> Operator:
        """A copy of this operator with no state, ready to ``open``."""
        return copy.copy(self)

    def plan(self) -> dict[str, Any] | None:
        """A JSON description to rebuild the operator (None: not serializable)."""
        return None


class KeyedOperator(Operator):
    """An operator with state per key, checkpointed incrementally by key group.

    The runner calls, in this order: ``open`` once per run (and again after a
    conflict), then per batch ``process`` and ``changes`` on the run's thread
    and ``persist`` on the commit thread; ``regroup`` re-shards the state.
    Events the operator sets aside go to the pipeline's quarantine (a log
    keyed like the source), through ``BatchContext.quarantine``.
    """

    stateful = True

    def open(
        self,
        entry: dict[str, Any] | None,
        ckpts: CheckpointStore,
        key_groups: int,
        *,
        groups: set[int] | None = None,
    ) -> None:
        """Restore the state of a checkpoint entry (None: start empty) in ``key_groups``;
        with ``groups``, only the keys of those key groups (a task of a Dask run)."""
        raise NotImplementedError

    def changes(self) -> Any:
        """What changed since the last call, copied: safe to persist while the next batch runs."""
        raise NotImplementedError

    def persist(self, ckpts: CheckpointStore, changes: Any) -> dict[str, Any]:
        """Write ``changes``; return the checkpoint entry of the state they complete."""
        raise NotImplementedError

    def regroup(self, key_groups: int) -> None:
        """Cut the state into ``key_groups`` groups; the next ``changes`` rewrites it all."""
        raise NotImplementedError

    def state_frame(self) -> pl.DataFrame:
        """The per-key state as a frame, one row per key."""
        raise NotImplementedError


#: Keys of Polars' JSON form that carry code: pickled Python functions
#: (``AnonymousFunction``, ``PythonUdf``...) or a native plugin's library path
#: (``FfiPlugin``), which would be loaded when the expression runs.
_CODE_KEYS = ("Python", "Anonymous", "Udf", "Plugin", "Ffi", "Pickle")


def _holds_python(node: Any) -> bool:
    """Whether Polars' JSON form of an expression embeds code (pickled or native).

    Refuses any key naming code and any run of more than 8 integers anywhere
    (serialized bytes: how a pickled function appears, under whatever key).
    Deliberately strict: an expression it refuses is not stored, and such a
    pipeline is reopened from its code.

    Examples
    --------
    >>> _holds_python({"Column": "a"})
    False
    >>> _holds_python({"Function": {"function": {"FfiPlugin": {"lib": "/tmp/x.so"}}}})
    True
    >>> _holds_python({"Literal": [[128, 5, 149, 43, 4, 0, 0, 0, 0]]})
    True
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if any(mark in str(key) for mark in _CODE_KEYS):
                return True
            if _holds_python(value):
                return True
    elif isinstance(node, list):
        if len(node) > 8 and all(isinstance(v, int) for v in node):
            return True  # serialized bytes: a pickled function
        return any(_holds_python(v) for v in node)
    return False


def expr_to_json(expr: Any) -> str | None:
    """Polars' JSON form of an expression, or None when it holds Python code.

    Expressions with Python functions serialize as pickled bytes; those are
    never stored (no pickle in anything stored), so such a pipeline can only be
    reopened from its code.
    """
    if not isinstance(expr, pl.Expr):
        expr = pl.lit(expr)
    try:
        text = expr.meta.serialize(format="json")
        doc = json.loads(text)
    except Exception:  # expressions Polars cannot serialize to JSON
        return None
    return None if _holds_python(doc) else text


def expr_from_json(text: str) -> pl.Expr:
    """Rebuild a stored expression; refuses anything that would unpickle code."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"a stored pipeline expression is not valid JSON: {exc}") from None
    if _holds_python(doc):
        raise CheckpointError(
            "a stored pipeline expression embeds Python code; streamkit never unpickles "
            "stored data: open this pipeline from its code instead"
        )
    return pl.Expr.deserialize(io.StringIO(text), format="json")


def operator_from_plan(d: dict[str, Any], machine_from_dict: Any) -> Operator:
    """Rebuild an operator from ``Operator.plan()`` output."""
    kind = d["kind"]
    op: Operator
    if kind == "filter":
        op = Filter(tuple(expr_from_json(e) for e in d["predicates"]))
    elif kind == "with_columns":
        op = WithColumns(
            tuple(expr_from_json(e) for e in d["exprs"]),
            {k: expr_from_json(v) for k, v in d["named"].items()},
        )
    elif kind == "transitions":
        from streamkit.pipeline._transitions import Transitions, _lateness_from_json

        tick = d.get("tick_us")
        op = Transitions(
            machine_from_dict(d["machine"]),
            event=expr_from_json(d["event"]),
            on_undefined=d["on_undefined"],
            tick=None if tick is None else timedelta(microseconds=int(tick)),
            lateness=_lateness_from_json(d.get("lateness")),
        )
        op.event_name = str(d.get("event_name", "event"))
    else:
        raise ConfigurationError(f"unknown operator kind {kind!r} in a stored pipeline plan")
    op.op_id = str(d["id"])
    return op


class Filter(Operator):
    kind = "filter"

    def __init__(self, predicates: tuple[pl.Expr, ...]) -> None:
        super().__init__()
        self.predicates = predicates

    def describe(self) -> str:
        return "filter(" + ", ".join(str(p) for p in self.predicates) + ")"

    def process(self, frame: pl.LazyFrame, ctx: BatchContext) -> pl.LazyFrame:
        return frame.filter(*self.predicates)

    def plan(self) -> dict[str, Any] | None:
        preds = [expr_to_json(p) for p in self.predicates]
        if any(p is None for p in preds):
            return None
        return {"id": self.op_id, "kind": self.kind, "predicates": preds}


class WithColumns(Operator):
    kind = "with_columns"

    def __init__(self, exprs: tuple[Any, ...], named: dict[str, Any]) -> None:
        super().__init__()
        self.exprs = exprs
        self.named = named

    def describe(self) -> str:
        parts = [str(e) for e in self.exprs] + [f"{k}={v}" for k, v in self.named.items()]
        return "with_columns(" + ", ".join(parts) + ")"

    def process(self, frame: pl.LazyFrame, ctx: BatchContext) -> pl.LazyFrame:
        return frame.with_columns(*self.exprs, **self.named)

    def plan(self) -> dict[str, Any] | None:
        exprs = [expr_to_json(e) for e in self.exprs]
        named = {k: expr_to_json(v) for k, v in self.named.items()}
        if any(e is None for e in exprs) or any(v is None for v in named.values()):
            return None
        return {"id": self.op_id, "kind": self.kind, "exprs": exprs, "named": named}
