"""A store: a root folder on any fsspec file system holding logs and pipelines."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from streamkit.errors import ConfigurationError
from streamkit.storage import _manifest as mf
from streamkit.storage._fs import FileSystem
from streamkit.storage.log import Log

__all__ = ["Store", "validate_log_name"]

MAX_NAME = 128


def validate_log_name(name: object) -> str:
    """Return ``name`` if it is a valid log name, else raise ConfigurationError.

    A log name is a non-empty string of at most 128 printable characters without
    ``/``, ``\\`` or ``..``, not starting with ``.`` or ``_`` (those are reserved
    for streamkit's own files such as ``_pipelines``).

    Examples
    --------
    >>> validate_log_name("orders-2024")
    'orders-2024'
    >>> validate_log_name("../etc")
    Traceback (most recent call last):
    ...
    streamkit.errors.ConfigurationError: invalid log name '../etc': ...
    """
    if not isinstance(name, str):
        raise ConfigurationError(f"a log name must be a str, found {type(name).__name__}")
    problem = None
    if not name:
        problem = "it is empty"
    elif len(name) > MAX_NAME:
        problem = f"it has {len(name)} characters, at most {MAX_NAME} are allowed"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator ('/' or '\\')"
    elif ".." in name:
        problem = "it contains '..'"
    elif name[0] in "._":
        problem = "it starts with '.' or '_' (reserved for streamkit's own files)"
    elif name != name.strip():
        problem = "it has leading or trailing whitespace"
    elif not name.isprintable():
        problem = "it contains non-printable characters"
    if problem is not None:
        raise ConfigurationError(
            f"invalid log name {name!r}: {problem}; use letters, digits, '-', '_' and '.'"
        )
    return name


class Store:
    """A folder on any fsspec file system that holds logs (and pipeline state).

    Parameters
    ----------
    url : str
        A local path (relative or absolute), ``file://``, ``memory://``,
        ``s3://bucket/prefix`` or any other fsspec URL.
    storage_options : mapping, optional
        fsspec options for the backend (for S3: ``key``, ``secret``,
        ``client_kwargs={"endpoint_url": ...}``). Never shown or stored.

    Examples
    --------
    >>> import polars as pl
    >>> import streamkit as sk
    >>> store = sk.Store("memory://streamkit-doc-store")
    >>> log = store.log("orders", key="order_id", time="ts")
    >>> _ = log.append(pl.DataFrame({"order_id": [1], "ts": [10]}))
    >>> store.logs()
    ['orders']
    >>> store.log("orders").end()
    Position(offset=1)
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"a store URL must be a non-empty str, found {url!r}")
        self._fs = FileSystem(url, storage_options)

    @property
    def url(self) -> str:
        """The store's root as a URL (local stores: an absolute path), no credentials."""
        return self._fs.url

    @property
    def filesystem(self) -> FileSystem:
        """The file system rooted at the store (for layers built on top of storage)."""
        return self._fs

    @property
    def storage_options(self) -> dict[str, Any]:
        """A copy of the fsspec options the store was opened with.

        They may hold credentials: pass them on to open the same store
        elsewhere (a Dask worker), never print or store them.

        Examples
        --------
        >>> store = Store("memory://doc-options", storage_options={"skip_instance_cache": True})
        >>> store.storage_options
        {'skip_instance_cache': True}
        """
        return self._fs.options

    def log(
        self,
        name: str,
        key: str | None = None,
        time: str | None = None,
        partitions: int | None = None,
    ) -> Log:
        """Open the log ``name``; create it if it is missing and key and time are given.

        Parameters
        ----------
        name : str
            The log's name (see :func:`validate_log_name`).
        key, time : str, optional
            Key and time column names. Required to create; checked on reopen.
        partitions : int, optional
            Number of partitions rows are spread over by key hash (default 1).

        Raises
        ------
        LogNotFoundError
            If the log does not exist and key/time were not given.
        SchemaError
            If the log exists with a different key, time or partitions.
        ConfigurationError
            If the name is invalid.

        Examples
        --------
        >>> import streamkit as sk
        >>> store = sk.Store("memory://streamkit-doc-store-log")
        >>> store.log("events", key="id", time="ts").key
        'id'
        >>> store.log("missing")
        Traceback (most recent call last):
        ...
        streamkit.errors.LogNotFoundError: log 'missing' does not exist in ...
        """
        validate_log_name(name)
        return Log._open(self._fs.child(name), name, key=key, time=time, partitions=partitions)

    def log_at(
        self,
        path: str,
        *,
        key: str | None = None,
        time: str | None = None,
        partitions: int | None = None,
    ) -> Log:
        """Open the log at ``path`` below the store; create it if key and time are given.

        For logs that belong to a layer built on the store rather than to its
        user, such as a pipeline's quarantine at ``_pipelines/<name>/quarantine``:
        ``path`` may be nested and may use the reserved ``_`` prefix, and
        :meth:`logs` does not list such logs. Otherwise it behaves like
        :meth:`log` (same creation, reopen checks and errors). User logs should
        be opened with :meth:`log`, which checks their names.

        Parameters
        ----------
        path : str
            A relative, ``/``-separated path below the store's root; no empty
            path, no ``.`` or ``..`` component (``\\`` counts as ``/``).
        key, time : str, optional
            Key and time column names. Required to create; checked on reopen.
        partitions : int, optional
            Number of partitions rows are spread over by key hash (default 1).

        Raises
        ------
        ConfigurationError
            If ``path`` is empty or would leave the store's folder.
        LogNotFoundError
            If no log exists at ``path`` and key/time were not given.
        SchemaError
            If the log exists with a different key, time or partitions.

        Examples
        --------
        >>> import polars as pl
        >>> import streamkit as sk
        >>> store = sk.Store("memory://streamkit-doc-store-log-at")
        >>> q = store.log_at("_pipelines/orders/quarantine", key="id", time="ts")
        >>> _ = q.append(pl.DataFrame({"id": [1], "ts": [5]}))
        >>> store.log_at("_pipelines/orders/quarantine").count(), store.logs()
        (1, [])
        >>> store.log_at("_pipelines/../../elsewhere", key="id", time="ts")
        Traceback (most recent call last):
        ...
        streamkit.errors.ConfigurationError: invalid log path '_pipelines/../../elsewhere': ...
        """
        rel = _log_relpath(path)
        return Log._open(self._fs.child(rel), rel, key=key, time=time, partitions=partitions)

    def has_log(self, path: str) -> bool:
        """True if a log exists at ``path``: a user log's name or a nested path.

        Parameters
        ----------
        path : str
            A log name or a path as :meth:`log_at` takes it.

        Raises
        ------
        ConfigurationError
            If ``path`` is empty or would leave the store's folder.

        Examples
        --------
        >>> import streamkit as sk
        >>> store = sk.Store("memory://streamkit-doc-store-has-log")
        >>> _ = store.log("orders", key="id", time="ts")
        >>> store.has_log("orders"), store.has_log("_pipelines/p/quarantine")
        (True, False)
        """
        return self._fs.exists(f"{_log_relpath(path)}/{mf.version_path(0)}")

    def logs(self) -> list[str]:
        """Names of the user logs in the store, sorted.

        Examples
        --------
        >>> import streamkit as sk
        >>> store = sk.Store("memory://streamkit-doc-store-logs")
        >>> _ = store.log("b", key="k", time="t"); _ = store.log("a", key="k", time="t")
        >>> store.logs()
        ['a', 'b']
        """
        names = [e for e in self._fs.ls("") if e and e[:1] not in "._" and self.has_log(e)]
        return sorted(names)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def _repr_html_(self) -> str:
        rows = []
        for name in self.logs():
            log = self.log(name)
            segs = log.segments()
            rows.append(
                "<tr>"
                + "".join(
                    f"<td style='text-align:left'>{html.escape(str(v))}</td>"
                    for v in (
                        name,
                        log.key,
                        log.time,
                        f"{int(segs['rows'].sum()):,}",
                        segs.height,
                        f"[{log.start().offset:,}, {log.end().offset:,})",
                    )
                )
                + "</tr>"
            )
        head = "".join(
            f"<th style='text-align:left'>{h}</th>"
            for h in ("log", "key", "time", "rows", "segments", "offsets")
        )
        return (
            f"<table><caption>streamkit Store {html.escape(self.url)}</caption>"
            f"<tr>{head}</tr>{''.join(rows)}</table>"
        )


def _log_relpath(path: object) -> str:
    """``path`` as a clean relative path below the store, else ConfigurationError."""
    if not isinstance(path, str):
        raise ConfigurationError(f"a log path must be a str, found {type(path).__name__}")
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if not parts or any(p in {".", ".."} for p in parts):
        raise ConfigurationError(
            f"invalid log path {path!r}: expected a relative path below the store's folder, "
            "with no empty, '.' or '..' component (e.g. '_pipelines/<name>/quarantine')"
        )
    return "/".join(parts)
