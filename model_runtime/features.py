"""Features of one metric pack, computed the same way in the cloud and on the gateway.

Input is a pack already aligned onto the use case's sample grid: a float array of shape
(n_steps, n_metrics) in the use case's metric order, NaN where no sample was available.
The pipeline (batch) and the gateway's scorer (live) both call these functions, so a model
sees identical features in training and in production.
"""

from __future__ import annotations

import warnings

import numpy as np

from edgeloop.schemas.use_case import UseCaseConfig

from .extra_features import extra_features


def _slope(grid: np.ndarray) -> np.ndarray:
    """Least-squares slope per metric and per step index, ignoring NaNs."""
    steps = np.arange(grid.shape[-2], dtype=np.float64)[:, None]
    present = ~np.isnan(grid)
    count = present.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_mean = np.where(present, steps, 0.0).sum(axis=-2) / count
        y_mean = np.nanmean(grid, axis=-2)
        dx = np.where(present, steps - x_mean[..., None, :], 0.0)
        dy = np.where(present, grid - y_mean[..., None, :], 0.0)
        return (dx * dy).sum(axis=-2) / (dx * dx).sum(axis=-2)


def _last(grid: np.ndarray) -> np.ndarray:
    """Last non-NaN value per metric (NaN when the metric is absent from the pack)."""
    present = ~np.isnan(grid)
    n_steps = grid.shape[-2]
    last_index = n_steps - 1 - np.argmax(present[..., ::-1, :], axis=-2)
    values = np.take_along_axis(grid, last_index[..., None, :], axis=-2)[..., 0, :]
    return np.where(present.any(axis=-2), values, np.nan)


_STATS = {
    "mean": lambda g: np.nanmean(g, axis=-2),
    "std": lambda g: np.nanstd(g, axis=-2),
    "min": lambda g: np.nanmin(g, axis=-2),
    "max": lambda g: np.nanmax(g, axis=-2),
    "last": _last,
    "slope": _slope,
}


def pack_features(packs: np.ndarray, config: UseCaseConfig) -> np.ndarray:
    """Features of one pack (n_steps, n_metrics) or many (n_packs, n_steps, n_metrics).

    Returns float32 (n_features,) or (n_packs, n_features) in `config.feature_names` order
    (metric-major, then stat; then the use case's extra features, extra_features.py). A metric
    absent from a whole pack yields NaN features, which the tree models route along their learned
    missing-value branch.
    """
    packs = np.asarray(packs, dtype=np.float64)
    if packs.ndim not in (2, 3) or packs.shape[-1] != len(config.metrics):
        raise ValueError(
            f"packs has shape {packs.shape}; expected (n_steps, {len(config.metrics)}) "
            f"or (n_packs, n_steps, {len(config.metrics)})"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN packs are expected, see above
        stats = [_STATS[name](packs) for name in config.feature_stats]
    # (..., n_stats, n_metrics) -> (..., n_metrics, n_stats) -> metric-major flat order
    stacked = np.stack(stats, axis=-2).swapaxes(-1, -2)
    columns = [stacked.reshape(*packs.shape[:-2], -1).astype(np.float32)]
    columns += [part.astype(np.float32) for part in extra_features(packs, config)]
    return np.concatenate(columns, axis=-1) if len(columns) > 1 else columns[0]


def steps_per_pack(config: UseCaseConfig) -> int:
    return int(round(config.pack_window_s / config.sample_period_s))
