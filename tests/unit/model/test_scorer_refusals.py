"""A device refuses payloads it cannot trust or cannot feed, and says why."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgeloop.model_runtime.model_format import write_payload
from edgeloop.model_runtime.scorer import PayloadRejected, Scorer, load_payload
from edgeloop.model_runtime.tree_format import TreeEnsemble
from edgeloop.schemas.model import feature_schema_hash

FEATURES = ["speed__mean", "temp_die__last"]


def stump_payload(features: list[str] = FEATURES) -> bytes:
    trees = TreeEnsemble(
        tree_offsets=np.array([0, 3]),
        split_feature=np.array([1, -1, -1]),
        threshold=np.array([200.0, np.nan, np.nan], dtype=np.float32),
        left_child=np.array([1, -1, -1]),
        right_child=np.array([2, -1, -1]),
        default_left=np.array([False, False, False]),
        leaf_value=np.array([0.0, -0.5, 0.5], dtype=np.float32),
    )
    return write_payload(
        trees,
        model_id="line-1-model",
        version="2.0.1",
        objective="reg:squarederror",
        base_score=10.0,
        features=features,
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_verified_payload_loads_and_scores():
    payload = stump_payload()
    schema_hash = feature_schema_hash(FEATURES)
    scorer = load_payload(payload, expected_sha256=sha256(payload), expected_feature_schema_hash=schema_hash)
    assert isinstance(scorer, Scorer)
    assert (scorer.model_id, scorer.version, scorer.features) == ("line-1-model", "2.0.1", FEATURES)
    assert scorer.feature_schema_hash == feature_schema_hash(FEATURES) and scorer.precision == "fp32"
    np.testing.assert_array_equal(scorer.predict(np.array([[0, 100.0], [0, 300.0], [0, np.nan]])), [9.5, 10.5, 10.5])
    assert scorer.predict_one(np.array([1.0, 150.0])) == 9.5


def test_wrong_sha256_is_refused_before_parsing():
    payload = stump_payload()
    with pytest.raises(PayloadRejected) as caught:
        load_payload(payload, expected_sha256="0" * 64)
    assert "sha256 mismatch" in caught.value.reason and sha256(payload) in caught.value.reason


def test_tampered_bytes_fail_the_digest():
    payload = bytearray(stump_payload())
    expected = sha256(bytes(payload))
    payload[-20] ^= 0xFF
    with pytest.raises(PayloadRejected, match="sha256 mismatch"):
        load_payload(bytes(payload), expected_sha256=expected)


def test_wrong_feature_schema_is_refused():
    payload = stump_payload()
    device_hash = feature_schema_hash(list(reversed(FEATURES)))  # same names, other order
    with pytest.raises(PayloadRejected) as caught:
        load_payload(payload, expected_sha256=sha256(payload), expected_feature_schema_hash=device_hash)
    assert "feature schema mismatch" in caught.value.reason and device_hash in caught.value.reason


def test_truncated_payload_with_matching_digest_is_refused_as_malformed():
    truncated = stump_payload()[:-40]  # e.g. an interrupted download whose digest was computed locally
    with pytest.raises(PayloadRejected) as caught:
        load_payload(truncated, expected_sha256=sha256(truncated))
    assert caught.value.reason.startswith("malformed payload:")


def test_non_payload_bytes_are_refused_as_malformed():
    data = b'{"not": "a model"}'
    with pytest.raises(PayloadRejected, match="malformed payload: payload is not an npz container"):
        load_payload(data, expected_sha256=sha256(data))
