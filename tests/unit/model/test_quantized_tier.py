"""The quantized tier: int8 leaves with a per-tree scale and offset, payload format version 2.

Round trip through the format, the error recorded at export and the bound that refuses it, the
refusal by runtimes that only read format version 1, and the manifest entry devices are picked by.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
from payload_tampering import rewrite

from edgeloop.model_runtime import model_format
from edgeloop.model_runtime.model_format import (
    FORMAT_VERSION,
    QUANTIZED_FORMAT_VERSION,
    read_payload,
    write_payload,
)
from edgeloop.model_runtime.scorer import PayloadRejected, load_payload
from edgeloop.model_runtime.tree_format import TreeEnsemble, decode_trees
from edgeloop.sagemaker_pipelines.steps import export as export_step
from edgeloop.sagemaker_pipelines.steps.artifacts import payload_key
from edgeloop.sagemaker_pipelines.steps.export import ParityError, export_model
from edgeloop.sagemaker_pipelines.steps.train import TrainedModel
from edgeloop.schemas.model import Architecture, ModelMetrics, Precision

FEATURES = ["speed__mean", "temp_die__last", "pressure__slope", "melt__std"]
ALL_TIERS = (Precision.FP32, Precision.FP16_LEAVES, Precision.QUANTIZED)


def stumps(leaf_pairs: np.ndarray) -> TreeEnsemble:
    """One stump per (left, right) leaf pair, tree t splitting feature t % 4 at 0."""
    n = len(leaf_pairs)
    node = np.arange(3 * n)
    root = node % 3 == 0
    leaves = np.zeros(3 * n, dtype=np.float32)
    leaves[1::3], leaves[2::3] = leaf_pairs[:, 0], leaf_pairs[:, 1]
    return TreeEnsemble(
        tree_offsets=np.arange(n + 1) * 3,
        split_feature=np.where(root, np.repeat(np.arange(n) % len(FEATURES), 3), -1),
        threshold=np.where(root, 0.0, np.nan).astype(np.float32),
        left_child=np.where(root, 1, -1),
        right_child=np.where(root, 2, -1),
        default_left=root,
        leaf_value=np.where(root, 0, leaves).astype(np.float32),
    )


def write(model: TreeEnsemble, precision: Precision = Precision.QUANTIZED) -> bytes:
    return write_payload(
        model,
        model_id="extrusion-cold-od-line-1",
        version="2.0.0",
        objective="reg:squarederror",
        base_score=4.5,
        features=FEATURES,
        precision=precision,
    )


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(3000, len(FEATURES))).astype(np.float32)
    X[rng.random(X.shape) < 0.03] = np.nan
    y = np.nan_to_num(X) @ np.array([1.5, -2.0, 0.5, 0.0]) + np.sin(3 * np.nan_to_num(X[:, 0])) + 20.0
    params = {"max_depth": 5, "eta": 0.2, "nthread": 1, "objective": "reg:squarederror"}
    booster = xgb.train(params, xgb.DMatrix(X[:2000], label=y[:2000], feature_names=FEATURES), num_boost_round=80)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return TrainedModel(
        booster=booster,
        feature_names=FEATURES,
        metrics=ModelMetrics(mse=0.1, mae=0.2, n_train=2000, n_test=1000),
        training_start=start,
        training_end=start,
        X_test=X[2000:],
        y_test=y[2000:],
        training_data_sha256="a" * 64,
        test_start=start,
    )


def export(trained: TrainedModel, precisions=ALL_TIERS):
    return export_model(
        trained,
        model_id="extrusion-cold-od-line-1",
        version="2.0.0",
        use_case="extrusion",
        line_ids=["line-1"],
        target="cold_od_average",
        precisions=precisions,
    )


# --- format --------------------------------------------------------------------------------------


def test_quantized_round_trip_keeps_structure_and_stores_int8_leaves():
    pairs = np.array([[0.75, -0.5], [0.01, 0.03], [-2.0, -2.0]], dtype=np.float32)
    model = stumps(pairs)
    header, arrays = read_payload(write(model))
    assert header["format_version"] == QUANTIZED_FORMAT_VERSION == 2
    assert header["precision"] == "quantized"
    assert set(header["arrays"]) == set(arrays)  # leaf_scale and leaf_offset are described too
    assert arrays["leaf_value"].dtype == np.int8 and arrays["leaf_value"].shape == (6,)
    assert arrays["leaf_scale"].shape == arrays["leaf_offset"].shape == (3,)
    decoded, exact = decode_trees(header, arrays), decode_trees(*read_payload(write(model, Precision.FP32)))
    for name in ("tree_offsets", "split_feature", "left_child", "right_child", "default_left"):
        np.testing.assert_array_equal(getattr(decoded, name), getattr(exact, name))
    np.testing.assert_array_equal(decoded.threshold.view(np.uint32), exact.threshold.view(np.uint32))
    assert decoded.leaf_value.dtype == np.float32  # dequantized at load: the scorer is unchanged
    step = np.repeat(arrays["leaf_scale"], 2)
    assert (np.abs(decoded.leaf_value[decoded.is_leaf] - pairs.ravel()) <= step / 2 * 1.0001).all()
    assert decoded.leaf_value[7] == decoded.leaf_value[8] == np.float32(-2.0)  # a flat tree stays exact


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3, width=32), st.floats(-1e3, 1e3, width=32)), min_size=1, max_size=40))
def test_every_leaf_is_within_half_a_step_of_its_tree(pairs):
    pairs = np.asarray(pairs, dtype=np.float32)
    header, arrays = read_payload(write(stumps(pairs)))
    decoded = decode_trees(header, arrays).leaf_value[np.arange(3 * len(pairs)) % 3 != 0]
    step = np.repeat(arrays["leaf_scale"].astype(np.float64), 2)
    error = np.abs(decoded.astype(np.float64) - pairs.ravel().astype(np.float64))
    # half a step, plus the float32 rounding of the dequantized value itself
    assert (error <= step / 2 + np.abs(pairs.ravel()) * 2**-23 + 1e-30).all()


def test_fp32_and_fp16_payloads_stay_format_version_1():
    model = stumps(np.array([[0.5, -0.5]], dtype=np.float32))
    for precision in (Precision.FP32, Precision.FP16_LEAVES):
        assert read_payload(write(model, precision))[0]["format_version"] == FORMAT_VERSION == 1


@pytest.mark.parametrize(
    "header_changes, drop, array_changes, reason",
    [
        ({"format_version": 1}, (), {}, "format_version=1 is not supported for precision='quantized'"),
        ({"format_version": 4}, (), {}, r"format_version=4 is not supported \(this reader: \[1, 2, 3\]\)"),
        ({}, ("leaf_scale",), {}, "no 'leaf_scale' array"),
        ({}, (), {"leaf_offset": np.zeros(2, np.float32)}, "'leaf_offset' has shape"),
        ({}, (), {"leaf_scale": np.full(1, -0.1, np.float32)}, "leaf_scale is negative"),
        ({}, (), {"leaf_scale": np.full(1, np.inf, np.float32)}, "not finite"),
        ({}, (), {"leaf_value": np.array([-128, 5], np.int8)}, r"outside \[-127, 127\]"),
        ({}, (), {"leaf_value": np.array([1, 5], np.int16)}, "'leaf_value' has dtype int16"),
        ({"precision": "fp32", "format_version": 1}, (), {}, "unknown arrays"),
        ({"family": "linear"}, (), {}, "applies to tree ensembles only"),
    ],
)
def test_inconsistent_quantized_payloads_are_refused_with_reason(header_changes, drop, array_changes, reason):
    payload = write(stumps(np.array([[0.5, -0.25]], dtype=np.float32)))
    with pytest.raises(ValueError, match=reason):
        read_payload(rewrite(payload, header_changes, drop, **array_changes))


def test_a_runtime_that_reads_only_format_version_1_refuses_quantized_payloads(monkeypatch):
    """Runtimes before 1.2.0 accept format version 1 only: they must refuse, not misread, int8 leaves."""
    payload = write(stumps(np.array([[0.5, -0.25]], dtype=np.float32)))
    monkeypatch.setattr(model_format, "SUPPORTED_FORMAT_VERSIONS", (FORMAT_VERSION,))
    with pytest.raises(PayloadRejected) as refused:
        load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())
    assert "format_version=2 is not supported (this reader: [1]); the payload needs a newer runtime" in (
        refused.value.reason
    )
    fp32 = write(stumps(np.array([[0.5, -0.25]], dtype=np.float32)), Precision.FP32)
    assert load_payload(fp32, expected_sha256=hashlib.sha256(fp32).hexdigest()).precision == Precision.FP32


# --- export --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(trained):
    return export(trained)


def test_export_records_the_quantized_tier_in_the_manifest(exported):
    tier = exported.manifest.tier(Precision.QUANTIZED)
    payload = exported.payloads[Precision.QUANTIZED]
    assert tier.architectures == [Architecture.X86_64, Architecture.AARCH64, Architecture.ARMV7L]
    assert tier.min_runtime_version == "1.2.0"
    assert tier.payload_bytes == len(payload) and tier.sha256 == hashlib.sha256(payload).hexdigest()
    assert tier.payload_key == payload_key("extrusion-cold-od-line-1", "2.0.0", Precision.QUANTIZED)
    sizes = {p: exported.manifest.tier(p).payload_bytes for p in ALL_TIERS}
    assert sizes[Precision.QUANTIZED] < sizes[Precision.FP16_LEAVES] < sizes[Precision.FP32]


def test_recorded_error_is_the_measured_error_and_within_the_bound(exported, trained):
    tier = exported.manifest.tier(Precision.QUANTIZED)
    payload = exported.payloads[Precision.QUANTIZED]
    scorer = load_payload(payload, expected_sha256=tier.sha256)
    measured = np.abs(
        scorer.predict(trained.X_test).astype(np.float64) - trained.booster.inplace_predict(trained.X_test)
    ).max()
    assert tier.max_abs_error == measured
    fp16_error = exported.manifest.tier(Precision.FP16_LEAVES).max_abs_error
    assert fp16_error < tier.max_abs_error <= 1e-2 * np.std(trained.y_test)  # lossier than fp16, bounded


def test_export_refuses_a_quantized_payload_beyond_its_bound(trained, monkeypatch):
    strict = replace(export_step.TIERS[Precision.QUANTIZED], max_error_per_target_std=1e-6)
    monkeypatch.setattr(export_step, "TIERS", {**export_step.TIERS, Precision.QUANTIZED: strict})
    with pytest.raises(ParityError, match=r"quantized payload .* max_abs_error=.* exceeds the bound"):
        export(trained, precisions=(Precision.QUANTIZED,))


def test_binary_classifier_quantized_tier_is_within_its_bound():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(2000, len(FEATURES))).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=len(X)) > 0).astype(np.float64)
    params = {"max_depth": 4, "eta": 0.3, "nthread": 1, "objective": "binary:logistic"}
    booster = xgb.train(params, xgb.DMatrix(X[:1500], label=y[:1500]), num_boost_round=60)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    trained = TrainedModel(
        booster, FEATURES, ModelMetrics(mse=0, mae=0, n_train=1500, n_test=500), start, start,
        X[1500:], y[1500:], "b" * 64, start,
    )  # fmt: skip
    tier = export(trained, precisions=(Precision.QUANTIZED,)).manifest.tier(Precision.QUANTIZED)
    assert 0 < tier.max_abs_error <= 1e-2 * np.std(y[1500:])
