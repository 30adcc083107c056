"""Tests of the order-lifecycle dataset generator and its machine."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from streamkit.datasets import generate_orders, order_machine
from streamkit.datasets.orders import DEFAULT_ANOMALY_RATES, EVENTS, UNKNOWN_EVENTS

N = 20_000


@pytest.fixture(scope="module")
def orders() -> pl.DataFrame:
    return generate_orders(N, seed=11)


@pytest.fixture(scope="module")
def clean() -> pl.DataFrame:
    return generate_orders(5_000, seed=5, anomalies=False)


def _replay(df: pl.DataFrame) -> tuple[int, dict[str, str]]:
    """Plain-Python run of order_machine over ``df``: (undefined events, final states)."""
    m = order_machine()
    table = {(t.source, t.event): t.target for t in m.transitions}
    timeouts = {t.state: (t.after, t.target) for t in m.timeouts}
    state: dict[str, str] = {}
    since: dict[str, datetime] = {}
    undefined = 0
    for key, ts, event in df.select("order_id", "ts", "type").iter_rows():
        if key not in state:
            state[key], since[key] = m.initial, ts
        while state[key] in timeouts and since[key] + timeouts[state[key]][0] <= ts:
            since[key] += timeouts[state[key]][0]
            state[key] = timeouts[state[key]][1]
        target = table.get((state[key], event.lower()))
        if target is None:
            undefined += 1
        else:
            state[key], since[key] = target, ts
    return undefined, state


def test_machine_validates_and_covers_events() -> None:
    m = order_machine()
    assert m.validate().ok
    assert m.initial == "new"
    assert set(m.final) == {"delivered", "cancelled", "returned"}
    assert set(m.events) == set(EVENTS)
    assert 6 <= len(m.states) <= 7
    [timeout] = m.timeouts
    assert (timeout.state, timeout.after, timeout.target) == (
        "created",
        timedelta(minutes=30),
        "cancelled",
    )


def test_columns_types_and_no_nulls(orders: pl.DataFrame) -> None:
    assert orders.schema == pl.Schema(
        {
            "order_id": pl.String,
            "ts": pl.Datetime("us"),
            "type": pl.String,
            "amount": pl.Float64,
            "customer": pl.String,
            "region": pl.String,
        }
    )
    assert orders.null_count().row(0) == (0,) * 6
    assert orders["order_id"].n_unique() == N
    assert orders["order_id"].str.contains(r"^o-\d{6}$").all()
    # Every order is created; between 1 and 6 lifecycle rows each (plus anomalies).
    per_order = orders.group_by("order_id").agg(pl.len())["len"]
    assert per_order.min() >= 1
    assert 3.0 < per_order.mean() < 5.0  # type: ignore[operator]


def test_deterministic_for_a_seed() -> None:
    a = generate_orders(2_000, seed=3)
    assert a.equals(generate_orders(2_000, seed=3))
    assert not a.equals(generate_orders(2_000, seed=4))


def test_arrivals_fill_the_span() -> None:
    start = datetime(2026, 3, 1)
    df = generate_orders(5_000, start=start, span="6h", seed=1, anomalies=False)
    created = df.filter(pl.col("type") == "create")["ts"]
    assert created.min() >= start  # type: ignore[operator]
    assert created.max() < start + timedelta(hours=6)  # type: ignore[operator]
    # Poisson arrivals: each hour holds about a sixth of the orders.
    per_hour = created.dt.hour().value_counts()["count"]
    assert per_hour.len() == 6
    assert per_hour.min() > 5_000 / 6 * 0.85  # type: ignore[operator]


def test_clean_log_follows_the_machine(clean: pl.DataFrame) -> None:
    assert clean["ts"].is_sorted()
    assert set(clean["type"].unique()) <= set(EVENTS)
    assert (clean["amount"] > 0).all()
    assert clean.is_duplicated().sum() == 0
    undefined, final = _replay(clean)
    assert undefined == 0
    states = pl.Series(list(final.values())).value_counts()
    counts = dict(states.iter_rows())
    # No order is stuck: all rest in a final state, or in created to be timed out.
    assert set(counts) <= {"delivered", "cancelled", "returned", "created"}
    assert counts["delivered"] > 0.7 * len(final)


def test_anomaly_rates_are_roughly_as_configured(orders: pl.DataFrame) -> None:
    rates = DEFAULT_ANOMALY_RATES
    rows = orders.height
    lower = orders.with_columns(event=pl.col("type").str.to_lowercase())
    per_order = lower.group_by("order_id").agg(
        ship=(pl.col("event") == "ship").any(),
        pay=(pl.col("event") == "pay").any(),
        deliver=(pl.col("event") == "deliver").any(),
        unknown=pl.col("event").is_in(list(UNKNOWN_EVENTS)).any(),
    )
    shipped = per_order.filter("ship")
    skipped = shipped.filter(~pl.col("pay")).height / shipped.height
    stuck = shipped.filter(~pl.col("deliver")).height / shipped.height
    unknown = per_order["unknown"].mean()
    duplicates = orders.is_duplicated().sum() / 2 / rows
    mixed = (orders["type"] != orders["type"].str.to_lowercase()).mean()
    negative = (orders["amount"] < 0).mean()

    def near(value: object, rate: float) -> bool:
        assert isinstance(value, float)
        return 0.6 * rate <= value <= 1.5 * rate

    assert near(skipped, rates["skipped_step"])
    assert near(stuck, rates["stuck"])
    assert near(unknown, rates["unknown_event"])
    assert near(duplicates, rates["duplicate"])
    assert near(mixed, rates["mixed_case"])
    assert near(negative, rates["negative_amount"])


def test_late_rows_follow_a_later_event_of_their_order(orders: pl.DataFrame) -> None:
    marked = orders.with_row_index("pos").with_columns(
        late=pl.col("ts") < pl.col("ts").cum_max().over("order_id")
    )
    late = marked.filter("late")
    assert late.height > 0
    assert (
        0.3 * DEFAULT_ANOMALY_RATES["late"]
        < late.height / orders.height
        < 1.5 * (DEFAULT_ANOMALY_RATES["late"])
    )
    # Apart from the late rows, the frame is in time order.
    assert orders.filter(~marked["late"])["ts"].is_sorted()
    # Late rows are the only ones out of time order: sorting restores the rest.
    assert orders.sort("ts", maintain_order=True).filter(~pl.col("type").is_null()).height == (
        orders.height
    )
    assert set(late["type"].str.to_lowercase()) <= {"create", "pay", "ship", "deliver", "cancel"}


def test_no_late_rows_when_disabled() -> None:
    df = generate_orders(3_000, seed=2, anomalies={"late": 0.0})
    assert df["ts"].is_sorted()
    assert df.is_duplicated().any()  # other anomalies keep their default rates


def test_custom_rates_override_defaults() -> None:
    df = generate_orders(4_000, seed=9, anomalies={"mixed_case": 0.5, "duplicate": 0.0})
    mixed = (df["type"] != df["type"].str.to_lowercase()).mean()
    assert 0.45 < mixed < 0.55  # type: ignore[operator]
    assert df.is_duplicated().sum() == 0


def test_day_continuation_has_new_ids_and_later_times() -> None:
    day0 = generate_orders(1_000, seed=1)
    day1 = generate_orders(1_000, seed=1, day=1)
    assert day1["order_id"].min() == "o-001000"
    assert day1["order_id"].max() == "o-001999"
    assert set(day0["order_id"]).isdisjoint(set(day1["order_id"]))
    created0 = day0.filter(pl.col("type").str.to_lowercase() == "create")["ts"]
    created1 = day1.filter(pl.col("type").str.to_lowercase() == "create")["ts"]
    assert created1.min() >= datetime(2026, 1, 2) > created0.max()  # type: ignore[operator]
    explicit = generate_orders(10, id_offset=1_234_567, anomalies=False)
    assert explicit["order_id"].min() == "o-1234567"


def test_zero_orders_is_an_empty_frame() -> None:
    df = generate_orders(0)
    assert df.height == 0
    assert df.columns == ["order_id", "ts", "type", "amount", "customer", "region"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_orders": -1}, "n_orders must be >= 0"),
        ({"n_orders": 10, "span": "soon"}, "span must be"),
        ({"n_orders": 10, "span": "-1d"}, "span must be positive"),
        ({"n_orders": 10, "anomalies": {"gremlins": 0.1}}, "unknown anomaly kind"),
        ({"n_orders": 10, "anomalies": {"late": 2.0}}, "between 0 and 1"),
        ({"n_orders": 10, "day": -1}, "day must be >= 0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_orders(**kwargs)
