"""The trivial predictors a model must beat, one definition of the reference metrics, and the gate.

Baselines, predicted for every reference example from what the example itself carries:
- persistence: the target's value at the pack end, i.e. "it stays as it is now": the pack feature
  `<target>__last` (feature_stats `last`, UseCaseConfig.current_value_feature); where that is missing (a stat not configured, or NaN for a
  pack without a target sample) the pack's `<target>__mean`, and where that is missing too the setpoint;
- setpoint: the midpoint of the spec limits in force at the label's time, (spec_lower + spec_upper) / 2:
  the run's setpoint for setpoint +- band limits (the "run mean" a recipe aims at).

`score_predictions` (cloud/scoring.py) is THE metric definition, applied alike to the model and the baselines: MSE, RMSE,
MAE; per ViolationClass precision, recall and F1; the violations (LSL and USL) together, where a
violation counts as hit only when predicted as that same class; and the median lead time over the
violation episodes a predictor flags (`lead_time_median_s`). Classes are decided by
model_runtime/decision.py at a decision margin: a model's tuned one, 0 (the spec limits) for the baselines;
the violation figures are operating_point.violation_scores.

The gate (`persistence_gate`): a candidate passes when its reference RMSE is at least
validation.min_rmse_gain_vs_persistence better than persistence's (RMSE <= (1 - gain) x persistence
RMSE) and its violation F1 (at its decision margin) is not below persistence's (at the limits). A use case relaxes either part explicitly
(min_rmse_gain_vs_persistence: null, violation_f1_vs_persistence: false); the report lists what was relaxed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import Field

# The metric definition lives in cloud/ so live accuracy (functions/live_accuracy) scores with it too;
# imported here under the names the steps, the demo and the benchmarks use.
from edgeloop.cloud.scoring import ScoredMetrics, lead_time_median_s, score_predictions
from edgeloop.schemas.common import Contract
from edgeloop.schemas.use_case import UseCaseConfig

__all__ = ["PERSISTENCE", "SETPOINT", "GateResult", "ScoredMetrics", "lead_time_median_s", "score_predictions"]

PERSISTENCE = "persistence"
SETPOINT = "setpoint"


class GateResult(Contract):
    """The candidate against persistence on the reference data: what decided, with both figures."""

    passed: bool
    reason: str
    rmse: float
    persistence_rmse: float
    violation_f1: float | None = None
    persistence_violation_f1: float | None = None
    min_rmse_gain_vs_persistence: float | None = Field(description="None: relaxed by the use case")
    violation_f1_vs_persistence: bool = Field(description="False: relaxed by the use case")
    relaxed: list[str] = Field(default_factory=list, description="the gate's parts the use case turned off")


# --- the baselines -------------------------------------------------------------------------------


def setpoint_predictions(reference: pd.DataFrame) -> np.ndarray:
    return (reference["spec_lower"].to_numpy(dtype=np.float64) + reference["spec_upper"].to_numpy(dtype=np.float64)) / 2


def persistence_predictions(reference: pd.DataFrame, config: UseCaseConfig) -> np.ndarray:
    """The target's value at each pack's end: `<target>__last`, else `<target>__mean`, else the setpoint."""
    values = np.full(len(reference), np.nan)
    # the current value as change-mode labels define it (UseCaseConfig.current_value_feature), then the pack mean
    for column in (config.current_value_feature, f"{config.target_metric}__mean"):
        if column in reference.columns:
            values = np.where(np.isnan(values), reference[column].to_numpy(dtype=np.float64), values)
    return np.where(np.isnan(values), setpoint_predictions(reference), values)


def score_baselines(reference: pd.DataFrame, config: UseCaseConfig) -> dict[str, ScoredMetrics]:
    """Each baseline's reference metrics (n_train 0: nothing is learned)."""
    return {
        name: score_predictions(values, reference, n_train=0, horizon_s=config.horizon_s)
        for name, values in (
            (PERSISTENCE, persistence_predictions(reference, config)),
            (SETPOINT, setpoint_predictions(reference)),
        )
    }


# --- the gate ------------------------------------------------------------------------------------


def persistence_gate(candidate: ScoredMetrics, persistence: ScoredMetrics, config: UseCaseConfig) -> GateResult:
    """Whether the candidate beats persistence by the use case's margin; the reason names both figures."""
    gain = config.validation.min_rmse_gain_vs_persistence
    check_f1 = config.validation.violation_f1_vs_persistence
    rmse, base_rmse = _rmse(candidate), _rmse(persistence)
    f1, base_f1 = candidate.violation_f1, persistence.violation_f1
    relaxed = [
        name
        for name, off in (("min_rmse_gain_vs_persistence", gain is None), ("violation_f1_vs_persistence", not check_f1))
        if off
    ]
    failures, notes = [], []
    if gain is not None:
        bound = (1 - gain) * base_rmse
        text = (
            f"candidate RMSE {rmse:.6g} {'>' if rmse > bound else '<='} persistence RMSE {base_rmse:.6g} "
            f"x (1 - {gain:g}) = {bound:.6g}"
        )
        (failures if rmse > bound else notes).append(text)
    else:
        notes.append(f"candidate RMSE {rmse:.6g} vs persistence RMSE {base_rmse:.6g} (RMSE gain not required)")
    if f1 is not None and base_f1 is not None:
        below = f1 < base_f1
        text = f"candidate violation F1 {f1:.4f} {'<' if below else '>='} persistence violation F1 {base_f1:.4f}"
        (failures if below and check_f1 else notes).append(text + ("" if check_f1 else " (not required)"))
    if relaxed:
        notes.append(f"relaxed by the use case: {', '.join(relaxed)}")
    return GateResult(
        passed=not failures,
        reason="; ".join(failures or notes),
        rmse=rmse,
        persistence_rmse=base_rmse,
        violation_f1=f1,
        persistence_violation_f1=base_f1,
        min_rmse_gain_vs_persistence=gain,
        violation_f1_vs_persistence=check_f1,
        relaxed=relaxed,
    )


def _rmse(metrics: ScoredMetrics) -> float:
    return metrics.rmse if metrics.rmse is not None else math.sqrt(metrics.mse)
