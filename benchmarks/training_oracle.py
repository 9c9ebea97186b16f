"""bench-training's oracle figures: the model beside the best score the simulator's physics allows.

The oracle (edgeloop/oracle.py) is the model's chosen learner (template and refit hyper-parameters)
trained on the model's training rows with the simulator's hidden state at each pack end added to the
features, its decision margin tuned on its training folds like the model's; both are scored on the
same held-out rows. Figures (prefix `quality.` / `quality2.`):

- `recall_violation_oracle` / `precision_violation_oracle`: the oracle's held-out precision/recall
  curve (read at margins 0, 0.01, ... 0.95) at the model's precision: the best recall with precision >= the
  model's, and that point's precision. `recall_ratio_vs_oracle` = the model's recall over it.
- `recall_violation_oracle_at_goal_precision` / `recall_violation_at_goal_precision`: oracle and model,
  best held-out recall at precision >= 0.6 (issue 16's goal); NaN where no margin reaches 0.6.
- `*_oracle_tuned`: the oracle at its own tuned margin, every figure the model has.
- `recall_goal_met` (issue 16's acceptance): the model at its tuned margin has precision >= 0.6 and
  recall >= 0.85, or, where the oracle's recall at precision 0.6 is below 0.85 (the goal is beyond the
  physics), recall >= 0.9 x the oracle's at the model's precision (whatever that precision is: see
  `recall_ratio_vs_oracle_at_goal_precision` for the comparison at 0.6).
- `recall_ratio_vs_oracle_at_goal_precision`: model over oracle, both at precision >= 0.6 on their
  held-out curves: how close the model's ranking comes to the physics, whatever margin it was given.
- `recall_violation_oracle_at_goal_precision_h<H>s`: the oracle retrained per horizon H on the same
  pack ends, labelled with the simulator's true target H seconds ahead: how far ahead the physics allows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from edgeloop.oracle import GOAL_PRECISION, READING_MARGINS, HiddenState, fit_oracle, limits_by_horizon
from edgeloop.sagemaker_pipelines.steps.baselines import ScoredMetrics, score_predictions
from edgeloop.sagemaker_pipelines.steps.operating_point import precision_recall_curve, recall_at_precision
from edgeloop.schemas.use_case import UseCaseConfig

GOAL_RECALL = 0.85
ORACLE_SHARE_GOAL = 0.9  # of the oracle's recall at the model's precision, where the goal is beyond the physics
HORIZONS_S = (60, 120, 180, 240, 300)

Results = dict[str, tuple[float, str]]
Scored = Callable[[ScoredMetrics, str, str, str], Results]  # bench_training._scored


def _figure(value: float | None) -> float:
    return math.nan if value is None else float(value)


def oracle_figures(
    model: ScoredMetrics,
    model_levels: np.ndarray,
    train: pd.DataFrame,
    test: pd.DataFrame,
    hidden: HiddenState,
    config: UseCaseConfig,
    *,
    learner: tuple[str, Mapping[str, float | int]],
    prefix: str,
    unit: str,
    scored: Scored,
    nthread: int,
    horizons_s: Sequence[int] = HORIZONS_S,
) -> Results:
    """The oracle's figures beside `model` (scored at its tuned margin on `test`, levels `model_levels`)."""
    start = time.perf_counter()
    template_tag, params = learner
    oracle = fit_oracle(train, hidden, config, template_tag=template_tag, params=params, nthread=nthread)
    levels = oracle.predict(test)
    tuned = score_predictions(levels, test, n_train=len(train), horizon_s=config.horizon_s, margin=oracle.margin)
    oracle_curve = precision_recall_curve(levels, test, READING_MARGINS)
    model_curve = precision_recall_curve(model_levels, test, READING_MARGINS)
    same = _at_precision(oracle_curve, model.violation_precision)
    results: Results = scored(tuned, prefix, "_oracle_tuned", unit)
    results[f"{prefix}decision_margin_oracle"] = (oracle.margin, "fraction of half band")
    results[f"{prefix}recall_violation_oracle"] = (_figure(same[1]), "ratio")
    results[f"{prefix}precision_violation_oracle"] = (_figure(same[0]), "ratio")
    oracle_goal = recall_at_precision(oracle_curve, GOAL_PRECISION)
    results[f"{prefix}recall_violation_oracle_at_goal_precision"] = (_figure(oracle_goal), "ratio")
    results[f"{prefix}recall_violation_at_goal_precision"] = (
        _figure(recall_at_precision(model_curve, GOAL_PRECISION)),
        "ratio",
    )
    recall = model.violation_recall
    ratio = recall / same[1] if recall is not None and same[1] else None
    results[f"{prefix}recall_ratio_vs_oracle"] = (_figure(ratio), "ratio")
    model_goal = results[f"{prefix}recall_violation_at_goal_precision"][0]
    results[f"{prefix}recall_ratio_vs_oracle_at_goal_precision"] = (
        model_goal / oracle_goal if oracle_goal else math.nan,
        "ratio",
    )
    results[f"{prefix}recall_goal_met"] = (float(_goal_met(model, oracle_goal, ratio)), "bool")
    for limit in limits_by_horizon(
        train, test, hidden, config, horizons_s, template_tag=template_tag, params=params, nthread=nthread
    ):
        name = f"{prefix}recall_violation_oracle_at_goal_precision_h{limit.horizon_s}s"
        results[name] = (_figure(limit.recall_at_goal_precision), "ratio")
    results[f"{prefix}oracle_s"] = (time.perf_counter() - start, "s")
    _print(results, prefix, horizons_s)
    return results


def _at_precision(curve, precision: float | None) -> tuple[float | None, float | None]:
    """(precision, recall) of the curve's point with the best recall among those at >= `precision`."""
    if precision is None:
        return None, None
    points = [p for p in curve if p.precision is not None and p.precision >= precision and p.recall is not None]
    if not points:
        return None, None
    best = max(points, key=lambda p: (p.recall, p.precision))
    return best.precision, best.recall


def _goal_met(model: ScoredMetrics, oracle_goal: float | None, ratio: float | None) -> bool:
    precision, recall = model.violation_precision, model.violation_recall
    if precision is not None and recall is not None and precision >= GOAL_PRECISION and recall >= GOAL_RECALL:
        return True
    beyond_physics = oracle_goal is None or oracle_goal < GOAL_RECALL
    return beyond_physics and ratio is not None and ratio >= ORACLE_SHARE_GOAL


def _print(results: Results, prefix: str, horizons_s: Sequence[int]) -> None:
    def value(name: str) -> float:
        return results[f"{prefix}{name}"][0]

    by_horizon = ", ".join(f"{h} s {value(f'recall_violation_oracle_at_goal_precision_h{h}s'):.2f}" for h in horizons_s)
    print(
        f"   oracle ({prefix.rstrip('.')}): at its margin {value('decision_margin_oracle'):.2f} precision"
        f" {value('precision_violation_oracle_tuned'):.1%} / recall {value('recall_violation_oracle_tuned'):.1%};"
        f" at the model's precision recall {value('recall_violation_oracle'):.1%} (model/oracle"
        f" {value('recall_ratio_vs_oracle'):.2f}); at precision >= {GOAL_PRECISION:.0%} recall"
        f" {value('recall_violation_oracle_at_goal_precision'):.1%} (model"
        f" {value('recall_violation_at_goal_precision'):.1%}); by horizon: {by_horizon}"
    )
