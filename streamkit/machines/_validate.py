"""Linear-time validation of a :class:`~streamkit.machines.Machine`.

One pass groups transitions by (source, event) for nondeterminism and duplicates;
one iterative Tarjan run from the initial state finds the reachable states and the
strongly connected components (SCCs) in reverse topological order, so whether a
component can reach a final state is known when it is emitted. Edges are the
transitions and timeouts between declared states.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from streamkit.machines.report import ERROR_KINDS, WARNING_KINDS, Problem, ValidationReport

if TYPE_CHECKING:
    from streamkit.machines.machine import Machine

__all__ = ["strongly_connected_components", "validate_machine"]

_KIND_ORDER = {kind: i for i, kind in enumerate(ERROR_KINDS + WARNING_KINDS)}
_SHOW = 3  # how many locations or names a message lists before "and N more"
_RESERVED_EVENT = "timeout"


def _q(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f" and {len(names) - limit} more"
    return shown


def strongly_connected_components(
    succ: Sequence[Sequence[int]], root: int, is_final: Sequence[bool]
) -> tuple[list[bool], list[tuple[list[int], bool]]]:
    """Iterative Tarjan from ``root``.

    Returns ``(reached, components)``: ``reached[v]`` for every node, and the
    components reachable from ``root`` in reverse topological order, each as
    ``(nodes, can_reach_final)``.

    Examples
    --------
    >>> reached, comps = strongly_connected_components([[1], [0, 2], []], 0, [False] * 2 + [True])
    >>> [(sorted(nodes), ok) for nodes, ok in comps]
    [([2], True), ([0, 1], True)]
    """
    n = len(succ)
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    # ``hits[v]``: v has an edge into a completed component that reaches a final state.
    hits = [False] * n
    comp_of = [-1] * n
    comp_final: list[bool] = []
    components: list[tuple[list[int], bool]] = []
    ptr = [0] * n
    stack: list[int] = []

    index[root] = low[root] = 0
    counter = 1
    stack.append(root)
    on_stack[root] = True
    call = [root]
    while call:
        v = call[-1]
        edges = succ[v]
        i = ptr[v]
        end = len(edges)
        descended = False
        while i < end:
            w = edges[i]
            i += 1
            if index[w] == -1:
                ptr[v] = i
                index[w] = low[w] = counter
                counter += 1
                stack.append(w)
                on_stack[w] = True
                call.append(w)
                descended = True
                break
            if on_stack[w]:
                low[v] = min(low[v], index[w])
            elif comp_final[comp_of[w]]:
                hits[v] = True
        if descended:
            continue
        ptr[v] = i
        call.pop()
        if low[v] == index[v]:
            nodes: list[int] = []
            reaches = False
            cid = len(components)
            while True:
                w = stack.pop()
                on_stack[w] = False
                comp_of[w] = cid
                nodes.append(w)
                if is_final[w] or hits[w]:
                    reaches = True
                if w == v:
                    break
            comp_final.append(reaches)
            components.append((nodes, reaches))
        if call:
            u = call[-1]
            if on_stack[v]:
                low[u] = min(low[u], low[v])
            elif comp_final[comp_of[v]]:
                hits[u] = True
    reached = [i != -1 for i in index]
    return reached, components


def validate_machine(machine: Machine) -> ValidationReport:
    """Every problem of ``machine``; see :mod:`streamkit.machines.report` for the kinds.

    Examples
    --------
    >>> from streamkit.machines import Machine
    >>> m = Machine("m", states=["a", "b"], initial="a", final=["b"],
    ...             transitions=[("a", "go", "b"), ("a", "go", "a")])
    >>> [p.kind for p in validate_machine(m).problems]
    ['nondeterministic']
    """
    states = machine.states
    code = {s: i for i, s in enumerate(states)}
    n = len(states)
    specs = machine._specs
    timeout_specs = machine._timeout_specs
    transitions = machine.transitions
    origins = machine._origins
    final_set = set(machine.final)
    problems: list[Problem] = []

    # -- unknown states ---------------------------------------------------------
    unknown: dict[str, list[str]] = {}

    def note(name: str, where: str) -> None:
        if name not in code:
            unknown.setdefault(name, []).append(where)

    note(machine.initial, "initial")
    for i, name in enumerate(machine.final):
        note(name, f"final[{i}]")
    for i, spec in enumerate(specs):
        if isinstance(spec.source, tuple):
            for j, name in enumerate(spec.source):
                note(name, f"transitions[{i}].from[{j}]")
        elif spec.source != "*":
            note(spec.source, f"transitions[{i}].from")
        note(spec.target, f"transitions[{i}].to")
    for i, ts in enumerate(timeout_specs):
        note(ts.state, f"timeouts[{i}].state")
        note(ts.target, f"timeouts[{i}].to")
    for k, (name, places) in enumerate(unknown.items()):
        where = ", ".join(places[:_SHOW])
        if len(places) > _SHOW:
            where += f" and {len(places) - _SHOW} more places"
        hint = ""
        if k < 20 and n <= 5000:
            close = difflib.get_close_matches(name, states, n=1)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        problems.append(
            Problem(
                "unknown_state",
                (name,),
                f"state {name!r} is used in {where} but is not declared in states{hint}; "
                f"add it to states or correct the name",
            )
        )

    # -- nondeterminism and duplicates (transitions) ----------------------------
    first: dict[tuple[str, str], int] = {}
    conflicts: dict[tuple[str, str], list[int]] = {}
    duplicate_pairs: dict[tuple[int, int], list[str]] = {}
    for k, t in enumerate(transitions):
        key = (t.source, t.event)
        j = first.setdefault(key, k)
        if j == k:
            continue
        if transitions[j].target == t.target:
            duplicate_pairs.setdefault((origins[j], origins[k]), []).append(t.source)
        else:
            conflicts.setdefault(key, [j]).append(k)
    for (source, event), ks in conflicts.items():
        firsts: dict[str, int] = {}
        for k in ks:
            firsts.setdefault(transitions[k].target, k)
        targets = list(firsts)
        detail = ", ".join(f"{t!r} (transitions[{origins[k]}])" for t, k in firsts.items())
        problems.append(
            Problem(
                "nondeterministic",
                (source, *[t for t in targets if t != source]),
                f"state {source!r} has transitions on event {event!r} to different states: "
                f"{detail}; keep exactly one target per state and event",
            )
        )
    for (i, j), sources in duplicate_pairs.items():
        spec = specs[j]
        problems.append(
            Problem(
                "duplicate",
                tuple(dict.fromkeys(sources)),
                f"transitions[{j}] repeats transitions[{i}] for {_q(sources)} on "
                f"{spec.event!r} -> {spec.target!r}; remove one of them",
                "warning",
            )
        )

    # -- nondeterminism and duplicates (timeouts) -------------------------------
    by_state: dict[str, list[int]] = {}
    for i, ts in enumerate(timeout_specs):
        by_state.setdefault(ts.state, []).append(i)
    for state, idx in by_state.items():
        if len(idx) < 2:
            continue
        variants = {(timeout_specs[i].after, timeout_specs[i].target): i for i in reversed(idx)}
        if len(variants) > 1:
            targets = list(dict.fromkeys(timeout_specs[i].target for i in idx))
            detail = ", ".join(
                f"after {timeout_specs[i].after_text} to {timeout_specs[i].target!r} "
                f"(timeouts[{i}])"
                for i in sorted(variants.values())
            )
            problems.append(
                Problem(
                    "nondeterministic",
                    (state, *[t for t in targets if t != state]),
                    f"state {state!r} has different timeouts: {detail}; keep one timeout per state",
                )
            )
        seen: dict[tuple[object, str], int] = {}
        for i in idx:
            key2 = (timeout_specs[i].after, timeout_specs[i].target)
            if key2 in seen:
                problems.append(
                    Problem(
                        "duplicate",
                        (state,),
                        f"timeouts[{i}] repeats timeouts[{seen[key2]}] ({state!r} after "
                        f"{timeout_specs[i].after_text} -> {timeout_specs[i].target!r}); "
                        f"remove one of them",
                        "warning",
                    )
                )
            else:
                seen[key2] = i

    # -- graph over declared states ---------------------------------------------
    succ: list[list[int]] = [[] for _ in range(n)]
    has_out = [False] * n
    has_incoming = [False] * n
    self_loop = [False] * n
    for t in transitions:
        u = code.get(t.source)
        v = code.get(t.target)
        if u is not None:
            has_out[u] = True
        if v is not None and t.source != t.target:
            has_incoming[v] = True
        if u is not None and v is not None:
            succ[u].append(v)
            if u == v:
                self_loop[u] = True
    for tt in machine.timeouts:
        u = code.get(tt.state)
        v = code.get(tt.target)
        if u is not None:
            has_out[u] = True
        if v is not None and tt.state != tt.target:
            has_incoming[v] = True
        if u is not None and v is not None:
            succ[u].append(v)
            if u == v:
                self_loop[u] = True
    is_final = [s in final_set for s in states]

    # -- no final ---------------------------------------------------------------
    if not machine.final:
        problems.append(
            Problem(
                "no_final",
                (),
                "no final state is declared, so no key may ever rest: every reachable dead "
                "end is reported as a deadlock and every reachable cycle as a livelock; "
                "declare final=[...] with the states where a key's life may end (a final "
                "state may still have outgoing transitions)",
            )
        )

    # -- reachability, deadlocks, livelocks --------------------------------------
    root = code.get(machine.initial)
    if root is not None:
        reached, components = strongly_connected_components(succ, root, is_final)
        for v in range(n):
            if not reached[v]:
                problems.append(
                    Problem(
                        "unreachable",
                        (states[v],),
                        f"state {states[v]!r} is not reachable from the initial state "
                        f"{machine.initial!r} by any chain of transitions or timeouts; add a "
                        f"transition into it or remove it",
                    )
                )
        for v in range(n):
            if reached[v] and not is_final[v] and not has_out[v]:
                problems.append(
                    Problem(
                        "deadlock",
                        (states[v],),
                        f"state {states[v]!r} is reachable and not final but has no outgoing "
                        f"transition or timeout, so a key that enters it is stuck; declare it "
                        f"final or add a transition or timeout out of it",
                    )
                )
        livelocks: list[list[int]] = []
        for nodes, reaches in components:
            if not reaches and (len(nodes) > 1 or self_loop[nodes[0]]):
                livelocks.append(sorted(nodes))
        livelocks.sort(key=lambda nodes: nodes[0])
        why = " (the machine declares no final state)" if not machine.final else ""
        for nodes in livelocks:
            names = [states[v] for v in nodes]
            what = (
                f"state {names[0]!r} loops on itself and cannot reach a final state"
                if len(names) == 1
                else f"states {_q(names)} form a cycle that cannot reach a final state"
            )
            problems.append(
                Problem(
                    "livelock",
                    tuple(names),
                    f"{what}{why}: a key that gets there cycles forever; declare one of them "
                    f"final or add a path to a final state",
                )
            )

    # -- warnings ---------------------------------------------------------------
    for name in machine.final:
        v = code.get(name)
        if v is not None and not has_incoming[v] and name != machine.initial:
            problems.append(
                Problem(
                    "unused_final",
                    (name,),
                    f"final state {name!r} is not the initial state and no transition or "
                    f"timeout from another state leads to it; add one or drop the state",
                    "warning",
                )
            )
    for i, ts in enumerate(timeout_specs):
        if ts.state in final_set:
            problems.append(
                Problem(
                    "final_timeout",
                    (ts.state,),
                    f"timeouts[{i}] leaves the final state {ts.state!r} after {ts.after_text}, "
                    f"so keys never rest there for good; make the state non-final or drop "
                    f"the timeout",
                    "warning",
                )
            )
    for i, spec in enumerate(specs):
        if spec.event == _RESERVED_EVENT:
            problems.append(
                Problem(
                    "reserved_event",
                    (),
                    f"transitions[{i}] uses the event {_RESERVED_EVENT!r}, which transition "
                    f"histories use for fired timeouts; rename the event (e.g. "
                    f"'timed_out') so the two cannot be confused",
                    "warning",
                )
            )

    problems.sort(key=lambda p: _KIND_ORDER[p.kind])  # stable: keeps order within a kind
    return ValidationReport(machine.name, problems)
