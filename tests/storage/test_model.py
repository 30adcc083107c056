"""Property test: random appends, truncates and retracts against a plain model."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.storage import Position, Store
from streamkit.storage._hash import partition_of


@dataclass
class ModelSegment:
    offset: int
    rows: list[tuple[str, int, int]]  # (key, time, id)
    writer: str | None
    seq: int | None


@dataclass
class Model:
    partitions: int
    next_offset: int = 0
    segments: list[ModelSegment] = field(default_factory=list)
    txns: dict[str, int] = field(default_factory=dict)

    def append(self, rows: list[tuple[str, int, int]], writer: str | None, seq: int | None) -> bool:
        if writer is not None and seq is not None:
            if self.txns.get(writer, -1) >= seq:
                return False
            self.txns[writer] = seq
        if not rows:
            return True
        parts = partition_of(pl.Series([r[0] for r in rows]), self.partitions).tolist()
        for p in sorted(set(parts)):
            mine = [r for r, q in zip(rows, parts) if q == p]
            mine = sorted(mine, key=lambda r: r[1])  # stable: (time, input order)
            self.segments.append(ModelSegment(self.next_offset, mine, writer, seq))
            self.next_offset += len(mine)
        return True

    def rows(self) -> list[tuple[str, int, int, int]]:
        out = []
        for seg in self.segments:
            out.extend((k, t, i, seg.offset + n) for n, (k, t, i) in enumerate(seg.rows))
        return out


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.lists(st.tuples(st.sampled_from("abcdefg"), st.integers(0, 50)), max_size=12),
            st.sampled_from([None, "w1", "w2"]),
            st.integers(0, 5),
        ),
        st.tuples(st.just("truncate"), st.integers(0, 60)),
        st.tuples(st.just("retract"), st.sampled_from(["w1", "w2"]), st.integers(0, 5)),
    ),
    max_size=14,
)


@settings(max_examples=40, deadline=None)
@given(ops=ops, partitions=st.sampled_from([1, 3]))
def test_log_matches_model(ops: list[tuple[object, ...]], partitions: int) -> None:
    store = Store(f"memory://streamkit-model-{uuid.uuid4().hex}")
    log = store.log("m", key="k", time="t", partitions=partitions)
    model = Model(partitions)
    ident = 0
    for op in ops:
        if op[0] == "append":
            _, pairs, writer, seq = op
            rows = []
            for key, t in pairs:  # type: ignore[attr-defined]
                rows.append((key, t, ident))
                ident += 1
            frame = pl.DataFrame(
                {"k": [r[0] for r in rows], "t": [r[1] for r in rows], "i": [r[2] for r in rows]},
                schema={"k": pl.String, "t": pl.Int64, "i": pl.Int64},
            )
            w = writer if writer is not None else None
            s = seq if writer is not None else None
            committed = model.append(rows, w, s)  # type: ignore[arg-type]
            res = log.append(frame, writer=w, seq=s)  # type: ignore[arg-type]
            assert res.duplicate == (not committed)
        elif op[0] == "truncate":
            pos = int(op[1])  # type: ignore[call-overload]
            model.segments = [s for s in model.segments if s.offset + len(s.rows) > pos]
            log.truncate(before=Position(pos))
        else:
            _, writer, hi = op
            model.segments = [
                s
                for s in model.segments
                if not (s.writer == writer and s.seq is not None and s.seq <= hi)  # type: ignore[operator]
            ]
            log.retract(writer, [(0, hi)])  # type: ignore[arg-type]
        # The cached handle and a fresh one agree with the model.
        for handle in (log, store.log("m")):
            assert handle.end() == Position(model.next_offset)
            if handle.schema is None:
                assert model.rows() == []
                continue
            got = handle.scan(with_offset="o").collect()
            assert got.rows() == model.rows()
