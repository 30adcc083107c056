"""Pipelines over a FileLog read every dropped file exactly once.

Files arrive out of name order, consumed files are deleted or rewritten, and
runs are killed (SIGKILL of a real ``streamkit run``) between and within runs;
every test compares with a plain reference: each row of each file processed
exactly once.

``STREAMKIT_FILELOG_FILES=10000`` runs the drop-in-rounds test with that many
files on each backend (the default suite uses a few hundred).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import polars as pl
import pytest

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine
from streamkit.errors import CorruptFileError
from tests.pipeline.oracle import history_by_key, run_oracle, state_dict

pytestmark = pytest.mark.timeout(900)


def _rows(name: str, n: int, start: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "k": [f"{name}{i % 3}" for i in range(n)],
            "t": list(range(start, start + n)),
            "id": [f"{name}-{i}" for i in range(n)],
        }
    )


def _copy_pipe(store: sk.Store, folder: str, batch_rows: int = 7) -> sk.Pipeline:
    files = sk.FileLog(folder, "*.parquet", key="k", time="t")
    return (
        sk.Pipeline("copy", store, batch_rows=batch_rows)
        .read(files)
        .write(store.log("out", key="k", time="t"))
    )


def _out_ids(store: sk.Store) -> list[str]:
    return sorted(store.log("out").scan().collect()["id"].to_list())


def _all_ids(*names: str, n: int = 10) -> list[str]:
    return sorted(f"{name}-{i}" for name in names for i in range(n))


def test_a_file_arriving_out_of_name_order_is_read_once(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    _rows("a", 10, 0).write_parquet(folder / "a.parquet")
    _rows("c", 10, 100).write_parquet(folder / "c.parquet")
    store = sk.Store(str(tmp_path / "lake"))
    assert _copy_pipe(store, str(folder)).run(progress=False).rows_in == 20
    _rows("b", 10, 50).write_parquet(folder / "b.parquet")
    assert _copy_pipe(store, str(folder)).run(progress=False).rows_in == 10
    assert _out_ids(store) == _all_ids("a", "b", "c")
    assert _copy_pipe(store, str(folder)).verify().ok


def test_deleting_a_consumed_file_shifts_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    _rows("a", 10, 0).write_parquet(folder / "a.parquet")
    _rows("b", 10, 100).write_parquet(folder / "b.parquet")
    store = sk.Store(str(tmp_path / "lake"))
    _copy_pipe(store, str(folder)).run(progress=False)
    (folder / "a.parquet").unlink()
    _rows("c", 10, 200).write_parquet(folder / "c.parquet")
    assert _copy_pipe(store, str(folder)).run(progress=False).rows_in == 10
    assert _out_ids(store) == _all_ids("a", "b", "c")


def test_a_rewritten_consumed_file_stops_the_run_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    _rows("a", 10, 0).write_parquet(folder / "a.parquet")
    store = sk.Store(str(tmp_path / "lake"))
    _copy_pipe(store, str(folder)).run(progress=False)
    _rows("x", 12, 0).write_parquet(folder / "a.parquet")  # rewritten in place
    _rows("b", 10, 100).write_parquet(folder / "b.parquet")
    before = _copy_pipe(store, str(folder)).checkpoints().height
    with pytest.raises(CorruptFileError, match=r"drop/a\.parquet changed after it was consumed"):
        _copy_pipe(store, str(folder)).run(progress=False)
    assert _copy_pipe(store, str(folder)).checkpoints().height == before  # nothing committed
    (folder / "a.parquet").unlink()  # the remedy: consumed files may go
    assert _copy_pipe(store, str(folder)).run(progress=False).rows_in == 10
    assert _out_ids(store) == _all_ids("a", "b")


def test_a_crashed_batch_is_redone_on_its_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs committed, checkpoint not; then a file arrives that sorts first."""
    from streamkit.pipeline._checkpoints import CheckpointStore

    folder = tmp_path / "drop"
    folder.mkdir()
    _rows("a", 10, 0).write_parquet(folder / "a.parquet")
    _rows("c", 10, 100).write_parquet(folder / "c.parquet")
    store = sk.Store(str(tmp_path / "lake"))
    real_commit = CheckpointStore.commit
    calls = []

    def crash_on_second(self: CheckpointStore, cp: Any) -> bool:
        calls.append(cp.id)
        if len(calls) == 2:
            raise RuntimeError("crash before the checkpoint of batch 2")
        return real_commit(self, cp)

    monkeypatch.setattr(CheckpointStore, "commit", crash_on_second)
    with pytest.raises(RuntimeError, match="crash"):
        _copy_pipe(store, str(folder)).run(progress=False)
    monkeypatch.setattr(CheckpointStore, "commit", real_commit)
    # batch 2 (offsets 7..14: a's end, c's start) is in the output log, no checkpoint
    assert len(_out_ids(store)) == 14
    _rows("b", 10, 50).write_parquet(folder / "b.parquet")  # sorts before c
    report = _copy_pipe(store, str(folder)).run(progress=False)
    assert report.rows_in == 7 + 6 + 10  # the redone batch 2, the rest of c, b
    assert _out_ids(store) == _all_ids("a", "b", "c")


