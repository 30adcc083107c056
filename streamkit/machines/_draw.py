"""State diagrams with matplotlib only: a layered layout and the drawing.

``layout`` places states in BFS layers from the initial state, left to right, and
orders each layer by the barycentre of its neighbours in the adjacent layers (a
few down and up sweeps) to reduce crossings; final states many states lead to go
in a row below. Edge labels are placed where they cover nothing, then measured as
drawn and moved along their edge if they still overlap. ``draw_machine`` draws on a given
Axes and is shared by :meth:`Machine.plot` and ``sk.plot.process_map``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from streamkit.machines._duration import format_duration

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    from streamkit.machines.machine import Machine

__all__ = ["draw_machine", "figure_size", "layout", "new_axes"]

X_GAP = 2.5  # data units between layers (widened by draw_machine for long labels)
Y_GAP = 1.9  # data units between states of a layer
RADIUS = 0.55
INCH_PER_UNIT = 0.85  # figure_size scale: keeps 8-point names inside the circles
_CHAR = 0.085  # width of one 8-point edge-label character in data units at that scale
_LINE = 0.2  # height of one 8-point line of text in data units at that scale
_SWEEPS = 4
_HUB = 4  # a final state with at least this many predecessors is drawn below the layers

_NODE_FACE = "#e3f2fd"
_NODE_EDGE = "#1565c0"
_BAD_FACE = "#ffebee"
_BAD_EDGE = "#c62828"
_EDGE = "#37474f"
_TIMEOUT = "#6d4c41"
_EXTRA = "#ef6c00"
_FONT = 8


def _nodes_and_edges(machine: Machine) -> tuple[list[str], list[tuple[str, str]]]:
    """Declared states then undeclared ones the transitions/timeouts name; directed edges."""
    nodes: dict[str, None] = dict.fromkeys(machine.states)
    edges: list[tuple[str, str]] = [(t.source, t.target) for t in machine.transitions]
    edges.extend((t.state, t.target) for t in machine.timeouts)
    for u, v in edges:
        nodes.setdefault(u)
        nodes.setdefault(v)
    return list(nodes), edges


def layout(machine: Machine) -> dict[str, tuple[float, float]]:
    """Positions ``{state: (x, y)}`` for drawing ``machine``, in data units.

    Layers are BFS distances from the initial state (x grows left to right);
    states not reachable from it follow in further layers. Final states that at
    least four states lead to (hubs such as ``reset``) go in a row below the
    layers, each under the mean column of the states leading to it. Undeclared states that
    transitions or timeouts name are placed too, so they can be drawn as problems.

    Examples
    --------
    >>> from streamkit.machines import Machine
    >>> m = Machine("m", states=["a", "b", "c"], initial="a", final=["c"],
    ...             transitions=[("a", "x", "b"), ("b", "y", "c")])
    >>> {s: x for s, (x, _) in layout(m).items()}
    {'a': 0.0, 'b': 2.5, 'c': 5.0}
    """
    nodes, edges = _nodes_and_edges(machine)
    succ: dict[str, list[str]] = {v: [] for v in nodes}
    neighbours: dict[str, set[str]] = {v: set() for v in nodes}
    for u, v in edges:
        if u != v:
            succ[u].append(v)
            neighbours[u].add(v)
            neighbours[v].add(u)

    # Hubs (final states that many states lead to, such as "reset" or "closed")
    # go in a row of their own below the layers: in a layer their edges from
    # everywhere would cross the whole diagram.
    preds: dict[str, set[str]] = {v: set() for v in nodes}
    for u, v in edges:
        if u != v:
            preds[v].add(u)
    finals = set(machine.final)
    hubs = [v for v in nodes if v in finals and len(preds[v]) >= _HUB and v != machine.initial]
    if len(hubs) == len(nodes):
        hubs = []
    for v in hubs:
        for u in nodes:
            succ[u] = [w for w in succ[u] if w != v]
            neighbours[u].discard(v)
        neighbours[v] = set()

    layer_of: dict[str, int] = {}
    layers: list[list[str]] = []

    def bfs(start: str, base: int) -> None:
        layer_of[start] = base
        queue = deque([start])
        while queue:
            u = queue.popleft()
            while len(layers) <= layer_of[u]:
                layers.append([])
            layers[layer_of[u]].append(u)
            for v in succ[u]:
                if v not in layer_of:
                    layer_of[v] = layer_of[u] + 1
                    queue.append(v)

    if machine.initial in succ:
        bfs(machine.initial, 0)
    for v in nodes:
        if v not in layer_of and v not in hubs:
            bfs(v, len(layers))

    index = {v: i for layer in layers for i, v in enumerate(layer)}
    for _ in range(_SWEEPS):
        order = list(range(1, len(layers))) + list(range(len(layers) - 2, -1, -1))
        for step, li in enumerate(order):
            ref = li - 1 if step < len(layers) - 1 else li + 1
            keys: dict[str, float] = {}
            for v in layers[li]:
                near = [index[w] for w in neighbours[v] if layer_of[w] == ref]
                keys[v] = sum(near) / len(near) if near else float(index[v])
            layers[li].sort(key=lambda v: (keys[v], index[v]))
            for i, v in enumerate(layers[li]):
                index[v] = i

    positions: dict[str, tuple[float, float]] = {}
    for li, layer in enumerate(layers):
        middle = (len(layer) - 1) / 2
        for i, v in enumerate(layer):
            positions[v] = (li * X_GAP, (middle - i) * Y_GAP)
    if hubs:
        bottom = min(y for _, y in positions.values()) - 1.3 * Y_GAP
        wanted = sorted(
            (round(sum(positions[u][0] for u in preds[v]) / len(preds[v]) / X_GAP), v) for v in hubs
        )
        column = -1
        for want, v in wanted:
            column = max(want, column + 1)
            positions[v] = (column * X_GAP, bottom)
    return {v: positions[v] for v in nodes}


def figure_size(machine: Machine, **options: Any) -> tuple[float, float]:
    """A figure size in inches that keeps state names and edge labels legible.

    ``options`` are those of :func:`draw_machine` (labels change the extent). The
    size is rounded up, so text keeps (at least) its nominal 8-point size.

    Examples
    --------
    >>> from streamkit.machines import Machine
    >>> figure_size(Machine("m", states=["a"], initial="a", final=["a"]))
    (4.0, 3.0)
    """
    from matplotlib.figure import Figure

    # Draw once on a throwaway figure to learn the extent (labels, loops, marker).
    ax = draw_machine(machine, Figure().add_subplot(), **options)
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    width = (x1 - x0) * INCH_PER_UNIT / 0.98 + 0.1
    height = (y1 - y0) * INCH_PER_UNIT / 0.92 + 0.1
    return (
        float(min(max(math.ceil(width * 10) / 10, 4.0), 40.0)),
        float(min(max(math.ceil(height * 10) / 10, 3.0), 40.0)),
    )


def _stretch(
    pos: dict[str, tuple[float, float]], labels: Iterable[tuple[tuple[str, str], str]]
) -> dict[str, tuple[float, float]]:
    """Widen the gap between layers so the longest label between neighbours fits."""
    need = X_GAP
    for (u, v), text in labels:
        if u in pos and v in pos and abs(pos[u][0] - pos[v][0]) > X_GAP / 2:
            need = max(need, 2 * RADIUS + 0.4 + _CHAR * _columns(text))
    factor = need / X_GAP
    return {v: (x * factor, y) for v, (x, y) in pos.items()}


def new_axes(machine: Machine, **options: Any) -> Axes:
    """A fresh pyplot figure sized for ``machine`` drawn with ``options``; returns its Axes."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figure_size(machine, **options))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93)
    return ax


