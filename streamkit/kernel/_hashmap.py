"""A compiled, exact hash map from byte strings to dense ids (the engine of KeyIndex).

Keys are byte strings: the UTF-8 bytes of string keys, or the fixed-width
machine bytes of integer keys. Every key the map has seen lives in an arena
(``arena[koffs[i]:koffs[i + 1]]`` is the key with id ``i``), and an
open-addressing table (linear probing, power-of-two size, load at most 1/2)
holds four ``uint64`` words per slot: the key's length, 24 bits of its hash
and its ``id + 1`` (0 marks an empty slot), its bytes 0-7 and 8-15, and where it
starts in the arena. Keys of up to 16 bytes (most ids, every integer) are thus
compared exactly without leaving the table; longer keys are compared byte by
byte in the arena after their words match. Two keys with the same hash are
told apart exactly: hashing only picks where to look.

The compiled loop allocates nothing per row. When the table, the id arrays or the arena
run out of room it returns the row it stopped at; :class:`ByteKeyMap` grows
them and calls again from there, so a batch's new keys get ids in order of
first appearance however often that happens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from streamkit.kernel._numba import _prefetch_row
from streamkit.kernel._result import readonly, zeros_aligned

__all__ = ["ByteKeyMap", "Rows"]

_DONE, _GROW = 0, 1
# How rows are laid out (see ByteKeyMap.lookup): Arrow offsets, a fixed width,
# or Arrow's 16-byte string views (length, then the bytes inline up to 12 of
# them, else a prefix, a buffer index and an offset into that buffer).
OFFSETS, FIXED, VIEWS = 0, 1, 2
_INLINE = 12
_MIN_SLOTS = 1024
# The hash: the key's 8-byte words, each folded in with a multiply, then the
# splitmix64 finaliser, so every bit of the hash depends on every input byte
# (the table uses the low bits, the tag the high ones).
_SEED = np.uint64(0xCBF29CE484222325)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_S24, _S40 = np.uint64(24), np.uint64(40)
_LOW32 = np.uint64(0xFFFFFFFF)
# Prefetch the table slot of the row this many rows ahead.
_AHEAD = 16


@intrinsic
def _load64(typingctx: Any, data: Any, i: Any) -> Any:  # pragma: no cover - compiled
    """The 8 bytes ``data[i:i + 8]`` of a uint8 array as a little-endian uint64
    (one unaligned load; the caller guarantees ``i + 8 <= len(data)``)."""
    sig = types.uint64(data, i)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
            context, builder, signature.args[0], arr, [args[1]], wraparound=False
        )
        word = builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)
        return word

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _word(data: Any, i: Any, lo: Any, hi: Any) -> Any:  # pragma: no cover - compiled
    """Bytes ``data[i:min(hi, i + 8)]`` of the key ``data[lo:hi]`` as a
    little-endian uint64, zero-padded; reads only inside the key."""
    n = hi - i
    if n >= 8:
        return _load64(data, i)  # type: ignore[call-arg]
    if hi - lo >= 8:  # the key's last 8 bytes, shifted down
        return _load64(data, hi - 8) >> np.uint64(8 * (8 - n))  # type: ignore[call-arg]
    w = np.uint64(0)
    for k in range(n):
        w |= np.uint64(data[i + k]) << np.uint64(8 * k)
    return w


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(length: Any, first: Any) -> Any:  # pragma: no cover - compiled
    return ((_SEED ^ np.uint64(length)) * _MIX2 ^ first) * _MIX1


@numba.njit(cache=True, nogil=True, inline="always")
def _finish(h: Any) -> Any:  # pragma: no cover - compiled
    h = (h ^ (h >> _S30)) * _MIX1
    h = (h ^ (h >> _S27)) * _MIX2
    return h ^ (h >> _S31)


@numba.njit(cache=True, nogil=True, inline="always")
def _hash(data: Any, lo: Any, hi: Any) -> Any:  # pragma: no cover - compiled
    """``(hash, first word)`` of the bytes ``data[lo:hi]``."""
    first = _word(data, lo, lo, hi)
    h = _mix(hi - lo, first)
    for i in range(lo + 8, hi, 8):
        h = (h ^ (h >> _S31) ^ _word(data, i, lo, hi)) * _MIX1
    return _finish(h), first


@numba.njit(cache=True, nogil=True, inline="always")
def _same(arena: Any, a: Any, b: Any, data: Any, lo: Any, hi: Any) -> Any:  # pragma: no cover
    """Whether ``arena[a:b]`` and ``data[lo:hi]`` hold the same bytes (8 at a time)."""
    n = hi - lo
    if b - a != n:
        return False
    for i in range(0, n, 8):  # noqa: SIM110 - a generator would not compile to a loop
        if _word(arena, a + i, a, b) != _word(data, lo + i, lo, hi):
            return False
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _row(
    kind: Any, r: Any, data: Any, offs: Any, width: Any, views: Any, vbytes: Any, bases: Any
) -> Any:  # pragma: no cover - compiled
    """``(inline, lo, hi)``: row ``r`` is ``vbytes[lo:hi]`` if ``inline``, else
    ``data[lo:hi]`` (see :func:`_probe`). No array is returned: numba would
    reference-count it on every row."""
    if kind == FIXED:
        lo = r * width
        return False, lo, lo + width
    if kind == OFFSETS:
        return False, offs[r], offs[r + 1]
    length = np.int64(views[4 * r])
    if length <= _INLINE:
        lo = 16 * r + 4
        return True, lo, lo + length
    lo = bases[views[4 * r + 2]] + np.int64(views[4 * r + 3])
    return False, lo, lo + length


@numba.njit(cache=True, nogil=True)
def _hash_rows(
    kind: int,
    data: Any,
    offs: Any,
    width: int,
    views: Any,
    vbytes: Any,
    bases: Any,
    n_rows: int,
    hs: Any,
    ws: Any,
    ws2: Any,
) -> None:  # pragma: no cover - compiled; tested against a dict by the property tests
    """``hs[r], ws[r] = _hash(row r)`` and ``ws2[r]`` the row's bytes 8 to 15 (as
    a zero-padded word) for every row: a first, sequential pass, so that the probe
    pass can prefetch the table slot of a row ahead."""
    for r in range(n_rows):
        # Written out here, not called: numba compiles this loop several times
        # slower when the view hash is a function of its own.
        if kind == VIEWS and views[4 * r] <= _INLINE:
            # An inline view: the hash of its (at most 12) bytes, as _hash
            # computes it, from three int32 words of the view.
            length = np.int64(views[4 * r])
            packed = np.uint64(np.uint32(views[4 * r + 1])) | (
                np.uint64(np.uint32(views[4 * r + 2])) << _S32
            )
            if length < 8:
                packed &= (np.uint64(1) << np.uint64(8 * length)) - np.uint64(1)
            h = _mix(length, packed)
            rest = np.uint64(0)
            if length > 8:
                rest = np.uint64(np.uint32(views[4 * r + 3]))
                rest &= (np.uint64(1) << np.uint64(8 * (length - 8))) - np.uint64(1)
                h = (h ^ (h >> _S31) ^ rest) * _MIX1
            hs[r] = _finish(h)
            ws[r] = packed
            ws2[r] = rest
        else:
            _, lo, hi = _row(kind, r, data, offs, width, views, vbytes, bases)
            hs[r], ws[r] = _hash(data, lo, hi)
            ws2[r] = _word(data, lo + 8, lo, hi) if hi - lo > 8 else np.uint64(0)


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
    hs: Any,
    ws: Any,
    ws2: Any,
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
    memory as bytes, ``bases[b]`` where data buffer ``b`` starts in ``data``);
    ``hs[r], ws[r], ws2[r]`` are its hash and first two words (:func:`_hash_rows`). Unknown
    keys get the next id when ``insert`` (``first_row[id - base] = r``),
    else -1. Stops with ``_GROW`` before a row that might not fit (table at
    half load, id arrays or arena full).

    Slot ``j`` is the 32 bytes ``slots[4j:4j + 4]``: ``len << 56 | tag << 32 |
    id + 1`` (``len`` capped at 255, ``tag`` the top 24 bits of the hash), the
    key's bytes 0-7 and 8-15 (zero-padded words), and where the key starts in
    the arena. Keys of up to 16 bytes are compared by those words alone; longer
    ones also byte by byte in the arena. The slot of the row ``_AHEAD`` rows on
    is prefetched.
    """
    mask = np.uint64(slots.shape[0] // 4 - 1)
    max_keys = min(slots.shape[0] // 8, hashes.shape[0], koffs.shape[0] - 1)
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    last = n_rows - 1
    for r in range(r0, n_rows):
        _prefetch_row(slots, four * (hs[min(r + _AHEAD, last)] & mask))  # type: ignore[call-arg]
        h = hs[r]
        packed = ws[r]
        packed2 = ws2[r]
        inl, lo, hi = _row(kind, r, data, offs, width, views, vbytes, bases)
        length = hi - lo
        if insert and (n_keys >= max_keys or koffs[n_keys] + length > arena.shape[0]):
            return r, n_keys, _GROW
        top = (np.uint64(min(length, 255)) << _S24) | (h >> _S40)
        j = h & mask
        while True:
            at = four * j
            w0 = slots[at]
            if w0 == 0:
                if insert:
                    kid = n_keys
                    start = koffs[kid]
                    slots[at] = (top << _S32) | np.uint64(kid + 1)
                    slots[at + one] = packed
                    slots[at + two] = packed2
                    slots[at + three] = np.uint64(start)
                    hashes[kid] = h
                    if inl:
                        arena[start : start + length] = vbytes[lo:hi]
                    else:
                        arena[start : start + length] = data[lo:hi]
                    koffs[kid + 1] = start + length
                    first_row[kid - base] = r
                    n_keys += 1
                else:
                    kid = -1
                break
            if (w0 >> _S32) == top and slots[at + one] == packed and slots[at + two] == packed2:
                kid = np.int64(w0 & _LOW32) - 1
                if length <= 16:
                    break
                # Longer keys: their bytes. Equal lengths below 255 are known
                # from the tag word already; only longer ones need koffs.
                a = np.int64(slots[at + three])
                b = a + length if length < 255 else koffs[kid + 1]
                if _same(arena, a, b, vbytes, lo, hi) if inl else _same(arena, a, b, data, lo, hi):
                    break
            j = (j + one) & mask
        out[r] = kid
    return n_rows, n_keys, _DONE


@numba.njit(cache=True, nogil=True)
def _rehash(hashes: Any, old: Any, slots: Any) -> None:  # pragma: no cover - compiled
    """Move every entry of the table ``old`` into the empty, larger ``slots``."""
    mask = np.uint64(slots.shape[0] // 4 - 1)
    one = np.uint64(1)
    for i in range(old.shape[0] // 4):
        w0 = old[4 * i]
        if w0 == 0:
            continue
        j = hashes[np.int64(w0 & _LOW32) - 1] & mask
        while slots[np.uint64(4) * j] != 0:
            j = (j + one) & mask
        for w in range(4):
            slots[np.uint64(4) * j + np.uint64(w)] = old[4 * i + w]


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
    def from_views(cls, views: npt.ArrayLike, buffers: Sequence[npt.ArrayLike]) -> Rows:
        """Arrow string views (16 bytes per row) over ``buffers`` (zero-copy from Polars)."""
        vbytes = readonly(views, np.uint8)
        parts = [readonly(b, np.uint8) for b in buffers]
        # One data buffer (the usual case) is used as is; several are joined.
        data = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else _EMPTY_U8
        bases = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
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

    For :class:`~streamkit.kernel.KeyIndex`; not part of the public API. Not
    thread-safe: one thread at a time (it keeps scratch buffers between calls).

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

    __slots__ = ("_arena", "_hashes", "_koffs", "_n", "_scratch", "_slots")

    def __init__(self) -> None:
        self._slots = zeros_aligned(4 * _MIN_SLOTS, np.uint64)  # 4 words a slot
        self._hashes = np.empty(_MIN_SLOTS // 2, dtype=np.uint64)
        self._koffs = np.zeros(_MIN_SLOTS // 2 + 1, dtype=np.int64)
        self._arena = np.empty(_MIN_SLOTS * 8, dtype=np.uint8)
        self._n = 0
        self._scratch = np.empty(0, dtype=np.uint64)  # row hashes and first words

    def __len__(self) -> int:
        return self._n

    def lookup(
        self, rows: Rows, *, insert: bool = False
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Ids of the rows (-1: unknown, unless ``insert``) and the rows that
        introduced new keys, in id order."""
        out = np.empty(rows.n, dtype=np.int64)
        if len(self._scratch) < 3 * rows.n:  # kept: fresh pages cost a fault each
            self._scratch = np.empty(3 * rows.n, dtype=np.uint64)
        hs, ws, ws2 = (self._scratch[i * rows.n : (i + 1) * rows.n] for i in range(3))
        _hash_rows(
            rows.kind, rows.data, rows.offsets, rows.width, rows.views, rows.vbytes,
            rows.bases, rows.n, hs, ws, ws2,
        )  # fmt: skip
        start_keys = self._n
        first = np.empty(max(len(self._hashes) - start_keys, 1), dtype=np.int64)
        row = 0
        while True:
            row, n, code = _probe(
                row, rows.kind, rows.data, rows.offsets, rows.width, rows.views, rows.vbytes,
                rows.bases, rows.n, hs, ws, ws2, self._slots, self._hashes, self._koffs,
                self._arena,
                self._n, insert, out, first, start_keys,
            )  # fmt: skip
            self._n = int(n)
            if code == _DONE:
                break
            self._grow(rows, int(row))
            first = _grown(first, len(self._hashes) - start_keys)
        return out, first[: self._n - start_keys].copy()

    def reserve(self, keys: int, nbytes: int) -> None:
        """Room for ``keys`` more keys of ``nbytes`` bytes in all: inserting them
        then never grows or rehashes the table (e.g. when rebuilding an index of
        millions of keys from a checkpoint)."""
        need = self._n + keys + max(keys // 8, 1024)  # and room for some new keys after
        self._hashes = _grown(self._hashes, need)
        self._koffs = _grown(self._koffs, need + 1, fill=int(self._koffs[self._n]))
        used = int(self._koffs[self._n])
        self._arena = _grown(self._arena, used + nbytes)
        slots = len(self._slots) // 4
        while need >= slots // 2:  # at most half of the slots in use, as _grow keeps it
            slots *= 2
        if 4 * slots > len(self._slots):
            grown = zeros_aligned(4 * slots, np.uint64)
            _rehash(self._hashes, self._slots, grown)
            self._slots = grown

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
        if self._n >= len(self._slots) // 8:  # half of the slots
            slots = zeros_aligned(2 * len(self._slots), np.uint64)
            _rehash(self._hashes, self._slots, slots)
            self._slots = slots
