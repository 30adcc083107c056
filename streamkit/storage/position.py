"""Read positions, append results and writer transactions of a log."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AppendResult", "Position", "Transaction"]


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """A read position on a log: the offset of the next event to read.

    Positions are ordered and hashable; ``log.scan(start=pos)`` returns the events
    with ``offset >= pos.offset`` and ``log.end()`` is the position just past the
    last committed event.

    Parameters
    ----------
    offset : int
        Global offset of the next event (``>= 0``).

    Examples
    --------
    >>> p = Position(42)
    >>> Position.from_json(p.to_json()) == p
    True
    >>> Position(1) < Position(2)
    True
    >>> p.to_dict()
    {'offset': 42}
    """

    offset: int

    def __post_init__(self) -> None:
        if isinstance(self.offset, bool) or not isinstance(self.offset, int):
            raise TypeError(
                f"Position offset must be an int, found {type(self.offset).__name__} "
                f"{self.offset!r}"
            )
        if self.offset < 0:
            raise ValueError(f"Position offset must be >= 0, found {self.offset}")

    def to_dict(self) -> dict[str, int]:
        """The position as a JSON-able dict.

        Examples
        --------
        >>> Position(3).to_dict()
        {'offset': 3}
        """
        return {"offset": self.offset}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Position:
        """Rebuild a position from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``data`` has no integer ``offset``.

        Examples
        --------
        >>> Position.from_dict({"offset": 3})
        Position(offset=3)
        """
        if not isinstance(data, dict) or "offset" not in data:
            raise ValueError(f"expected a dict like {{'offset': 3}}, found {data!r}")
        return cls(data["offset"])

    def to_json(self) -> str:
        """The position as a JSON string.

        Examples
        --------
        >>> Position(7).to_json()
        '{"offset": 7}'
        """
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Position:
        """Rebuild a position from :meth:`to_json` output.

        Examples
        --------
        >>> Position.from_json('{"offset": 7}')
        Position(offset=7)
        """
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f'expected JSON like {{"offset": 7}}, found {text!r}') from exc
        return cls.from_dict(data)


@dataclass(frozen=True, slots=True)
class Transaction:
    """The last append a writer committed to a log (see ``Log.transaction``).

    Attributes
    ----------
    writer : str
        The writer id given to ``Log.append``.
    seq : int
        The writer's sequence number of that append.
    meta : dict
        The JSON-able ``meta`` given with it.
    version : int
        The log version that committed it.

    Examples
    --------
    >>> Transaction("w", 3, {"batch": [0, 10]}, 5).seq
    3
    """

    writer: str
    seq: int
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = 0


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What ``Log.append`` committed.

    Attributes
    ----------
    version : int
        The log version that made the rows visible (for a duplicate: the version
        that committed the original append).
    rows : int
        Rows committed (0 for a duplicate).
    start, end : Position
        Offsets of the committed rows: ``[start.offset, end.offset)``.
    duplicate : bool
        True if the ``(writer, seq)`` was committed before and nothing was written.
    segments : int
        Segment files committed.

    Examples
    --------
    >>> AppendResult(3, 10, Position(0), Position(10), False, 1)
    AppendResult(version=3, rows=10, offsets=[0, 10), segments=1)
    """

    version: int
    rows: int
    start: Position
    end: Position
    duplicate: bool = False
    segments: int = 0

    def __repr__(self) -> str:
        dup = ", duplicate" if self.duplicate else ""
        return (
            f"AppendResult(version={self.version}, rows={self.rows}, "
            f"offsets=[{self.start.offset}, {self.end.offset}), "
            f"segments={self.segments}{dup})"
        )
