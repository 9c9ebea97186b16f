"""The numpy scorer is bit-exact with XGBoost on random small models (fp32 tier)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloop.greengrass_components.model_runner.scorer import load_payload
from edgeloop.sagemaker_pipelines.steps.export import payload_from_booster, reference_predict


def random_data(rng: np.random.Generator, n_rows: int, n_features: int, nan_fraction: float) -> np.ndarray:
    """Mixed scales and ties, NaNs, one constant column and one all-NaN column (never split on)."""
    X = rng.normal(size=(n_rows, n_features)) * rng.choice([1e-3, 1.0, 1e4], size=n_features)
    X[:, : n_features // 2] = np.round(X[:, : n_features // 2], 1)  # ties: values equal to thresholds
    X[rng.random(X.shape) < nan_fraction] = np.nan
    if n_features >= 3:
        X[:, -1] = 7.0
        X[:, -2] = np.nan
    return X


def train(seed: int, n_trees: int, depth: int, n_features: int, nan_fraction: float, objective: str):
    rng = np.random.default_rng(seed)
    X = random_data(rng, 200, n_features, nan_fraction)
    signal = np.nan_to_num(X[:, 0]) + np.sin(np.nan_to_num(X[:, min(1, n_features - 1)]))
    y = signal + rng.normal(scale=0.3, size=len(X))
    if objective == "binary:logistic":
        y = (y > np.median(y)).astype(np.float64)
    params = {"objective": objective, "max_depth": depth, "eta": 0.3, "nthread": 1, "seed": seed, "min_child_weight": 0}
    booster = xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=n_trees)
    return booster, rng


def scorer_for(booster: xgb.Booster, n_features: int):
    features = [f"f{i}" for i in range(n_features)]
    payload = payload_from_booster(booster, model_id="m", version="1.0.0", features=features)
    return load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())


def assert_bit_exact(expected: np.ndarray, actual: np.ndarray) -> None:
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    mismatched = np.flatnonzero(expected.view(np.uint32) != actual.view(np.uint32))
    if mismatched.size:
        row = mismatched[0]
        pytest.fail(f"{mismatched.size} rows differ, e.g. row {row}: {expected[row]!r} vs {actual[row]!r}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_trees=st.integers(1, 50),
    depth=st.integers(1, 8),
    n_features=st.integers(1, 8),
    nan_fraction=st.sampled_from([0.0, 0.05, 0.3]),
    objective=st.sampled_from(["reg:squarederror", "reg:squarederror", "binary:logistic"]),
)
def test_random_tree_models_are_bit_exact(seed, n_trees, depth, n_features, nan_fraction, objective):
    booster, rng = train(seed, n_trees, depth, n_features, nan_fraction, objective)
    scorer = scorer_for(booster, n_features)
    fresh = random_data(rng, 300, n_features, nan_fraction)
    fresh[:3] = np.nan  # rows that are entirely missing follow default directions only
    assert_bit_exact(np.asarray(booster.inplace_predict(fresh.astype(np.float32)), np.float32), scorer.predict(fresh))
    for row in fresh[:5]:
        assert np.float32(scorer.predict_one(row)) == scorer.predict(row[None, :])[0]


def test_float64_inputs_are_rounded_to_float32_like_xgboost():
    booster, rng = train(11, 20, 4, 4, 0.0, "reg:squarederror")
    scorer = scorer_for(booster, 4)
    X = rng.normal(size=(500, 4))  # float64: xgboost rounds to float32 before comparing
    assert_bit_exact(np.asarray(booster.inplace_predict(X), np.float32), scorer.predict(X))


def test_infinite_inputs_follow_the_comparison_not_the_default_direction():
    booster, rng = train(5, 30, 6, 3, 0.1, "reg:squarederror")
    scorer = scorer_for(booster, 3)
    X = rng.choice([np.inf, -np.inf, np.nan, 0.0, 1.5], size=(64, 3))
    assert_bit_exact(np.asarray(booster.inplace_predict(X.astype(np.float32)), np.float32), scorer.predict(X))


@pytest.mark.parametrize("objective", ["reg:squarederror", "binary:logistic"])
def test_linear_models_are_bit_exact(objective):
    rng = np.random.default_rng(2)
    X = random_data(rng, 300, 6, 0.1)
    y = np.nan_to_num(X[:, 0]) > 0 if objective == "binary:logistic" else np.nan_to_num(X[:, 0]) * 3.0
    params = {"objective": objective, "booster": "gblinear", "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(X, label=y.astype(float)), 30)
    scorer = scorer_for(booster, 6)
    assert scorer.family == "linear"
    assert_bit_exact(reference_predict(booster, X), scorer.predict(X))


def test_batch_larger_than_one_chunk_matches():
    booster, rng = train(3, 10, 3, 5, 0.1, "reg:squarederror")
    scorer = scorer_for(booster, 5)
    X = random_data(rng, 9_000, 5, 0.1)
    assert_bit_exact(np.asarray(booster.inplace_predict(X.astype(np.float32)), np.float32), scorer.predict(X))


def test_wrong_input_shapes_name_the_expected_shape():
    booster, _ = train(1, 3, 2, 4, 0.0, "reg:squarederror")
    scorer = scorer_for(booster, 4)
    with pytest.raises(ValueError, match=r"expected \(n_rows, 4\)"):
        scorer.predict(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        scorer.predict_one(np.zeros(3))
    assert scorer.predict(np.zeros((0, 4))).shape == (0,)
