"""KeyIndex: keys of any dtype to dense ids."""

from __future__ import annotations

import datetime

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.errors import SchemaError
from streamkit.kernel import KeyIndex


def test_strings_in_order_of_first_appearance() -> None:
    index = KeyIndex()
    assert len(index) == 0 and index.dtype is None and index.keys.len() == 0
    ids = index.lookup_or_insert(pl.Series(["b", "a", "b", "c", "a"]))
    assert ids.dtype == np.int64 and ids.tolist() == [0, 1, 0, 2, 1]
    ids = index.lookup_or_insert(pl.Series(["d", "c", "e", "d"]))
    assert ids.tolist() == [3, 2, 4, 3]
    assert index.keys.to_list() == ["b", "a", "c", "d", "e"]
    assert index.keys.name == "key" and index.dtype == pl.String
    assert repr(index) == "KeyIndex(5 keys, dtype=String)"


def test_integers_and_width_casts() -> None:
    index = KeyIndex()
    assert index.lookup_or_insert(pl.Series([10, 5, 10], dtype=pl.Int64)).tolist() == [0, 1, 0]
    assert index.lookup_or_insert(pl.Series([5, 7], dtype=pl.Int32)).tolist() == [1, 2]
    assert index.dtype == pl.Int64
    narrow = KeyIndex.from_series(pl.Series([1, 2], dtype=pl.Int16))
    with pytest.raises(SchemaError, match="do not fit"):
        narrow.lookup_or_insert(pl.Series([70_000], dtype=pl.Int64))


def test_other_hashable_dtypes() -> None:
    day = datetime.date(2024, 1, 1)
    index = KeyIndex()
    ids = index.lookup_or_insert(pl.Series([day, day + datetime.timedelta(days=1), day]))
    assert ids.tolist() == [0, 1, 0]
    structs = KeyIndex()
    ids = structs.lookup_or_insert(
        pl.Series([{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "x"}])
    )
    assert ids.tolist() == [0, 1, 0]


def test_nulls_are_rejected_with_position() -> None:
    index = KeyIndex()
    with pytest.raises(SchemaError, match=r"found 2 null key\(s\) \(first at row 1\)"):
        index.lookup_or_insert(pl.Series(["a", None, "b", None]))
    assert len(index) == 0
    with pytest.raises(SchemaError, match="null"):
        index.lookup(pl.Series([None], dtype=pl.String))
    with pytest.raises(SchemaError, match="null"):
        KeyIndex.from_series(pl.Series([1, None]))


def test_dtype_mismatch_is_rejected() -> None:
    index = KeyIndex()
    index.lookup_or_insert(pl.Series(["1"]))
    with pytest.raises(SchemaError, match=r"expected keys of dtype String.*found Int64"):
        index.lookup_or_insert(pl.Series([1]))
    with pytest.raises(SchemaError, match="polars Series"):
        index.lookup_or_insert(["a"])  # type: ignore[arg-type]


def test_from_series_and_lookup() -> None:
    index = KeyIndex.from_series(pl.Series("user", ["x", "y", "z"]))
    assert index.lookup(pl.Series(["z", "q", "x"])).tolist() == [2, -1, 0]
    assert len(index) == 3
    assert index.lookup_or_insert(pl.Series(["q", "y"])).tolist() == [3, 1]
    with pytest.raises(SchemaError, match=r"unique keys.*'x'"):
        KeyIndex.from_series(pl.Series(["x", "y", "x"]))
    assert KeyIndex().lookup(pl.Series(["a"])).tolist() == [-1]


def test_empty_batches() -> None:
    index = KeyIndex()
    assert index.lookup_or_insert(pl.Series([], dtype=pl.String)).tolist() == []
    assert index.dtype == pl.String
    assert index.lookup_or_insert(pl.Series(["a"])).tolist() == [0]
    assert index.lookup_or_insert(pl.Series([], dtype=pl.String)).tolist() == []


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.integers(0, 30), st.text(max_size=2)).map(str), max_size=30),
        max_size=12,
    )
)
def test_matches_a_dict(batches: list[list[str]]) -> None:
    """Many batches (many chunks) give the same ids as a plain dict."""
    index = KeyIndex()
    reference: dict[str, int] = {}
    for batch in batches:
        expected = [reference.setdefault(k, len(reference)) for k in batch]
        got = index.lookup_or_insert(pl.Series(batch, dtype=pl.String))
        assert got.tolist() == expected
    assert index.keys.to_list() == list(reference)
    rebuilt = KeyIndex.from_series(index.keys)
    everything = pl.Series(list(reference), dtype=pl.String)
    assert rebuilt.lookup(everything).tolist() == list(range(len(reference)))


def test_null_dtype_empty_series_fixes_nothing() -> None:
    index = KeyIndex()
    assert index.lookup_or_insert(pl.Series([])).tolist() == []
    assert index.dtype is None
    assert len(KeyIndex.from_series(KeyIndex().keys)) == 0
    index.lookup_or_insert(pl.Series([3]))
    assert index.lookup_or_insert(pl.Series([])).tolist() == []
    assert index.lookup(pl.Series([])).tolist() == []


