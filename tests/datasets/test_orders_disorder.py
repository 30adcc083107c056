"""Tests of ``generate_orders(out_of_order=, delay=)`` and of appending successive days."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pytest

from streamkit.datasets import generate_orders
from streamkit.errors import ConfigurationError

N = 20_000


def _digest(df: pl.DataFrame) -> str:
    """A hash of the frame's values in row order, independent of Polars' own hashing."""
    h = hashlib.sha256()
    h.update(str(df.height).encode())
    for name in ("order_id", "type", "customer", "region"):
        h.update("\x1f".join(df[name].to_list()).encode())
    h.update(df["ts"].dt.epoch("us").to_numpy().astype("<i8").tobytes())
    h.update(df["amount"].to_numpy().astype("<f8").tobytes())
    return h.hexdigest()[:32]


# Hashes of the frames generate_orders returned before out_of_order existed (commit
# eed9c4f): notebooks, docs and tests depend on these exact frames.
PINNED: list[tuple[dict[str, Any], str]] = [
    ({"n_orders": 1_000, "seed": 7}, "e653f7672b9ee731be7a49466f237cdd"),
    ({"n_orders": 2_000, "seed": 3, "anomalies": False}, "79ace2cf95664b96984b8b9fe7ebcf39"),
    ({"n_orders": 500, "seed": 1, "day": 2, "span": "6h"}, "882b0f38cc03bf5acca8fe86d5681564"),
    (
        {"n_orders": 3_000, "seed": 11, "anomalies": {"late": 0.05}},
        "e727f8527d3064ebc94ee005c078f576",
    ),
    (
        {"n_orders": 800, "seed": 5, "start": datetime(2025, 6, 1), "span": "3d", "id_offset": 42},
        "634b62628fb1049ba3a5924fe8c31e06",
    ),
]


def _lag(df: pl.DataFrame) -> pl.Series:
    """How far each row's time trails the newest time appended before it (or with it)."""
    return df["ts"].cum_max() - df["ts"]


def _max_lag(df: pl.DataFrame) -> timedelta:
    value = _lag(df).max()
    assert isinstance(value, timedelta)
    return value


@pytest.mark.parametrize(("kwargs", "expected"), PINNED)
def test_default_output_is_unchanged(kwargs: dict[str, Any], expected: str) -> None:
    assert _digest(generate_orders(**kwargs)) == expected
    # out_of_order=0 ignores delay entirely.
    assert _digest(generate_orders(**kwargs, out_of_order=0.0, delay="3h")) == expected


@pytest.fixture(scope="module")
def calm() -> pl.DataFrame:
    return generate_orders(N, seed=11, anomalies=False)


@pytest.mark.parametrize(
    ("fraction", "delay", "limit", "low"),
    [
        (0.1, "10m", timedelta(minutes=10), 0.09),
        (0.3, timedelta(seconds=30), timedelta(seconds=30), 0.2),
        (1.0, "2h", timedelta(hours=2), 0.9),
    ],
)
def test_fraction_and_delay_hold(
    calm: pl.DataFrame, fraction: float, delay: str | timedelta, limit: timedelta, low: float
) -> None:
    df = generate_orders(N, seed=11, anomalies=False, out_of_order=fraction, delay=delay)
    assert df.height == calm.height
    lag = _lag(df)
    # The in-order frame has no row behind the log; now about `fraction` of them are,
    # and none by more than `delay`.
    assert _max_lag(calm) == timedelta(0)
    behind = (lag > timedelta(0)).mean()
    assert isinstance(behind, float)
    # A held row goes behind the rows that arrive meanwhile. Measured (seeds 11-13):
    # 0.097 for (0.1, 10m); 0.24 for (0.3, 30s), as a held row passes no row when
    # the next one is more than its hold away (the log thins out after day one);
    # 0.964 for (1.0, 2h). Binomial noise on the held count is ~0.001.
    assert low <= behind <= fraction + 0.005
    assert limit * 0.9 < _max_lag(df) <= limit  # the bound is reached, not just respected
    # Disorder within an order too, not only across orders.
    within = df.select((pl.col("ts") < pl.col("ts").cum_max().over("order_id")).sum()).item()
    assert within > 0  # 865 rows for (0.1, 10m); few at 30s, as a pay follows in ~4m
    # Only the row order changes: every row is the in-order frame's row.
    assert df.sort("ts", maintain_order=True).equals(calm)


