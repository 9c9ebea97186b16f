"""The numpy scorer is bit-exact with XGBoost (fp32 tier): random models of 1-500 trees, depth 1-10,
NaNs, constant and unused features, both evaluators (bitvector and level traversal), both objectives."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
from contextlib import contextmanager
from unittest.mock import patch

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloop.model_runtime import bitvector as bitvector_module
from edgeloop.model_runtime import scorer as scorer_module
from edgeloop.model_runtime.model_format import write_payload
from edgeloop.model_runtime.scorer import glibc_expf, load_payload
from edgeloop.model_runtime.tree_format import TreeEnsemble
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


def train(seed: int, n_trees: int, depth: int, n_features: int, nan_fraction: float, objective: str, n_rows: int = 200):
    rng = np.random.default_rng(seed)
    X = random_data(rng, n_rows, n_features, nan_fraction)
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


def reference(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    """XGBoost's own output for X: the prediction (probability for binary:logistic) in float32."""
    return np.asarray(booster.inplace_predict(np.asarray(X, dtype=np.float32)), np.float32)


@contextmanager
def evaluator(kind: str):
    """Force one evaluator: the level traversal with no table budget, the bitvector one at any work ratio;
    "auto" leaves the choice to the scorer."""
    budget = 0 if kind == "level" else scorer_module.BITVECTOR_TABLE_BUDGET_BYTES
    ratio = float("inf") if kind == "bitvector" else scorer_module.BITVECTOR_WORK_RATIO
    with (
        patch.object(scorer_module, "BITVECTOR_TABLE_BUDGET_BYTES", budget),
        patch.object(scorer_module, "BITVECTOR_WORK_RATIO", ratio),
    ):
        yield


def check_random_model(seed, n_trees, depth, n_features, nan_fraction, objective, kind, n_train_rows=200):
    booster, rng = train(seed, n_trees, depth, n_features, nan_fraction, objective, n_train_rows)
    with evaluator(kind):
        scorer = scorer_for(booster, n_features)
    if kind != "auto":  # the evaluator under test is the one used (a model without splits has nothing to bin)
        has_splits = any("[f" in tree for tree in booster.get_dump())
        assert type(scorer._margin).__name__ == EVALUATOR_CLASSES[kind if has_splits else "level"]
    fresh = random_data(rng, 300, n_features, nan_fraction)
    fresh[:3] = np.nan  # rows that are entirely missing follow default directions only
    fresh[3] = -0.0  # -0.0 compares equal to 0.0
    expected = reference(booster, fresh)
    assert_bit_exact(expected, scorer.predict(fresh))
    singles = np.array([scorer.predict_one(row) for row in fresh[:12]], dtype=np.float32)
    assert_bit_exact(expected[:12], singles)


NEGATIVE_NAN = np.array([0xFFC0_0000], dtype=np.uint32).view(np.float32)[0]  # x86's default NaN, e.g. 0 * inf
EVALUATOR_CLASSES = {"bitvector": "BitvectorEvaluator", "level": "LevelEvaluator"}
OBJECTIVES = st.sampled_from(["reg:squarederror", "reg:squarederror", "binary:logistic"])
NAN_FRACTIONS = st.sampled_from([0.0, 0.05, 0.3])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_trees=st.integers(1, 60),
    depth=st.integers(1, 7),
    n_features=st.integers(1, 10),
    nan_fraction=NAN_FRACTIONS,
    objective=OBJECTIVES,
    kind=st.sampled_from(["bitvector", "bitvector", "level"]),
)
def test_small_random_tree_models_are_bit_exact(seed, n_trees, depth, n_features, nan_fraction, objective, kind):
    check_random_model(seed, n_trees, depth, n_features, nan_fraction, objective, kind)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_trees=st.integers(100, 500),
    depth=st.integers(6, 10),
    n_features=st.integers(3, 16),
    nan_fraction=NAN_FRACTIONS,
    objective=OBJECTIVES,
)
def test_large_random_tree_models_are_bit_exact(seed, n_trees, depth, n_features, nan_fraction, objective):
    """Up to 500 trees and depth 10, scored by whichever evaluator the scorer picks (table budget, work)."""
    check_random_model(seed, n_trees, depth, n_features, nan_fraction, objective, "auto", n_train_rows=400)


@pytest.mark.parametrize("kind", ["bitvector", "level"])
def test_trees_wider_than_one_mask_word_are_bit_exact(kind):
    booster, rng = train(8, 40, 10, 6, 0.1, "reg:squarederror", n_rows=600)
    leaves_per_tree = [tree.count("leaf=") for tree in booster.get_dump()]
    assert max(leaves_per_tree) > 64 and min(leaves_per_tree) <= 64  # mixes one-word and several-word trees
    with evaluator(kind):
        scorer = scorer_for(booster, 6)
    X = random_data(rng, 2_000, 6, 0.1)
    expected = reference(booster, X)
    assert_bit_exact(expected, scorer.predict(X))
    assert_bit_exact(expected[:20], np.array([scorer.predict_one(row) for row in X[:20]], dtype=np.float32))


