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


def test_an_error_in_the_pipeline_file_shows_its_line(runner: CliRunner, tmp_path: Path) -> None:
    job = tmp_path / "raises2.py"
    job.write_text('d = {}\n\n\ndef f():\n    return d["missing"]\n\n\nx = f()\n')
    r = runner.invoke(main, ["run", str(job)])
    assert r.exit_code == 2
    assert "KeyError: 'missing'" in r.output
    assert f"{job}:5, in f" in r.output and 'return d["missing"]' in r.output
    assert "Traceback" not in r.output and "-v" in r.output
    r = runner.invoke(main, ["-v", "run", str(job)])
    assert r.exit_code == 2
    assert "Traceback (most recent call last)" in r.output
    assert "line 8, in <module>" in r.output and "line 5, in f" in r.output
    # a pipeline factory failing when called: a runtime error (exit 1), same frame
    job.write_text('def pipeline():\n    return {}["nope"]\n')
    r = runner.invoke(main, ["run", str(job)])
    assert r.exit_code == 1
    assert f"{job}:2, in pipeline" in r.output and "KeyError: 'nope'" in r.output


def test_store_urls_in_messages_and_exit_codes(runner: CliRunner, tmp_path: Path) -> None:
    r = runner.invoke(main, ["log", "ls", "http://127.0.0.1:1/lake"])  # closed port
    assert r.exit_code == 1
    assert "cannot list http://127.0.0.1:1/lake" in r.output and "http://http" not in r.output
    r = runner.invoke(main, ["log", "ls", "nosuchprotocol://x/lake"])
    assert r.exit_code == 2 and "nosuchprotocol" in r.output  # configuration, like a bad folder
    r = runner.invoke(main, ["checkpoints", "nosuchprotocol://x/lake", "p"])
    assert r.exit_code == 2
    afile = tmp_path / "afile"
    afile.write_text("not a store")
    r = runner.invoke(main, ["log", "ls", str(afile)])
    assert r.exit_code == 2 and "is a file, not a store folder" in r.output