def test_disorder_keeps_the_anomalies() -> None:
    base = generate_orders(5_000, seed=4)
    messy = generate_orders(5_000, seed=4, out_of_order=0.2, delay="15m")
    assert not messy.equals(base)
    columns = base.columns
    assert messy.sort(columns).equals(base.sort(columns))
    # The late anomaly's rows are behind by more than the delay; the other rows are
    # behind by at most the delay.
    late_base = int((_lag(base) > timedelta(0)).sum())
    assert late_base > 0
    over = (_lag(messy) > timedelta(minutes=15)).sum()
    assert 0 < over <= late_base
    assert (_lag(messy) > timedelta(0)).sum() > late_base + 0.15 * messy.height


def test_disorder_is_deterministic() -> None:
    kwargs: dict[str, Any] = {"seed": 3, "out_of_order": 0.1, "delay": "10m"}
    a = generate_orders(2_000, **kwargs)
    assert a.equals(generate_orders(2_000, **kwargs))
    assert not a.equals(generate_orders(2_000, **{**kwargs, "seed": 4}))
    assert not a.equals(generate_orders(2_000, **{**kwargs, "delay": "20m"}))
    day1 = generate_orders(2_000, day=1, **kwargs)
    assert day1.equals(generate_orders(2_000, day=1, **kwargs))
    assert day1["ts"].min() >= datetime(2026, 1, 2)  # type: ignore[operator]


def test_sparse_and_empty_logs() -> None:
    assert generate_orders(0, out_of_order=0.5).height == 0
    one = generate_orders(1, anomalies=False, out_of_order=1.0, delay="1d")
    assert one.sort("ts", maintain_order=True).equals(generate_orders(1, anomalies=False))


def test_successive_days_without_the_trap() -> None:
    # The trap: day k holds the whole lifecycle of day k's orders, far past day k+1's start.
    day0 = generate_orders(2_000, seed=1)
    day1 = generate_orders(2_000, seed=1, day=1)
    assert day0["ts"].max() - day1["ts"].min() > timedelta(days=7)  # type: ignore[operator]
    # The recipe of the docstring: one draw of the period, appended in arrival slices.
    week = generate_orders(7_000, span="7d", seed=1, out_of_order=0.1, delay="10m")
    arrival_day = week["ts"].cum_max().dt.date()
    slices = [week.filter(arrival_day == d) for d in arrival_day.unique(maintain_order=True)]
    assert pl.concat(slices).equals(week)
    assert len(slices) > 7  # returns keep arriving after the week
    # After each slice, the newest time read lies in that slice's own day: appending
    # slice k never pushes the log's time into day k+1.
    for k, s in enumerate(slices[:7]):
        newest = s["ts"].max()
        assert isinstance(newest, datetime)
        assert datetime(2026, 1, 1 + k) <= newest < datetime(2026, 1, 2 + k)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"out_of_order": -0.1}, "out_of_order must be a fraction of rows between 0 and 1"),
        ({"out_of_order": 1.5}, "out_of_order must be .* got 1.5"),
        ({"out_of_order": float("nan")}, "out_of_order must be"),
        ({"out_of_order": "0.1"}, "out_of_order must be .* got '0.1'"),
        ({"out_of_order": True}, "out_of_order must be"),
        ({"out_of_order": 0.1, "delay": "soon"}, "delay must be a timedelta or a number"),
        ({"out_of_order": 0.1, "delay": 600}, "delay must be a timedelta or a number"),
        ({"out_of_order": 0.1, "delay": "0m"}, "delay must be positive; got '0m'"),
        ({"delay": timedelta(minutes=-5)}, "delay must be positive"),
        ({"span": "soon"}, "span must be a timedelta"),
        ({"n_orders": -1}, "n_orders must be >= 0"),
        ({"day": -1}, "day must be >= 0"),
        ({"id_offset": -1}, "id_offset must be >= 0"),
        ({"anomalies": {"late": 2.0}}, "between 0 and 1"),
    ],
)
def test_bad_arguments_raise_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        generate_orders(**{"n_orders": 10, **kwargs})
    assert isinstance(info.value, ValueError)  # as before ConfigurationError was used
    assert str(info.value).startswith("generate_orders: ")
