"""Independent consistency checks of a pipeline's checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit.errors import CorruptFileError, StreamkitError
from streamkit.pipeline._checkpoints import Checkpoint, CheckpointStore, FileRef
from streamkit.pipeline._eventtime import Reads
from streamkit.pipeline._executor import LocalExecutor
from streamkit.pipeline._keyed import ID, GroupedState
from streamkit.pipeline._operators import OFFSET, BatchContext
from streamkit.pipeline._report import VerifyReport
from streamkit.pipeline._transitions import Transitions, _check_state_table, _read_waiting
from streamkit.storage import Log, Position

if TYPE_CHECKING:
    from streamkit.pipeline.pipeline import Pipeline


def _guard(report: VerifyReport, name: str, fn: Callable[[], tuple[bool, str]]) -> bool:
    """Run one check; a streamkit error (a corrupt file, say) fails it with its message."""
    try:
        ok, message = fn()
    except (StreamkitError, OSError) as exc:
        return report.add(name, False, f"{type(exc).__name__}: {exc}")
    return report.add(name, ok, message)


def verify(pipe: Pipeline, checkpoint: int | None, *, replay: bool) -> VerifyReport:
    ckpts = pipe._ckpts()
    report = VerifyReport(pipe.name, checkpoint)
    holder: dict[str, Any] = {}

    def read_checkpoint() -> tuple[bool, str]:
        ids = ckpts.ids()
        if not ids:
            return False, "the pipeline has no checkpoint yet: run it first"
        cid = ids[-1] if checkpoint is None else checkpoint
        holder["cp"] = ckpts.read(cid)
        holder["latest"] = cid == ids[-1]
        report.checkpoint = cid
        return True, f"checkpoint {cid} parses and matches its checksum"

    if not _guard(report, "checkpoint file", read_checkpoint):
        return report
    cp: Checkpoint = holder["cp"]
    keyed = pipe._keyed_op()
    op = keyed if isinstance(keyed, Transitions) else None

    if op is not None:
        entry = cp.operators.get(op.op_id)
        if entry is None:
            report.add(
                "state file",
                cp.counts.get("batches", 0) == 0,
                "no state recorded for the transitions operator",
            )
        else:

            def check_state() -> tuple[bool, str]:
                table, detail = _read_state(ckpts, cp, entry)
                _check_state_table(table, detail)
                holder["state"] = table
                want = {"key", "state", "since", "last_time", "events"}
                if set(table.columns) != want:
                    return False, f"columns {table.columns}, expected {sorted(want)}"
                if table.height != int(entry.get("keys", -1)):
                    return False, f"{table.height} keys, the checkpoint says {entry.get('keys')}"
                if table["key"].n_unique() != table.height or table["key"].null_count():
                    return False, "keys are not unique and non-null"
                return True, f"{table.height:,} keys; {detail}"

            if _guard(report, "state file", check_state):
                table = holder["state"]

                def check_values() -> tuple[bool, str]:
                    unknown = set(table["state"].unique().to_list()) - set(op.machine.states)
                    if unknown:
                        return (
                            False,
                            f"states not in machine {op.machine.name!r}: {sorted(unknown)}",
                        )
                    bad = table.filter(
                        (pl.col("since") > pl.col("last_time")) | (pl.col("events") < 0)
                    )
                    if bad.height:
                        return False, f"{bad.height} keys with since > last_time or events < 0"
                    wm = int(entry["watermark"])
                    if table.height and table["last_time"].cast(pl.Int64).max() > wm:
                        return False, f"a key's last_time is beyond the watermark {wm}"
                    return True, "states valid for the machine; times ordered; watermark bounds"

                _guard(report, "state values", check_values)

                def check_counts() -> tuple[bool, str]:
                    applied = cp.counts.get("applied", 0)
                    total = int(table["events"].sum())
                    if total != applied:
                        return (
                            False,
                            f"keys' events add up to {total}, checkpoint applied {applied}",
                        )
                    return True, f"per-key events add up to {applied:,}"

                _guard(report, "counts", check_counts)

    def check_position() -> tuple[bool, str]:
        if _planned(pipe.source) and cp.source_state is not None:
            return _check_file_position(pipe.source, cp)
        start, end = pipe.source.start().offset, pipe.source.end().offset
        if not (start <= cp.position <= end) and not (
            cp.position <= end and cp.counts.get("batches", 0) == 0
        ):
            return False, f"read position {cp.position} is outside the log's [{start}, {end}]"
        return True, f"read position {cp.position:,} within the log's [{start:,}, {end:,}]"

    _guard(report, "source position", check_position)

    def check_source() -> tuple[bool, str]:
        source = pipe.source
        n_files = source.check_manifest()
        # What the next run reads (everything with replay, which reads it all):
        # sizes and checksums are verified on read.
        start = None if replay else Position(min(cp.position, source.end().offset))
        rows = source.scan(start=start).select(pl.len()).collect().item()
        what = "every segment" if replay else "every segment not yet processed"
        return True, f"{n_files} manifest files and {what} ({rows:,} rows) verified"

    if isinstance(pipe.source, Log):
        _guard(report, "source log", check_source)

    def check_output(log: Any, count_key: str, label: str) -> tuple[bool, str]:
        n_files = log.check_manifest()
        segs = log.segments()
        mine = segs.filter(pl.col("writer") == pipe.writer_id)
        rows = int(mine["rows"].sum()) if mine.height else 0
        # read every live segment: sizes and checksums are verified on read
        log.scan().select(pl.len()).collect()
        expected = cp.counts.get(count_key, 0)
        if holder["latest"] and rows != expected:
            txn = log.transaction(pipe.writer_id)
            pending = txn is not None and txn.seq == cp.id + 1
            if not pending:
                return (
                    False,
                    f"{label} holds {rows:,} rows of this pipeline, checkpoint says {expected:,}",
                )
        if not holder["latest"]:
            # An older checkpoint is a safe rewind target only if the outputs of its
            # batches are all still there: a later rewind to an earlier checkpoint
            # retracted them (the checkpoint is on an abandoned line).
            seq = pl.col("writer_seq")
            kept = seq <= cp.id
            for lo, hi in cp.retracted:
                kept = kept & ~seq.is_between(lo, hi)
            upto = int(mine.filter(kept)["rows"].sum()) if mine.height else 0
            if upto != expected:
                return False, (
                    f"{label} holds {upto:,} rows of this pipeline's batches up to "
                    f"{cp.id}, the checkpoint says {expected:,}: a later rewind to an earlier "
                    "checkpoint retracted them (this checkpoint is on an abandoned line), or "
                    "the log was truncated; do not rewind to it, choose another checkpoint"
                )
        return True, (
            f"{rows:,} rows; {n_files} manifest files and every segment's size and "
            "checksum verified"
        )

    if pipe.sink is not None:
        _guard(report, "output log", lambda: check_output(pipe.sink, "rows_out", "the output log"))
    if op is not None:
        _guard(
            report,
            "quarantine log",
            lambda: check_output(pipe._quarantine_log(), "quarantined", "the quarantine"),
        )

    if replay and op is not None and "state" in holder:
        _guard(report, "replay", lambda: _replay(pipe, cp, op, holder["state"]))
    elif replay:
        report.add("replay", False, "nothing to replay: no readable state")
    return report


def _planned(source: Any) -> bool:
    """Whether ``source`` is read through plans of files (a FileLog), not by offsets."""
    return hasattr(source, "plan") and hasattr(source, "read_batch")


def _check_file_position(source: Any, cp: Checkpoint) -> tuple[bool, str]:
    """A FileLog's or a DeltaLog's read position: what the checkpoint consumed.

    Offsets of a FileLog count the rows read, not the rows present (consumed
    files may be deleted), so the position is checked by planning from it: a
    consumed file that changed, or one that appeared below the watermark too
    late, fails the check naming the file (the plan raises); the files still
    to read are listed and read.
    """
    try:
        pos = Position.from_dict(cp.source_state or {})
    except (TypeError, ValueError) as exc:
        return False, f"checkpoint {cp.id}'s source position is malformed: {exc}"
    if pos.files is None or pos.offset != cp.position:
        return False, (
            f"checkpoint {cp.id} is at source offset {cp.position:,} but its source position "
            f"says {pos.offset:,}{'' if pos.files else ' without files'}: the checkpoint is "
            "inconsistent; rewind to an earlier checkpoint with run(from_checkpoint=...)"
        )
    plan = source.plan(pos)
    pending = plan.files
    rows = int(pending["rows"].sum()) if pending.height else 0
    return True, (
        f"read position {cp.position:,} ({source.describe(pos)}): planned again, no file "
        f"read has changed and none came late; {pending.height:,} files ({rows:,} rows) not "
        "yet read, all readable"
    )


def _file_batches(pipe: Pipeline, cp: Checkpoint) -> list[dict[str, Any]] | str | None:
    """The batches of files that led to ``cp``, in the order the runs read them.

    Each batch's files are stored with its outputs (the meta of its quarantine
    and output appends, see ``_Todo``); the batches on ``cp``'s line are those
    up to ``cp`` that no rewind retracted. Returns why they cannot be known
    (a str) if the history is incomplete, and None if the batches were stored
    without their files (older streamkit: offsets counted in path order).
    """
    metas: dict[int, dict[str, Any]] = {}
    found: list[dict[str, Any]] | str | None = "no batch output found"
    # the quarantine holds every batch of a pipeline with transitions; the
    # output log (perhaps shared, with a long history) only if it must
    for log in (pipe._quarantine_log(), pipe.sink):
        if log is None:
            continue
        for seq, meta in log.writer_history(pipe.writer_id).items():
            if seq <= cp.id and not any(lo <= seq <= hi for lo, hi in cp.retracted):
                metas.setdefault(seq, meta)
        found = _chain(metas, cp)
        if not isinstance(found, str):
            break
    return found


def _final_offsets(pipe: Pipeline, cp: Checkpoint) -> list[int]:
    """Source offsets of the end-of-input batches on ``cp``'s line."""
    found: list[int] = []
    for log in (pipe._quarantine_log(), pipe.sink):
        if log is None:
            continue
        for seq, meta in log.writer_history(pipe.writer_id).items():
            on_line = seq <= cp.id and not any(lo <= seq <= hi for lo, hi in cp.retracted)
            if on_line and meta.get("final"):
                found.append(int(meta["start"]))
        if found:
            break
    return found


