"""Stable key hashing for partition routing.

The partition of a row must never change between library versions, processes or
machines, so polars' ``hash()`` (seeded, version dependent) is not used. Instead:

* integer keys: splitmix64 of the value's two's-complement 64-bit pattern;
* string keys: 64-bit FNV-1a over the UTF-8 bytes;
* any other key dtype: cast to string first, then FNV-1a.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

__all__ = ["key_hash", "partition_of"]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _splitmix64(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _fnv1a(
    offsets: npt.NDArray[np.int64], data: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint64]:  # pragma: no cover - compiled
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for i in range(n):
        h = np.uint64(0xCBF29CE484222325)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * prime
        out[i] = h
    return out


def key_hash(keys: pl.Series) -> npt.NDArray[np.uint64]:
    """Stable 64-bit hash of every value of ``keys`` (nulls are not allowed).

    Parameters
    ----------
    keys : pl.Series
        Key column without nulls.

    Returns
    -------
    numpy.ndarray
        ``uint64`` hashes, one per row.

    Examples
    --------
    >>> int(key_hash(pl.Series(["a"]))[0]) == 0xAF63DC4C8601EC8C  # FNV-1a("a")
    True
    >>> key_hash(pl.Series([1, 2])).dtype
    dtype('uint64')
    """
    dtype = keys.dtype
    if dtype.is_integer():
        if dtype == pl.UInt64:
            raw = keys.to_numpy().astype(np.uint64, copy=False)
        else:
            raw = keys.cast(pl.Int64).to_numpy().view(np.uint64)
        with np.errstate(over="ignore"):
            return _splitmix64(raw)
    if dtype not in (pl.String, pl.Binary):
        keys = keys.cast(pl.String)
    arrow = keys.to_arrow()
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    target = pa.large_binary()
    arrow = arrow.cast(target)
    _validity, offsets_buf, data_buf = arrow.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[
        arrow.offset : arrow.offset + len(arrow) + 1
    ]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8)
        if data_buf is not None
        else np.zeros(0, dtype=np.uint8)
    )
    result: npt.NDArray[np.uint64] = _fnv1a(np.ascontiguousarray(offsets), data)
    return result


def partition_of(keys: pl.Series, partitions: int) -> npt.NDArray[np.int64]:
    """Partition number in ``[0, partitions)`` of every key.

    Examples
    --------
    >>> partition_of(pl.Series(["a", "b", "a"]), 4).tolist()[0] == partition_of(
    ...     pl.Series(["a"]), 4
    ... ).tolist()[0]
    True
    """
    if partitions <= 1:
        return np.zeros(len(keys), dtype=np.int64)
    hashed = key_hash(keys)
    return (hashed % np.uint64(partitions)).astype(np.int64)
