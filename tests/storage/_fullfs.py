"""A size-limited fsspec memory file system for disk-full tests (protocol ``fullmem``).

Each ``fullmem://<volume>/...`` URL lives on a *volume* (its first path component)
with a byte budget, like a small disk or a bucket with a quota. A write that
would take the volume past its budget fails with ``OSError(errno.ENOSPC)`` when
the file is committed (``close`` of a file opened for writing, or ``pipe_file``),
and stores nothing: like an object store PUT, a file appears whole or not at all.
Deleting files frees their bytes.

Writes go through the generic (object store) path of streamkit's FileSystem
(``open(path, "xb")``), not its ``memory://`` special case, so a disk-full
error meets the same code a failed S3 PUT meets.

Registered under its own protocol when imported. The store lives in this
process only; a subprocess that needs it must import this module itself.

:func:`small_tmpfs` mounts a real, small tmpfs (root only) and :func:`fill`
takes its free space down to a given number of bytes, for the same tests on a
local disk.

Examples
--------
>>> import fsspec
>>> url = new_volume(capacity=10)
>>> fs = fsspec.filesystem("fullmem")
>>> fs.pipe_file(f"{url}/a", b"12345678")
>>> fs.pipe_file(f"{url}/b", b"123")
Traceback (most recent call last):
...
OSError: [Errno 28] No space left on device: '/...'
>>> fs.rm(f"{url}/a"); fs.pipe_file(f"{url}/b", b"123"); used(url)
3
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

__all__ = [
    "FullMemoryFileSystem",
    "clone",
    "journal",
    "new_volume",
    "refusals",
    "set_capacity",
    "set_free",
    "small_tmpfs",
    "used",
]

PROTOCOL = "fullmem"
_LOCK = threading.RLock()


def _volume(path: str) -> str:
    return path.strip("/").split("/", 1)[0]


class _PendingFile(io.BytesIO):
    """Bytes written to a file opened for writing; committed whole on close."""

    def __init__(self, fs: FullMemoryFileSystem, path: str, exclusive: bool) -> None:
        super().__init__()
        self.fs, self.path, self.exclusive = fs, path, exclusive
        self.done = False

    def close(self) -> None:
        if not self.done:
            self.done = True
            self.fs._commit(self.path, self.getvalue(), self.exclusive)
        super().close()

    def discard(self) -> None:
        self.done = True
        super().close()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:  # the writer failed: store nothing
            self.discard()
        else:
            self.close()


class FullMemoryFileSystem(MemoryFileSystem):
    """A memory file system whose volumes have a byte budget (see the module doc)."""

    protocol = PROTOCOL
    store: ClassVar[dict[str, Any]] = {}  # type: ignore[misc]
    pseudo_dirs: ClassVar[list[str]] = [""]  # type: ignore[misc]
    #: volume name -> capacity in bytes (absent: unlimited)
    capacity: ClassVar[dict[str, int]] = {}
    #: volumes whose budget is lifted right after their first refusal
    passing: ClassVar[set[str]] = set()
    #: volume name -> every write committed or refused: (path, bytes, stored)
    journal: ClassVar[dict[str, list[tuple[str, int, bool]]]] = {}

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        if isinstance(path, str) and path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3 :]
        stripped: str = super()._strip_protocol(path)
        return stripped

    def _used(self, volume: str) -> int:
        prefix = f"/{volume}/"
        return sum(f.size for p, f in list(self.store.items()) if p.startswith(prefix))

    def _commit(self, path: str, data: bytes, exclusive: bool) -> None:
        path = self._strip_protocol(path)
        volume = _volume(path)
        with _LOCK:
            if exclusive and path in self.store:
                raise FileExistsError(errno.EEXIST, "File exists", path)
            limit = self.capacity.get(volume)
            if limit is not None:
                old = self.store[path].size if path in self.store else 0
                if self._used(volume) - old + len(data) > limit:
                    self.journal.setdefault(volume, []).append((path, len(data), False))
                    if volume in self.passing:  # space is freed right after this refusal
                        self.passing.discard(volume)
                        del self.capacity[volume]
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            self.store[path] = MemoryFile(self, path, data)
            self.journal.setdefault(volume, []).append((path, len(data), True))

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if mode in {"wb", "xb"}:
            path = self._strip_protocol(path)
            if "x" in mode and path in self.store:
                raise FileExistsError(errno.EEXIST, "File exists", path)
            pending = _PendingFile(self, path, exclusive="x" in mode)
            data = kwargs.get("data")
            if data is not None:
                pending.write(data)
                pending.close()
            return pending
        if mode != "rb":
            raise ValueError(f"{PROTOCOL}: unsupported file mode {mode!r}")
        return super()._open(path, mode, *args, **kwargs)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        self._commit(path, bytes(value), exclusive=mode == "create")


fsspec.register_implementation(PROTOCOL, FullMemoryFileSystem, clobber=True)


def new_volume(capacity: int | None = None) -> str:
    """A fresh, empty volume; returns its URL (``fullmem://<name>``)."""
    name = f"vol-{uuid.uuid4().hex[:12]}"
    if capacity is not None:
        FullMemoryFileSystem.capacity[name] = capacity
    return f"{PROTOCOL}://{name}"


def clone(url: str, capacity: int | None = None) -> str:
    """A new volume holding a copy of the files of the volume of ``url``."""
    fs = FullMemoryFileSystem()
    source = _volume(fs._strip_protocol(url))
    target = new_volume(capacity)
    new = _volume(fs._strip_protocol(target))
    with _LOCK:
        for path, f in list(fs.store.items()):
            if path.startswith(f"/{source}/"):
                copy = f"/{new}/{path[len(source) + 2 :]}"
                fs.store[copy] = MemoryFile(fs, copy, bytes(f.getbuffer()))
    return target


def used(url: str) -> int:
    """Bytes stored on the volume of ``url``."""
    fs = FullMemoryFileSystem()
    return fs._used(_volume(fs._strip_protocol(url)))


def set_capacity(url: str, capacity: int | None) -> None:
    """Set (or, with None, lift) the byte budget of the volume of ``url``."""
    volume = _volume(FullMemoryFileSystem._strip_protocol(url))
    with _LOCK:
        if capacity is None:
            FullMemoryFileSystem.capacity.pop(volume, None)
            FullMemoryFileSystem.passing.discard(volume)
        else:
            FullMemoryFileSystem.capacity[volume] = capacity


def set_free(url: str, free: int, *, passing: bool = False) -> None:
    """Leave exactly ``free`` bytes of room on the volume of ``url`` (as it is now).

    With ``passing``, the volume is full for one write only: the first write
    refused lifts the budget (another program freed space right after).
    """
    set_capacity(url, used(url) + free)
    volume = _volume(FullMemoryFileSystem._strip_protocol(url))
    with _LOCK:
        if passing:
            FullMemoryFileSystem.passing.add(volume)
        else:
            FullMemoryFileSystem.passing.discard(volume)


def journal(url: str) -> list[tuple[str, int, bool]]:
    """Every write to the volume of ``url`` so far: ``(path, bytes, stored)``."""
    volume = _volume(FullMemoryFileSystem._strip_protocol(url))
    return list(FullMemoryFileSystem.journal.get(volume, []))


def refusals(url: str) -> int:
    """How many writes the volume of ``url`` refused with ENOSPC."""
    return sum(not stored for _path, _size, stored in journal(url))


# ------------------------------------------------------------------ a real tmpfs
@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``where`` for the duration; skip if not allowed."""
    import pytest

    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the fullmem store covers disk full")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip()}); the fullmem store covers disk full"
        )
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def free_bytes(where: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``where``."""
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize


def fill(where: Path, leave: int) -> Path:
    """Write a filler file under ``where`` until at most ``leave`` bytes are free.

    Returns the filler's path; delete it to free the space again.
    """
    filler = where / f"filler-{uuid.uuid4().hex[:8]}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        while (room := free_bytes(where) - leave) > 0:
            try:
                os.write(fd, b"\0" * min(room, 1 << 16))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler
