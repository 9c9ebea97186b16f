"""The payload container: round trips, compact exact thresholds, and clear refusals of bad bytes."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys

import numpy as np
import pytest
from payload_tampering import rewrite

from edgeloop.model_runtime.linear_format import LinearModel, decode_linear
from edgeloop.model_runtime.model_format import FORMAT_VERSION, read_payload, write_payload
from edgeloop.model_runtime.tree_format import TreeEnsemble, decode_trees
from edgeloop.schemas.model import Precision, feature_schema_hash

FEATURES = ["speed__mean", "temp_die__last", "pressure__slope"]


def two_trees() -> TreeEnsemble:
    """Tree 0: split on feature 0 then feature 2; tree 1: a stump on feature 1."""
    return TreeEnsemble(
        tree_offsets=np.array([0, 5, 8]),
        split_feature=np.array([0, 2, -1, -1, -1, 1, -1, -1], dtype=np.int32),
        threshold=np.array([0.5, -1.25, np.nan, np.nan, np.nan, 3.0e-7, np.nan, np.nan], dtype=np.float32),
        left_child=np.array([1, 3, -1, -1, -1, 1, -1, -1], dtype=np.int32),
        right_child=np.array([2, 4, -1, -1, -1, 2, -1, -1], dtype=np.int32),
        default_left=np.array([1, 0, 0, 0, 0, 1, 0, 0], dtype=bool),
        leaf_value=np.array([0, 0, 0.75, -0.5, 0.125, 0, 0.1, -0.2], dtype=np.float32),
    )


def write(model=None, **overrides) -> bytes:
    options = dict(
        model_id="extrusion-cold-od-line-1",
        version="1.2.3",
        objective="reg:squarederror",
        base_score=10.123456789,
        features=FEATURES,
    )
    return write_payload(model if model is not None else two_trees(), **{**options, **overrides})


def test_tree_round_trip_keeps_every_node_and_header_field():
    header, arrays = read_payload(write())
    assert header["format_version"] == FORMAT_VERSION
    assert header["model_id"] == "extrusion-cold-od-line-1" and header["version"] == "1.2.3"
    assert header["family"] == "xgboost" and header["objective"] == "reg:squarederror"
    assert header["features"] == FEATURES
    assert header["feature_schema_hash"] == feature_schema_hash(FEATURES)
    assert header["precision"] == "fp32" and header["n_trees"] == 2
    assert np.float32(header["base_score"]) == np.float32(10.123456789)
    assert header["threshold_encoding"] == "table-uint8"
    assert set(header["arrays"]) == set(arrays)  # the header names every stored array
    decoded, original = decode_trees(header, arrays), two_trees()
    np.testing.assert_array_equal(decoded.tree_offsets, original.tree_offsets)
    np.testing.assert_array_equal(decoded.split_feature, original.split_feature)
    np.testing.assert_array_equal(decoded.left_child, original.left_child)
    np.testing.assert_array_equal(decoded.right_child, original.right_child)
    np.testing.assert_array_equal(decoded.default_left, original.default_left)
    np.testing.assert_array_equal(decoded.threshold.view(np.uint32), original.threshold.view(np.uint32))
    np.testing.assert_array_equal(decoded.leaf_value, original.leaf_value)
    assert decoded.max_depth == 2


def test_small_dtypes_are_used_when_they_fit():
    _, arrays = read_payload(write())
    assert arrays["split_feature"].dtype == np.int16 and arrays["left_child"].dtype == np.int16
    assert arrays["threshold_index"].dtype == np.uint8 and arrays["leaf_value"].dtype == np.float32
    assert len(arrays["leaf_value"]) == 5  # leaves only


def stumps(thresholds: np.ndarray) -> TreeEnsemble:
    """One stump per threshold, all on feature 0."""
    n = len(thresholds)
    node = np.arange(3 * n)
    root = node % 3 == 0
    return TreeEnsemble(
        tree_offsets=np.arange(n + 1) * 3,
        split_feature=np.where(root, 0, -1),
        threshold=np.where(root, np.repeat(thresholds, 3), np.nan).astype(np.float32),
        left_child=np.where(root, 1, -1),
        right_child=np.where(root, 2, -1),
        default_left=root,
        leaf_value=np.where(root, 0, np.where(node % 3 == 1, -1.0, 1.0)).astype(np.float32),
    )


@pytest.mark.parametrize("n_thresholds, encoding", [(300, "table-uint16"), (65_537, "raw")])
def test_wide_threshold_tables_stay_exact(n_thresholds, encoding):
    distinct = (np.arange(n_thresholds) - n_thresholds / 2).astype(np.float32) / np.float32(7)
    thresholds = np.random.default_rng(3).permutation(distinct)
    header, arrays = read_payload(write(stumps(thresholds)))
    assert header["threshold_encoding"] == encoding
    decoded = decode_trees(header, arrays)
    np.testing.assert_array_equal(decoded.threshold[0::3].view(np.uint32), thresholds.view(np.uint32))


def test_fp16_leaves_tier_stores_half_precision_leaves():
    header, arrays = read_payload(write(precision=Precision.FP16_LEAVES))
    assert header["precision"] == "fp16-leaves" and arrays["leaf_value"].dtype == np.float16
    assert np.abs(decode_trees(header, arrays).leaf_value - two_trees().leaf_value).max() < 1e-3


def test_quantized_precision_is_refused_for_linear_models_on_write():
    linear = LinearModel(weights=np.array([0.5, -2.0, 1e-3], dtype=np.float32), bias=0.25)
    with pytest.raises(ValueError, match="precision='quantized' applies to tree ensembles only"):
        write(linear, precision=Precision.QUANTIZED)


def test_linear_round_trip():
    model = LinearModel(weights=np.array([0.5, -2.0, 1e-3], dtype=np.float32), bias=0.25)
    header, arrays = read_payload(write(model))
    assert header["family"] == "linear"
    decoded = decode_linear(arrays)
    np.testing.assert_array_equal(decoded.weights, model.weights)
    assert decoded.bias == 0.25


def _standardized_linear() -> LinearModel:
    return LinearModel(
        weights=np.array([0.5, -2.0, 1e-3], dtype=np.float32),
        bias=0.25,
        feature_center=np.array([100.0, 3.8, -1.0], dtype=np.float32),
        feature_scale=np.array([2.5, 0.01, 4.0], dtype=np.float32),
    )


def test_standardized_linear_round_trip_and_scoring():
    from edgeloop.model_runtime.scorer import load_payload

    model = _standardized_linear()
    payload = write(model)
    decoded = decode_linear(read_payload(payload)[1])
    np.testing.assert_array_equal(decoded.feature_center, model.feature_center)
    np.testing.assert_array_equal(decoded.feature_scale, model.feature_scale)
    X = np.array([[101.0, 3.79, 3.0], [98.0, np.nan, -1.0]], dtype=np.float32)
    scaled = (X - model.feature_center) / model.feature_scale
    expected = [
        np.float32(np.float32(0.25) + np.float32(10.123456789))
        + sum(np.float32(v * w) for v, w in zip(row, model.weights) if not np.isnan(v))
        for row in scaled
    ]
    scorer = load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())
    np.testing.assert_allclose(scorer.predict(X), expected, rtol=1e-6)
    assert scorer.predict_one(X[1]) == scorer.predict(X)[1]  # a missing feature adds nothing


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"feature_scale": np.array([2.5, 0.0, 4.0], dtype=np.float32)}, r"feature_scale\[1\]=0.0 must be > 0"),
        ({"feature_center": np.array([1.0, np.nan, 2.0], dtype=np.float32)}, "feature_center is not finite"),
        ({"feature_scale": np.ones(2, dtype=np.float32)}, "feature_scale"),
    ],
)
def test_bad_linear_scaling_is_refused_naming_the_array(changes, message):
    with pytest.raises(ValueError, match=message):
        read_payload(rewrite(write(_standardized_linear()), **changes))


def test_linear_scaling_comes_in_pairs():
    lonely = LinearModel(weights=np.ones(3, dtype=np.float32), bias=0.0, feature_center=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="come together"):
        write(lonely)


def test_truncated_payload_is_refused_with_reason():
    payload = write()
    for cut in (0, 10, len(payload) // 2, len(payload) - 1):
        with pytest.raises(ValueError, match="not an npz container|unreadable"):
            read_payload(payload[:cut])


def test_garbled_payload_is_refused_with_reason():
    payload = bytearray(write())
    middle = len(payload) // 2
    payload[middle : middle + 16] = bytes(16)
    with pytest.raises(ValueError, match="unreadable"):
        read_payload(bytes(payload))


def test_pickle_or_plain_bytes_are_not_a_payload():
    with pytest.raises(ValueError, match="not an npz container"):
        read_payload(b"\x80\x04\x95 pickled things")


@pytest.mark.parametrize(
    "header_changes, array_changes, reason",
    [
        ({"format_version": FORMAT_VERSION + 1}, {}, "format_version=2 is not supported"),
        ({"feature_schema_hash": "0" * 64}, {}, "does not match its features"),
        ({"objective": "multi:softmax"}, {}, "objective='multi:softmax'"),
        ({"precision": "fp8"}, {}, "precision='fp8'"),
        ({"n_trees": 3}, {}, "tree_offsets"),
        ({}, {"left_child": np.array([1, 3, -1, -1, -1, 0, -1, -1], dtype=np.int16)}, "cycle"),
        ({}, {"left_child": np.array([1, 7, -1, -1, -1, 1, -1, -1], dtype=np.int16)}, "outside its tree"),
        ({}, {"split_feature": np.array([0, 9, -1, -1, -1, 1, -1, -1], dtype=np.int16)}, "split_feature"),
        ({}, {"leaf_value": np.zeros(5, dtype=np.float64)}, "'leaf_value' has dtype float64"),
        ({}, {"threshold_index": np.full(8, 7, dtype=np.uint8)}, "threshold_index"),
        ({}, {"extra": np.zeros(1)}, "unknown arrays"),
    ],
)
def test_inconsistent_content_is_refused_with_reason(header_changes, array_changes, reason):
    with pytest.raises(ValueError, match=reason):
        read_payload(rewrite(write(), header_changes, **array_changes))


def test_missing_header_is_refused():
    buffer = io.BytesIO()
    np.savez(buffer, tree_offsets=np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="no 'header'"):
        read_payload(buffer.getvalue())


def test_device_modules_do_not_import_xgboost():
    code = "import sys; import edgeloop.model_runtime.scorer; assert 'xgboost' not in sys.modules, 'xgboost imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
