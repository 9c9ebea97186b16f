"""Export parity over random boosters (issue 14, item 7): for each objective the exporter supports, 50
random gbtree boosters (depth 1-10, 1-300 trees, 1-80 features, NaNs in training and scored inputs,
random base scores, estimated or given, degenerate labels included) and 10 random gblinear ones export
an fp32 payload that is bit-exact with XGBoost through every scorer path: the exporter's own parity
check (scorer's choice of evaluator), the bitvector and the level-traversal evaluators forced, and
predict_one. Only the fp32 tier is exact by design (fp16 and quantized leaves have bounds).

Tree counts are drawn log-uniformly over 1-300 (so most boosters are small and the suite stays within
about a minute on one core); seed 0 of each objective is the largest case: 300 trees, depth 10, 80 features.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from unittest.mock import patch

import numpy as np
import pytest
import xgboost as xgb

from edgeloop.model_runtime import scorer as scorer_module
from edgeloop.model_runtime.model_format import Objective
from edgeloop.model_runtime.scorer import load_payload
from edgeloop.sagemaker_pipelines.steps.export import (
    booster_base_margin,
    parity_error,
    payload_from_booster,
    reference_predict,
)

OBJECTIVES = ("reg:squarederror", "binary:logistic")
N_TREE_BOOSTERS = 50  # per objective
N_LINEAR_BOOSTERS = 10  # per objective
N_ROWS = 120
EVALUATORS = {"bitvector": "BitvectorEvaluator", "level": "LevelEvaluator"}


def random_inputs(rng: np.random.Generator, n_rows: int, n_features: int, nan_fraction: float) -> np.ndarray:
    """Mixed scales, ties (rounded columns), NaNs; a few rows entirely missing, one of -0.0."""
    X = rng.normal(size=(n_rows, n_features)) * rng.choice([1e-3, 1.0, 1e4], size=n_features)
    X[:, ::2] = np.round(X[:, ::2], 1)
    X[rng.random(X.shape) < nan_fraction] = np.nan
    X[:2] = np.nan
    X[2] = -0.0
    return X


def random_labels(rng: np.random.Generator, X: np.ndarray, objective: str) -> np.ndarray:
    signal = np.nan_to_num(X[:, 0]) / (np.nanstd(X[:, 0]) or 1.0) + rng.normal(scale=0.5, size=len(X))
    if objective == "reg:squarederror":
        return signal * rng.choice([1e-2, 1.0, 1e3]) + rng.normal(scale=10)
    kind = rng.choice(["imbalanced", "probabilities", "all-0", "all-1"], p=[0.6, 0.3, 0.05, 0.05])
    if kind == "probabilities":  # fractional labels: the estimated base_score is their mean
        return 1 / (1 + np.exp(-signal))
    if kind.startswith("all-"):  # one class only: base_score 0 or 1, clamped by XGBoost before its logit
        return np.full(len(X), float(kind[-1]))
    return (signal > np.quantile(signal, rng.uniform(0.02, 0.98))).astype(np.float64)


def random_base_score(rng: np.random.Generator, objective: str) -> dict:
    """Half the boosters estimate base_score from the labels, half are given one (any float32 in (0, 1)
    for the logistic, extremes that XGBoost clamps included)."""
    if rng.random() < 0.5:
        return {}
    if objective == "reg:squarederror":
        return {"base_score": float(np.float32(rng.normal(scale=rng.choice([1e-3, 1.0, 1e3]))))}
    extreme = rng.random() < 0.1
    value = rng.choice([1e-9, 1e-6, 1 - 1e-7]) if extreme else rng.uniform(0, 1)
    return {"base_score": float(np.float32(value))}


def random_booster(seed: int, objective: str, booster: str = "gbtree") -> tuple[xgb.Booster, np.ndarray]:
    """A random booster and fresh inputs to score; seed 0 is the largest tree ensemble."""
    rng = np.random.default_rng([seed, OBJECTIVES.index(objective), booster == "gblinear"])
    if seed == 0:
        n_trees, depth, n_features = 300, 10, 80
    else:
        n_trees = int(rng.integers(1, 301))
        depth, n_features = int(rng.integers(1, 11)), int(rng.integers(1, 81))
    nan_fraction = float(rng.choice([0.0, 0.05, 0.3]))
    X = random_inputs(rng, N_ROWS, n_features, nan_fraction)
    params = {
        "objective": objective,
        "booster": booster,
        "max_depth": depth,
        "eta": float(rng.uniform(0.05, 0.5)),
        "min_child_weight": 0,
        "nthread": 1,
        "seed": seed,
        **random_base_score(rng, objective),
    }
    if booster == "gblinear":
        del params["max_depth"], params["min_child_weight"]
        n_trees = int(rng.integers(1, 50))  # boosting rounds
    trained = xgb.train(params, xgb.DMatrix(X, label=random_labels(rng, X, objective)), num_boost_round=n_trees)
    return trained, random_inputs(rng, 150, n_features, nan_fraction)


def export_fp32(booster: xgb.Booster) -> bytes:
    features = [f"f{i}" for i in range(booster.num_features())]
    return payload_from_booster(booster, model_id="m", version="1.0.0", features=features)


@contextmanager
def forced(kind: str):
    """The level traversal with no table budget, or the bitvector evaluator at any work ratio."""
    budget = 0 if kind == "level" else scorer_module.BITVECTOR_TABLE_BUDGET_BYTES
    ratio = float("inf") if kind == "bitvector" else scorer_module.BITVECTOR_WORK_RATIO
    with (
        patch.object(scorer_module, "BITVECTOR_TABLE_BUDGET_BYTES", budget),
        patch.object(scorer_module, "BITVECTOR_WORK_RATIO", ratio),
    ):
        yield


def assert_bit_exact(expected: np.ndarray, actual: np.ndarray, path: str) -> None:
    assert actual.dtype == np.float32 and actual.shape == expected.shape, path
    mismatched = np.flatnonzero(expected.view(np.uint32) != actual.view(np.uint32))
    if mismatched.size:
        row = mismatched[0]
        pytest.fail(f"{path}: {mismatched.size} rows differ, e.g. row {row}: {expected[row]!r} vs {actual[row]!r}")


def check_every_path(booster: xgb.Booster, X: np.ndarray, kinds: tuple[str, ...]) -> None:
    payload = export_fp32(booster)
    error = parity_error(booster, payload, X)  # the exporter's own check, with the scorer's choice of evaluator
    assert error == 0.0, f"export parity check: max_abs_error={error!r}"
    expected = reference_predict(booster, X)  # Booster.inplace_predict; gblinear has only predict
    for kind in kinds:
        with forced(kind):
            scorer = load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())
        if kind in EVALUATORS and any("[f" in tree for tree in booster.get_dump()):  # without splits: level
            assert type(scorer._margin).__name__ == EVALUATORS[kind]
        assert_bit_exact(expected, scorer.predict(X), f"{kind} predict")
        singles = np.array([scorer.predict_one(row) for row in X[:8]], dtype=np.float32)
        assert_bit_exact(expected[:8], singles, f"{kind} predict_one")


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("seed", range(N_TREE_BOOSTERS))
def test_random_tree_boosters_export_bit_exact(seed, objective):
    booster, X = random_booster(seed, objective)
    check_every_path(booster, X, ("bitvector", "level"))


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("seed", range(N_LINEAR_BOOSTERS))
def test_random_linear_boosters_export_bit_exact(seed, objective):
    booster, X = random_booster(seed, objective, booster="gblinear")
    check_every_path(booster, X, ("linear",))


def stump(base_score: float | None, labels: np.ndarray, booster: str = "gbtree") -> xgb.Booster:
    X = np.linspace(-1, 1, len(labels))[:, None]
    params = {"objective": "binary:logistic", "booster": booster, "nthread": 1, "max_depth": 1}
    if booster == "gblinear":
        del params["max_depth"]
    if base_score is not None:
        params["base_score"] = base_score
    return xgb.train(params, xgb.DMatrix(X, label=labels), num_boost_round=1)


def test_logistic_base_margin_is_xgboosts_for_many_base_scores():
    """100 random float32 base scores: numpy's float32 log misses XGBoost's logf for about one in five."""
    rng = np.random.default_rng(14)
    labels = np.tile([0.0, 1.0], 10)
    X = np.array([[-1.0], [0.0], [1.0], [np.nan]], dtype=np.float32)
    for base_score in rng.uniform(0, 1, 100).astype(np.float32):
        booster = stump(float(base_score), labels)
        payload = export_fp32(booster)
        scorer = load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())
        assert_bit_exact(booster.inplace_predict(X), scorer.predict(X), f"base_score={base_score!r}")


@pytest.mark.parametrize("booster", ["gbtree", "gblinear"])
@pytest.mark.parametrize("label", [0.0, 1.0])
def test_one_class_labels_export_the_clamped_margin(label, booster):
    """All labels equal: XGBoost estimates base_score 0 or 1 and clamps it to [1e-6, 1 - 1e-6] before its
    logit, so the margin is finite (the unclamped logit is infinite, a payload every device refuses)."""
    trained = stump(None, np.full(20, label), booster)
    assert json.loads(trained.save_config())["learner"]["learner_model_param"]["base_score"] == f"[{label:.0f}E0]"
    margin = booster_base_margin(trained, Objective.BINARY_LOGISTIC)
    assert np.isfinite(margin) and abs(float(margin)) > 13
    X = np.array([[-1.0], [np.nan]], dtype=np.float32)
    check_every_path(trained, X, ("bitvector", "level") if booster == "gbtree" else ("linear",))
