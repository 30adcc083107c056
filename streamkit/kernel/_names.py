"""Codes of a few known names (a machine's events) in a String column.

A machine has a handful of event names, a batch millions of rows. When every
name is at most 12 bytes long, Arrow's string view of a row holds the whole
string (length, then the bytes, inline): a row then matches a name exactly when
its 16 view bytes equal the name's, bytes past the length masked off. One
compiled pass compares view words in a small open-addressing table, with no
hashing of string bytes and no data-buffer reads; rows longer than 12 bytes
cannot be any of the names. Names longer than that use the key index's byte
map instead.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["NameCodes"]

_INLINE = 12  # bytes an Arrow string view holds inline
_MUL = np.uint64(0x9E3779B97F4A7C15)


def _masks() -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Per length 0..12, the bits of the two view words that belong to the string:
    word 0 is the length (low half) and bytes 0-3, word 1 bytes 4-11 (little endian)."""
    lo = np.zeros(_INLINE + 1, dtype=np.uint64)
    hi = np.zeros(_INLINE + 1, dtype=np.uint64)
    for n in range(_INLINE + 1):
        first, rest = min(n, 4), max(n - 4, 0)
        lo[n] = (1 << 32) - 1 | ((1 << (8 * first)) - 1) << 32
        hi[n] = (1 << (8 * rest)) - 1
    lo.setflags(write=False)
    hi.setflags(write=False)
    return lo, hi


_MASK_LO, _MASK_HI = _masks()


@numba.njit(cache=True, nogil=True)
def _view_codes(
    words: Any,
    mask_lo: Any,
    mask_hi: Any,
    t_lo: Any,
    t_hi: Any,
    t_code: Any,
    shift: Any,
    out: Any,
) -> None:  # pragma: no cover - compiled; tested against dict lookups
    """``out[i]``: the code of the name whose masked view words equal row ``i``'s, or -1."""
    mask = np.uint64(t_code.shape[0] - 1)
    limit = np.uint64(_INLINE)
    for i in range(out.shape[0]):
        lo = words[2 * i]
        hi = words[2 * i + 1]
        length = lo & np.uint64(0xFFFFFFFF)
        code = -1
        if length <= limit:
            lo &= mask_lo[length]
            hi &= mask_hi[length]
            h = ((lo ^ (hi * _MUL)) * _MUL) >> shift
            while True:
                c = t_code[h]
                if c < 0:
                    break
                if t_lo[h] == lo and t_hi[h] == hi:
                    code = c
                    break
                h = (h + np.uint64(1)) & mask
        out[i] = code


def _name_words(name: str) -> tuple[int, int]:
    data = name.encode()
    lo = len(data) | int.from_bytes(data[:4], "little") << 32
    hi = int.from_bytes(data[4:12], "little")
    return lo, hi


class NameCodes:
    """Code (position) of each of a few names in String columns; unknown names get -1.

    Not part of the public API: :meth:`CompiledMachine.encode_events` uses it.
    Safe to share between threads (a lookup keeps no scratch state).

    Examples
    --------
    >>> import polars as pl
    >>> NameCodes(["pay", "ship"]).lookup(pl.Series(["ship", "x", None, "pay"])).tolist()
    [1, -1, -1, 0]
    >>> NameCodes(["a-very-long-event-name"]).lookup(pl.Series(["a-very-long-event-name"])).tolist()
    [0]
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._inline = all(len(n.encode()) <= _INLINE for n in self.names)
        self._index: Any = None
        self._lock = threading.Lock()
        size = 16
        while size < 4 * max(len(self.names), 1):
            size *= 2
        self._lo = np.zeros(size, dtype=np.uint64)
        self._hi = np.zeros(size, dtype=np.uint64)
        self._code = np.full(size, -1, dtype=np.int32)
        self._shift = 64 - (size.bit_length() - 1)  # the hash's top bits index the table
        if self._inline:
            shift, mul = self._shift, int(_MUL)
            for code, name in enumerate(self.names):
                lo, hi = _name_words(name)
                h = (((lo ^ (hi * mul)) & (2**64 - 1)) * mul & (2**64 - 1)) >> shift
                while self._code[h] >= 0:
                    h = (h + 1) % size
                self._lo[h], self._hi[h], self._code[h] = lo, hi, code
        for a in (self._lo, self._hi, self._code):
            a.setflags(write=False)

    def lookup(self, values: pl.Series) -> npt.NDArray[np.int32]:
        """Codes of ``values`` (a String series); nulls and unknown names get -1."""
        nulls = values.null_count()
        out = self._codes(values.fill_null("") if nulls and not self._inline else values)
        if nulls:
            out[values.is_null().to_numpy()] = -1
        return out

    def _codes(self, values: pl.Series) -> npt.NDArray[np.int32]:
        if not self._inline:
            return self._map_lookup(values)
        out = np.empty(len(values), dtype=np.int32)
        start = 0
        for chunk in values.get_chunks():
            arr = chunk.to_arrow(compat_level=pl.CompatLevel.newest())
            views = arr.buffers()[1]
            n = len(arr)
            if n:
                assert views is not None
                words = np.frombuffer(views, dtype=np.uint64)[2 * arr.offset : 2 * (arr.offset + n)]
                words.setflags(write=False)
                _view_codes(
                    words, _MASK_LO, _MASK_HI, self._lo, self._hi, self._code,
                    np.uint64(self._shift), out[start : start + n],
                )  # fmt: skip
            start += n
        return out

    def _map_lookup(self, values: pl.Series) -> npt.NDArray[np.int32]:
        # Long names: the key index's exact byte map (its lookups share scratch
        # buffers, hence the lock).
        from streamkit.kernel._keys import KeyIndex

        with self._lock:
            if self._index is None:
                self._index = KeyIndex.from_series(pl.Series(self.names, dtype=pl.String))
            codes: npt.NDArray[np.int64] = self._index.lookup(values)
        return codes.astype(np.int32)
