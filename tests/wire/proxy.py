"""A fault-injecting HTTP/1.1 proxy for tests: s3fs -> FaultProxy -> SeaweedFS.

Faults apply per HTTP request, on the wire, so they pass through the whole client
stack (aiohttp, aiobotocore's retries, s3fs's retry loop) exactly as a real
network's would. Each request is read in full (head and body: ``Content-Length``
or ``chunked``; ``aws-chunked`` bodies carry a ``Content-Length``), then one of:

``lost_response``
    forward it, let the server apply it, read the whole response, then close the
    client connection without sending it (the client sees a dropped connection);
``reset``
    reset the client connection (RST) before forwarding anything;
``slow_down``
    answer ``503 Slow Down`` with an S3 XML error body, without forwarding;
``delay``
    sleep a little, then forward normally;
no fault
    forward, send the response back, keep the client connection alive.

Random faults draw from one seeded :class:`random.Random` per proxy, once per
eligible request, so the same request sequence meets the same faults.
:meth:`FaultProxy.fault_next` injects a fault deterministically into the next
requests that match a method and a path pattern. Each client connection is served
by its own thread and each request opens its own upstream connection.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

__all__ = ["KINDS", "FaultProxy", "Record"]

KINDS = ("lost_response", "reset", "slow_down", "delay")
_HOST = "127.0.0.1"
_MAX_LINE = 65536


@dataclass(frozen=True)
class Record:
    """One request the proxy saw: its client connection, what it was, what it met."""

    conn: int
    method: str
    path: str
    fault: str | None
    status: int | None  # the server's status (None when not forwarded)


@dataclass
class _Target:
    kind: str
    left: int
    method: str | None
    path: re.Pattern[str] | None
    hit: set[str] | None  # paths hit already, when each path is hit once

    def take(self, method: str, path: str) -> bool:
        """Whether this request gets the fault (counted when it does)."""
        if self.left <= 0 or (self.method is not None and self.method != method):
            return False
        if self.path is not None and self.path.search(path) is None:
            return False
        if self.hit is not None:
            if path in self.hit:
                return False
            self.hit.add(path)
        self.left -= 1
        return True


@dataclass
class _Request:
    method: str
    path: str  # decoded, without the query
    lines: list[bytes]  # request line and header lines, CRLF stripped
    body: bytes

    def wire(self) -> bytes:
        kept = [ln for ln in self.lines if not ln.lower().startswith(b"expect:")]
        return b"\r\n".join(kept) + b"\r\n\r\n" + self.body


class FaultProxy:
    """A threaded TCP proxy on 127.0.0.1 that injects faults per HTTP request.

    Parameters
    ----------
    upstream : str
        ``http://host:port`` of the server (SeaweedFS's S3 endpoint).
    seed : int
        Seed of the random fault choices (and delays).
    rates : mapping, optional
        Probability of each fault kind per eligible request, e.g.
        ``{"lost_response": 0.05, "reset": 0.05}``; the rates must sum to at most 1.
    methods : iterable of str, optional
        Only requests with these methods are eligible for random faults
        (default: every method).
    delay : (float, float)
        Bounds of the uniform sleep of a ``delay`` fault, in seconds.

    Examples
    --------
    ``with FaultProxy(endpoint, seed=1, rates={"reset": 0.1}) as proxy:`` then point
    s3fs's ``client_kwargs["endpoint_url"]`` at ``proxy.url``; ``proxy.counts()``
    tells what happened.
    """

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        rates: Mapping[str, float] | None = None,
        methods: Iterable[str] | None = None,
        delay: tuple[float, float] = (0.01, 0.2),
    ) -> None:
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must look like http://host:port, found {upstream!r}")
        self._upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._delay = delay
        self._rates: dict[str, float] = {}
        self._methods: frozenset[str] | None = None
        self.enabled = True
        self.set_rates(rates or {}, methods=methods)
        self._targets: list[_Target] = []
        self._counts: Counter[str] = Counter()
        self._records: list[Record] = []
        self._conn_ids = itertools.count(1)
        self._clients: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    # ------------------------------------------------------------ control
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` to give the client as its endpoint."""
        if self._listener is None:
            raise RuntimeError("the proxy is not running; use it as a context manager")
        return f"http://{_HOST}:{self._listener.getsockname()[1]}"

    def set_rates(
        self, rates: Mapping[str, float], *, methods: Iterable[str] | None = None
    ) -> None:
        """Replace the random fault rates (and the eligible methods) at runtime."""
        unknown = set(rates) - set(KINDS)
        if unknown or any(r < 0 for r in rates.values()) or sum(rates.values()) > 1:
            raise ValueError(f"rates must map kinds of {KINDS} to >= 0, sum <= 1: {rates}")
        with self._lock:
            self._rates = {k: float(rates[k]) for k in KINDS if rates.get(k)}
            self._methods = None if methods is None else frozenset(m.upper() for m in methods)

    def fault_next(
        self,
        kind: str,
        n: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        once_per_path: bool = False,
    ) -> None:
        """Give the next ``n`` requests matching ``method`` and the regular expression
        ``path`` (searched in the decoded URL path) the fault ``kind``, whatever the
        rates. With ``once_per_path`` a path meets it at most once: re-sent requests
        to the same path pass."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {KINDS}")
        pattern = None if path is None else re.compile(path)
        target = _Target(
            kind, n, method and method.upper(), pattern, set() if once_per_path else None
        )
        with self._lock:
            self._targets.append(target)

    def cancel(self) -> None:
        """Drop the targeted faults of :meth:`fault_next` that have not happened yet."""
        with self._lock:
            self._targets = []

    def pending(self) -> int:
        """How many targeted faults of :meth:`fault_next` have not happened yet."""
        with self._lock:
            return sum(t.left for t in self._targets)

    def counts(self) -> dict[str, int]:
        """``requests`` seen and the faults injected, by kind (a snapshot)."""
        with self._lock:
            return {"requests": self._counts["requests"], **{k: self._counts[k] for k in KINDS}}

    def records(self) -> list[Record]:
        """Every request seen so far, in arrival order."""
        with self._lock:
            return list(self._records)

    # ----------------------------------------------------------- lifecycle
    def start(self) -> FaultProxy:
        listener = socket.create_server((_HOST, 0))
        listener.settimeout(0.2)
        self._listener = listener
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            clients = list(self._clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes its thread
        for thread in list(self._threads):
            thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="fault-proxy")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self._clients.add(client)
            self._spawn(self._serve, client, next(self._conn_ids))

    # -------------------------------------------------------------- serving
    def _choose(self, req: _Request) -> tuple[str | None, float]:
        """The fault for ``req`` (None: none) and, for a delay, how long to sleep."""
        with self._lock:
            self._counts["requests"] += 1
            kind = None
            for target in self._targets:
                if target.take(req.method, req.path):
                    kind = target.kind
                    break
            self._targets = [t for t in self._targets if t.left > 0]
            eligible = self._methods is None or req.method in self._methods
            if kind is None and self.enabled and self._rates and eligible:
                draw = self._rng.random()
                for name, rate in self._rates.items():
                    if draw < rate:
                        kind = name
                        break
                    draw -= rate
            if kind is not None:
                self._counts[kind] += 1
            pause = self._rng.uniform(*self._delay) if kind == "delay" else 0.0
            return kind, pause

    def _note(self, conn: int, req: _Request, kind: str | None, status: int | None) -> None:
        with self._lock:
            self._records.append(Record(conn, req.method, req.path, kind, status))

    def _serve(self, client: socket.socket, conn: int) -> None:
        rfile = client.makefile("rb")
        try:
            while not self._stopped.is_set():
                req = _read_request(rfile, client)
                if req is None:
                    return
                kind, pause = self._choose(req)
                if kind == "reset":
                    self._note(conn, req, kind, None)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if kind == "slow_down":
                    self._note(conn, req, kind, None)
                    client.sendall(_slow_down(req))
                    continue
                time.sleep(pause)
                status, response, close = self._forward(req)
                self._note(conn, req, kind, status)
                if kind == "lost_response":
                    return
                client.sendall(response)
                if close:
                    return
        except (OSError, ValueError):
            return  # the client went away, or the proxy is stopping
        finally:
            with self._lock:
                self._clients.discard(client)
            rfile.close()
            client.close()

    def _forward(self, req: _Request) -> tuple[int, bytes, bool]:
        with socket.create_connection(self._upstream, timeout=60) as upstream:
            upstream.sendall(req.wire())
            with upstream.makefile("rb") as rfile:
                return _read_response(rfile, req.method)


# ------------------------------------------------------------------ HTTP/1.1
def _read_head(rfile: BinaryIO) -> list[bytes] | None:
    """Request/status line and header lines; None on a clean end of stream."""
    lines: list[bytes] = []
    while True:
        line = rfile.readline(_MAX_LINE)
        if not line:
            if lines:
                raise ValueError("connection closed inside a message head")
            return None
        line = line.rstrip(b"\r\n")
        if not line:
            if lines:
                return lines
            continue  # stray CRLF between messages
        lines.append(line)


def _parse_headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _read_exact(rfile: BinaryIO, n: int) -> bytes:
    data = rfile.read(n)
    if len(data) != n:
        raise ValueError(f"connection closed after {len(data)} of {n} body bytes")
    return data


def _read_body(rfile: BinaryIO, headers: dict[str, str]) -> bytes | None:
    """The raw body (chunked framing kept); None when it runs to the end of stream."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = bytearray()
        while True:
            size_line = rfile.readline(_MAX_LINE)
            raw += size_line
            size = int(size_line.split(b";")[0].strip() or b"x", 16)
            if size == 0:
                while (trailer := rfile.readline(_MAX_LINE)) not in (b"\r\n", b"\n", b""):
                    raw += trailer
                return bytes(raw + b"\r\n")
            raw += _read_exact(rfile, size + 2)
    if "content-length" in headers:
        return _read_exact(rfile, int(headers["content-length"]))
    return None


