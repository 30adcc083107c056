"""Tests of streamkit.analytics against hand-computed results and plain-Python references."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from streamkit import analytics
from streamkit.errors import SchemaError

T0 = datetime(2026, 1, 1)


def history(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["key", "time", "event", "from_state", "to_state"], orient="row"
    )


@pytest.fixture
def orders() -> pl.DataFrame:
    """Three orders with Datetime times: delivered, timed out, still paid."""
    h = timedelta(hours=1)
    return history(
        [
            ("o1", T0, "pay", "created", "paid"),
            ("o2", T0 + 0.5 * h, "timeout", "created", "cancelled"),
            ("o3", T0 + h, "pay", "created", "paid"),
            ("o1", T0 + 2 * h, "ship", "paid", "shipped"),
            ("o1", T0 + 5 * h, "deliver", "shipped", "delivered"),
        ]
    )


def ref_visits(rows: list[tuple[Any, ...]], until: int | None) -> list[tuple[Any, ...]]:
    """Obviously-correct visits: walk each key's rows in order."""
    by_key: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_key[row[0]].append(row)
    out = []
    for key in sorted(by_key):
        krows = sorted(by_key[key], key=lambda r: r[1])  # stable: ties keep row order
        out.append((key, krows[0][3], krows[0][1], krows[0][1]))
        for i, row in enumerate(krows):
            nxt = krows[i + 1][1] if i + 1 < len(krows) else None
            if nxt is None and until is not None:
                nxt = max(until, row[1])
            out.append((key, row[4], row[1], nxt))
    return [(k, s, a, b, None if b is None else b - a) for k, s, a, b in out]


