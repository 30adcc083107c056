"""Plots of a transition history (matplotlib).

Each function takes a transition history (a Polars DataFrame or LazyFrame with
columns ``key``, ``time``, ``event``, ``from_state``, ``to_state``; see
:mod:`streamkit.analytics`), draws on ``ax`` (a new figure by default) and
returns the Axes. All stay readable at any number of keys: the timeline draws a
deterministic sample of keys and says so in its title; the others aggregate.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> import polars as pl
>>> import streamkit as sk
>>> history = pl.DataFrame({
...     "key": ["a", "a"], "time": [0, 5], "event": ["pay", "ship"],
...     "from_state": ["created", "paid"], "to_state": ["paid", "shipped"],
... })
>>> sk.plot.transition_matrix(history).get_title()
'transition matrix, counts (2 transitions of 1 key)'
>>> plt.close("all")
"""

from __future__ import annotations

from streamkit.plot._charts import dwell_times, occupancy, timeline
from streamkit.plot._graphs import process_map, transition_matrix

__all__ = ["dwell_times", "occupancy", "process_map", "timeline", "transition_matrix"]