def _read_request(rfile: BinaryIO, client: socket.socket) -> _Request | None:
    lines = _read_head(rfile)
    if lines is None:
        return None
    method, target, _version = lines[0].decode("latin-1").split(" ", 2)
    headers = _parse_headers(lines)
    if headers.get("expect", "").lower() == "100-continue":
        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # the server never sees Expect
    body = _read_body(rfile, headers) or b""
    return _Request(method.upper(), unquote(urlsplit(target).path), lines, body)


def _read_response(rfile: BinaryIO, method: str) -> tuple[int, bytes, bool]:
    """``(status, raw response, close after it)``; interim 1xx responses are dropped."""
    while True:
        lines = _read_head(rfile)
        if lines is None:
            raise ValueError("the server closed the connection without a response")
        status = int(lines[0].split(b" ", 2)[1])
        if status >= 200:
            break
    headers = _parse_headers(lines)
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    close = headers.get("connection", "").lower() == "close"
    if method == "HEAD" or status in (204, 304):
        return status, head, close
    body = _read_body(rfile, headers)
    if body is None:  # delimited by the end of the stream
        return status, head + rfile.read(), True
    return status, head + body, close


def _slow_down(req: _Request) -> bytes:
    request_id = uuid.uuid4().hex[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
        "<Message>Please reduce your request rate.</Message>"
        f"<Resource>{escape(req.path)}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()
    head = (
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nx-amz-request-id: {request_id}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n\r\n"
    ).encode()
    return head if req.method == "HEAD" else head + body