def random_rows(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    n = draw(st.integers(1, 25))
    states = ["a", "b", "c"]
    rows = []
    current: dict[int, str] = {}
    clock = 0
    for _ in range(n):
        key = draw(st.integers(0, 3))
        clock += draw(st.integers(0, 3))
        src = current.get(key, "a")
        dst = draw(st.sampled_from(states))
        current[key] = dst
        rows.append((key, clock, "e", src, dst))
    return rows


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    return random_rows(draw)


@settings(max_examples=60, deadline=None)
@given(histories(), st.one_of(st.none(), st.integers(0, 100)))
def test_visits_match_reference(rows: list[tuple[Any, ...]], until: int | None) -> None:
    got = analytics.visits(history(rows), until=until)
    assert got.rows() == ref_visits(rows, until)


@settings(max_examples=40, deadline=None)
@given(histories(), st.integers(1, 7))
def test_occupancy_matches_brute_force(rows: list[tuple[Any, ...]], every: int) -> None:
    h = history(rows)
    got = analytics.occupancy(h, every=every)
    visits = ref_visits(rows, None)
    lo = min(r[1] for r in rows) // every * every
    hi = max(r[1] for r in rows)
    states = sorted({r[3] for r in rows} | {r[4] for r in rows})
    expected = []
    for t in range(lo, hi + 1, every):
        for s in states:
            n = sum(1 for _, vs, a, b, _ in visits if vs == s and a <= t and (b is None or t < b))
            expected.append((t, s, n))
    assert got.rows() == expected


def test_visits_datetime_self_loop_and_initial(orders: pl.DataFrame) -> None:
    v = analytics.visits(orders)
    o1 = v.filter(pl.col("key") == "o1")
    assert o1["state"].to_list() == ["created", "paid", "shipped", "delivered"]
    assert o1["duration"].to_list() == [
        timedelta(0),
        timedelta(hours=2),
        timedelta(hours=3),
        None,
    ]
    assert v.schema["duration"] == pl.Duration("us")
    assert v["key"].to_list() == ["o1"] * 4 + ["o2"] * 2 + ["o3"] * 2
    loop = history([(1, 0, "x", "a", "b"), (1, 4, "ping", "b", "b"), (1, 6, "y", "b", "c")])
    assert analytics.visits(loop).select("state", "enter", "exit").rows() == [
        ("a", 0, 0),
        ("b", 0, 4),
        ("b", 4, 6),
        ("c", 6, None),
    ]


def test_visits_until_closes_open_visits(orders: pl.DataFrame) -> None:
    until = T0 + timedelta(hours=10)
    v = analytics.visits(orders, until=until)
    assert v["exit"].null_count() == 0
    o3 = v.filter(pl.col("key") == "o3").row(-1, named=True)
    assert o3["exit"] == until
    assert o3["duration"] == timedelta(hours=9)
    with pytest.raises(TypeError, match="must be a datetime"):
        analytics.visits(orders, until=5)


def test_lazy_in_lazy_out(orders: pl.DataFrame) -> None:
    lazy = orders.lazy()
    for fn in (
        analytics.visits,
        analytics.dwell_times,
        analytics.time_in_state,
        analytics.variants,
        analytics.transition_counts,
        analytics.occupancy,
    ):
        out = fn(lazy)
        assert isinstance(out, pl.LazyFrame), fn.__name__
        assert_frame_equal(out.collect(), fn(orders))
    tp = analytics.throughput_times(lazy, final="delivered")
    assert isinstance(tp, pl.LazyFrame)
    assert_frame_equal(tp.collect(), analytics.throughput_times(orders, final="delivered"))


def test_dwell_times_statistics(orders: pl.DataFrame) -> None:
    d = analytics.dwell_times(orders)
    paid = d.filter(pl.col("state") == "paid").row(0, named=True)
    assert paid["count"] == 1  # o3's paid visit is still open
    assert paid["median"] == timedelta(hours=2)
    with_until = analytics.dwell_times(orders, until=T0 + timedelta(hours=5))
    paid = with_until.filter(pl.col("state") == "paid").row(0, named=True)
    assert paid["count"] == 2
    assert paid["max"] == timedelta(hours=4)
    assert paid["mean"] == timedelta(hours=3)
    assert d["state"].to_list() == sorted(d["state"].to_list())
    # Integers: p90 interpolates linearly.
    h = history([(k, 0, "x", "a", "b") for k in range(10)])
    h = pl.concat([h, history([(k, k + 1, "y", "b", "c") for k in range(10)])])
    b = analytics.dwell_times(h).filter(pl.col("state") == "b").row(0, named=True)
    assert (b["count"], b["mean"], b["median"], b["p90"], b["max"]) == (10, 5.5, 5.5, 9.1, 10)


def test_time_in_state_sums_visits() -> None:
    h = history(
        [
            ("k", 0, "x", "a", "b"),
            ("k", 3, "y", "b", "a"),
            ("k", 4, "x", "a", "b"),
            ("k", 10, "z", "b", "c"),
        ]
    )
    got = analytics.time_in_state(h, until=12)
    assert got.rows() == [("k", "a", 2, 1), ("k", "b", 2, 9), ("k", "c", 1, 2)]
    open_ = analytics.time_in_state(h).filter(pl.col("state") == "c")
    assert open_.rows() == [("k", "c", 1, 0)]


def test_variants_counts_and_shares() -> None:
    rows = []
    for k in range(6):
        rows.append((k, 0, "pay", "created", "paid"))
        if k < 4:
            rows.append((k, 1, "ship", "paid", "shipped"))
    rows.append((9, 2, "timeout", "created", "cancelled"))
    v = analytics.variants(history(rows))
    assert v.rows() == [
        ("created→paid→shipped", 4, 4 / 7),
        ("created→paid", 2, 2 / 7),
        ("created→cancelled", 1, 1 / 7),
    ]


def test_throughput_times(orders: pl.DataFrame) -> None:
    tp = analytics.throughput_times(orders, final=["delivered", "cancelled"])
    assert tp.select("key", "final_state", "throughput").rows() == [
        ("o1", "delivered", timedelta(hours=5)),
        ("o2", "cancelled", timedelta(0)),
        ("o3", None, None),
    ]

    class M:
        final = ("delivered",)

    assert analytics.throughput_times(orders, final=M())["final_state"].to_list() == [
        "delivered",
        None,
        None,
    ]
    starts_final = history([("x", 3, "reopen", "closed", "open")])
    assert analytics.throughput_times(starts_final, final="closed").row(0) == (
        "x",
        3,
        3,
        "closed",
        0,
    )


def test_occupancy_datetime(orders: pl.DataFrame) -> None:
    occ = analytics.occupancy(orders, "1h")
    wide = occ.pivot("state", index="time", values="keys")
    assert wide["time"].to_list() == [T0 + timedelta(hours=i) for i in range(6)]
    assert wide["paid"].to_list() == [1, 2, 1, 1, 1, 1]  # o1 paid 0-2h, o3 paid from 1h
    assert wide["shipped"].to_list() == [0, 0, 1, 1, 1, 0]
    assert wide["delivered"].to_list() == [0, 0, 0, 0, 0, 1]
    assert wide["cancelled"].to_list() == [0, 1, 1, 1, 1, 1]
    assert wide["created"].to_list() == [0] * 6
    bounded = analytics.occupancy(
        orders, timedelta(minutes=90), start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=4)
    )
    assert bounded["time"].unique().sort().to_list() == [
        T0 + timedelta(hours=1),
        T0 + timedelta(hours=2.5),
        T0 + timedelta(hours=4),
    ]
    with pytest.raises(TypeError, match="duration string"):
        analytics.occupancy(orders, 3)


