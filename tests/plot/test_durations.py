"""Durations on plots are written for humans: µs, ms, s, min, h, d."""

from __future__ import annotations

from datetime import timedelta

import pytest

from streamkit.plot._common import format_duration, human_seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0 s"),
        (1.2e-05, "12 µs"),
        (3e-07, "0.3 µs"),
        (0.000999, "999 µs"),
        (0.0021, "2.1 ms"),
        (0.9996, "1 s"),
        (1.02, "1.02 s"),
        (59.0, "59 s"),
        (90.0, "1.5 min"),
        (1800.0, "30 min"),
        (5400.0, "1.5 h"),
        (36 * 3600.0, "1.5 d"),
        (1500 * 86400.0, "1,500 d"),
        (-90.0, "-1.5 min"),
    ],
)
def test_human_seconds(seconds: float, text: str) -> None:
    assert human_seconds(seconds) == text


def test_format_duration_of_timedeltas_and_spans() -> None:
    assert format_duration(timedelta(microseconds=12)) == "12 µs"
    assert format_duration(timedelta(hours=2)) == "2 h"
    assert format_duration(5) == "5"  # integer time units stay as they are
    assert format_duration(1.23456) == "1.23"
