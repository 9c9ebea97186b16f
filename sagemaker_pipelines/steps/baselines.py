"""The trivial predictors a model must beat, one definition of the reference metrics, and the gate.

Baselines, predicted for every reference example from what the example itself carries:
- persistence: the target's value at the pack end, i.e. "it stays as it is now": the pack feature
  `<target>__last` (feature_stats `last`, UseCaseConfig.current_value_feature); where that is missing (a stat not configured, or NaN for a
  pack without a target sample) the pack's `<target>__mean`, and where that is missing too the setpoint;
- setpoint: the midpoint of the spec limits in force at the label's time, (spec_lower + spec_upper) / 2:
  the run's setpoint for setpoint +- band limits (the "run mean" a recipe aims at).

`score_predictions` is THE metric definition, applied alike to the model and the baselines: MSE, RMSE,
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

from edgeloop.model_runtime.decision import classify_levels
from edgeloop.schemas.common import Contract
from edgeloop.schemas.model import ModelMetrics
from edgeloop.schemas.training import ViolationClass
from edgeloop.schemas.use_case import UseCaseConfig

from .operating_point import VIOLATIONS, f1_score, violation_scores

PERSISTENCE = "persistence"
SETPOINT = "setpoint"


class ScoredMetrics(ModelMetrics):
    """ModelMetrics on the reference data, plus RMSE, per-class F1 and violations (LSL+USL) together."""

    rmse: float | None = Field(default=None, ge=0, description="sqrt(mse); None in reports written before it")
    f1: dict[str, float] = Field(default_factory=dict, description="per ViolationClass; absent: class absent")
    violation_precision: float | None = Field(default=None, description="None: no violation was predicted")
    violation_recall: float | None = Field(default=None, description="None: the reference data has no violation")
    violation_f1: float | None = Field(default=None, description="None: the reference data has no violation")
    lead_time_median_s: float | None = Field(
        default=None,
        description="median over the violation episodes it flagged of (episode start - the time the first hit "
        "was issued): the horizon when flagged by the episode's first pack, 0 when only once it has begun; None: "
        "none flagged or not computed",
    )
    finite: bool = True


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


# --- the metrics ---------------------------------------------------------------------------------


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def lead_time_median_s(predicted: np.ndarray, reference: pd.DataFrame, horizon_s: float) -> float | None:
    """Episodes: runs of consecutive reference rows (one production run, time order) with the same violation
    class, after a row of another class of the same run; one starts at its first row's label time
    (window_end + horizon). A hit issued at window_end t flags it `start - t` seconds ahead; the median over
    flagged episodes of their earliest hit."""
    order = reference.assign(_predicted=predicted).sort_values(["run_id", "window_end"], kind="stable")
    actual = order["label_class"].astype(str).to_numpy()
    run = order["run_id"].astype(str).to_numpy()
    issued = order["window_end"].to_numpy(dtype="datetime64[ns]")
    hits = order["_predicted"].to_numpy() == actual
    leads, start, flagged = [], None, None
    for i in range(len(order) + 1):
        same = i < len(order) and start is not None and run[i] == run[start] and actual[i] == actual[start]
        if not same:
            if flagged is not None:
                leads.append(horizon_s - (issued[flagged] - issued[start]) / np.timedelta64(1, "s"))
            # an episode under way at a run's first reference row has no observed start: left out
            observed = i < len(order) and i > 0 and run[i - 1] == run[i]
            start = i if observed and actual[i] in VIOLATIONS else None
            flagged = None
        if start is not None and flagged is None and hits[i]:
            flagged = i
    return float(np.median(leads)) if leads else None


def score_predictions(
    predictions: np.ndarray,
    reference: pd.DataFrame,
    *,
    n_train: int,
    horizon_s: float | None = None,
    margin: float = 0.0,
) -> ScoredMetrics:
    """The reference metrics of any predictor (model or baseline); non-finite predictions are flagged.
    `horizon_s`: the use case's, for the lead time (None: not computed). `margin`: the decision margin
    violation classes are decided at (model_runtime/decision.py; a model's tuned one, 0 for the baselines)."""
    finite = bool(np.isfinite(predictions).all())
    # metrics of non-finite predictions are meaningless (MSE would be inf/NaN): report the flag instead
    safe = np.where(np.isfinite(predictions), predictions, 0.0).astype(np.float64)
    errors = safe - reference["label"].to_numpy(dtype=np.float64)
    predicted = classify_levels(safe, reference["spec_lower"].to_numpy(), reference["spec_upper"].to_numpy(), margin)
    actual = reference["label_class"].astype(str).to_numpy()
    precision, recall, f1 = {}, {}, {}
    for cls in ViolationClass:
        hits = int(((predicted == cls.value) & (actual == cls.value)).sum())
        p, r = _ratio(hits, int((predicted == cls.value).sum())), _ratio(hits, int((actual == cls.value).sum()))
        # undefined ratios (class never predicted / never present) are left out rather than guessed
        if p is not None:
            precision[cls.value] = p
        if r is not None:
            recall[cls.value] = r
            f1[cls.value] = f1_score(p, r)
    v_precision, v_recall, v_f1 = violation_scores(predicted, actual)
    mse = float(np.mean(errors**2))
    return ScoredMetrics(
        mse=mse,
        rmse=math.sqrt(mse),
        mae=float(np.mean(np.abs(errors))),
        precision=precision,
        recall=recall,
        f1=f1,
        n_train=n_train,
        n_test=len(reference),
        violation_precision=v_precision,
        violation_recall=v_recall,
        violation_f1=v_f1,
        lead_time_median_s=None if horizon_s is None else lead_time_median_s(predicted, reference, horizon_s),
        finite=finite,
    )


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