def _chain(metas: dict[int, dict[str, Any]], cp: Checkpoint) -> list[dict[str, Any]] | str | None:
    """The batch descriptions of ``metas`` if they cover ``[0, cp.position)`` one after another."""
    batches: list[dict[str, Any]] = []
    pos = 0
    for seq in sorted(metas):
        meta = metas[seq]
        lo, hi = int(meta.get("start", -1)), int(meta.get("end", -1))
        if meta.get("final") and lo == hi == pos:
            batches.append({"final": True})
            continue
        if lo != pos:
            return (
                f"batch {seq} in the output logs reads source offsets [{lo:,}, {hi:,}), the "
                f"batch before it ended at {pos:,}: the output logs' history is incomplete"
            )
        if meta.get("source") is None:
            if cp.source_state is None:
                return None
            return (
                f"batch {seq} was stored without its files (by an older streamkit): the "
                "files it read are unknown"
            )
        batches.append(meta["source"])
        pos = hi
    if pos != cp.position:
        return (
            f"the batches in the output logs end at source offset {pos:,}, checkpoint "
            f"{cp.id} at {cp.position:,}: the output logs' history is incomplete"
        )
    return batches


def _read_state(
    ckpts: CheckpointStore, cp: Checkpoint, entry: dict[str, Any]
) -> tuple[pl.DataFrame, str]:
    """Read a keyed operator's whole state as ``verify`` checks it, and describe it.

    Every file of every key group's chain is read and checked (size, checksum,
    record batch rows, and that each key hashes to the group holding it).
    """
    waits = ""
    if entry.get("waiting_files"):  # events waiting for the watermark (lateness)
        waiting = _read_waiting(entry["waiting_files"], ckpts, int(entry["watermark"]))
        if waiting.height != int(entry.get("waiting", -1)):
            raise CorruptFileError(
                f"the waiting-event files of checkpoint {cp.id} hold {waiting.height:,} events "
                f"after the watermark, the checkpoint says {entry.get('waiting')}; restore "
                "them, or rewind to an older checkpoint with run(from_checkpoint=N)"
            )
        waits = f"; {waiting.height:,} events waiting in {len(entry['waiting_files'])} files"
    if entry.get("state") is None:  # format 1: one file
        ref = FileRef.from_dict(entry["state_file"])
        return ckpts.read_state(ref), f"one state file {ref.path}; size and checksum match"
    grouped = GroupedState(cp.key_groups)
    table = grouped.restore(entry["state"], ckpts, check_groups=True, check=_check_state_table)
    table = table.drop(ID) if table.height else Transitions.empty_state()
    chains = [c for c in grouped.chains if c]
    files = {path for chain in chains for path, _, _ in chain}
    longest = max((len(c) for c in chains), default=0)
    return table, (
        f"{len(chains)} of {cp.key_groups} key groups hold keys, in {len(files)} state files "
        f"(longest chain {longest}){waits}; sizes, checksums, rows and key groups match"
    )


