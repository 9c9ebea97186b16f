"""Model templates: what the randomized search can train, with default hyper-parameter ranges.

One `Template` per ModelTemplate tag, listed from simplest to costliest (the selection rule prefers
a lower `cost_rank` when errors are close). Every template trains an XGBoost booster, so a model is
one UBJ file to save and export.py turns it into a weight-only payload:

- lasso: L1 linear regression on features standardized with the training mean/std (float32, the
  device's own arithmetic); a missing feature is imputed to its mean, i.e. 0 after standardizing,
  which is exactly "contributes nothing" in gblinear and in the device scorer. Minimizes
  (1/2n)|y - b - Xw|^2 + alpha |w|_1 exactly on the fold's Gram matrix (computed once per fold) with an
  active-set method, coordinate descent where that fails, and is stored as a gblinear booster.
  Why active set: pack features of one metric (mean, last, min, max) are nearly collinear (Gram
  condition number ~1e9 on the extrusion line); change-mode labels (future - last) need large
  cancelling weights on them, where coordinate descent crawls (it hit its 2000-sweep cap unconverged:
  lasso fits/s fell 52 -> 7.6 in bench-training) while the active set solves a candidate in ~2 ms.
- random_forest: XGBoost's random-forest mode (one round of `num_parallel_tree` bagged trees, eta=1).
- xgboost: gradient-boosted trees (hist), early-stopped on the fold's validation block during search.

The search builds each fold's matrices once (`prepare`) and fits many candidates on them
(`fit_prepared`); `fit` trains the final model on all training rows.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb

from edgeloop.schemas.model import ModelTemplate
from edgeloop.schemas.use_case import ParameterRange, TrainingConfig

MAX_BIN = 64  # histogram bins: coarse bins cost little accuracy and make every round cheaper
MAX_TREE_DEPTH = 8  # devices score these trees in numpy; deeper trees cost them more than they gain
EARLY_STOPPING_ROUNDS = 5
# a round "improves" only when validation RMSE drops by this share of std(y): the long tail of tiny
# gains costs most of the rounds and changes no selection (tolerances are percent of the spec width)
EARLY_STOPPING_MIN_DELTA_PER_STD = 1e-3
LASSO_MAX_SWEEPS = 2000
LASSO_TOLERANCE = 1e-7  # stop when no weight moves more than this in a sweep
LASSO_ACTIVE_SET_STEPS = 1000  # active-set changes before falling back to coordinate descent

Params = dict[str, float | int]


@dataclass(frozen=True)
class Standardization:
    """x -> (x - center) / scale in float32, as the device computes it; NaN stays NaN (= the mean)."""

    center: np.ndarray  # float32 (n_features,)
    scale: np.ndarray  # float32 (n_features,), all > 0

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardization:
        X = np.asarray(X, dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice" on all-NaN columns
            center = np.nanmean(X, axis=0, dtype=np.float64)
            scale = np.nanstd(X, axis=0, dtype=np.float64)
        # an all-missing or constant feature carries no signal: leave it unscaled rather than divide by 0
        center = np.where(np.isfinite(center), center, 0.0).astype(np.float32)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0).astype(np.float32)
        return cls(center=center, scale=scale)

    def apply(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float32) - self.center) / self.scale


@dataclass(frozen=True)
class FittedModel:
    """A trained booster plus what scoring it needs (standardization for lasso)."""

    template: ModelTemplate
    booster: xgb.Booster
    hyperparameters: Params  # as trained, rounds included
    standardization: Standardization | None = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        """float32 predictions of the training library, on raw (unstandardized) features."""
        X = np.asarray(X, dtype=np.float32)
        if self.standardization is not None:
            X = self.standardization.apply(X)
            return self.booster.predict(xgb.DMatrix(X, missing=np.nan, nthread=1)).astype(np.float32)
        return np.asarray(self.booster.inplace_predict(X), dtype=np.float32)


@dataclass
class PreparedFold:
    """One fold's matrices, built once and shared by every candidate of a template kind."""

    train: xgb.DMatrix | LassoProblem
    valid: xgb.DMatrix | np.ndarray  # standardized float32 features for lasso
    y_valid: np.ndarray
    min_delta: float = 0.0  # early stopping's least improvement, in target units


