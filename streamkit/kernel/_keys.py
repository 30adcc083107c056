"""Keys of any dtype to dense integer ids.

Strings, binaries, integers and temporal keys go through a compiled exact hash
map over their bytes (:mod:`streamkit.kernel._hashmap`); other dtypes (booleans,
floats, categoricals, ...) through Polars hash joins.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

from streamkit.errors import SchemaError
from streamkit.kernel._hashmap import ByteKeyMap, Rows

__all__ = ["KeyIndex"]


class KeyIndex:
    """Map keys (strings, integers, any hashable Polars dtype) to dense int64 ids.

    Ids are positions in :attr:`keys`: the first key ever seen gets 0, and new
    keys get the next ids in order of first appearance. String, binary, integer
    and temporal keys are looked up in a compiled hash map over their bytes that
    compares the bytes of every match, so keys are never sorted and two keys with
    the same hash still get different ids; other dtypes use Polars hash joins.
    Keys must not be null (the log's key column is non-null).

    Examples
    --------
    >>> import polars as pl
    >>> index = KeyIndex()
    >>> index.lookup_or_insert(pl.Series(["b", "a", "b"])).tolist()
    [0, 1, 0]
    >>> index.lookup_or_insert(pl.Series(["c", "a"])).tolist()
    [2, 1]
    >>> index.keys.to_list(), len(index)
    (['b', 'a', 'c'], 3)
    """

    __slots__ = ("_map", "_table", "_tail")

    def __init__(self) -> None:
        self._table: pl.DataFrame | None = None
        self._tail: pl.DataFrame | None = None  # keys added since the last merge
        self._map: ByteKeyMap | None = None

    @classmethod
    def from_series(cls, keys: pl.Series) -> KeyIndex:
        """Rebuild an index whose key with id ``i`` is ``keys[i]`` (e.g. from a checkpoint).

        Raises
        ------
        SchemaError
            If ``keys`` holds nulls or duplicates.

        Examples
        --------
        >>> import polars as pl
        >>> index = KeyIndex.from_series(pl.Series([10, 20]))
        >>> index.lookup_or_insert(pl.Series([20, 30])).tolist()
        [1, 2]
        """
        _check_no_nulls(keys, "KeyIndex.from_series")
        index = cls()
        if keys.dtype == pl.Null:  # no keys, no dtype yet (e.g. an empty index's keys)
            return index
        index._table = pl.DataFrame(
            {
                "key": keys.rename("key"),
                "id": pl.int_range(0, len(keys), dtype=pl.Int64, eager=True),
            }
        )
        if _hashable(keys.dtype):
            index._map = ByteKeyMap()
            if keys.dtype in (pl.String, pl.Binary):
                nbytes = int(keys.cast(pl.Binary).bin.size().sum() or 0)
            else:
                nbytes = 8 * len(keys)
            index._map.reserve(len(keys), nbytes)  # no rehash while inserting them all
            _map_lookup(index._map, keys, insert=True)
            if len(index._map) != len(keys):  # the map found equal keys
                _refuse_duplicates(keys)
        else:
            _refuse_duplicates(keys)
        return index

    def __len__(self) -> int:
        if self._table is None:
            return 0
        return self._table.height + (0 if self._tail is None else self._tail.height)

    @property
    def dtype(self) -> pl.DataType | None:
        """The keys' dtype, fixed by the first keys seen (None before that)."""
        return None if self._table is None else self._table.schema["key"]

    @property
    def keys(self) -> pl.Series:
        """All keys, named ``key``; position is the id.

        Examples
        --------
        >>> import polars as pl
        >>> KeyIndex.from_series(pl.Series(["x", "y"])).keys.to_list()
        ['x', 'y']
        """
        if self._table is None:
            return pl.Series("key", [], dtype=pl.Null)
        if self._tail is None:
            return self._table["key"]
        if self._tail.height * 64 >= self._table.height:
            self._merge()  # one chunk: a gather from two costs ~4x more per row gathered
            return self._table["key"]
        return pl.concat([self._table["key"], self._tail["key"]], rechunk=False)

    def gather(self, ids: npt.NDArray[np.int64]) -> pl.Series:
        """The keys of ``ids``, named ``key`` (like ``keys.gather(ids)``, faster).

        Gathering many rows from keys held in several chunks costs more than
        merging the chunks first; this merges them when that is cheaper.

        Examples
        --------
        >>> import numpy as np
        >>> import polars as pl
        >>> index = KeyIndex.from_series(pl.Series(["x", "y"]))
        >>> index.gather(np.array([1, 1, 0])).to_list()
        ['y', 'y', 'x']
        """
        if self._tail is not None and 8 * len(ids) >= len(self):
            self._merge()
        return self.keys.gather(ids)

    def _merge(self) -> None:
        assert self._table is not None and self._tail is not None
        self._table, self._tail = pl.concat([self._table, self._tail], rechunk=True), None

    def lookup_or_insert(self, keys: pl.Series) -> npt.NDArray[np.int64]:
        """Return the id of each key, assigning new ids to keys never seen.

        Parameters
        ----------
        keys : polars.Series
            Non-null keys of the index's dtype (integers of another width are
            cast when every value fits).

        Returns
        -------
        numpy.ndarray of int64
            One id per row.

        Raises
        ------
        SchemaError
            If ``keys`` holds nulls or has a dtype other than the index's.

        Examples
        --------
        >>> import polars as pl
        >>> index = KeyIndex()
        >>> index.lookup_or_insert(pl.Series([7, 7, 3])).tolist()
        [0, 0, 1]
        """
        frame = self._frame(keys, "KeyIndex.lookup_or_insert")
        if frame.schema["key"] == pl.Null:  # an empty series without a dtype
            return np.empty(0, dtype=np.int64)
        if self._table is None:
            dtype = frame.schema["key"]
            self._table = pl.DataFrame(
                {"key": pl.Series("key", [], dtype=dtype), "id": []},
                schema={"key": dtype, "id": pl.Int64},
            )
            self._map = ByteKeyMap() if _hashable(dtype) else None
        if self._map is not None:
            keys = frame["key"]
            ids, new_rows = _map_lookup(self._map, keys, insert=True)
            if len(new_rows):
                start = len(self)
                self._append(
                    pl.DataFrame(
                        {
                            "key": keys.gather(new_rows),
                            "id": pl.int_range(
                                start, start + len(new_rows), dtype=pl.Int64, eager=True
                            ),
                        }
                    )
                )
            return ids
        ids = self._join(frame)
        missing = ids < 0
        if missing.any():
            new_keys = frame.filter(pl.Series(missing))["key"].unique(maintain_order=True)
            start = len(self)
            new = pl.DataFrame(
                {
                    "key": new_keys,
                    "id": pl.int_range(start, start + len(new_keys), dtype=pl.Int64, eager=True),
                }
            )
            self._append(new)
            sub = frame.filter(pl.Series(missing)).join(
                new, on="key", how="left", maintain_order="left"
            )
            ids[missing] = sub["id"].to_numpy()
        return ids

    def lookup(self, keys: pl.Series) -> npt.NDArray[np.int64]:
        """Return the id of each key, -1 for keys never seen; inserts nothing.

        Examples
        --------
        >>> import polars as pl
        >>> index = KeyIndex.from_series(pl.Series(["a"]))
        >>> index.lookup(pl.Series(["a", "z"])).tolist(), len(index)
        ([0, -1], 1)
        """
        if self._table is None:
            _check_no_nulls(keys, "KeyIndex.lookup")
            return np.full(len(keys), -1, dtype=np.int64)
        frame = self._frame(keys, "KeyIndex.lookup")
        if self._map is not None and frame.schema["key"] != pl.Null:
            return _map_lookup(self._map, frame["key"], insert=False)[0]
        return self._join(frame)

    def _frame(self, keys: pl.Series, where: str) -> pl.DataFrame:
        if not isinstance(keys, pl.Series):
            raise SchemaError(f"{where}: expected a polars Series of keys, found {type(keys)}")
        _check_no_nulls(keys, where)
        dtype = self.dtype
        if dtype is not None and keys.dtype not in (dtype, pl.Null):
            if keys.dtype.is_integer() and dtype.is_integer():
                try:
                    keys = keys.cast(dtype, strict=True)
                except pl.exceptions.InvalidOperationError as exc:
                    raise SchemaError(
                        f"{where}: keys of dtype {keys.dtype} do not fit the index's "
                        f"dtype {dtype}: {exc}"
                    ) from None
            else:
                raise SchemaError(
                    f"{where}: expected keys of dtype {dtype} (the dtype of the keys seen "
                    f"first), found {keys.dtype}; cast the key column consistently"
                )
        return keys.rename("key").to_frame()

    def _join(self, frame: pl.DataFrame) -> npt.NDArray[np.int64]:
        assert self._table is not None
        if frame.schema["key"] == pl.Null:  # empty (nulls were rejected)
            return np.full(frame.height, -1, dtype=np.int64)
        table = self._table if self._tail is None else pl.concat([self._table, self._tail])
        joined = frame.join(table, on="key", how="left", maintain_order="left")
        ids: npt.NDArray[np.int64] = joined["id"].fill_null(-1).to_numpy().astype(np.int64)
        return ids

    def _append(self, new: pl.DataFrame) -> None:
        assert self._table is not None
        # Few chunks: gathers from a Series of several chunks (every batch's
        # history keys) cost several times more per row than copying the keys
        # once. New keys go to a tail of at most 16 chunks, merged into the
        # one-chunk table once it reaches a quarter of it, or 1/64 of it when the
        # keys are read, or when a gather takes more than 1/8 of the keys: adding
        # keys costs in proportion to the keys added, not to all the keys held.
        tail = new if self._tail is None else pl.concat([self._tail, new], rechunk=False)
        if tail.height * 4 >= self._table.height:
            self._table, self._tail = pl.concat([self._table, tail], rechunk=True), None
        else:
            self._tail = tail.rechunk() if tail.n_chunks() > 16 else tail

    def __repr__(self) -> str:
        return f"KeyIndex({len(self)} keys, dtype={self.dtype})"


def _refuse_duplicates(keys: pl.Series) -> None:
    dup = keys.is_duplicated()
    if dup.any():
        first = keys.filter(dup)[0]
        raise SchemaError(
            f"KeyIndex.from_series: expected unique keys (position = id), found "
            f"{int(dup.sum())} rows with duplicated keys, e.g. {first!r}"
        )


def _hashable(dtype: pl.DataType) -> bool:
    """Dtypes whose values are their bytes: equal bytes exactly when equal values."""
    if dtype in (pl.Int128, pl.UInt128):
        return False
    return dtype in (pl.String, pl.Binary) or dtype.is_integer() or dtype.is_temporal()


def _map_lookup(
    table: ByteKeyMap, keys: pl.Series, *, insert: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """:meth:`ByteKeyMap.lookup` over every chunk of ``keys`` (no rechunking copy)."""
    if keys.n_chunks() == 1:
        return table.lookup(_key_rows(keys), insert=insert)
    ids, new_rows, start = [], [], 0
    for chunk in keys.get_chunks():
        chunk_ids, chunk_new = table.lookup(_key_rows(chunk), insert=insert)
        ids.append(chunk_ids)
        new_rows.append(chunk_new + start)
        start += len(chunk)
    return np.concatenate(ids), np.concatenate(new_rows)


def _key_rows(keys: pl.Series) -> Rows:
    """The keys (one chunk) as byte strings for :class:`ByteKeyMap`: Polars' own
    string views (exported zero-copy), or the machine bytes of fixed-width values."""
    if keys.dtype in (pl.String, pl.Binary):
        arr = keys.to_arrow(compat_level=pl.CompatLevel.newest())
        _, views, *buffers = arr.buffers()  # string_view / binary_view layout
        assert views is not None
        start, stop = 16 * arr.offset, 16 * (arr.offset + len(arr))
        # Views name their data buffer by position: keep every position.
        data = [
            np.frombuffer(b, dtype=np.uint8) if b is not None else np.empty(0, np.uint8)
            for b in buffers
        ]
        return Rows.from_views(np.frombuffer(views, dtype=np.uint8)[start:stop], data)
    # Widened to 8 bytes (distinct values stay distinct): one word per key.
    values = keys.to_physical().to_numpy()
    wide = values.astype(np.uint64 if values.dtype == np.uint64 else np.int64, copy=False)
    return Rows.from_fixed(np.ascontiguousarray(wide).view(np.uint8).reshape(-1), 8)


def _check_no_nulls(keys: pl.Series, where: str) -> None:
    nulls = keys.null_count()
    if nulls:
        first = int(keys.is_null().arg_max() or 0)
        raise SchemaError(
            f"{where}: keys must not be null, found {nulls} null key(s) (first at row "
            f"{first}); drop or fill them before the kernel (the log's key column is "
            f"non-null)"
        )
