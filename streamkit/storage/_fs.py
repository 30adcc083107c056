"""The one way streamkit touches bytes: a small file system wrapper over fsspec.

Every writer in streamkit (log versions, segments, checkpoints, state files) uses
the few primitives of :class:`FileSystem`. The important one is :meth:`FileSystem.
put_new`, an atomic create-if-absent:

* local disk: write ``<name>.tmp-<ms>-<uuid>``, fsync, ``os.link`` it to the final
  name (fails if the name exists), unlink the temporary file, fsync the directory.
  A crash never leaves a torn file under the final name.
* S3: a single ``PutObject`` with ``If-None-Match: *`` (s3fs ``"xb"`` mode); a
  lost race surfaces as ``PreconditionFailed`` and is reported as ``False``.
* memory (tests, notebooks): an existence check and write under a process lock.

Backend exceptions are translated here into :class:`~streamkit.errors.StorageError`
(or :class:`~streamkit.errors.LogNotFoundError` for a missing file); messages name
the path and never contain storage options.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
from isal.isal_zlib import crc32 as _isal_crc32

from streamkit.errors import (
    CorruptFileError,
    LogNotFoundError,
    OutcomeUnknownError,
    StorageError,
)

__all__ = ["FileSystem", "crc32", "verify"]

_MEMORY_LOCK = threading.Lock()
_TMP_MARK = ".tmp-"
#: Attempts of one conditional create on an object store (each after an
#: ambiguous failure that left the name absent).
_CREATE_ATTEMPTS = 5
#: Files whose size FileSystem.sizes asks an object store for at once.
_CHECKERS = 16
_SECRET_NAME = re.compile(r"key|secret|token|password|credential|sas|signature", re.IGNORECASE)


def crc32(data: bytes | memoryview) -> int:
    """Return the unsigned CRC-32 (zlib's polynomial and values) of ``data``.

    Computed by ISA-L (``isal``), about five times faster than ``zlib.crc32``
    on this library's segment files; the values are identical.

    Examples
    --------
    >>> crc32(b"streamkit")
    3996654358
    """
    return int(_isal_crc32(data)) & 0xFFFFFFFF


def verify(path: str, data: bytes, size: int, crc: int) -> None:
    """Check that ``data`` read from ``path`` has the recorded ``size`` and ``crc``.

    Parameters
    ----------
    path : str
        Where the bytes came from (only used in the error message).
    data : bytes
        The bytes read.
    size : int
        Size recorded at commit time.
    crc : int
        CRC-32 recorded at commit time.

    Raises
    ------
    CorruptFileError
        If the size or checksum differs; the message names the file.

    Examples
    --------
    >>> verify("a.bin", b"abc", 3, crc32(b"abc"))
    >>> verify("a.bin", b"ab", 3, crc32(b"abc"))
    Traceback (most recent call last):
    ...
    streamkit.errors.CorruptFileError: corrupt file a.bin: expected 3 bytes, found 2 ...
    """
    if len(data) != size:
        raise CorruptFileError(
            f"corrupt file {path}: expected {size} bytes, found {len(data)} "
            "(truncated or overwritten); restore it from a backup or drop it with "
            "truncate/retract"
        )
    found = crc32(data)
    if found != crc:
        raise CorruptFileError(
            f"corrupt file {path}: expected crc32 {crc:#010x}, found {found:#010x} "
            "(the bytes changed after commit); restore it from a backup or drop it "
            "with truncate/retract"
        )


def _is_precondition_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is S3's answer to a lost ``If-None-Match: *`` race."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, FileExistsError):
            return True
        response = getattr(current, "response", None)
        if isinstance(response, Mapping):
            code = str(response.get("Error", {}).get("Code", ""))
            if code in {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}:
                return True
        text = str(current)
        if "pre-condition" in text.lower() or "precondition" in text.lower():
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is S3's 409 ConditionalRequestConflict (retry), not a 412."""
    current: BaseException | None = exc
    for _ in range(16):
        if current is None:
            break
        response = getattr(current, "response", None)
        if isinstance(response, Mapping):
            code = str(response.get("Error", {}).get("Code", ""))
            if code in {"ConditionalRequestConflict", "409"}:
                return True
        current = current.__cause__ or current.__context__
    return False


#: errnos that mean the store refused a write outright (nothing was applied).
_REFUSALS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the store is out of space."""
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "no space left" in str(item).lower():
            return True
    return False


def _refused(exc: BaseException) -> bool:
    """Whether a failed write was definitely not applied by the store.

    A refusal is an errno such as ENOSPC or EACCES, or an HTTP 4xx answer other
    than 408 (timeout), 409 (conflict) and 429 (throttled). Resets, timeouts and
    5xx answers are ambiguous: the store may have applied the request.
    """
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno in _REFUSALS:
            return True
        if isinstance(item, PermissionError):
            return True
        response = getattr(item, "response", None)
        if isinstance(response, Mapping):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429):
                return True
    return False


class FileSystem:
    """An fsspec file system rooted at a directory, with atomic create-if-absent.

    Parameters
    ----------
    url : str
        Any fsspec URL or a local path (relative or absolute).
    storage_options : mapping, optional
        Options passed to the fsspec backend (for S3: ``key``, ``secret``,
        ``client_kwargs``). They never appear in reprs or error messages.

    Examples
    --------
    >>> fs = FileSystem("memory://streamkit-doc-fs")
    >>> fs.put_new("a/b.txt", b"hello")
    True
    >>> fs.put_new("a/b.txt", b"again")
    False
    >>> fs.get("a/b.txt")
    b'hello'
    >>> fs.ls("a")
    ['b.txt']
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        _fs: Any = None,
        _root: str | None = None,
        _protocol: str | None = None,
    ) -> None:
        self._options = dict(storage_options or {})
        if _fs is not None and _root is not None and _protocol is not None:
            self._fs = _fs
            self._root = _root.rstrip("/") or "/"
            self._protocol = _protocol
        else:
            try:
                fs, root = fsspec.core.url_to_fs(url, **self._options)
            except (ImportError, ValueError, TypeError) as exc:
                raise StorageError(
                    f"cannot open store {_display(url)}: {self._scrub(str(exc))}"
                ) from None
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            self._fs = fs
            self._protocol = "file" if protocol in {"file", "local"} else protocol
            self._root = root.rstrip("/") or "/"
            if self._protocol == "file":
                self._root = os.path.abspath(self._root)
        self._local = self._protocol == "file"
        self._memory = self._protocol == "memory"

    # ------------------------------------------------------------------ naming
    @property
    def options(self) -> dict[str, Any]:
        """A copy of the fsspec storage options (may hold credentials: never print them)."""
        return dict(self._options)

    @property
    def protocol(self) -> str:
        """The fsspec protocol (``"file"``, ``"memory"``, ``"s3"``, ...)."""
        return self._protocol

    @property
    def is_local(self) -> bool:
        """Whether the files live on the local disk."""
        return self._local

    @property
    def root(self) -> str:
        """The root path inside the backend (no protocol)."""
        return self._root

    @property
    def url(self) -> str:
        """The root as a URL, without credentials.

        Examples
        --------
        >>> FileSystem("memory://streamkit-doc-url/x").url
        'memory://streamkit-doc-url/x'
        """
        if self._local:
            return self._root
        return _display(f"{self._protocol}://{self._root.lstrip('/')}")

    @property
    def fsspec(self) -> Any:
        """The underlying fsspec file system (for readers such as Polars/pyarrow)."""
        return self._fs

    def full_path(self, path: str) -> str:
        """Backend path of ``path`` (relative to the root)."""
        path = path.strip("/")
        if not path:
            return self._root
        if self._root == "/":
            return "/" + path
        return f"{self._root}/{path}"

    def child(self, relpath: str) -> FileSystem:
        """A file system rooted at ``relpath`` below this one.

        Examples
        --------
        >>> FileSystem("memory://streamkit-doc-child").child("a/b").url
        'memory://streamkit-doc-child/a/b'
        """
        return FileSystem(
            "",
            self._options,
            _fs=self._fs,
            _root=self.full_path(relpath),
            _protocol=self._protocol,
        )

    def __repr__(self) -> str:
        return f"FileSystem({self.url!r})"

    # ------------------------------------------------------------------ errors
    def _scrub(self, text: str) -> str:
        for value in _secret_values(self._options):
            text = text.replace(value, "***")
        return text

    def _shown(self, path: str) -> str:
        where = self.full_path(path)
        return where if self._local else _display(f"{self._protocol}://{where.lstrip('/')}")

    def _translate(self, exc: BaseException, action: str, path: str) -> Exception:
        shown = self._shown(path)
        if isinstance(exc, FileNotFoundError):
            return LogNotFoundError(f"cannot {action} {shown}: no such file")
        detail = self._scrub(f"{type(exc).__name__}: {exc}")
        if _no_space(exc):
            detail += "; the store is full: free space, then run again (nothing was committed)"
        return StorageError(f"cannot {action} {shown}: {detail}")

    @contextlib.contextmanager
    def _boundary(self, action: str, path: str) -> Iterator[None]:
        error: Exception | None = None
        try:
            yield
        except (LogNotFoundError, StorageError, CorruptFileError):
            raise
        except Exception as exc:
            error = self._translate(exc, action, path)
        if error is not None:
            # raised outside the handler: the backend's exception, whose text may
            # hold credentials, is not chained to ours
            raise error

    def _forget(self, full: str) -> None:
        """Drop fsspec's cached listings of ``full`` and its parents.

        s3fs answers ``info``/``size`` (used by ``cat_file``) from a cached
        listing of the parent directory when it has one, so a file created by
        another process after that listing would stay invisible. Listings are
        therefore never left in the cache.
        """
        if not (self._local or self._memory):
            self._fs.invalidate_cache(full)

    # ------------------------------------------------------------------ writing
    def put_new(self, path: str, data: bytes) -> bool:
        """Create ``path`` with ``data`` if it does not exist, atomically.

        On an object store a create can fail *after* the store applied it: the
        response is lost, and the HTTP client (aiohttp, botocore, s3fs) re-sends
        the request, which the store then answers with "the name exists". So
        "exists" is never taken at its word: the stored object is read back and
        compared with ``data``. Identical bytes mean this call (or its re-sent
        request) created it. Every file streamkit creates embeds a unique
        identity (a uuid in its name or a commit id in its body), so identical
        bytes cannot come from another writer.

        Parameters
        ----------
        path : str
            Path relative to the root.
        data : bytes
            Complete content.

        Returns
        -------
        bool
            True if ``path`` now holds ``data`` written by this call, False if the
            name already held other content.

        Raises
        ------
        OutcomeUnknownError
            The write failed ambiguously and reading the name back failed too:
            the store may or may not hold ``data``. Files referenced by ``data``
            must be kept; retrying the whole operation is safe.
        StorageError
            The store refused the write (it holds nothing new).

        Examples
        --------
        >>> fs = FileSystem("memory://streamkit-doc-put-new")
        >>> fs.put_new("x", b"1"), fs.put_new("x", b"2"), fs.get("x")
        (True, False, b'1')
        >>> fs.put_new("x", b"1")  # the same bytes: a re-sent create of ours
        True
        """
        full = self.full_path(path)
        if self._local:
            with self._boundary("create", path):
                if _local_put_new(full, data):
                    return True
            return self._holds(path, data)
        if self._memory:
            with self._boundary("create", path), _MEMORY_LOCK:
                if not self._fs.exists(full):
                    self._fs.pipe_file(full, data)
                    return True
            return self._holds(path, data)
        return self._put_new_remote(path, full, data)

    def _put_new_remote(self, path: str, full: str, data: bytes) -> bool:
        """Conditional PUT on an object store, resolving every ambiguous answer."""
        failure: BaseException | None = None
        ambiguous = False  # whether an attempt may have been applied unseen
        for attempt in range(_CREATE_ATTEMPTS):
            self._forget(full)
            try:
                with self._fs.open(full, "xb") as fh:
                    fh.write(data)
            except Exception as exc:
                if _is_precondition_failure(exc) and not _is_conflict(exc):
                    # 412: the name exists -- perhaps because an earlier, lost
                    # attempt of this very call created it.
                    return self._holds(path, data)
                if _refused(exc) and not ambiguous:
                    raise self._translate(exc, "create", path) from None
                failure = exc
                ambiguous = ambiguous or not _refused(exc)
            else:
                return True
            # A 409 (a concurrent conditional write in flight) or an ambiguous
            # failure (reset, timeout, 5xx): the store may have applied the
            # write. Look before trying again; a conditional create is safe to
            # repeat, the read-back decides whose bytes are there.
            try:
                stored = self._read_back(full)
            except Exception:
                detail = self._scrub(f"{type(failure).__name__}: {failure}")
                raise OutcomeUnknownError(
                    f"cannot tell whether {self._shown(path)} was created: the write "
                    f"failed ({detail}) and reading it back failed too; the store may "
                    "hold it"
                ) from None
            if stored is not None:
                return stored == data
            if attempt + 1 < _CREATE_ATTEMPTS:
                time.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
        assert failure is not None
        # Absent on every read-back, yet a timed-out request might still land:
        # whoever references this file must keep its own files.
        error = self._translate(failure, "create", path)
        raise OutcomeUnknownError(f"{error}; the store may still apply it") from None

    def _read_back(self, full: str) -> bytes | None:
        """The object at ``full``, or None if it does not exist."""
        self._forget(full)
        try:
            return bytes(self._fs.cat_file(full))
        except FileNotFoundError:
            return None

    def _holds(self, path: str, data: bytes) -> bool:
        """Whether existing ``path`` holds exactly ``data`` (read back, compared)."""
        try:
            stored = self.get(path)
        except LogNotFoundError:  # deleted since: it was not ours to keep
            return False
        except StorageError as exc:
            raise OutcomeUnknownError(
                f"{exc}; {self._shown(path)} exists but cannot be read back to tell "
                "whether this write created it"
            ) from None
        return stored == data

    def put_new_written(self, path: str, write: Callable[[Any], None]) -> tuple[bool, int, int]:
        """Create ``path`` with the bytes ``write(target)`` produces, if it is absent.

        ``write`` receives a local file path (local disk: the temporary file, so
        writers such as Polars use their fastest path) or a binary file object.

        Returns
        -------
        tuple
            ``(created, size, crc32)`` of the content.

        Examples
        --------
        >>> fs = FileSystem("memory://streamkit-doc-put-new-written")
        >>> fs.put_new_written("x", lambda f: f.write(b"abc"))
        (True, 3, 891568578)
        """
        full = self.full_path(path)
        if not self._local:
            buf = io.BytesIO()
            write(buf)
            data = buf.getvalue()
            return self.put_new(path, data), len(data), crc32(data)
        with self._boundary("create", path):
            os.makedirs(os.path.dirname(full), exist_ok=True)
            tmp = tmp_name(full)
            try:
                _write_local(write, tmp)
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                    with os.fdopen(os.dup(fd), "rb") as fh:
                        data = fh.read()
                finally:
                    os.close(fd)
                try:
                    os.link(tmp, full)
                except FileExistsError:
                    return False, len(data), crc32(data)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            _fsync_dir(os.path.dirname(full))
            return True, len(data), crc32(data)

    def put(self, path: str, data: bytes) -> None:
        """Write ``path``, replacing any previous content (advisory files only).

        Examples
        --------
        >>> fs = FileSystem("memory://streamkit-doc-put")
        >>> fs.put("h", b"1"); fs.put("h", b"2"); fs.get("h")
        b'2'
        """
        full = self.full_path(path)
        with self._boundary("write", path):
            if self._local:
                _local_put(full, data)
            elif self._memory:
                with _MEMORY_LOCK:
                    self._fs.pipe_file(full, data)
            else:
                self._fs.pipe_file(full, data)

    # ------------------------------------------------------------------ reading
    def get(self, path: str) -> bytes:
        """Read the whole file ``path``.

        Raises
        ------
        LogNotFoundError
            If the file does not exist.
        StorageError
            On any other backend failure.

        Examples
        --------
        >>> fs = FileSystem("memory://streamkit-doc-get")
        >>> fs.put("a", b"xyz"); fs.get("a")
        b'xyz'
        """
        full = self.full_path(path)
        with self._boundary("read", path):
            if self._local:
                with open(full, "rb") as fh:
                    return fh.read()
            self._forget(full)
            return bytes(self._fs.cat_file(full))

    def get_many(self, paths: Iterable[str], *, missing_ok: bool = False) -> dict[str, bytes]:
        """Read several files, concurrently where the backend allows it.

        Parameters
        ----------
        paths : iterable of str
            Paths relative to the root.
        missing_ok : bool
            Leave missing files out of the result instead of raising.

        Returns
        -------
        dict
            Relative path -> bytes.

        Examples
        --------
        >>> fs = FileSystem("memory://streamkit-doc-get-many")
        >>> fs.put("a", b"1")
        >>> fs.get_many(["a", "b"], missing_ok=True)
        {'a': b'1'}
        """
        wanted = list(dict.fromkeys(paths))
        if not wanted:
            return {}
        out: dict[str, bytes] = {}
        if self._local or self._memory or len(wanted) == 1:
            for rel in wanted:
                try:
                    out[rel] = self.get(rel)
                except LogNotFoundError:
                    if not missing_ok:
                        raise
            return out
        full = {self.full_path(rel): rel for rel in wanted}
        for item in full:
            self._forget(item)
        with self._boundary("read", wanted[0]):
            got = self._fs.cat(list(full), on_error="return")
        if not isinstance(got, dict):  # a single path returns bytes
            got = {next(iter(full)): got}
        for key, value in got.items():
            found = full.get(self._fs._strip_protocol(key)) or full.get(key)
            if found is None:
                continue
            rel = found
            if isinstance(value, BaseException):
                if isinstance(value, FileNotFoundError) and missing_ok:
                    continue
                raise self._translate(value, "read", rel)
            out[rel] = bytes(value)
        missing = [rel for rel in wanted if rel not in out]
        if missing and not missing_ok:
            raise self._translate(FileNotFoundError(missing[0]), "read", missing[0])
        return out

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists.

        Examples
        --------
        >>> FileSystem("memory://streamkit-doc-exists").exists("nope")
        False
        """
        full = self.full_path(path)
        with self._boundary("check", path):
            if self._local:
                return os.path.exists(full)
            self._forget(full)
            return bool(self._fs.exists(full))

    def sizes(self, paths: Iterable[str]) -> dict[str, int]:
        """Sizes in bytes of the given files, missing ones left out.

        One request per file (a ``HEAD`` on object stores, several at once),
        never answered from a stale listing: checking a few known files costs
        the same however many others share their folder.

        Parameters
        ----------
        paths : iterable of str
            Paths relative to the root.

        Returns
        -------
        dict
            Relative path -> size, for the files that exist.

        Raises
        ------
        StorageError
            A request failed for another reason than a missing file.

        Examples
        --------
        >>> fs = FileSystem("memory://streamkit-doc-sizes")
        >>> fs.put("d/a", b"abc")
        >>> fs.sizes(["d/a", "d/b"])
        {'d/a': 3}
        """
        wanted = list(dict.fromkeys(paths))

        def one(rel: str) -> int | None:
            full = self.full_path(rel)
            with self._boundary("check", rel):
                try:
                    if self._local:
                        st = os.stat(full)
                        return st.st_size if stat.S_ISREG(st.st_mode) else None
                    self._forget(full)
                    info = self._fs.info(full)
                except (FileNotFoundError, NotADirectoryError):
                    return None
            return int(info.get("size") or 0) if info.get("type", "file") == "file" else None

        if self._local or self._memory or len(wanted) <= 1:
            found = [one(rel) for rel in wanted]
        else:
            with ThreadPoolExecutor(min(len(wanted), _CHECKERS)) as pool:
                found = list(pool.map(one, wanted))
        return {rel: size for rel, size in zip(wanted, found, strict=True) if size is not None}

    def ls(self, path: str = "") -> list[str]:
        """Names (not paths) in directory ``path``, sorted; ``[]`` if it is missing.

        Never served from a stale listing cache.

        Examples
        --------
        >>> fs = FileSystem("memory://streamkit-doc-ls")
        >>> fs.put("d/b", b""); fs.put("d/a", b"")
        >>> fs.ls("d"), fs.ls("missing")
        (['a', 'b'], [])
        """
        full = self.full_path(path)
        with self._boundary("list", path):
            if self._local:
                try:
                    return sorted(os.listdir(full))
                except (FileNotFoundError, NotADirectoryError):
                    return []
            self._forget(full)
            try:
                entries = self._fs.ls(full, detail=False)
            except FileNotFoundError:
                return []
            finally:
                self._forget(full)
        prefix = full.rstrip("/") + "/"
        names = []
        for entry in entries:
            entry = self._fs._strip_protocol(entry).rstrip("/")
            if entry.startswith(prefix.lstrip("/")) or entry.startswith(prefix):
                names.append(entry.rsplit("/", 1)[-1])
        return sorted(set(names))

    def find(self, path: str = "") -> list[str]:
        """All files below ``path``, as paths relative to the root, sorted.

        Examples
        --------
        >>> fs = FileSystem("memory://streamkit-doc-find")
        >>> fs.put("d/e/f", b""); fs.find("d")
        ['d/e/f']
        """
        full = self.full_path(path)
        with self._boundary("list", path):
            if self._local:
                out = []
                for dirpath, _dirs, files in os.walk(full):
                    rel_dir = os.path.relpath(dirpath, self._root).replace(os.sep, "/")
                    for name in files:
                        out.append(name if rel_dir == "." else f"{rel_dir}/{name}")
                return sorted(out)
            self._forget(full)
            try:
                found = self._fs.find(full)
            except FileNotFoundError:
                return []
            finally:
                self._forget(full)
        root = self._root.strip("/")
        out = []
        for entry in found:
            entry = self._fs._strip_protocol(entry).strip("/")
            rel = entry[len(root) :].lstrip("/") if root else entry
            out.append(rel)
        return sorted(out)

    def find_details(self, path: str = "", *, recursive: bool = True) -> list[dict[str, Any]]:
        """Files below ``path`` with what identifies their content, sorted by path.

        One listing (no request per file), never served from a stale listing
        cache: a file another process created, rewrote or deleted since an
        earlier listing is seen as it is now.

        Parameters
        ----------
        path : str
            Directory relative to the root (default: the root). A missing
            directory lists as ``[]``.
        recursive : bool
            List the files of subdirectories too (default); False lists only
            the files directly in ``path``.

        Returns
        -------
        list of dict
            One per file: ``path`` (relative to the root), ``size`` (bytes),
            ``etag`` (the backend's entity tag, without quotes; None where it
            has none, as on local disk) and ``mtime`` (modification time in
            nanoseconds since the epoch, microsecond precision on object
            stores; None if the backend reports none).

        Raises
        ------
        StorageError
            The listing failed (message names the directory, no credentials).

        Examples
        --------
        >>> fs = FileSystem("memory://streamkit-doc-find-details")
        >>> fs.put("d/e/f", b"abc"); fs.put("d/g", b"")
        >>> [(d["path"], d["size"]) for d in fs.find_details("d")]
        [('d/e/f', 3), ('d/g', 0)]
        >>> [d["path"] for d in fs.find_details("d", recursive=False)]
        ['d/g']
        >>> fs.find_details("missing")
        []
        """
        full = self.full_path(path)
        out: list[dict[str, Any]] = []
        with self._boundary("list", path):
            if self._local:
                if not os.path.isdir(full):
                    return []
                for dirpath, dirs, names in os.walk(full):
                    if not recursive:
                        dirs.clear()
                    rel_dir = os.path.relpath(dirpath, self._root).replace(os.sep, "/")
                    for name in names:
                        try:  # a file deleted between the walk and its stat is gone
                            st = os.stat(os.path.join(dirpath, name))
                        except FileNotFoundError:
                            continue
                        out.append(
                            {
                                "path": name if rel_dir == "." else f"{rel_dir}/{name}",
                                "size": st.st_size,
                                "etag": None,
                                "mtime": st.st_mtime_ns,
                            }
                        )
                return sorted(out, key=lambda d: str(d["path"]))
            self._forget(full)
            try:
                if recursive:
                    entries = list(self._fs.find(full, detail=True).values())
                else:
                    entries = list(self._fs.ls(full, detail=True))
            except FileNotFoundError:
                entries = []
            finally:
                self._forget(full)

        import datetime as dt

        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

        def to_ns(value: Any) -> int | None:
            if isinstance(value, str):
                try:
                    value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    return None
            if isinstance(value, dt.datetime):
                if value.tzinfo is None:
                    value = value.replace(tzinfo=dt.UTC)
                return int((value - epoch) // dt.timedelta(microseconds=1)) * 1000
            if isinstance(value, int | float) and not isinstance(value, bool):
                return round(value * 1_000_000) * 1000  # seconds, to the microsecond
            return None

        root = self._root.strip("/")
        for entry in entries:
            if entry.get("type", "file") != "file":
                continue
            name = self._fs._strip_protocol(entry["name"]).strip("/")
            mtime = None
            for field in ("LastModified", "last_modified", "mtime", "updated", "modified"):
                if entry.get(field) is not None:
                    mtime = to_ns(entry[field])
                    if mtime is not None:
                        break
            if mtime is None and entry.get("created") is not None:
                mtime = to_ns(entry["created"])
            etag = entry.get("ETag") or entry.get("etag") or entry.get("md5Hash")
            out.append(
                {
                    "path": name[len(root) :].lstrip("/") if root else name,
                    "size": int(entry.get("size") or 0),
                    "etag": str(etag).strip('"') if etag else None,
                    "mtime": mtime,
                }
            )
        return sorted(out, key=lambda d: str(d["path"]))

    def rm(self, paths: Iterable[str]) -> None:
        """Delete files; missing files are ignored.

        Examples
        --------
        >>> fs = FileSystem("memory://streamkit-doc-rm")
        >>> fs.put("a", b""); fs.rm(["a", "b"]); fs.exists("a")
        False
        """
        wanted = list(paths)
        if not wanted:
            return
        with self._boundary("delete", wanted[0]):
            if self._local:
                for rel in wanted:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.full_path(rel))
                return
            full = [self.full_path(rel) for rel in wanted]
            for chunk_start in range(0, len(full), 500):
                chunk = full[chunk_start : chunk_start + 500]
                try:
                    self._fs.rm(chunk)
                except FileNotFoundError:
                    for item in chunk:
                        with contextlib.suppress(FileNotFoundError):
                            self._fs.rm_file(item)
            for item in full:
                self._forget(item)


def tmp_name(final: str) -> str:
    """Name of a temporary file written next to ``final`` before it is linked."""
    return f"{final}{_TMP_MARK}{int(time.time() * 1000)}-{uuid.uuid4().hex}"


def _write_local(write: Callable[[Any], None], tmp: str) -> None:
    """Run ``write(tmp)``; when it fails, learn whether the disk is to blame.

    Writers such as Polars report a full disk as a malformed file ("Invalid
    thrift: transport error"). On failure the bytes are produced in memory and
    written by us, which either succeeds or raises the real ``OSError``.
    """
    try:
        write(tmp)
    except Exception as exc:
        if isinstance(exc, OSError) or _no_space(exc):
            raise
        buf = io.BytesIO()
        write(buf)  # fails again, with the writer's own error, if the disk is not to blame
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_tmp(final: str, data: bytes) -> str:
    directory = os.path.dirname(final)
    os.makedirs(directory, exist_ok=True)
    tmp = tmp_name(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _local_put_new(final: str, data: bytes) -> bool:
    tmp = _write_tmp(final, data)
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(os.path.dirname(final))
    return True


def _local_put(final: str, data: bytes) -> None:
    tmp = _write_tmp(final, data)
    try:
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(final))


def _secret_values(options: Mapping[str, Any]) -> list[str]:
    values: list[str] = []
    for name, value in options.items():
        if isinstance(value, Mapping):
            values.extend(_secret_values(value))
        elif isinstance(value, str) and len(value) >= 4 and _SECRET_NAME.search(str(name)):
            values.append(value)
    return sorted(values, key=len, reverse=True)


def _display(url: str) -> str:
    """A URL safe to show: any ``user:password@`` part removed.

    Backends whose paths keep their protocol (http) give ``http://http://...``
    when prefixed: the inner URL is shown.

    Examples
    --------
    >>> _display("http://http://user:pw@localhost:1/lake")
    'http://***@localhost:1/lake'
    """
    scheme, sep, rest = url.partition("://")
    if sep and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", rest):
        url = rest
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        host = rest.split("@", 1)[1]
        return f"{scheme}://***@{host}"
    return url
