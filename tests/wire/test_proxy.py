"""The fault proxy itself: framing, each fault kind, counts, seeds, runtime control.

Most tests put the proxy in front of a tiny HTTP/1.1 server of their own (it
records what reached it, answers chunked, 204 and HEAD responses); the last ones
go through s3fs to SeaweedFS.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import s3fs

from streamkit._testing import SeaweedFS
from tests.wire.proxy import KINDS, FaultProxy
from tests.wire.torture import s3_options

Seen = tuple[str, str, bytes]  # method, path, body as the origin got them
Origin = tuple[str, list[Seen]]  # the origin's URL and what it saw
Connect = Callable[[FaultProxy], http.client.HTTPConnection]


class _Origin(BaseHTTPRequestHandler):
    """Answers PUT with the SHA-256 of the body, GET /chunked in chunks, DELETE with 204."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[Seen]]

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            data = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _answer(self) -> None:
        body = self._body()
        self.seen.append((self.command, self.path, body))
        if self.command == "DELETE":
            self.send_response(204)
            self.end_headers()
            return
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        reply = hashlib.sha256(body).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[Origin]:
    """``(url, seen)`` of a local HTTP/1.1 server recording the requests it got."""
    seen: list[Seen] = []
    handler = type("Origin", (_Origin,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def client() -> Iterator[Connect]:
    """Factory of HTTP connections to a proxy, all closed at the end of the test."""
    made: list[http.client.HTTPConnection] = []

    def connect(proxy: FaultProxy) -> http.client.HTTPConnection:
        port = int(proxy.url.rsplit(":", 1)[1])
        made.append(http.client.HTTPConnection("127.0.0.1", port, timeout=10))
        return made[-1]

    yield connect
    for conn in made:
        conn.close()


def _get(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes = b""
) -> tuple[int, bytes]:
    conn.request(method, path, body=body or None)
    response = conn.getresponse()
    return response.status, response.read()


def test_without_faults_requests_keep_alive_and_bodies_pass_unchanged(
    origin: Origin, client: Connect
) -> None:
    url, seen = origin
    big = uuid.uuid4().bytes * 400_000  # 6.4 MB
    with FaultProxy(url) as proxy:
        conn = client(proxy)
        assert _get(conn, "PUT", "/big", big) == (200, hashlib.sha256(big).hexdigest().encode())
        assert _get(conn, "GET", "/chunked") == (200, b"hello chunked world")
        assert _get(conn, "HEAD", "/head") == (200, b"")
        assert _get(conn, "DELETE", "/gone") == (204, b"")
        conn.putrequest("PUT", "/sent-chunked")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for piece in (b"abc", b"defgh"):
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        assert response.read() == hashlib.sha256(b"abcdefgh").hexdigest().encode()
        conn.close()
        records = proxy.records()
        assert proxy.counts() == {"requests": 5, **dict.fromkeys(KINDS, 0)}
    assert [(m, p) for m, p, _ in seen] == [(r.method, r.path) for r in records]
    assert seen[0][2] == big and seen[-1][2] == b"abcdefgh"
    assert len({r.conn for r in records}) == 1  # one client connection, kept alive
    assert [r.status for r in records] == [200, 200, 200, 204, 200]


def test_each_fault_kind_does_what_it_says_and_is_counted(origin: Origin, client: Connect) -> None:
    url, seen = origin
    with FaultProxy(url) as proxy:
        proxy.fault_next("lost_response", path="^/lost$")
        with pytest.raises(http.client.RemoteDisconnected):
            _get(client(proxy), "PUT", "/lost", b"applied")
        assert seen[-1] == ("PUT", "/lost", b"applied")  # the server applied it

        proxy.fault_next("reset", method="PUT")
        with pytest.raises(ConnectionResetError):
            _get(client(proxy), "PUT", "/reset", b"never")
        assert ("PUT", "/reset", b"never") not in seen

        proxy.fault_next("slow_down")
        status, body = _get(client(proxy), "PUT", "/slow", b"never")
        assert status == 503 and b"<Code>SlowDown</Code>" in body
        assert ("PUT", "/slow", b"never") not in seen

        proxy.fault_next("delay")
        assert _get(client(proxy), "GET", "/late")[0] == 200
        assert seen[-1][:2] == ("GET", "/late")

        assert proxy.counts() == {"requests": 4, **dict.fromkeys(KINDS, 1)}
        assert [r.fault for r in proxy.records()] == list(KINDS)
        assert proxy.pending() == 0


def test_targeted_faults_hit_only_matching_requests_n_times(
    origin: Origin, client: Connect
) -> None:
    url, _ = origin
    with FaultProxy(url) as proxy:
        proxy.fault_next("slow_down", 2, method="PUT", path=r"/_log/\d+\.json$")
        conn = client(proxy)
        statuses = [
            _get(conn, method, path, b"x")[0]
            for method, path in [
                ("GET", "/_log/1.json"),
                ("PUT", "/data/1.parquet"),
                ("PUT", "/_log/1.json"),
                ("PUT", "/_log/2.json"),
                ("PUT", "/_log/3.json"),
            ]
        ]
        assert statuses == [200, 200, 503, 503, 200]
        assert proxy.pending() == 0


def _fault_sequence(url: str, seed: int, client: Connect) -> list[str | None]:
    rates = {"slow_down": 0.2, "delay": 0.1}
    with FaultProxy(url, seed=seed, rates=rates, delay=(0.0, 0.001)) as proxy:
        conn = client(proxy)
        for i in range(60):
            _get(conn, "PUT", f"/k/{i}", b"v")
        return [r.fault for r in proxy.records()]


def test_the_same_seed_injects_the_same_faults_into_the_same_requests(
    origin: Origin, client: Connect
) -> None:
    url, _ = origin
    first = _fault_sequence(url, 7, client)
    assert first == _fault_sequence(url, 7, client)
    assert first != _fault_sequence(url, 8, client)
    assert {"slow_down", "delay", None} == set(first)


def test_faults_are_switched_and_rates_changed_at_runtime(origin: Origin, client: Connect) -> None:
    url, _ = origin
    with FaultProxy(url, rates={"slow_down": 1.0}, methods=["PUT"]) as proxy:
        conn = client(proxy)
        assert _get(conn, "GET", "/a")[0] == 200  # only PUT is eligible
        assert _get(conn, "PUT", "/a", b"1")[0] == 503
        proxy.enabled = False
        assert _get(conn, "PUT", "/a", b"1")[0] == 200
        proxy.enabled = True
        proxy.set_rates({"delay": 1.0})
        assert _get(conn, "GET", "/a")[0] == 200
        assert proxy.counts()["delay"] == 1  # every method is eligible again
        with pytest.raises(ValueError, match="sum <= 1"):
            proxy.set_rates({"reset": 0.7, "delay": 0.7})


@pytest.mark.s3
def test_s3fs_through_the_proxy_moves_large_objects_intact(seaweedfs: SeaweedFS) -> None:
    with FaultProxy(seaweedfs["endpoint_url"]) as proxy:
        options = s3_options(seaweedfs, proxy.url, private=True)
        fs = s3fs.S3FileSystem(**{k: v for k, v in options.items() if k != "skip_instance_cache"})
        path = f"{seaweedfs['bucket']}/wire-{uuid.uuid4().hex}/big"
        data = uuid.uuid4().bytes * 750_000  # 12 MB
        fs.pipe_file(path, data)
        assert fs.cat_file(path) == data
        assert fs.cat_file(path, start=5_000_000, end=5_000_100) == data[5_000_000:5_000_100]
        assert fs.info(path)["size"] == len(data)
        fs.rm_file(path)
        assert not fs.exists(path)
        assert sum(proxy.counts()[k] for k in KINDS) == 0
        assert {r.method for r in proxy.records()} >= {"PUT", "GET", "HEAD", "DELETE"}


@pytest.mark.s3
def test_aiohttp_resends_a_create_whose_response_was_lost_even_with_sdk_retries_off(
    seaweedfs: SeaweedFS,
) -> None:
    """The root cause of issue 11: the server applied the PUT, the client re-sent it
    on a new connection (aiohttp retries idempotent methods once, whatever botocore's
    and s3fs's retries say) and was told "precondition failed" -- by its own write."""
    with FaultProxy(seaweedfs["endpoint_url"]) as proxy:
        options = s3_options(seaweedfs, proxy.url, retries="off", private=True)
        fs = s3fs.S3FileSystem(**{k: v for k, v in options.items() if k != "skip_instance_cache"})
        fs.retries = 1
        path = f"{seaweedfs['bucket']}/wire-{uuid.uuid4().hex}/created-once"
        proxy.fault_next("lost_response", method="PUT", path="/created-once$")
        with pytest.raises(OSError, match="pre-conditions"), fs.open(path, "xb") as fh:
            fh.write(b"mine")
        puts = [r for r in proxy.records() if r.method == "PUT"]
        assert [(r.fault, r.status) for r in puts] == [("lost_response", 200), (None, 412)]
        assert puts[0].conn != puts[1].conn
        assert fs.cat_file(path) == b"mine"