@dataclass(frozen=True)
class LassoProblem:
    """Sufficient statistics of a least-squares problem on standardized, mean-imputed features."""

    gram: np.ndarray  # float64 (f, f): X'X / n
    correlation: np.ndarray  # float64 (f,): X'(y - mean(y)) / n
    y_mean: float

    @classmethod
    def build(cls, X_standardized: np.ndarray, y: np.ndarray) -> LassoProblem:
        X = np.nan_to_num(X_standardized.astype(np.float64), nan=0.0)
        y = np.asarray(y, dtype=np.float64)
        y_mean = float(y.mean())
        return cls(gram=X.T @ X / len(y), correlation=X.T @ (y - y_mean) / len(y), y_mean=y_mean)

    def solve(self, alpha: float) -> np.ndarray:
        """The weights minimizing (1/2) w'Gw - c'w + alpha |w|_1; every column has mean 0, so the intercept
        is mean(y) exactly. The active-set solution when it converges, else coordinate descent."""
        weights = self.active_set(alpha)
        return weights if weights is not None else self.coordinate_descent(alpha)

    def active_set(self, alpha: float) -> np.ndarray | None:
        """Exact solution by an active-set method (Osborne et al. 2000), None when it does not settle within
        LASSO_ACTIVE_SET_STEPS or a subproblem is singular. Optimal when every inactive weight's gradient
        is within alpha and every active weight solves its equations with the signs it entered with."""
        gram, correlation = self.gram, self.correlation
        weights, signs, active = np.zeros(len(correlation)), np.zeros(len(correlation)), []
        usable = np.diag(gram) > 0
        tolerance = 1e-12 * max(1.0, float(np.abs(correlation).max(initial=0.0)))
        for _ in range(LASSO_ACTIVE_SET_STEPS):
            excess = np.where(usable, np.abs(correlation - gram @ weights) - alpha, -np.inf)
            excess[active] = -np.inf
            entering = int(np.argmax(excess))
            if excess[entering] <= tolerance:
                return weights
            active.append(entering)
            signs[entering] = np.sign(correlation[entering] - gram[entering] @ weights)
            while active:  # move toward the active set's solution, dropping weights that cross zero
                index = np.array(active)
                try:
                    target = np.linalg.solve(gram[np.ix_(index, index)], correlation[index] - alpha * signs[index])
                except np.linalg.LinAlgError:
                    return None
                wrong = np.sign(target) != signs[index]
                if not wrong.any():
                    weights[:] = 0.0
                    weights[index] = target
                    break
                current, step = weights[index], target - weights[index]
                with np.errstate(divide="ignore", invalid="ignore"):
                    reach = np.clip(np.where(wrong, -current / step, np.inf), 0.0, 1.0)
                leaving = int(np.argmin(reach))
                weights[index] = current + reach[leaving] * step
                weights[index[leaving]], signs[index[leaving]] = 0.0, 0.0
                active.remove(int(index[leaving]))
        return None

    def coordinate_descent(self, alpha: float) -> np.ndarray:
        """Coordinate descent from zero, until no weight moves more than LASSO_TOLERANCE in a sweep."""
        weights = np.zeros(len(self.correlation))
        diagonal = np.diag(self.gram)
        for _ in range(LASSO_MAX_SWEEPS):
            largest_step = 0.0
            for j in np.flatnonzero(diagonal > 0):
                residual = self.correlation[j] - self.gram[j] @ weights + diagonal[j] * weights[j]
                updated = np.sign(residual) * max(abs(residual) - alpha, 0.0) / diagonal[j]
                largest_step = max(largest_step, abs(updated - weights[j]))
                weights[j] = updated
            if largest_step < LASSO_TOLERANCE:
                break
        return weights


@dataclass(frozen=True)
class FoldFit:
    predictions: np.ndarray  # float32 on the validation block
    rounds: int  # boosting rounds the refit should use


