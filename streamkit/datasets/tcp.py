"""Real TCP traffic captured on a loopback interface, and a conntrack state machine.

:func:`load_tcp` returns a few thousand TCP segments that ``tcpdump`` captured on
``lo`` while local Python client and server processes opened and closed a few
hundred real connections: request/response exchanges closed by either side, RST
aborts by either side, half-closes, simultaneous closes, refused connections,
unanswered SYNs and long-lived idle and half-open connections. The raw capture and
the scripts that regenerate it live in ``datasets/tcp/`` of the repository.

:func:`tcp_machine` is a connection-tracking state machine in the spirit of Linux
``nf_conntrack`` and RFC 9293, as seen by a middlebox that observes both
directions; :func:`tcp_events` derives its events from the TCP flags of each
segment (it is how the shipped file was made and works on any capture with the
same raw columns).

States (``new`` is initial; ``closed`` and ``reset`` are final)::

    new ──syn──> syn_sent ──syn_ack──> syn_recv ──ack|data──> established
    established ──fin_c──> fin_wait_c ──ack──> close_wait_c ──fin_s──┐
    established ──fin_s──> fin_wait_s ──ack──> close_wait_s ──fin_c──┤
    fin_wait_c ──fin_s──> last_ack <──fin_c── fin_wait_s  <──────────┘
    last_ack ──ack──> time_wait ──(4s)──> closed
    syn_sent ──(10s)──> closed        any non-final state ──rst──> reset
    closed, reset, time_wait ──syn──> syn_sent   (the port pair is reused)

``fin_wait_c`` means the client (the side that sent the first SYN) has sent a FIN
the server has not yet acknowledged; ``close_wait_c`` that the FIN was acknowledged
and the server may still send data (a half-close). ``last_ack`` holds once both
sides have sent a FIN: after a server FIN that acknowledges the client's FIN (the
usual case) as well as in a simultaneous close, where both FINs cross. The next ACK
completes the close (``time_wait``). Data and ACKs inside a state are self-loops,
as are retransmitted SYNs, SYN-ACKs and FINs.

Timeouts are Linux's, shortened to fit a capture of a few seconds: TIME_WAIT
lasts 2 MSL, 120 s in ``nf_conntrack``, here ``4s``; an unanswered SYN is
forgotten after ``10s`` (``nf_conntrack``: 120 s). Established and half-closed
connections have no timeout (``nf_conntrack``: 5 days), so idle and half-open
connections are still open at the end of the capture.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Final, TypeVar

import polars as pl

if TYPE_CHECKING:
    from streamkit.machines import Machine

__all__ = [
    "EVENTS",
    "FINAL_STATES",
    "SCHEMA",
    "STATES",
    "load_tcp",
    "tcp_events",
    "tcp_machine",
]

#: Columns of :func:`load_tcp`, in order, with their types.
SCHEMA: Final[pl.Schema] = pl.Schema(
    {
        "conn": pl.String(),
        "ts": pl.Datetime("us"),
        "src": pl.String(),
        "dst": pl.String(),
        "direction": pl.String(),
        "flags": pl.String(),
        "seq": pl.UInt32(),
        "ack": pl.UInt32(),
        "length": pl.Int64(),
        "event": pl.String(),
    }
)

#: Events of :func:`tcp_machine`, as :func:`tcp_events` derives them.
EVENTS: Final[tuple[str, ...]] = ("syn", "syn_ack", "ack", "data", "fin_c", "fin_s", "rst")

#: States of :func:`tcp_machine`, in declaration order.
STATES: Final[tuple[str, ...]] = (
    "new",
    "syn_sent",
    "syn_recv",
    "established",
    "fin_wait_c",
    "fin_wait_s",
    "close_wait_c",
    "close_wait_s",
    "last_ack",
    "time_wait",
    "closed",
    "reset",
)

#: States a connection may rest in for good.
FINAL_STATES: Final[tuple[str, ...]] = ("closed", "reset")

_DATA_FILE: Final = "tcp_loopback.parquet"
# TCP flag names in the order :func:`tcp_events` writes them into ``flags``.
_FLAG_ORDER: Final[tuple[str, ...]] = ("SYN", "FIN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
_RAW_COLUMNS: Final[tuple[str, ...]] = ("ts", "src", "dst", "flags", "seq", "ack", "length")

_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)


def load_tcp() -> pl.DataFrame:
    """Load the captured loopback TCP segments, one row per segment, in capture order.

    Returns
    -------
    polars.DataFrame
        Columns (see :data:`SCHEMA`): ``conn`` (the connection id
        ``"ip:port-ip:port"`` with the lower endpoint first, the same for both
        directions), ``ts`` (capture time, ``Datetime("us")``), ``src`` and ``dst``
        (``"ip:port"``), ``direction`` (``"c2s"`` from the side that sent the first
        SYN, else ``"s2c"``), ``flags`` (e.g. ``"SYN"``, ``"SYN|ACK"``,
        ``"PSH|ACK"``, ``"FIN|ACK"``, ``"RST|ACK"``), ``seq`` and ``ack`` (raw
        32-bit sequence numbers), ``length`` (payload bytes) and ``event`` (one of
        :data:`EVENTS`, see :func:`tcp_events`). Sorted by ``ts``.

    Examples
    --------
    >>> from streamkit.datasets.tcp import load_tcp
    >>> df = load_tcp()
    >>> df.columns
    ['conn', 'ts', 'src', 'dst', 'direction', 'flags', 'seq', 'ack', 'length', 'event']
    >>> df["ts"].is_sorted()
    True
    >>> df.filter(pl.col("flags") == "SYN")["event"].unique().to_list()
    ['syn']
    """
    source = resources.files("streamkit.datasets").joinpath("data", _DATA_FILE)
    with resources.as_file(source) as path:
        return pl.read_parquet(path)


def tcp_events(packets: _Frame) -> _Frame:
    """Derive connection ids, directions and conntrack events from raw TCP segments.

    Parameters
    ----------
    packets
        A DataFrame or LazyFrame with one row per TCP segment in capture order and
        at least the columns ``ts``, ``src`` and ``dst`` (``"ip:port"`` strings),
        ``flags`` (flag names joined by ``"|"``, e.g. ``"SYN|ACK"``), ``seq``,
        ``ack`` and ``length`` (payload bytes).

    Returns
    -------
    polars.DataFrame or polars.LazyFrame
        The same kind of frame with the columns of :data:`SCHEMA`, sorted by
        ``ts`` (stable, so capture order breaks ties). ``conn`` names both
        endpoints, lower one first (IPv4 addresses and ports compared as numbers).
        ``direction`` is ``"c2s"`` for segments sent by the side that sent the
        connection's first SYN without ACK (the first sender if no SYN was
        captured). ``event`` is, by the first rule that matches:

        ==========  ==========================================================
        ``rst``     RST set (an abort, or a refused connection)
        ``syn_ack`` SYN and ACK set
        ``syn``     SYN set
        ``fin_c``   FIN set, sent by the client (``c2s``)
        ``fin_s``   FIN set, sent by the server (``s2c``)
        ``data``    payload bytes (``length > 0``)
        ``ack``     anything else: a bare ACK (including keep-alives)
        ==========  ==========================================================

    Raises
    ------
    polars.exceptions.ColumnNotFoundError
        If a required column is missing.

    Examples
    --------
    >>> import polars as pl
    >>> from datetime import datetime
    >>> from streamkit.datasets.tcp import tcp_events
    >>> c, s = "127.0.0.1:40000", "127.0.0.1:8080"
    >>> raw = pl.DataFrame(
    ...     {
    ...         "ts": [datetime(2024, 1, 1, 0, 0, 0, i) for i in range(5)],
    ...         "src": [c, s, c, c, s],
    ...         "dst": [s, c, s, s, c],
    ...         "flags": ["SYN", "SYN|ACK", "ACK", "PSH|ACK", "FIN|ACK"],
    ...         "seq": [100, 900, 101, 101, 901],
    ...         "ack": [0, 101, 901, 901, 111],
    ...         "length": [0, 0, 0, 10, 0],
    ...     }
    ... )
    >>> out = tcp_events(raw)
    >>> out["event"].to_list()
    ['syn', 'syn_ack', 'ack', 'data', 'fin_s']
    >>> out["direction"].to_list()
    ['c2s', 's2c', 'c2s', 'c2s', 's2c']
    >>> out["conn"][0]
    '127.0.0.1:8080-127.0.0.1:40000'
    """
    flags = pl.col("flags")
    syn, ack, fin, rst = (
        flags.str.contains(rf"\b{name}\b") for name in ("SYN", "ACK", "FIN", "RST")
    )
    src_key, dst_key = _endpoint_key(pl.col("src")), _endpoint_key(pl.col("dst"))
    conn = (
        pl.when(src_key <= dst_key)
        .then(pl.concat_str("src", pl.lit("-"), "dst"))
        .otherwise(pl.concat_str("dst", pl.lit("-"), "src"))
    )
    client = (
        pl.col("src")
        .filter(syn & ~ack)
        .first()
        .over("conn")
        .fill_null(pl.col("src").first().over("conn"))
    )
    direction = pl.when(pl.col("src") == client).then(pl.lit("c2s")).otherwise(pl.lit("s2c"))
    event = (
        pl.when(rst)
        .then(pl.lit("rst"))
        .when(syn & ack)
        .then(pl.lit("syn_ack"))
        .when(syn)
        .then(pl.lit("syn"))
        .when(fin & (pl.col("direction") == "c2s"))
        .then(pl.lit("fin_c"))
        .when(fin)
        .then(pl.lit("fin_s"))
        .when(pl.col("length") > 0)
        .then(pl.lit("data"))
        .otherwise(pl.lit("ack"))
    )
    return (
        packets.sort("ts", maintain_order=True)
        .with_columns(conn=conn)
        .with_columns(direction=direction)
        .with_columns(event=event)
        .select(pl.col(name).cast(dtype) for name, dtype in SCHEMA.items())
    )


def _endpoint_key(endpoint: pl.Expr) -> pl.Expr:
    """Sort key of an ``"a.b.c.d:port"`` endpoint: the address and port as one integer."""
    parts = endpoint.str.split_exact(":", 1)
    octets = parts.struct.field("field_0").str.split(".").list.eval(pl.element().cast(pl.UInt64))
    address = (
        octets.list.get(0) * 2**24
        + octets.list.get(1) * 2**16
        + octets.list.get(2) * 2**8
        + octets.list.get(3)
    )
    return address * 2**16 + parts.struct.field("field_1").cast(pl.UInt64)


def tcp_machine() -> Machine:
    """Return the connection-tracking state machine that :func:`load_tcp` replays.

    The states, events and timeouts are described in :mod:`streamkit.datasets.tcp`;
    ``examples/machines/tcp_conntrack.yaml`` in the repository is the same machine
    in YAML.

    Returns
    -------
    Machine
        A machine named ``"tcp_conntrack"`` that passes ``validate()``, with
        initial state ``new`` and final states ``closed`` and ``reset``.

    Examples
    --------
    >>> from streamkit.datasets.tcp import tcp_machine
    >>> m = tcp_machine()
    >>> m.validate().ok
    True
    >>> m.initial, sorted(m.final)
    ('new', ['closed', 'reset'])
    """
    from streamkit.machines import Machine

    open_states = [s for s in STATES if s not in FINAL_STATES]
    transitions: list[tuple[str | list[str], str, str]] = [
        # Opening handshake; retransmitted SYNs and SYN-ACKs are self-loops.
        (["new", "closed", "reset", "time_wait"], "syn", "syn_sent"),
        ("syn_sent", "syn", "syn_sent"),
        ("syn_sent", "syn_ack", "syn_recv"),
        ("syn_recv", "syn", "syn_recv"),
        ("syn_recv", "syn_ack", "syn_recv"),
        ("syn_recv", "ack", "established"),
        ("syn_recv", "data", "established"),
        ("syn_recv", "fin_c", "fin_wait_c"),
        # Data transfer.
        ("established", "ack", "established"),
        ("established", "data", "established"),
        # The first FIN, by either side.
        ("established", "fin_c", "fin_wait_c"),
        ("established", "fin_s", "fin_wait_s"),
        ("fin_wait_c", "fin_c", "fin_wait_c"),
        ("fin_wait_c", "data", "fin_wait_c"),
        ("fin_wait_c", "ack", "close_wait_c"),
        ("fin_wait_c", "fin_s", "last_ack"),
        ("fin_wait_s", "fin_s", "fin_wait_s"),
        ("fin_wait_s", "data", "fin_wait_s"),
        ("fin_wait_s", "ack", "close_wait_s"),
        ("fin_wait_s", "fin_c", "last_ack"),
        # Half-closed: the other side may still send data.
        ("close_wait_c", "ack", "close_wait_c"),
        ("close_wait_c", "data", "close_wait_c"),
        ("close_wait_c", "fin_c", "close_wait_c"),
        ("close_wait_c", "fin_s", "last_ack"),
        ("close_wait_s", "ack", "close_wait_s"),
        ("close_wait_s", "data", "close_wait_s"),
        ("close_wait_s", "fin_s", "close_wait_s"),
        ("close_wait_s", "fin_c", "last_ack"),
        # Both FINs seen: the next ACK ends it; retransmitted FINs are self-loops.
        ("last_ack", "fin_c", "last_ack"),
        ("last_ack", "fin_s", "last_ack"),
        ("last_ack", "ack", "time_wait"),
        ("time_wait", "ack", "time_wait"),
        ("time_wait", "fin_c", "time_wait"),
        ("time_wait", "fin_s", "time_wait"),
        # Aborts, and RSTs answering segments of an aborted connection.
        ([*open_states, "reset"], "rst", "reset"),
    ]
    return Machine(
        "tcp_conntrack",
        states=list(STATES),
        initial="new",
        final=list(FINAL_STATES),
        transitions=transitions,
        timeouts=[("syn_sent", "10s", "closed"), ("time_wait", "4s", "closed")],
    )
