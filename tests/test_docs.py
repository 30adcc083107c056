"""The documentation site builds, strictly, with every notebook executed.

``mkdocs build --strict`` turns every warning into an error: a broken link, a
docstring reference mkdocstrings cannot resolve, a missing included file. The
build's hook (``docs/_hooks.py``) executes the four notebooks first, so a cell
that raises fails it too. The test then checks that the generated pages hold what
they are generated from: the API from the docstrings, the CLI from click, the
schema from the package, the notebooks with their figures.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

# The docs tools are dev dependencies: missing, they fail the suite (the build
# is also the one execution of the notebooks), they are never skipped.
import mkdocs  # noqa: F401
import mkdocs_click  # noqa: F401
import mkdocs_jupyter  # noqa: F401
import mkdocstrings_handlers.python  # noqa: F401
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env.pop("STREAMKIT_DOCS_EXECUTE", None)  # CI always executes the notebooks
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-8000:]}"
    return out


def _page(site: Path, path: str) -> str:
    return (site / path / "index.html").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_api_reference_is_generated_from_the_docstrings(site: Path) -> None:
    api = _page(site, "reference/api")
    for name in ("Store", "Log", "FileLog", "Position", "Machine", "Pipeline", "RunReport"):
        assert f'id="streamkit.{name}"' in api, f"API page lacks streamkit.{name}"
    assert 'id="streamkit.Pipeline.run"' in api
    assert 'id="streamkit.errors.StreamkitError"' in _page(site, "reference/errors")
    assert 'id="streamkit.plot.process_map"' in _page(site, "reference/plot")
    assert 'id="streamkit.datasets.generate_orders"' in _page(site, "reference/datasets-machines")


@pytest.mark.slow
def test_cli_reference_lists_every_command(site: Path) -> None:
    from streamkit.cli import main

    cli = _page(site, "reference/cli")
    for name in main.commands:
        assert f"streamkit {name}" in cli, f"CLI page lacks `streamkit {name}`"


@pytest.mark.slow
def test_schema_page_shows_the_shipped_schema(site: Path) -> None:
    schema = json.loads((ROOT / "streamkit/machines/data/machine.schema.json").read_text())
    text = html.unescape(re.sub(r"<[^>]+>", "", _page(site, "reference/schema")))
    for prop in schema["properties"]:
        assert f'"{prop}":' in text, f"schema page lacks property {prop!r}"


@pytest.mark.slow
@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_page_shows_its_figures(site: Path, stem: str) -> None:
    page = _page(site, f"notebooks/{stem}")
    assert "data:image/png;base64," in page, f"{stem}: no figure on its page"
    assert "Traceback" not in page


@pytest.mark.slow
@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_executed_notebook_is_clean(site: Path, stem: str) -> None:
    """The copies the build executed: the committed cells, run without errors or stderr.

    This is the one execution of the notebooks in CI (the build's hook also
    checks that they ran in this interpreter's kernel).
    """
    nbformat = pytest.importorskip("nbformat")
    committed = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    executed = nbformat.read(ROOT / "docs" / "notebooks" / f"{stem}.ipynb", as_version=4)
    assert [c.source for c in executed.cells] == [c.source for c in committed.cells]
    outputs = [
        (i, out)
        for i, cell in enumerate(executed.cells)
        if cell.cell_type == "code"
        for out in cell.outputs
    ]
    errors = [(i, o.ename, o.evalue) for i, o in outputs if o.output_type == "error"]
    assert not errors, f"{stem}: cells raised {errors}"
    stderr = [(i, o.text) for i, o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{stem}: cells wrote to stderr (warnings?): {stderr}"
    assert any("image/png" in o.get("data", {}) for _, o in outputs), f"{stem}: no figure"


def test_site_output_is_git_ignored() -> None:
    for path in ("site/index.html", "docs/notebooks/01-quickstart.ipynb"):
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert proc.returncode == 0, f"{path} is not git-ignored"
