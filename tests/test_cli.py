"""The command line: exit codes, messages, and the commands over the public API."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import streamkit as sk
from streamkit.cli import main
from streamkit.datasets import generate_orders

JOB = str(Path(__file__).parent / "pipeline" / "crash_job.py")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = str(tmp_path / "lake")
    sk.Store(url).log("orders", key="order_id", time="ts").append(generate_orders(60, span="2h"))
    monkeypatch.setenv("STREAMKIT_TEST_URL", url)
    monkeypatch.setenv("STREAMKIT_TEST_OPTIONS", "null")
    return url


def test_machine_check_valid_and_invalid(runner: CliRunner, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "name: door\nstates: [closed, open]\ninitial: closed\nfinal: [closed]\n"
        "transitions:\n  - {from: closed, on: open, to: open}\n"
        "  - {from: open, on: close, to: closed}\n"
    )
    r = runner.invoke(main, ["machine", "check", str(good)])
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: stuck\nstates: [a, b, c]\ninitial: a\nfinal: [c]\n"
        "transitions:\n  - {from: a, on: go, to: b}\n"
    )
    r = runner.invoke(main, ["machine", "check", str(bad)])
    assert r.exit_code == 1
    assert "deadlock" in r.output and "unreachable" in r.output


def test_machine_check_missing_file_is_usage_error(runner: CliRunner) -> None:
    r = runner.invoke(main, ["machine", "check", "/nonexistent/m.yaml"])
    assert r.exit_code == 2


def test_run_checkpoints_verify_and_log_ls(runner: CliRunner, lake: str) -> None:
    r = runner.invoke(main, ["run", JOB, "--no-progress", "--max-batches", "1"])
    assert r.exit_code == 0, r.output
    assert "batches" in r.output
    r = runner.invoke(main, ["run", f"{JOB}:pipeline", "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["checkpoints", lake, "crashy"])
    assert r.exit_code == 0 and "position" in r.output
    r = runner.invoke(main, ["verify", lake, "crashy", "--replay"])
    assert r.exit_code == 0, r.output
    assert "replay" in r.output
    r = runner.invoke(main, ["log", "ls", lake])
    assert r.exit_code == 0
    assert "orders" in r.output and "history" in r.output


def test_run_errors_map_to_exit_codes(runner: CliRunner, lake: str, tmp_path: Path) -> None:
    r = runner.invoke(main, ["run", str(tmp_path / "missing.py")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(main, ["run", f"{JOB}:nope"])
    assert r.exit_code == 2 and "pipeline" in r.output
    r = runner.invoke(main, ["run", JOB, "--max-batches", "-1"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["verify", lake, "never-ran"])
    assert r.exit_code == 1 and "no checkpoint" in r.output
    r = runner.invoke(main, ["frobnicate"])
    assert r.exit_code == 2


def test_verify_fails_with_exit_1_on_corruption(runner: CliRunner, lake: str) -> None:
    assert runner.invoke(main, ["run", JOB, "--no-progress"]).exit_code == 0
    state = sorted((Path(lake) / "_pipelines/crashy/state").glob("*.arrow"))[-1]
    data = bytearray(state.read_bytes())
    data[-20] ^= 1
    state.write_bytes(bytes(data))
    r = runner.invoke(main, ["verify", lake, "crashy"])
    assert r.exit_code == 1
    assert state.name in r.output


def test_log_ls_empty_and_missing_stores(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = runner.invoke(main, ["log", "ls", str(tmp_path / "empty")])
    assert r.exit_code == 0 and "no logs" in r.output
    r = runner.invoke(main, ["log", "ls", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_bad_configuration_is_one_line_with_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    job = tmp_path / "badcol.py"
    job.write_text(
        "import streamkit as sk, polars as pl\n"
        f"store = sk.Store({str(tmp_path / 'lake')!r})\n"
        "log = store.log('ev', key='k', time='t')\n"
        "if log.end().offset == 0:\n"
        "    log.append(pl.DataFrame({'k': ['a'], 't': [1], 'e': ['x']}))\n"
        "m = sk.Machine('m', states=['a'], initial='a', final=['a'],\n"
        "               transitions=[('a', 'x', 'a')])\n"
        "pipeline = sk.Pipeline('p', store).read(log).transitions(m, event='nocol')\n"
    )
    r = runner.invoke(main, ["run", str(job), "--no-progress"])
    assert r.exit_code == 2
    assert "nocol" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(main, ["demo", "--store", "memory://nope"])
    assert r.exit_code == 2


def test_demo_twice(tmp_path: Path, runner: CliRunner) -> None:
    store = tmp_path / "demo"
    r1 = runner.invoke(main, ["demo", "--store", str(store), "--orders", "400"])
    assert r1.exit_code == 0, r1.output
    assert "orders by state" in r1.output and "quarantined events by reason" in r1.output
    r2 = runner.invoke(main, ["demo", "--store", str(store), "--orders", "400"])
    assert r2.exit_code == 0, r2.output
    assert "appended day 2" in r2.output
    rows_day1 = sk.Store(str(store)).log("orders").end().offset
    assert rows_day1 > 0
    plots = sorted(p.name for p in (tmp_path / "demo-plots").glob("*.png"))
    assert plots == [
        "dwell_times.png",
        "occupancy.png",
        "process_map.png",
        "timeline.png",
        "transition_matrix.png",
    ]
