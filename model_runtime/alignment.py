"""Align samples that arrive at their own times and rates onto the use case's sample grid.

Grid step k covers time start + k * period. Its value per metric is the latest sample at or
before that time (forward fill), if that sample is at most `max_gap` old; otherwise NaN.
The gateway aligns its live window this way and the cloud aligns curated data the same way.
"""

from __future__ import annotations

import numpy as np

# How many sample periods a value is carried forward before the metric counts as missing: the same
# for training packs and the gateway's live window, so a model never sees gaps treated two ways.
MAX_GAP_PERIODS = 5


def align_to_grid(
    time_ms: np.ndarray,
    metric_index: np.ndarray,
    values: np.ndarray,
    *,
    n_metrics: int,
    start_ms: int,
    n_steps: int,
    period_ms: int,
    max_gap_ms: int,
) -> np.ndarray:
    """Return float64 (n_steps, n_metrics); NaN where a metric had no fresh sample."""
    time_ms = np.asarray(time_ms, dtype=np.int64)
    metric_index = np.asarray(metric_index, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    grid_times = start_ms + period_ms * np.arange(n_steps, dtype=np.int64)
    grid = np.full((n_steps, n_metrics), np.nan)
    for metric in range(n_metrics):
        selected = metric_index == metric
        if not selected.any():
            continue
        order = np.argsort(time_ms[selected], kind="stable")
        times, vals = time_ms[selected][order], values[selected][order]
        # index of the last sample at or before each grid time (-1: none yet)
        latest = np.searchsorted(times, grid_times, side="right") - 1
        has_sample = latest >= 0
        fresh = has_sample & (grid_times - times[np.maximum(latest, 0)] <= max_gap_ms)
        grid[fresh, metric] = vals[latest[fresh]]
    return grid
