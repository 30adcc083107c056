"""Benchmark: validating a 10,000-state, 100-event machine.

Builds a random but reproducible machine (every state gets ``--per-state``
transitions on distinct events to random targets, plus a chain that makes every
state reachable and a few final states and timeouts), then times
``validate_machine`` against a baseline run in the same process: building the
adjacency lists and a plain BFS over the very same edges, the least any
reachability check has to do. The ratio is what to watch; absolute seconds depend
on the machine.

Run: ``python benchmarks/bench_validate.py [--states 10000 --events 100 --per-state 20]``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque
from collections.abc import Sequence

from streamkit.machines import Machine
from streamkit.machines._validate import validate_machine


def build(n_states: int, n_events: int, per_state: int, seed: int) -> Machine:
    """A reproducible random machine with ``n_states * per_state`` transitions plus a chain."""
    rng = random.Random(seed)
    states = [f"s{i}" for i in range(n_states)]
    events = [f"e{i}" for i in range(n_events)]
    transitions: list[tuple[str, str, str]] = [
        (states[i], events[0], states[i + 1]) for i in range(n_states - 1)
    ]
    for i, state in enumerate(states):
        for event in rng.sample(events[1:], min(per_state, n_events - 1)):
            transitions.append((state, event, states[rng.randrange(n_states)]))
        if i % 97 == 0:
            transitions.append((state, events[0] if i == n_states - 1 else events[-1], state))
    final = states[:: max(1, n_states // 100)]
    timeouts = [(states[i], "30m", states[0]) for i in range(0, n_states, 50)]
    return Machine(
        "bench",
        states=states,
        initial=states[0],
        final=final,
        transitions=transitions,
        timeouts=timeouts,
    )


def baseline(machine: Machine) -> int:
    """Adjacency lists plus a BFS from the initial state over the same edges."""
    code = {s: i for i, s in enumerate(machine.states)}
    succ: list[list[int]] = [[] for _ in machine.states]
    for t in machine.transitions:
        succ[code[t.source]].append(code[t.target])
    for w in machine.timeouts:
        succ[code[w.state]].append(code[w.target])
    seen = [False] * len(succ)
    root = code[machine.initial]
    seen[root] = True
    queue = deque([root])
    while queue:
        for v in succ[queue.popleft()]:
            if not seen[v]:
                seen[v] = True
                queue.append(v)
    return sum(seen)


def best_of(repeat: int, fn: object) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the figures and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--states", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--per-state", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    machine = build(args.states, args.events, args.per_state, args.seed)
    build_s = time.perf_counter() - start
    report = validate_machine(machine)
    validate_s = best_of(args.repeat, lambda: validate_machine(machine))
    baseline_s = best_of(args.repeat, lambda: baseline(machine))
    figures = {
        "states": float(len(machine.states)),
        "events": float(len(machine.events)),
        "transitions": float(len(machine.transitions)),
        "timeouts": float(len(machine.timeouts)),
        "problems": float(len(report.problems)),
        "construct_s": build_s,
        "validate_s": validate_s,
        "baseline_s": baseline_s,
        "validate_over_baseline": validate_s / baseline_s,
        "transitions_per_s": len(machine.transitions) / validate_s,
    }
    width = max(map(len, figures))
    for name, value in figures.items():
        shown = f"{value:,.0f}" if value >= 100 or value.is_integer() else f"{value:.4f}"
        print(f"{name:<{width}}  {shown}")
    return figures


if __name__ == "__main__":
    main()