def _columns(text: str) -> int:
    """Characters in the longest line of ``text``."""
    return max(len(line) for line in text.split("\n"))


def _wrap(name: str, width: int = 10) -> str:
    if len(name) <= width:
        return name
    cuts = [i for i, ch in enumerate(name) if ch in " -_/"]
    if not cuts:
        return name
    cut = min(cuts, key=lambda i: abs(i - len(name) / 2))
    keep = name[cut] if name[cut] in "-/" else ""
    return name[:cut].rstrip() + keep + "\n" + name[cut + 1 :].lstrip()


class _Bounds:
    def __init__(self) -> None:
        self.x0 = self.y0 = math.inf
        self.x1 = self.y1 = -math.inf

    def add(self, x: float, y: float, pad: float = 0.0) -> None:
        self.x0 = min(self.x0, x - pad)
        self.x1 = max(self.x1, x + pad)
        self.y0 = min(self.y0, y - pad)
        self.y1 = max(self.y1, y + pad)


def draw_machine(
    machine: Machine,
    ax: Axes,
    *,
    edge_labels: Mapping[tuple[str, str], str] | None = None,
    edge_widths: Mapping[tuple[str, str], float] | None = None,
    extra_edges: Mapping[tuple[str, str], str] | None = None,
    state_labels: Mapping[str, str] | None = None,
    highlight: Iterable[str] = (),
    merge_parallel: bool = False,
) -> Axes:
    """Draw ``machine``'s state diagram on ``ax`` and return ``ax``.

    One curved, labelled edge per ordered pair of states (events joined by ", "),
    self-loops as small loops above the state, timeouts as dashed edges labelled
    with their duration, final states as double circles, the initial state marked
    by an arrow from a dot. Undeclared states named by transitions are dashed red.

    Parameters
    ----------
    machine
        The machine to draw.
    ax
        The Axes to draw on (its aspect is set to equal and its axis turned off).
    edge_labels
        Labels replacing the default for the listed ``(from, to)`` pairs: the
        transition edge of the pair, or its timeout edge when it has none.
    edge_widths
        Line widths for the listed ``(from, to)`` pairs (all their edges).
    extra_edges
        Additional edges, e.g. seen in data but not declared, ``(from, to) ->
        label``, drawn dotted in orange; states they name that the machine lacks
        are added in an extra column on the right.
    state_labels
        A second line under the names of the listed states.
    highlight
        States drawn in red (problems).
    merge_parallel
        Draw a pair with both transitions and a timeout as one solid edge whose
        label lists both (``"cancel, timeout 30m"``), instead of a solid and a
        dashed edge with two labels.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from matplotlib.figure import Figure
    >>> from streamkit.machines import Machine
    >>> m = Machine("m", states=["a", "b"], initial="a", final=["b"],
    ...             transitions=[("a", "go", "b")])
    >>> ax = draw_machine(m, Figure().add_subplot(), edge_labels={("a", "b"): "go (12)"},
    ...                   extra_edges={("b", "a"): "back (3)"}, state_labels={"b": "n=12"})
    >>> sorted(t.get_text() for t in ax.texts)
    ['a', 'b\\nn=12', 'back (3)', 'go (12)']
    """
    from matplotlib.patches import Circle, FancyArrowPatch
    from matplotlib.path import Path

    edge_labels = edge_labels or {}
    edge_widths = edge_widths or {}
    extra_edges = extra_edges or {}
    state_labels = state_labels or {}
    bad = set(highlight)
    declared = set(machine.states)

    events: dict[tuple[str, str], list[str]] = {}
    for t in machine.transitions:
        names = events.setdefault((t.source, t.target), [])
        if t.event not in names:
            names.append(t.event)
    waits: dict[tuple[str, str], list[str]] = {}
    for tt in machine.timeouts:
        waits.setdefault((tt.state, tt.target), []).append(f"timeout {format_duration(tt.after)}")
    if merge_parallel:
        for pair in set(events) & set(waits):
            events[pair] = events[pair] + waits.pop(pair)
    labels: dict[tuple[str, str], str] = {}
    for pair, names in events.items():
        labels[pair] = edge_labels.get(pair, ", ".join(names))
    for pair, names in waits.items():
        text = ", ".join(names)
        if pair not in events:
            text = edge_labels.get(pair, text)
        labels[pair] = max(labels.get(pair, ""), text, key=len)
    pairs = set(events) | set(waits) | set(extra_edges)

    base = layout(machine)
    layer = {v: round(x / X_GAP) for v, (x, _) in base.items()}
    extra_nodes = list(dict.fromkeys(v for pair in extra_edges for v in pair if v not in base))
    for v in extra_nodes:
        # A state seen only in data goes one layer after the state it comes from (or
        # before the state it leads to), below the states already there.
        u, w = next(pair for pair in extra_edges if v in pair)
        other = u if w == v else w
        if other in layer:
            column = layer[other] + 1 if w == v else max(layer[other] - 1, 0)
        else:
            column = max(layer.values()) + 1
        ys = [y for s, (_, y) in base.items() if layer[s] == column]
        base[v] = (column * X_GAP, min(ys) - Y_GAP if ys else 0.0)
        layer[v] = column
    pos = _stretch(base, [*labels.items(), *extra_edges.items()])

    bounds = _Bounds()
    for x, y in pos.values():
        bounds.add(x, y, RADIUS)

    placed: list[tuple[float, float, float, float]] = []  # label boxes: x0, y0, x1, y1

    def box(x: float, y: float, text: str, ha: str) -> tuple[float, float, float, float]:
        width = _CHAR * _columns(text) + 0.1
        half = (_LINE * (text.count("\n") + 1) + 0.08) / 2
        x0 = {"center": x - width / 2, "left": x, "right": x - width}[ha]
        return (x0, y - half, x0 + width, y + half)

    def free(x: float, y: float, text: str, ha: str) -> bool:
        b = box(x, y, text, ha)
        for x0, y0, x1, y1 in placed:
            if b[0] < x1 and x0 < b[2] and b[1] < y1 and y0 < b[3]:
                return False
        for nx, ny in pos.values():
            near_x = min(max(nx, b[0]), b[2])
            near_y = min(max(ny, b[1]), b[3])
            if math.hypot(nx - near_x, ny - near_y) < RADIUS:
                return False
        return True

    # Each label with the other points it may move to if, once drawn, it overlaps.
    movable: list[tuple[Text, list[tuple[float, float]]]] = []

    def label_at(
        x: float,
        y: float,
        text: str,
        colour: str,
        ha: str = "center",
        others: Sequence[tuple[float, float]] = (),
    ) -> None:
        b = box(x, y, text, ha)
        placed.append(b)
        artist = ax.text(
            x,
            y,
            text,
            fontsize=_FONT,
            color=colour,
            ha=ha,
            va="center",
            multialignment="center",
            zorder=5,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
        movable.append((artist, [(x, y), *(o for o in others if o != (x, y))]))
        bounds.add(b[0], b[1], 0.1)
        bounds.add(b[2], b[3], 0.1)

    def edge(
        u: str, v: str, label: str, colour: str, style: str, *, rad: float, below: bool
    ) -> None:
        width = edge_widths.get((u, v), 1.2)
        ux, uy = pos[u]
        others: list[tuple[float, float]] = []
        if u == v:
            sign = -1.0 if below else 1.0
            a, b = math.radians(115), math.radians(65)
            start = (ux + RADIUS * math.cos(a), uy + sign * RADIUS * math.sin(a))
            end = (ux + RADIUS * math.cos(b), uy + sign * RADIUS * math.sin(b))
            c1 = (ux - 0.95 * RADIUS, uy + sign * 2.3 * RADIUS)
            c2 = (ux + 0.95 * RADIUS, uy + sign * 2.3 * RADIUS)
            path = Path([start, c1, c2, end], [Path.MOVETO, Path.CURVE4, Path.CURVE4, Path.CURVE4])
            top = (ux, uy + sign * 2.05 * RADIUS)
            others = [top, (ux, uy + sign * 2.5 * RADIUS)]
            ha = "center"
            bounds.add(top[0], top[1], 0.35)
        else:
            vx, vy = pos[v]
            dx, dy = vx - ux, vy - uy
            cx, cy = (ux + vx) / 2 + rad * dy, (uy + vy) / 2 - rad * dx
            su, sv = math.hypot(cx - ux, cy - uy), math.hypot(cx - vx, cy - vy)
            start = (ux + RADIUS * (cx - ux) / su, uy + RADIUS * (cy - uy) / su)
            end = (vx + RADIUS * (cx - vx) / sv, vy + RADIUS * (cy - vy) / sv)
            path = Path([start, (cx, cy), end], [Path.MOVETO, Path.CURVE3, Path.CURVE3])
            # The label sits at the middle of the curve unless it would cover another
            # label or a state there; then at the first free point nearer an end.
            # Edges within a layer run vertically: their labels go beside the curve,
            # on the side it bulges to, so long labels do not cover the layer.
            ha, shift = "center", 0.0
            if abs(dx) < 1e-9:
                ha, shift = ("left", 0.08) if cx > ux else ("right", -0.08)
            top = (0.0, 0.0)
            for t in (0.5, 0.38, 0.62, 0.28, 0.72, 0.2, 0.8, 0.5):
                a0, a1, a2 = (1 - t) ** 2, 2 * (1 - t) * t, t * t
                point = (
                    a0 * start[0] + a1 * cx + a2 * end[0] + shift,
                    a0 * start[1] + a1 * cy + a2 * end[1],
                )
                others.append(point)
                if top == (0.0, 0.0) and free(point[0], point[1], label, ha):
                    top = point
            if top == (0.0, 0.0):
                top = others[0]
            # Last resorts: just above or below the curve.
            others += [(x, y + d) for d in (0.3, -0.3) for x, y in others[:5]]
        ax.add_patch(
            FancyArrowPatch(
                path=path,
                arrowstyle="-|>",
                mutation_scale=9 + 2 * width,
                color=colour,
                linewidth=width,
                linestyle=style,
                zorder=2,
            )
        )
        label_at(top[0], top[1], label, colour, ha, others)

    def curvature(u: str, v: str, kind_rank: int) -> float:
        straight = abs(layer[u] - layer[v]) == 1 and (v, u) not in pairs
        if kind_rank == 0:
            return 0.0 if straight else 0.22
        return 0.22 * (kind_rank + (0 if straight else 1))

    for u, v in sorted(pairs, key=lambda p: (pos[p[0]], pos[p[1]])):
        rank = 0
        if (u, v) in events:
            text = edge_labels.get((u, v), ", ".join(events[(u, v)]))
            edge(u, v, text, _EDGE, "-", rad=curvature(u, v, rank), below=False)
            rank += 1
        if (u, v) in waits:
            text = ", ".join(waits[(u, v)])
            if (u, v) not in events:
                text = edge_labels.get((u, v), text)
            edge(u, v, text, _TIMEOUT, "--", rad=curvature(u, v, rank), below=True)
            rank += 1
        if (u, v) in extra_edges:
            edge(u, v, extra_edges[(u, v)], _EXTRA, ":", rad=curvature(u, v, rank), below=rank == 1)

    finals = set(machine.final)
    for v, (x, y) in pos.items():
        if v in bad:
            face, line = _BAD_FACE, _BAD_EDGE
        elif v in extra_nodes:
            face, line = "white", _EXTRA
        elif v not in declared:
            face, line = _BAD_FACE, _BAD_EDGE
        else:
            face, line = _NODE_FACE, _NODE_EDGE
        style = "-" if v in declared else "--"
        ax.add_patch(Circle((x, y), RADIUS, fc=face, ec=line, lw=1.4, ls=style, zorder=3))
        if v in finals:
            ax.add_patch(Circle((x, y), RADIUS * 0.82, fc="none", ec=line, lw=1.2, zorder=3))
        text = _wrap(v)
        if v in state_labels:
            text += "\n" + state_labels[v]
        ax.text(x, y, text, fontsize=_FONT, ha="center", va="center", zorder=4, color="#0d1b2a")

    if machine.initial in pos:
        x, y = pos[machine.initial]
        dot = (x - RADIUS - 0.7, y)
        ax.add_patch(Circle(dot, 0.08, fc="black", ec="black", zorder=3))
        ax.add_patch(
            FancyArrowPatch(
                (dot[0] + 0.08, y),
                (x - RADIUS, y),
                arrowstyle="-|>",
                mutation_scale=11,
                color="black",
                lw=1.2,
                shrinkA=0,
                shrinkB=0,
                zorder=2,
            )
        )
        bounds.add(dot[0], y, 0.2)

    margin = 0.25
    ax.set_xlim(bounds.x0 - margin, bounds.x1 + margin)
    ax.set_ylim(bounds.y0 - margin, bounds.y1 + margin)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(machine.name)
    # Font sizes are in points, the drawing in data units: scale the text to the
    # inches one data unit gets on this Axes, so small Axes do not get overlaps.
    frame = ax.get_window_extent()  # pixels; the equal aspect shrinks one side later
    root = ax.get_figure(root=True)
    dpi = float(root.dpi) if root is not None else 100.0
    per_unit = min(
        frame.width / dpi / (bounds.x1 - bounds.x0 + 2 * margin),
        frame.height / dpi / (bounds.y1 - bounds.y0 + 2 * margin),
    )
    factor = min(max(per_unit / INCH_PER_UNIT, 0.35), 1.3)
    if factor >= 0.85:  # a little short of room: keep 8 points, labels are separated below
        factor = max(factor, 1.0)
    for label in ax.texts:
        label.set_fontsize(float(label.get_fontsize()) * factor)
    _separate(ax, movable)
    return ax


def _separate(ax: Axes, movable: Sequence[tuple[Text, Sequence[tuple[float, float]]]]) -> None:
    """Move edge labels that overlap (as drawn) to their first free alternative point.

    The placement while drawing estimates text sizes; this pass measures the drawn
    text (with the figure's renderer, or an Agg one for a bare ``Figure``) and
    tries each label's other points along its edge, keeping the one that overlaps
    the fewest other labels and state texts and circles.
    """
    from matplotlib.patches import Circle

    root = ax.get_figure(root=True)
    if root is None or not movable:
        return
    get_renderer = getattr(root.canvas, "get_renderer", None)
    if get_renderer is not None:
        renderer = get_renderer()
    else:  # a bare Figure (no pyplot, no canvas yet): measure as Agg will draw it
        from matplotlib.backends.backend_agg import RendererAgg

        width, height = root.get_size_inches() * root.dpi
        renderer = RendererAgg(int(width), int(height), root.dpi)  # type: ignore[no-untyped-call]
    labels = {id(artist) for artist, _ in movable}
    fixed = [t.get_window_extent(renderer) for t in ax.texts if id(t) not in labels]
    fixed += [p.get_window_extent(renderer) for p in ax.patches if isinstance(p, Circle)]
    done: list[Bbox] = []
    for artist, points in movable:
        best: tuple[int, int] | None = None
        choice = points[0]
        for i, point in enumerate(points):
            artist.set_position(point)
            extent = artist.get_window_extent(renderer).padded(2.0)
            hits = sum(extent.overlaps(other) for other in done + fixed)
            if best is None or (hits, i) < best:
                best, choice = (hits, i), point
            if hits == 0:
                break
        artist.set_position(choice)
        done.append(artist.get_window_extent(renderer))
