"""label.mode change (issue 16): the model learns future minus now, the payload says so, and every
level prediction -- the device scorer's, the trained model's for evaluation, the export's parity
reference -- is the training library's output plus the target's float32 `last` feature, added once
in float32 (model_runtime/label_mode.py). Parity is bit-exact over random boosters and linear models."""

from __future__ import annotations

import hashlib
import io
import json
from unittest.mock import patch

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from edgeloop.cloud.packing.labels import predictable, training_labels
from edgeloop.greengrass_components.model_runner.runner import LiveScorer
from edgeloop.model_runtime import model_format
from edgeloop.model_runtime import scorer as scorer_module
from edgeloop.model_runtime.label_mode import change_label, level_from_change
from edgeloop.model_runtime.linear_format import LinearModel
from edgeloop.model_runtime.model_format import CHANGE_FORMAT_VERSION, HEADER_ARRAY, read_payload, write_payload
from edgeloop.model_runtime.scorer import PayloadRejected, load_payload
from edgeloop.sagemaker_pipelines.steps.export import parity_error, payload_from_booster, reference_predict
from edgeloop.sagemaker_pipelines.steps.templates import TEMPLATES
from edgeloop.schemas import load_use_case
from edgeloop.schemas.model import ModelTemplate
from edgeloop.schemas.use_case import LabelConfig, LabelMode, UseCaseConfig

EXTRUSION = load_use_case("extrusion")
LEVEL = EXTRUSION.model_copy(update={"label": LabelConfig(mode=LabelMode.LEVEL)})
CHANGE = EXTRUSION.model_copy(update={"label": LabelConfig(mode=LabelMode.CHANGE)})
N_TREE_BOOSTERS, N_LINEAR_BOOSTERS = 16, 6


def scorer_of(payload: bytes):
    return load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())


def bits_equal(expected: np.ndarray, actual: np.ndarray, what: str) -> None:
    assert actual.dtype == np.float32 and actual.shape == expected.shape, what
    differ = np.flatnonzero(expected.view(np.uint32) != actual.view(np.uint32))
    assert differ.size == 0, f"{what}: {differ.size} rows differ, e.g. {expected[differ[0]]!r} vs {actual[differ[0]]!r}"


# --- the use case and the labels -------------------------------------------------------------------


def test_level_is_the_default_and_change_needs_the_last_feature():
    document = {k: v for k, v in EXTRUSION.model_dump(mode="json").items() if k != "label"}
    assert UseCaseConfig.model_validate(document).label.mode == LabelMode.LEVEL
    assert (
        CHANGE.current_value_feature == "cold_od_average__last" and CHANGE.current_value_feature in CHANGE.feature_names
    )
    document = {**EXTRUSION.model_dump(mode="json"), "label": {"mode": "change"}, "feature_stats": ["mean", "slope"]}
    with pytest.raises(ValueError, match=r"label.mode='change' needs 'last' in feature_stats"):
        UseCaseConfig.model_validate(document)
    with pytest.raises(ValueError, match="mode"):
        UseCaseConfig.model_validate({**document, "label": {"mode": "delta"}})


def test_training_labels_are_future_minus_the_float32_last_value():
    last = CHANGE.current_value_feature
    examples = pd.DataFrame({"label": [10.3, 9.9, 10.0], last: [10.1000004, np.nan, 9.5]})
    assert list(training_labels(examples, LEVEL)) == [10.3, 9.9, 10.0]
    kept = predictable(examples, CHANGE)
    assert list(kept.index) == [0, 2] and len(predictable(examples, LEVEL)) == 3
    expected = np.array([10.3 - float(np.float32(10.1000004)), 10.0 - 9.5])
    np.testing.assert_array_equal(training_labels(kept, CHANGE), expected)


# --- random change-mode models: payload == library + current, bit for bit --------------------------


