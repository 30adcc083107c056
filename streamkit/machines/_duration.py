"""Durations written as text: ``"30m"``, ``"2h"``, ``"1h30m"``, ``"500ms"``, ``"1.5d"``.

The grammar is one or more ``<number><unit>`` parts with no separators, units
``d``, ``h``, ``m``, ``s``, ``ms``, ``us`` (each at most once, largest first);
the result is a :class:`datetime.timedelta` with microsecond resolution.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration", "to_timedelta"]

_UNIT_US: dict[str, int] = {
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
    "us": 1,
}
_ORDER = ("d", "h", "m", "s", "ms", "us")
# ``ms`` and ``us`` must be tried before ``m`` and ``s``.
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|d|h|m|s)")
_HINT = 'write it like "30m", "2h", "120s", "1d", "500ms" or "1h30m"'


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``"1h30m"`` into a positive ``timedelta``.

    Parameters
    ----------
    text
        One or more ``<number><unit>`` parts, units ``d h m s ms us`` in that
        order, each used at most once. Surrounding whitespace is ignored.

    Returns
    -------
    datetime.timedelta

    Raises
    ------
    ValueError
        If the text does not follow the grammar or the duration is not positive
        (the message says what was found and how to write it).

    Examples
    --------
    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    >>> parse_duration("500ms")
    datetime.timedelta(microseconds=500000)
    """
    stripped = text.strip()
    pos = 0
    total_us = 0.0
    last_rank = -1
    if not stripped:
        raise ValueError(f"expected a duration, found an empty string; {_HINT}")
    while pos < len(stripped):
        match = _PART.match(stripped, pos)
        if match is None:
            raise ValueError(f"expected a duration, found {text!r}; {_HINT}")
        number, unit = match.group(1), match.group(2)
        rank = _ORDER.index(unit)
        if rank <= last_rank:
            raise ValueError(
                f"expected a duration with units in the order d, h, m, s, ms, us, each once, "
                f"found {text!r}; {_HINT}"
            )
        last_rank = rank
        total_us += float(number) * _UNIT_US[unit]
        pos = match.end()
    micros = round(total_us)
    if micros <= 0:
        raise ValueError(f"expected a positive duration, found {text!r}")
    return timedelta(microseconds=micros)


def format_duration(value: timedelta) -> str:
    """Write a positive ``timedelta`` in the canonical form ``parse_duration`` reads.

    The largest units come first and zero parts are left out, so equal durations
    always get the same text.

    Examples
    --------
    >>> from datetime import timedelta
    >>> format_duration(timedelta(minutes=90))
    '1h30m'
    >>> format_duration(timedelta(seconds=1, milliseconds=5))
    '1s5ms'
    """
    micros = value // timedelta(microseconds=1)
    if micros <= 0:
        raise ValueError(f"expected a positive duration, found {value!r}")
    parts: list[str] = []
    for unit in _ORDER:
        count, micros = divmod(micros, _UNIT_US[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def to_timedelta(value: object) -> timedelta:
    """Turn a duration string or a ``timedelta`` into a positive ``timedelta``.

    Raises ``ValueError`` for anything else or a non-positive duration.

    Examples
    --------
    >>> to_timedelta("2h") == to_timedelta(timedelta(hours=2))
    True
    """
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValueError(f"expected a positive duration, found {value!r}")
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(
        f"expected a duration string or a datetime.timedelta, found "
        f"{type(value).__name__} {value!r}; {_HINT}"
    )
