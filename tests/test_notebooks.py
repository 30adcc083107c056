"""The example notebooks run from top to bottom, show figures and are committed clean.

Each notebook is executed with nbclient in a fresh IPython kernel of *this*
interpreter: the test writes a private ``python3`` kernelspec whose argv is
``sys.executable`` and puts it first on ``JUPYTER_PATH``, so that a user's or the
system's ``python3`` kernelspec can never run the notebooks with another Python (a
last cell checks ``sys.prefix`` inside the kernel).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
ipykernel_kernelspec = pytest.importorskip("ipykernel.kernelspec")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = (
    "01-quickstart.ipynb",
    "02-recovery-and-corrections.ipynb",
    "03-tier2-on-s3.ipynb",
    "04-protocol-states.ipynb",
)
#: Printed by a cell the test appends to each notebook, to see which Python ran it.
PREFIX_PROBE = "import sys; print('sys.prefix=' + sys.prefix)"


def _paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_four_notebooks_exist() -> None:
    assert tuple(p.name for p in _paths()) == EXPECTED


@pytest.mark.parametrize("path", _paths(), ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.fixture(scope="module")
def jupyter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data dir holding a ``python3`` kernelspec that runs this interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    ipykernel_kernelspec.write_kernel_spec(
        str(root / "kernels" / "python3"), overrides={"display_name": "streamkit tests"}
    )
    return root


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    # A non-inline backend (MPLBACKEND=Agg is common in CI) would swallow the figures;
    # ipykernel picks its inline backend only when MPLBACKEND is unset.
    env.pop("MPLBACKEND", None)
    # Warnings-as-errors is for the test process; the notebooks run as users run them.
    env.pop("PYTHONWARNINGS", None)
    return env


def _outputs(nb: Any) -> list[tuple[int, Any]]:
    return [
        (i, out)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.outputs
    ]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", _paths(), ids=lambda p: p.stem)
def test_notebook_runs(
    path: Path, jupyter_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # JUPYTER_PATH comes first in the kernelspec search path: our ``python3`` wins.
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_dir))
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PREFIX_PROBE))
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=240,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # Raises CellExecutionError, with the cell's source and traceback, if any cell fails.
    client.execute(env=_kernel_env())

    outputs = _outputs(nb)
    errors = [(i, o) for i, o in outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: cells raised {[(i, o.ename, o.evalue) for i, o in errors]}"

    probe = nb.cells[-1].outputs
    assert probe and probe[0].get("text", "").strip() == f"sys.prefix={sys.prefix}", (
        f"{path.name} ran in another Python than {sys.executable}: {probe}"
    )

    stderr = [(i, o.text) for i, o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{path.name}: cells wrote to stderr (warnings?): {stderr}"

    images = [i for i, o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} displayed no figure"
