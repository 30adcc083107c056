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
    """Run the compiled kernel in this process (the default).

    Parameters
    ----------
    threads : int, optional
        Kernel threads (default: the cores this process may use, see
        ``STREAMKIT_KERNEL_THREADS``).
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

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
            cm,
            key_ids,
            events,
            times,
            state,
            watermark=watermark,
            flush_keys=flush_keys,
            wm=wm,
            threads=self.threads,
        )

    def __repr__(self) -> str:
        return (
            "LocalExecutor()" if self.threads is None else f"LocalExecutor(threads={self.threads})"
        )


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
    """Run a pipeline on a Dask cluster: each task reads, computes and writes its own
    key groups.

    A batch of a :class:`~streamkit.Log` source is cut into ``tasks`` tasks by key
    group. A task runs on a worker and does the whole batch step for its groups:
    it reads the log segments that can hold its keys, runs the operators and
    the kernel, writes its history, quarantine and state deltas straight to
    the store and returns only metadata; the driver commits the batch (one
    version of each output log, then the checkpoint) and holds neither the
    data nor the state. Workers keep their groups' state in memory between
    batches. Results are those of a local run (see ``docs/SCALING.md``). The
    store must be one the workers reach (a local folder they share, S3); a
    ``memory://`` store works only with a cluster of threads.

    A :class:`~streamkit.FileLog` or :class:`~streamkit.DeltaLog` source is read
    by the driver, and only the kernel runs on the cluster, split by key.

    Parameters
    ----------
    client : distributed.Client
        A connected Dask client.
    tasks : int, optional
        Tasks per batch (default: the workers' threads; at most the key groups).
    partitions : int, optional
        The former name of ``tasks``.

    Examples
    --------
    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> report = pipe.run(executor=sk.DaskExecutor(client))  # doctest: +SKIP
    """

    #: Runs the whole batch step on the cluster (for Log sources).
    distributed = True

    def __init__(
        self, client: Any, *, tasks: int | None = None, partitions: int | None = None
    ) -> None:
        from streamkit._deps import import_optional

        import_optional("distributed")
        if not (hasattr(client, "submit") and hasattr(client, "gather")):
            raise ConfigurationError(
                f"DaskExecutor needs a distributed.Client, got {type(client).__name__}"
            )
        for name, value in (("tasks", tasks), ("partitions", partitions)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
        self.client = client
        self._tasks = tasks or partitions

    def tasks_per_batch(self) -> int:
        """Tasks per batch: as given, else the cluster's worker threads."""
        if self._tasks:
            return self._tasks
        threads = self.client.nthreads()
        return max(1, sum(threads.values()) if threads else 1)

    @property
    def partitions(self) -> int:
        """Key parts of the kernel-only path (a FileLog source): ``tasks_per_batch()``."""
        return self.tasks_per_batch()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client!r}, tasks={self._tasks})"

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
