"""Fixtures for the kernel tests: compile the numba kernel once per session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from streamkit.kernel import BatchResult, run_batch, warmup
from streamkit.kernel.reference import run_batch_reference

RunBatch = Callable[..., BatchResult]


@pytest.fixture(scope="session", autouse=True)
def _warm_kernel() -> None:
    warmup()


@pytest.fixture(params=["kernel", "reference"])
def impl(request: Any) -> RunBatch:
    """Both implementations of the rules, so every hand-written case checks both."""
    return run_batch if request.param == "kernel" else run_batch_reference
