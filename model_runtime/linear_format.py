"""Linear models (family "linear") in the weight-only payload: arrays, encoding, checks, decoding.

Stored arrays: weights float32 (n_features,), bias float32 (1,), and for models trained on
standardized features (e.g. lasso) optionally feature_center and feature_scale float32
(n_features,): x is used as (x - center) / scale. Without them x is used as is (XGBoost gblinear).

The container, the header and the format versions are in model_format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .payload_checks import expect_array, reject_unknown

_LINEAR_ARRAYS = {
    "weights": "float32 (n_features,): margin = base_score + bias + sum(w * x) over present x",
    "bias": "float32 (1,)",
    "feature_center": "optional float32 (n_features,): subtracted from x before the weights",
    "feature_scale": "optional float32 (n_features,): x - center is divided by it (all > 0)",
}
_LINEAR_SCALING = ("feature_center", "feature_scale")


@dataclass(frozen=True)
class LinearModel:
    """Decoded linear weights (see the module docstring)."""

    weights: np.ndarray  # float32 (n_features,)
    bias: float
    # standardization the weights were fitted on: x -> (x - center) / scale; None: x as is
    feature_center: np.ndarray | None = None
    feature_scale: np.ndarray | None = None


def encode_linear(model: LinearModel, n_features: int) -> tuple[dict, dict]:
    """The arrays to store and the header fields (arrays) of `model`."""
    weights = np.asarray(model.weights, dtype=np.float32)
    if weights.shape != (n_features,):
        raise ValueError(f"weights has shape {weights.shape}, expected ({n_features},)")
    arrays = {"weights": weights, "bias": np.array([model.bias], dtype=np.float32)}
    if (model.feature_center is None) != (model.feature_scale is None):
        raise ValueError("feature_center and feature_scale come together (standardization needs both)")
    if model.feature_center is not None:
        for name in _LINEAR_SCALING:
            values = np.asarray(getattr(model, name), dtype=np.float32)
            if values.shape != (n_features,):
                raise ValueError(f"{name} has shape {values.shape}, expected ({n_features},)")
            arrays[name] = values
    return arrays, {"arrays": _LINEAR_ARRAYS}


def validate_linear_arrays(header: dict, arrays: dict) -> None:
    """Refuse linear arrays that are missing, unknown, mistyped or not finite, and scales that are not > 0."""
    reject_unknown(arrays, set(_LINEAR_ARRAYS))
    expect_array(arrays, "weights", (np.float32,), (header["n_features"],))
    expect_array(arrays, "bias", (np.float32,), (1,))
    if not np.isfinite(arrays["weights"]).all() or not np.isfinite(arrays["bias"]).all():
        raise ValueError("linear weights or bias are not finite")
    present = [name for name in _LINEAR_SCALING if name in arrays]
    if present and len(present) != len(_LINEAR_SCALING):
        raise ValueError(f"linear scaling needs both {list(_LINEAR_SCALING)}, the payload has only {present}")
    for name in present:
        expect_array(arrays, name, (np.float32,), (header["n_features"],))
        if not np.isfinite(arrays[name]).all():
            raise ValueError(f"{name} is not finite")
    if present and not (arrays["feature_scale"] > 0).all():
        bad = int(np.flatnonzero(~(arrays["feature_scale"] > 0))[0])
        raise ValueError(f"feature_scale[{bad}]={arrays['feature_scale'][bad]} must be > 0")


def decode_linear(arrays: dict[str, np.ndarray]) -> LinearModel:
    scaling = {name: arrays[name].astype(np.float32) for name in _LINEAR_SCALING if name in arrays}
    return LinearModel(weights=arrays["weights"].astype(np.float32), bias=float(arrays["bias"][0]), **scaling)
