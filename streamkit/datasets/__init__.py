"""Synthetic and captured event logs to try streamkit on.

``generate_orders`` draws an order-lifecycle log with controlled anomalies and
``order_machine`` is the state machine it follows. Other dataset modules (such as
``streamkit.datasets.tcp``) are imported on first use.

Examples
--------
>>> from streamkit import datasets
>>> datasets.generate_orders(10, anomalies=False)["order_id"].n_unique()
10
"""

from __future__ import annotations

import importlib
from typing import Any

from streamkit.datasets.orders import generate_orders, order_machine

__all__ = ["generate_orders", "load_tcp", "order_machine", "tcp_events", "tcp_machine"]

# Submodules loaded lazily (PEP 562), so ``import streamkit.datasets`` stays light.
_LAZY_MODULES = ("orders", "tcp")
_LAZY_NAMES = {"load_tcp": "tcp", "tcp_machine": "tcp", "tcp_events": "tcp"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        module = importlib.import_module(f"streamkit.datasets.{name}")
        globals()[name] = module
        return module
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f"streamkit.datasets.{_LAZY_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'streamkit.datasets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_LAZY_MODULES))
