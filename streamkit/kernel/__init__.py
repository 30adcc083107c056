"""The vectorized per-key state-machine kernel.

:func:`compile` turns a :class:`~streamkit.machines.Machine` into a
:class:`CompiledMachine` (dense integer tables); :class:`KeyIndex` maps keys to
dense ids; :class:`KeyState` holds per-key state arrays; :func:`run_batch` runs a
batch of events through the numba kernel and returns a :class:`BatchResult`,
whose rows :func:`history_order` merges into per-key firing order and
:func:`history_arrays` into the history's (time, firing order) columns.
:mod:`streamkit.kernel.reference` is the plain-Python twin the tests compare
against. The kernel knows nothing of storage or pipelines.

Examples
--------
>>> import numpy as np
>>> import polars as pl
>>> from streamkit import kernel
>>> cm = kernel.CompiledMachine(("idle", "busy"), ("start", "stop"),
...                             np.array([[1, -1], [-1, 0]]),
...                             np.array([-1, 60]), np.array([-1, 0]), 0)
>>> index, state = kernel.KeyIndex(), kernel.KeyState.empty()
>>> batch = pl.DataFrame({"key": ["m1", "m2", "m1"], "event": ["start", "start", "stop"],
...                       "t": [0, 5, 100]})
>>> ids = index.lookup_or_insert(batch["key"])
>>> state.grow(len(index))
>>> r = kernel.run_batch(cm, ids, cm.encode_events(batch["event"]), batch["t"].to_numpy(),
...                      state, watermark=kernel.NO_WATERMARK)
>>> cm.state_names(state.state).to_list()
['idle', 'idle']
>>> r.t_key.tolist(), r.t_time.tolist()
([0, 1], [60, 65])
"""

from __future__ import annotations

from streamkit.kernel._compile import CompiledMachine, compile, tick_nanoseconds
from streamkit.kernel._history import history_arrays
from streamkit.kernel._keys import KeyIndex
from streamkit.kernel._numba import ensure_compiled, run_batch, warmup
from streamkit.kernel._result import (
    FIRED,
    LATE,
    NO_WATERMARK,
    UNDEFINED,
    BatchResult,
    history_order,
)
from streamkit.kernel._state import KeyState

__all__ = [
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
