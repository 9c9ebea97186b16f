"""Device scorer vs XGBoost and onnxruntime on the same model in the same run (BRIEF reference model).

200 trees of depth 6 on 12 features, one thread, 10k-row batches. Reports batch throughput of the
numpy scorer, of `Booster.inplace_predict` and of onnxruntime (the booster converted with
onnxmltools), ratios against both, single-row latency, and payload bytes and measured error of
every weight-only tier against XGBoost's own UBJ serialization and the ONNX model.

Before timing anything it checks that each runtime computes the same model: the fp32 payload
bit-exact with XGBoost, onnxruntime within float32 rounding of it, every lossy tier within its
export bound. The scorer's throughput is measured on the fp32 payload; the other tiers dequantize
to the same float32 arrays at load, so they score at the same speed.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import xgboost as xgb

from edgeloop.model_runtime.scorer import Scorer, load_payload
from edgeloop.sagemaker_pipelines.steps.export import TIERS, payload_from_booster
from edgeloop.schemas.model import Precision

N_TREES, DEPTH, N_FEATURES, BATCH_ROWS = 200, 6, 12, 10_000
ONNX_INPUT = "input"


def _reference_model(rng: np.random.Generator) -> tuple[xgb.Booster, list[str], float]:
    """The booster, its feature names and the std of its training target (the tiers' error unit)."""
    X = rng.normal(size=(20_000, N_FEATURES)).astype(np.float32)
    y = X @ rng.normal(size=N_FEATURES) + np.sin(3 * X[:, 0]) + rng.normal(scale=0.1, size=len(X))
    features = [f"f{i}" for i in range(N_FEATURES)]
    params = {"max_depth": DEPTH, "eta": 0.1, "nthread": 1, "objective": "reg:squarederror", "max_bin": 256}
    booster = xgb.train(params, xgb.DMatrix(X, label=y, feature_names=features), num_boost_round=N_TREES)
    return booster, features, float(np.std(y))


def _rows_per_s(predict, X: np.ndarray, repeats: int = 5) -> float:
    predict(X)  # warm-up
    best = min(_timed(predict, X) for _ in range(repeats))
    return len(X) / best


def _timed(predict, X) -> float:
    start = time.perf_counter()
    predict(X)
    return time.perf_counter() - start


def _single_row_us(scorer: Scorer, X: np.ndarray, repeats: int = 5) -> float:
    """Mean latency over 2000 different rows, best of `repeats` passes (like the batch figures:
    the least disturbed pass on a shared machine)."""
    rows = X[:2000]
    for row in rows[:100]:
        scorer.predict_one(row)
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for row in rows:
            scorer.predict_one(row)
        passes.append((time.perf_counter() - start) / len(rows) * 1e6)
    return min(passes)


def _max_abs_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())


# --- onnxruntime ---------------------------------------------------------------------------------


def _onnx_model(booster: xgb.Booster) -> bytes:
    # imported here: the converters are bench-only dependencies, never on the device path
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = onnxmltools.convert_xgboost(booster, initial_types=[(ONNX_INPUT, FloatTensorType([None, N_FEATURES]))])
    return model.SerializeToString()


def _onnx_predict(onnx_bytes: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the same single core the scorer and xgboost get
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return lambda X: session.run(None, {ONNX_INPUT: X})[0].ravel()


def _check_onnx_is_the_same_model(onnx_out: np.ndarray, expected: np.ndarray) -> None:
    """onnxruntime adds the trees in its own order: allow float32 rounding of a sum of N_TREES terms."""
    tolerance = N_TREES * np.finfo(np.float32).eps * max(1.0, float(np.abs(expected).max()))
    error = _max_abs_error(onnx_out, expected)
    if not error <= tolerance:
        raise AssertionError(f"onnxruntime differs from xgboost by {error:.3g} (> {tolerance:.3g}): not the same model")


# --- payload tiers -------------------------------------------------------------------------------


def _tier_results(
    booster: xgb.Booster, features: list[str], X: np.ndarray, expected: np.ndarray, target_std: float
) -> tuple[dict[Precision, bytes], dict[str, tuple[float, str]]]:
    payloads, results = {}, {}
    for precision, spec in TIERS.items():
        payload = payload_from_booster(
            booster, model_id="bench", version="1.0.0", features=features, precision=precision
        )
        scorer = load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())
        error = _max_abs_error(scorer.predict(X), expected)
        bound = spec.max_error_per_target_std * target_std
        if not error <= bound:
            raise AssertionError(f"{precision.value} tier: max_abs_error={error!r} exceeds its bound {bound!r}")
        name = precision.value.replace("-", "_")
        results[f"payload.{name}_bytes"] = (float(len(payload)), "bytes")
        results[f"payload.{name}_max_abs_error"] = (error, "abs")
        results[f"payload.{name}_error_per_target_std"] = (error / target_std, "ratio")
        payloads[precision] = payload
    return payloads, results


def run() -> dict[str, tuple[float, str]]:
    rng = np.random.default_rng(0)
    booster, features, target_std = _reference_model(rng)
    X = rng.normal(size=(BATCH_ROWS, N_FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.02] = np.nan
    expected = booster.inplace_predict(X).astype(np.float32)

    payloads, tier_results = _tier_results(booster, features, X, expected, target_std)
    fp32 = payloads[Precision.FP32]
    scorer = load_payload(fp32, expected_sha256=hashlib.sha256(fp32).hexdigest())
    if not np.array_equal(scorer.predict(X), expected):
        raise AssertionError("the numpy scorer is not bit-exact with xgboost on the benchmark model")
    onnx_bytes = _onnx_model(booster)
    onnx_predict = _onnx_predict(onnx_bytes)
    _check_onnx_is_the_same_model(onnx_predict(X), expected)

    scorer_rate = _rows_per_s(scorer.predict, X)
    xgboost_rate = _rows_per_s(booster.inplace_predict, X)
    onnx_rate = _rows_per_s(onnx_predict, X)
    ubj_bytes = len(booster.save_raw(raw_format="ubj"))
    smallest = min(payloads, key=lambda p: len(payloads[p]))
    smallest_bytes = len(payloads[smallest])
    return {
        "scorer.batch_rows_per_s": (scorer_rate, "rows/s"),
        "scorer.xgboost_rows_per_s": (xgboost_rate, "rows/s"),
        "scorer.onnxruntime_rows_per_s": (onnx_rate, "rows/s"),
        "scorer.batch_ratio_vs_xgboost": (scorer_rate / xgboost_rate, "ratio"),
        "scorer.batch_ratio_vs_onnxruntime": (scorer_rate / onnx_rate, "ratio"),
        "scorer.single_row_us": (_single_row_us(scorer, X), "us"),
        **tier_results,
        "payload.xgboost_ubj_bytes": (float(ubj_bytes), "bytes"),
        "payload.onnx_bytes": (float(len(onnx_bytes)), "bytes"),
        "payload.fp32_ratio_vs_ubj": (len(fp32) / ubj_bytes, "ratio"),
        "payload.smallest_tier_bytes": (float(smallest_bytes), "bytes"),
        "payload.smallest_tier_ratio_vs_onnx": (smallest_bytes / len(onnx_bytes), "ratio"),
        "payload.smallest_tier_ratio_vs_ubj": (smallest_bytes / ubj_bytes, "ratio"),
        "payload.smallest_tier_error_per_target_std": tier_results[
            f"payload.{smallest.value.replace('-', '_')}_error_per_target_std"
        ],
    }
