"""Lazy imports of optional, heavy dependencies with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

_HINTS = {
    "s3fs": "pip install 'streamkit[s3]'",
    "dask": "pip install 'streamkit[dask]'",
    "distributed": "pip install 'streamkit[dask]'",
    "pandas": "pip install pandas",
}


def import_optional(name: str) -> ModuleType:
    """Import module ``name`` or raise ImportError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        top = name.split(".", maxsplit=1)[0]
        hint = _HINTS.get(top, f"pip install {top}")
        raise ImportError(f"streamkit needs the optional package {top!r} for this: {hint}") from exc
