"""The public namespace is the contract (../shared/PRODUCT.md): pin it."""

from __future__ import annotations

import streamkit as sk

CONTRACT = {
    "AppendResult", "CheckpointError", "ConfigurationError", "CorruptFileError",
    "DaskExecutor", "DeltaLog", "FileLog", "LeaseError", "Log", "LogNotFoundError", "Machine",
    "MachineError", "Pipeline", "Position", "Problem", "RunReport", "SchemaError",
    "StorageError", "Store", "StreamkitError", "UndefinedTransitionError",
    "ValidationReport", "VerifyReport", "__version__", "analytics", "datasets", "plot",
    "machines",  # the machines shipped with the package: sk.machines.load("order")
}  # fmt: skip


#: What streamkit.storage declares for the layers built on it (pipelines, the CLI).
STORAGE = {
    "AppendResult", "DeltaLog", "DeltaPlan", "FileCursor", "FileLog", "FileMark", "FilePlan",
    "FileSystem", "Log", "Position", "SegmentRef", "Store", "Transaction", "crc32", "key_hash",
    "partition_of", "safe_relpath",
}  # fmt: skip


def test_storage_all_is_sorted_and_pinned() -> None:
    import streamkit.storage as storage

    assert storage.__all__ == sorted(storage.__all__)
    assert set(storage.__all__) == STORAGE
    for name in storage.__all__:
        assert getattr(storage, name) is not None, name


def test_all_is_sorted_and_pinned() -> None:
    assert sk.__all__ == sorted(sk.__all__)
    assert set(sk.__all__) == CONTRACT
    assert dir(sk) == sorted(sk.__all__)


def test_every_exported_name_resolves() -> None:
    for name in sk.__all__:
        assert getattr(sk, name) is not None, name


def test_errors_share_one_root_and_a_builtin() -> None:
    errors = [getattr(sk, n) for n in sk.__all__ if n.endswith("Error")]
    for err in errors:
        assert issubclass(err, sk.StreamkitError)
        if err is not sk.StreamkitError:
            assert len(err.__mro__) > 3, f"{err.__name__} lacks a builtin base"
    assert issubclass(sk.LogNotFoundError, FileNotFoundError)
    assert issubclass(sk.SchemaError, ValueError)
    assert issubclass(sk.LeaseError, RuntimeError)


def test_plot_functions_of_the_contract() -> None:
    for name in ("timeline", "occupancy", "transition_matrix", "dwell_times", "process_map"):
        assert callable(getattr(sk.plot, name)), name