# ------------------------------------------------------------------ the hash map


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-50, 50), max_size=400),
        max_size=8,
    ),
    st.sampled_from([pl.Int64, pl.UInt64, pl.Datetime("us")]),
)
def test_fixed_width_keys_match_a_dict(batches: list[list[int]], dtype: pl.DataType) -> None:
    """Integer and temporal keys (their machine bytes) against a plain dict."""
    if dtype == pl.UInt64:
        batches = [[v % 2**64 for v in b] for b in batches]
    index = KeyIndex()
    reference: dict[int, int] = {}
    for batch in batches:
        series = pl.Series(batch, dtype=pl.Int64 if dtype != pl.UInt64 else pl.UInt64)
        expected = [reference.setdefault(k, len(reference)) for k in batch]
        assert index.lookup_or_insert(series.cast(dtype)).tolist() == expected
    assert index.keys.to_physical().to_list() == list(reference)


def test_growth_across_many_keys_and_long_keys() -> None:
    """Tens of thousands of keys (the table, id arrays and arena grow many times,
    also in the middle of a batch), keys of every length from empty to 100 kB."""
    rng = np.random.default_rng(3)
    words = [f"k{i}" for i in range(40_000)] + ["", "x" * 100_000, "é∂" * 500]
    reference: dict[str, int] = {}
    index = KeyIndex()
    for size in (1, 10, 5_000, 70_000, 3):
        batch = [words[i] for i in rng.integers(0, len(words), size)]
        expected = [reference.setdefault(k, len(reference)) for k in batch]
        assert index.lookup_or_insert(pl.Series(batch, dtype=pl.String)).tolist() == expected
    assert index.keys.to_list() == list(reference)
    sliced = pl.Series(words[::-1], dtype=pl.String).slice(7, 100)  # an Arrow offset
    expected = [reference.get(k, -1) for k in words[::-1][7:107]]
    assert index.lookup(sliced).tolist() == expected


def test_equal_words_different_bytes_are_told_apart() -> None:
    """Two long keys of equal length and equal first 16 bytes: put the first key's
    entry, under the second key's hash tag, where the second key probes first.
    A lookup of the second key must compare all bytes and not answer the first
    key's id."""
    from streamkit.kernel._hashmap import _LOW32, ByteKeyMap, Rows, _hash

    first, second = b"abcdefghijklmnop-1", b"abcdefghijklmnop-2"

    def rows(word: bytes) -> Rows:
        return Rows.from_offsets(np.frombuffer(word, dtype=np.uint8), [0, len(word)])

    def hash_of(word: bytes) -> int:
        return int(_hash(np.frombuffer(word, np.uint8), 0, len(word))[0])

    m = ByteKeyMap()
    assert m.lookup(rows(first), insert=True)[0].tolist() == [0]
    slots = m._slots
    mask = len(slots) // 4 - 1
    h1, h2 = hash_of(first), hash_of(second)
    entry = [int(w) for w in slots[4 * (h1 & mask) : 4 * (h1 & mask) + 4]]
    slots[4 * (h1 & mask) : 4 * (h1 & mask) + 4] = 0
    entry[0] = (len(second) << 56) | ((h2 >> 40) << 32) | (entry[0] & int(_LOW32))
    slots[4 * (h2 & mask) : 4 * (h2 & mask) + 4] = entry
    m._hashes[0] = h2
    assert m.lookup(rows(second))[0].tolist() == [-1]
    assert m.lookup(rows(second), insert=True)[0].tolist() == [1]
    assert m.lookup(rows(second))[0].tolist() == [1]


def test_string_views_over_several_buffers_and_slices() -> None:
    """Polars' string views point into several data buffers once chunks are
    concatenated; slices keep an Arrow offset. Both are read zero-copy."""
    a = pl.Series([f"long string number {i} here" for i in range(1_000)])
    b = pl.Series([f"another long string {i} there" for i in range(1_000)] + ["short"])
    both = pl.concat([a, b], rechunk=False)
    arr = both.rechunk().to_arrow(compat_level=pl.CompatLevel.newest())
    assert len(arr.buffers()) > 3  # validity, views and more than one data buffer
    index = KeyIndex()
    words = both.to_list()
    assert index.lookup_or_insert(both).tolist() == list(range(len(words)))
    part = both.slice(1_500, 200)
    assert index.lookup(part).tolist() == list(range(1_500, 1_700))
    assert index.lookup(pl.Series(["long string number 7 here", "nope"])).tolist() == [7, -1]


@pytest.mark.parametrize("dtype", [pl.String, pl.Int64])
def test_chunked_series_are_read_chunk_by_chunk(dtype: pl.DataType) -> None:
    """A Series of several chunks (as a scan over several segments gives) maps each
    chunk in turn; new keys keep their order of first appearance across chunks."""
    parts = [pl.Series([3, 1, 3]), pl.Series([2, 1]), pl.Series([], dtype=pl.Int64), pl.Series([4])]
    keys = pl.concat([p.cast(dtype) for p in parts], rechunk=False)
    assert keys.n_chunks() > 1
    index = KeyIndex()
    assert index.lookup_or_insert(keys).tolist() == [0, 1, 0, 2, 1, 3]
    assert index.keys.cast(pl.Int64).to_list() == [3, 1, 2, 4]
    assert index.lookup(keys.slice(3, 3)).tolist() == [2, 1, 3]
    rebuilt = KeyIndex.from_series(
        pl.concat([index.keys.slice(0, 2), index.keys.slice(2)], rechunk=False)
    )
    assert rebuilt.lookup(keys).tolist() == [0, 1, 0, 2, 1, 3]
