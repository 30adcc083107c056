"""KeyState: per-key arrays with amortised growth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from streamkit.errors import CheckpointError
from streamkit.kernel import KeyState
from streamkit.kernel._state import records


def test_empty_has_never_seen_keys() -> None:
    st = KeyState.empty(3)
    assert len(st) == 3
    assert st.state.dtype == np.int32 and st.state.tolist() == [-1, -1, -1]
    for name in ("since", "last", "events"):
        arr = getattr(st, name)
        assert arr.dtype == np.int64 and arr.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="non-negative"):
        KeyState.empty(-1)


def test_grow_keeps_values_and_doubles() -> None:
    st = KeyState.empty(2)
    st.state[:] = [3, 4]
    st.since[:] = [10, 20]
    capacities = set()
    for n in range(3, 1000):
        st.grow(n)
        capacities.add(st.capacity)
    assert len(st) == 999
    assert st.state[:2].tolist() == [3, 4] and st.since[:2].tolist() == [10, 20]
    assert (st.state[2:] == -1).all() and (st.events == 0).all()
    assert len(capacities) <= 7  # 16, 32, ..., 1024: doubling, not one step per key
    st.grow(5)  # shrinking is a no-op
    assert len(st) == 999


def test_views_write_through() -> None:
    st = KeyState.empty(2)
    view = st.events
    view[1] = 9
    assert st.events[1] == 9


def test_frame_round_trip_and_copy() -> None:
    st = KeyState.from_arrays([0, -1, 2], [5, 0, 1], [6, 0, 1], [3, 0, 1])
    frame = st.to_frame()
    assert frame.schema == pl.Schema(
        {"state": pl.Int32, "since": pl.Int64, "last": pl.Int64, "events": pl.Int64}
    )
    back = KeyState.from_frame(frame)
    assert back.equals(st)
    copy = st.copy()
    copy.state[0] = 1
    assert not copy.equals(st) and st.state[0] == 0
    frame[0, "state"] = 1  # the frame is a copy too
    assert st.state[0] == 0
    assert repr(st) == "KeyState(3 keys, 2 seen)"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (([0], [1], [0], [0]), "last >= since"),
        (([-2], [0], [0], [0]), "key id 0"),
        (([0], [0], [0], [-1]), "events >= 0"),
        (([0, 1], [0], [0], [0]), "equal length"),
    ],
)
def test_from_arrays_rejects_inconsistent_state(
    arrays: tuple[list[int], ...], message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        KeyState.from_arrays(*arrays)


def test_from_frame_rejects_missing_columns_and_nulls() -> None:
    with pytest.raises(CheckpointError, match="missing \\['events'\\]"):
        KeyState.from_frame(pl.DataFrame({"state": [0], "since": [0], "last": [0]}))
    with pytest.raises(CheckpointError, match="nulls"):
        KeyState.from_frame(
            pl.DataFrame({"state": [0], "since": [None], "last": [0], "events": [0]})
        )


def test_fields_are_strided_views_of_one_record_per_key() -> None:
    st = KeyState.from_arrays([2, -1, 0], [5, 0, 1], [7, 0, 3], [1, 0, 4])
    rec = records(st)
    assert rec.shape == (3, 4) and rec.dtype == np.int64 and rec.flags.c_contiguous
    assert rec.tolist() == [[2, 5, 7, 1], [2**32 - 1, 0, 0, 0], [0, 1, 3, 4]]
    for name in ("state", "since", "last", "events"):
        view = getattr(st, name)
        assert view.strides == (32,) and view.flags.writeable
        assert np.shares_memory(view, rec)


def test_views_support_what_callers_do_with_arrays() -> None:
    # Assign into all keys, fancy-index reads and writes, Series and frames.
    st = KeyState.empty(4)
    st.state[:] = np.array([0, 1, 2, 3], dtype=np.int32)
    st.since[:] = [10, 11, 12, 13]
    st.last[:] = st.since
    ids = np.array([3, 1])
    assert st.state[ids].tolist() == [3, 1] and st.since[ids].tolist() == [13, 11]
    st.state[ids], st.events[ids] = [0, 0], [9, 8]
    assert st.state.tolist() == [0, 0, 2, 0] and st.events.tolist() == [0, 8, 0, 9]
    assert pl.Series(st.since[:3]).to_list() == [10, 11, 12]
    assert st.to_frame()["last"].to_list() == [10, 11, 12, 13]
    assert (st.state[:2] == -1).sum() == 0 and st.state.max() == 2


def test_negative_state_written_through_the_view_reads_back() -> None:
    st = KeyState.from_arrays([1, 2], [0, 0], [0, 0], [0, 0])
    st.state[0] = -1  # the padding half of the record is not touched
    assert st.state.tolist() == [-1, 2] and records(st)[0, 0] == 2**32 - 1
    st.grow(40)
    assert st.state[:3].tolist() == [-1, 2, -1] and len(records(st)) == 40


def test_records_start_on_a_cache_line() -> None:
    """A 32-byte record never spans two cache lines (two misses for the kernel)."""
    from streamkit.kernel._state import records

    for n in (0, 1, 17, 5_000, 300_000):
        st = KeyState.empty(n)
        assert records(st).ctypes.data % 64 == 0
        st.grow(3 * n + 40)
        assert records(st).ctypes.data % 64 == 0
        assert records(st.copy()).ctypes.data % 64 == 0
    st = KeyState.from_arrays([0, -1, 2], [1, 0, 3], [1, 0, 4], [1, 0, 1])
    assert records(st).ctypes.data % 64 == 0