@dataclass(frozen=True)
class Template:
    tag: ModelTemplate
    cost_rank: int  # lower is simpler and cheaper on the device
    default_ranges: Mapping[str, ParameterRange]
    fixed: Mapping[str, Any] = field(default_factory=dict)  # XGBoost parameters every candidate shares

    # --- hyper-parameters ------------------------------------------------------------------------

    def ranges(self, config: TrainingConfig | None = None) -> dict[str, ParameterRange]:
        """Default ranges with the config's overrides for this template; unknown names are refused."""
        overrides = dict(config.ranges.get(self.tag, {})) if config is not None else {}
        unknown = sorted(set(overrides) - set(self.default_ranges))
        if unknown:
            raise ValueError(
                f"training.ranges.{self.tag.value} names {unknown}; {self.tag.value} has {sorted(self.default_ranges)}"
            )
        ranges = {**self.default_ranges, **overrides}
        depth = ranges.get("max_depth")
        if depth is not None and depth.high > MAX_TREE_DEPTH:
            raise ValueError(
                f"training.ranges.{self.tag.value}.max_depth high={depth.high} exceeds {MAX_TREE_DEPTH}: "
                "devices score these trees"
            )
        return ranges

    def draw(self, rng: np.random.Generator, ranges: Mapping[str, ParameterRange]) -> Params:
        """One random candidate: each parameter uniform (or log-uniform) in its range, in name order."""
        return {name: _draw(rng, ranges[name]) for name in sorted(ranges)}

    # --- training --------------------------------------------------------------------------------

    @property
    def standardizes(self) -> bool:
        return self.tag == ModelTemplate.LASSO

    @property
    def matrix_kind(self) -> str:
        """Templates of one kind share a fold's prepared matrices."""
        return "standardized" if self.standardizes else "binned"

    def prepare(
        self, X_train: np.ndarray, y_train: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray, nthread: int = 1
    ) -> PreparedFold:
        if self.standardizes:
            scaling = Standardization.fit(X_train)
            train = LassoProblem.build(scaling.apply(X_train), y_train)
            valid = np.nan_to_num(scaling.apply(X_valid), nan=0.0)
        else:
            train = xgb.QuantileDMatrix(X_train, label=y_train, max_bin=MAX_BIN, nthread=nthread)
            valid = xgb.QuantileDMatrix(X_valid, label=y_valid, ref=train, max_bin=MAX_BIN, nthread=nthread)
        min_delta = EARLY_STOPPING_MIN_DELTA_PER_STD * float(np.std(y_train))
        return PreparedFold(
            train=train, valid=valid, y_valid=np.asarray(y_valid, dtype=np.float64), min_delta=min_delta
        )

    def fit_prepared(self, fold: PreparedFold, params: Params, seed: int, nthread: int = 1) -> FoldFit:
        """Fit on a fold's training matrix; boosted models stop early on its validation block."""
        booster_params, rounds = self._booster_params(params, seed, nthread)
        if self.standardizes:
            weights = fold.train.solve(float(params["alpha"]))
            return FoldFit((fold.train.y_mean + fold.valid.astype(np.float64) @ weights).astype(np.float32), 1)
        if self.tag == ModelTemplate.RANDOM_FOREST:
            booster = xgb.train(booster_params, fold.train, num_boost_round=1)
            return FoldFit(np.asarray(booster.predict(fold.valid), dtype=np.float32), 1)
        stopping = xgb.callback.EarlyStopping(rounds=EARLY_STOPPING_ROUNDS, min_delta=fold.min_delta)
        booster = xgb.train(
            booster_params,
            fold.train,
            num_boost_round=rounds,
            evals=[(fold.valid, "valid")],
            callbacks=[stopping],
            verbose_eval=False,
        )
        best = int(booster.best_iteration) + 1
        predictions = booster.predict(fold.valid, iteration_range=(0, best))
        return FoldFit(np.asarray(predictions, dtype=np.float32), best)

    def fit(self, X: np.ndarray, y: np.ndarray, params: Params, seed: int, nthread: int = 1) -> FittedModel:
        """Train on all rows for exactly params' rounds (no early stopping: there is no holdout)."""
        X = np.asarray(X, dtype=np.float32)
        booster_params, rounds = self._booster_params(params, seed, nthread)
        if self.standardizes:
            scaling = Standardization.fit(X)
            problem = LassoProblem.build(scaling.apply(X), y)
            weights = problem.solve(float(params["alpha"]))
            booster = linear_booster(weights, problem.y_mean)
            return FittedModel(self.tag, booster, dict(params), scaling)
        matrix = xgb.QuantileDMatrix(X, label=y, max_bin=MAX_BIN, nthread=nthread)
        booster = xgb.train(booster_params, matrix, num_boost_round=rounds)
        return FittedModel(self.tag, booster, dict(params), None)

    def _booster_params(self, params: Params, seed: int, nthread: int) -> tuple[dict[str, Any], int]:
        unknown = sorted(set(params) - set(self.default_ranges))
        if unknown:
            raise ValueError(f"{self.tag.value} has no parameters {unknown}; it has {sorted(self.default_ranges)}")
        booster_params = {"objective": "reg:squarederror", "seed": seed, "nthread": nthread, **self.fixed}
        rounds = 1
        for name, value in params.items():
            if name == "n_estimators":
                rounds = int(value)
            elif name == "n_trees":
                booster_params["num_parallel_tree"] = int(value)
            else:
                booster_params[name] = value
        return booster_params, rounds


