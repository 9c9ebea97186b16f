"""The use case's extra features (schemas/feature_config.py): windows, EWMs, changes, steps, transport.

Same input as features.py: packs (..., n_steps, n_metrics) on the sample grid, NaN where a sample is
missing. Every sum is a cumulative sum along the step axis (numpy accumulates strictly in order),
never a reduction whose summation order depends on the array's shape: one pack on the gateway gets
the same bits as that pack among thousands in the cloud packer. Values are taken relative to each
metric's last value in the pack first, so the running sums stay small and lose no precision.
"""

from __future__ import annotations

import numpy as np

from edgeloop.schemas.feature_config import TRANSPORT_OUTPUTS, FeatureConfig, TransportFeature
from edgeloop.schemas.use_case import UseCaseConfig


def extra_features(packs: np.ndarray, config: UseCaseConfig) -> list[np.ndarray]:
    """float64 blocks (..., k) in `extra_feature_names` order (empty when the use case declares none)."""
    spec = config.resolved_features
    period = config.sample_period_s
    index = {metric: i for i, metric in enumerate(config.metrics)}
    blocks: list[np.ndarray] = []
    with np.errstate(invalid="ignore", divide="ignore"):
        if spec.per_metric:
            blocks.append(_per_metric(packs[..., [index[m] for m in spec.metrics or []]], spec, period))
        if spec.steps:
            since = [_since_step(packs[..., index[s.metric]], s.min_step, period) for s in spec.steps]
            blocks.append(np.stack(since, axis=-1))
        if spec.transport:
            blocks.append(_transport(packs, index, spec.transport, spec.level_s, config))
    return blocks


