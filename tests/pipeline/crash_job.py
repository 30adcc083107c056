"""A pipeline definition for the crash and CLI tests (``streamkit run crash_job.py``).

The store comes from the environment: STREAMKIT_TEST_URL and, for S3,
STREAMKIT_TEST_OPTIONS (JSON storage options).
"""

from __future__ import annotations

import json
import os

import polars as pl

import streamkit as sk
from streamkit.datasets import order_machine

store = sk.Store(
    os.environ.get("STREAMKIT_TEST_URL", "memory://streamkit-crash-job"),
    storage_options=json.loads(os.environ.get("STREAMKIT_TEST_OPTIONS", "null")),
)
pipeline = (
    sk.Pipeline("crashy", store, batch_rows=int(os.environ.get("STREAMKIT_TEST_BATCH", "40")))
    .read(store.log("orders", key="order_id", time="ts"))
    .filter(pl.col("amount") >= 0)
    .with_columns(event=pl.col("type").str.to_lowercase())
    .transitions(order_machine(), event="event")
    .write(store.log("history", key="key", time="time"))
)