def linear_booster(weights: np.ndarray, intercept: float) -> xgb.Booster:
    """A gblinear booster holding given weights: the one model file, exporter and reference scorer
    every template shares. XGBoost's JSON model is its documented, loadable schema."""
    n_features = len(weights)
    seed_matrix = xgb.DMatrix(np.zeros((2, n_features), np.float32), label=np.zeros(2))
    skeleton = xgb.train({"booster": "gblinear", "base_score": 0.0, "nthread": 1}, seed_matrix, num_boost_round=1)
    model = json.loads(skeleton.save_raw("json"))
    stored = [float(np.float32(w)) for w in weights] + [float(np.float32(intercept))]  # weights, then the bias
    model["learner"]["gradient_booster"]["model"]["weights"] = stored
    booster = xgb.Booster()
    booster.load_model(bytearray(json.dumps(model).encode()))
    return booster


def _draw(rng: np.random.Generator, bounds: ParameterRange) -> float | int:
    low, high = bounds.low, bounds.high
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if bounds.log else rng.uniform(low, high)
    if bounds.integer:
        return int(min(max(round(value), math.ceil(low)), math.floor(high)))
    return float(value)


def _range(low: float, high: float, *, log: bool = False, integer: bool = False) -> ParameterRange:
    return ParameterRange(low=low, high=high, log=log, integer=integer)


TEMPLATES: dict[ModelTemplate, Template] = {
    ModelTemplate.LASSO: Template(
        ModelTemplate.LASSO,
        cost_rank=0,
        default_ranges={"alpha": _range(1e-4, 0.3, log=True)},  # L1 weight of (1/2n)|r|^2 + alpha |w|_1
    ),
    ModelTemplate.RANDOM_FOREST: Template(
        ModelTemplate.RANDOM_FOREST,
        cost_rank=1,
        default_ranges={
            "n_trees": _range(10, 30, integer=True),
            "max_depth": _range(4, 7, integer=True),
            "subsample": _range(0.3, 0.6),
            "colsample_bynode": _range(0.3, 0.8),
            "min_child_weight": _range(1, 30, log=True),
        },
        fixed={"booster": "gbtree", "tree_method": "hist", "max_bin": MAX_BIN, "eta": 1.0},
    ),
    ModelTemplate.XGBOOST: Template(
        ModelTemplate.XGBOOST,
        cost_rank=2,
        default_ranges={
            "n_estimators": _range(20, 120, log=True, integer=True),
            "max_depth": _range(3, 6, integer=True),
            "eta": _range(0.1, 0.5, log=True),
            "subsample": _range(0.5, 0.9),
            "colsample_bytree": _range(0.4, 0.9),
            "min_child_weight": _range(1, 30, log=True),
            "lambda": _range(0.1, 10, log=True),
        },
        fixed={"booster": "gbtree", "tree_method": "hist", "max_bin": MAX_BIN},
    ),
}


def template(tag: ModelTemplate | str) -> Template:
    try:
        return TEMPLATES[ModelTemplate(tag)]
    except ValueError:
        raise ValueError(f"template={tag!r} is not one of {[t.value for t in ModelTemplate]}") from None


__all__ = ["FittedModel", "MAX_BIN", "PreparedFold", "Standardization", "TEMPLATES", "Template", "template"]
