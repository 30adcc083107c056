"""Pin the public names of streamkit.kernel."""

from __future__ import annotations

import streamkit.kernel as kernel


def test_exported_members() -> None:
    assert kernel.__all__ == [
        "FIRED",
        "LATE",
        "NO_WATERMARK",
        "UNDEFINED",
        "BatchResult",
        "CompiledMachine",
        "KeyIndex",
        "KeyState",
        "compile",
        "ensure_compiled",
        "history_arrays",
        "history_order",
        "run_batch",
        "tick_nanoseconds",
        "warmup",
    ]
    for name in kernel.__all__:
        assert getattr(kernel, name) is not None
