"""The ``streamkit`` command line: a thin shell over the public API.

Exit codes: 0 success; 1 failure (message on stderr); 2 bad usage or
configuration; 3 another run of the same pipeline holds the lease.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import sys
import sysconfig
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from streamkit.errors import (
    ConfigurationError,
    LeaseError,
    LogNotFoundError,
    MachineError,
    SchemaError,
    StorageError,
    StreamkitError,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_LEASE = 0, 1, 2, 3
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"streamkit: {message}", err=True)
    sys.exit(code)


def _verbose() -> bool:
    """Whether ``streamkit -v`` was given."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("verbose"))


_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_LIBRARY_DIRS = tuple(
    sorted({str(Path(sysconfig.get_paths()[k]).resolve()) for k in ("stdlib", "purelib")})
)


def _is_user_file(filename: str) -> bool:
    """A frame of the user's code: not streamkit's, not the standard library's or a package's."""
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    where = str(Path(filename).resolve())
    return not where.startswith((_PACKAGE_DIR, *_LIBRARY_DIRS))


def _user_frame(exc: BaseException) -> str:
    """The innermost frame of the user's code in ``exc``'s traceback, as indented lines.

    Empty when the traceback holds no user frame.
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_user_file(f.filename)]
    if not frames:
        return ""
    f = frames[-1]
    text = f"\n  File {f.filename}:{f.lineno}, in {f.name}"
    if f.line:
        text += f"\n    {f.line.strip()}"
    return text


def _fail_exc(exc: BaseException, message: str, code: int, *, frame: bool = True) -> NoReturn:
    """Fail with ``message`` about ``exc``: the user's frame (if ``frame``), or with ``-v``
    the whole traceback -- for the user's code and bugs only: a streamkit error is a
    complete message, and its backend's exceptions (which may quote requests) are not
    shown."""
    if _verbose() and not isinstance(exc, StreamkitError):
        click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
        _fail(message, code)
    where = _user_frame(exc) if frame else ""
    hint = "\n  (run with -v for the whole traceback)" if where else ""
    _fail(f"{message}{where}{hint}", code)


def _storage_hint(message: str) -> tuple[str, int]:
    """A missing-credentials StorageError: add how to give credentials (exit 2)."""
    if "NoCredentialsError" not in message and "Unable to locate credentials" not in message:
        return message, EXIT_FAILURE
    ctx = click.get_current_context(silent=True)
    takes_options = ctx is not None and any(p.name == "options" for p in ctx.command.params)
    how = (
        "--option key=ACCESS_KEY --option secret=SECRET_KEY (and "
        '--option \'client_kwargs={"endpoint_url": "http://HOST:PORT"}\' for a store '
        "other than AWS)"
        if takes_options
        else "sk.Store(url, storage_options={'key': ..., 'secret': ...}) in the pipeline file"
    )
    return (
        f"{message}; no S3 credentials were found: give them with {how}, or set "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
        EXIT_USAGE,
    )


def _errors(fn: F) -> F:
    """Map streamkit errors to exit codes and one clear line on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LeaseError as exc:
            _fail_exc(exc, str(exc), EXIT_LEASE, frame=False)
        except (ConfigurationError, SchemaError, MachineError, LogNotFoundError) as exc:
            _fail_exc(exc, str(exc), EXIT_USAGE)
        except StorageError as exc:
            _fail_exc(exc, *_storage_hint(str(exc)))
        except StreamkitError as exc:
            _fail_exc(exc, str(exc), EXIT_FAILURE)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_FAILURE)
        except click.exceptions.Exit:
            raise
        except Exception as exc:  # the user's code (or a bug): its frame, all of it with -v
            _fail_exc(exc, f"{type(exc).__name__}: {exc}", EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--option key=value`` pairs (values parsed as JSON when they parse)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            _fail(f"--option takes key=value, got {pair!r}", EXIT_USAGE)
        k, v = pair.split("=", 1)
        if v[:1] in '{["':  # structured values (client_kwargs={...}) are JSON
            try:
                out[k] = json.loads(v)
                continue
            except ValueError:
                _fail(f"--option {k}: the value is not valid JSON", EXIT_USAGE)
        out[k] = {"true": True, "false": False}.get(v, v)  # everything else stays a string
    return out


def _store(url: str, options: tuple[str, ...]) -> Any:
    from streamkit.storage import Store

    try:
        return Store(url, storage_options=_options(options) or None)
    except StorageError as exc:  # unknown protocol, missing backend package: configuration
        _fail(str(exc), EXIT_USAGE)


def _load_pipeline(target: str) -> Any:
    from streamkit.pipeline import Pipeline

    path_s, _, name = target.partition(":")
    name = name or "pipeline"
    path = Path(path_s)
    if not path.is_file():
        _fail(f"pipeline file {path_s!r} does not exist", EXIT_USAGE)
    spec = importlib.util.spec_from_file_location(f"_streamkit_job_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        _fail(f"cannot import {path_s!r} as Python", EXIT_USAGE)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except StorageError as exc:
        if str(exc).startswith("cannot open store "):  # unknown protocol: configuration
            _fail_exc(exc, str(exc), EXIT_USAGE, frame=False)
        raise
    except StreamkitError:
        raise
    except Exception as exc:
        _fail_exc(exc, f"{path_s}: {type(exc).__name__}: {exc}", EXIT_USAGE)
    finally:
        sys.path.pop(0)
    obj = getattr(module, name, None)
    if obj is None:
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Pipeline))
        hint = f" (pipelines in the file: {', '.join(found)})" if found else ""
        _fail(f"{path_s} has no object named {name!r}{hint}", EXIT_USAGE)
    if callable(obj) and not isinstance(obj, Pipeline):
        obj = obj()
    if not isinstance(obj, Pipeline):
        _fail(f"{path_s}:{name} is a {type(obj).__name__}, not a streamkit Pipeline", EXIT_USAGE)
    return obj


