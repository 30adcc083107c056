"""Arrow IPC files decoded within a memory bound (the counterpart of
:func:`~streamkit.storage._reader.read_parquet_checked` for ``.arrow`` files).

An IPC file with LZ4 or ZSTD body compression can be a decompression bomb: a
few KiB that inflate to gigabytes. Every compressed buffer starts with its
uncompressed length (an int64), and the file's footer and message headers (flat
buffers) say where the buffers are, so the decoded size is known from a walk of
the metadata, before anything is inflated.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from streamkit.errors import CorruptFileError
from streamkit.storage._reader import check_decode_bound

__all__ = ["ipc_decoded_size", "read_ipc_checked"]

_MAGIC = b"ARROW1"
#: Message header types (``MessageHeader`` union of Arrow's Message.fbs).
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3
#: Bytes Polars allocates per value of a string or binary column beyond its
#: Arrow buffers (it converts them to 16-byte views).
_VIEW = 16


class _Table:
    """A flatbuffer table inside ``buf`` at ``pos``, every read bounds-checked."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - _read(buf, pos, "<i")
        self.vsize = _read(buf, self.vtable, "<H")

    def _slot(self, index: int) -> int:
        at = 4 + 2 * index
        return _read(self.buf, self.vtable + at, "<H") if at + 2 <= self.vsize else 0

    def scalar(self, index: int, fmt: str, default: int) -> int:
        slot = self._slot(index)
        return _read(self.buf, self.pos + slot, fmt) if slot else default

    def table(self, index: int) -> _Table | None:
        slot = self._slot(index)
        if not slot:
            return None
        at = self.pos + slot
        return _Table(self.buf, at + _read(self.buf, at, "<I"))

    def structs(self, index: int, size: int) -> Iterator[int]:
        """Positions of the fixed-``size`` structs of a vector field."""
        slot = self._slot(index)
        if not slot:
            return
        at = self.pos + slot
        start = at + _read(self.buf, at, "<I")
        count = _read(self.buf, start, "<I")
        if start + 4 + count * size > len(self.buf):
            raise ValueError("a vector runs past the end of the file")
        for i in range(count):
            yield start + 4 + i * size


def _read(buf: bytes, pos: int, fmt: str) -> int:
    if pos < 0 or pos + struct.calcsize(fmt) > len(buf):
        raise ValueError("metadata points outside the file")
    value: int = struct.unpack_from(fmt, buf, pos)[0]
    return value


def _view_fields(schema: pa.Schema) -> list[bool]:
    """Per field node in Arrow's depth-first order: whether Polars gives it views."""
    out: list[bool] = []

    def walk(t: pa.DataType) -> None:
        out.append(
            pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or pa.types.is_dictionary(t)
        )
        if not pa.types.is_dictionary(t):
            for i in range(t.num_fields):
                walk(t.field(i).type)

    for f in schema:
        walk(f.type)
    return out


def ipc_decoded_size(data: bytes) -> tuple[int, int]:
    """Bytes that decoding the Arrow IPC file ``data`` would allocate, and its rows.

    The sum over every record and dictionary batch of its buffers' uncompressed
    lengths (from the 8-byte prefix of each compressed buffer), plus 16 bytes per
    value of string, binary and dictionary columns (Polars' views). Nothing is
    decompressed.

    Raises
    ------
    ValueError
        If ``data`` is not an Arrow IPC file or its metadata is malformed.

    Examples
    --------
    >>> import io
    >>> buf = io.BytesIO()
    >>> pl.DataFrame({"a": range(1000)}).write_ipc(buf, compression="zstd")
    >>> size, rows = ipc_decoded_size(buf.getvalue())
    >>> rows, 8_000 <= size < 40_000
    (1000, True)
    """
    n = len(data)
    if n < 18 or data[:6] != _MAGIC or data[-6:] != _MAGIC:
        raise ValueError("not an Arrow IPC file (no ARROW1 magic at both ends)")
    try:
        schema = pa_ipc.open_file(pa.BufferReader(data)).schema
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"unreadable IPC footer: {exc}") from None
    views = _view_fields(schema)
    footer_len = _read(data, n - 10, "<i")
    footer_at = n - 10 - footer_len
    if footer_len <= 0 or footer_at < 8:
        raise ValueError("the footer length points outside the file")
    footer = _Table(data, footer_at + _read(data, footer_at, "<I"))
    total = rows = 0
    # Footer: 2 = dictionaries, 3 = record batches, vectors of Block structs
    # {offset: long, metaDataLength: int, pad, bodyLength: long}
    for field in (2, 3):
        for block in footer.structs(field, 24):
            offset = _read(data, block, "<q")
            meta_len = _read(data, block + 8, "<i")
            body_len = _read(data, block + 16, "<q")
            size, count = _batch_size(data, offset, meta_len, body_len, views, field == 3)
            total += size
            rows += count
    return total, rows


