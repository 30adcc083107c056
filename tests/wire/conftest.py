"""Fixtures for faults on the wire: a FaultProxy between s3fs and the session's SeaweedFS.

Fixtures
--------
proxy         a running :class:`~tests.wire.proxy.FaultProxy` before the session's
              SeaweedFS (seeded from the test's id; no random faults until set)
sdk_retries   ``"on"`` or ``"off"`` (parametrized): the SDK's retries; off means
              botocore ``total_max_attempts=1`` and s3fs ``retries = 1``
wire_url      ``s3://<bucket>/<fresh prefix>``
wire_store    factory: ``wire_store()`` a store on ``wire_url`` through the proxy;
              ``wire_store(direct=True)`` the same prefix straight to SeaweedFS
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable, Iterator

import pytest

import streamkit as sk
from streamkit._testing import SeaweedFS
from tests.wire.proxy import FaultProxy
from tests.wire.torture import RETRIES, open_store, s3_options


@pytest.fixture
def proxy(seaweedfs: SeaweedFS, request: pytest.FixtureRequest) -> Iterator[FaultProxy]:
    """A fault proxy in front of SeaweedFS, seeded from the test's id."""
    seed = zlib.crc32(request.node.nodeid.encode())
    with FaultProxy(seaweedfs["endpoint_url"], seed=seed) as running:
        yield running


@pytest.fixture(params=RETRIES, ids=[f"sdk-retries-{r}" for r in RETRIES])
def sdk_retries(request: pytest.FixtureRequest) -> str:
    """``"on"`` (botocore's and s3fs's defaults) or ``"off"`` (one attempt each)."""
    return str(request.param)


@pytest.fixture
def wire_url(seaweedfs: SeaweedFS) -> str:
    """A fresh prefix in the session's bucket."""
    return f"s3://{seaweedfs['bucket']}/wire-{uuid.uuid4().hex}"


@pytest.fixture
def wire_store(
    seaweedfs: SeaweedFS, proxy: FaultProxy, sdk_retries: str, wire_url: str
) -> Callable[..., sk.Store]:
    """Factory of stores on ``wire_url``: through the proxy, or ``direct=True``."""

    def make(*, direct: bool = False) -> sk.Store:
        if direct:
            return open_store(wire_url, s3_options(seaweedfs))
        options = s3_options(seaweedfs, proxy.url, retries=sdk_retries)
        return open_store(wire_url, options, retries=sdk_retries)

    return make