def test_occupancy_integer_every_must_be_int() -> None:
    h = history([(1, 0, "x", "a", "b")])
    with pytest.raises(TypeError, match="positive int"):
        analytics.occupancy(h, "1h")


def test_transition_counts() -> None:
    rows = [(k, 0, "pay", "created", "paid") for k in range(3)]
    rows += [(k, 9, "timeout", "paid", "cancelled") for k in range(2)]
    rows += [(7, 1, "cancel", "paid", "cancelled")]
    got = analytics.transition_counts(history(rows))
    assert got.rows() == [
        ("created", "paid", "pay", 3),
        ("paid", "cancelled", "timeout", 2),
        ("paid", "cancelled", "cancel", 1),
    ]
    assert got.schema["count"] == pl.UInt32
    total = Counter((r[3], r[4]) for r in rows)
    pairs = got.group_by("from_state", "to_state").agg(pl.col("count").sum())
    assert sorted(pairs.rows()) == sorted((f, t, c) for (f, t), c in total.items())


def test_categorical_columns_are_accepted() -> None:
    h = history([(1, 0, "x", "a", "b"), (1, 2, "y", "b", "c")]).with_columns(
        pl.col("from_state", "to_state", "event").cast(pl.Categorical)
    )
    assert analytics.variants(h)["variant"].to_list() == ["a→b→c"]


def test_schema_errors_name_what_is_wrong() -> None:
    bad = pl.DataFrame({"key": [1], "time": [0], "event": ["x"], "from_state": ["a"]})
    with pytest.raises(SchemaError, match=r"missing \['to_state'\]"):
        analytics.visits(bad)
    bad_time = history([(1, "noon", "x", "a", "b")])
    with pytest.raises(SchemaError, match="'time' must be a Datetime or an integer"):
        analytics.dwell_times(bad_time)
    bad_state = history([(1, 0, "x", 1, 2)])
    with pytest.raises(SchemaError, match="'from_state' must hold strings"):
        analytics.transition_counts(bad_state)
    with pytest.raises(TypeError, match="DataFrame or LazyFrame"):
        analytics.variants({"key": [1]})  # type: ignore[type-var]


def test_empty_history() -> None:
    empty = pl.DataFrame(
        schema={
            "key": pl.String,
            "time": pl.Datetime("us"),
            "event": pl.String,
            "from_state": pl.String,
            "to_state": pl.String,
        }
    )
    assert analytics.visits(empty).height == 0
    assert analytics.dwell_times(empty).height == 0
    assert analytics.variants(empty).height == 0
    assert analytics.transition_counts(empty).height == 0
    assert analytics.occupancy(empty).height == 0
