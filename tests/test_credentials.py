"""Credentials never leave the process: not in stored files, log records, reprs,
HTML displays, exception text (chained causes included) or the CLI's output,
whether S3 calls succeed or fail (wrong secret, unknown key, nothing listening,
no such bucket).
"""

from __future__ import annotations

import json
import logging
import socket
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

import streamkit as sk
from streamkit._testing import SeaweedFS
from streamkit.cli import main
from streamkit.datasets import generate_orders, order_machine

pytestmark = [pytest.mark.s3, pytest.mark.timeout(300)]

CANARY_KEY = f"SKCANARYKEY{uuid.uuid4().hex[:12].upper()}"
CANARY_SECRET = f"SKCANARYSECRET/{uuid.uuid4().hex}+x"
#: Fail fast (one retry) against a closed port; the path through botocore is the same.
CONFIG = {"retries": {"total_max_attempts": 2, "mode": "standard"}, "connect_timeout": 2}


def _options(endpoint: str, key: str, secret: str) -> dict[str, Any]:
    return {
        "key": key,
        "secret": secret,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "config_kwargs": CONFIG,
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def _leaks(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s in text]


def _exception_texts(exc: BaseException) -> str:
    """Everything an exception can show: message, repr, args, the whole chain."""
    parts = [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))]
    return "\n".join(parts)


def _cli(args: list[str], options: dict[str, Any], verbose: bool = False) -> Any:
    flags = []
    for key, value in options.items():
        shown = json.dumps(value) if isinstance(value, dict) else value
        flags += ["--option", f"{key}={shown}"]
    return CliRunner().invoke(main, (["-v"] if verbose else []) + args + flags)


def _check_log_records(caplog: pytest.LogCaptureFixture, secrets: list[str]) -> None:
    """No record shows the secret; no streamkit record, nor any warning, the key."""
    assert not _leaks(caplog.text, [secrets[-1]]), "secret in a log record"
    for record in caplog.records:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += _exception_texts(record.exc_info[1])
        if record.name.startswith("streamkit") or record.levelno >= logging.WARNING:
            assert not _leaks(message, secrets), (record.name, message[:300])


def _pipeline(store: sk.Store) -> sk.Pipeline:
    return (
        sk.Pipeline("creds", store, batch_rows=150)
        .read(store.log("orders", key="order_id", time="ts"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


def test_a_pipeline_on_s3_stores_logs_and_shows_no_credentials(
    seaweedfs: SeaweedFS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [seaweedfs["key"], seaweedfs["secret"]]
    options = _options(seaweedfs["endpoint_url"], *secrets)
    url = f"s3://{seaweedfs['bucket']}/creds-{uuid.uuid4().hex}"
    store = sk.Store(url, storage_options=options)
    source = store.log("orders", key="order_id", time="ts")
    orders = generate_orders(80, span="2h", seed=11)
    source.append(orders)
    with store.filesystem.fsspec.open(f"{store.filesystem.root}/drops/a.parquet", "wb") as fh:
        pl.DataFrame({"k": [1], "t": [1]}).write_parquet(fh)
    files = sk.FileLog(f"{url}/drops", "*.parquet", key="k", time="t", storage_options=options)
    pipe = _pipeline(store)
    run = pipe.run(progress=True)
    verified = pipe.verify(replay=True)
    assert run.quarantined > 0 and verified.ok and files.end().offset == 1

    shown = [repr(x) for x in (store, source, files, pipe, run, verified, store.filesystem)]
    shown += [x._repr_html_() for x in (store, source, files, pipe, run, verified)]
    shown += [str(run), str(verified), store.url, source.url, files.name]
    shown += [str(pipe.checkpoints()), str(pipe.state().head()), str(pipe.quarantine().head())]
    assert not _leaks("\n".join(shown), secrets)

    fs = store.filesystem
    stored = fs.find("")
    assert len(stored) > 10
    for rel in stored:
        assert not _leaks(fs.get(rel).decode("latin-1"), secrets), rel
    _check_log_records(caplog, secrets)

    for args in (["log", "ls", url], ["checkpoints", url, "creds"], ["verify", url, "creds"]):
        result = _cli(args, options)
        assert result.exit_code == 0, result.output
        assert not _leaks(result.output + result.stderr, secrets), args


SCENARIOS = ["wrong secret", "unknown key", "nothing listening", "no such bucket"]


def _failing(seaweedfs: SeaweedFS, scenario: str) -> tuple[str, dict[str, Any], list[str]]:
    endpoint, bucket = seaweedfs["endpoint_url"], seaweedfs["bucket"]
    key, secret = seaweedfs["key"], CANARY_SECRET
    if scenario == "unknown key":
        key = CANARY_KEY
    elif scenario == "nothing listening":
        key, endpoint = CANARY_KEY, f"http://127.0.0.1:{_closed_port()}"
    elif scenario == "no such bucket":
        secret, bucket = seaweedfs["secret"], f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    url = f"s3://{bucket}/creds-{uuid.uuid4().hex}"
    return url, _options(endpoint, key, secret), [key, secret]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_failing_s3_calls_show_no_credentials(
    seaweedfs: SeaweedFS, caplog: pytest.LogCaptureFixture, scenario: str
) -> None:
    caplog.set_level(logging.DEBUG)
    url, options, secrets = _failing(seaweedfs, scenario)
    frame = pl.DataFrame({"k": [1], "t": [1]})

    def store() -> sk.Store:
        return sk.Store(url, storage_options=options)

    actions: dict[str, Callable[[], Any]] = {
        "list logs": lambda: store().logs(),
        "open a log": lambda: store().log("orders"),
        "create a log": lambda: store().log("orders", key="k", time="t").append(frame),
        "read files": lambda: sk.FileLog(
            url, "*.parquet", key="k", time="t", storage_options=options
        ).end(),
        "run a pipeline": lambda: _pipeline(store()).run(progress=False),
        "open a pipeline": lambda: sk.Pipeline.open(store(), "creds"),
        "display a store": lambda: store()._repr_html_(),
    }
    passed = []
    for what, action in actions.items():
        try:
            result = action()
        except Exception as exc:  # every failure must be translated, and clean
            assert isinstance(exc, sk.StreamkitError), (what, type(exc), exc)
            assert not _leaks(_exception_texts(exc), secrets), (what, str(exc)[:300])
        else:
            assert not _leaks(repr(result), secrets), what
            passed.append(what)
    # SeaweedFS creates a missing bucket on the first write (S3 answers NoSuchBucket):
    # there, listing finds nothing, opening fails, and creating works.
    if scenario != "no such bucket":
        assert passed == [], passed
    assert not _leaks(repr(store()) + store().url, secrets)
    _check_log_records(caplog, secrets)

    for args in (["log", "ls", url], ["verify", url, "creds"], ["checkpoints", url, "creds"]):
        for verbose in (False, True):
            result = _cli(args, options, verbose)
            assert result.exit_code != 0 or args[0] == "log", (args, result.output)
            assert "Traceback" not in result.output + result.stderr, (args, result.output)
            assert not _leaks(result.output + result.stderr, secrets), (args, verbose)