class _Centred:
    """A grid relative to each metric's last value, zero where missing, with its presence as float."""

    def __init__(self, grid: np.ndarray) -> None:
        present = ~np.isnan(grid)
        n_steps = grid.shape[-2]
        last_index = n_steps - 1 - np.argmax(present[..., ::-1, :], axis=-2)
        self.reference = np.take_along_axis(grid, last_index[..., None, :], axis=-2)[..., 0, :]
        self.values = np.where(present, grid - self.reference[..., None, :], 0.0)
        self.present = present.astype(np.float64)

    def prefix_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Sums of values and of presence over steps [0, e), for e = 0..n_steps (axis -2)."""
        shape = (*self.values.shape[:-2], 1, self.values.shape[-1])
        zero = np.zeros(shape)
        return (
            np.concatenate([zero, np.cumsum(self.values, axis=-2)], axis=-2),
            np.concatenate([zero, np.cumsum(self.present, axis=-2)], axis=-2),
        )


def _per_metric(grid: np.ndarray, spec: FeatureConfig, period: float) -> np.ndarray:
    """(..., n_steps, k) -> (..., k * per-metric features), metric-major."""
    centred = _Centred(grid)
    columns: list[np.ndarray] = []
    if spec.windows_s:
        columns += _windows(centred, [int(round(w / period)) for w in spec.windows_s], period)
    columns += [_ewm(centred, halflife / period) for halflife in spec.ewm_halflife_s]
    if spec.changes_s:
        sums, counts = centred.prefix_sums()
        n_steps = grid.shape[-2]
        level = int(round(spec.level_s / period))
        now = _span_mean(sums, counts, n_steps, level)
        for lag in spec.changes_s:
            columns.append(now - _span_mean(sums, counts, n_steps - int(round(lag / period)), level))
    stacked = np.stack(columns, axis=-1)  # (..., k, features per metric)
    return stacked.reshape(*stacked.shape[:-2], -1)


def _windows(centred: _Centred, lengths: list[int], period: float) -> list[np.ndarray]:
    """Mean and least-squares slope (per second) over the last `length` steps, for each length."""
    longest = max(lengths)
    values = centred.values[..., -longest:, :][..., ::-1, :]  # step 0 = the last one
    present = centred.present[..., -longest:, :][..., ::-1, :]
    x = -np.arange(longest, dtype=np.float64)[:, None] * present  # steps before the end
    n, sx, sy = (np.cumsum(a, axis=-2) for a in (present, x, values))
    sxx, sxy = np.cumsum(x * x, axis=-2), np.cumsum(x * values, axis=-2)
    columns = []
    for length in lengths:
        i = length - 1
        mean = sy[..., i, :] / n[..., i, :] + centred.reference
        covariance = n[..., i, :] * sxy[..., i, :] - sx[..., i, :] * sy[..., i, :]
        variance = n[..., i, :] * sxx[..., i, :] - sx[..., i, :] ** 2
        slope = np.where(n[..., i, :] >= 2, covariance / variance / period, np.nan)
        columns += [mean, slope]
    return columns


def _ewm(centred: _Centred, halflife_steps: float) -> np.ndarray:
    """Mean weighted by 0.5 ** (age / half-life) over the present steps of the whole pack."""
    n_steps = centred.values.shape[-2]
    weights = (0.5 ** (np.arange(n_steps - 1, -1, -1, dtype=np.float64) / halflife_steps))[:, None]
    weighted = np.cumsum(centred.values * weights, axis=-2)[..., -1, :]
    total = np.cumsum(centred.present * weights, axis=-2)[..., -1, :]
    return weighted / total + centred.reference


def _span_mean(sums: np.ndarray, counts: np.ndarray, end: np.ndarray | int, length: int) -> np.ndarray:
    """Mean over steps [end - length, end) from prefix sums (NaN where that span leaves the pack).

    end: a step index, or one per pack and metric (shape of the result)."""
    end = np.asarray(end)
    inside = (end - length >= 0) & (end <= sums.shape[-2] - 1)
    stop = np.clip(end, length, sums.shape[-2] - 1)[..., None, :] if end.ndim else None
    if stop is None:
        if not inside:
            return np.full(sums.shape[:-2] + sums.shape[-1:], np.nan)
        total = sums[..., int(end), :] - sums[..., int(end) - length, :]
        count = counts[..., int(end), :] - counts[..., int(end) - length, :]
        return total / count
    start = stop - length

    def span(prefix: np.ndarray) -> np.ndarray:
        return (np.take_along_axis(prefix, stop, axis=-2) - np.take_along_axis(prefix, start, axis=-2))[..., 0, :]

    return np.where(inside, span(sums) / span(counts), np.nan)


def _since_step(series: np.ndarray, min_step: float, period: float) -> np.ndarray:
    """Seconds from the last move of more than min_step (between present samples) to the pack end;
    the pack length when the pack shows none."""
    n_steps = series.shape[-1]
    present = ~np.isnan(series)
    steps = np.arange(n_steps)
    last_present = np.maximum.accumulate(np.where(present, steps, -1), axis=-1)  # index of the newest present
    previous_index = np.concatenate([np.full((*series.shape[:-1], 1), -1), last_present[..., :-1]], axis=-1)
    previous = np.take_along_axis(series, np.maximum(previous_index, 0), axis=-1)
    moved = present & (previous_index >= 0) & (np.abs(series - previous) > min_step)
    last_move = n_steps - 1 - np.argmax(moved[..., ::-1], axis=-1)
    return np.where(moved.any(axis=-1), (n_steps - last_move) * period, n_steps * period)


def _transport(
    packs: np.ndarray, index: dict[str, int], transports: list[TransportFeature], level_s: int, config: UseCaseConfig
) -> np.ndarray:
    """Per transport: the upstream change still on its way to the target, and the upstream mean the
    target sees at the middle of the label window (at the pack end when that moment is later)."""
    period = config.sample_period_s
    n_steps, k = packs.shape[-2], len(transports)
    level = int(round(level_s / period))
    columns = [index[t.upstream] for t in transports] + [index[t.rate_metric] for t in transports]
    centred = _Centred(packs[..., columns])
    sums, counts = centred.prefix_sums()
    rate = _span_mean(sums[..., k:], counts[..., k:], n_steps, level) + centred.reference[..., k:]
    distance_s = np.array([t.distance * t.rate_period_s for t in transports])
    delay_s = np.where(rate > 0, distance_s / np.where(rate > 0, rate, 1.0), np.inf)
    known = np.isfinite(delay_s)
    delay = np.where(known, np.rint(delay_s / np.where(known, period, 1.0)), 0.0)
    label_middle = (config.horizon_s + config.label_window_s / 2) / period + level / 2
    seen_at_label = np.minimum(np.rint(n_steps + label_middle - delay), n_steps)
    ends = np.concatenate([n_steps - delay, seen_at_label], axis=-1)  # (..., 2k)
    ends = np.where(np.concatenate([known, known], axis=-1) & (ends >= level), ends, -1).astype(np.int64)
    upstream_sums, upstream_counts = sums[..., :k], counts[..., :k]
    means = _span_mean(
        np.concatenate([upstream_sums, upstream_sums], axis=-1),
        np.concatenate([upstream_counts, upstream_counts], axis=-1),
        ends,
        level,
    )
    now = _span_mean(upstream_sums, upstream_counts, n_steps, level)
    outputs = {"transit_change": now - means[..., :k], "at_label": means[..., k:] + centred.reference[..., :k]}
    chosen = [
        outputs[name][..., i] for i, t in enumerate(transports) for name in TRANSPORT_OUTPUTS if name in t.outputs
    ]
    return np.stack(chosen, axis=-1)