def change_problem(seed: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Rows with mixed scales, ties and NaNs; a slow level in column `current`; change labels on it."""
    rng = np.random.default_rng([seed, 16])
    n_features = int(rng.integers(2, 25))
    current = int(rng.integers(n_features))

    def inputs(n: int) -> np.ndarray:
        X = rng.normal(size=(n, n_features)) * rng.choice([1e-3, 1.0, 1e3], size=n_features)
        X[:, ::2] = np.round(X[:, ::2], 1)
        X[:, current] = rng.choice([0.0, 10.0, 250.0]) + np.cumsum(rng.normal(scale=0.1, size=n))
        X[rng.random(X.shape) < 0.05] = np.nan
        return X

    X, X_new = inputs(200), inputs(120)
    future = X[:, current] + 0.3 * np.tanh(np.nan_to_num(X[:, 0])) + rng.normal(scale=0.05, size=len(X))
    y = change_label(future, X[:, current])
    present = ~np.isnan(y)  # training leaves out packs without a current value (labels.predictable)
    return X[present], y[present], current, X_new


def check_change_payload(booster: xgb.Booster, X: np.ndarray, current: int, standardization=None) -> None:
    features = [f"f{i}" for i in range(X.shape[1])]
    payload = payload_from_booster(
        booster,
        model_id="m",
        version="1.0.0",
        features=features,
        standardization=standardization,
        label_mode=LabelMode.CHANGE,
        current_feature=features[current],
    )
    header, _ = read_payload(payload)
    assert (header["label_mode"], header["current_feature"]) == ("change", features[current])
    assert header["format_version"] == CHANGE_FORMAT_VERSION
    assert parity_error(booster, payload, X, standardization, current_column=current) == 0.0
    raw = reference_predict(booster, X, standardization)
    expected = level_from_change(raw, X[:, current])
    for budget, ratio in ((0, scorer_module.BITVECTOR_WORK_RATIO), (1 << 40, float("inf"))):  # level, bitvector
        with (
            patch.object(scorer_module, "BITVECTOR_TABLE_BUDGET_BYTES", budget),
            patch.object(scorer_module, "BITVECTOR_WORK_RATIO", ratio),
        ):
            scorer = scorer_of(payload)
        predicted = scorer.predict(X)
        bits_equal(expected, predicted, f"{type(scorer._margin).__name__} predict")
        singles = np.array([scorer.predict_one(row) for row in X[:6]], dtype=np.float32)
        bits_equal(expected[:6], singles, "predict_one")
    present = ~np.isnan(X[:, current])
    assert not np.array_equal(predicted[present], raw[present]), "the current value was added"
    assert np.isnan(predicted[~present]).all(), "no current value, no level"


@pytest.mark.parametrize("seed", range(N_TREE_BOOSTERS))
def test_random_tree_boosters_in_change_mode_are_bit_exact(seed):
    X, y, current, X_new = change_problem(seed)
    rng = np.random.default_rng(seed)
    params = {
        "objective": "reg:squarederror",
        "max_depth": int(rng.integers(1, 9)),
        "eta": float(rng.uniform(0.05, 0.5)),
        "min_child_weight": 0,
        "nthread": 1,
        "seed": seed,
    }
    booster = xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=int(rng.integers(1, 80)))
    check_change_payload(booster, X_new, current)


@pytest.mark.parametrize("seed", range(N_LINEAR_BOOSTERS))
def test_random_linear_models_in_change_mode_are_bit_exact(seed):
    X, y, current, X_new = change_problem(100 + seed)
    if seed % 2:  # lasso: standardized features, the payload carries center and scale
        fitted = TEMPLATES[ModelTemplate.LASSO].fit(X.astype(np.float32), y, {"alpha": 1e-3}, seed=0)
        check_change_payload(fitted.booster, X_new, current, fitted.standardization)
        return
    params = {"objective": "reg:squarederror", "booster": "gblinear", "eta": 0.3, "nthread": 1, "seed": seed}
    booster = xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=int(seed * 7 + 3))
    check_change_payload(booster, X_new, current)


# --- the payload's mode: written, read, refused -----------------------------------------------------

FEATURES = ["a__mean", "a__last", "b__mean"]


def linear_payload(label_mode: str = "change", current_feature: str | None = "a__last", **kwargs) -> bytes:
    return write_payload(
        LinearModel(weights=np.array([0.0, 0.0, 0.5], dtype=np.float32), bias=0.25),
        model_id="m",
        version="1.0.0",
        objective=kwargs.pop("objective", "reg:squarederror"),
        base_score=0.0,
        features=FEATURES,
        label_mode=label_mode,
        current_feature=current_feature,
    )


def rewritten(payload: bytes, **changes) -> bytes:
    """The payload with header fields replaced (None: removed), everything else as written."""
    with np.load(io.BytesIO(payload)) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(arrays.pop(HEADER_ARRAY).tobytes())
    for name, value in changes.items():
        header.pop(name) if value is None else header.__setitem__(name, value)
    buffer = io.BytesIO()
    np.savez(buffer, **{HEADER_ARRAY: np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}, **arrays)
    return buffer.getvalue()


def test_a_payload_without_label_mode_is_level():
    level = linear_payload("level", None)
    assert read_payload(level)[0]["label_mode"] == "level"
    older = rewritten(level, label_mode=None)
    assert "label_mode" not in read_payload(older)[0]
    x = np.array([1.0, 7.0, 2.0], dtype=np.float32)
    assert scorer_of(older).label_mode == LabelMode.LEVEL and scorer_of(older).predict_one(x) == 1.25
    assert scorer_of(linear_payload()).predict_one(x) == float(level_from_change(np.float32(1.25), x[1])) == 8.25


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"label_mode": "delta"}, "label_mode='delta' is not one of"),
        ({"current_feature": None}, "needs current_feature"),
        ({"current_feature": "c__last"}, "current_feature='c__last' is not among"),
        ({"format_version": 1}, "format_version=1 is not supported for precision='fp32' and label_mode='change'"),
        ({"label_mode": "level"}, "only meaningful with label_mode 'change'"),
        ({"objective": "binary:logistic"}, "applies to regression"),
    ],
)
def test_inconsistent_change_payloads_are_refused(changes, reason):
    payload = rewritten(linear_payload(), **changes)
    with pytest.raises(ValueError, match=reason):
        read_payload(payload)
    with pytest.raises(PayloadRejected, match="malformed payload"):
        scorer_of(payload)


def test_a_runtime_before_change_mode_refuses_the_payload_instead_of_publishing_changes(monkeypatch):
    monkeypatch.setattr(model_format, "SUPPORTED_FORMAT_VERSIONS", (1, 2))  # what runtime 1.2.0 reads
    with pytest.raises(PayloadRejected, match=r"format_version=3 is not supported \(this reader: \[1, 2\]\)"):
        scorer_of(linear_payload())
    assert scorer_of(linear_payload("level", None)).label_mode == LabelMode.LEVEL  # level payloads stay readable


def test_writing_refuses_an_inconsistent_mode():
    with pytest.raises(ValueError, match="needs current_feature"):
        linear_payload("change", None)
    with pytest.raises(ValueError, match="applies to regression"):
        linear_payload(objective="binary:logistic")


# --- the gateway publishes a level ------------------------------------------------------------------


def test_the_live_scorer_publishes_the_level_of_a_change_model():
    weights = np.zeros(len(CHANGE.feature_names), dtype=np.float32)
    payload = write_payload(
        LinearModel(weights=weights, bias=0.125),  # predicts a change of +0.125
        model_id="m",
        version="1.0.0",
        objective="reg:squarederror",
        base_score=0.0,
        features=CHANGE.feature_names,
        label_mode="change",
        current_feature=CHANGE.current_value_feature,
    )
    live = LiveScorer(CHANGE)
    live.swap(scorer_of(payload))
    start_ms, period_ms = 1_767_225_600_000, round(CHANGE.sample_period_s * 1000)
    times = start_ms + np.arange(0, CHANGE.pack_window_s * 1000 + 30_000, period_ms)
    samples = [
        (metric, int(t), 30.0 + i + 0.001 * k) for k, t in enumerate(times) for i, metric in enumerate(CHANGE.metrics)
    ]
    live.add(samples)
    now = int(times[-1]) + 1
    window_end = now // (CHANGE.example_stride_s * 1000) * CHANGE.example_stride_s * 1000
    last = [v for m, t, v in samples if m == CHANGE.target_metric and t < window_end][-1]
    [(metric, at_ms, value)] = live.maybe_score(now)
    assert (metric, at_ms) == (CHANGE.prediction_metric, window_end + CHANGE.horizon_s * 1000)
    assert value == float(np.float32(0.125) + np.float32(last))
