"""compile(machine) and CompiledMachine."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import polars as pl
import pytest

import streamkit as sk
from streamkit.errors import MachineError
from streamkit.kernel import CompiledMachine, compile, tick_nanoseconds

MINUTE = datetime.timedelta(minutes=1)


def order_machine() -> sk.Machine:
    return sk.Machine(
        "order",
        states=["created", "paid", "shipped", "delivered", "cancelled"],
        initial="created",
        final=["delivered", "cancelled"],
        transitions=[
            ("created", "pay", "paid"),
            ("paid", "ship", "shipped"),
            ("shipped", "deliver", "delivered"),
            (["created", "paid"], "cancel", "cancelled"),
            ("cancelled", "cancel", "cancelled"),
        ],
        timeouts=[("created", "30m", "cancelled"), ("shipped", "2h", "delivered")],
    )


def test_compile_real_machine() -> None:
    m = order_machine()
    cm = compile(m)
    assert cm.states == tuple(m.states) and cm.events == tuple(m.events)
    assert cm.initial == m.states.index("created")
    s, e = m.states.index, m.events.index
    assert cm.table[s("created"), e("pay")] == s("paid")
    assert cm.table[s("paid"), e("cancel")] == s("cancelled")
    assert cm.table[s("cancelled"), e("cancel")] == s("cancelled")
    assert cm.table[s("delivered"), e("pay")] == -1
    assert int((cm.table >= 0).sum()) == len(m.transitions)
    assert cm.timeout_after[s("created")] == 1800
    assert cm.timeout_to[s("created")] == s("cancelled")
    assert cm.timeout_after[s("shipped")] == 7200
    assert cm.timeout_after[s("paid")] == -1 and cm.timeout_to[s("paid")] == -1
    assert cm.table.dtype == np.int32 and cm.timeout_after.dtype == np.int64
    assert cm.timeout_to.dtype == np.int32


@pytest.mark.parametrize(
    ("tick", "expected"),
    [
        (datetime.timedelta(seconds=1), 1800),
        (datetime.timedelta(milliseconds=1), 1_800_000),
        (datetime.timedelta(microseconds=1), 1_800_000_000),
        (1, 1_800_000_000_000),
        (datetime.timedelta(minutes=30), 1),
    ],
)
def test_compile_converts_after_to_ticks(tick: datetime.timedelta | int, expected: int) -> None:
    cm = compile(order_machine(), tick=tick)
    assert cm.timeout_after[0] == expected


def test_after_must_be_whole_ticks() -> None:
    with pytest.raises(MachineError, match="whole number of ticks") as info:
        compile(order_machine(), tick=datetime.timedelta(minutes=7))
    assert "'created'" in str(info.value)


@pytest.mark.parametrize("tick", [0, -5, datetime.timedelta(0), 1.5, True, "1s"])
def test_bad_tick(tick: object) -> None:
    with pytest.raises(MachineError, match="tick"):
        compile(order_machine(), tick=tick)  # type: ignore[arg-type]


def test_tick_nanoseconds() -> None:
    assert tick_nanoseconds(datetime.timedelta(days=1, microseconds=3)) == 86_400 * 10**9 + 3000
    assert tick_nanoseconds(np.int64(7)) == 7


def duck(**overrides: object) -> NS:
    base: dict[str, object] = {
        "states": ("a", "b"),
        "events": ("go",),
        "initial": "a",
        "transitions": [NS(source="a", event="go", target="b")],
        "timeouts": [NS(state="b", after=MINUTE, target="a")],
    }
    base.update(overrides)
    return NS(**base)


def test_compile_duck_typed_machine() -> None:
    cm = compile(duck(), tick=datetime.timedelta(seconds=1))
    assert cm.table.tolist() == [[1], [-1]]
    assert cm.timeout_after.tolist() == [-1, 60]
    assert cm.timeout_to.tolist() == [-1, 0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"initial": "z"}, "initial state 'z'"),
        ({"transitions": [NS(source="a", event="stop", target="b")]}, "unknown event 'stop'"),
        ({"transitions": [NS(source="q", event="go", target="b")]}, "unknown state 'q'"),
        (
            {
                "transitions": [
                    NS(source="a", event="go", target="b"),
                    NS(source="a", event="go", target="a"),
                ]
            },
            "nondeterministic",
        ),
        ({"timeouts": [NS(state="b", after=datetime.timedelta(0), target="a")]}, "positive"),
        ({"timeouts": [NS(state="b", after=-MINUTE, target="a")]}, "positive"),
        ({"timeouts": [NS(state="b", after="1m", target="a")]}, "timedelta"),
        ({"timeouts": [NS(state="b", after=MINUTE, target="x")]}, "unknown state 'x'"),
        (
            {
                "timeouts": [
                    NS(state="b", after=MINUTE, target="a"),
                    NS(state="b", after=2 * MINUTE, target="a"),
                ]
            },
            "at most one timeout",
        ),
    ],
)
def test_compile_rejects_bad_machines(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(MachineError, match=message):
        compile(duck(**overrides))


def test_duplicate_identical_transitions_are_fine() -> None:
    tr = NS(source="a", event="go", target="b")
    assert compile(duck(transitions=[tr, tr])).table.tolist() == [[1], [-1]]


def make(**overrides: object) -> CompiledMachine:
    args: dict[str, object] = {
        "states": ("a", "b"),
        "events": ("x", "y"),
        "table": [[1, -1], [0, 1]],
        "timeout_after": [-1, 5],
        "timeout_to": [-1, 0],
        "initial": 0,
    }
    args.update(overrides)
    return CompiledMachine(**args)  # type: ignore[arg-type]


def test_compiled_machine_is_immutable_and_copied() -> None:
    table = np.array([[1, -1], [0, 1]])
    cm = make(table=table)
    table[0, 0] = 0
    assert cm.table[0, 0] == 1
    with pytest.raises(ValueError, match="read-only"):
        cm.table[0, 0] = 0
    with pytest.raises(AttributeError):
        cm.initial = 1  # type: ignore[misc]


def test_compiled_machine_equality_and_hash() -> None:
    assert make() == make() and hash(make()) == hash(make())
    assert make() != make(initial=1)
    assert make() != make(timeout_after=[-1, 6])
    assert "2 states" in repr(make()) and "initial='a'" in repr(make())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"states": ()}, "at least one state"),
        ({"states": ("a", "a")}, "unique"),
        ({"table": [[1, -1]]}, "shape"),
        ({"table": [[2, -1], [0, 1]]}, "target codes"),
        ({"table": [[-2, -1], [0, 1]]}, "target codes"),
        ({"timeout_after": [-1, 0]}, "positive"),
        ({"timeout_after": [-1, 5], "timeout_to": [-1, 2]}, "state code"),
        ({"timeout_after": [-1, -1], "timeout_to": [-1, 0]}, "no timeout"),
        ({"timeout_after": [-1]}, "shape"),
        ({"initial": 2}, "initial"),
        ({"initial": "a"}, "initial"),
        ({"table": [["p", "q"], [0, 1]]}, "convertible"),
    ],
)
def test_compiled_machine_validation(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(MachineError, match=message):
        make(**overrides)


def test_encode_events_and_state_names() -> None:
    cm = make()
    codes = cm.encode_events(pl.Series(["y", "x", "nope", None]))
    assert codes.dtype == np.int32 and codes.tolist() == [1, 0, -1, -1]
    assert cm.encode_events(pl.Series([], dtype=pl.String)).tolist() == []
    names = cm.state_names(np.array([1, -1, 0], dtype=np.int32))
    assert names.dtype == pl.String and names.to_list() == ["b", None, "a"]
    assert cm.target("a", "x") == "b" and cm.target("a", "y") is None
    with pytest.raises(MachineError, match="unknown event 'z'"):
        cm.target("a", "z")
    with pytest.raises(MachineError, match="unknown state 'q'"):
        cm.target("q", "x")


def test_compiled_real_machine_runs() -> None:
    from streamkit.kernel import NO_WATERMARK, KeyState, run_batch

    m = order_machine()
    cm = compile(m, tick=1)  # nanosecond ticks
    events = cm.encode_events(pl.Series(["pay", "ship", "bogus"]))
    state = KeyState.empty(2)
    minute = 60 * 10**9
    result = run_batch(
        cm,
        np.array([0, 0, 1]),
        events,
        np.array([0, minute, 3 * 60 * minute]),
        state,
        watermark=NO_WATERMARK,
    )
    assert cm.state_names(result.to_state).to_list() == ["paid", "shipped", "created"]
    # Order 0 was shipped at 1 min; 2h later (<= 3h) it times out into delivered.
    assert cm.state_names(result.t_to).to_list() == ["delivered"]
    assert result.t_time.tolist() == [minute + 120 * minute]


# ------------------------------------------------------- compiling the kernel, once
_FIRST_RUN = """
import json, sys
import numpy as np
import polars as pl
import streamkit as sk
from streamkit.kernel import _numba

