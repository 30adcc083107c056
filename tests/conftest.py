"""Shared fixtures: one SeaweedFS S3 server per session and stores on every backend.

Under ``make test`` (pytest-xdist) each worker process is a session of its own,
with its own server on its own free ports.

Fixtures
--------
seaweedfs            session: ``{"endpoint_url", "key", "secret", "bucket"}``
s3_storage_options   session: fsspec/s3fs options for that server
store_url            ``(url, storage_options)`` with a fresh prefix, parametrized over
                     ``memory``, ``local`` and ``s3``
store                ``sk.Store`` on ``store_url``
make_store           factory: ``make_store(backend=None)`` -> a fresh ``sk.Store``
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamkit._testing import SeaweedFS
from streamkit._testing import seaweedfs as _seaweedfs
from streamkit.storage import Store

BACKENDS = ("memory", "local", "s3")


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """A SeaweedFS server with an S3 gateway on loopback and one bucket."""
    with _seaweedfs() as server:
        yield server


@pytest.fixture(scope="session")
def s3_storage_options(seaweedfs: SeaweedFS) -> dict[str, Any]:
    """s3fs options for the session's SeaweedFS server."""
    return {
        "key": seaweedfs["key"],
        "secret": seaweedfs["secret"],
        "client_kwargs": {"endpoint_url": seaweedfs["endpoint_url"], "region_name": "us-east-1"},
    }


def _url_for(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, Any]]:
    unique = uuid.uuid4().hex
    if backend == "memory":
        return f"memory://streamkit-test-{unique}", {}
    if backend == "local":
        return str(tmp_path_factory.mktemp("store") / unique), {}
    if backend == "s3":
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        options = request.getfixturevalue("s3_storage_options")
        return f"s3://{server['bucket']}/{unique}", dict(options)
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


@pytest.fixture(
    params=[
        "memory",
        "local",
        pytest.param("s3", marks=pytest.mark.s3),
    ]
)
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, Any]]:
    """``(url, storage_options)`` of a fresh, empty store on each backend."""
    return _url_for(request.param, request, tmp_path_factory)


@pytest.fixture
def backend(store_url: tuple[str, dict[str, Any]]) -> str:
    """The backend of ``store_url``: ``memory``, ``local`` or ``s3``."""
    url = store_url[0]
    if url.startswith("memory://"):
        return "memory"
    if url.startswith("s3://"):
        return "s3"
    return "local"


@pytest.fixture
def store(store_url: tuple[str, dict[str, Any]]) -> Store:
    """A fresh ``Store`` on each backend."""
    url, options = store_url
    return Store(url, storage_options=options)


@pytest.fixture
def make_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Store]:
    """Factory of fresh stores: ``make_store("memory" | "local" | "s3")``."""

    def make(backend: str = "memory") -> Store:
        url, options = _url_for(backend, request, tmp_path_factory)
        return Store(url, storage_options=options)

    return make


@pytest.fixture
def local_store_path(tmp_path: Path) -> Path:
    """A fresh local folder for a store."""
    return tmp_path / "store"
