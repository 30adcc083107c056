#!/usr/bin/env python3
"""Capture real TCP traffic on the loopback interface into a pcap file.

This regenerates the raw capture behind ``streamkit.datasets.load_tcp()``. It needs
``tcpdump`` and the right to capture on ``lo`` (root or CAP_NET_RAW), and only the
Python standard library. Run it from the repository root::

    sudo python datasets/tcp/capture.py --out datasets/tcp/capture.pcap
    python datasets/tcp/convert.py datasets/tcp/capture.pcap \
        streamkit/datasets/data/tcp_loopback.parquet

What happens:

1. A *server process* (this script, ``serve`` sub-command) opens three ports on
   127.0.0.1: a normal listener, a "stuck" listener with an accept backlog of 0 that
   never calls ``accept()`` (its queue fills up, so the kernel silently drops later
   SYNs), and a port that is bound but not listening (SYNs to it are answered with
   RST, i.e. "connection refused").
2. ``tcpdump -i lo`` starts with a filter on exactly those three ports, so other
   loopback traffic on the machine (test servers, databases) is not captured.
3. The *client* (this process) drives a few hundred real connections through a
   small thread pool, each following one scenario that the first request line tells
   the server about (see ``SCENARIOS``): normal request/response with a client- or
   server-initiated close, RST aborts by either side, half-close, an attempt at a
   simultaneous close, refused connections, unanswered SYNs, idle connections that
   only exchange heartbeats, and half-open ones that the server never closes.
4. After the last scenario the capture runs a few seconds more (only the heartbeats
   are talking) so that the TIME_WAIT timeouts of the conntrack machine can fire,
   then tcpdump is stopped with SIGINT and the long-lived connections are closed.

The scenario mix is drawn from ``--seed``; the packets themselves (ports, sequence
numbers, timings, which closes end up simultaneous) come from the kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HOST = "127.0.0.1"

#: Scenario name -> how many connections of that kind a full capture drives.
SCENARIOS: dict[str, int] = {
    "client_close": 110,  # request/response, client closes first
    "server_close": 60,  # request/response, server closes first
    "client_rst": 20,  # client aborts with SO_LINGER 0 (RST)
    "server_rst": 20,  # server aborts with SO_LINGER 0 (RST)
    "half_close": 25,  # client shuts down writing, server answers after EOF
    "simultaneous": 25,  # both sides shut down writing at the same instant
    "refused": 20,  # SYN to a bound, non-listening port -> RST|ACK
    "unanswered": 4,  # SYN to a full accept queue -> dropped, retransmitted
}
#: Long-lived connections, opened first and still open when the capture stops.
IDLE = 4  # application heartbeats every ~1.5 s, never closed during the capture
HALF_OPEN = 3  # client half-closes, the server never closes its side
LINGER_ZERO = struct.pack("ii", 1, 0)


# --------------------------------------------------------------------------- server


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(65536, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _recv_line(conn: socket.socket) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _drain(conn: socket.socket) -> None:
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def _send_chunks(conn: socket.socket, size: int, chunks: int) -> None:
    per = max(1, size // max(1, chunks))
    sent = 0
    while sent < size:
        n = min(per, size - sent)
        conn.sendall(b"x" * n)
        sent += n
        time.sleep(0.002)


def _handle(conn: socket.socket, stop: threading.Event, parked: list[socket.socket]) -> None:
    keep = False
    try:
        header = _recv_line(conn).split()
        if not header:
            return
        mode = header[0].decode()
        req, resp, chunks = (int(v) for v in header[1:4])
        deadline = float(header[4])
        if mode == "idle":
            while True:
                line = _recv_line(conn)
                if not line:
                    return
                conn.sendall(b"pong\n")
        body = _recv_exact(conn, req)
        if mode in {"half_close", "half_open"}:
            _drain(conn)  # until the client's FIN
            _send_chunks(conn, resp, chunks)
            if mode == "half_open":
                keep = True  # never close during the capture: the flow stays half-open
                parked.append(conn)
            return
        if mode == "server_rst":
            _send_chunks(conn, resp // 2, 1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
            return
        if mode == "simultaneous":
            conn.sendall(b"ready\n")
            while time.time() < deadline:  # busy-wait: both sides wake together
                pass
            conn.shutdown(socket.SHUT_WR)
            _drain(conn)
            return
        _send_chunks(conn, resp, chunks)
        if mode == "server_close":
            return
        _drain(conn)  # client_close and client_rst: the client ends it
        del body
    except OSError:
        pass
    finally:
        if not keep:
            conn.close()


def serve() -> None:
    """Run the server process: print the three ports, serve until stdin closes."""
    listener = socket.create_server((HOST, 0), backlog=256)
    stuck = socket.socket()
    stuck.bind((HOST, 0))
    stuck.listen(0)  # never accepted: the queue holds one connection, later SYNs drop
    closed = socket.socket()
    closed.bind((HOST, 0))  # bound, not listening: SYNs are refused with RST
    ports = [s.getsockname()[1] for s in (listener, stuck, closed)]
    print(*ports, flush=True)
    stop = threading.Event()
    parked: list[socket.socket] = []

    def accept_loop() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([listener], [], [], 0.2)
            if ready:
                conn, _ = listener.accept()
                threading.Thread(target=_handle, args=(conn, stop, parked), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    sys.stdin.read()  # the parent closes our stdin once tcpdump has stopped
    stop.set()
    for conn in parked:
        conn.close()


# --------------------------------------------------------------------------- client


def _client(mode: str, port: int, rng: random.Random) -> str:
    req = rng.randint(16, 1500)
    resp = rng.randint(64, 24000)
    chunks = rng.randint(1, 5)
    deadline = time.time() + 0.05
    sock = socket.create_connection((HOST, port), timeout=10)
    try:
        sock.sendall(f"{mode} {req} {resp} {chunks} {deadline:.6f}\n".encode())
        sock.sendall(b"r" * req)
        if mode == "simultaneous":
            _recv_line(sock)
            while time.time() < deadline:
                pass
            sock.shutdown(socket.SHUT_WR)
            _drain(sock)
        elif mode == "half_close":
            sock.shutdown(socket.SHUT_WR)
            _drain(sock)
        elif mode == "client_rst":
            _recv_exact(sock, rng.randint(1, resp))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        elif mode in ("client_close", "server_close"):
            _recv_exact(sock, resp)
            if mode == "server_close":
                _drain(sock)  # wait for the server's FIN before closing
        elif mode == "server_rst":
            _drain(sock)
    except OSError:
        pass
    finally:
        sock.close()
    return mode


def _refused(port: int) -> str:
    try:
        socket.create_connection((HOST, port), timeout=5).close()
    except ConnectionRefusedError:
        return "refused"
    raise RuntimeError(f"expected connection refused on port {port}, but it connected")


def _unanswered(port: int, wait: float) -> str:
    sock = socket.socket()
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sock.connect((HOST, port))
    time.sleep(wait)  # SYN retransmitted after ~1 s and ~3 s, never answered
    sock.close()  # closing a SYN_SENT socket sends nothing
    return "unanswered"


def _heartbeat(sock: socket.socket, stop: threading.Event) -> None:
    while not stop.wait(1.5):
        try:
            sock.sendall(b"ping\n")
            _recv_line(sock)
        except OSError:
            return


def _start_tcpdump(out: Path, ports: list[int]) -> subprocess.Popen[bytes]:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        sys.exit("capture.py: tcpdump is not installed (apt-get install tcpdump)")
    expr = "tcp and (" + " or ".join(f"port {p}" for p in ports) + ")"
    cmd = [tcpdump, "-i", "lo", "-U", "-n", "-s", "128", "-Z", "root", "-w", str(out), expr]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode(errors="replace")
    if "listening on" not in line:
        proc.kill()
        rest = proc.stderr.read().decode(errors="replace")
        sys.exit(f"capture.py: tcpdump did not start capturing on lo: {line}{rest}")
    time.sleep(0.3)
    return proc


def capture(out: Path, *, scale: float, seed: int, workers: int, tail: float) -> Counter[str]:
    """Drive the scenarios while tcpdump writes ``out``; return scenario counts."""
    rng = random.Random(seed)
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None and server.stdin is not None
    port, stuck_port, closed_port = (int(p) for p in server.stdout.readline().split())
    dump = _start_tcpdump(out, [port, stuck_port, closed_port])
    stop = threading.Event()
    long_lived: list[socket.socket] = []
    done: Counter[str] = Counter()
    try:
        # The one connection the stuck listener's queue holds: idle, never accepted.
        filler = socket.create_connection((HOST, stuck_port), timeout=5)
        long_lived.append(filler)
        for _ in range(max(1, round(IDLE * scale))):
            sock = socket.create_connection((HOST, port), timeout=10)
            sock.sendall(b"idle 0 0 0 0\n")
            long_lived.append(sock)
            threading.Thread(target=_heartbeat, args=(sock, stop), daemon=True).start()
        for _ in range(max(1, round(HALF_OPEN * scale))):
            sock = socket.create_connection((HOST, port), timeout=10)
            sock.sendall(b"half_open 32 4000 2 0\n" + b"r" * 32)
            sock.shutdown(socket.SHUT_WR)  # the server answers, then never closes
            long_lived.append(sock)
        jobs = [m for m, n in SCENARIOS.items() for _ in range(max(1, round(n * scale)))]
        rng.shuffle(jobs)
        # Unanswered SYNs first, so their SYN_SENT timeouts expire within the capture.
        jobs.sort(key=lambda m: m != "unanswered")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = []
            for mode in jobs:
                if mode == "refused":
                    futures.append(pool.submit(_refused, closed_port))
                elif mode == "unanswered":
                    futures.append(pool.submit(_unanswered, stuck_port, 3.5))
                else:
                    sub = random.Random(rng.getrandbits(64))
                    futures.append(pool.submit(_client, mode, port, sub))
                time.sleep(rng.expovariate(1 / 0.03))
            for fut in futures:
                done[fut.result()] += 1
        time.sleep(tail)  # only heartbeats now: lets TIME_WAIT timeouts fire
    finally:
        dump.send_signal(signal.SIGINT)
        _, err = dump.communicate(timeout=30)
        stop.set()
        for sock in long_lived:
            sock.close()
        server.stdin.close()
        server.wait(timeout=30)
    sys.stderr.write(err.decode(errors="replace"))
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="capture", choices=["capture", "serve"])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("capture.pcap"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply scenario counts")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--tail", type=float, default=6.0, help="seconds of heartbeats at the end")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve()
        return
    counts = capture(
        args.out, scale=args.scale, seed=args.seed, workers=args.workers, tail=args.tail
    )
    print(f"wrote {args.out}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