def _batch_size(
    data: bytes, offset: int, meta_len: int, body_len: int, views: list[bool], record: bool
) -> tuple[int, int]:
    """(decoded bytes, rows) of the message at ``offset`` (rows only for record batches)."""
    body = offset + meta_len
    if offset < 8 or meta_len < 8 or body_len < 0 or body + body_len > len(data):
        raise ValueError("a batch lies outside the file")
    at = offset + 8 if _read(data, offset, "<i") == -1 else offset + 4
    message = _Table(data, at + _read(data, at, "<I"))
    kind = message.scalar(1, "<B", 0)
    header = message.table(2)
    if header is None or kind not in (_DICTIONARY_BATCH, _RECORD_BATCH):
        raise ValueError(f"a batch block holds a message of type {kind}, not a batch")
    batch = header if kind == _RECORD_BATCH else header.table(1)
    if batch is None:
        return 0, 0
    compressed = batch.table(3) is not None
    total = 0
    for buffer in batch.structs(2, 16):
        start, length = _read(data, buffer, "<q"), _read(data, buffer + 8, "<q")
        if start < 0 or length < 0 or start + length > body_len:
            raise ValueError("a buffer lies outside its batch")
        if not compressed or length == 0:
            total += length
            continue
        if length < 8:
            raise ValueError(f"a compressed buffer of {length} bytes has no length prefix")
        raw = _read(data, body + start, "<q")
        if raw < -1:
            raise ValueError(f"a compressed buffer declares {raw} bytes")
        total += length - 8 if raw == -1 else raw
    for i, node in enumerate(batch.structs(1, 16)):
        values = _read(data, node, "<q")
        if values < 0:
            raise ValueError(f"a field declares {values} values")
        # dictionary values: unknown type here, counted as views
        if not record or i >= len(views) or views[i]:
            total += _VIEW * values
    rows = batch.scalar(0, "<q", 0) if record else 0
    if rows < 0:
        raise ValueError(f"a batch declares {rows} rows")
    return total, rows


def read_ipc_checked(data: bytes, *, where: str, remedy: str) -> pl.DataFrame:
    """Decode an Arrow IPC file whose decoded size is bounded, else refuse it.

    The bound is that of Parquet files: ``max(DECODE_FLOOR, DECODE_RATIO *
    len(data))`` bytes (256 MiB, or 100 times the stored size).

    Parameters
    ----------
    data : bytes
        The whole file.
    where : str
        The file, for error messages.
    remedy : str
        What to do about a refused file, ending every message.

    Raises
    ------
    CorruptFileError
        Naming ``where``: not an IPC file, or over the bound.

    Examples
    --------
    >>> import io
    >>> buf = io.BytesIO()
    >>> pl.DataFrame({"a": [1, 2]}).write_ipc(buf, compression="lz4")
    >>> read_ipc_checked(buf.getvalue(), where="a.arrow", remedy="replace it")["a"].to_list()
    [1, 2]
    >>> read_ipc_checked(b"ARROW1 nonsense", where="b.arrow", remedy="replace it")
    Traceback (most recent call last):
    ...
    streamkit.errors.CorruptFileError: corrupt file b.arrow: not a readable Arrow IPC file ...
    """
    try:
        size, _rows = ipc_decoded_size(data)
    except ValueError as exc:
        raise CorruptFileError(
            f"corrupt file {where}: not a readable Arrow IPC file ({exc}); {remedy}"
        ) from None
    check_decode_bound(where, len(data), size, f"split into smaller files; {remedy}")
    try:
        return pl.read_ipc(data)
    # Polars panics on some malformed files (a Rust panic, not an Exception)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError) as exc:
        raise CorruptFileError(
            f"corrupt file {where}: Arrow IPC decoding failed ({type(exc).__name__}: {exc}); "
            f"{remedy}"
        ) from None
