"""THE metric definition of a level predictor, shared by training (the evaluate step, the baselines, the
operating points) and the field (functions/live_accuracy), so a live figure means what a registered one means.

`score_predictions`: MSE, RMSE, MAE; per ViolationClass precision, recall and F1; the violations (LSL and
USL) together, where a violation counts as hit only when predicted as that same class (`violation_scores`);
and the median lead time over the violation episodes a predictor flags (`lead_time_median_s`). Predicted
classes are decided by model_runtime/decision.py at a decision margin (a model's tuned one, 0 for the
baselines), or given as decided elsewhere (a gateway's own class, decided by the same rule on the device).

`value_now`: the target's value at a pack end as the pack's `last` feature holds it, the persistence
baseline's prediction ("it stays as it is now"), for predictors scored without their packs (live accuracy).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import Field

from edgeloop.model_runtime.alignment import MAX_GAP_PERIODS
from edgeloop.model_runtime.decision import classify_levels
from edgeloop.schemas.model import ModelMetrics
from edgeloop.schemas.training import ViolationClass

VIOLATIONS = (ViolationClass.LSL.value, ViolationClass.USL.value)


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


def violation_scores(predicted: np.ndarray, actual: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """(precision, recall, F1) of violations (LSL+USL), a hit only when predicted as the same class."""
    predicted, actual = np.asarray(predicted), np.asarray(actual)
    hits = int((np.isin(actual, VIOLATIONS) & (predicted == actual)).sum())
    flagged, present = int(np.isin(predicted, VIOLATIONS).sum()), int(np.isin(actual, VIOLATIONS).sum())
    precision = hits / flagged if flagged else None
    recall = hits / present if present else None
    return precision, recall, f1_score(precision, recall)


def f1_score(precision: float | None, recall: float | None) -> float | None:
    """None when the class is absent (recall None); 0 when present but never hit (or never predicted)."""
    if recall is None:
        return None
    if not precision or not recall:
        return 0.0
    return 2 * precision * recall / (precision + recall)


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
    predicted_classes: np.ndarray | None = None,
) -> ScoredMetrics:
    """The reference metrics of any predictor (model or baseline); non-finite predictions are flagged.
    `reference`: label, label_class, spec_lower, spec_upper (and run_id, window_end for the lead time).
    `horizon_s`: the use case's, for the lead time (None: not computed). `margin`: the decision margin
    violation classes are decided at (model_runtime/decision.py; a model's tuned one, 0 for the baselines).
    `predicted_classes`: the classes as already decided by that rule (a gateway's), instead of `margin`."""
    finite = bool(np.isfinite(predictions).all())
    # metrics of non-finite predictions are meaningless (MSE would be inf/NaN): report the flag instead
    safe = np.where(np.isfinite(predictions), predictions, 0.0).astype(np.float64)
    errors = safe - reference["label"].to_numpy(dtype=np.float64)
    if predicted_classes is None:
        lower, upper = reference["spec_lower"].to_numpy(), reference["spec_upper"].to_numpy()
        predicted = classify_levels(safe, lower, upper, margin)
    else:
        predicted = np.asarray(predicted_classes).astype(str)
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


def value_now(
    pack_end_ms: np.ndarray,
    target_time_ms: np.ndarray,
    target_values: np.ndarray,
    *,
    sample_period_s: float,
    pack_window_s: float,
) -> np.ndarray:
    """The target's `last` pack feature for packs ending at `pack_end_ms` (NaN: the pack has none), from
    the target's samples sorted by time, without building the packs.

    A pack [end - pack_window_s, end) is aligned onto the grid (model_runtime/alignment.py): a step at
    time g holds the latest sample at or before g if at most MAX_GAP_PERIODS periods old, and `last` is
    its last non-NaN step. The latest sample s at or before the last step (end - period) is fresh at
    some step of the pack exactly when s >= pack start - max gap, and then `last` is s's value (any
    later step holds s or nothing). So: s's value if s >= end - pack_window - max_gap, else NaN."""
    period_ms = round(sample_period_s * 1000)
    pack_end_ms = np.asarray(pack_end_ms, dtype=np.int64)
    target_time_ms = np.asarray(target_time_ms, dtype=np.int64)
    target_values = np.asarray(target_values, dtype=np.float64)
    if not len(target_time_ms):
        return np.full(len(pack_end_ms), np.nan)
    latest = np.searchsorted(target_time_ms, pack_end_ms - period_ms, side="right") - 1
    index = np.maximum(latest, 0)
    earliest = pack_end_ms - round(pack_window_s * 1000) - MAX_GAP_PERIODS * period_ms
    fresh = (latest >= 0) & (target_time_ms[index] >= earliest)
    return np.where(fresh, target_values[index], np.nan)