def _replay(
    pipe: Pipeline, cp: Checkpoint, op: Transitions, saved: pl.DataFrame
) -> tuple[bool, str]:
    """Recompute the state from the log start to the checkpoint and compare.

    A FileLog is replayed batch by batch on the files each batch read, in the
    order the runs read them (stored with the batches' outputs): files that
    arrived out of name order replay as they were processed. Consumed files
    that were deleted since make a replay impossible (the check says which).
    """
    source = pipe.source
    start = source.start().offset
    batches = _file_batches(pipe, cp) if _planned(source) else None
    if isinstance(batches, str):
        return False, f"cannot replay: {batches}"
    if batches is not None:
        gone = _gone(source, batches)
        if gone:
            shown = ", ".join(repr(p) for p in gone[:3]) + (", ..." if len(gone) > 3 else "")
            return False, (
                f"cannot replay: {len(gone):,} file(s) the batches up to checkpoint {cp.id} "
                f"read are gone from {source.url} ({shown}). Consumed files may be deleted "
                "(runs and verify() without replay do not need them), but a replay "
                "recomputes the state from every file read: restore them to replay"
            )
    elif cp.counts.get("rows_in", 0) and start > 0:
        first = source.segments()
        if first.height and int(first["offset"].min()) > 0:
            return False, f"the log was truncated (starts at offset {start}): cannot replay"
    fresh = [o.fresh(on_undefined="ignore") if o is op else o.fresh() for o in pipe.operators]
    replayer = next(o for o in fresh if isinstance(o, Transitions))
    replayer.open(None, pipe._ckpts(), cp.key_groups)
    executor = LocalExecutor()

    # End-of-input batches (run(final=True)) moved the watermark at these offsets.
    finals = sorted(_final_offsets(pipe, cp)) if replayer.lateness else []
    empty = pl.DataFrame(schema=dict(source.schema or {})).with_columns(
        pl.lit(0, pl.Int64).alias(OFFSET)
    )

    def frames() -> Iterator[tuple[pl.LazyFrame, bool]]:
        if batches is not None:
            for desc in batches:
                if desc.get("final"):
                    yield empty.lazy(), True
                else:
                    yield source.read_batch(desc, with_offset=OFFSET), False
            return
        pos, step = start, max(pipe.batch_rows, 1)
        pending = list(finals)
        while pos < cp.position or pending:
            if pending and pending[0] <= pos:
                pending.pop(0)
                yield empty.lazy(), True
                continue
            hi = min(pos + step, cp.position, *(pending[:1]))
            yield source.scan(start=Position(pos), end=Position(hi), with_offset=OFFSET), False
            pos = hi

    for read, final in frames():
        ctx = BatchContext(key=source.key, time=source.time, executor=executor, final=final)
        batch = read.collect()
        ctx.reads = Reads.of(batch, source.time, OFFSET)
        lf = batch.lazy()
        for o in fresh:
            lf = o.process(lf, ctx)
        lf.collect()
    if replayer.lateness:
        held = int(cp.operators.get(op.op_id, {}).get("waiting", 0))
        if replayer.waiting.height != held:
            return False, (
                f"replay leaves {replayer.waiting.height:,} events waiting for the watermark, "
                f"the checkpoint {held:,}"
            )
    got = replayer.state_frame().sort("key")
    want = saved.sort("key")
    if got.height != want.height:
        return False, f"replay gives {got.height:,} keys, the checkpoint holds {want.height:,}"
    if not got.equals(want):
        diff = got.join(want, on="key", how="full", suffix="_checkpoint").filter(
            (pl.col("state") != pl.col("state_checkpoint"))
            | (pl.col("since") != pl.col("since_checkpoint"))
            | (pl.col("events") != pl.col("events_checkpoint"))
            | (pl.col("last_time") != pl.col("last_time_checkpoint"))
        )
        sample = diff.head(3).to_dicts()
        entry = cp.operators.get(op.op_id, {})
        used = entry.get("machines_used", [entry.get("machine")])
        why = ""
        if len(used) > 1 or (used and used[-1] != op.machine.fingerprint()):
            why = (
                f"; the checkpoint's state was built by {len(used)} machine version(s), the "
                "current machine differs from at least one: reprocess with "
                "run(from_checkpoint=0) so that one machine produced all of it"
            )
        return False, f"replayed state differs for {diff.height:,} keys, e.g. {sample}{why}"
    how = "" if batches is None else f" in {len(batches):,} batches of the files they read"
    return (
        True,
        f"replayed {cp.position - start:,} source rows{how}: state identical ({got.height:,} keys)",
    )


def _gone(source: Any, batches: list[dict[str, Any]]) -> list[str]:
    """Files the ``batches`` read that are no longer in the FileLog's folder."""
    paths = dict.fromkeys(
        str(item[0])
        for desc in batches
        for item in desc.get("files", ())  # finals: none
    )
    if not paths:
        return []
    nested = any("/" in p for p in paths)
    present = {str(d["path"]) for d in source.filesystem.find_details(recursive=nested)}
    return [p for p in paths if p not in present]
