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
