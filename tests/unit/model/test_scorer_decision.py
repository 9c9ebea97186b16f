"""The violation decision rule (model_runtime/decision.py), the payload's decision_margin, the device
Scorer's classify, and the runtime a payload needs (model_format.min_runtime_version)."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest

from edgeloop.model_runtime.decision import classify_levels
from edgeloop.model_runtime.linear_format import LinearModel
from edgeloop.model_runtime.model_format import (
    HEADER_ARRAY,
    PREDICTIVE_RUNTIME,
    RUNTIME_VERSION,
    min_runtime_version,
    read_payload,
    write_payload,
)
from edgeloop.model_runtime.scorer import PayloadRejected, load_payload
from edgeloop.schemas.common import semver_key
from edgeloop.schemas.model import Precision
from edgeloop.schemas.use_case import LabelMode

LSL, IN, USL = "lsl_violation", "in_range", "usl_violation"
FEATURES = ["od__mean", "od__last", "speed__slope"]


def payload(**options) -> bytes:
    model = LinearModel(weights=np.array([0.5, 0.5, 0.0], dtype=np.float32), bias=0.0)
    return write_payload(model, model_id="m", version="1.0.0", objective="reg:squarederror", base_score=0.0,
                         features=FEATURES, **options)  # fmt: skip


def scorer_of(data: bytes):
    return load_payload(data, expected_sha256=hashlib.sha256(data).hexdigest())


def with_header(data: bytes, **fields) -> bytes:
    """The payload with header fields replaced, arrays untouched."""
    with np.load(io.BytesIO(data)) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(arrays.pop(HEADER_ARRAY).tobytes())
    header.update(fields)
    buffer = io.BytesIO()
    raw = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez_compressed(buffer, **{HEADER_ARRAY: raw}, **arrays)
    return buffer.getvalue()


# --- the rule --------------------------------------------------------------------------------------


def test_margin_zero_flags_strict_crossings_of_the_limits_only():
    levels = np.array([0.99, 1.0, 1.5, 2.0, 2.01])
    assert list(classify_levels(levels, 1.0, 2.0)) == [LSL, IN, IN, IN, USL]


def test_a_margin_insets_both_limits_by_its_share_of_the_half_band():
    # band 1.0, half band 0.5, margin 0.2: thresholds 1.1 and 1.9 (strict)
    levels = np.array([1.09, 1.1, 1.5, 1.9, 1.91])
    assert list(classify_levels(levels, 1.0, 2.0, 0.2)) == [LSL, IN, IN, IN, USL]
    # per-row limits broadcast: the same level is a violation against one row's limits only
    assert list(classify_levels([1.95, 1.95], [1.0, 0.0], [2.0, 4.0], 0.2)) == [USL, IN]


def test_nan_levels_are_never_flagged_and_one_sided_limits_ignore_the_margin():
    assert list(classify_levels([np.nan], 1.0, 2.0, 0.5)) == [IN]
    # an infinite upper limit: the band is infinite, the lower limit is used as is
    assert list(classify_levels([0.9, 1.01, 1e9], 1.0, np.inf, 0.5)) == [LSL, IN, IN]


@pytest.mark.parametrize("margin", [-0.1, 1.0, float("nan"), float("inf"), True, "0.1"])
def test_a_bad_margin_is_refused_naming_it(margin):
    with pytest.raises(ValueError, match="decision_margin="):
        classify_levels([1.5], 1.0, 2.0, margin)


# --- the payload and the device scorer -------------------------------------------------------------


def test_the_margin_round_trips_through_the_payload_and_the_scorer_decides_at_it():
    scorer = scorer_of(payload(decision_margin=0.25))
    assert read_payload(payload(decision_margin=0.25))[0]["decision_margin"] == 0.25
    assert scorer.decision_margin == 0.25
    # thresholds 1.125 and 1.875
    assert scorer.classify(1.9, 1.0, 2.0) == USL and scorer.classify(1.8, 1.0, 2.0) == IN
    assert list(scorer.classify(np.array([1.1, 1.5, 1.88], dtype=np.float32), 1.0, 2.0)) == [LSL, IN, USL]


def test_a_payload_without_a_margin_decides_at_the_limits_and_keeps_its_bytes():
    assert "decision_margin" not in read_payload(payload())[0]
    assert payload() == payload(decision_margin=0.0)
    scorer = scorer_of(payload())
    assert scorer.decision_margin == 0.0 and scorer.classify(1.99, 1.0, 2.0) == IN


@pytest.mark.parametrize("margin", [-0.5, 1.0, 1e300, "0.2", [0.1], False])
def test_a_payload_with_a_bad_margin_is_rejected(margin):
    data = with_header(payload(decision_margin=0.1), decision_margin=margin)
    with pytest.raises(PayloadRejected, match="header decision_margin="):
        scorer_of(data)
    with pytest.raises(ValueError, match="decision_margin="):
        payload(decision_margin=1.0)


# --- the runtime a payload needs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "floor"),
    [(Precision.FP32, "1.0.0"), (Precision.FP16_LEAVES, "1.1.0"), (Precision.QUANTIZED, "1.2.0")],
)
def test_min_runtime_version_is_the_tier_floor_unless_the_payload_needs_the_predictive_runtime(precision, floor):
    base = {"precision": precision.value, "features": FEATURES}
    assert min_runtime_version(base) == floor
    assert min_runtime_version({**base, "label_mode": LabelMode.LEVEL.value, "decision_margin": 0.0}) == floor
    for needs in (
        {"label_mode": LabelMode.CHANGE.value},
        {"decision_margin": 0.05},
        {"features": [*FEATURES, "od__ewm_hl30"]},  # a stat beyond FEATURE_STATS: an extended feature
        {"features": ["od__w30__mean"]},  # parameterized names are extended even when they end in a stat
    ):
        assert min_runtime_version({**base, **needs}) == PREDICTIVE_RUNTIME, needs
    assert semver_key(PREDICTIVE_RUNTIME) <= semver_key(RUNTIME_VERSION)