EPILOG = (
    "Exit codes: 0 success; 1 failure (message on stderr); 2 bad usage or "
    "configuration; 3 another run of the same pipeline holds the lease."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.option("-v", "--verbose", is_flag=True, help="Log progress at INFO level.")
@click.version_option(package_name="streamkit")
def main(verbose: bool) -> None:
    """streamkit: resumable, stateful analytics over event logs."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


@main.command()
@click.option(
    "--store",
    "store_dir",
    default="./streamkit-demo",
    show_default=True,
    help="Local folder of the demo store.",
)
@click.option(
    "--orders",
    default=20_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Orders per simulated day.",
)
@_errors
def demo(store_dir: str, orders: int) -> None:
    """Run the main job on a local default store (run again: another day)."""
    from streamkit.demo import run_demo

    if "://" in store_dir:
        _fail(f"--store takes a local folder, got {store_dir!r}", EXIT_USAGE)
    run_demo(store_dir, orders=orders, echo=click.echo)


@main.command()
@click.argument("target", metavar="FILE.py[:NAME]")
@click.option(
    "--max-batches",
    type=click.IntRange(min=0),
    default=None,
    help="Stop after N micro-batches (default: until caught up).",
)
@click.option(
    "--batch-rows", type=click.IntRange(min=1), default=None, help="Source rows per micro-batch."
)
@click.option(
    "--from-checkpoint",
    type=click.IntRange(min=0),
    default=None,
    help="Rewind to checkpoint ID (0: the start) and reprocess from there.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar or log lines.")
@click.option(
    "--take-over",
    is_flag=True,
    default=False,
    help="Start even while another run of this pipeline is alive; it stops at its next commit.",
)
@click.option(
    "--final",
    is_flag=True,
    default=False,
    help="End of a bounded input: apply every event still waiting for the watermark "
    "(pipelines with .transitions(..., lateness=...)).",
)
@_errors
def run(
    target: str,
    max_batches: int | None,
    batch_rows: int | None,
    from_checkpoint: int | None,
    progress: bool | None,
    take_over: bool,
    final: bool,
) -> None:
    """Run the pipeline object NAME (default: pipeline) defined in FILE.py.

    Processes what arrived since the last checkpoint, prints the run's report,
    then exits. An error in FILE.py shows the line of FILE.py it came from
    (streamkit -v run ...: the whole traceback).

    \b
    A source log that has never had an append (often a typo in its name:
    store.log(name, key=..., time=...) creates a missing log) is reported by a
    warning on stderr naming the log and its store, and in the report; the exit
    code stays 0, as for any run with nothing new to process, so that a pipeline
    may be scheduled before its producer starts.
    """
    if progress is not False:
        logging.getLogger("streamkit").setLevel(logging.INFO)
        if not logging.getLogger().handlers:  # pragma: no cover - basicConfig ran
            logging.basicConfig(stream=sys.stderr)
    pipe = _load_pipeline(target)
    report = pipe.run(
        max_batches=max_batches,
        batch_rows=batch_rows,
        from_checkpoint=from_checkpoint,
        progress=progress,
        take_over=take_over,
        final=final,
    )
    click.echo(str(report))


@main.group()
def machine() -> None:
    """Work with state machine definitions."""


@machine.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def machine_check(path: str) -> None:
    """Validate a machine YAML file: exit 0 when valid, 1 with problems listed."""
    from streamkit.machines import Machine

    try:
        m = Machine.from_yaml(Path(path))
    except MachineError as exc:
        _fail(str(exc) if path in str(exc) else f"{path}: {exc}", EXIT_FAILURE)
    except OSError as exc:
        _fail(f"{path}: {exc}", EXIT_USAGE)
    report = m.validate()
    for p in report.problems:
        click.echo(f"{path}: {getattr(p, 'severity', 'error')}: {p.kind}: {p.message}")
    if not report.ok:
        sys.exit(EXIT_FAILURE)
    click.echo(f"{path}: machine {m.name!r} is valid ({len(m.states)} states)")


@main.group("log")
def log_group() -> None:
    """Inspect logs in a store."""


def _echo_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: set[int]) -> None:
    """Print ``rows`` under ``header`` in aligned columns (``right``: right-aligned ones)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        cells = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        click.echo("  ".join(cells).rstrip())


def _quarantine_logs(store: Any) -> list[tuple[str, str]]:
    """``(pipeline, path)`` of every pipeline quarantine log in ``store``."""
    found = []
    for name in store.filesystem.ls("_pipelines"):  # [] when there is no pipeline
        path = f"_pipelines/{name}/quarantine"
        if store.has_log(path):
            found.append((name, path))
    return found


@log_group.command("ls")
@click.argument("store_url")
@click.option("--option", "options", multiple=True, help="fsspec storage option key=value.")
@_errors
def log_ls(store_url: str, options: tuple[str, ...]) -> None:
    """List the logs of STORE_URL with their extent, pipelines' quarantine logs included."""
    store = _store(store_url, options)
    if "://" not in store_url and Path(store_url).is_file():
        _fail(f"{store_url!r} is a file, not a store folder", EXIT_USAGE)
    if "://" not in store_url and not Path(store_url).is_dir():
        _fail(f"store {store_url!r} does not exist (no such folder)", EXIT_USAGE)
    logs = [(name, store.log(name), "") for name in store.logs()]
    logs += [
        (path, store.log_at(path), f"quarantine of pipeline {pipeline!r}")
        for pipeline, path in _quarantine_logs(store)
    ]
    if not logs:
        click.echo(f"no logs in {store.url}")
        return
    rows = []
    for name, lg, note in logs:
        segs = lg.segments()
        rows.append(
            (
                name,
                f"{int(segs['rows'].sum()) if segs.height else 0:,}",
                str(segs.height),
                str(segs["min_time"].min()) if segs.height else "-",
                str(segs["max_time"].max()) if segs.height else "-",
                f"{lg.end().offset:,}",
                note,
            )
        )
    header = ("log", "rows", "segments", "first time", "last time", "end offset", "")
    _echo_table(header, rows, right={1, 2, 5})


@log_group.command("upgrade")
@click.argument("url")
@click.option("--option", "options", multiple=True, help="fsspec storage option key=value.")
@_errors
def log_upgrade(url: str, options: tuple[str, ...]) -> None:
    """Convert the logs at URL (a store, or one log's folder) to Delta Lake tables.

    Logs of streamkit's first format (a _log/ folder) are converted once, in
    place: the same versions, segments, offsets and writer transactions, so
    pipelines resume where they stopped. Stop every writer first. Running it
    again is safe. The _log/ folders are left; delete them when satisfied.
    """
    store = _store(url, options)
    if "://" not in url and not Path(url).is_dir():
        _fail(f"{url!r} is not a folder", EXIT_USAGE)
    done = store.upgrade_logs()
    if not done:
        click.echo(f"no log of the first format (_log/) in {store.url}; nothing to do")
        return
    for path, versions in done.items():
        shown = path or store.url
        if versions:
            click.echo(f"{shown}: {versions} versions converted to a Delta table")
        else:
            click.echo(f"{shown}: a Delta table already")


@main.command()
@click.argument("store_url")
@click.argument("pipeline")
@click.option("--option", "options", multiple=True, help="fsspec storage option key=value.")
@_errors
def checkpoints(store_url: str, pipeline: str, options: tuple[str, ...]) -> None:
    """List the checkpoints of PIPELINE in STORE_URL, oldest first.

    Columns: id, kind (batch, rewind, damaged...), created (UTC), position (the
    source offset read up to), and the pipeline's totals at that checkpoint:
    batches, rows_in, rows_out, quarantined. ``Pipeline.checkpoints()`` has all
    the fields.
    """
    from streamkit.pipeline import Pipeline

    table = Pipeline(pipeline, _store(store_url, options)).checkpoints()
    if table.height == 0:
        _fail(f"pipeline {pipeline!r} has no checkpoints in {store_url}", EXIT_FAILURE)
    columns = ("id", "kind", "created", "position", "batches", "rows_in", "rows_out", "quarantined")
    rows = []
    for row in table.sort("id").iter_rows(named=True):
        cells = []
        for c in columns:
            v = row.get(c)
            if v is None:
                cells.append("-")
            elif c == "created":
                cells.append(v.strftime("%Y-%m-%d %H:%M:%S"))
            elif isinstance(v, int) and c != "id":
                cells.append(f"{v:,}")
            else:
                cells.append(str(v))
        rows.append(tuple(cells))
    header = tuple("created (UTC)" if c == "created" else c for c in columns)
    _echo_table(header, rows, right={0, 3, 4, 5, 6, 7})


@main.command()
@click.argument("store_url")
@click.argument("pipeline")
@click.option(
    "--key-groups",
    type=int,
    required=True,
    help="The new number of key groups: a power of two from 1 to 65,536.",
)
@click.option(
    "--take-over",
    is_flag=True,
    default=False,
    help="Start even while a run of this pipeline is alive; it stops at its next commit.",
)
@click.option("--option", "options", multiple=True, help="fsspec storage option key=value.")
@_errors
def reshard(
    store_url: str, pipeline: str, key_groups: int, take_over: bool, options: tuple[str, ...]
) -> None:
    """Cut PIPELINE's per-key state into --key-groups key groups, once.

    Finishes a batch a crash left half-committed, then rewrites the state in
    the new groups as one checkpoint (kind "reshard"); no event is read and no
    output written. Build the pipeline with the new key_groups afterwards (or
    with none: a pipeline takes its own).
    """
    from streamkit.pipeline import Pipeline

    pipe = Pipeline.open(_store(store_url, options), pipeline)
    report = pipe.reshard(key_groups, progress=False, take_over=take_over)
    click.echo(f"pipeline {pipeline}: {key_groups} key groups from checkpoint {report.checkpoint}")


@main.command()
@click.argument("store_url")
@click.argument("pipeline")
@click.option("--replay", is_flag=True, help="Also recompute state from the log and compare.")
@click.option("--checkpoint", type=int, default=None, help="Checkpoint id (default: latest).")
@click.option("--option", "options", multiple=True, help="fsspec storage option key=value.")
@_errors
def verify(
    store_url: str, pipeline: str, replay: bool, checkpoint: int | None, options: tuple[str, ...]
) -> None:
    """Check PIPELINE's checkpoint independently; exit 1 if anything is wrong."""
    from streamkit.pipeline import Pipeline

    pipe = Pipeline.open(_store(store_url, options), pipeline)
    report = pipe.verify(checkpoint, replay=replay)
    click.echo(str(report))
    if not report.ok:
        sys.exit(EXIT_FAILURE)
