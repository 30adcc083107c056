"""The example notebooks exist and are committed clean (without outputs).

They are executed once per CI run, by the documentation build
(``docs/_hooks.py``, checked by ``tests/test_docs.py``): in a fresh kernel of this
interpreter, without errors or stderr, each showing a figure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = (
    "01-quickstart.ipynb",
    "02-recovery-and-corrections.ipynb",
    "03-tier2-on-s3.ipynb",
    "04-protocol-states.ipynb",
)


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
