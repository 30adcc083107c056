"""Creates that the store applied but whose answer never arrived.

An object store can apply a conditional PUT and lose the response; the HTTP
client then re-sends it and is told "the name exists" -- by its own write. These
tests model that in-process with a memory file system that behaves like an object
store (conditional create on close, an answer that can be lost), so every create
of an append and of a pipeline run can be hit in turn, fast. The same faults on
the wire, through s3fs against SeaweedFS, are in ``tests/wire``.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import fsspec
import polars as pl
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import streamkit as sk
from streamkit.datasets import generate_orders, order_machine
from streamkit.errors import OutcomeUnknownError, StorageError
from streamkit.storage._fs import FileSystem
from tests.pipeline.oracle import history_by_key, state_dict


class LostResponse(ConnectionResetError):
    """The store applied the request; its answer was lost."""


class _ConditionalFile(io.BytesIO):
    def __init__(self, fs: LossyStore, path: str) -> None:
        super().__init__()
        self._fs = fs
        self._path = path

    def close(self) -> None:
        if self.closed:
            return
        data = self.getvalue()
        super().close()
        self._fs.conditional_put(self._path, data)


class LossyStore(MemoryFileSystem):
    """An object store in memory: conditional creates whose answer can be lost.

    ``plan`` maps the n-th conditional create (1-based) to what happens to it:

    * ``"lost"``: applied, then the client sees a reset;
    * ``"resent"``: applied, the answer is lost, the client re-sends and the
      store answers 412 (what aiohttp and botocore do on their own);
    * ``"refused"``: not applied, the client sees a reset;
    * ``"denied"``: not applied, the store answers with a refusal;
    * ``"dark"``: ``"lost"``, and every read fails until ``dark`` is cleared.
    """

    protocol = "lossymem"
    store: ClassVar[dict[str, Any]] = {}  # type: ignore[misc]
    pseudo_dirs: ClassVar[list[str]] = [""]  # type: ignore[misc]
    plan: ClassVar[dict[int, str]] = {}
    creates: ClassVar[int] = 0
    dark: ClassVar[bool] = False

    @classmethod
    def reset(cls, plan: dict[int, str] | None = None) -> None:
        cls.plan, cls.creates, cls.dark = dict(plan or {}), 0, False

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if "x" in mode:
            return _ConditionalFile(self, self._strip_protocol(path))
        if "r" in mode and type(self).dark:
            raise ConnectionResetError("the store is unreachable")
        return super()._open(path, mode, *args, **kwargs)

    def cat_file(self, path: str, *args: Any, **kwargs: Any) -> Any:
        if type(self).dark:
            raise ConnectionResetError("the store is unreachable")
        return super().cat_file(path, *args, **kwargs)

    def conditional_put(self, path: str, data: bytes) -> None:
        cls = type(self)
        cls.creates += 1
        fault = cls.plan.get(cls.creates)
        if fault == "refused":
            raise ConnectionResetError(f"reset before {path} reached the store")
        if fault == "denied":
            raise PermissionError(f"access denied to {path}")
        if self.exists(path):
            raise FileExistsError(f"precondition failed: {path} exists")
        super().pipe_file(path, data)
        if fault == "lost":
            raise LostResponse(f"connection reset after {path} was stored")
        if fault == "dark":
            cls.dark = True
            raise LostResponse(f"connection reset after {path} was stored")
        if fault == "resent":
            raise FileExistsError(f"precondition failed: {path} exists")


fsspec.register_implementation("lossymem", LossyStore, clobber=True)


@pytest.fixture
def lossy() -> Any:
    LossyStore.store.clear()
    LossyStore.pseudo_dirs[:] = [""]
    LossyStore.reset()
    yield LossyStore
    LossyStore.reset()


@pytest.mark.parametrize("fault", ["lost", "resent", "refused"])
def test_put_new_recognises_its_own_create(lossy: Any, fault: str) -> None:
    fs = FileSystem("lossymem://fs")
    lossy.reset({1: fault})
    assert fs.put_new("a/x", b"mine")
    assert fs.get("a/x") == b"mine"
    assert not fs.put_new("a/x", b"theirs")  # a real lost race stays a lost race
    assert fs.get("a/x") == b"mine"


def test_put_new_with_unreadable_outcome_says_so(lossy: Any) -> None:
    fs = FileSystem("lossymem://fs", {"secret": "s3cr3t-value"})
    lossy.reset({1: "dark"})
    with pytest.raises(OutcomeUnknownError, match="cannot tell whether") as info:
        fs.put_new("a/x", b"mine")
    assert "s3cr3t-value" not in str(info.value)
    lossy.dark = False
    assert fs.put_new("a/x", b"mine")  # retrying is safe: it was ours


def test_put_new_after_repeated_resets_cannot_promise_anything(lossy: Any) -> None:
    fs = FileSystem("lossymem://fs")
    lossy.reset(dict.fromkeys(range(1, 10), "refused"))
    with pytest.raises(OutcomeUnknownError, match="may still apply it"):
        fs.put_new("a/x", b"mine")
    assert lossy.creates == 5  # tried again after each read-back found nothing
    assert not fs.exists("a/x")


def test_put_new_refused_by_the_store_fails_at_once(lossy: Any) -> None:
    fs = FileSystem("lossymem://fs")
    lossy.reset({1: "denied"})
    with pytest.raises(StorageError, match=r"cannot create .*PermissionError") as info:
        fs.put_new("a/x", b"mine")
    assert not isinstance(info.value, OutcomeUnknownError)  # definitely not applied
    assert lossy.creates == 1


def _frame(n: int, seed: int) -> pl.DataFrame:
    return pl.DataFrame({"k": [f"k{(i * 7 + seed) % 5}" for i in range(n)], "t": list(range(n))})


def _count_creates(lossy: Any, action: Any) -> int:
    lossy.reset()
    action()
    return int(lossy.creates)


@pytest.mark.parametrize("fault", ["lost", "resent"])
@pytest.mark.parametrize("writer", [None, "job"])
def test_append_with_any_create_answer_lost_commits_exactly_once(
    lossy: Any, fault: str, writer: str | None
) -> None:
    def fresh(name: str) -> sk.Log:
        return sk.Store(f"lossymem://{name}").log("l", key="k", time="t", partitions=3)

    total = _count_creates(lossy, lambda: fresh("probe").append(_frame(30, 0)))
    assert total >= 3  # segments and the version file
    for k in range(1, total + 1):
        log = fresh(f"trial-{fault}-{writer}-{k}")
        log.append(_frame(10, 1))
        lossy.reset({k: fault})
        seq = {"writer": writer, "seq": 1} if writer else {}
        res = log.append(_frame(30, 2), **seq)  # type: ignore[arg-type]
        assert not res.duplicate and res.rows == 30, f"create {k}"
        rows = log.scan().collect()
        assert rows.height == 40, f"create {k}: {rows.height} rows"
        assert log.version == 2, f"create {k}: committed {log.version - 1} versions"
        if writer:
            again = log.append(_frame(30, 2), writer=writer, seq=1)
            assert again.duplicate and log.count() == 40


def test_append_whose_outcome_is_unknown_keeps_its_segments(lossy: Any) -> None:
    log = sk.Store("lossymem://unknown").log("l", key="k", time="t")
    log.append(_frame(5, 0))
    lossy.reset({2: "dark"})  # the version file of the next append (after 1 segment)
    with pytest.raises(OutcomeUnknownError, match=r"seq=7\) is safe"):
        log.append(_frame(5, 1), writer="w", seq=7)
    lossy.dark = False
    assert log.count() == 10  # it did land, and its segment is still there
    assert log.scan().collect().height == 10
    assert log.append(_frame(5, 1), writer="w", seq=7).duplicate


def _pipeline(store: sk.Store) -> sk.Pipeline:
    return (
        sk.Pipeline("lossy", store, batch_rows=60)
        .read(store.log("orders", key="order_id", time="ts"))
        .with_columns(event=pl.col("type").str.to_lowercase())
        .transitions(order_machine(), event="event")
        .write(store.log("history", key="key", time="time"))
    )


def _outcome(store: sk.Store) -> tuple[object, ...]:
    pipe = _pipeline(store)
    q = pipe.quarantine().sort("offset").select("offset", "reason").rows()
    return history_by_key(store.log("history").scan().collect()), state_dict(pipe.state()), q


@pytest.mark.parametrize("fault", ["lost", "resent"])
def test_pipeline_run_with_any_create_answer_lost_equals_a_clean_run(
    lossy: Any, fault: str
) -> None:
    frame = generate_orders(30, span="2h", seed=5)

    def seeded(name: str) -> sk.Store:
        lossy.reset()
        store = sk.Store(f"lossymem://{name}")
        store.log("orders", key="order_id", time="ts").append(frame)
        return store

    ref = seeded("ref")
    lossy.reset()
    _pipeline(ref).run(progress=False)
    total, reference = lossy.creates, _outcome(ref)
    assert total > 8  # epochs, outputs, state files, checkpoints
    for k in range(1, total + 1):
        store = seeded(f"run-{fault}-{k}")
        lossy.reset({k: fault})
        report = _pipeline(store).run(progress=False)
        assert report.caught_up, f"create {k}"
        assert _outcome(store) == reference, f"{fault} answer to create {k}"
        assert _pipeline(store).verify(replay=True).ok


def test_a_plain_append_whose_outcome_is_unknown_says_how_to_check(lossy: Any) -> None:
    log = sk.Store("lossymem://unknown-plain").log("l", key="k", time="t")
    log.append(_frame(5, 0))
    lossy.reset({2: "dark"})
    with pytest.raises(OutcomeUnknownError, match=r"log.end\(\) moved past 5") as info:
        log.append(_frame(5, 1))
    assert "is safe" not in str(info.value)  # a blind retry would append twice
    lossy.dark = False
    assert log.end().offset == 10  # it landed: the user must not append again
