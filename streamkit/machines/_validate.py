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
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np

from streamkit.machines._duration import format_duration, to_timedelta
from streamkit.machines.report import ERROR_KINDS, WARNING_KINDS, Problem, ValidationReport

if TYPE_CHECKING:
    from streamkit.machines.machine import Machine

__all__ = ["max_timeouts_within", "strongly_connected_components", "validate_machine"]

_KIND_ORDER = {kind: i for i, kind in enumerate(ERROR_KINDS + WARNING_KINDS)}
_SHOW = 3  # how many locations or names a message lists before "and N more"
_RESERVED_EVENT = "timeout"


def _q(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f" and {len(names) - limit} more"
    return shown


def strongly_connected_components(
    offsets: Sequence[int], targets: Sequence[int], root: int, is_final: Sequence[bool]
) -> tuple[list[bool], list[tuple[list[int], bool]]]:
    """Iterative Tarjan from ``root`` over a graph in CSR form.

    Node ``v``'s successors are ``targets[offsets[v]:offsets[v + 1]]``. Returns
    ``(reached, components)``: ``reached[v]`` for every node, and the components
    reachable from ``root`` in reverse topological order, each as ``(nodes,
    can_reach_final)``. No recursion, so any depth works.

    Examples
    --------
    >>> # 0 -> 1, 1 -> 0, 1 -> 2; 2 is final
    >>> reached, comps = strongly_connected_components([0, 1, 3, 3], [1, 0, 2], 0,
    ...                                                [False, False, True])
    >>> [(sorted(nodes), ok) for nodes, ok in comps]
    [([2], True), ([0, 1], True)]
    """
    n = len(offsets) - 1
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    # ``hits[v]``: v has an edge into a completed component that reaches a final state.
    hits = [False] * n
    comp_of = [-1] * n
    comp_final: list[bool] = []
    components: list[tuple[list[int], bool]] = []
    ptr = list(offsets[:n])
    stack: list[int] = []

    index[root] = low[root] = 0
    counter = 1
    stack.append(root)
    on_stack[root] = True
    call = [root]
    while call:
        v = call[-1]
        i = ptr[v]
        end = offsets[v + 1]
        descended = False
        while i < end:
            w = targets[i]
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
    n = len(states)
    specs = machine._specs
    timeout_specs = machine._timeout_specs
    final_set = set(machine.final)
    problems: list[Problem] = []

    # -- integer codes; undeclared names get codes >= n ---------------------------
    code: dict[str, int] = {s: i for i, s in enumerate(states)}
    names: list[str] = list(states)
    # Where each undeclared name is used, with a sort key giving declaration order.
    unknown: dict[str, list[tuple[tuple[int, int, int], str]]] = {}

    def undeclared(name: str, at: tuple[int, int, int], where: str) -> int:
        c = code.get(name)
        if c is None:
            c = code[name] = len(names)
            names.append(name)
            unknown[name] = []
        unknown[name].append((at, where))
        return c

    if machine.initial not in code:
        undeclared(machine.initial, (0, 0, 0), "initial")
    for i, name in enumerate(machine.final):
        if code.get(name, n) >= n:
            undeclared(name, (1, i, 0), f"final[{i}]")

    # One row per concrete transition. Plain rows (one declared source) are coded
    # with list comprehensions; compact lists, "*" and undeclared names are rare
    # and take the slow loop below.
    get = code.get
    event_code = {e: i for i, e in enumerate(machine.events)}
    src = [get(sp.source, -1) if type(sp.source) is str else -1 for sp in specs]
    dst = [get(sp.target, -1) for sp in specs]
    evt = [event_code[sp.event] for sp in specs]
    org = list(range(len(specs)))
    extra_src: list[int] = []
    extra_dst: list[int] = []
    extra_evt: list[int] = []
    extra_org: list[int] = []
    for i in [
        i for i, (a, b) in enumerate(zip(src, dst, strict=True)) if not (0 <= a < n and 0 <= b < n)
    ]:
        spec = specs[i]
        t = dst[i]
        if not 0 <= t < n:
            t = dst[i] = undeclared(spec.target, (2, i, 1 << 30), f"transitions[{i}].to")
        source = spec.source
        if isinstance(source, tuple):
            codes = []
            for j, name in enumerate(source):
                c = get(name, -1)
                if c < 0 or c >= n:
                    c = undeclared(name, (2, i, j), f"transitions[{i}].from[{j}]")
                codes.append(c)
        elif source == "*":
            codes = list(range(n))
        else:
            c = get(source, -1)
            if c < 0 or c >= n:
                c = undeclared(source, (2, i, 0), f"transitions[{i}].from")
            codes = [c]
        src[i] = codes[0]
        if len(codes) > 1:
            k = len(codes) - 1
            extra_src.extend(codes[1:])
            extra_dst.extend([t] * k)
            extra_evt.extend([evt[i]] * k)
            extra_org.extend([i] * k)
    w_src: list[int] = []
    w_dst: list[int] = []
    for i, ts in enumerate(timeout_specs):
        c = get(ts.state, -1)
        if c < 0 or c >= n:
            c = undeclared(ts.state, (3, i, 0), f"timeouts[{i}].state")
        w_src.append(c)
        c = get(ts.target, -1)
        if c < 0 or c >= n:
            c = undeclared(ts.target, (3, i, 1), f"timeouts[{i}].to")
        w_dst.append(c)

    for k, (name, uses) in enumerate(sorted(unknown.items(), key=lambda item: min(item[1]))):
        places = [where for _, where in sorted(uses)]
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

    S = np.asarray(src + extra_src, dtype=np.int64)
    E = np.asarray(evt + extra_evt, dtype=np.int64)
    D = np.asarray(dst + extra_dst, dtype=np.int64)
    ORG = np.asarray(org + extra_org, dtype=np.int64)

    # -- nondeterminism and duplicates (transitions) ----------------------------
    if len(S):
        key = S * max(len(event_code), 1) + E
        order = np.lexsort((ORG, D, key))  # by key, target, declaration
        ks, ds = key[order], D[order]
        new_key = np.empty(len(ks), dtype=bool)
        new_key[0] = True
        np.not_equal(ks[1:], ks[:-1], out=new_key[1:])
        new_run = new_key.copy()
        new_run[1:] |= ds[1:] != ds[:-1]  # a new (key, target) run
        runs_per_key = np.add.reduceat(new_run.astype(np.int64), np.flatnonzero(new_key))
        key_starts = np.flatnonzero(new_key)
        key_ends = np.append(key_starts[1:], len(ks))
        for g in np.flatnonzero(runs_per_key > 1).tolist():
            lo, hi = int(key_starts[g]), int(key_ends[g])
            rows = order[lo:hi][new_run[lo:hi]]  # first row of each target
            rows = rows[np.argsort(ORG[rows], kind="stable")].tolist()  # declaration order
            s0 = names[int(S[rows[0]])]
            event = machine.events[int(E[rows[0]])]
            targets = [names[int(D[r])] for r in rows]
            detail = ", ".join(f"{names[int(D[r])]!r} (transitions[{int(ORG[r])}])" for r in rows)
            problems.append(
                Problem(
                    "nondeterministic",
                    (s0, *[t for t in targets if t != s0]),
                    f"state {s0!r} has transitions on event {event!r} to different states: "
                    f"{detail}; keep exactly one target per state and event",
                )
            )
        dup_rows = np.flatnonzero(~new_run)
        if len(dup_rows):
            run_first = np.maximum.accumulate(np.where(new_run, np.arange(len(ks)), 0))
            pairs: dict[tuple[int, int], list[str]] = {}
            for r, f in zip(
                order[dup_rows].tolist(), order[run_first[dup_rows]].tolist(), strict=True
            ):
                pairs.setdefault((int(ORG[f]), int(ORG[r])), []).append(names[int(S[r])])
            for (i, j), sources in sorted(pairs.items()):
                spec = specs[j]
                unique_sources = list(dict.fromkeys(sources))
                problems.append(
                    Problem(
                        "duplicate",
                        tuple(unique_sources),
                        f"transitions[{j}] repeats transitions[{i}] for {_q(unique_sources)} "
                        f"on {spec.event!r} -> {spec.target!r}; remove one of them",
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

    # -- graph over declared states, as CSR --------------------------------------
    WS = np.asarray(w_src, dtype=np.int64)
    WD = np.asarray(w_dst, dtype=np.int64)
    all_src = np.concatenate([S, WS])
    all_dst = np.concatenate([D, WD])
    has_out = np.zeros(n, dtype=bool)
    has_out[all_src[all_src < n]] = True
    moves = all_src != all_dst
    has_incoming = np.zeros(n, dtype=bool)
    has_incoming[all_dst[(all_dst < n) & moves]] = True
    inside = (all_src < n) & (all_dst < n)
    self_loop = np.zeros(n, dtype=bool)
    self_loop[all_src[inside & ~moves]] = True
    edge_keys = np.unique(all_src[inside] * n + all_dst[inside])  # sorted by source
    offsets = np.searchsorted(edge_keys // n, np.arange(n + 1)).tolist()
    targets_csr = (edge_keys % n).tolist()
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
    if root is not None and root < n:
        reached, components = strongly_connected_components(offsets, targets_csr, root, is_final)
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
            if not reaches and (len(nodes) > 1 or bool(self_loop[nodes[0]])):
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

        problems.extend(_timer_loops(machine, w_src, w_dst, reached))

    # -- warnings ---------------------------------------------------------------
    for name in machine.final:
        fc = code[name]
        if fc < n and not has_incoming[fc] and name != machine.initial:
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

    # Errors first, then by kind; stable, so declaration order within a kind.
    problems.sort(key=lambda p: (p.severity != "error", _KIND_ORDER[p.kind]))
    return ValidationReport(machine.name, problems)


def _timer_loops(
    machine: Machine, w_src: list[int], w_dst: list[int], reached: list[bool]
) -> list[Problem]:
    """One ``timer_loop`` problem per reachable cycle of timeouts alone.

    The cycles are the strongly connected components of the graph of timeouts
    (between declared states) that have more than one state or a timeout into
    itself. A virtual root ``n`` with an edge to every reachable state lets one
    Tarjan run cover them all, in time linear in states plus timeouts.
    """
    n = len(machine.states)
    # First declared timeout per (state, target), for the durations in messages.
    edges: dict[tuple[int, int], int] = {}
    for i, (a, b) in enumerate(zip(w_src, w_dst, strict=True)):
        if a < n and b < n:
            edges.setdefault((a, b), i)
    if not edges:
        return []
    root = n
    keys = sorted(edges) + [(root, v) for v in range(n) if reached[v]]
    sources = np.asarray([a for a, _ in keys], dtype=np.int64)
    offsets = np.searchsorted(sources, np.arange(n + 2)).tolist()
    targets = [b for _, b in keys]
    _, components = strongly_connected_components(offsets, targets, root, [False] * (n + 1))
    problems: list[Problem] = []
    loops = [
        sorted(nodes)
        for nodes, _ in components
        if nodes[0] != root and (len(nodes) > 1 or (nodes[0], nodes[0]) in edges)
    ]
    loops.sort(key=lambda nodes: nodes[0])
    out: dict[int, list[tuple[int, int]]] = {}  # state -> [(target, timeout index)]
    for (a, b), i in sorted(edges.items(), key=lambda item: item[1]):
        out.setdefault(a, []).append((b, i))
    for nodes in loops:
        problems.append(_timer_loop_problem(machine, nodes, out))
    return problems


def _timer_loop_problem(
    machine: Machine, nodes: list[int], out: dict[int, list[tuple[int, int]]]
) -> Problem:
    """The problem for one component ``nodes`` (sorted) of the timeout graph.

    ``out[state]`` lists ``(target, timeout index)`` in declaration order.
    """
    states = machine.states
    specs = machine._timeout_specs
    inside = set(nodes)
    # Each state's first declared timeout that stays in the component. With one
    # timeout per state (more is reported as nondeterministic) following them walks
    # the cycle in firing order.
    step = {a: next(e for e in out[a] if e[0] in inside) for a in nodes}
    order = [nodes[0]]
    v = step[nodes[0]][0]
    while v != nodes[0] and len(order) < len(nodes):
        order.append(v)
        v = step[v][0]
    ordered = v == nodes[0] and len(order) == len(nodes)
    if not ordered:
        order = nodes
    names = [states[c] for c in order]
    if len(names) == 1:
        spec = specs[step[order[0]][1]]
        what = f"state {names[0]!r} times out into itself after {spec.after_text}"
        rate = f"one timeout every {spec.after_text} of event time"
    else:
        cycle = " -> ".join(repr(s) for s in [*names, names[0]]) if ordered else _q(names)
        if ordered:
            period = sum((specs[step[c][1]].after for c in order), start=timedelta(0))
            parts = ", ".join(f"{states[c]!r} after {specs[step[c][1]].after_text}" for c in order)
            what = f"the timeouts {cycle} form a cycle ({parts})"
            rate = f"{len(names)} timeouts every {format_duration(period)} of event time"
        else:
            what = f"states {cycle} form a cycle of timeouts"
            rate = "timeouts around it"
    if machine.periodic:
        return Problem(
            "timer_loop",
            tuple(names),
            f"{what}, allowed because the machine is declared periodic: a key that "
            f"receives no events fires {rate} for as long as the log's time "
            f"advances",
            "warning",
        )
    return Problem(
        "timer_loop",
        tuple(names),
        f"{what} with no event in it: a key that receives no more events fires {rate} "
        f"forever, so the output grows with the log's time span, not "
        f"with its events; break the cycle (send one of its timeouts to a state without "
        f"a timeout, or replace one with an event transition), or, if the machine is "
        f"meant to be periodic (a heartbeat, a blinker), declare periodic=True (YAML: "
        f"periodic: true)",
    )


def max_timeouts_within(machine: Machine, span: timedelta | str) -> int:
    """The most timeouts one key can fire, with no event, whose times all lie within ``span``.

    A key fires a chain of timeouts ``t1 < t2 < ...`` (each at the previous one plus
    the next state's ``after``); this is the longest such chain with ``tn - t1 <=
    span``, over every starting state. Without timer loops it is at most the
    number of states whatever ``span`` is; with one it grows with ``span`` (a loop
    of k timeouts over a period P adds k per P). The timeouts a batch fires for one
    key all lie between the watermark before the batch (or the key's first event,
    if later events came first) and the watermark after it, so the span the
    batch's watermark moves over bounds the rows per key per batch.

    Uses each state's first declared timeout, as the kernel does for valid
    machines; takes time O(states x longest chain).

    Examples
    --------
    >>> from streamkit.machines import Machine
    >>> order = Machine("o", states=["new", "gone"], initial="new", final=["gone"],
    ...                 transitions=[("new", "x", "gone")], timeouts=[("new", "30m", "gone")])
    >>> max_timeouts_within(order, "365d")
    1
    >>> blink = Machine("b", states=["on", "off"], initial="on", final=["off"],
    ...                 timeouts=[("on", "1s", "off"), ("off", "2s", "on")], periodic=True)
    >>> max_timeouts_within(blink, "1m")  # 2 per 3 s, plus the first one
    41
    """
    budget0 = span if isinstance(span, timedelta) else to_timedelta(span)
    if budget0 < timedelta(0):
        raise ValueError(f"span must not be negative, found {span!r}")
    step: dict[str, tuple[timedelta, str]] = {}
    for t in machine.timeouts:
        step.setdefault(t.state, (t.after, t.target))
    best = 0
    walked: dict[str, int] = {}  # start of the chain after the first timeout -> its length
    for _, first_target in step.values():
        if first_target in walked:
            continue
        s, budget, fired = first_target, budget0, 0
        seen: dict[str, tuple[int, timedelta]] | None = {}
        while s in step and step[s][0] <= budget:
            if seen is not None:
                if s in seen:
                    # A timer loop: skip its whole rounds at once, then finish the last one.
                    n0, b0 = seen[s]
                    period, per_round = b0 - budget, fired - n0
                    rounds = budget // period
                    fired += rounds * per_round
                    budget -= rounds * period
                    seen = None
                    continue
                seen[s] = (fired, budget)
            after, s = step[s]
            budget -= after
            fired += 1
        walked[first_target] = fired
        best = max(best, 1 + fired)
    return best
