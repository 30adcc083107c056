"""Keyed state cut into key groups and checkpointed incrementally.

Every key belongs to one of ``G`` key groups (``G`` a power of two, fixed when
the pipeline starts): ``key_hash(key) mod G``, the very hash that routes a
log's rows to partitions, so a log partition ``p`` of ``P`` (``P`` dividing
``G``) holds exactly the keys of groups ``g`` with ``g mod P == p``.

A group's state on disk is a chain: a *base* (every key of the group) followed
by *deltas* (only the keys whose state changed since the previous link). The
groups are dealt into *bands* (group ``g`` in band ``g mod B``, ``B`` from 1
to ``MAX_BANDS``, one per ``BAND_KEYS`` keys held). A checkpoint writes one
state file (Arrow IPC) per band it changed, its rows sorted by group then key
id: for every group the batch touched a delta, or a new base when the group
is compacted (a checkpoint with few rows writes them all into one file).
Checkpoints list, per group, the (file, first row, rows) links of its chain,
and every file once with its size and checksum::

    "state": {"key_groups": 256,
              "files": [{"path": "state/...arrow", "bytes": 1234, "crc32": 99}, ...],
              "groups": {"17": [[0, 3, 16012], [4, 0, 211]], ...}}

Chains are shortened from the state in memory, nothing read back, in two
ways. A *merge* replaces a group's deltas by one delta of every key changed
since its base (a flag per key records which); *compaction* replaces the whole
chain by a new base. A group is compacted on its own when a batch changes half
its keys (``REBASE_SHARE``) or its deltas would hold as many rows as its base
(``DELTA_RATIO``), and merged when its chain would pass ``MAX_CHAIN`` links.
Otherwise both go band by band: while the bands' chains hold more than
``MAX_CHAIN / 2`` links each on average, the band with the most links is
merged; while the deltas of all groups hold more than ``DELTA_BUDGET`` rows per
key held, the band with the most delta rows is compacted. The bands' chains
grow at one pace, and each is reset at its own time, so merges and compactions
spread out over the batches (never the whole state at once), and a band's old
files are freed together: a file holds one band. Bytes written per checkpoint
are therefore proportional to the keys a batch changed (a merge rewrites only
changed keys; a compaction, one band now and then, only once the deltas have
grown to a share of the state), restoring reads a bounded chain per group
whatever the number of checkpoints taken, and the state on disk stays within a
small multiple of one snapshot (``docs/design.md`` has the figures and the
estimate behind them).

Rows carry the key's id (``id``): ids are assigned in order of first
appearance, and a restored state keeps their order, so a resumed run orders
its output exactly as an uninterrupted one. State written by a Dask run (each
task numbers the keys of its own groups) repeats ids across groups; a restore
orders keys by (id, group) and numbers them afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from streamkit.errors import CheckpointError, ConfigurationError, CorruptFileError
from streamkit.pipeline._checkpoints import DEFAULT_KEY_GROUPS, FileRef, new_state_path
from streamkit.storage import key_hash

if TYPE_CHECKING:
    from streamkit.pipeline._checkpoints import CheckpointStore

__all__ = ["DEFAULT_KEY_GROUPS", "GroupedState", "check_key_groups", "group_of"]
MAX_KEY_GROUPS = 1 << 16
#: A group gets a new base when a batch changes this share of its keys ...
REBASE_SHARE = 0.5
#: ... or when its deltas would hold this many rows per row of its base.
DELTA_RATIO = 1.0
#: A group's deltas are merged into one when its chain would pass this many
#: links (base included; at least 2), and a band's when the bands' chains hold
#: more than half this many links each on average.
MAX_CHAIN = 32
#: Deltas of all groups together: at most this many rows per key held, else
#: the band with the most delta rows is compacted.
DELTA_BUDGET = 0.4
#: Bands: groups ``g`` with the same ``g mod bands`` share their state files.
#: One band per ``BAND_KEYS`` keys held, at most ``MAX_BANDS`` ...
MAX_BANDS = 8
BAND_KEYS = 100_000
#: ... and one file for every band when a checkpoint writes fewer rows than this.
POOL_ROWS = 16_384
#: Files a restore reads at once.
READERS = 8

ID = "id"

Link = tuple[str, int, int]  # (state file path, first row, rows)


def check_key_groups(value: Any) -> int:
    """Validate a key-group count: a power of two from 1 to 65,536.

    Examples
    --------
    >>> check_key_groups(64)
    64
    >>> check_key_groups(100)
    Traceback (most recent call last):
    ...
    streamkit.errors.ConfigurationError: key_groups must be a power of two ...
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or not 1 <= int(value) <= MAX_KEY_GROUPS
        or int(value) & (int(value) - 1)
    ):
        raise ConfigurationError(
            f"key_groups must be a power of two from 1 to {MAX_KEY_GROUPS:,} "
            f"(e.g. 64, 256, 1024), got {value!r}"
        )
    return int(value)


