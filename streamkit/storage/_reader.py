"""Lazy scans over a sequence of row-range pieces (log segments or plain files).

A scan is a Polars IO-source plugin: projection, predicates and ``head`` are
pushed into the reader, pieces outside ``[start, end)`` are never read, and pieces
are fetched by a small thread pool in offset order.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl
from polars.io.plugins import register_io_source

__all__ = ["Piece", "scan_pieces"]

Loader = Callable[[list[str]], pl.DataFrame]


@dataclass(frozen=True, slots=True)
class Piece:
    """``rows`` consecutive rows starting at global ``offset``, produced by ``load``.

    ``load(columns)`` returns all rows of the piece with exactly those columns.
    """

    offset: int
    rows: int
    load: Loader

    @property
    def end(self) -> int:
        """Offset just past the last row."""
        return self.offset + self.rows


def _workers(count: int) -> int:
    return max(1, min(count, 8, (os.cpu_count() or 2) * 2))


def scan_pieces(
    pieces: Sequence[Piece],
    schema: pl.Schema,
    *,
    start: int,
    end: int,
    with_offset: str | None,
    label: str,
) -> pl.LazyFrame:
    """A LazyFrame over the rows with offsets in ``[start, end)`` of ``pieces``.

    ``pieces`` must be in offset order and must not overlap. ``with_offset`` adds
    an Int64 column of global offsets under that name.
    """
    chosen = [p for p in pieces if p.end > start and p.offset < end and p.rows > 0]
    full: dict[str, pl.DataType] = dict(schema)
    if with_offset is not None:
        if with_offset in full:
            raise ValueError(
                f"with_offset={with_offset!r} collides with a column of the log; "
                "choose another name"
            )
        full[with_offset] = pl.Int64()
    names = list(schema.names())
    out_schema = pl.Schema(full)

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        wanted = list(out_schema.names()) if with_columns is None else list(with_columns)
        needed = set(wanted)
        if predicate is not None:
            needed |= set(predicate.meta.root_names())
        read_cols = [c for c in names if c in needed]
        add_offset = with_offset is not None and with_offset in needed
        # Zero-column reads lose the row count: read one column and drop it later.
        probe = not read_cols and bool(names)
        if probe:
            read_cols = [names[0]]
        remaining = n_rows

        def load(piece: Piece) -> pl.DataFrame:
            lo = max(start - piece.offset, 0)
            hi = min(end - piece.offset, piece.rows)
            frame = piece.load(read_cols)
            if lo > 0 or hi < piece.rows:
                frame = frame.slice(lo, hi - lo)
            if add_offset:
                assert with_offset is not None
                frame = frame.with_columns(
                    pl.int_range(piece.offset + lo, piece.offset + hi, dtype=pl.Int64).alias(
                        with_offset
                    )
                )
            return frame

        if not chosen or remaining == 0:
            return
        executor = ThreadPoolExecutor(max_workers=_workers(len(chosen)))
        pending: deque[Future[pl.DataFrame]] = deque()
        todo = iter(chosen)
        window = _workers(len(chosen)) * 2
        try:
            for piece in todo:
                pending.append(executor.submit(load, piece))
                if len(pending) >= window:
                    break
            while pending:
                frame = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(executor.submit(load, nxt))
                if predicate is not None:
                    frame = frame.filter(predicate)
                frame = frame.select(wanted)
                if remaining is not None:
                    if frame.height >= remaining:
                        yield frame.head(remaining)
                        return
                    remaining -= frame.height
                yield frame
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    return register_io_source(source, schema=out_schema, explain_name=label)


def empty_frame(schema: pl.Schema) -> pl.DataFrame:
    """An empty frame with ``schema``."""
    return pl.DataFrame(schema=schema)
