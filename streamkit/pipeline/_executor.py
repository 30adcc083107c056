"""Where the per-key kernel runs: in this process, or on a Dask cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from streamkit.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy.typing as npt

    from streamkit.kernel import BatchResult, CompiledMachine, KeyState


class Executor(Protocol):
    """Runs one batch of the kernel; every executor gives identical results."""

    def run_batch(
        self,
        cm: CompiledMachine,
        key_ids: npt.NDArray[np.int64],
        events: npt.NDArray[np.int32],
        times: npt.NDArray[np.int64],
        state: KeyState,
        *,
        watermark: int,
        flush_keys: npt.NDArray[np.int64] | None = None,
        wm: npt.NDArray[np.int64] | None = None,
    ) -> BatchResult: ...


class LocalExecutor:
    """Run the compiled kernel in this process (the default)."""

    def run_batch(
        self,
        cm: CompiledMachine,
        key_ids: npt.NDArray[np.int64],
        events: npt.NDArray[np.int32],
        times: npt.NDArray[np.int64],
        state: KeyState,
        *,
        watermark: int,
        flush_keys: npt.NDArray[np.int64] | None = None,
        wm: npt.NDArray[np.int64] | None = None,
    ) -> BatchResult:
        from streamkit.kernel import run_batch

        return run_batch(
            cm, key_ids, events, times, state, watermark=watermark, flush_keys=flush_keys, wm=wm
        )

    def __repr__(self) -> str:
        return "LocalExecutor()"


def _run_part(
    cm: CompiledMachine,
    key_ids: npt.NDArray[np.int64],
    events: npt.NDArray[np.int32],
    times: npt.NDArray[np.int64],
    wm: npt.NDArray[np.int64],
    arrays: tuple[Any, ...],
    flush: int,
) -> tuple[Any, tuple[Any, ...]]:
    """Kernel over one key partition (runs on a Dask worker)."""
    from streamkit.kernel import KeyState, run_batch

    state = KeyState.from_arrays(*arrays)
    # One thread: the cluster already runs a partition per worker thread.
    res = run_batch(cm, key_ids, events, times, state, watermark=flush, wm=wm, threads=1)
    return res, (state.state, state.since, state.last, state.events)


class DaskExecutor:
    """Run the per-key kernel on a Dask cluster, split by key.

    Keys are independent given the log's watermark, so each batch is cut into
    ``partitions`` groups of keys (by key id), the groups run on the cluster's
    workers, and the results are merged back into log order: identical to a
    local run.

    Parameters
    ----------
    client : distributed.Client
        A connected Dask client.
    partitions : int, optional
        Key groups per batch (default: the number of workers' threads).

    Examples
    --------
    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, processes=False))  # doctest: +SKIP
    >>> report = pipe.run(executor=sk.DaskExecutor(client))  # doctest: +SKIP
    """

    def __init__(self, client: Any, *, partitions: int | None = None) -> None:
        from streamkit._deps import import_optional

        import_optional("distributed")
        if not (hasattr(client, "submit") and hasattr(client, "gather")):
            raise ConfigurationError(
                f"DaskExecutor needs a distributed.Client, got {type(client).__name__}"
            )
        self.client = client
        self._partitions = partitions

    @property
    def partitions(self) -> int:
        if self._partitions:
            return self._partitions
        threads = self.client.nthreads()
        return max(1, sum(threads.values()) if threads else 1)

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client!r}, partitions={self._partitions})"

    def run_batch(
        self,
        cm: CompiledMachine,
        key_ids: npt.NDArray[np.int64],
        events: npt.NDArray[np.int32],
        times: npt.NDArray[np.int64],
        state: KeyState,
        *,
        watermark: int,
        flush_keys: npt.NDArray[np.int64] | None = None,  # every key is flushed here
        wm: npt.NDArray[np.int64] | None = None,
    ) -> BatchResult:
        from streamkit.kernel import BatchResult

        n = len(key_ids)
        n_keys = len(state.state)
        if wm is None:  # the log's watermark at every event: the running maximum
            wm = np.maximum.accumulate(np.concatenate(([watermark], times)))[1:] if n else times
            flush = int(wm[-1]) if n else int(watermark)
        else:  # given (event time with lateness): flush up to the batch's watermark
            flush = max(int(watermark), int(wm[-1])) if n else int(watermark)
        parts = self.partitions
        group = np.arange(n_keys, dtype=np.int64) % parts
        futures = []
        members = []
        for g in range(parts):
            keys_g = np.flatnonzero(group == g)  # global key ids of this group
            if len(keys_g) == 0:
                continue
            local = np.full(n_keys, -1, dtype=np.int64)
            local[keys_g] = np.arange(len(keys_g))
            idx = np.flatnonzero(group[key_ids] == g)  # event indices, log order
            arrays = (
                state.state[keys_g],
                state.since[keys_g],
                state.last[keys_g],
                state.events[keys_g],
            )
            futures.append(
                self.client.submit(
                    _run_part,
                    cm,
                    local[key_ids[idx]],
                    events[idx],
                    times[idx],
                    wm[idx],
                    arrays,
                    flush,
                    pure=False,
                )
            )
            members.append((keys_g, idx))
        results = self.client.gather(futures)
        from_state = np.empty(n, np.int32)
        to_state = np.empty(n, np.int32)
        status = np.empty(n, np.int8)
        t_parts: list[tuple[Any, ...]] = []
        for (keys_g, idx), (res, arrays) in zip(members, results, strict=True):
            from_state[idx], to_state[idx], status[idx] = res.from_state, res.to_state, res.status
            state.state[keys_g], state.since[keys_g] = arrays[0], arrays[1]
            state.last[keys_g], state.events[keys_g] = arrays[2], arrays[3]
            before = (
                np.where(res.t_before >= len(idx), n, idx[np.minimum(res.t_before, len(idx) - 1)])
                if len(idx)
                else np.full(len(res.t_before), n)
            )
            t_parts.append((keys_g[res.t_key], res.t_time, res.t_from, res.t_to, before))
        if t_parts:
            t_key, t_time, t_from, t_to, t_before = (
                np.concatenate(c) for c in zip(*t_parts, strict=True)
            )
        else:
            t_key = t_time = t_before = np.empty(0, np.int64)
            t_from = t_to = np.empty(0, np.int32)
        # Local firing order: by the event each timeout preceded, then key id, then
        # chain order. The flush at the batch end runs over keys in id order.
        order = np.lexsort((np.arange(len(t_key)), t_key, t_before))
        return BatchResult(
            from_state,
            to_state,
            status,
            t_key[order].astype(np.int64),
            t_time[order].astype(np.int64),
            t_from[order].astype(np.int32),
            t_to[order].astype(np.int32),
            t_before[order].astype(np.int64),
            flush,
        )