def group_of(keys: pl.Series, key_groups: int) -> npt.NDArray[np.int32]:
    """The key group of every key: the log's stable partition hash modulo ``key_groups``.

    Examples
    --------
    >>> from streamkit.storage import partition_of
    >>> keys = pl.Series(["a", "b", "c"])
    >>> (group_of(keys, 8) == partition_of(keys, 8)).all()
    np.True_
    """
    if key_groups == 1 or len(keys) == 0:
        return np.zeros(len(keys), dtype=np.int32)
    return (key_hash(keys) & np.uint64(key_groups - 1)).astype(np.int32)


def sorted_unique(parts: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    """The distinct ids of ``parts``, ascending: one sort and one comparison pass
    (``np.unique`` costs several times more on a batch's ids).

    Examples
    --------
    >>> sorted_unique([np.array([5, 1, 5]), np.array([1, 9])]).tolist()
    [1, 5, 9]
    """
    ids = np.concatenate([_NO_IDS, *parts])
    ids.sort()
    keep = np.empty(len(ids), dtype=bool)
    keep[:1] = True
    np.not_equal(ids[1:], ids[:-1], out=keep[1:])
    return ids[keep]


def _room(a: npt.NDArray[Any], n: int, used: int) -> npt.NDArray[Any]:
    """``a``, or a copy of its first ``used`` items with room for ``n`` (zeros
    after them), grown geometrically so that appending costs what is appended."""
    if n <= len(a):
        return a
    grown = np.zeros(max(n, 2 * len(a)), dtype=a.dtype)
    grown[:used] = a[:used]
    return grown


def _bands(keys: int, key_groups: int) -> int:
    """How many bands the groups of a state of ``keys`` keys are cut into."""
    return max(1, min(MAX_BANDS, key_groups, keys // BAND_KEYS))


@dataclass
class Changes:
    """What one checkpoint writes for a keyed operator: the rows of ``ids``
    (sorted by band, group, then id), rows ``start:stop`` into each of ``files``
    (path, start, stop)."""

    files: list[tuple[str, int, int]]
    ids: npt.NDArray[np.int64]
    chains: list[list[Link]]  # every group's chain once these files are written


class GroupedState:
    """Key-group membership, change tracking and chains of one keyed operator.

    The operator owns the per-key values (arrays indexed by key id); this
    object knows which group each id is in, which ids changed since the last
    checkpoint, and what files make up each group's state on disk.
    """

    def __init__(self, key_groups: int) -> None:
        self.key_groups = check_key_groups(key_groups)
        self._group = np.empty(16, dtype=np.int32)  # per key id, with room to grow
        self._n = 0
        self.sizes = np.zeros(key_groups, dtype=np.int64)  # keys per group
        self._members: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(key_groups)]
        self.chains: list[list[Link]] = [[] for _ in range(key_groups)]
        self.refs: dict[str, FileRef] = {}
        self._touched: list[npt.NDArray[np.int64]] = []
        self._mark = np.zeros(0, dtype=bool)  # scratch: one flag per key id
        # Per key id: changed since its group's base (its newest row on disk is
        # in a delta), what a merge of the group's deltas writes.
        self._dirty = np.zeros(0, dtype=bool)
        self._pending = 0  # ids in _touched, duplicates included
        self._rebase_all = False
        # The id each key has in the state files, when it is not its id here (a
        # state restored from several tasks' files, or some groups of it): a
        # group's chain must name a key by one id. None: the same.
        self._stored: npt.NDArray[np.int64] | None = None
        self._next_stored = 0

    def __len__(self) -> int:
        return self._n

    @property
    def group(self) -> npt.NDArray[np.int32]:
        """The key group of every key id."""
        return self._group[: self._n]

    @group.setter
    def group(self, groups: npt.NDArray[np.int32]) -> None:
        """Set every key's group (ids 0..n-1); sizes and members follow."""
        self._group, self._n = np.asarray(groups, dtype=np.int32), len(groups)
        self._dirty = np.zeros(self._n, dtype=bool)
        self.sizes = np.bincount(self._group, minlength=self.key_groups).astype(np.int64)
        self._members = [[] for _ in range(self.key_groups)]
        self._add_members(np.arange(self._n, dtype=np.int64), self._group)

    def stored(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The ids the keys ``ids`` have in state files (what checkpoints write)."""
        return ids if self._stored is None else self._stored[ids]

    def _set_stored(self, stored: npt.NDArray[np.int64]) -> None:
        """Keys 0..n-1 have these ids in the state files; new keys get fresh ones."""
        n = len(stored)
        if n == 0 or np.array_equal(stored, np.arange(n)):
            self._stored = None
        else:
            self._stored = np.asarray(stored, dtype=np.int64)
            self._next_stored = int(stored.max()) + 1

    def _add_members(self, ids: npt.NDArray[np.int64], groups: npt.NDArray[np.int32]) -> None:
        """Append ``ids`` (ascending) to their groups' member lists."""
        if len(ids) == 0:
            return
        order = np.argsort(groups, kind="stable")
        counts = np.bincount(groups, minlength=self.key_groups)
        start = 0
        for g in np.flatnonzero(counts):
            stop = start + int(counts[g])
            self._members[g].append(ids[order[start:stop]])
            start = stop

    def members(self, g: int) -> npt.NDArray[np.int64]:
        """The key ids of group ``g``, ascending."""
        chunks = self._members[g]
        if not chunks:
            return _NO_IDS
        if len(chunks) > 1:
            chunks[:] = [np.concatenate(chunks)]
        return chunks[0]

    # -------------------------------------------------------------- tracking
    def add_keys(self, keys: pl.Series) -> None:
        """Register keys that just got the next ids (in id order)."""
        groups = group_of(keys, self.key_groups)
        n = self._n + len(groups)
        self._group = _room(self._group, n, self._n)
        self._dirty = _room(self._dirty, n, self._n)  # new keys: False until taken
        self._group[self._n : n] = groups
        self._add_members(np.arange(self._n, n, dtype=np.int64), groups)
        if self._stored is not None:  # unique in every group: above every id stored
            self._stored = _room(self._stored, n, self._n)
            self._stored[self._n : n] = np.arange(
                self._next_stored, self._next_stored + len(groups), dtype=np.int64
            )
            self._next_stored += len(groups)
        self._n = n
        self.sizes += np.bincount(groups, minlength=self.key_groups)

    def touch(self, ids: npt.NDArray[np.int64]) -> None:
        """Mark keys whose state may have changed."""
        if len(ids):
            self._touched.append(np.asarray(ids, dtype=np.int64))
            self._pending += len(ids)
            if self._pending > max(1 << 22, 4 * self._n):  # many batches, no take(): fold
                self._touched = [self._take_touched(self._n)]
                self._pending = len(self._touched[0])

    def _take_touched(self, n: int) -> npt.NDArray[np.int64]:
        """The distinct ids touched since the last call, ascending (and forget them).

        Few ids (under 1/16 of the keys, duplicates included) are sorted; more
        are marked, a flag per key, and found in one pass over the flags (a few
        milliseconds for millions of keys, whatever the batch).
        """
        if not self._touched:
            return _NO_IDS
        if 16 * self._pending < n:  # few: sorting them beats a pass over every key
            ids = sorted_unique(self._touched)
            self._touched, self._pending = [], 0
            return ids
        self._mark = _room(self._mark, n, len(self._mark))
        for ids in self._touched:
            self._mark[ids] = True
        self._touched, self._pending = [], 0
        touched = np.flatnonzero(self._mark[:n]).astype(np.int64)
        self._mark[touched] = False
        return touched

    def regroup(self, key_groups: int, keys: pl.Series) -> None:
        """Cut the keys into ``key_groups`` groups; the next checkpoint rewrites every base."""
        self.key_groups = check_key_groups(key_groups)
        self.group = group_of(keys, key_groups)
        self.chains = [[] for _ in range(key_groups)]
        self._rebase_all = True
        self._stored = None  # every base is written anew

    def take(self) -> Changes:
        """Decide what the next checkpoint writes, and advance the chains to it.

        Groups without a base get one, and so does a group that is due: this
        batch changed ``REBASE_SHARE`` of its keys or more, or its deltas would
        hold as many rows as its base (``DELTA_RATIO``). A group whose chain
        would pass ``MAX_CHAIN`` links is *merged*: its deltas become one delta
        of every key changed since its base, written from memory (a key's
        newest state once, however many deltas held it). Then, band by band:

        * while the bands' chains hold more than ``MAX_CHAIN / 2`` links each
          on average, the band with the most links is merged;
        * while the deltas of all groups hold more than ``DELTA_BUDGET`` rows
          per key held, the band with the most delta rows is compacted: every
          group of it gets a new base, so that no older file of the band's is
          listed any more.

        The bands reach the budgets one after the other, so they are merged
        and compacted one at a time, spread over the batches, and no batch
        rewrites the whole state. Every other changed group gets a delta of
        its changed keys.
        """
        n, groups = len(self.group), self.key_groups
        touched = self._take_touched(n)
        touched_group = self.group[touched]
        changed = np.bincount(touched_group, minlength=groups)
        has_keys = self.sizes > 0
        dirty = self._dirty
        dirty[touched] = True  # changed since the group's base, unless it gets a new one
        chain_len = np.array([len(c) for c in self.chains], dtype=np.int64)
        base_rows = np.array([c[0][2] if c else 0 for c in self.chains], dtype=np.int64)
        delta_rows = np.array([sum(link[2] for link in c[1:]) for c in self.chains], np.int64)
        bands = _bands(n, groups)
        band = np.arange(groups) % bands
        merge = np.zeros(groups, dtype=bool)
        merged: dict[int, npt.NDArray[np.int64]] = {}  # keys changed since the base
        if self._rebase_all:
            rebase = has_keys.copy()
        else:
            after = delta_rows + changed  # delta rows of each group after this batch
            rebase = has_keys & (chain_len == 0)  # a group's first write is its base
            rebase |= (changed > 0) & (
                (changed >= REBASE_SHARE * self.sizes)
                | (after >= DELTA_RATIO * np.maximum(base_rows, 1))
            )
            merge = (changed > 0) & (chain_len + 1 > MAX_CHAIN) & ~rebase
            links = np.where(rebase, 1, np.where(merge, 2, chain_len + (changed > 0)))
            band_links = np.zeros(bands, dtype=np.int64)
            np.maximum.at(band_links, band, links)
            max_links = max(bands, 2) * (MAX_CHAIN + 1) // 2
            for _ in range(bands):
                if band_links.sum() <= max_links:
                    break
                b = int(np.argmax(band_links))
                merge |= (band == b) & (chain_len > 1) & ~rebase
                band_links[b] = 2
            for g in np.flatnonzero(merge).tolist():
                members = self.members(g)
                merged[g] = members[dirty[members]]
                after[g] = len(merged[g])
            band_rows = np.bincount(band, np.where(rebase, 0, after), bands)
            for _ in range(bands):
                if band_rows.sum() <= DELTA_BUDGET * n:
                    break
                b = int(np.argmax(band_rows))
                rebase |= (band == b) & has_keys  # all of it: its files go together
                band_rows[b] = 0
            merge &= ~rebase
        self._rebase_all = False
        # Rows go band by band, group by group, then by id: a rebased group
        # writes its every key, a merged one its keys changed since its base,
        # another its touched keys (sorted by group rank: a stable radix sort).
        order = np.lexsort((np.arange(groups), band))  # groups in (band, group) order
        rank = np.empty(groups, dtype=np.int32)
        rank[order] = np.arange(groups, dtype=np.int32)
        is_delta = ~(rebase | merge)[touched_group]
        delta_ids, delta_group = touched[is_delta], touched_group[is_delta]
        narrow = np.int16 if groups <= 1 << 15 else np.int32
        delta_ids = delta_ids[np.argsort(rank[delta_group].astype(narrow), kind="stable")]
        delta_count = np.bincount(delta_group, minlength=groups)
        parts: list[npt.NDArray[np.int64]] = []
        counts = np.zeros(groups, dtype=np.int64)
        at = 0
        for g in order.tolist():
            if rebase[g]:
                part = self.members(g)
                dirty[part] = False
            elif merge[g]:
                part = merged[g]
            elif delta_count[g]:
                part = delta_ids[at : at + int(delta_count[g])]
                at += len(part)
            else:
                continue
            parts.append(part)
            counts[g] = len(part)
        ids = np.concatenate([_NO_IDS, *parts]).astype(np.int64, copy=False)
        if len(ids) == 0:
            return Changes([], ids, [list(c) for c in self.chains])
        # One file per band, so that a band's compaction frees its files whatever
        # the other bands do; one file for all when the bands do not matter (a
        # checkpoint with few rows).
        band_count = np.bincount(band, counts, bands).astype(np.int64)
        pooled = bands == 1 or len(ids) < POOL_ROWS
        files: list[tuple[str, int, int]] = []
        start = 0
        for b in [0] if pooled else np.flatnonzero(band_count).tolist():
            stop = len(ids) if pooled else start + int(band_count[b])
            files.append((new_state_path(), start, stop))
            start = stop
        pos, at = 0, 0
        for g in order.tolist():
            rows = int(counts[g])
            if rows:
                while pos >= files[at][2]:
                    at += 1
                path, file_start, _ = files[at]
                link = (path, pos - file_start, rows)
                if rebase[g]:
                    self.chains[g] = [link]
                elif merge[g]:
                    self.chains[g] = [self.chains[g][0], link]
                else:
                    self.chains[g] = [*self.chains[g], link]
                pos += rows
        return Changes(files, ids, [list(c) for c in self.chains])

    # ---------------------------------------------------------- checkpoints
    def entry(self, changes: Changes, written: list[FileRef]) -> dict[str, Any]:
        """The checkpoint's ``state`` entry once ``changes`` is written as ``written``."""
        for ref in written:
            self.refs[ref.path] = ref
        files: dict[str, int] = {}
        groups: dict[str, list[list[int]]] = {}
        for g, chain in enumerate(changes.chains):
            if chain:
                groups[str(g)] = [
                    [files.setdefault(path, len(files)), first, rows] for path, first, rows in chain
                ]
        if len(self.refs) > 2 * len(files) + 64:  # forget files no chain uses any more
            self.refs = {path: self.refs[path] for path in files}
        return {
            "key_groups": self.key_groups,
            "files": [self.refs[path].to_dict() for path in files],
            "groups": groups,
        }

    @staticmethod
    def parse(entry: Any, where: str) -> tuple[int, list[FileRef], dict[int, list[Link]]]:
        """Validate a ``state`` entry: (key groups, files, chain per group).

        Raises
        ------
        CorruptFileError
            Naming ``where``, for anything malformed.
        """
        try:
            groups = check_key_groups(entry["key_groups"])
            files = [FileRef.from_dict(f, where) for f in entry["files"]]
            chains: dict[int, list[Link]] = {}
            for name, links in entry["groups"].items():
                g = int(name)
                if not 0 <= g < groups or not links:
                    raise ValueError(f"group {name!r}")
                chain = []
                for fi, first, rows in links:
                    if not (0 <= int(fi) < len(files) and int(first) >= 0 and int(rows) > 0):
                        raise ValueError(f"link {[fi, first, rows]} of group {g}")
                    chain.append((files[int(fi)].path, int(first), int(rows)))
                chains[g] = chain
        except CorruptFileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, ConfigurationError) as exc:
            raise CorruptFileError(
                f"corrupt file {where}: a keyed state entry is malformed ({exc}); restore "
                "it, or rewind to an older checkpoint with run(from_checkpoint=N)"
            ) from None
        return groups, files, chains

    def restore(
        self,
        entry: dict[str, Any],
        ckpts: CheckpointStore,
        *,
        only: set[int] | None = None,
        check_groups: bool = False,
        check: Callable[[pl.DataFrame, str], None] | None = None,
    ) -> pl.DataFrame:
        """Read the rows of a ``state`` entry (every group, or the groups in ``only``).

        Reads only the files the chains of those groups list, each once;
        returns the newest row of every key, ordered by (id, group) -- the
        caller numbers the keys 0..n-1 in that order -- and takes over the
        chains of those groups. ``check(frame, path)`` vets every record batch read (the
        operator's columns and types) before anything else uses it;
        ``check_groups`` also checks that every key hashes to the group that
        holds it (what ``verify`` does).

        Raises
        ------
        CheckpointError
            A listed file is missing.
        CorruptFileError
            A file fails its size or checksum, a record batch's rows differ
            from its link, or ids are out of range.
        """
        where = ckpts.where("checkpoint")
        groups, files, chains = self.parse(entry, where)
        if groups != self.key_groups:
            raise CheckpointError(
                f"state entry has {groups} key groups, the operator {self.key_groups}"
            )
        wanted = {g: c for g, c in chains.items() if only is None or g in only}
        refs = {f.path: f for f in files}
        needed = sorted({path for chain in wanted.values() for path, _, _ in chain})

        def read(path: str) -> pl.DataFrame:
            return self._read_file(ckpts, refs[path], check)

        if len(needed) > 1:
            with ThreadPoolExecutor(min(READERS, len(needed))) as pool:  # I/O, zstd: no GIL
                tables = dict(zip(needed, pool.map(read, needed), strict=True))
        else:
            tables = {path: read(path) for path in needed}
        parts: list[pl.DataFrame] = []
        meta: list[tuple[int, str]] = []  # (group, path) of every part
        in_delta: list[bool] = []  # every part: a delta (not its group's base)
        for g in sorted(wanted):
            for k, (path, first, rows) in enumerate(wanted[g]):
                table = tables[path]
                if first + rows > table.height:
                    raise CorruptFileError(
                        f"state file {ckpts.where(path)} has {table.height} rows, the checkpoint "
                        f"lists rows {first}..{first + rows - 1} of it for key group {g}; "
                        "restore it, or rewind to an older checkpoint with run(from_checkpoint=N)"
                    )
                parts.append(table.slice(first, rows))
                meta.append((g, path))
                in_delta.append(k > 0)
        self.refs.update(refs)
        for g, chain in wanted.items():
            self.chains[g] = list(chain)
        if not parts:
            self.group = np.empty(0, dtype=np.int32)
            self._stored = None
            return pl.DataFrame()
        try:
            every = pl.concat(parts, how="vertical_relaxed", rechunk=True)
        except pl.exceptions.PolarsError as exc:
            raise CorruptFileError(
                f"state files of {where} do not share one schema ({exc}); restore them, or "
                "rewind to an older checkpoint with run(from_checkpoint=N)"
            ) from None
        part = np.repeat(np.arange(len(parts)), [p.height for p in parts])
        part_group = np.array([g for g, _ in meta], dtype=np.int64)
        pos = _newest(every[ID].to_numpy(), part_group[part], groups, where)
        latest = every[pos]
        row_group = part_group[part[pos]].astype(np.int32)
        if check_groups:
            wrong = np.flatnonzero(group_of(latest["key"], groups) != row_group)
            if len(wrong):
                g, path = meta[part[pos[wrong[0]]]]
                raise CorruptFileError(
                    f"state file {ckpts.where(path)} holds {len(wrong)} key(s) in key group {g} "
                    f"that belong to other groups (e.g. {latest['key'][int(wrong[0])]!r}); "
                    "restore it, or rewind to an older checkpoint with run(from_checkpoint=N)"
                )
        self.group = row_group
        self._dirty = np.array(in_delta, dtype=bool)[part[pos]]
        self._set_stored(latest[ID].cast(pl.Int64).to_numpy())
        return latest

    @staticmethod
    def _read_file(
        ckpts: CheckpointStore, ref: FileRef, check: Callable[[pl.DataFrame, str], None] | None
    ) -> pl.DataFrame:
        """One state file as a frame, checked (size, checksum, types, ``check``)."""
        batches = ckpts.read_state_batches(ref)
        frame = pl.from_arrow(pa.Table.from_batches(batches)) if batches else pl.DataFrame()
        assert isinstance(frame, pl.DataFrame)
        if check is not None:
            check(frame, ckpts.where(ref.path))
        if ID not in frame.columns or not frame.schema[ID].is_integer():
            raise CorruptFileError(
                f"state file {ckpts.where(ref.path)} lacks an integer {ID!r} column; restore it, "
                "or rewind to an older checkpoint with run(from_checkpoint=N)"
            )
        return frame


_NO_IDS = np.empty(0, dtype=np.int64)


def _newest(
    ids: npt.NDArray[np.int64], row_group: npt.NDArray[np.int64], groups: int, where: str
) -> npt.NDArray[np.int64]:
    """Rows holding the newest state of every key, ordered by (id, group).

    Within a group a key's id is unique and its links run base -> deltas, so
    the last row of an (id, group) pair is the key's newest. A state written
    by one process has ids unique over all groups; one written by several
    (a Dask run: each task numbers its own keys) repeats ids across groups,
    and (id, group) orders the keys deterministically. The caller numbers the
    keys 0..n-1 in the order returned.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return _NO_IDS
    if int(ids.min()) < 0 or int(ids.max()) >= (1 << 62) // max(groups, 1):
        raise CorruptFileError(
            f"state files of {where} hold key ids out of range: a file was replaced or "
            "tampered with; restore it, or rewind to an older checkpoint with "
            "run(from_checkpoint=N)"
        )
    size = int(ids.max()) + 1
    if size <= 2 * len(ids) + 1024:  # dense ids (one writer): the last row of each id
        pos = np.full(size, -1, dtype=np.int64)
        np.maximum.at(pos, ids, np.arange(len(ids), dtype=np.int64))
        if bool((row_group == row_group[pos[ids]]).all()):  # no id in two groups
            return pos[pos >= 0]
    pair = ids * groups + row_group
    order = np.argsort(pair, kind="stable")  # equal pairs keep their base -> delta order
    ordered = pair[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = ordered[1:] != ordered[:-1]
    return order[last].astype(np.int64)
