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

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from streamkit.kernel._result import readonly

__all__ = ["ByteKeyMap"]

_DONE, _GROW = 0, 1
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
    data: Any,
    offs: Any,
    width: int,
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

    Row ``r`` is ``data[offs[r]:offs[r + 1]]`` or, when ``width > 0``,
    ``data[r * width:(r + 1) * width]``. Unknown keys get the next id when
    ``insert`` (``first_row[id - base] = r``), else -1. Stops with ``_GROW`` before a
    row that might not fit (table at half load, id arrays or arena full).
    """
    mask = np.uint64(slots.shape[0] - 1)
    max_keys = min(slots.shape[0] // 2, hashes.shape[0], koffs.shape[0] - 1)
    one = np.uint64(1)
    for r in range(r0, n_rows):
        if width > 0:
            lo = r * width
            hi = lo + width
        else:
            lo = offs[r]
            hi = offs[r + 1]
        if insert and (n_keys >= max_keys or koffs[n_keys] + (hi - lo) > arena.shape[0]):
            return r, n_keys, _GROW
        h = _hash(data, lo, hi)
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
                        arena[start + i] = data[lo + i]
                    koffs[kid + 1] = start + (hi - lo)
                    first_row[kid - base] = r
                    n_keys += 1
                else:
                    kid = -1
                break
            if slot & ~_LOW32 == tag:
                kid = np.int64(slot & _LOW32) - 1
                if _same(arena, koffs[kid], koffs[kid + 1], data, lo, hi):
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


class ByteKeyMap:
    """Exact map from byte-string keys to dense ids ``0, 1, 2, ...`` in order of insertion.

    Rows are given as one byte buffer plus either Arrow-style offsets or a fixed
    width. For :class:`~streamkit.kernel.KeyIndex`; not part of the public API.

    Examples
    --------
    >>> import numpy as np
    >>> m = ByteKeyMap()
    >>> data = np.frombuffer(b"abbab", dtype=np.uint8)
    >>> ids, new_rows = m.lookup(data, np.array([0, 1, 3, 4, 5]), 0, insert=True)
    >>> ids.tolist(), new_rows.tolist(), len(m)
    ([0, 1, 0, 2], [0, 1, 3], 3)
    >>> m.lookup(np.frombuffer(b"bbz", dtype=np.uint8), np.array([0, 2, 3]), 0)[0].tolist()
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
        self,
        data: npt.NDArray[np.uint8],
        offsets: npt.NDArray[np.int64] | None,
        width: int,
        *,
        insert: bool = False,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Ids of the rows (-1: unknown, unless ``insert``) and the rows that
        introduced new keys, in id order.

        Rows are ``data[offsets[r]:offsets[r + 1]]`` (``width == 0``) or
        ``width`` bytes each.
        """
        data = readonly(data, np.uint8)
        if width > 0:
            n_rows = len(data) // width
            offs = readonly(np.zeros(1), np.int64)
        else:
            assert offsets is not None
            n_rows = len(offsets) - 1
            offs = readonly(offsets, np.int64)
        out = np.empty(n_rows, dtype=np.int64)
        start_keys = self._n
        first = np.empty(max(len(self._hashes) - start_keys, 1), dtype=np.int64)
        row = 0
        while True:
            row, n, code = _probe(
                row, data, offs, width, n_rows, self._slots, self._hashes, self._koffs,
                self._arena, self._n, insert, out, first, start_keys,
            )  # fmt: skip
            self._n = int(n)
            if code == 0:
                break
            self._grow(data, offs, width, int(row), n_rows)
            first = _grown(first, len(self._hashes) - start_keys)
        return out, first[: self._n - start_keys].copy()

    def _grow(
        self, data: npt.NDArray[np.uint8], offs: npt.NDArray[np.int64], width: int, row: int,
        n_rows: int,
    ) -> None:  # fmt: skip
        """Room for at least the rows ``row..`` (their count, their bytes) as new keys."""
        rest = n_rows - row
        if width > 0:
            rest_bytes, row_bytes = rest * width, width
        else:
            rest_bytes, row_bytes = int(offs[n_rows] - offs[row]), int(offs[row + 1] - offs[row])
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
