"""A compiled, exact hash map from byte strings to dense ids (the engine of KeyIndex).

Keys are byte strings: the UTF-8 bytes of string keys, or the fixed-width
machine bytes of integer keys. Every key the map has seen lives in an arena
(``arena[koffs[i]:koffs[i + 1]]`` is the key with id ``i``), and an
open-addressing table (linear probing, power-of-two size, load at most 1/2)
holds one ``uint64`` per slot: the high 32 bits of the key's hash above the
key's ``id + 1`` (0 marks an empty slot). A lookup compares those 32 bits first
and then the key's bytes, so two keys with the same hash are told apart
exactly: hashing only picks where to look.

The compiled loop never allocates. When the table, the id arrays or the arena
run out of room it returns the row it stopped at; :class:`ByteKeyMap` grows
them and calls again from there, so a batch's new keys get ids in order of
first appearance however often that happens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from streamkit.kernel._result import readonly

__all__ = ["ByteKeyMap", "Rows"]

_DONE, _GROW = 0, 1
# How rows are laid out (see ByteKeyMap.lookup): Arrow offsets, a fixed width,
# or Arrow's 16-byte string views (length, then the bytes inline up to 12 of
# them, else a prefix, a buffer index and an offset into that buffer).
OFFSETS, FIXED, VIEWS = 0, 1, 2
_INLINE = 12
_MIN_SLOTS = 1024
# 64-bit FNV-1a, then the splitmix64 finaliser so that every bit of the
# hash depends on every input byte (the table uses the low bits, the tag the high).
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)


@numba.njit(cache=True, nogil=True, inline="always")
def _hash(data: Any, lo: Any, hi: Any) -> Any:  # pragma: no cover - compiled
    h = _FNV_OFFSET
    for i in range(lo, hi):
        h = (h ^ np.uint64(data[i])) * _FNV_PRIME
    h = (h ^ (h >> _S30)) * _MIX1
    h = (h ^ (h >> _S27)) * _MIX2
    return h ^ (h >> _S31)


@numba.njit(cache=True, nogil=True, inline="always")
def _same(arena: Any, a: Any, b: Any, data: Any, lo: Any, hi: Any) -> Any:  # pragma: no cover
    if b - a != hi - lo:
        return False
    for i in range(hi - lo):  # noqa: SIM110 - a generator would not compile to a loop
        if arena[a + i] != data[lo + i]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _probe(
    r0: int,
    kind: int,
    data: Any,
    offs: Any,
    width: int,
    views: Any,
    vbytes: Any,
    bases: Any,
    n_rows: int,
    slots: Any,
    hashes: Any,
    koffs: Any,
    arena: Any,
    n_keys: int,
    insert: bool,
    out: Any,
    first_row: Any,
    base: int,
) -> Any:  # pragma: no cover - compiled; tested against a dict by the property tests
    """Ids of rows ``r0..n_rows-1`` into ``out``; returns ``(row, n_keys, code)``.

    Row ``r`` is ``data[offs[r]:offs[r + 1]]`` (``OFFSETS``),
    ``data[r * width:(r + 1) * width]`` (``FIXED``) or described by the int32
    quadruple ``views[4 * r:4 * r + 4]`` (``VIEWS``: ``vbytes`` is the same
    memory as bytes, ``bases[b]`` where data buffer ``b`` starts in ``data``).
    Unknown keys get the next id when
    ``insert`` (``first_row[id - base] = r``), else -1. Stops with ``_GROW`` before a
    row that might not fit (table at half load, id arrays or arena full).
    """
    mask = np.uint64(slots.shape[0] - 1)
    max_keys = min(slots.shape[0] // 2, hashes.shape[0], koffs.shape[0] - 1)
    one = np.uint64(1)
    for r in range(r0, n_rows):
        src = data
        if kind == FIXED:
            lo = r * width
            hi = lo + width
        elif kind == OFFSETS:
            lo = offs[r]
            hi = offs[r + 1]
        else:
            length = np.int64(views[4 * r])
            if length <= _INLINE:
                src = vbytes
                lo = 16 * r + 4
            else:
                lo = bases[views[4 * r + 2]] + np.int64(views[4 * r + 3])
            hi = lo + length
        if insert and (n_keys >= max_keys or koffs[n_keys] + (hi - lo) > arena.shape[0]):
            return r, n_keys, _GROW
        h = _hash(src, lo, hi)
        tag = h & ~_LOW32
        j = h & mask
        while True:
            slot = slots[j]
            if slot == 0:
                if insert:
                    kid = n_keys
                    slots[j] = tag | np.uint64(kid + 1)
                    hashes[kid] = h
                    start = koffs[kid]
                    for i in range(hi - lo):
                        arena[start + i] = src[lo + i]
                    koffs[kid + 1] = start + (hi - lo)
                    first_row[kid - base] = r
                    n_keys += 1
                else:
                    kid = -1
                break
            if slot & ~_LOW32 == tag:
                kid = np.int64(slot & _LOW32) - 1
                if _same(arena, koffs[kid], koffs[kid + 1], src, lo, hi):
                    break
            j = (j + one) & mask
        out[r] = kid
    return n_rows, n_keys, _DONE


@numba.njit(cache=True, nogil=True)
def _rehash(hashes: Any, n_keys: int, slots: Any) -> None:  # pragma: no cover - compiled
    """Place keys ``0..n_keys-1`` into the empty table ``slots`` by their hashes."""
    mask = np.uint64(slots.shape[0] - 1)
    one = np.uint64(1)
    for kid in range(n_keys):
        h = hashes[kid]
        j = h & mask
        while slots[j] != 0:
            j = (j + one) & mask
        slots[j] = (h & ~_LOW32) | np.uint64(kid + 1)


def _grown(array: npt.NDArray[Any], need: int, fill: int | None = None) -> npt.NDArray[Any]:
    """``array`` if it holds ``need`` items, else a copy at least twice as large."""
    if len(array) >= need:
        return array
    out = np.empty(max(need, 2 * len(array)), dtype=array.dtype)
    out[: len(array)] = array
    if fill is not None:
        out[len(array) :] = fill
    return out


_EMPTY_U8 = readonly(np.empty(0), np.uint8)
_EMPTY_I32 = readonly(np.empty(0), np.int32)
_EMPTY_I64 = readonly(np.zeros(1), np.int64)


@dataclasses.dataclass(frozen=True, slots=True)
class Rows:
    """Byte-string rows in one of three layouts (see :func:`_probe`); build them
    with :meth:`from_offsets`, :meth:`from_fixed` or :meth:`from_views`."""

    kind: int
    n: int
    data: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]
    width: int
    views: npt.NDArray[np.int32]
    vbytes: npt.NDArray[np.uint8]
    bases: npt.NDArray[np.int64]

    @classmethod
    def from_offsets(cls, data: npt.ArrayLike, offsets: npt.ArrayLike) -> Rows:
        """Row ``r`` is ``data[offsets[r]:offsets[r + 1]]`` (Arrow strings)."""
        offs = readonly(offsets, np.int64)
        raw = readonly(data, np.uint8)
        return cls(OFFSETS, len(offs) - 1, raw, offs, 0, _EMPTY_I32, _EMPTY_U8, _EMPTY_I64)

    @classmethod
    def from_fixed(cls, data: npt.ArrayLike, width: int) -> Rows:
        """Rows of ``width`` bytes each (integers: their machine bytes)."""
        raw = readonly(data, np.uint8)
        return cls(
            FIXED, len(raw) // width, raw, _EMPTY_I64, width, _EMPTY_I32, _EMPTY_U8, _EMPTY_I64
        )

    @classmethod
    def from_views(cls, views: npt.ArrayLike, buffers: list[npt.ArrayLike]) -> Rows:
        """Arrow string views (16 bytes per row) over ``buffers`` (zero-copy from Polars)."""
        vbytes = readonly(views, np.uint8)
        sizes = [len(np.asarray(b)) for b in buffers]
        data = np.concatenate([readonly(b, np.uint8) for b in buffers]) if buffers else _EMPTY_U8
        bases = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return cls(
            VIEWS, len(vbytes) // 16, readonly(data, np.uint8), _EMPTY_I64, 0,
            vbytes.view(np.int32), vbytes, readonly(bases, np.int64),
        )  # fmt: skip

    def nbytes(self, lo: int, hi: int) -> int:
        """Total length of rows ``lo..hi-1``."""
        if self.kind == FIXED:
            return (hi - lo) * self.width
        if self.kind == OFFSETS:
            return int(self.offsets[hi] - self.offsets[lo])
        return int(self.views[4 * lo : 4 * hi : 4].sum())


class ByteKeyMap:
    """Exact map from byte-string keys to dense ids ``0, 1, 2, ...`` in order of insertion.

    For :class:`~streamkit.kernel.KeyIndex`; not part of the public API.

    Examples
    --------
    >>> import numpy as np
    >>> m = ByteKeyMap()
    >>> rows = Rows.from_offsets(np.frombuffer(b"abbab", np.uint8), [0, 1, 3, 4, 5])
    >>> ids, new_rows = m.lookup(rows, insert=True)
    >>> ids.tolist(), new_rows.tolist(), len(m)
    ([0, 1, 0, 2], [0, 1, 3], 3)
    >>> m.lookup(Rows.from_offsets(np.frombuffer(b"bbz", np.uint8), [0, 2, 3]))[0].tolist()
    [1, -1]
    """

    __slots__ = ("_arena", "_hashes", "_koffs", "_n", "_slots")

    def __init__(self) -> None:
        self._slots = np.zeros(_MIN_SLOTS, dtype=np.uint64)
        self._hashes = np.empty(_MIN_SLOTS // 2, dtype=np.uint64)
        self._koffs = np.zeros(_MIN_SLOTS // 2 + 1, dtype=np.int64)
        self._arena = np.empty(_MIN_SLOTS * 8, dtype=np.uint8)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def lookup(
        self, rows: Rows, *, insert: bool = False
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Ids of the rows (-1: unknown, unless ``insert``) and the rows that
        introduced new keys, in id order."""
        out = np.empty(rows.n, dtype=np.int64)
        start_keys = self._n
        first = np.empty(max(len(self._hashes) - start_keys, 1), dtype=np.int64)
        row = 0
        while True:
            row, n, code = _probe(
                row, rows.kind, rows.data, rows.offsets, rows.width, rows.views, rows.vbytes,
                rows.bases, rows.n, self._slots, self._hashes, self._koffs, self._arena,
                self._n, insert, out, first, start_keys,
            )  # fmt: skip
            self._n = int(n)
            if code == _DONE:
                break
            self._grow(rows, int(row))
            first = _grown(first, len(self._hashes) - start_keys)
        return out, first[: self._n - start_keys].copy()

    def _grow(self, rows: Rows, row: int) -> None:
        """Room for at least the rows ``row..`` (their count, their bytes) as new keys."""
        rest = rows.n - row
        rest_bytes, row_bytes = rows.nbytes(row, rows.n), rows.nbytes(row, row + 1)
        # Guess a quarter of the remaining rows are new keys (doubling covers the
        # rest); always room for the row that stopped the loop. The table grows
        # only with the keys actually present, so that it stays as small (and as
        # cache-resident) as its load factor allows.
        need_keys = self._n + min(rest, max(rest // 4, 1024))
        if self._n >= len(self._hashes):
            self._hashes = _grown(self._hashes, need_keys)
        if self._n + 1 >= len(self._koffs):
            self._koffs = _grown(self._koffs, need_keys + 1)
        used = int(self._koffs[self._n])
        if used + row_bytes > len(self._arena):
            room = max(min(rest_bytes, max(rest_bytes // 4, 65536)), row_bytes)
            self._arena = _grown(self._arena, used + room)
        if self._n >= len(self._slots) // 2:
            slots = np.zeros(2 * len(self._slots), dtype=np.uint64)
            _rehash(self._hashes, self._n, slots)
            self._slots = slots
