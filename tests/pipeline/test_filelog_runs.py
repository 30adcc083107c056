"""Pipelines over a FileLog read every dropped file exactly once."""

from __future__ import annotations

from pathlib import Path

import polars as pl

import streamkit as sk


def _rows(name: str, n: int, start: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"k": [f"{name}{i % 3}" for i in range(n)], "t": list(range(start, start + n)),
         "id": [f"{name}-{i}" for i in range(n)]}
    )


def _copy_pipe(store: sk.Store, folder: str) -> sk.Pipeline:
    files = sk.FileLog(folder, "*.parquet", key="k", time="t")
    return sk.Pipeline("copy", store, batch_rows=7).read(files).write(
        store.log("out", key="k", time="t")
    )


def test_a_file_arriving_out_of_name_order_is_read_once(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    _rows("a", 10, 0).write_parquet(folder / "a.parquet")
    _rows("c", 10, 100).write_parquet(folder / "c.parquet")
    store = sk.Store(str(tmp_path / "lake"))
    assert _copy_pipe(store, str(folder)).run(progress=False).rows_in == 20
    _rows("b", 10, 50).write_parquet(folder / "b.parquet")
    assert _copy_pipe(store, str(folder)).run(progress=False).rows_in == 10
    ids = store.log("out").scan().collect()["id"].to_list()
    assert sorted(ids) == sorted(f"{n}-{i}" for n in "abc" for i in range(10))


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
    ids = store.log("out").scan().collect()["id"].to_list()
    assert sorted(ids) == sorted(f"{n}-{i}" for n in "abc" for i in range(10))
