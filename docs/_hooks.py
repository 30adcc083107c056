"""MkDocs hook: execute the notebooks before the site is built.

The notebooks are committed without outputs. Before MkDocs collects its files, this
hook runs each of ``notebooks/*.ipynb`` from top to bottom with nbclient, in a fresh
IPython kernel of the interpreter running MkDocs (a private ``python3`` kernelspec
put first on ``JUPYTER_PATH``), with a
temporary folder as working directory, and writes the executed copies to
``docs/notebooks/`` (git-ignored), which mkdocs-jupyter then renders with their
figures. A cell that raises fails the build. The S3 notebook starts its own
throwaway SeaweedFS server on 127.0.0.1 (or uses ``STREAMKIT_S3_ENDPOINT``).

The docstrings use Sphinx roles (:class:`~streamkit.Log`); ``on_page_content``
turns each into a link to the API page where the target is documented (plain code
otherwise), instead of showing the role's markup.

``STREAMKIT_DOCS_EXECUTE=0`` copies the notebooks without running them (a quick
preview; the pages then show no outputs).
"""

from __future__ import annotations

import concurrent.futures
import html
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

log = logging.getLogger("mkdocs.hooks.notebooks")
ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "notebooks"
#: A Sphinx role as mkdocstrings renders it: ``:class:<code>~streamkit.Log</code>``.
ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):<code>(~?)([\w.]+)</code>")


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # ipykernel chooses its inline backend only when unset
    env.pop("PYTHONWARNINGS", None)  # the notebooks run as users run them
    return env


def _execute(path: Path, out: Path, workdir: Path) -> float:
    import nbclient
    import nbformat

    start = time.perf_counter()
    nb = nbformat.read(path, as_version=4)
    # A last cell, removed again, proves the kernel ran this Python, not another python3.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=240,
        allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=_kernel_env())
    probe = nb.cells.pop().outputs
    ran = probe[0].get("text", "").strip() if probe else "nothing"
    if ran != sys.prefix:
        raise PluginError(f"notebooks/{path.name} ran in {ran}, not in {sys.prefix}")
    tmp = out.with_suffix(".ipynb.part")
    nbformat.write(nb, tmp)
    tmp.replace(out)
    return time.perf_counter() - start


def on_config(config: Any) -> Any:
    target = Path(config["docs_dir"]) / "notebooks"
    target.mkdir(exist_ok=True)
    paths = sorted(SOURCE.glob("*.ipynb"))
    for stale in set(target.glob("*.ipynb")) - {target / p.name for p in paths}:
        stale.unlink()  # a notebook removed from notebooks/ leaves no page behind
    if os.environ.get("STREAMKIT_DOCS_EXECUTE", "1") == "0":
        for path in paths:
            shutil.copyfile(path, target / path.name)
        log.info("STREAMKIT_DOCS_EXECUTE=0: notebooks copied without running them")
        return config
    from ipykernel.kernelspec import write_kernel_spec

    with tempfile.TemporaryDirectory(prefix="streamkit-docs-") as tmp:
        jupyter = Path(tmp) / "jupyter"
        write_kernel_spec(str(jupyter / "kernels" / "python3"), overrides={"display_name": "docs"})
        previous = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = str(jupyter)  # our python3 kernelspec comes first
        try:
            workdirs = []
            for path in paths:
                workdirs.append(Path(tmp) / path.stem)
                workdirs[-1].mkdir()
            # Two at a time: a kernel mostly waits on numba/polars in its own process.
            with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
                futures = {
                    pool.submit(_execute, p, target / p.name, w): p
                    for p, w in zip(paths, workdirs, strict=True)
                }
                for future in concurrent.futures.as_completed(futures):
                    name = futures[future].name
                    try:
                        log.info("executed %s in %.1f s", name, future.result())
                    except Exception as exc:
                        raise PluginError(f"notebooks/{name} failed to run: {exc}") from exc
        finally:
            if previous is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = previous
    return config


def _role(match: re.Match[str]) -> str:
    tilde, name = match.groups()
    title = name.rsplit(".", 1)[-1] if tilde else name
    ident = name if name.startswith("streamkit.") else f"streamkit.{name}"
    return (
        f'<autoref identifier="{html.escape(ident)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


def on_page_content(content: str, **kwargs: Any) -> str:
    # Runs after mkdocstrings rendered the page; mkdocs-autorefs resolves the
    # <autoref optional> tags once every page is known (unresolved ones stay text).
    return ROLE.sub(_role, content)
