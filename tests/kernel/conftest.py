"""Fixtures for the kernel tests: compile the numba kernel once per session."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

from streamkit.kernel import BatchResult, _numba, run_batch, warmup
from streamkit.kernel.reference import run_batch_reference

RunBatch = Callable[..., BatchResult]


@pytest.fixture(scope="session", autouse=True)
def _warm_kernel() -> None:
    warmup()


#: Room for 64 listed events (blocks of 32): small cases cross many blocks.
SMALL_LISTED = 64


@pytest.fixture(params=["kernel", "kernel-4-threads", "reference"])
def impl(request: Any, monkeypatch: pytest.MonkeyPatch) -> RunBatch:
    """Both implementations of the rules, the kernel in one thread and split in
    four key parts, so every hand-written case checks all three."""
    if request.param == "kernel-4-threads":
        monkeypatch.setattr(_numba, "_LISTED", SMALL_LISTED)
        return functools.partial(run_batch, threads=4)
    return run_batch if request.param == "kernel" else run_batch_reference
