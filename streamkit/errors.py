"""Exceptions raised by streamkit.

Every error streamkit raises on purpose derives from :class:`StreamkitError`, and
each area's error also derives from the builtin that fits it, so ``except
FileNotFoundError`` keeps working for code that does not know streamkit::

    StreamkitError (Exception)
    ├── LogNotFoundError (FileNotFoundError)      a log that does not exist
    ├── SchemaError (ValueError)                  data or reopen options that do not fit a log
    ├── MachineError (ValueError)                 a malformed or invalid state machine
    ├── CheckpointError (RuntimeError)            a missing, corrupt or inconsistent checkpoint
    │   └── CorruptFileError (OSError)            a stored file whose size or checksum is wrong
    ├── StorageError (OSError)                    a backend failure, translated at the boundary
    │   └── OutcomeUnknownError                   a write the store may or may not have applied
    ├── LeaseError (RuntimeError)                 another run of the pipeline holds the lease
    ├── UndefinedTransitionError (ValueError)     ``on_undefined="error"`` met an undefined event
    └── ConfigurationError (ValueError)           bad options or a pipeline that cannot run

Messages say what was expected, what was found and where; they never contain
credentials.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigurationError",
    "CorruptFileError",
    "LeaseError",
    "LogNotFoundError",
    "MachineError",
    "OutcomeUnknownError",
    "SchemaError",
    "StorageError",
    "StreamkitError",
    "UndefinedTransitionError",
]


class StreamkitError(Exception):
    """Root of every error streamkit raises on purpose."""


class LogNotFoundError(StreamkitError, FileNotFoundError):
    """A log was opened by name but does not exist in the store."""


class SchemaError(StreamkitError, ValueError):
    """Appended data, or options given when reopening a log, do not fit the log."""


class MachineError(StreamkitError, ValueError):
    """A state machine definition is malformed or fails validation."""


class CheckpointError(StreamkitError, RuntimeError):
    """A checkpoint is missing, corrupt or inconsistent with the log or the machine."""


class CorruptFileError(CheckpointError, OSError):
    """A stored file's size or checksum differs from what its commit recorded.

    Raised for log segments, manifests, state files and checkpoints alike; the
    message names the file.
    """


class StorageError(StreamkitError, OSError):
    """The storage backend failed; the message names the path, never credentials."""


class OutcomeUnknownError(StorageError):
    """A create-if-absent whose outcome is unknown: the store may have applied it.

    Raised when a write failed ambiguously (the response was lost) and reading
    the name back failed too. Whoever wrote files for that commit must keep
    them: a committed version may reference them. Retrying is safe for an
    idempotent operation (an append with ``writer=``/``seq=``, a pipeline run);
    the message of a plain append says how to check whether it landed.
    :meth:`~streamkit.Log.vacuum` removes files no version references.
    """


class LeaseError(StreamkitError, RuntimeError):
    """Another run of the same pipeline holds the lease (CLI exit code 3).

    Raised when a new run steps aside because a live run's heartbeat is fresh
    (nothing was claimed or written), and when a running run finds that a newer
    run took over (``take_over=True`` / ``--take-over``, or after its heartbeat
    went stale): it stops without committing its current batch.
    """


class UndefinedTransitionError(StreamkitError, ValueError):
    """An event has no declared transition and the pipeline says ``on_undefined="error"``."""


class ConfigurationError(StreamkitError, ValueError):
    """Options or a pipeline definition that cannot work (CLI exit code 2)."""