store = sk.Store("memory://first-run")
log = store.log("ev", key="k", time="t")
log.append(pl.DataFrame({"k": ["a", "b", "a"], "t": [1, 2, 3], "ev": ["open", "open", "close"]}))
door = sk.Machine("door", states=["closed", "opened"], initial="closed", final=["closed"],
                  transitions=[("closed", "open", "opened"), ("opened", "close", "closed")])
pipe = (sk.Pipeline("p", store).read(log).transitions(door, event="ev")
        .write(store.log("out", key="key", time="time")))
pipe.run(progress=False)
pipe.run(progress=False, from_checkpoint=0)  # a second run in the same process
stats = [d.stats for d in _numba._kernel_dispatchers()]
print(json.dumps({
    "misses": sum(sum(s.cache_misses.values()) for s in stats),
    "hits": sum(sum(s.cache_hits.values()) for s in stats),
}))
"""


def _first_run(cache: Path) -> tuple[dict[str, int], str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_RUN],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_the_first_run_says_it_compiles_once_and_later_processes_load_the_cache(
    tmp_path: Path,
) -> None:
    # A fresh process on a cold cache: one line says the kernel compiles, and
    # every kernel function is compiled (a cache miss) and stored.
    first, err = _first_run(tmp_path)
    assert err.count("compiling the state-machine kernel") == 1, err
    assert first["misses"] > 0
    # The next process compiles nothing: every function loads from the cache.
    second, err = _first_run(tmp_path)
    assert "compiling" not in err, err
    assert second == {"misses": 0, "hits": second["hits"]} and second["hits"] > 0


def test_ensure_compiled_is_quiet_on_a_warm_cache(capsys: pytest.CaptureFixture[str]) -> None:
    from streamkit.kernel import _numba

    assert not _numba.cache_is_cold()  # the session's warmup() filled the cache
    _numba.ensure_compiled()
    assert capsys.readouterr().err == ""
