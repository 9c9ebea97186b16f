"""Device scorer vs XGBoost on the same model in the same run (BRIEF reference model).

200 trees of depth 6 on 12 features, one thread, 10k-row batches. Reports batch throughput of
the numpy scorer and of `Booster.inplace_predict`, their ratio, single-row latency, and payload
bytes of the weight-only fp32 tier against XGBoost's own UBJ serialization.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import xgboost as xgb

from edgeloop.greengrass_components.model_runner.scorer import load_payload
from edgeloop.sagemaker_pipelines.steps.export import payload_from_booster

N_TREES, DEPTH, N_FEATURES, BATCH_ROWS = 200, 6, 12, 10_000


def _reference_model(rng: np.random.Generator) -> tuple[xgb.Booster, list[str]]:
    X = rng.normal(size=(20_000, N_FEATURES)).astype(np.float32)
    y = X @ rng.normal(size=N_FEATURES) + np.sin(3 * X[:, 0]) + rng.normal(scale=0.1, size=len(X))
    features = [f"f{i}" for i in range(N_FEATURES)]
    params = {"max_depth": DEPTH, "eta": 0.1, "nthread": 1, "objective": "reg:squarederror", "max_bin": 256}
    booster = xgb.train(params, xgb.DMatrix(X, label=y, feature_names=features), num_boost_round=N_TREES)
    return booster, features


def _rows_per_s(predict, X: np.ndarray, repeats: int = 5) -> float:
    predict(X)  # warm-up
    best = min(_timed(predict, X) for _ in range(repeats))
    return len(X) / best


def _timed(predict, X) -> float:
    start = time.perf_counter()
    predict(X)
    return time.perf_counter() - start


def _single_row_us(scorer, X: np.ndarray) -> float:
    rows = X[:2000]
    for row in rows[:100]:
        scorer.predict_one(row)
    start = time.perf_counter()
    for row in rows:
        scorer.predict_one(row)
    return (time.perf_counter() - start) / len(rows) * 1e6


def run() -> dict[str, tuple[float, str]]:
    rng = np.random.default_rng(0)
    booster, features = _reference_model(rng)
    payload = payload_from_booster(booster, model_id="bench", version="1.0.0", features=features)
    scorer = load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())
    X = rng.normal(size=(BATCH_ROWS, N_FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.02] = np.nan
    exact = np.array_equal(scorer.predict(X), booster.inplace_predict(X).astype(np.float32))
    if not exact:
        raise AssertionError("the numpy scorer is not bit-exact with xgboost on the benchmark model")
    scorer_rate = _rows_per_s(scorer.predict, X)
    xgboost_rate = _rows_per_s(booster.inplace_predict, X)
    ubj_bytes = len(booster.save_raw(raw_format="ubj"))
    return {
        "scorer.batch_rows_per_s": (scorer_rate, "rows/s"),
        "scorer.xgboost_rows_per_s": (xgboost_rate, "rows/s"),
        "scorer.batch_ratio_vs_xgboost": (scorer_rate / xgboost_rate, "ratio"),
        "scorer.single_row_us": (_single_row_us(scorer, X), "us"),
        "payload.fp32_bytes": (float(len(payload)), "bytes"),
        "payload.xgboost_ubj_bytes": (float(ubj_bytes), "bytes"),
        "payload.fp32_ratio_vs_ubj": (len(payload) / ubj_bytes, "ratio"),
    }