def test_a_newer_run_redoes_the_files_an_overtaken_run_wrote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A planned [a, c] and wrote them as batch 1 after B planned [a, b, c]."""
    from tests.pipeline.test_overlap import interleave_append_after_reconcile, run_in_thread

    folder = f"memory://filelog-overlap-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    root = folder.removeprefix("memory://")
    for name, start in (("a", 0), ("c", 100)):
        buf = io.BytesIO()
        _rows(name, 10, start).write_parquet(buf)
        fs.pipe(f"/{root}/{name}.parquet", buf.getvalue())
    url = f"memory://filelog-overlap-store-{uuid.uuid4().hex}"
    older = _copy_pipe(sk.Store(url), folder, batch_rows=100)
    a_paused = interleave_append_after_reconcile(monkeypatch, older)
    results: dict[str, Any] = {}
    a = run_in_thread("A", lambda: older.run(progress=False), results)
    a_paused.wait(10)
    buf = io.BytesIO()
    _rows("b", 10, 50).write_parquet(buf)
    fs.pipe(f"/{root}/b.parquet", buf.getvalue())  # B's plan has it, A's has not
    newer = _copy_pipe(sk.Store(url), folder, batch_rows=100)
    b = run_in_thread("B", lambda: newer.run(progress=False, take_over=True), results)
    a.join()
    b.join()
    assert isinstance(results["A"], sk.LeaseError)
    assert isinstance(results["B"], sk.RunReport) and results["B"].batches == 2
    assert _out_ids(sk.Store(url)) == _all_ids("a", "b", "c")


def test_rewinding_reads_every_file_once_more(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    _rows("a", 10, 0).write_parquet(folder / "a.parquet")
    _rows("c", 10, 100).write_parquet(folder / "c.parquet")
    store = sk.Store(str(tmp_path / "lake"))
    _copy_pipe(store, str(folder)).run(progress=False)  # checkpoints 1-3
    _rows("b", 10, 50).write_parquet(folder / "b.parquet")
    _copy_pipe(store, str(folder)).run(progress=False)
    report = _copy_pipe(store, str(folder)).run(progress=False, from_checkpoint=1)
    assert report.rows_in == 30 - 7
    assert _out_ids(store) == _all_ids("a", "b", "c")
    report = _copy_pipe(store, str(folder)).run(progress=False, from_checkpoint=0)
    assert report.rows_in == 30
    assert _out_ids(store) == _all_ids("a", "b", "c")


def _order_parts() -> list[pl.DataFrame]:
    orders = generate_orders(150, span="3h", seed=11).sort("ts")
    step = -(-orders.height // 6)
    return [orders.slice(i * step, step) for i in range(6)]


def _fsm_pipe(store: sk.Store, folder: Path) -> sk.Pipeline:
    files = sk.FileLog(str(folder), "*.parquet", key="order_id", time="ts", window=2)
    return (
        sk.Pipeline("fsm", store, batch_rows=40)
        .read(files)
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


#: Parts of the orders dropped per run: out of name order.
_ARRIVALS = ([0, 2, 4], [1, 5], [3])


def test_a_machine_over_late_files_matches_the_oracle_in_arrival_order(tmp_path: Path) -> None:
    parts = _order_parts()
    folder = tmp_path / "drop"
    folder.mkdir()
    store = sk.Store(str(tmp_path / "lake"))

    def pipe() -> sk.Pipeline:
        return _fsm_pipe(store, folder)

    arrived: list[pl.DataFrame] = []
    for batch in _ARRIVALS:
        for i in batch:
            parts[i].write_parquet(folder / f"part-{i}.parquet")
        arrived += [parts[i].sort("ts", maintain_order=True) for i in sorted(batch)]
        pipe().run(progress=False)
    events = (
        pl.concat(arrived)
        .with_row_index("offset")
        .with_columns(pl.col("offset").cast(pl.Int64), event=pl.col("type").str.to_lowercase())
    )
    want = run_oracle(events, order_machine(), key="order_id", time="ts", event="event")
    assert history_by_key(store.log("history").scan().collect()) == want["history"]
    assert state_dict(pipe().state()) == want["state"]
    q = pipe().quarantine()
    assert (
        sorted(zip(q["offset"].to_list(), q["reason"].to_list(), strict=True))
        == (want["quarantine"])
    )
    assert len(want["quarantine"]) > 0  # the late parts' events really were late
    assert pipe().verify().ok


def _check(report: sk.VerifyReport, name: str) -> tuple[bool, str]:
    check = next(c for c in report.checks if c.name == name)
    return check.ok, check.message


def test_verify_and_replay_follow_the_files_each_batch_read(tmp_path: Path) -> None:
    """Files arrive out of name order, a rewind redoes some, consumed files are
    deleted, one is rewritten, one arrives too late: verify judges the recorded
    position (not the files present) and replays the batches in arrival order."""
    parts = _order_parts()
    folder = tmp_path / "drop"
    folder.mkdir()
    store = sk.Store(str(tmp_path / "lake"))
    for batch in _ARRIVALS:
        for i in batch:
            parts[i].write_parquet(folder / f"part-{i}.parquet")
        _fsm_pipe(store, folder).run(progress=False)
    pipe = _fsm_pipe(store, folder)
    report = pipe.verify(replay=True)
    assert report.ok, report  # a replay in name order differs: files arrived out of it
    position = _check(report, "source position")[1]
    assert re.match(r"read position [0-9,]+ \(read: .*files? by name.*\): planned again", position)
    assert "16 batches of the files they read" in _check(report, "replay")[1]
    assert pipe.verify(checkpoint=9, replay=True).ok  # an older checkpoint: its batches only
    # a rewind retracts batches 10-16 and reads their files again (in path order
    # now) as batches 18 on: the replay follows the current line
    assert pipe.run(progress=False, from_checkpoint=9).checkpoint == 23
    assert pipe.verify(replay=True).ok, pipe.verify(replay=True)

    # consumed files may go: the position still holds, but nothing can replay them
    (folder / "part-0.parquet").unlink()
    report = pipe.verify(replay=True)
    assert _check(report, "source position")[0], report
    ok, message = _check(report, "replay")
    assert not ok and "cannot replay: 1 file(s)" in message and "'part-0.parquet'" in message

    # a consumed file that changes, or a file arriving too late, is named (no traceback)
    parts[1].head(5).write_parquet(folder / "part-5.parquet")
    ok, message = _check(pipe.verify(), "source position")
    assert not ok and re.search(r"drop/part-5\.parquet changed after it was consumed", message)
    (folder / "part-5.parquet").unlink()
    assert pipe.verify().ok
    parts[1].head(5).write_parquet(folder / "part-2b.parquet")  # below the watermark
    ok, message = _check(pipe.verify(), "source position")
    assert not ok and "part-2b.parquet appeared below the read position's watermark" in message


# ------------------------------------------------------------ drops in rounds
_JOB = """
import json, os
import streamkit as sk

