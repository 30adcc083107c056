"""Lazy scans over a sequence of row-range pieces (log segments or plain files).

A scan is a Polars IO-source plugin: projection, predicates and ``head`` are
pushed into the reader, pieces outside ``[start, end)`` are never read, and pieces
are fetched by a small thread pool in offset order.

Parquet files are decoded by :func:`read_parquet_checked`, which bounds the
memory a file may decode to before any page is decompressed (see
:data:`DECODE_FLOOR` and :data:`DECODE_RATIO`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source

from streamkit.errors import CorruptFileError

__all__ = [
    "DECODE_FLOOR",
    "DECODE_RATIO",
    "Piece",
    "check_decode_bound",
    "decoded_size",
    "read_parquet_checked",
    "scan_pieces",
]

#: Every Parquet file may decode to this many bytes, whatever its size (256 MiB).
DECODE_FLOOR = 256 * 2**20
#: Beyond the floor, a file may decode to at most this many times its stored size.
#: Real event data compresses 3-20x with zstd; a decompression bomb, 1,000-30,000x.
DECODE_RATIO = 100

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


# ------------------------------------------------------------ bounded Parquet
# Arrow widths of one decoded value by Parquet physical type; byte arrays
# decode to 16-byte views plus their bytes (counted in the page sizes).
_WIDTH = {
    "BOOLEAN": 1,
    "INT32": 4,
    "INT64": 8,
    "INT96": 12,
    "FLOAT": 4,
    "DOUBLE": 8,
    "BYTE_ARRAY": 16,
    "FIXED_LEN_BYTE_ARRAY": 16,
}


class _Thrift:
    """Just enough of Thrift's compact protocol to read Parquet page headers."""

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise ValueError("page header runs past its column chunk")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ValueError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > 32:
            raise ValueError("page header nested too deeply")
        if kind in (1, 2):  # booleans live in the field header
            return
        if kind == 3:
            self.byte()
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:
            self.take(8)
        elif kind == 8:
            self.take(self.varint())
        elif kind in (9, 10):
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            for _ in range(size):
                self.skip(head & 0x0F, depth + 1)
        elif kind == 11:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4, depth + 1)
                    self.skip(types & 0x0F, depth + 1)
        elif kind == 12:
            self.fields(lambda _fid, k: self.skip(k, depth + 1))
        else:
            raise ValueError(f"unknown thrift type {kind}")

    def take(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise ValueError("page header runs past its column chunk")
        self.pos += n

    def fields(self, on_field: Callable[[int, int], None]) -> None:
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return
            delta, kind = head >> 4, head & 0x0F
            fid = last + delta if delta else self.zigzag()
            on_field(fid, kind)
            last = fid


def _page_header(reader: _Thrift) -> tuple[int, int, int]:
    """``(uncompressed size, compressed size, values)`` of the page header at ``reader``."""
    found = {"uncompressed": -1, "compressed": -1, "values": 0}

    def sub(fid: int, kind: int) -> None:
        if fid == 1 and kind == 5:
            found["values"] = reader.zigzag()
        else:
            reader.skip(kind)

    def top(fid: int, kind: int) -> None:
        if fid == 2 and kind == 5:
            found["uncompressed"] = reader.zigzag()
        elif fid == 3 and kind == 5:
            found["compressed"] = reader.zigzag()
        elif fid in (5, 7, 8) and kind == 12:  # data, dictionary, data v2 page headers
            reader.fields(sub)
        else:
            reader.skip(kind)

    reader.fields(top)
    if found["uncompressed"] < 0 or found["compressed"] < 0 or found["values"] < 0:
        raise ValueError("page header without sizes")
    return found["uncompressed"], found["compressed"], found["values"]


def decoded_size(data: bytes, columns: Sequence[str] | None = None) -> tuple[int, int]:
    """Bytes that decoding ``columns`` of the Parquet file ``data`` would allocate.

    Walks every page header of the column chunks read (the footer alone could
    understate them): decompressed page bytes plus each value's Arrow width.

    Returns
    -------
    tuple of int
        ``(estimated bytes, rows)`` where rows is what the footer declares.

    Raises
    ------
    ValueError
        If the footer or a page header is malformed.

    Examples
    --------
    >>> import io
    >>> buf = io.BytesIO()
    >>> pl.DataFrame({"a": range(1000)}).write_parquet(buf)
    >>> size, rows = decoded_size(buf.getvalue())
    >>> rows, 8_000 <= size < 40_000
    (1000, True)
    """
    try:
        meta = pq.read_metadata(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"unreadable Parquet footer: {exc}") from None
    wanted = None if columns is None else set(columns)
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if wanted is not None and chunk.path_in_schema.split(".")[0] not in wanted:
                continue
            width = _WIDTH.get(chunk.physical_type, 16)
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                start = min(start, chunk.dictionary_page_offset)
            end = start + chunk.total_compressed_size
            if start < 4 or end > len(data) or chunk.total_compressed_size <= 0:
                raise ValueError(f"column chunk {chunk.path_in_schema!r} lies outside the file")
            reader = _Thrift(data, start, end)
            while reader.pos < end:
                raw, packed, values = _page_header(reader)
                reader.take(packed)
                total += raw + values * width
    return total, int(meta.num_rows)


def check_decode_bound(where: str, stored: int, decoded: int, advice: str) -> None:
    """Refuse a file of ``stored`` bytes that would decode to ``decoded`` bytes
    beyond ``max(DECODE_FLOOR, DECODE_RATIO * stored)``.

    ``advice`` completes "data so repetitive that it should be ...".

    Examples
    --------
    >>> check_decode_bound("a.parquet", 1_000, 2_000, "appended in smaller batches")
    >>> check_decode_bound("a.parquet", 1_000, 2**30, "appended in smaller batches")
    Traceback (most recent call last):
    ...
    streamkit.errors.CorruptFileError: refused to decode a.parquet: ...
    """
    limit = max(DECODE_FLOOR, DECODE_RATIO * stored)
    if decoded > limit:
        raise CorruptFileError(
            f"refused to decode {where}: its {stored:,} bytes would decode to about "
            f"{decoded:,} bytes, over the bound of {limit:,} (the larger of "
            f"{DECODE_FLOOR // 2**20} MiB and {DECODE_RATIO}x the stored size): a "
            f"decompression bomb, or data so repetitive that it should be {advice}"
        )


def read_parquet_checked(
    data: bytes,
    columns: Sequence[str] | None,
    *,
    where: str,
    rows: int | None = None,
    remedy: str | None = None,
) -> pl.DataFrame:
    """Decode a Parquet file whose decoded size is bounded, else refuse it.

    A file may decode to at most ``max(DECODE_FLOOR, DECODE_RATIO * len(data))``
    bytes (256 MiB, or 100 times its stored size): a decompression bomb (a small
    file that inflates to gigabytes) is refused before any page is inflated.

    Parameters
    ----------
    data : bytes
        The whole file.
    columns : sequence of str, optional
        Columns to decode (default all); only those count toward the bound.
    where : str
        The file, for error messages.
    rows : int, optional
        Rows its commit recorded; a file declaring another count is refused.
    remedy : str, optional
        What the reader should do about a refused file, ending every message
        (default: restore it from a backup or drop it with truncate/retract,
        right for a log's segments; a FileLog says to remove or replace it).

    Raises
    ------
    CorruptFileError
        Naming ``where``: not Parquet, the wrong row count, or over the bound.

    Examples
    --------
    >>> import io
    >>> buf = io.BytesIO()
    >>> pl.DataFrame({"a": [1, 2]}).write_parquet(buf)
    >>> read_parquet_checked(buf.getvalue(), ["a"], where="a.parquet", rows=2)["a"].to_list()
    [1, 2]
    >>> read_parquet_checked(b"PAR1 nonsense", None, where="b.parquet")
    Traceback (most recent call last):
    ...
    streamkit.errors.CorruptFileError: corrupt file b.parquet: not a readable Parquet file ...
    """
    fix = remedy or "restore it from a backup or drop it with truncate/retract"
    try:
        size, declared = decoded_size(data, columns)
    except ValueError as exc:
        raise CorruptFileError(
            f"corrupt file {where}: not a readable Parquet file ({exc}); {fix}"
        ) from None
    if rows is not None and declared != rows:
        raise CorruptFileError(
            f"corrupt file {where}: expected {rows} rows (recorded at commit), the file "
            f"declares {declared}; {fix}"
        )
    check_decode_bound(
        where,
        len(data),
        size,
        f"split into smaller files; {remedy}" if remedy else "appended in smaller batches",
    )
    try:
        return pl.read_parquet(data, columns=None if columns is None else list(columns))
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError) as exc:
        # Polars panics (PanicException is no Exception) on some damaged files
        raise CorruptFileError(
            f"corrupt file {where}: Parquet decoding failed ({type(exc).__name__}: {exc}); {fix}"
        ) from None
