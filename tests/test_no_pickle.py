"""No pickle anywhere: not in streamkit's code, not in a single stored byte.

Stored data outlives the code that wrote it and may be written by someone else;
unpickling it would run whatever it says. streamkit stores JSON, Parquet and
Arrow IPC only, and refuses stored expressions that embed code.
"""

from __future__ import annotations

import ast
import base64
import json
import re
from pathlib import Path

import polars as pl
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
import pytest

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine

PACKAGE = Path(sk.__file__).resolve().parent
FORBIDDEN_MODULES = {"pickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
#: Other ways stored text could become code: pandas' pickles, YAML's unsafe loaders.
FORBIDDEN_ATTRIBUTES = {"read_pickle", "to_pickle", "unsafe_load", "full_load"}
FORBIDDEN_ATTRIBUTES |= {"UnsafeLoader", "FullLoader", "Loader"}
PICKLE_HEADERS = [bytes([0x80, proto]) + b"\x95" for proto in (4, 5)]  # PROTO n, FRAME
PICKLE_BASE64 = [base64.b64encode(h).decode()[:4] for h in PICKLE_HEADERS]  # "gASV", "gAWV"


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20 and PACKAGE / "pipeline" / "_checkpoints.py" in files
    return files


def _problems(tree: ast.AST) -> list[tuple[int, str]]:
    """Imports or uses of a pickle-like module; loaders told to unpickle."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in FORBIDDEN_MODULES:
                found.append((node.lineno, f"{node.value.id}.{node.attr}"))
            if node.attr in FORBIDDEN_ATTRIBUTES and node.value.id != "self":
                found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in {"eval", "exec"}:
                found.append((node.lineno, f"{node.func.id}()"))
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append((node.lineno, "allow_pickle="))
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "deserialize":
                # Polars' binary serialization pickles Python functions; only the
                # JSON form, checked by expr_from_json, may be read back.
                formats = [kw.value for kw in node.keywords if kw.arg == "format"]
                if not (
                    formats and isinstance(formats[0], ast.Constant) and formats[0].value == "json"
                ):
                    found.append((node.lineno, "deserialize() without format='json'"))
    return found


def test_no_pickle_in_the_source() -> None:
    bad = {}
    for path in _sources():
        found = _problems(ast.parse(path.read_text(), filename=str(path)))
        if found:
            bad[str(path.relative_to(PACKAGE))] = found
    assert bad == {}


def test_the_source_scan_finds_what_it_looks_for() -> None:
    sample = (
        "import pickle\nfrom cloudpickle import dumps\nimport dill as d\nmarshal.loads(b'')\n"
        "np.load(f, allow_pickle=True)\ndf.to_pickle('x')\npl.Expr.deserialize(f)\n"
        "pl.Expr.deserialize(f, format='json')\nyaml.load(t, Loader=yaml.Loader)\n"
        "yaml.unsafe_load(t)\neval('1')\nyaml.load(t, Loader=_Loader)\n"
    )
    lines = sorted({line for line, _ in _problems(ast.parse(sample))})
    assert lines == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11]


# ---------------------------------------------------------------------- stored files
def _kind(data: bytes) -> str:
    if data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        return "parquet"
    if data[:6] == b"ARROW1" and data[-6:] == b"ARROW1":
        return "arrow"
    if data[:1] == b"{":
        for line in data.splitlines():  # a JSON file (or NDJSON: a Delta commit) must parse
            json.loads(line)
        return "json"
    return "unknown"


def _holds_pickle(text: str) -> bool:
    """Pickle signatures in text: base64 of a pickle header, or a byte list of one."""
    if any(mark in text for mark in PICKLE_BASE64):
        return True
    ints = re.sub(r"\s", "", text)
    return bool(re.search(r"\[128,[2-5],", ints) or "[80,76,80,89," in ints)  # PROTO, "PLPY"


def _decoded_values(path: Path, kind: str) -> list[str]:
    """Every string or binary value and metadata entry of a Parquet or Arrow file."""
    if kind == "parquet":
        table = pq.read_table(path)
    else:
        with pa_ipc.open_file(path) as reader:
            table = reader.read_all()
    meta = table.schema.metadata or {}
    values = [k.decode("latin-1") + v.decode("latin-1") for k, v in meta.items()]
    for column in table.columns:
        if str(column.type) in {"string", "large_string", "string_view", "binary", "large_binary"}:
            for value in column.to_pylist():
                if isinstance(value, bytes):
                    assert not value.startswith(b"\x80"), (path, value[:20])
                    value = value.decode("latin-1")
                if value is not None:
                    values.append(value)
    return values


@pytest.mark.timeout(300)
def test_every_file_a_full_pipeline_writes_is_json_parquet_or_arrow(tmp_path: Path) -> None:
    """Appends (past a snapshot), a pipeline with filter, columns, a machine, an
    output log and a quarantine, incremental runs, a rewind, retention and a
    pipeline holding a Python function: every stored file is JSON, Parquet or
    Arrow IPC, and no byte, value or metadata entry in them is a pickle."""
    root = tmp_path / "lake"
    store = sk.Store(str(root))
    orders = generate_orders(120, span="3h", seed=3)
    source = store.log("orders", key="order_id", time="ts")
    for part in orders.iter_slices(200):
        source.append(part)
    udf = pl.col("amount").map_batches(lambda s: s > -1e9, return_dtype=pl.Boolean)
    for name, predicate in (("plain", pl.col("amount") >= 0), ("udf", udf)):
        pipe = (
            sk.Pipeline(name, store, keep_checkpoints=5)
            .read(store.log("orders"))
            .filter(predicate)
            .with_columns(event=pl.col("type").str.to_lowercase())
            .transitions(order_machine(), event="event")
            .write(store.log(f"history-{name}", key="key", time="time"))
        )
        pipe.run(batch_rows=12, progress=False)  # > 32 versions: snapshots and hints
        assert pipe.quarantine().height > 0
    source.append(generate_orders(10, span="1h", seed=4))
    pipe.run(progress=False)
    pipe.run(from_checkpoint=int(pipe.checkpoints()["id"][0]), progress=False)

    kinds: dict[str, int] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        kind = _kind(data)
        kinds[kind] = kinds.get(kind, 0) + 1
        assert kind != "unknown", (path, data[:16])
        assert not any(h in data for h in PICKLE_HEADERS), path
        values = [data.decode()] if kind == "json" else _decoded_values(path, kind)
        assert not any(_holds_pickle(v) for v in values), path
    assert kinds["json"] > 100 and kinds["parquet"] > 50 and kinds["arrow"] > 5, kinds
    assert list((root / "history-plain/_streamkit").glob("*.snapshot.json"))


def test_stored_expressions_that_embed_code_are_never_loaded() -> None:
    """A tampered plan holding a pickled function (under any key, at any depth)
    or a native plugin's library is refused before Polars sees it."""
    from streamkit.errors import CheckpointError
    from streamkit.pipeline._operators import expr_from_json

    udf = pl.col("a").map_batches(lambda s: s, return_dtype=pl.Int64)
    doc = json.loads(udf.meta.serialize(format="json"))
    payload = doc["AnonymousFunction"]["function"]
    assert payload[:6] == list(b"PLPYFN")
    hidden = [
        udf.meta.serialize(format="json"),
        json.dumps({"Column": "a", "x": [[payload]]}),
        json.dumps({"Function": {"function": {"FfiPlugin": {"lib": "/tmp/evil.so"}}}}),
        json.dumps({"Literal": {"Scalar": {"Binary": payload}}}),
    ]
    for text in hidden:
        with pytest.raises(CheckpointError, match="never unpickles"):
            expr_from_json(text)
    assert str(expr_from_json(pl.col("a").meta.serialize(format="json"))) == 'col("a")'
