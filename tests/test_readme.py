"""The README's Python code runs verbatim, from any folder, and is safe to run twice.

A newcomer copies the quick start into a file and runs it somewhere outside the
repository, then runs it again. Both runs must succeed, and the second must add
nothing: no events appended twice, no outputs changed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

import streamkit as sk

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def readme_code() -> str:
    """Every ```python block of the README, in order, as one script."""
    blocks = _BLOCK.findall(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python code block"
    return "\n".join(blocks)


def _run(script: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"  # plots draw off-screen
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _snapshot(lake: Path) -> dict[str, pl.DataFrame]:
    """What the README's code leaves in ``lake``: every log's rows, every pipeline's
    state and quarantine."""
    store = sk.Store(str(lake))
    out = {name: store.log(name).scan().collect() for name in store.logs()}
    pipelines = sorted(p.name for p in (lake / "_pipelines").iterdir())
    assert pipelines, "the README's code ran no pipeline"
    for name in pipelines:
        pipe = sk.Pipeline.open(store, name)
        out[f"{name} state"] = pipe.state().sort("key")
        out[f"{name} quarantine"] = pipe.quarantine()
    return out


def test_the_regex_finds_the_quick_start() -> None:
    code = readme_code()
    assert "sk.Store(" in code and ".run(" in code


def test_readme_code_runs_twice_from_any_folder(tmp_path: Path) -> None:
    cwd = tmp_path / "fresh"  # nowhere near the repository: relative paths into it fail
    cwd.mkdir()
    script = tmp_path / "readme_quickstart.py"
    script.write_text(readme_code(), encoding="utf-8")

    first = _run(script, cwd)
    assert first.returncode == 0, f"first run failed:\n{first.stderr}"
    lake = cwd / "lake"
    assert lake.is_dir(), "the quick start should create ./lake in the working folder"
    before = _snapshot(lake)
    assert all(frame.height > 0 for name, frame in before.items() if "quarantine" not in name)

    second = _run(script, cwd)
    assert second.returncode == 0, f"second run failed:\n{second.stderr}"
    after = _snapshot(lake)

    assert sorted(after) == sorted(before), "the second run created or lost a log"
    for name, frame in before.items():
        try:
            assert_frame_equal(after[name], frame)
        except AssertionError as exc:
            raise AssertionError(f"the second run changed {name!r}: {exc}") from None
