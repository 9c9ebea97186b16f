"""The physical limit of a simulated line's predictions: an oracle that also sees the simulator's hidden state.

The oracle is the model's own learner (template and hyper-parameters), trained on the model's training
rows with the model's features plus the hidden state at each pack end (`HiddenState.features`: for the
cable line what has already been extruded and the material factor, device_shims/extrusion_hidden.py;
for the pipe line the regrind already dosed and on its way to the die, pipe_extrusion_hidden.py). Its
decision margin is tuned the model's way, on out-of-fold predictions of time-ordered folds of its
training rows (operating_point.choose_margin); it is scored on the same held-out rows. Whatever the
hidden state does not determine (material steps and operator corrections still to come, sensor noise)
is beyond any model: a model that falls short of the oracle at the same precision is improvable, one
that matches it is at the physics' limit.

    oracle = fit_oracle(train, hidden, use_case, template=model.template, params=model.hyperparameters)
    levels = oracle.predict(reference)          # level predictions (change mode added back)
    score_predictions(levels, reference, ..., margin=oracle.margin)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from edgeloop.cloud.packing.labels import predictable, training_labels
from edgeloop.model_runtime.decision import classify_levels
from edgeloop.model_runtime.label_mode import to_level
from edgeloop.sagemaker_pipelines.steps.operating_point import (
    OperatingPoint,
    choose_margin,
    precision_recall_curve,
    recall_at_precision,
)
from edgeloop.sagemaker_pipelines.steps.search import time_ordered_folds
from edgeloop.sagemaker_pipelines.steps.templates import FittedModel, template
from edgeloop.schemas.model import ModelTemplate
from edgeloop.schemas.training import ViolationClass
from edgeloop.schemas.use_case import LabelMode, UseCaseConfig

# the learner when the caller names none: an XGBoost of the search's ranges, not tuned per line
DEFAULT_TEMPLATE = ModelTemplate.XGBOOST
DEFAULT_PARAMS: Mapping[str, float | int] = {
    "n_estimators": 120,
    "max_depth": 5,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "lambda": 1.0,
}
GOAL_PRECISION = 0.6  # issue 16's goal: recall >= 0.85 at precision >= 0.6
# margins a curve is read at to find the recall at a given precision: finer than a use case's tuning grid,
# whose steps (0.05) move precision by several points at a time
READING_MARGINS: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(96))


class HiddenState(Protocol):
    """A simulator's hidden record (ExtrusionHidden, PipeHidden): features at pack ends, the true label."""

    def features(
        self, window_end_ms: np.ndarray, spec_lower: np.ndarray, spec_upper: np.ndarray, horizon_s: int, label_s: int
    ) -> pd.DataFrame: ...

    def true_label(self, window_end_ms: np.ndarray, horizon_s: int, label_s: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Oracle:
    fitted: FittedModel
    hidden: HiddenState
    config: UseCaseConfig
    feature_names: list[str]  # the use case's features, then the hidden ones
    operating_point: OperatingPoint  # chosen on out-of-fold predictions of the training rows

    @property
    def margin(self) -> float:
        return self.operating_point.margin

    def predict(self, examples: pd.DataFrame) -> np.ndarray:
        """Level predictions for `examples` (rows with the use case's features, window_end, spec limits)."""
        X = oracle_matrix(examples, self.hidden, self.config)
        mode = LabelMode(self.config.label.mode)
        return to_level(self.fitted.predict(X), X, mode, _current_column(self.config))

    def curve(self, examples: pd.DataFrame, margins: Sequence[float] = READING_MARGINS) -> list[OperatingPoint]:
        """Precision and recall of violations per decision margin on `examples` (e.g. the held-out rows)."""
        return precision_recall_curve(self.predict(examples), examples, tuple(margins))

    def recall_at_precision(self, examples: pd.DataFrame, precision: float) -> float | None:
        """The best recall on `examples` at a precision of at least `precision` (None: never reached)."""
        return recall_at_precision(self.curve(examples), precision)


def fit_oracle(
    train: pd.DataFrame,
    hidden: HiddenState,
    config: UseCaseConfig,
    *,
    template_tag: ModelTemplate | str = DEFAULT_TEMPLATE,
    params: Mapping[str, float | int] | None = None,
    seed: int | None = None,
    nthread: int = 1,
) -> Oracle:
    """The oracle trained on `train` (a line's training rows as train.py's time_split gives them: level
    labels, the use case's features, window_end, spec limits, run_id), margin tuned on their folds."""
    params = dict(DEFAULT_PARAMS if params is None else params)
    seed = config.training.seed if seed is None else seed
    learner = template(template_tag)
    rows = predictable(train, config).sort_values(["window_end", "window_start"], kind="stable")
    rows = rows.reset_index(drop=True)
    X = oracle_matrix(rows, hidden, config)
    y = training_labels(rows, config)
    mode, current = LabelMode(config.label.mode), _current_column(config)
    gap = pd.Timedelta(seconds=config.horizon_s + config.label_window_s)
    folds = time_ordered_folds(rows, config.training.cv_folds, gap)
    validation = np.concatenate([valid for _, valid in folds])
    levels = np.concatenate(
        [
            to_level(learner.fit(X[fit], y[fit], params, seed, nthread).predict(X[valid]), X[valid], mode, current)
            for fit, valid in folds
        ]
    )
    decision = config.decision
    point = choose_margin(
        levels,
        rows.iloc[validation].reset_index(drop=True),
        decision.target_recall_violation,
        decision.margins,
        min_precision=decision.min_precision_violation,
    )
    fitted = learner.fit(X, y, params, seed, nthread)
    names = [*config.feature_names, *hidden_feature_names(rows.iloc[:1], hidden, config)]
    return Oracle(fitted=fitted, hidden=hidden, config=config, feature_names=names, operating_point=point)


def oracle_matrix(examples: pd.DataFrame, hidden: HiddenState, config: UseCaseConfig) -> np.ndarray:
    """float32 (rows, use case features + hidden features); the use case's features first, in their order,
    so the change-mode current value keeps its column."""
    observable = examples[config.feature_names].to_numpy(dtype=np.float32)
    extra = _hidden_frame(examples, hidden, config).to_numpy(dtype=np.float32)
    return np.concatenate([observable, extra], axis=1)


def hidden_feature_names(examples: pd.DataFrame, hidden: HiddenState, config: UseCaseConfig) -> list[str]:
    return list(_hidden_frame(examples, hidden, config).columns)


def _hidden_frame(examples: pd.DataFrame, hidden: HiddenState, config: UseCaseConfig) -> pd.DataFrame:
    return hidden.features(
        _epoch_ms(examples["window_end"]),
        examples["spec_lower"].to_numpy(np.float64),
        examples["spec_upper"].to_numpy(np.float64),
        config.horizon_s,
        config.label_window_s,
    )


def _current_column(config: UseCaseConfig) -> int | None:
    if LabelMode(config.label.mode) == LabelMode.LEVEL:
        return None
    return config.feature_names.index(config.current_value_feature)


def _epoch_ms(times: pd.Series) -> np.ndarray:
    return pd.to_datetime(times, utc=True).dt.as_unit("ms").astype("int64").to_numpy()


# --- the limit at other horizons ---------------------------------------------------------------------


@dataclass(frozen=True)
class HorizonLimit:
    horizon_s: int
    recall_at_goal_precision: float | None  # held-out recall at precision >= GOAL_PRECISION; None: never reached
    margin: float  # tuned on the training folds
    precision: float | None  # held-out, at that margin
    recall: float | None
    violation_share: float  # of the held-out rows, at this horizon's true labels


def limits_by_horizon(
    train: pd.DataFrame,
    test: pd.DataFrame,
    hidden: HiddenState,
    config: UseCaseConfig,
    horizons_s: Sequence[int],
    *,
    goal_precision: float = GOAL_PRECISION,
    **fit_options,
) -> list[HorizonLimit]:
    """The oracle retrained for each horizon on the same pack ends, labelled with the simulator's true
    target over [end + horizon, + label window) (no sensor noise): how far ahead the physics allows."""
    limits = []
    for horizon in horizons_s:
        at = config.model_copy(update={"horizon_s": int(horizon)})
        relabelled = [_relabel(rows, hidden, at) for rows in (train, test)]
        oracle = fit_oracle(relabelled[0], hidden, at, **fit_options)
        held_out = predictable(relabelled[1], at)
        curve = oracle.curve(held_out)
        point = next(p for p in precision_recall_curve(oracle.predict(held_out), held_out, [oracle.margin]))
        classes = held_out["label_class"].astype(str)
        limits.append(
            HorizonLimit(
                horizon_s=int(horizon),
                recall_at_goal_precision=recall_at_precision(curve, goal_precision),
                margin=oracle.margin,
                precision=point.precision,
                recall=point.recall,
                violation_share=float((classes != ViolationClass.IN_RANGE.value).mean()),
            )
        )
    return limits


def _relabel(examples: pd.DataFrame, hidden: HiddenState, config: UseCaseConfig) -> pd.DataFrame:
    label = hidden.true_label(_epoch_ms(examples["window_end"]), config.horizon_s, config.label_window_s)
    lower, upper = examples["spec_lower"].to_numpy(np.float64), examples["spec_upper"].to_numpy(np.float64)
    relabelled = examples.assign(label=label)
    relabelled = relabelled[np.isfinite(label)]
    keep = np.isfinite(label)
    return relabelled.assign(label_class=classify_levels(label[keep], lower[keep], upper[keep], 0.0))