def test_s3_without_credentials_says_how_to_give_them(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("s3fs")
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookups
    endpoint = 'client_kwargs={"endpoint_url": "http://127.0.0.1:1"}'
    r = runner.invoke(main, ["log", "ls", "s3://nocreds/lake", "--option", endpoint])
    assert r.exit_code == 2, r.output
    assert "NoCredentialsError" in r.output
    assert "--option key=" in r.output and "--option secret=" in r.output
    assert "AWS_ACCESS_KEY_ID" in r.output
    # run has no --option: the hint names the Store's storage_options instead
    job = tmp_path / "s3job.py"
    job.write_text(
        "import streamkit as sk\n"
        "options = {'client_kwargs': {'endpoint_url': 'http://127.0.0.1:1'}}\n"
        "store = sk.Store('s3://nocreds/lake', storage_options=options)\n"
        "log = store.log('orders', key='order_id', time='ts')\n"
    )
    r = runner.invoke(main, ["run", str(job)])
    assert r.exit_code == 2, r.output
    assert "storage_options=" in r.output and "AWS_ACCESS_KEY_ID" in r.output
    assert f"{job}:4" in r.output  # the line that touched the store


def test_checkpoints_table_unknown_checkpoint_and_nothing_new(runner: CliRunner, lake: str) -> None:
    from streamkit.pipeline._report import format_ids

    r = runner.invoke(main, ["run", JOB, "--no-progress"])
    assert r.exit_code == 0, r.output
    ids = sk.Pipeline("crashy", sk.Store(lake)).checkpoints()["id"].to_list()
    assert len(ids) > 2
    r = runner.invoke(main, ["checkpoints", lake, "crashy"])
    assert r.exit_code == 0
    lines = r.output.strip().splitlines()
    assert lines[0].split() == [
        "id",
        "kind",
        "created",
        "(UTC)",
        "position",
        "batches",
        "rows_in",
        "rows_out",
        "quarantined",
    ]
    assert len(lines) == len(ids) + 1 and max(map(len, lines)) < 100
    assert lines[-1].split()[0] == str(ids[-1]) and lines[-1].split()[5] == str(len(ids))
    r = runner.invoke(main, ["run", JOB, "--no-progress", "--from-checkpoint", "99"])
    assert r.exit_code == 1
    assert f"existing: {format_ids(ids)})" in r.output and "..." not in r.output
    r = runner.invoke(main, ["run", JOB, "--no-progress"])
    assert r.exit_code == 0
    assert f"nothing new since checkpoint {ids[-1]}" in r.output and "None" not in r.output


def test_log_ls_lists_quarantine_logs(runner: CliRunner, lake: str) -> None:
    assert runner.invoke(main, ["run", JOB, "--no-progress"]).exit_code == 0
    quarantined = sk.Pipeline("crashy", sk.Store(lake)).checkpoints()["quarantined"].max()
    assert quarantined
    r = runner.invoke(main, ["log", "ls", lake])
    assert r.exit_code == 0
    (line,) = [ln for ln in r.output.splitlines() if "quarantine" in ln]
    assert line.split()[:2] == ["_pipelines/crashy/quarantine", str(quarantined)]
    assert line.endswith("quarantine of pipeline 'crashy'")


def test_a_source_that_never_had_an_append_is_reported(tmp_path: Path) -> None:
    import subprocess
    import sys

    lake = tmp_path / "lake"
    sk.Store(str(lake)).log("orders", key="order_id", time="ts").append(
        generate_orders(5, span="1h")
    )
    job = tmp_path / "typo.py"
    job.write_text(
        "import streamkit as sk\n"
        "from streamkit.datasets import order_machine\n"
        f"store = sk.Store({str(lake)!r})\n"
        "pipeline = sk.Pipeline('typo', store).read(\n"
        "    store.log('ordres', key='order_id', time='ts')\n"
        ").transitions(order_machine(), event='type')\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "streamkit", "run", str(job), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr  # documented in `streamkit run --help`
    (warning,) = [ln for ln in r.stderr.splitlines() if "WARNING" in ln]
    assert "'ordres'" in warning and str(lake) in warning and "never had an append" in warning
    assert "orders" in warning.split("logs in", 1)[1]  # the logs the user may have meant
    assert "never had an append" in r.stdout and "no checkpoint yet" in r.stdout
    help_text = CliRunner().invoke(main, ["run", "--help"]).output
    assert "never had an append" in help_text and "exit" in help_text


def test_unknown_protocol_in_a_pipeline_file_is_configuration(
    runner: CliRunner, tmp_path: Path
) -> None:
    job = tmp_path / "proto.py"
    job.write_text("import streamkit as sk\nstore = sk.Store('nosuchprotocol://x/lake')\n")
    r = runner.invoke(main, ["run", str(job)])
    assert r.exit_code == 2
    assert "cannot open store nosuchprotocol://x/lake" in r.output


def test_run_report_of_a_source_that_never_had_an_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = sk.Store(str(tmp_path / "lake"))
    pipe = (
        sk.Pipeline("typo", store)
        .read(store.log("ordres", key="order_id", time="ts"))
        .transitions(sk.machines.load("order"), event="type")
    )
    with caplog.at_level("WARNING", logger="streamkit"):
        report = pipe.run(progress=False)
    assert report.source_empty and report.source == "ordres"
    assert "never had an append" in str(report) and "never had an append" in report._repr_html_()
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "'ordres'" in record.getMessage() and store.url in record.getMessage()
    assert "no checkpoint yet" in str(report)


def test_reshard_rewrites_the_state_in_new_key_groups(runner: CliRunner, lake: str) -> None:
    from streamkit.pipeline import Pipeline
    from streamkit.storage import Store

    assert runner.invoke(main, ["run", JOB, "--no-progress"]).exit_code == 0
    before = Pipeline.open(Store(lake), "crashy").state().sort("key")
    r = runner.invoke(main, ["reshard", lake, "crashy", "--key-groups", "16"])
    assert r.exit_code == 0, r.output
    assert "16 key groups" in r.output
    pipe = Pipeline.open(Store(lake), "crashy")
    assert pipe.checkpoints()["key_groups"].to_list()[-1] == 16
    assert pipe.state().sort("key").equals(before)
    assert runner.invoke(main, ["verify", lake, "crashy", "--replay"]).exit_code == 0
    r = runner.invoke(main, ["reshard", lake, "crashy", "--key-groups", "12"])
    assert r.exit_code == 2 and "power of two" in r.output


def test_run_final_applies_the_events_waiting_for_the_watermark(
    runner: CliRunner, tmp_path: Path
) -> None:
    job = tmp_path / "late_job.py"
    job.write_text(
        "import datetime as dt\n"
        "import polars as pl\n"
        "import streamkit as sk\n"
        f"store = sk.Store({str(tmp_path / 'lake')!r})\n"
        "log = store.log('ev', key='k', time='t')\n"
        "if log.count() == 0:\n"
        "    log.append(pl.DataFrame({'k': ['a', 'b'], 't': [10, 30], 'ev': ['go', 'go']}))\n"
        "m = sk.Machine('m', states=['idle', 'busy'], initial='idle', final=['idle'],\n"
        "               transitions=[('idle', 'go', 'busy'), ('busy', 'stop', 'idle')])\n"
        "pipeline = (sk.Pipeline('late', store).read(log)\n"
        "            .transitions(m, event='ev', lateness=100)\n"
        "            .write(store.log('h', key='key', time='time')))\n"
    )
    r = runner.invoke(main, ["run", str(job), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["run", str(job), "--no-progress", "--final"])
    assert r.exit_code == 0, r.output
    from streamkit.storage import Store

    history = Store(str(tmp_path / "lake")).log("h").scan().collect()
    assert history["key"].to_list() == ["a", "b"]  # both waited until --final
