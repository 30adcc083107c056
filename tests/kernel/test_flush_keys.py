"""The batch-end flush over listed keys equals the flush over every key."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkit.errors import ConfigurationError
from streamkit.kernel import NO_WATERMARK, CompiledMachine, KeyState, run_batch

from .test_properties import machines, streams


def _timed(cm: CompiledMachine, state: KeyState) -> np.ndarray[Any, Any]:
    """Keys whose state has a timeout: what a caller must list at least."""
    has_timeout = np.asarray(cm.timeout_after) > 0
    codes = np.asarray(state.state)
    seen = codes >= 0
    return np.flatnonzero(seen & has_timeout[np.where(seen, codes, 0)]).astype(np.int64)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), threads=st.sampled_from([1, 2]))
def test_listing_the_timed_keys_changes_nothing(data: st.DataObject, threads: int) -> None:
    cm = data.draw(machines())
    stream = data.draw(streams(cm))
    n = len(stream["keys"])
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    full, listed = KeyState.empty(stream["n_keys"]), KeyState.empty(stream["n_keys"])
    wm_full = wm_listed = NO_WATERMARK
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        args = (stream["keys"][lo:hi], stream["events"][lo:hi], stream["times"][lo:hi])
        extra = data.draw(st.lists(st.integers(0, stream["n_keys"] - 1), max_size=3))
        keys = np.union1d(_timed(cm, listed), np.array(extra, dtype=np.int64))
        keys = np.union1d(keys, args[0])  # the batch's own keys may enter timed states
        a = run_batch(cm, *args, full, watermark=wm_full, threads=threads)
        b = run_batch(cm, *args, listed, watermark=wm_listed, threads=threads, flush_keys=keys)
        assert a.equals(b)
        assert full.equals(listed)
        wm_full, wm_listed = a.watermark, b.watermark


def test_flush_keys_must_ascend_and_exist() -> None:
    cm = CompiledMachine(
        ("a", "b"), ("x",), np.array([[1], [0]]), np.array([-1, 1]), np.array([-1, 0]), 0
    )
    none = (np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int64))
    with pytest.raises(ConfigurationError, match="ascending"):
        run_batch(cm, *none, KeyState.empty(3), watermark=0, flush_keys=np.array([2, 1]))
    with pytest.raises(ConfigurationError, match="outside"):
        run_batch(cm, *none, KeyState.empty(3), watermark=0, flush_keys=np.array([0, 7]))
