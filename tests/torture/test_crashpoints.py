"""Crash points: a process ended after, before or in the middle of each mutating
store call recovers to the crash-free result; and a handful of SIGKILL trials.

Here (the default suite): every "after" crash point on a local disk of every job
but the long pipeline run (sampled), the crash before the first call, one torn
write of each kind of file, and a sample on S3. ``python -m tests.torture
--crashpoints`` enumerates every variant at every call. See
:mod:`tests.torture.crashpoint_job`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

import streamkit as sk
from streamkit.pipeline._keyed import GroupedState
from streamkit.storage import _manifest as mf
from tests.torture import crashpoint_job as cp
from tests.torture.kill import run_kill_trials, summary_table

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: Sampled in the default suite (every call in ``python -m tests.torture --crashpoints``).
SAMPLED = {"pipeline_compact": 8, "chains": 6}


@pytest.fixture(scope="module")
def server() -> Iterator[cp.ForkServer]:
    with cp.ForkServer() as running:
        yield running


@pytest.fixture
def local(tmp_path: Any) -> Callable[[], tuple[str, None]]:
    return lambda: (str(tmp_path / uuid.uuid4().hex), None)


def _assert_clean(result: cp.Enumeration) -> None:
    assert not result.problems and not result.failures, result.summary()


def _first(calls: list[str]) -> Sequence[int]:
    """Before call k is after call k - 1 (enumerated already), but for k = 1."""
    return [1]


def _torn_sample(calls: list[str]) -> Sequence[int]:
    """Writes cut short: one of each kind of file (version, snapshot, hint,
    segment, epoch, state, checkpoint), the first of its kind."""
    kinds = ("_last_snapshot", "snapshot.json", ".parquet", "epochs/", "state/", "checkpoints/")
    seen: dict[str, int] = {}
    for k, call in enumerate(calls, start=1):
        if call.startswith("rm "):
            continue
        kind = next((m for m in kinds if m in call), "version")
        seen.setdefault(kind, k)
    return sorted(seen.values())


@pytest.mark.parametrize("scenario", sorted(cp.SCENARIOS))
def test_every_crash_point_recovers_local(
    server: cp.ForkServer, local: Callable[[], tuple[str, None]], scenario: str
) -> None:
    size = SAMPLED.get(scenario)
    after = cp.every_call if size is None else (lambda calls: cp.sample_ks(calls, size))
    plan = {"after": after, "before": _first, "torn": _torn_sample}
    result = cp.enumerate_crashpoints(server, scenario, local, backend="local", plan=plan)
    _assert_clean(result)
    assert len(result.calls) >= 5, result.calls
    tried_after = {p.k for p in result.points if p.when == "after"}
    if size is None:
        assert tried_after == set(range(1, len(result.calls) + 1))


@pytest.mark.s3
@pytest.mark.parametrize(
    ("scenario", "size"), [("append_txn", 3), ("retention", 2), ("pipeline", 3)]
)
def test_crash_points_recover_s3_sample(
    server: cp.ForkServer,
    seaweedfs: Any,
    s3_storage_options: dict[str, Any],
    scenario: str,
    size: int,
) -> None:
    """A sample per job (snapshots, hints, checkpoints, deletions first)."""

    def new() -> tuple[str, dict[str, Any]]:
        return f"s3://{seaweedfs['bucket']}/cp-{uuid.uuid4().hex}", s3_storage_options

    plan = {"after": lambda calls: cp.sample_ks(calls, size)}
    result = cp.enumerate_crashpoints(server, scenario, new, backend="s3", plan=plan)
    _assert_clean(result)
    assert len(result.points) == size


def test_the_jobs_cover_the_protocol(
    server: cp.ForkServer, local: Callable[[], tuple[str, None]]
) -> None:
    """The jobs make the calls the issue names: a snapshot and its hint, a checkpoint
    commit with state files and epoch claims, retention deletes, pruning, state
    chains compacted and their shared files deleted."""
    seen: dict[str, list[str]] = {}
    urls: dict[str, str] = {}
    for name in cp.SCENARIOS:
        url, options = local()
        urls[name] = url
        cp._prepare(cp.SCENARIOS[name], url, options, None)
        done = server.run(name, "work", url, options)
        assert done.rc == 0, done.stderr
        seen[name] = done.calls
    snap = mf.snapshot_path(mf.SNAPSHOT_EVERY)
    assert f"put_new events/{snap}" in seen["compaction"]
    assert f"put events/{mf.HINT}" in seen["compaction"]
    assert f"put_new history/{snap}" in seen["pipeline_compact"]
    for kind in ("epochs/", "state/", "checkpoints/"):
        assert any(kind in c and c.startswith("put_new") for c in seen["pipeline"]), kind
    deletes = [c for c in seen["pipeline_compact"] if c.startswith("rm ")]
    assert any("/checkpoints/" in c for c in deletes) and any("/state/" in c for c in deletes)
    assert any("/epochs/" in c for c in deletes)
    assert sum(c.startswith("rm events/data/") for c in seen["retention"]) == 3
    # chains: retention (after batch 10, not only at the end) deletes state files,
    # some written before the job and shared by its checkpoints; the two retained
    # checkpoints show a group compacted (two links, then a new base)
    chains = seen["chains"]
    puts = {c.split(" ", 1)[1] for c in chains if c.startswith("put_new ") and "/state/" in c}
    gone = [c.split(" ", 1)[1] for c in chains if c.startswith("rm ") and "/state/" in c]
    last_checkpoint = max(
        i for i, c in enumerate(chains) if c.startswith("put_new") and "/checkpoints/" in c
    )
    assert gone and chains.index(f"rm {gone[0]}") < last_checkpoint
    assert set(gone) - puts, "no state file of the setup was deleted"
    ckpts = cp._chains_pipe(sk.Store(urls["chains"]))._ckpts()
    before, after = (
        GroupedState.parse(entry["state"], "test")[2]
        for i in ckpts.ids()
        for entry in ckpts.read(i).operators.values()
        if "state" in entry
    )
    assert any(len(before[g]) > 1 and len(after[g]) == 1 for g in before), (before, after)


@pytest.mark.parametrize(("when", "versions"), [("after", 2), ("before", 1)])
def test_a_crash_point_lands_on_its_call(
    server: cp.ForkServer, local: Callable[[], tuple[str, None]], when: str, versions: int
) -> None:
    """Call 3 of the append job commits version 1: ending after it leaves versions
    0 and 1; ending before it leaves version 0 and an unreferenced segment."""
    url, options = local()
    crashed = server.run("append", "work", url, options, crash_at=3, when=when)
    assert crashed.rc == cp.CRASH_CODE
    fs = sk.Store(url).filesystem.child("events")
    assert [n for n in fs.ls(mf.LOG_DIR) if n.endswith(".json")] == [
        mf.version_path(v).split("/")[1] for v in range(versions)
    ]
    assert len(fs.find("data")) == 1
    assert sk.Store(url).log("events").count() == (12 if when == "after" else 0)


def test_the_harness_reports_duplicates(
    server: cp.ForkServer, local: Callable[[], tuple[str, None]]
) -> None:
    """A recovery that appends again without looking is caught, and says how."""
    plan = {"after": lambda calls: [len(calls)]}
    result = cp.enumerate_crashpoints(server, "canary_duplicate", local, backend="local", plan=plan)
    assert result.problems and result.failures
    assert "36 duplicated" in result.summary(), result.summary()


def test_kill_sample_local(tmp_path: Any) -> None:
    """A handful of SIGKILL trials (``make torture`` runs 200+)."""
    trials = run_kill_trials(2, ["local"], seed=11, workdir=str(tmp_path))
    assert all(t.ok for t in trials), "\n".join(t.describe() for t in trials if not t.ok)
    assert {t.kind for t in trials} == {"append", "pipeline"}
    assert sum(t.kills for t in trials) >= 1, summary_table(trials)
