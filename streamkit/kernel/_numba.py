"""The numba kernel: one pass over a batch's events, per-key state by random access.

The compiled functions see only flat arrays: every input array is passed as a
read-only view, the per-key records (see :mod:`streamkit.kernel._state`) and
the outputs as writable C-contiguous arrays, so there is exactly one
specialisation, compiled once and cached on disk (``cache=True``).

Where the time goes, and what the code does about it (10M events over 1M
Zipf keys):

- Each event reads and writes one random key: its four fields share one
  32-byte record, and the record of the key ``_PREFETCH_AHEAD`` events ahead
  is prefetched, so the loop rarely waits for memory.
- The outcome of an event depends on random data (its state, its event code),
  so the loop avoids data-dependent branches: rules 1, 4 and 5 are selects, and
  the timeout test is one unsigned comparison that is rarely true, with the
  exact (overflow-free) test behind it.
- The loops never allocate: numba would otherwise reference-count the output
  arrays on every iteration. Outputs are allocated by numpy (which asks the OS
  for huge pages, making first touches cheap); when the timeout buffers fill
  up, the loop returns, Python grows them and the loop resumes where it
  stopped (every timeout is written to the key's record as it fires, so
  resuming is exact).
- Indices are unsigned, so numba drops its negative-index handling.
- Validation (key ids, event codes) is one fused pass before any mutation.
- Large batches run in key parts on several threads (:mod:`._parallel`):
  ``_run_part`` walks one part's events, listed block by block without
  branches; one thread keeps the plain loop, ``_run_events``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, NoReturn

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from streamkit.errors import ConfigurationError
from streamkit.kernel._compile import CompiledMachine
from streamkit.kernel._parallel import (
    GROUP_SHIFT,
    Timeouts,
    in_parallel,
    parts_for,
)
from streamkit.kernel._result import BatchResult, readonly
from streamkit.kernel._state import KeyState, records

__all__ = ["check_batch", "ensure_compiled", "run_batch", "warmup"]

_logger = logging.getLogger("streamkit.kernel")
_COMPILING_NOTE = (
    "compiling the state-machine kernel (first run after installing or changing "
    "streamkit: a few seconds, once; cached on disk for later runs and processes)"
)
# "ready": this process has compiled or loaded the kernel; "warming": ensure_compiled
# is running warmup(), whose own run_batch calls (and any other thread's) pass through.
_kernel = {"ready": False, "warming": False}
_kernel_lock = threading.Lock()

_I64_MIN = np.iinfo(np.int64).min
_I64_MAX = np.iinfo(np.int64).max
_EMPTY_I64 = np.empty(0, dtype=np.int64)
_EMPTY_I64.setflags(write=False)

# Columns of the per-state timeout table handed to the kernel (see _timeout_table).
_HAS, _AFTER, _LIM, _TO, _SPAN = 0, 1, 2, 3, 4
_NCOL = 5  # columns of that table
_RW = 4  # int64 slots of a key's record
# How the inner loops stop: done, timeout buffers full (grow and resume), bad state code.
_DONE, _FULL, _BAD = 0, 1, 2
# Prefetch the record of the key this many events ahead: the key's record is
# random access into a table of millions of keys, so without it nearly every
# event waits for a cache miss.
_PREFETCH_AHEAD = 32
# Room for listed events in _run_part: the listing pass works in blocks of
# _LISTED - _PREFETCH_AHEAD events (two int64 lists: 32 KB, within L1).
_LISTED = 2048


@intrinsic
def _prefetch_row(typingctx: Any, records: Any, row: Any) -> Any:  # pragma: no cover - compiled
    """Hint the CPU to fetch ``records[row]`` of a 1-d array (no fault, no effect on results)."""
    sig = types.void(records, row)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        rec_type = signature.args[0]
        array = context.make_array(rec_type)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
            context, builder, rec_type, array, [args[1]], wraparound=False
        )
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, fnty, "llvm.prefetch.p0"
        )
        # read, high temporal locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _at(row: Any, col: int) -> Any:  # pragma: no cover - compiled
    """Index of ``(row, col)`` in the flat timeout table (unsigned arithmetic)."""
    return np.uint64(row) * np.uint64(_NCOL) + np.uint64(col)


@numba.njit(cache=True, nogil=True, inline="always")
def _maybe_due(tmo: Any, row: Any, since: Any, wm: Any) -> Any:  # pragma: no cover - compiled
    """A cheap superset of :func:`_due`: one unsigned comparison, so one branch.

    ``wm - since`` computed modulo 2**64 is the exact distance when ``wm >=
    since``; column ``_SPAN`` is ``after`` as unsigned, or 2**64 - 1 for states
    without a timeout. Every due key passes; the rare false positives (``since >
    wm``, or a distance of exactly 2**64 - 1) are weeded out by ``_due``.
    """
    return np.uint64(wm) - np.uint64(since) >= np.uint64(tmo[_at(row, _SPAN)])


@numba.njit(cache=True, nogil=True, inline="always")
def _due(tmo: Any, row: Any, since: Any, wm: Any) -> Any:  # pragma: no cover - compiled
    """Whether the state of tmo ``row`` (entered at ``since``) has a timeout with
    ``since + after <= wm``.

    Exact and overflow-free for all int64 values: with ``lim = int64 min +
    after``, ``wm >= lim`` makes ``wm - after`` representable.
    """
    lim = tmo[_at(row, _LIM)]
    return (tmo[_at(row, _HAS)] != 0) and wm >= lim and since <= wm - tmo[_at(row, _AFTER)]


@numba.njit(cache=True, nogil=True, inline="always")
def _fire_chain(
    k: Any,
    s: Any,
    since: Any,
    last: Any,
    wm: Any,
    before: Any,
    tmo: Any,
    t_key: Any,
    t_time: Any,
    t_from: Any,
    t_to: Any,
    t_before: Any,
    m: Any,
    m_end: Any,
    rec: Any,
    r: Any,
) -> Any:  # pragma: no cover - compiled
    """Rules 2 and 6: fire key k's due timeouts, chained, while ``_due``.

    Precondition: ``_due(tmo, s + 1, since, wm)``. Rows go to the ``t_*``
    buffers from ``m`` on, up to ``m_end`` (the end of the caller's region);
    the key's state, since and last go to its record at ``rec[r:]``. Returns
    ``(s, since, last, m, full)``; ``full`` means the buffers ran out with
    timeouts still due (the record so far is consistent, so the caller can
    grow the buffers and call again).
    """
    full = False
    while True:
        if m == m_end:
            full = True
            break
        deadline = since + tmo[_at(s + 1, _AFTER)]
        nxt = tmo[_at(s + 1, _TO)]
        t_key[m] = k
        t_time[m] = deadline
        t_from[m] = s
        t_to[m] = nxt
        t_before[m] = before
        m += np.uint64(1)
        s = nxt
        since = deadline
        last = max(last, deadline)
        if not _due(tmo, s + 1, since, wm):
            break
    rec[r] = s
    rec[r + np.uint64(1)] = since
    rec[r + np.uint64(2)] = last
    return s, since, last, m, full


@numba.njit(cache=True, nogil=True, inline="always")
def _wm_before(i0: Any, i: Any, wm: Any, times: Any) -> Any:  # pragma: no cover - compiled
    """The watermark before event ``i``, from the one before event ``i0``."""
    for v in range(i0, i):
        wm = max(wm, times[v])
    return wm


@numba.njit(cache=True, nogil=True)
def _run_events(
    i0: int,
    wm: int,
    table1: Any,
    tmo: Any,
    initial: int,
    key_ids: Any,
    events: Any,
    times: Any,
    rec: Any,
    wm_given: Any,
    use_given: bool,
    from_s: Any,
    to_s: Any,
    status: Any,
    t_key: Any,
    t_time: Any,
    t_from: Any,
    t_to: Any,
    t_before: Any,
    m: int,
    m_end: int,
) -> Any:  # pragma: no cover - compiled; covered against the reference by the tests
    """Rules 1-5 for events ``i0..n-1`` of every key; returns ``(i, wm, m, code)``.

    ``code`` is ``_DONE`` (``i == n``), ``_FULL`` (the timeout buffers are full
    before event ``i``; ``wm`` is the watermark before it, so calling again
    from ``i`` resumes exactly) or ``_BAD`` (key ``key_ids[i]`` holds a state
    code outside ``[-1, n_states)``; nothing of event ``i`` was applied).
    No allocation happens here, so the loop carries no reference counting.
    Timeout rows go to the ``t_*`` buffers from row ``m`` up to ``m_end``.

    :func:`_run_part` applies the same rules to one key part; the two bodies
    are kept in step (numba cannot share them: an inlined function taking
    arrays costs reference counting on every event), and the property tests
    pit both against the reference.
    """
    n = key_ids.shape[0]
    n_states = np.uint64(tmo.shape[0] // _NCOL - 1)
    width = np.uint64(table1.shape[0]) // n_states  # columns of table1: events + 1
    # Indices are unsigned (all are >= 0, checked by the caller): numba then
    # skips its negative-index wraparound code, a good share of the loop's work.
    # The arrays are flat (1-d) so that an index is a shift and an add.
    u_last = np.uint64(n - 1)
    ahead = np.uint64(_PREFETCH_AHEAD)
    rw = np.uint64(_RW)
    mu = np.uint64(m)
    mu_end = np.uint64(m_end)
    for u in range(np.uint64(i0), np.uint64(n)):
        _prefetch_row(rec, np.uint64(key_ids[min(u + ahead, u_last)]) * rw)  # type: ignore[call-arg]
        r = np.uint64(key_ids[u]) * rw
        t = times[u]
        wm_before = wm
        wm = wm_given[u] if use_given else max(wm, t)
        # Slot 0 holds the int32 state in its low half (the high half is padding).
        s0 = np.int64(np.int32(rec[r]))
        since0 = rec[r + np.uint64(1)]
        last0 = rec[r + np.uint64(2)]
        row0 = np.uint64(s0 + 1)  # tmo row: 0 for "never seen"
        if row0 > n_states:  # s0 outside [-1, n_states)
            return np.int64(u), wm_before, np.int64(mu), _BAD
        # Rule 1, without a branch: a key's first event puts it in the initial state.
        first = s0 < 0
        s = initial if first else s0
        since = t if first else since0
        last = t if first else last0
        # Rule 2: timeouts due before this event (row 0 of tmo has none).
        if _maybe_due(tmo, row0, since0, wm) and not first and _due(tmo, row0, since, wm):
            s, since, last, mu, full = _fire_chain(
                np.int64(key_ids[u]), s, since, last, wm, np.int64(u), tmo,
                t_key, t_time, t_from, t_to, t_before, mu, mu_end, rec, r,
            )  # fmt: skip
            if full:
                return np.int64(u), wm_before, np.int64(mu), _FULL
        from_s[u] = s
        if t < last:
            # Rule 3: late; changes nothing.
            status[u] = 2
            to_s[u] = s
            continue
        # Rules 4 and 5, without branches: column 0 of table1 is event -1 (undefined).
        target = table1[np.uint64(s) * width + np.uint64(events[u] + 1)]
        fired = target >= 0
        new_s = target if fired else s
        status[u] = 0 if fired else 1
        to_s[u] = new_s
        rec[r] = new_s
        rec[r + np.uint64(1)] = t if fired else since
        rec[r + np.uint64(2)] = t
        rec[r + np.uint64(3)] += 1
    return n, wm, np.int64(mu), _DONE


@numba.njit(cache=True, nogil=True)
def _run_part(
    i0: int,
    wm: int,
    part: int,
    mask: int,
    table1: Any,
    tmo: Any,
    initial: int,
    key_ids: Any,
    events: Any,
    times: Any,
    rec: Any,
    wm_given: Any,
    use_given: bool,
    from_s: Any,
    to_s: Any,
    status: Any,
    t_key: Any,
    t_time: Any,
    t_from: Any,
    t_to: Any,
    t_before: Any,
    m: int,
    m_end: int,
    own: Any,
    own_wm: Any,
) -> Any:  # pragma: no cover - compiled; covered against the reference by the tests
    """Rules 1-5 for the events ``i0..n-1`` of the keys of part ``part``: those
    with ``(key >> GROUP_SHIFT) & mask == part``; returns ``(i, wm, m, code)``
    as :func:`_run_events` does.

    Skipping the other parts' events with a branch would mispredict on half of
    them, so events are listed first: a branch-free pass appends a block's
    events of this part, with their watermarks, to the lists ``own`` and
    ``own_wm`` (``len(own) - _PREFETCH_AHEAD`` events per block), and the main
    loop walks the lists. The last ``_PREFETCH_AHEAD`` listed events wait for
    the next block (they move to the front), so the prefetch always has an
    event that far ahead.
    """
    n = np.uint64(key_ids.shape[0])
    n_states = np.uint64(tmo.shape[0] // _NCOL - 1)
    width = np.uint64(table1.shape[0]) // n_states  # columns of table1: events + 1
    # Indices are unsigned (all are >= 0, checked by the caller): numba then
    # skips its negative-index wraparound code, a good share of the loop's work.
    # The arrays are flat (1-d) so that an index is a shift and an add.
    ahead = np.uint64(_PREFETCH_AHEAD)
    rw = np.uint64(_RW)
    mu = np.uint64(m)
    mu_end = np.uint64(m_end)
    upart = np.uint64(part)
    umask = np.uint64(mask)
    block = np.uint64(own.shape[0]) - ahead  # room for `ahead` held-back events
    wm0 = wm
    lo = np.uint64(i0)  # next event to list
    tail = np.uint64(0)  # end of the listed events; those held back come first
    while True:
        if lo < n:
            # List the next block's events of this part, without branches.
            hi = min(lo + block, n)
            for v in range(lo, hi):
                wm = wm_given[v] if use_given else max(wm, times[v])
                own[tail] = v
                own_wm[tail] = wm
                tail += np.uint64(((np.uint64(key_ids[v]) >> GROUP_SHIFT) & umask) == upart)
            lo = hi
        # Run the listed events, holding the last `ahead` of them back until the
        # next block is listed, so that the prefetch always looks `ahead` events on.
        stop = tail if lo == n else tail - min(tail, ahead)
        last_j = max(tail, np.uint64(1)) - np.uint64(1)
        for j in range(stop):
            u = np.uint64(own[j])
            ahead_u = np.uint64(own[min(j + ahead, last_j)])
            _prefetch_row(rec, np.uint64(key_ids[ahead_u]) * rw)  # type: ignore[call-arg]
            r = np.uint64(key_ids[u]) * rw
            t = times[u]
            wm_u = own_wm[j]
            # Slot 0 holds the int32 state in its low half (the high half is padding).
            s0 = np.int64(np.int32(rec[r]))
            since0 = rec[r + np.uint64(1)]
            last0 = rec[r + np.uint64(2)]
            row0 = np.uint64(s0 + 1)  # tmo row: 0 for "never seen"
            if row0 > n_states:  # s0 outside [-1, n_states)
                return np.int64(u), _wm_before(np.uint64(i0), u, wm0, times), np.int64(mu), _BAD
            # Rule 1, without a branch: a key's first event puts it in the initial state.
            first = s0 < 0
            s = initial if first else s0
            since = t if first else since0
            last = t if first else last0
            # Rule 2: timeouts due before this event (row 0 of tmo has none).
            if _maybe_due(tmo, row0, since0, wm_u) and not first and _due(tmo, row0, since, wm_u):
                s, since, last, mu, full = _fire_chain(
                    np.int64(key_ids[u]), s, since, last, wm_u, np.int64(u), tmo,
                    t_key, t_time, t_from, t_to, t_before, mu, mu_end, rec, r,
                )  # fmt: skip
                if full:
                    wm_u = _wm_before(np.uint64(i0), u, wm0, times)
                    return np.int64(u), wm_u, np.int64(mu), _FULL
            from_s[u] = s
            if t < last:
                # Rule 3: late; changes nothing.
                status[u] = 2
                to_s[u] = s
                continue
            # Rules 4 and 5, without branches: column 0 of table1 is event -1 (undefined).
            target = table1[np.uint64(s) * width + np.uint64(events[u] + 1)]
            fired = target >= 0
            new_s = target if fired else s
            status[u] = 0 if fired else 1
            to_s[u] = new_s
            rec[r] = new_s
            rec[r + np.uint64(1)] = t if fired else since
            rec[r + np.uint64(2)] = t
            rec[r + np.uint64(3)] += 1
        if lo == n:
            break
        # The held-back events move to the front.
        for x in range(stop, tail):
            own[x - stop] = own[x]
            own_wm[x - stop] = own_wm[x]
        tail -= stop
    return np.int64(n), wm, np.int64(mu), _DONE


@numba.njit(cache=True, nogil=True, inline="always")
def _flush_key(
    k: Any,
    wm: Any,
    before: Any,
    tmo: Any,
    rec: Any,
    t_key: Any,
    t_time: Any,
    t_from: Any,
    t_to: Any,
    t_before: Any,
    mu: Any,
    mu_end: Any,
) -> Any:  # pragma: no cover - compiled
    """Rule 6 for key ``k``: fire its due timeouts up to ``wm``; returns ``(mu, code)``
    (``_BAD`` for a state outside the machine, ``_FULL`` when the buffers filled)."""
    n_states = np.uint64(tmo.shape[0] // _NCOL - 1)
    r = np.uint64(k) * np.uint64(_RW)
    s = np.int64(np.int32(rec[r]))
    if np.uint64(s + 1) > n_states:  # s outside [-1, n_states)
        return mu, _BAD
    # Row 0 of tmo ("never seen") has no timeout.
    since = rec[r + np.uint64(1)]
    if _maybe_due(tmo, s + 1, since, wm) and _due(tmo, s + 1, since, wm):
        _, _, _, mu, full = _fire_chain(
            k, s, since, rec[r + np.uint64(2)], wm, before, tmo,
            t_key, t_time, t_from, t_to, t_before, mu, mu_end, rec, r,
        )  # fmt: skip
        if full:
            return mu, _FULL
    return mu, _DONE


@numba.njit(cache=True, nogil=True)
def _run_flush(
    k0: int,
    step: int,
    wm: int,
    before: int,
    tmo: Any,
    rec: Any,
    t_key: Any,
    t_time: Any,
    t_from: Any,
    t_to: Any,
    t_before: Any,
    m: int,
    m_end: int,
) -> Any:  # pragma: no cover - compiled
    """Rule 6, in id order, for the keys of the groups ``k0 // G, k0 // G + step,
    ...`` from key ``k0`` on (``G = 2**GROUP_SHIFT`` keys per group); returns
    ``(k, m, code)`` like ``_run_events`` (``k``: the key to resume from)."""
    n_keys = rec.shape[0] // _RW
    mu = np.uint64(m)
    mu_end = np.uint64(m_end)
    # Groups of 2**GROUP_SHIFT consecutive keys, every step-th group.
    group = 1 << GROUP_SHIFT
    skip = (step - 1) * group
    k = k0
    while k < n_keys:
        mu, code = _flush_key(
            k, wm, before, tmo, rec, t_key, t_time, t_from, t_to, t_before, mu, mu_end
        )
        if code != _DONE:
            return k, np.int64(mu), code
        k += 1 if (k + 1) % group else 1 + skip
    return n_keys, np.int64(mu), _DONE


@numba.njit(cache=True, nogil=True)
def _run_flush_keys(
    j0: int,
    keys: Any,
    part: int,
    mask: int,
    wm: int,
    before: int,
    tmo: Any,
    rec: Any,
    t_key: Any,
    t_time: Any,
    t_from: Any,
    t_to: Any,
    t_before: Any,
    m: int,
    m_end: int,
) -> Any:  # pragma: no cover - compiled
    """Rule 6 for the listed ``keys`` only (ascending ids) that part ``part`` owns
    (``(k >> GROUP_SHIFT) & mask == part``), from list position ``j0`` on;
    returns ``(j, m, code)`` (``j``: the list position to resume from)."""
    n_keys = rec.shape[0] // _RW
    mu = np.uint64(m)
    mu_end = np.uint64(m_end)
    j = j0
    last = keys.shape[0] - 1
    while j < keys.shape[0]:
        # The listed keys are spread over the whole state: fetch a record ahead.
        ahead = keys[min(j + _PREFETCH_AHEAD, last)]
        if 0 <= ahead < n_keys and (ahead >> GROUP_SHIFT) & mask == part:
            _prefetch_row(rec, np.uint64(ahead) * np.uint64(_RW))  # type: ignore[call-arg]
        k = keys[j]
        if (k >> GROUP_SHIFT) & mask != part:
            j += 1
            continue
        if k < 0 or k >= n_keys:
            return j, np.int64(mu), _BAD
        mu, code = _flush_key(
            k, wm, before, tmo, rec, t_key, t_time, t_from, t_to, t_before, mu, mu_end
        )
        if code != _DONE:
            return j, np.int64(mu), code
        j += 1
    return j, np.int64(mu), _DONE


@numba.njit(cache=True, nogil=True)
def _bounds(key_ids: Any, events: Any) -> Any:  # pragma: no cover - compiled
    """Min and max of key ids and of event codes in one pass (arrays non-empty)."""
    k_lo = k_hi = key_ids[0]
    e_lo = e_hi = events[0]
    for i in range(key_ids.shape[0]):
        k = key_ids[i]
        e = events[i]
        k_lo = min(k_lo, k)
        k_hi = max(k_hi, k)
        e_lo = min(e_lo, e)
        e_hi = max(e_hi, e)
    return k_lo, k_hi, e_lo, e_hi


def _batch_bounds(
    k: npt.NDArray[np.int64], e: npt.NDArray[np.int32], parts: int
) -> tuple[int, int, int, int]:
    """:func:`_bounds` of non-empty arrays, in ``parts`` slices on as many threads."""
    cuts = [len(k) * p // parts for p in range(parts + 1)]
    found = in_parallel(
        lambda p: _bounds(k[cuts[p] : cuts[p + 1]], e[cuts[p] : cuts[p + 1]]), range(parts)
    )
    return (
        int(min(b[0] for b in found)),
        int(max(b[1] for b in found)),
        int(min(b[2] for b in found)),
        int(max(b[3] for b in found)),
    )


def _machine_tables(
    cm: CompiledMachine,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """The kernel's view of a machine.

    ``table1``: the transition table with a leading column for event -1 (all
    undefined). ``tmo``: row ``s + 1`` describes state ``s`` as ``(has, after,
    int64 min + after, to, span)`` (``span``: ``after``, or -1 for none, which
    the kernel reads as 2**64 - 1); row 0 stands for "never seen" (state -1)
    and has no timeout, so the kernel can look up a key's row before knowing
    whether it was seen.
    """
    table1 = np.full((cm.n_states, cm.n_events + 1), -1, dtype=np.int32)
    table1[:, 1:] = cm.table
    has = np.concatenate([[False], cm.timeout_after >= 0])
    after = np.where(has, np.concatenate([[0], cm.timeout_after]), 0)
    tmo = np.empty((cm.n_states + 1, 5), dtype=np.int64)
    tmo[:, _HAS] = has
    tmo[:, _AFTER] = after
    tmo[:, _LIM] = _I64_MIN + after
    tmo[:, _TO] = np.concatenate([[-1], cm.timeout_to])
    tmo[:, _SPAN] = np.where(has, after, -1)  # -1: 2**64 - 1 as unsigned
    return table1, tmo


def _execute(
    cm: CompiledMachine,
    k: npt.NDArray[np.int64],
    e: npt.NDArray[np.int32],
    t: npt.NDArray[np.int64],
    state: KeyState,
    carried: int,
    given: npt.NDArray[np.int64] | None,
    parts: int,
    flush_keys: npt.NDArray[np.int64] | None = None,
) -> BatchResult:
    """Allocate the outputs, run the two compiled loops in ``parts`` key parts
    (growing the timeout buffers whenever one fills up) and wrap the result.

    Part ``p`` owns the keys with ``(key_id >> GROUP_SHIFT) % parts == p`` (see
    :mod:`._parallel`); one part runs the plain loop over all events. A round
    runs every unfinished part at once; a part whose timeout buffer region
    filled up resumes in the next round, after the regions have grown.
    """
    table1, tmo = _machine_tables(cm)
    table1, tmo = table1.reshape(-1), tmo.reshape(-1)
    rec = records(state).reshape(-1)  # a view: the kernel writes through
    n = len(k)
    from_s = np.empty(n, dtype=np.int32)
    to_s = np.empty(n, dtype=np.int32)
    status = np.empty(n, dtype=np.int8)
    # Timeouts: a guess that covers most workloads; doubling when it does not.
    tmos = Timeouts(parts, 64 + n // 8 // parts)
    use_given = given is not None
    wm_given = _EMPTY_I64 if given is None else given
    mask = parts - 1
    listed = _LISTED if parts > 1 else 1
    scratch = [(np.empty(listed, np.int64), np.empty(listed, np.int64)) for _ in range(parts)]
    # Per part: (next event, watermark before it, code); rounds until no part is FULL.
    at = {p: (0, carried, _FULL) for p in range(parts)}

    def events_part(p: int) -> tuple[int, int, int, int]:
        i, wm, _ = at[p]
        if parts == 1:
            return _run_events(  # type: ignore[no-any-return]
                i, wm, table1, tmo, cm.initial, k, e, t, rec, wm_given, use_given,
                from_s, to_s, status, *tmos.bufs, tmos.m[p], tmos.end(p),
            )  # fmt: skip
        return _run_part(  # type: ignore[no-any-return]
            i, wm, p, mask, table1, tmo, cm.initial, k, e, t, rec, wm_given, use_given,
            from_s, to_s, status, *tmos.bufs, tmos.m[p], tmos.end(p), *scratch[p],
        )  # fmt: skip

    while todo := [p for p, (_, _, code) in at.items() if code == _FULL]:
        for p, (i, wm, m, code) in zip(todo, in_parallel(events_part, todo), strict=True):
            at[p] = (i, wm, code)
            tmos.m[p] = m
        if any(at[p][2] == _FULL for p in todo):
            tmos.grow()
    bad = [at[p][0] for p in at if at[p][2] == _BAD]
    if bad:
        _bad_state(cm, state, int(k[min(bad)]))
    wm = at[0][1]
    # Rule 6: the batch-end flush, key by key in id order (within each part).
    if use_given and n:
        wm = max(carried, int(wm_given[n - 1]))
    if flush_keys is None:
        keys = {p: (p << GROUP_SHIFT, _FULL) for p in range(parts)}
    else:
        keys = {p: (0, _FULL) for p in range(parts)}

    def flush_part(p: int) -> tuple[int, int, int]:
        if flush_keys is not None:
            return _run_flush_keys(  # type: ignore[no-any-return]
                keys[p][0], flush_keys, p, mask, wm, n, tmo, rec, *tmos.bufs,
                tmos.m[p], tmos.end(p),
            )  # fmt: skip
        return _run_flush(  # type: ignore[no-any-return]
            keys[p][0], parts, wm, n, tmo, rec, *tmos.bufs, tmos.m[p], tmos.end(p)
        )

    while todo := [p for p, (_, code) in keys.items() if code == _FULL]:
        for p, (key, m, code) in zip(todo, in_parallel(flush_part, todo), strict=True):
            keys[p] = (key, code)
            tmos.m[p] = m
        if any(keys[p][1] == _FULL for p in todo):
            tmos.grow()
    bad = [keys[p][0] for p in keys if keys[p][1] == _BAD]
    if bad:
        if flush_keys is not None:
            bad = [int(flush_keys[j]) for j in bad]
            if not all(0 <= b < len(state) for b in bad):
                raise ConfigurationError(
                    f"flush_keys holds key ids outside [0, {len(state)}): {sorted(bad)[:5]}"
                )
        _bad_state(cm, state, min(bad))
    t_key, t_time, t_from, t_to, t_before = tmos.rows()
    return BatchResult(
        from_state=from_s,
        to_state=to_s,
        status=status,
        t_key=t_key,
        t_time=t_time,
        t_from=t_from,
        t_to=t_to,
        t_before=t_before,
        watermark=int(wm),
    )


def _bad_state(cm: CompiledMachine, state: KeyState, key: int) -> NoReturn:
    code = int(state.state[key])
    raise ConfigurationError(
        f"run_batch: key id {key} holds state code {code} in `state`, outside "
        f"[-1, {cm.n_states}) for a machine with states {list(cm.states)}; the state "
        f"does not belong to this machine (or was corrupted) and may now be partly "
        f"updated: rebuild it from its checkpoint"
    )


def _readonly_view(values: npt.ArrayLike, dtype: type[np.generic], name: str) -> npt.NDArray[Any]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ConfigurationError(f"run_batch: expected {name} to be 1-d, found shape {array.shape}")
    if array.size and not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise ConfigurationError(f"run_batch: expected integer {name}, found dtype {array.dtype}")
    return readonly(array, dtype)


def check_batch(
    cm: CompiledMachine,
    key_ids: npt.ArrayLike,
    events: npt.ArrayLike,
    times: npt.ArrayLike,
    state: KeyState,
    *,
    threads: int | None = 1,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """Validate and normalise a batch's arrays (shared by the kernel and the reference).

    Returns read-only, C-contiguous ``key_ids`` (int64), ``events`` (int32) and
    ``times`` (int64). ``threads`` is as in :func:`run_batch`: the bounds check
    of a large batch runs in slices on that many threads.

    Raises
    ------
    ConfigurationError
        If lengths differ, a key id is outside ``[0, len(state))`` or an event
        code outside ``[-1, cm.n_events)``.

    Examples
    --------
    >>> import numpy as np
    >>> from streamkit.kernel import CompiledMachine, KeyState
    >>> cm = CompiledMachine(("a",), ("x",), np.array([[0]]), np.array([-1]),
    ...                      np.array([-1]), 0)
    >>> check_batch(cm, [0], [0], [5], KeyState.empty(0))
    Traceback (most recent call last):
    ...
    streamkit.errors.ConfigurationError: run_batch: key id 0 is outside the state's 0 keys; ...
    """
    k = _readonly_view(key_ids, np.int64, "key_ids")
    e = _readonly_view(events, np.int32, "events")
    t = _readonly_view(times, np.int64, "times")
    if not len(k) == len(e) == len(t):
        raise ConfigurationError(
            f"run_batch: expected key_ids, events and times of equal length, found "
            f"{len(k)}, {len(e)} and {len(t)}"
        )
    if len(k):
        lo, hi, elo, ehi = _batch_bounds(k, e, parts_for(threads, len(k)))
        if lo < 0 or hi >= len(state):
            bad = lo if lo < 0 else hi
            raise ConfigurationError(
                f"run_batch: key id {bad} is outside the state's {len(state)} keys; "
                f"call state.grow(len(key_index)) after KeyIndex.lookup_or_insert"
            )
        if elo < -1 or ehi >= cm.n_events:
            bad = elo if elo < -1 else ehi
            raise ConfigurationError(
                f"run_batch: event code {bad} is outside [-1, {cm.n_events}) for a machine "
                f"with events {list(cm.events)}; encode names with cm.encode_events"
            )
    return k, e, t


def _check_watermark(watermark: int) -> int:
    if isinstance(watermark, bool) or not isinstance(watermark, int | np.integer):
        raise ConfigurationError(
            f"run_batch: expected an integer watermark (NO_WATERMARK if none), found {watermark!r}"
        )
    wm = int(watermark)
    if not _I64_MIN <= wm <= _I64_MAX:
        raise ConfigurationError(f"run_batch: watermark {wm} does not fit in int64")
    return wm


def _check_given_wm(
    wm: npt.ArrayLike | None, times: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64] | None:
    """Validate per-event watermarks given by a caller that split a batch."""
    if wm is None:
        return None
    given = _readonly_view(wm, np.int64, "wm")
    if len(given) != len(times):
        raise ConfigurationError(
            f"run_batch: expected one watermark per event ({len(times)}), found {len(given)}"
        )
    if len(given) and (bool((np.diff(given) < 0).any()) or bool((given < times).any())):
        raise ConfigurationError(
            "run_batch: per-event watermarks `wm` must be non-decreasing and >= times "
            "(the prefix maximum of the whole batch's times)"
        )
    return given


def run_batch(
    cm: CompiledMachine,
    key_ids: npt.ArrayLike,
    events: npt.ArrayLike,
    times: npt.ArrayLike,
    state: KeyState,
    *,
    watermark: int,
    wm: npt.ArrayLike | None = None,
    threads: int | None = None,
    flush_keys: npt.ArrayLike | None = None,
) -> BatchResult:
    """Run one batch of events through the per-key machine (numba kernel).

    Events are processed in the given order (the log's offset order). With
    ``wm[i]`` the maximum of the carried watermark and ``times[:i + 1]``, for
    event ``i`` of key ``k``:

    1. a key's first event puts it in ``cm.initial`` with ``since = last = t``;
    2. otherwise, while the key's state has a timeout with ``since + after <=
       wm[i]``, the timeout fires (``since = deadline``, ``last = max(last,
       deadline)``), chains included;
    3. if ``t < last`` the event is late (status 2) and changes nothing;
    4. else without a declared transition it is undefined (status 1):
       ``last = t``, ``events += 1``;
    5. else it fires (status 0): ``state = to``, ``since = last = t``,
       ``events += 1`` (self-loops re-enter their state).

    At the batch end every key fires its timeouts up to the final watermark. The
    per-key history and final state do not depend on how the events are cut
    into batches, provided ``state`` and the returned watermark are carried.

    Parameters
    ----------
    cm : CompiledMachine
    key_ids : array of int64
        Dense key id per event (see :class:`KeyIndex`); must be ``< len(state)``.
    events : array of int32
        Event code per event; -1 for names the machine does not know.
    times : array of int64
        Event time in ticks.
    state : KeyState
        Mutated in place.
    watermark : int
        The watermark carried from the previous batch, ``NO_WATERMARK`` if none.
    wm : array of int64, optional
        Per-event watermarks computed over a larger stream that this batch is a
        part of (e.g. one key partition of a batch run on a cluster): when given,
        ``wm[i]`` is used for event ``i`` as is, and the batch-end flush uses
        ``max(watermark, wm[-1])``. Must be non-decreasing and ``>= times``.
        Pass the whole batch's final watermark as ``watermark`` then, so that a
        part without events still flushes its idle keys.
    threads : int, optional
        Threads to run the batch in, split by key id (rounded down to a power of
        two, at most 8). Default: one for batches under 65,536 events, else
        ``$STREAMKIT_KERNEL_THREADS`` if set, else the cores this process may
        use. Results do not depend on it.
    flush_keys : array of int64, optional
        The keys the batch-end flush looks at, ascending: it must hold every
        key that may be in a state with a timeout at the batch's end -- those
        in such a state before the batch and those with events in it (more is
        allowed). Default: every key.
        With millions of idle keys, a list of the keys in a timed state makes
        the flush cost what those keys cost, not what all keys do.

    Returns
    -------
    BatchResult

    Raises
    ------
    ConfigurationError
        If the arrays do not fit each other, the machine or the state.

    Examples
    --------
    >>> import numpy as np
    >>> from streamkit.kernel import CompiledMachine, KeyState, NO_WATERMARK
    >>> cm = CompiledMachine(("new", "paid", "void"), ("pay",),
    ...                      np.array([[1], [-1], [-1]]),
    ...                      np.array([30, -1, -1]), np.array([2, -1, -1]), 0)
    >>> st = KeyState.empty(2)
    >>> r = run_batch(cm, np.array([0, 1, 0]), np.array([0, -1, 0], dtype=np.int32),
    ...               np.array([10, 20, 50]), st, watermark=NO_WATERMARK)
    >>> r.status.tolist(), r.to_state.tolist()
    ([0, 1, 1], [1, 0, 1])
    >>> r.t_key.tolist(), r.t_time.tolist(), r.t_to.tolist(), r.t_before.tolist()
    ([1], [50], [2], [3])
    >>> st.state.tolist(), st.since.tolist(), st.events.tolist()
    ([1, 2], [10, 50], [2, 1])

    Any number of threads gives the same result:

    >>> st2 = KeyState.empty(2)
    >>> r2 = run_batch(cm, np.array([0, 1, 0]), np.array([0, -1, 0], dtype=np.int32),
    ...                np.array([10, 20, 50]), st2, watermark=NO_WATERMARK, threads=2)
    >>> r2.equals(r) and st2.equals(st)
    True
    """
    ensure_compiled()
    k, e, t = check_batch(cm, key_ids, events, times, state, threads=threads)
    carried = _check_watermark(watermark)
    given = _check_given_wm(wm, t)
    listed = None
    if flush_keys is not None:
        listed = np.ascontiguousarray(flush_keys, dtype=np.int64)
        if listed.ndim != 1 or (len(listed) > 1 and (np.diff(listed) <= 0).any()):
            raise ConfigurationError("flush_keys must be a 1-d array of ascending key ids")
    return _execute(cm, k, e, t, state, carried, given, parts_for(threads, len(k)), listed)


def warmup() -> float:
    """Compile every compiled function of the kernel package (or load them from
    numba's on-disk cache) on tiny inputs: the kernel (in one thread and in key
    parts), the key index's hash map, the event-name lookup and the history
    merge.

    Returns
    -------
    float
        Seconds the call took: the compile time on a cold cache, the cache load
        time otherwise.

    Examples
    --------
    >>> warmup() >= 0.0
    True
    """
    import polars as pl

    from streamkit.kernel._history import history_arrays
    from streamkit.kernel._keys import KeyIndex
    from streamkit.kernel._names import NameCodes

    start = time.perf_counter()
    cm = CompiledMachine(
        ("a", "b"),
        ("x",),
        np.array([[1], [0]]),
        np.array([-1, 1]),
        np.array([-1, 0]),
        0,
    )
    KeyIndex().lookup_or_insert(pl.Series(range(2_000)))  # grows the hash table
    NameCodes(("x",)).lookup(pl.Series(["x", "y"]))
    for keys in (pl.Series(["k", "j"]), pl.Series([7, 8])):
        index = KeyIndex()
        ids = index.lookup_or_insert(keys)
        index.lookup(keys)
        for times in ([0, 5], [5, 0]):  # in time order, and not
            t = np.array(times, dtype=np.int64)
            e = np.array([0, 0], dtype=np.int32)
            for threads in (1, 2):  # the plain loop; the key parts and their merge
                result = run_batch(
                    cm, ids, e, t, KeyState.empty(2), watermark=int(_I64_MIN), threads=threads
                )
            history_arrays(result, ids, t, e, timeout_code=1)
        run_batch(  # the flush over listed keys
            cm, ids, e, t, KeyState.empty(2), watermark=int(_I64_MIN),
            flush_keys=np.array([0, 1]),
        )  # fmt: skip
    return time.perf_counter() - start


def _kernel_dispatchers() -> list[Any]:
    """The kernel's cached numba functions that compile on their own (not inlined)."""
    from numba.core.dispatcher import Dispatcher

    from streamkit.kernel import _hashmap, _history, _names, _parallel

    return [
        obj
        for mod in (sys.modules[__name__], _hashmap, _history, _names, _parallel)
        for obj in vars(mod).values()
        if isinstance(obj, Dispatcher)
        and obj.py_func.__module__ == mod.__name__
        and obj.targetoptions.get("inline") != "always"
    ]


def cache_is_cold() -> bool:
    """Whether the kernel would compile (not load from numba's disk cache) now.

    True when a kernel function has no cache entry for its current source
    (never compiled on this machine, or streamkit changed since). Reads
    numba's cache index; if that internal API changes, answers False (then
    the compile happens without the note).

    Examples
    --------
    >>> isinstance(cache_is_cold(), bool)
    True
    """
    try:
        return any(not d._cache._cache_file._load_index() for d in _kernel_dispatchers())
    except Exception:  # numba internals: a wrong guess only skips the note
        return False


def ensure_compiled() -> None:
    """Compile (or load from cache) the kernel once per process, saying so if it compiles.

    On a cold cache the first call writes one line, "compiling the
    state-machine kernel ...", as an INFO log record of ``streamkit.kernel``
    when that logger shows INFO, else on stderr; then it compiles every
    kernel function at once with :func:`warmup`, so that they all land in
    numba's disk cache and later processes load them in well under a second.
    On a warm cache it does nothing: the functions load as they are first used.
    ``run_batch`` and ``compile`` call it; later calls return at once.

    Examples
    --------
    >>> ensure_compiled(); ensure_compiled()
    """
    if _kernel["ready"] or _kernel["warming"]:
        return
    with _kernel_lock:
        if _kernel["ready"]:
            return
        if not cache_is_cold():
            _kernel["ready"] = True
            return
        if _logger.isEnabledFor(logging.INFO) and _logger.hasHandlers():
            _logger.info("%s", _COMPILING_NOTE)
        else:
            print(f"streamkit: {_COMPILING_NOTE}", file=sys.stderr, flush=True)
        _kernel["warming"] = True
        try:
            took = warmup()
        finally:
            _kernel["warming"] = False
        _kernel["ready"] = True
        _logger.debug("compiled the state-machine kernel in %.1f s", took)
