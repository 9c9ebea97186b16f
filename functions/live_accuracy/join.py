"""One window of one line: landed predictions joined with what was measured, scored per model version.

Truth per prediction is the labeler's label (cloud/packing/labels.py label_packs) of a pack ending at the
prediction's made_at: the mean of the target's samples in [made_at + horizon, + label_window), dropped when
that window reaches past the end of the run (the run interval of the line's context holding made_at; the
end of the measured data when none does) or holds too few samples. The measured class is that label
against the prediction's own spec limits at margin 0; the predicted class is the one the gateway decided
(model_runtime/decision.py at its model's margin); a prediction without limits is in range on both sides.
Persistence predicts the value now (cloud/scoring.py value_now: the pack's `last` feature, as the
persistence baseline takes it), else the setpoint (the middle of the spec limits), as in training. Model
and persistence are scored on the same rows by the training metric (cloud/scoring.py score_predictions).
A lead time counts only the violation episodes that start within the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from edgeloop.cloud.packing.labels import label_packs
from edgeloop.cloud.scoring import ScoredMetrics, score_predictions, value_now
from edgeloop.model_runtime.decision import classify_levels
from edgeloop.schemas.monitoring import LiveAccuracyWindow, LiveFigures, MonitoringConfig
from edgeloop.schemas.use_case import UseCaseConfig


@dataclass(frozen=True)
class Measured:
    """The target's samples around a window, sorted by time, and where the runs end."""

    time_ms: np.ndarray
    values: np.ndarray
    run_starts_ms: np.ndarray  # the line's run intervals, sorted by start
    run_ends_ms: np.ndarray

    def run_end_ms(self, made_at_ms: np.ndarray) -> np.ndarray:
        """The end of the run holding each made_at, else the end of the measured data (exclusive)."""
        data_end = np.full(len(made_at_ms), int(self.time_ms[-1]) + 1 if len(self.time_ms) else 0, dtype=np.int64)
        if not len(self.run_starts_ms):
            return data_end
        row = np.searchsorted(self.run_starts_ms, made_at_ms, side="right") - 1
        end = self.run_ends_ms[np.maximum(row, 0)]
        return np.where((row >= 0) & (made_at_ms < end), end, data_end).astype(np.int64)


def labels_of(made_at_ms: np.ndarray, measured: Measured, use_case: UseCaseConfig) -> np.ndarray:
    """The labeler's label per prediction (NaN: none), one label_packs call per distinct run end."""
    labels = np.full(len(made_at_ms), np.nan)
    run_end = measured.run_end_ms(made_at_ms)
    for end in np.unique(run_end):
        rows = run_end == end
        result = label_packs(
            made_at_ms[rows], measured.time_ms, measured.values, run_end_ms=int(end), use_case=use_case
        )
        labels[rows] = result.value
    return labels


def persistence_of(predictions: pd.DataFrame, measured: Measured, use_case: UseCaseConfig) -> np.ndarray:
    now = value_now(
        predictions["made_at_ms"].to_numpy(),
        measured.time_ms,
        measured.values,
        sample_period_s=use_case.sample_period_s,
        pack_window_s=use_case.pack_window_s,
    )
    lower, upper = predictions["spec_lower"].to_numpy(), predictions["spec_upper"].to_numpy()
    with np.errstate(invalid="ignore"):
        setpoint = (lower + upper) / 2  # NaN or inf without two finite limits: no setpoint either
    return np.where(np.isnan(now), np.where(np.isfinite(setpoint), setpoint, np.nan), now)


def _figures(metrics: ScoredMetrics) -> LiveFigures:
    return LiveFigures(
        rmse=metrics.rmse if metrics.rmse is not None else math.sqrt(metrics.mse),
        mae=metrics.mae,
        violation_precision=metrics.violation_precision,
        violation_recall=metrics.violation_recall,
        lead_time_median_s=metrics.lead_time_median_s,
    )


def _ratio(numerator: float, denominator: float | None) -> float | None:
    return numerator / denominator if denominator else None  # a perfect reference has no finite ratio


def judge(window: LiveAccuracyWindow, config: MonitoringConfig) -> LiveAccuracyWindow:
    """Whether the window counts for the streak and is degraded, with the figures that decided."""
    judged = window.joined >= config.min_predictions_per_window
    reasons = []
    if judged and window.model is not None:
        vs_p, vs_r = window.rmse_ratio_vs_persistence, window.rmse_ratio_vs_registration
        if vs_p is not None and vs_p > config.max_rmse_ratio_vs_persistence:
            reasons.append(
                f"live RMSE {window.model.rmse:.6g} / persistence RMSE {window.persistence.rmse:.6g} = {vs_p:.4g} "
                f"> max_rmse_ratio_vs_persistence {config.max_rmse_ratio_vs_persistence:g}"
            )
        if vs_r is not None and vs_r > config.max_rmse_ratio_vs_registration:
            reasons.append(
                f"live RMSE {window.model.rmse:.6g} / registered RMSE {window.registered_rmse:.6g} = {vs_r:.4g} "
                f"> max_rmse_ratio_vs_registration {config.max_rmse_ratio_vs_registration:g}"
            )
    return window.model_copy(update={"judged": judged, "degraded": bool(reasons), "reasons": reasons})


def score_version(
    rows: pd.DataFrame, measured: Measured, use_case: UseCaseConfig, *, registered_rmse: float | None, **identity
) -> LiveAccuracyWindow:
    """One model version's window (`identity`: line_id, model_id, version, window_start, window_end)."""
    made_at = rows["made_at_ms"].to_numpy(dtype=np.int64)
    label = labels_of(made_at, measured, use_case)
    persistence = persistence_of(rows, measured, use_case)
    keep = np.isfinite(label) & np.isfinite(persistence)
    base = LiveAccuracyWindow(predictions=len(rows), joined=int(keep.sum()), judged=False, **identity)
    if not keep.any():
        return judge(base.model_copy(update={"registered_rmse": registered_rmse}), use_case.monitoring)
    lower, upper = rows["spec_lower"].to_numpy()[keep], rows["spec_upper"].to_numpy()[keep]
    reference = pd.DataFrame(
        {
            "label": label[keep],
            "label_class": classify_levels(label[keep], lower, upper, 0.0),
            "spec_lower": lower,
            "spec_upper": upper,
            "run_id": rows["run_id"].to_numpy()[keep],
            "window_end": pd.to_datetime(made_at[keep], unit="ms"),
        }
    )
    horizon = use_case.horizon_s
    model = score_predictions(
        rows["predicted_level"].to_numpy(dtype=np.float64)[keep],
        reference,
        n_train=0,
        horizon_s=horizon,
        predicted_classes=rows["predicted_class"].to_numpy()[keep],
    )
    baseline = score_predictions(persistence[keep], reference, n_train=0, horizon_s=horizon, margin=0.0)
    figures, persistence_figures = _figures(model), _figures(baseline)
    window = base.model_copy(
        update={
            "model": figures,
            "persistence": persistence_figures,
            "registered_rmse": registered_rmse,
            "rmse_ratio_vs_persistence": _ratio(figures.rmse, persistence_figures.rmse),
            "rmse_ratio_vs_registration": _ratio(figures.rmse, registered_rmse),
        }
    )
    return judge(window, use_case.monitoring)
