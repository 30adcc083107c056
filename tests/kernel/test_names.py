"""Event-name codes (``NameCodes``, behind ``CompiledMachine.encode_events``)
against a plain dict, on both paths: names that fit in a string view (compared
as view words) and longer ones (the key index's byte map)."""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.kernel import CompiledMachine
from streamkit.kernel._names import NameCodes

# Short and long names, shared prefixes, the empty string, multi-byte characters.
_TEXT = st.text(alphabet="ab\u00e9\u4e2d\x00", max_size=16)


def _expected(names: list[str], values: list[str | None]) -> list[int]:
    code = {name: i for i, name in enumerate(names)}
    return [code.get(v, -1) if v is not None else -1 for v in values]


@settings(max_examples=300, deadline=None)
@given(
    names=st.lists(_TEXT, unique=True, max_size=12),
    values=st.lists(st.one_of(_TEXT, st.none()), max_size=60),
    cut=st.integers(0, 60),
    data=st.data(),
)
def test_encode_events_equals_dict(
    names: list[str], values: list[str | None], cut: int, data: st.DataObject
) -> None:
    extra = data.draw(st.lists(st.sampled_from(names), max_size=20)) if names else []
    values = values + list(extra)
    cm = CompiledMachine(
        states=("s",),
        events=tuple(names),
        table=np.zeros((1, len(names)), dtype=np.int32),
        timeout_after=np.array([-1]),
        timeout_to=np.array([-1]),
        initial=0,
    )
    series = pl.Series(values, dtype=pl.String)
    expected = _expected(names, values)
    assert cm.encode_events(series).tolist() == expected
    # Several chunks, and a slice that starts inside a chunk.
    cut = min(cut, len(values))
    chunked = pl.concat([series.slice(0, cut), series.slice(cut)], rechunk=False)
    assert cm.encode_events(chunked).tolist() == expected
    assert cm.encode_events(series.slice(1)).tolist() == expected[1:]


def test_view_words_mask_the_bytes_past_the_length() -> None:
    codes = NameCodes(["e0", "twelve-bytes", "", "x" * 13])
    assert not codes._inline  # one name does not fit in a view: the byte map
    short = NameCodes(["e0", "twelve-bytes", ""])
    assert short._inline
    values = pl.Series(["e0", "e00", "e", "twelve-bytes", "twelve-byte", "twelve-bytes!", ""])
    assert short.lookup(values).tolist() == [0, -1, -1, 1, -1, -1, 2]
    assert codes.lookup(values).tolist() == [0, -1, -1, 1, -1, -1, 2]


def test_compiled_machine_pickles_without_its_lookup() -> None:
    cm = CompiledMachine(("s",), ("go",), np.array([[0]]), np.array([-1]), np.array([-1]), 0)
    assert cm.encode_events(pl.Series(["go", "no"])).tolist() == [0, -1]
    clone = pickle.loads(pickle.dumps(cm))
    assert clone == cm and clone._event_codes is None
    assert clone.encode_events(pl.Series(["no", "go"])).tolist() == [-1, 0]