env = os.environ
options = json.loads(env["FL_OPTIONS"])
store = sk.Store(env["FL_STORE"], storage_options=options)
files = sk.FileLog(
    env["FL_DROP"], "dt=*/hour=*/*.parquet", key="k", time="t",
    storage_options=options, window=int(env["FL_WINDOW"]),
)
pipeline = (
    sk.Pipeline("drops", store, batch_rows=int(env["FL_BATCH"]))
    .read(files)
    .write(store.log("out", key="k", time="t"))
)
"""


class _Drops:
    """Files dropped in rounds, out of name order, with deletions and rewrites."""

    def __init__(self, drop: str, store: str, options: dict[str, Any], job: Path, **kw: Any):
        self.drop, self.store, self.options, self.job = drop, store, options, job
        self.fs, self.root = fsspec.core.url_to_fs(drop, **options)
        self.window, self.batch = kw["window"], kw["batch"]
        self.env = dict(
            os.environ,
            FL_DROP=drop,
            FL_STORE=store,
            FL_OPTIONS=json.dumps(options),
            FL_WINDOW=str(self.window),
            FL_BATCH=str(self.batch),
        )
        self.kills = 0
        self.run_seconds = kw.get("run_seconds", 1.0)

    def put(self, files: dict[str, bytes]) -> None:
        """Create files as producers should: atomically (S3 PUTs at once, concurrently)."""
        if self.drop.startswith("s3://"):
            self.fs.pipe({f"{self.root}/{name}": data for name, data in files.items()})
            return
        for name, data in files.items():
            final = Path(self.root) / name
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(final)

    def rm(self, names: list[str]) -> None:
        if names:
            self.fs.rm([f"{self.root}/{name}" for name in names])

    def pipeline(self) -> sk.Pipeline:
        store = sk.Store(self.store, storage_options=self.options)
        files = sk.FileLog(
            self.drop,
            "dt=*/hour=*/*.parquet",
            key="k",
            time="t",
            storage_options=self.options,
            window=self.window,
        )
        return (
            sk.Pipeline("drops", store, batch_rows=self.batch)
            .read(files)
            .write(store.log("out", key="k", time="t"))
        )

    def start_run(self) -> subprocess.Popen[bytes]:
        # --take-over: the run killed before it never released its lease
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamkit",
                "run",
                str(self.job),
                "--no-progress",
                "--take-over",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def _epoch(self) -> int:
        epochs = sk.Store(self.store, storage_options=self.options).filesystem
        names = epochs.ls("_pipelines/drops/epochs")
        return max((int(n.split(".")[0]) for n in names if n[:1].isdigit()), default=0)

    def run_and_kill(self, within: float) -> None:
        """A ``streamkit run``, SIGKILLed up to ``within`` s after it took its lease."""
        before = self._epoch()
        proc = self.start_run()
        while self._epoch() == before and proc.poll() is None:
            time.sleep(0.02)
        try:
            proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            self.kills += 1
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()

    def out_ids(self) -> list[int]:
        store = sk.Store(self.store, storage_options=self.options)
        return sorted(store.log("out").scan().select("id").collect()["id"].to_list())


def _file(ids: list[int], rng: random.Random) -> bytes:
    frame = pl.DataFrame(
        {"k": [i % 97 for i in ids], "t": [rng.randrange(10_000) for _ in ids], "id": ids},
        schema={"k": pl.Int64, "t": pl.Int64, "id": pl.Int64},
    )
    out = io.BytesIO()
    frame.write_parquet(out, compression="uncompressed")
    return out.getvalue()


def _drop_in_rounds(drops: _Drops, n_files: int, rounds: int, seed: int) -> dict[str, int]:
    """Drop ``n_files`` in ``rounds``; a run (killed once, then completed) per round.

    About 10% of the files arrive a round late (below names consumed already),
    each round's files land in two halves with a SIGKILLed ``streamkit run``
    between them, consumed files are deleted, and every third round a consumed
    file is rewritten: the run stops naming it, the file is deleted, the run
    goes on. The output must hold every row of every file exactly once.
    """
    rng = random.Random(seed)
    names = [
        f"dt=2026-11-{26 + i * 3 // n_files}/hour={i * 72 // n_files % 24:02d}/part-{i:06d}.parquet"
        for i in range(n_files)
    ]
    sizes = [rng.choice([0, 1, 2, 3, 4]) for _ in range(n_files)]
    first_id = [0]
    for s in sizes:
        first_id.append(first_id[-1] + s)
    per_round = -(-n_files // rounds)
    due: list[list[int]] = [[] for _ in range(rounds)]
    late = 0
    for i in range(n_files):
        r = i // per_round
        if r + 1 < rounds and rng.random() < 0.1:
            r += 1
            late += 1
        due[r].append(i)
    consumed: list[int] = []
    live: set[int] = set()
    rewrites = 0
    for r in range(rounds):
        batch = due[r]
        rng.shuffle(batch)
        half = len(batch) * 2 // 3
        first, second = batch[:half], batch[half:]
        drops.put({names[i]: _file(list(range(first_id[i], first_id[i + 1])), rng) for i in first})
        drops.run_and_kill(within=rng.uniform(0.0, drops.run_seconds))
        drops.put({names[i]: _file(list(range(first_id[i], first_id[i + 1])), rng) for i in second})
        if r % 3 == 2 and consumed:
            victim = rng.choice(sorted(live))
            drops.put({names[victim]: _file([-1, -2, -3, -4, -5], rng)})
            # consumed and listed: CorruptFileError; below the watermark: CheckpointError
            with pytest.raises(sk.CheckpointError, match=names[victim].replace(".", r"\.")):
                drops.pipeline().run(progress=False, take_over=True)
            drops.rm([names[victim]])
            live.discard(victim)
            rewrites += 1
        if r % 2 == 1:  # another run in a subprocess, killed or not
            drops.run_and_kill(within=rng.uniform(0.0, 2 * drops.run_seconds))
        drops.pipeline().run(progress=False, take_over=True)  # a killed run may hold the lease
        consumed += batch
        live |= set(batch)
        gone = rng.sample(sorted(live), len(live) * 3 // 10)
        drops.rm([names[i] for i in gone])
        live -= set(gone)
    got = drops.out_ids()
    assert len(got) == first_id[-1], f"{len(got)} rows out, {first_id[-1]} dropped"
    assert got == list(range(first_id[-1]))  # every row once: none lost, none twice
    return {
        "files": n_files,
        "rows": first_id[-1],
        "late": late,
        "kills": drops.kills,
        "rewrites": rewrites,
    }


_FILES = int(os.environ.get("STREAMKIT_FILELOG_FILES", "0"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_files_dropped_in_rounds_are_read_exactly_once(
    backend: str,
    make_store: Callable[..., sk.Store],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    n_files = _FILES or (800 if backend == "local" else 200)
    rounds = 10 if n_files >= 5000 else (5 if backend == "local" else 3)
    store = make_store(backend)
    options: dict[str, Any] = {}
    if backend == "s3":
        options = dict(request.getfixturevalue("s3_storage_options"))
        server = request.getfixturevalue("seaweedfs")
        drop = f"s3://{server['bucket']}/drops-{uuid.uuid4().hex}"
    else:
        (tmp_path / "drop").mkdir()
        drop = str(tmp_path / "drop")
    job = tmp_path / "drops_job.py"
    job.write_text(_JOB)
    per_round = -(-n_files // rounds)
    # a file arrives at most a round late: at most a round's files sort above it
    drops = _Drops(
        drop,
        store.url,
        options,
        job,
        window=2 * per_round,
        batch=max(10, per_round // 4),
        run_seconds=0.5 if backend == "local" else 1.0,
    )
    started = time.perf_counter()
    figures = _drop_in_rounds(drops, n_files, rounds, seed=7 if backend == "local" else 8)
    print(f"\n{backend}: {figures}, {time.perf_counter() - started:.0f} s")