@pytest.mark.parametrize("objective", ["reg:squarederror", "binary:logistic"])
def test_inputs_on_and_next_to_every_threshold_are_bit_exact(objective):
    """Each split threshold itself, its float32 neighbours, signed zeros, infinities and NaN, per feature."""
    booster, rng = train(21, 80, 6, 5, 0.1, objective)
    scorer = scorer_for(booster, 5)
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    thresholds = np.concatenate(
        [np.asarray(t["split_conditions"], np.float32)[np.asarray(t["left_children"]) >= 0] for t in trees]
    )
    assert thresholds.size >= 50
    values = np.concatenate(
        [
            thresholds,
            np.nextafter(thresholds, np.float32(np.inf)),
            np.nextafter(thresholds, np.float32(-np.inf)),
            np.array([0.0, -0.0, np.inf, -np.inf, np.nan, NEGATIVE_NAN], dtype=np.float32),
        ]
    )
    X = rng.choice(values, size=(3_000, 5)).astype(np.float32)
    expected = reference(booster, X)
    assert_bit_exact(expected, scorer.predict(X))
    assert_bit_exact(expected[:50], np.array([scorer.predict_one(row) for row in X[:50]], dtype=np.float32))


@pytest.mark.parametrize("nan_goes_left", [False, True])
def test_signed_zeros_and_signed_nans_against_a_zero_threshold(nan_goes_left):
    """-0.0 is not < 0.0 (goes right); NaN of either sign is missing and takes the default direction."""
    trees = TreeEnsemble(
        tree_offsets=np.array([0, 3]),
        split_feature=np.array([0, -1, -1]),
        threshold=np.array([0.0, np.nan, np.nan], dtype=np.float32),
        left_child=np.array([1, -1, -1]),
        right_child=np.array([2, -1, -1]),
        default_left=np.array([nan_goes_left, False, False]),
        leaf_value=np.array([0.0, -1.0, 1.0], dtype=np.float32),
    )
    payload = write_payload(
        trees, model_id="m", version="1", objective="reg:squarederror", base_score=0.5, features=["a"]
    )
    scorer = load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())
    tiny = np.float32(1e-45)
    X = np.array([[-0.0], [0.0], [-tiny], [tiny], [-np.inf], [np.inf], [np.nan], [NEGATIVE_NAN]], dtype=np.float32)
    missing = -0.5 if nan_goes_left else 1.5
    expected = np.array([1.5, 1.5, -0.5, 1.5, -0.5, 1.5, missing, missing], dtype=np.float32)
    assert_bit_exact(expected, scorer.predict(X))
    assert_bit_exact(expected, np.array([scorer.predict_one(row) for row in X], dtype=np.float32))


def test_model_without_any_split_is_bit_exact():
    """Trees that are a single leaf: nothing to bin, every row gets base_score + the leaves."""
    rng = np.random.default_rng(4)
    X = random_data(rng, 100, 3, 0.0)
    params = {"objective": "reg:squarederror", "max_depth": 3, "nthread": 1, "min_child_weight": 1e9}
    booster = xgb.train(params, xgb.DMatrix(X, label=rng.normal(size=100)), num_boost_round=5)
    scorer = scorer_for(booster, 3)
    assert_bit_exact(reference(booster, X), scorer.predict(X))
    assert np.float32(scorer.predict_one(X[0])) == reference(booster, X[:1])[0]


def test_chunk_boundaries_do_not_change_results():
    """Tiny binning passes and mask steps: rows land in many partial chunks, results stay bit-exact."""
    booster, rng = train(6, 30, 5, 7, 0.1, "binary:logistic")
    X = random_data(rng, 1_001, 7, 0.1)
    with patch.object(bitvector_module, "_BIN_CHUNK_ROWS", 97), patch.object(bitvector_module, "_MASK_CHUNK_BYTES", 1):
        scorer = scorer_for(booster, 7)
        assert scorer._margin._rows_per_step == 1
        assert_bit_exact(reference(booster, X), scorer.predict(X))


def test_expf_port_gives_the_c_library_bits():
    """binary:logistic goes through expf: the numpy port must match the expf XGBoost calls, bit for bit."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.expf.restype, libm.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.uniform(-110, 88.7, 100_000), rng.uniform(-12, 12, 100_000)]).astype(np.float32)
    x = np.append(
        x, np.array([5.2242746, -5.2242746, 0.0, -0.0, 88.7, -np.inf], dtype=np.float32)
    )  # 5.22...: 1 ulp off via exp()
    expected = np.fromiter((libm.expf(value) for value in x.tolist()), dtype=np.float32, count=len(x))
    assert_bit_exact(expected, glibc_expf(x))


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
