"""A synthetic order-lifecycle event log with controlled anomalies.

:func:`generate_orders` draws a realistic log of web-shop order events (Poisson
arrivals, lognormal step delays) together with the kinds of dirt a real pipeline
meets: skipped steps, duplicate deliveries, late arrivals, stuck orders, unknown
event types, mixed-case event names and negative amounts. :func:`order_machine`
is the state machine those events follow.

Everything is vectorized with numpy and deterministic for a seed, so a million
orders take a few seconds and the same call always yields the same frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import numpy as np
import polars as pl

from streamkit.errors import ConfigurationError

if TYPE_CHECKING:
    from streamkit.machines import Machine

__all__ = ["DEFAULT_ANOMALY_RATES", "EVENTS", "UNKNOWN_EVENTS", "generate_orders", "order_machine"]

#: The events of the order lifecycle, in lifecycle order.
EVENTS: Final[tuple[str, ...]] = ("create", "pay", "cancel", "ship", "deliver", "return")

#: Event names that :func:`order_machine` does not know (the ``unknown_event`` anomaly).
UNKNOWN_EVENTS: Final[tuple[str, ...]] = ("address_change", "refund_requested", "review", "ping")

#: Default anomaly rates used when ``anomalies=True`` (see :func:`generate_orders`).
DEFAULT_ANOMALY_RATES: Final[Mapping[str, float]] = MappingProxyType(
    {
        "skipped_step": 0.01,
        "duplicate": 0.005,
        "late": 0.005,
        "stuck": 0.02,
        "unknown_event": 0.005,
        "mixed_case": 0.05,
        "negative_amount": 0.002,
    }
)

_REGIONS: Final[tuple[str, ...]] = ("eu-west", "eu-central", "us-east", "us-west", "ap-south")
_REGION_WEIGHTS: Final[tuple[float, ...]] = (0.3, 0.2, 0.25, 0.15, 0.1)

# Lifecycle branch probabilities (normal behaviour, not anomalies).
_P_PAY: Final = 0.86  # created -> paid
_P_CANCEL_CREATED: Final = 0.05  # created -> cancelled by the customer; the rest time out
_P_CANCEL_PAID: Final = 0.03  # paid -> cancelled
_P_RETURN: Final = 0.04  # delivered -> returned

_US_PER_MINUTE: Final = 60_000_000
_TIMEOUT_US: Final = 30 * _US_PER_MINUTE  # the created -> cancelled timeout of order_machine

# Column indices of the per-order step matrix (one slot per lifecycle event).
_CREATE, _PAY, _CANCEL, _SHIP, _DELIVER, _RETURN = range(6)
_N_KNOWN: Final = len(EVENTS)


def order_machine() -> Machine:
    """Return the order-lifecycle state machine that :func:`generate_orders` follows.

    States ``new`` (initial), ``created``, ``paid``, ``shipped``, ``delivered``,
    ``cancelled`` and ``returned``; final states ``delivered``, ``cancelled`` and
    ``returned`` (a delivered order may still be returned). An order left unpaid
    for 30 minutes is cancelled by a timeout. It is the same machine as
    ``sk.machines.load("order")``, read from the YAML file shipped in the package.

    Returns
    -------
    Machine
        A machine that passes ``validate()``.

    Examples
    --------
    >>> from streamkit.datasets import order_machine
    >>> m = order_machine()
    >>> m.initial, sorted(m.final)
    ('new', ['cancelled', 'delivered', 'returned'])
    >>> m.validate().ok
    True
    """
    from streamkit.machines.library import load

    return load("order")


def _parse_span(span: str | timedelta, name: str = "span") -> timedelta:
    if isinstance(span, timedelta):
        value = span
    else:
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
        text = str(span).strip().lower()
        number, unit = text[:-1], text[-1:]
        try:
            value = timedelta(seconds=float(number) * units[unit])
        except (KeyError, ValueError, OverflowError):
            raise ConfigurationError(
                f"generate_orders: {name} must be a timedelta or a number followed by one of "
                f"s, m, h, d, w (e.g. '1d', '6h'); got {span!r}"
            ) from None
    if value <= timedelta(0):
        raise ConfigurationError(f"generate_orders: {name} must be positive; got {span!r}")
    return value


def _resolve_rates(anomalies: bool | Mapping[str, float]) -> dict[str, float]:
    if anomalies is True:
        return dict(DEFAULT_ANOMALY_RATES)
    if anomalies is False:
        return dict.fromkeys(DEFAULT_ANOMALY_RATES, 0.0)
    unknown = sorted(set(anomalies) - set(DEFAULT_ANOMALY_RATES))
    if unknown:
        raise ConfigurationError(
            f"generate_orders: unknown anomaly kind(s) {unknown}; "
            f"expected some of {sorted(DEFAULT_ANOMALY_RATES)}"
        )
    rates = dict(DEFAULT_ANOMALY_RATES)
    rates.update(anomalies)
    for kind, rate in rates.items():
        if not 0.0 <= float(rate) <= 1.0:
            raise ConfigurationError(
                f"generate_orders: anomaly rate {kind!r} must be between 0 and 1; got {rate!r}"
            )
    return {k: float(v) for k, v in rates.items()}


def _lognormal_us(
    rng: np.random.Generator, n: int, median_minutes: float, sigma: float
) -> np.ndarray:
    """Lognormal delays in whole microseconds (at least one second)."""
    minutes = median_minutes * np.exp(sigma * rng.standard_normal(n))
    return np.maximum((minutes * _US_PER_MINUTE).astype(np.int64), 1_000_000)


def _lognormal_below_us(
    rng: np.random.Generator, n: int, median_minutes: float, sigma: float, limit_us: int
) -> np.ndarray:
    """Lognormal delays conditioned on being shorter than ``limit_us`` (rejection)."""
    out = _lognormal_us(rng, n, median_minutes, sigma)
    bad = np.flatnonzero(out >= limit_us)
    while bad.size:
        out[bad] = _lognormal_us(rng, bad.size, median_minutes, sigma)
        bad = bad[out[bad] >= limit_us]
    return out


def generate_orders(
    n_orders: int,
    *,
    start: datetime = datetime(2026, 1, 1),
    span: str | timedelta = "1d",
    seed: int = 0,
    anomalies: bool | Mapping[str, float] = True,
    day: int = 0,
    id_offset: int | None = None,
    out_of_order: float = 0.0,
    delay: str | timedelta = "10m",
) -> pl.DataFrame:
    """Generate a synthetic log of order events, in append order.

    Orders arrive as a Poisson process over ``[start, start + span)`` (shifted by
    ``day`` spans). Each order is created, then (lognormal delays) paid within
    30 minutes (86 %), cancelled by the customer (5 %) or abandoned so that the
    machine's timeout cancels it (the rest); a paid order is cancelled (3 %) or
    shipped, a shipped order delivered, a delivered order sometimes returned (4 %).
    The frame holds the whole lifecycle of the orders created in the span, so late
    steps may fall after the span's end.

    Anomalies, each at a configurable rate:

    ``skipped_step``
        fraction of shipped orders whose ``pay`` event is missing (ship without pay).
    ``duplicate``
        fraction of rows delivered twice (an identical copy right after it).
    ``late``
        fraction of rows (among those with a later event of the same order) that
        appear in the frame after a later event of their order, as if they had
        arrived late; the frame is otherwise sorted by ``ts``.
    ``stuck``
        fraction of shipped orders that are never delivered (stuck in ``shipped``).
    ``unknown_event``
        fraction of orders with one extra event of a type the machine does not know.
    ``mixed_case``
        fraction of rows whose ``type`` is upper or title case (``"PAY"``, ``"Pay"``).
    ``negative_amount``
        fraction of rows with a negative ``amount`` (for filters to remove).

    Disorder. Real logs are appended in the order events *arrive*, not the order
    they happened: devices buffer, collectors batch. With ``out_of_order=f`` a
    fraction ``f`` of the rows is held back: each picked row arrives a uniform
    random ``0 < d <= delay`` after the moment it would have arrived and is moved
    behind every row that arrived by then, so the frame is no longer in time
    order, across orders and within one. Times (``ts``) and every other column are
    unchanged: the frame is a permutation of the rows of the same call with
    ``out_of_order=0``. Every row trails the newest time before it in the frame
    by at most ``delay``, except the ``late`` anomaly's rows, which are late on
    purpose (turn them off with ``anomalies={"late": 0.0}`` for disorder bounded
    by ``delay`` alone). :meth:`~streamkit.Log.append` sorts the rows of one
    append by time, so the disorder reaches a log only where the frame is
    appended in pieces, in its row order, as a collector would (``for part in
    df.iter_slices(200): log.append(part)``); a pipeline reading such a log needs
    ``.transitions(..., lateness=delay)`` to apply every event in time order.

    Successive days. ``day=k`` draws the orders *created* on day ``k`` together with
    their whole lifecycle, which runs on for days (deliveries) and weeks (returns).
    Appending ``day=1`` and then ``day=2`` to one log therefore puts day 1's
    deliveries and returns, up to weeks ahead, before day 2's first events: the
    watermark, the largest time read, jumps weeks ahead, day 2's unpaid orders
    time out at once and their later events are quarantined. To feed a log day by
    day, generate the whole period in one call and append it in slices cut where
    the running maximum of ``ts`` (the time at which each row reaches the log)
    crosses midnight. The slices are contiguous pieces of the frame, and no slice
    holds a time after the next slice's day starts (see the examples). Use
    ``day`` for independent samples of a day, such as separate logs.

    Parameters
    ----------
    n_orders
        Number of orders (not rows; an order has 1 to 6 rows).
    start
        Start of the first day's arrival window.
    span
        Length of the arrival window: a :class:`~datetime.timedelta` or a string such
        as ``"1d"``, ``"6h"``, ``"90m"``.
    seed
        Random seed; the same arguments always give the same frame.
    anomalies
        ``True`` for :data:`DEFAULT_ANOMALY_RATES`, ``False`` for a clean log, or a
        mapping that overrides some of the default rates.
    day
        Continuation index: day ``k`` covers ``[start + k*span, start + (k+1)*span)``,
        draws from an independent random stream and numbers its orders from
        ``k * n_orders`` unless ``id_offset`` is given, so successive days can be
        appended to the same log.
    id_offset
        Number of the first order (``order_id`` is ``"o-"`` and at least six digits).
    out_of_order
        Fraction of rows, in ``[0, 1]``, appended later than their time order says,
        by up to ``delay``. The default ``0.0`` leaves the frame exactly as before
        this option existed.
    delay
        The longest hold-back of an out-of-order row: a :class:`~datetime.timedelta`
        or a string such as ``"10m"``, ``"30s"``, ``"1h"``.

    Returns
    -------
    polars.DataFrame
        Columns ``order_id`` (str), ``ts`` (Datetime("us")), ``type`` (str),
        ``amount`` (f64), ``customer`` (str), ``region`` (str); no nulls.

    Raises
    ------
    streamkit.errors.ConfigurationError
        (a :class:`ValueError`) If ``n_orders``, ``day`` or ``id_offset`` is
        negative, ``span`` or ``delay`` cannot be read or is not positive, an
        anomaly rate is unknown or outside ``[0, 1]``, or ``out_of_order`` is not a
        number in ``[0, 1]``.

    Examples
    --------
    >>> from streamkit.datasets import generate_orders
    >>> df = generate_orders(1_000, seed=7)
    >>> df.columns
    ['order_id', 'ts', 'type', 'amount', 'customer', 'region']
    >>> df["order_id"].n_unique()
    1000
    >>> df.equals(generate_orders(1_000, seed=7))
    True
    >>> sorted(generate_orders(200, anomalies=False)["type"].unique())
    ['cancel', 'create', 'deliver', 'pay', 'return', 'ship']
    >>> day2 = generate_orders(1_000, seed=7, day=1)
    >>> day2["order_id"].min(), day2["ts"].min() >= df["ts"].min()
    ('o-001000', True)

    Disorder: 10 % of the rows held back by up to ten minutes. The rows are those
    of the in-order frame; only their order changes.

    >>> import polars as pl
    >>> calm = generate_orders(1_000, seed=7, anomalies=False)
    >>> messy = generate_orders(1_000, seed=7, anomalies=False, out_of_order=0.1, delay="10m")
    >>> calm["ts"].is_sorted(), messy["ts"].is_sorted()
    (True, False)
    >>> messy.sort("ts", maintain_order=True).equals(calm)
    True
    >>> behind = messy["ts"].cum_max() - messy["ts"]  # how far a row trails the log
    >>> from datetime import timedelta
    >>> behind.max() <= timedelta(minutes=10)
    True

    The day trap: day 0's lifecycles run weeks past day 1's start.

    >>> day0, day1 = generate_orders(1_000, seed=7), generate_orders(1_000, seed=7, day=1)
    >>> day0["ts"].max() - day1["ts"].min() > timedelta(days=7)
    True

    Instead, draw a week at once and append it day by day in arrival slices:

    >>> week = generate_orders(7_000, span="7d", seed=7)
    >>> arrival_day = week["ts"].cum_max().dt.date()
    >>> slices = [week.filter(arrival_day == d) for d in arrival_day.unique(maintain_order=True)]
    >>> pl.concat(slices).equals(week)  # log.append(s) for s in slices: the log holds week
    True
    >>> [s["ts"].cum_max().dt.date().max() for s in slices[:2]]
    [datetime.date(2026, 1, 1), datetime.date(2026, 1, 2)]
    """
    if n_orders < 0:
        raise ConfigurationError(f"generate_orders: n_orders must be >= 0; got {n_orders}")
    if day < 0:
        raise ConfigurationError(f"generate_orders: day must be >= 0; got {day}")
    if id_offset is not None and id_offset < 0:
        raise ConfigurationError(f"generate_orders: id_offset must be >= 0; got {id_offset}")
    span_td = _parse_span(span)
    delay_td = _parse_span(delay, "delay")
    if (
        isinstance(out_of_order, bool)
        or not isinstance(out_of_order, (int, float, np.integer, np.floating))
        or not 0.0 <= float(out_of_order) <= 1.0
    ):
        raise ConfigurationError(
            f"generate_orders: out_of_order must be a fraction of rows between 0 and 1 "
            f"(e.g. 0.1); got {out_of_order!r}"
        )
    rates = _resolve_rates(anomalies)
    first_id = day * n_orders if id_offset is None else id_offset
    rng = np.random.default_rng([seed, day])
    n = n_orders
    span_us = span_td // timedelta(microseconds=1)
    day_start = start + day * span_td

    # --- per-order attributes --------------------------------------------------
    # Given their count, Poisson arrivals are uniform order statistics on the span.
    created = np.sort(rng.integers(0, span_us, size=n, dtype=np.int64))
    amount = np.round(np.exp(3.6 + 0.8 * rng.standard_normal(n)), 2)
    n_customers = max(1, n // 4)
    # Skewed towards a few frequent buyers (density ~ c^(-1/2)), ids shuffled.
    customer = (n_customers * rng.random(n) ** 2).astype(np.int64)
    customer = rng.permutation(n_customers)[customer]
    region = rng.choice(len(_REGIONS), size=n, p=np.asarray(_REGION_WEIGHTS))

    # --- the lifecycle: one time slot per event, -1 = absent ---------------------
    t = np.full((n, _N_KNOWN), -1, dtype=np.int64)
    t[:, _CREATE] = created
    branch = rng.random(n)
    paid = branch < _P_PAY
    cancel_created = (branch >= _P_PAY) & (branch < _P_PAY + _P_CANCEL_CREATED)
    t[paid, _PAY] = created[paid] + _lognormal_below_us(rng, int(paid.sum()), 4.0, 0.9, _TIMEOUT_US)
    t[cancel_created, _CANCEL] = created[cancel_created] + _lognormal_below_us(
        rng, int(cancel_created.sum()), 8.0, 0.7, _TIMEOUT_US
    )
    after_pay = rng.random(n)
    cancel_paid = paid & (after_pay < _P_CANCEL_PAID)
    shipped = paid & ~cancel_paid
    t[cancel_paid, _CANCEL] = t[cancel_paid, _PAY] + _lognormal_us(
        rng, int(cancel_paid.sum()), 120.0, 0.8
    )
    t[shipped, _SHIP] = t[shipped, _PAY] + _lognormal_us(rng, int(shipped.sum()), 8 * 60.0, 0.6)
    stuck = shipped & (rng.random(n) < rates["stuck"])
    delivered = shipped & ~stuck
    t[delivered, _DELIVER] = t[delivered, _SHIP] + _lognormal_us(
        rng, int(delivered.sum()), 36 * 60.0, 0.4
    )
    returned = delivered & (rng.random(n) < _P_RETURN)
    t[returned, _RETURN] = t[returned, _DELIVER] + _lognormal_us(
        rng, int(returned.sum()), 5 * 24 * 60.0, 0.5
    )
    skipped = shipped & (rng.random(n) < rates["skipped_step"])
    t[skipped, _PAY] = -1

    # --- flatten to rows ----------------------------------------------------------
    order_idx, code = np.nonzero(t >= 0)  # row-major: per order, in lifecycle order
    ts = t[order_idx, code]
    code = code.astype(np.int16)

    unknown = np.flatnonzero(rng.random(n) < rates["unknown_event"])
    if unknown.size:
        last = t[unknown].max(axis=1)
        u_ts = created[unknown] + (rng.random(unknown.size) * (last - created[unknown] + 1)).astype(
            np.int64
        )
        u_code = (_N_KNOWN + rng.integers(0, len(UNKNOWN_EVENTS), size=unknown.size)).astype(
            np.int16
        )
        order_idx = np.concatenate([order_idx, unknown])
        ts = np.concatenate([ts, u_ts])
        code = np.concatenate([code, u_code])

    dup = np.flatnonzero(rng.random(ts.size) < rates["duplicate"])
    if dup.size:
        order_idx = np.concatenate([order_idx, order_idx[dup]])
        ts = np.concatenate([ts, ts[dup]])
        code = np.concatenate([code, code[dup]])

    # Append order: by time; ties by order, then lifecycle step (stable lexsort).
    perm = np.lexsort((code, order_idx, ts))
    order_idx, ts, code = order_idx[perm], ts[perm], code[perm]
    rank = _late_ranks(rng, order_idx, ts, rates["late"])
    if rank is not None:
        perm = np.argsort(rank, kind="stable")
        order_idx, ts, code = order_idx[perm], ts[perm], code[perm]

    # --- row attributes -----------------------------------------------------------
    m = ts.size
    row_amount = amount[order_idx]
    negative = rng.random(m) < rates["negative_amount"]
    row_amount[negative] = -row_amount[negative]
    case = np.zeros(m, dtype=np.int16)  # 0 lower, 1 upper, 2 title
    mixed = rng.random(m) < rates["mixed_case"]
    case[mixed] = 1 + rng.integers(0, 2, size=int(mixed.sum()), dtype=np.int16)

    # --- disorder: a permutation of the finished rows, from its own random stream ---
    if out_of_order > 0.0 and m:
        perm = _disorder(
            np.random.default_rng([seed, day, 1]),
            ts,
            float(out_of_order),
            delay_td // timedelta(microseconds=1),
        )
        order_idx, ts, code = order_idx[perm], ts[perm], code[perm]
        row_amount, case = row_amount[perm], case[perm]

    names = [*EVENTS, *UNKNOWN_EVENTS]
    vocabulary = pl.Series(
        "type",
        names + [s.upper() for s in names] + [s.title() for s in names],
        dtype=pl.String,
    )
    type_col = vocabulary.gather(pl.Series(code.astype(np.int64) + case * len(names)))
    width = max(6, len(str(first_id + max(n - 1, 0))))
    return pl.DataFrame(
        {
            "order_id": pl.Series(order_idx.astype(np.int64) + first_id),
            "ts": pl.Series(ts, dtype=pl.Int64),
            "type": type_col,
            "amount": pl.Series(row_amount, dtype=pl.Float64),
            "customer": pl.Series(customer[order_idx].astype(np.int64)),
            "region": pl.Series(_REGIONS, dtype=pl.String).gather(
                pl.Series(region[order_idx].astype(np.int64))
            ),
        }
    ).with_columns(
        order_id=pl.lit("o-") + pl.col("order_id").cast(pl.String).str.zfill(width),
        ts=(pl.lit(day_start, dtype=pl.Datetime("us")) + pl.duration(microseconds=pl.col("ts"))),
        customer=pl.lit("c-") + pl.col("customer").cast(pl.String).str.zfill(6),
    )


def _late_ranks(
    rng: np.random.Generator, order_idx: np.ndarray, ts: np.ndarray, rate: float
) -> np.ndarray | None:
    """New append ranks that move a ``rate`` fraction of rows after a later event.

    ``order_idx``/``ts`` are sorted by time. A chosen row keeps its timestamp but is
    appended after the next event of its order and after the rows up to its own
    time plus a lognormal lateness (median 30 minutes). Returns None if none moves.
    """
    m = ts.size
    if rate <= 0.0 or m == 0:
        return None
    # Position of the next row of the same order (in time order), -1 if none.
    by_order = np.lexsort((np.arange(m), order_idx))
    same_next = np.zeros(m, dtype=bool)
    same_next[:-1] = order_idx[by_order[:-1]] == order_idx[by_order[1:]]
    next_pos = np.full(m, -1, dtype=np.int64)
    next_pos[by_order[:-1][same_next[:-1]]] = by_order[1:][same_next[:-1]]
    # Only rows whose next event is strictly later can arrive "late".
    eligible = np.flatnonzero((next_pos >= 0) & (ts[np.maximum(next_pos, 0)] > ts))
    picked = np.zeros(m, dtype=bool)
    picked[eligible[rng.random(eligible.size) < rate]] = True
    # A row moves after its next event, so that event must stay where it is.
    picked[eligible] &= ~picked[next_pos[eligible]]
    chosen = np.flatnonzero(picked)
    if chosen.size == 0:
        return None
    lateness = _lognormal_us(rng, chosen.size, 30.0, 1.0)
    arrive_pos = np.searchsorted(ts, ts[chosen] + lateness, side="right")
    rank = np.arange(m, dtype=np.float64)
    rank[chosen] = np.maximum(arrive_pos - 1, next_pos[chosen]) + 0.5
    return rank


def _disorder(
    rng: np.random.Generator, ts: np.ndarray, fraction: float, delay_us: int
) -> np.ndarray:
    """A permutation of the rows that holds back a ``fraction`` of them by up to ``delay_us``.

    A row arrives when the log first reaches its time, the running maximum of
    ``ts`` in row order (its own time, unless it is already late). A picked row
    arrives a uniform ``1 <= d <= delay_us`` microseconds later instead and goes
    behind every row that arrived by then; the other rows keep their order.
    """
    m = ts.size
    arrival = np.maximum.accumulate(ts)
    picked = np.flatnonzero(rng.random(m) < fraction)
    hold = rng.integers(1, delay_us + 1, size=picked.size, dtype=np.int64)
    rank = np.arange(m, dtype=np.float64)
    # Behind the last row that arrived by arrival + hold (never ahead of itself).
    to = np.searchsorted(arrival, arrival[picked] + hold, side="right") - 1
    rank[picked] = np.maximum(to, picked) + 0.5
    return np.argsort(rank, kind="stable")
