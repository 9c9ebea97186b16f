"""Device-side scoring of weight-only payloads with numpy alone.

Trees are evaluated exactly as XGBoost does in float32: inputs are rounded to float32, a node sends
x left when `x < threshold` and sends NaN along its default direction, and tree outputs are added
one tree at a time in float32 starting from base_score. That order matters: a pairwise `sum` gives
different bits, `np.cumsum` along the tree axis keeps the sequential order.
"""

from __future__ import annotations

import hashlib

import numpy as np

from edgeloop.schemas.model import ModelFamily, Precision

from .model_format import LinearModel, Objective, TreeEnsemble, decode_linear, decode_trees, read_payload

# Rows per traversal chunk: bounds the (rows x trees) index arrays to a few MB on small gateways.
_CHUNK_ROWS = 4096
_SIGMOID_CLAMP = np.float32(88.7)


class PayloadRejected(Exception):
    """A payload the device must not load; `reason` says why (it goes into the status report)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def load_payload(data: bytes, *, expected_sha256: str, expected_feature_schema_hash: str | None = None) -> Scorer:
    """Verify the payload's digest before parsing anything, then its format and feature layout."""
    actual_sha256 = hashlib.sha256(data).hexdigest()
    if actual_sha256 != expected_sha256.lower():
        raise PayloadRejected(f"sha256 mismatch: payload is {actual_sha256}, expected {expected_sha256}")
    try:
        header, arrays = read_payload(data)
        model = decode_trees(header, arrays) if header["family"] == ModelFamily.XGBOOST else decode_linear(arrays)
    except ValueError as exc:
        raise PayloadRejected(f"malformed payload: {exc}") from exc
    if expected_feature_schema_hash is not None and header["feature_schema_hash"] != expected_feature_schema_hash:
        raise PayloadRejected(
            f"feature schema mismatch: payload expects {header['feature_schema_hash']} "
            f"(features {header['features']}), device provides {expected_feature_schema_hash}"
        )
    return Scorer(header, model)


class Scorer:
    """A loaded model. `predict` scores a batch, `predict_one` a single feature vector."""

    def __init__(self, header: dict, model: TreeEnsemble | LinearModel):
        self.header = header
        self.model_id: str = header["model_id"]
        self.version: str = header["version"]
        self.features: list[str] = list(header["features"])
        self.feature_schema_hash: str = header["feature_schema_hash"]
        self.precision = Precision(header["precision"])
        self.objective = Objective(header["objective"])
        self.family = ModelFamily(header["family"])
        self._base_score = np.float32(header["base_score"])
        self._n_features = len(self.features)
        if isinstance(model, TreeEnsemble):
            self._margin = _TreeEvaluator(model, self._base_score, self._n_features)
        else:
            self._margin = _LinearEvaluator(model, self._base_score)

    def __repr__(self) -> str:
        return f"Scorer({self.model_id} {self.version} {self.precision.value}, {self._n_features} features)"

    def predict(self, X: np.ndarray) -> np.ndarray:
        """float32 (n,) predictions for X of shape (n, n_features) in `features` order."""
        X = np.ascontiguousarray(X, dtype=np.float32)  # XGBoost also rounds inputs to float32
        if X.ndim != 2 or X.shape[1] != self._n_features:
            raise ValueError(
                f"X has shape {X.shape}; expected (n_rows, {self._n_features}) for features {self.features}"
            )
        if X.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        margin = np.concatenate(
            [self._margin.batch(X[start : start + _CHUNK_ROWS]) for start in range(0, X.shape[0], _CHUNK_ROWS)]
        )
        return self._transform(margin)

    def predict_one(self, x: np.ndarray) -> float:
        """Prediction for one feature vector (n_features,): no batch bookkeeping, for live scoring."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != (self._n_features,):
            raise ValueError(f"x has shape {x.shape}; expected ({self._n_features},) for features {self.features}")
        return float(self._transform(self._margin.one(x)))

    def _transform(self, margin):
        if self.objective == Objective.BINARY_LOGISTIC:
            # XGBoost computes 1 / (expf(min(-m, 88.7f)) + 1) in float32 (the clamp keeps expf finite).
            # glibc's expf is correctly rounded; numpy's float32 exp is not always, while float64
            # exp rounded to float32 matches it.
            one = np.float32(1.0)
            exponent = np.minimum(-np.asarray(margin, dtype=np.float32), _SIGMOID_CLAMP)
            return one / (np.exp(exponent.astype(np.float64)).astype(np.float32) + one)
        return margin


class _TreeEvaluator:
    """Level-by-level traversal of all trees at once: one gather per level over (rows x trees).

    Leaves point to themselves, so every row can take `max_depth` steps without a per-tree stop.
    """

    def __init__(self, trees: TreeEnsemble, base_score: np.float32, n_features: int):
        starts = np.repeat(trees.tree_offsets[:-1], np.diff(trees.tree_offsets))
        own = np.arange(len(starts))
        leaf = trees.is_leaf
        # children[2 * node] is the left child, children[2 * node + 1] the right one (global ids)
        self._children = (
            np.stack(
                [np.where(leaf, own, trees.left_child + starts), np.where(leaf, own, trees.right_child + starts)],
                axis=1,
            )
            .astype(np.int32)
            .ravel()
        )
        self._feature = np.where(leaf, 0, trees.split_feature).astype(np.int32)
        self._threshold = trees.threshold  # NaN on leaves: `x < NaN` is False, and leaves loop anyway
        self._default_left = trees.default_left & ~leaf
        self._leaf_value = trees.leaf_value
        self._roots = trees.tree_offsets[:-1].astype(np.int32)
        self._depth = trees.max_depth
        self._base = base_score
        self._n_features = n_features

    def _step(self, node: np.ndarray, x: np.ndarray) -> np.ndarray:
        go_left = x < self._threshold[node]
        go_left |= np.isnan(x) & self._default_left[node]
        return self._children[2 * node + (~go_left)]

    def batch(self, X: np.ndarray) -> np.ndarray:
        n_rows = X.shape[0]
        flat = X.ravel()
        row_start = (np.arange(n_rows, dtype=np.int32) * self._n_features)[:, None]
        node = np.broadcast_to(self._roots, (n_rows, len(self._roots)))
        for _ in range(self._depth):
            node = self._step(node, flat[row_start + self._feature[node]])
        return self._accumulate(self._leaf_value[node])

    def one(self, x: np.ndarray) -> np.float32:
        node = self._roots
        for _ in range(self._depth):
            node = self._step(node, x[self._feature[node]])
        return self._accumulate(self._leaf_value[node][None, :])[0]

    def _accumulate(self, leaf_values: np.ndarray) -> np.ndarray:
        """base + tree 0 + tree 1 + ... in float32, in that order (what XGBoost computes)."""
        base = np.full((leaf_values.shape[0], 1), self._base, dtype=np.float32)
        return np.cumsum(np.concatenate([base, leaf_values], axis=1), axis=1, dtype=np.float32)[:, -1]


class _LinearEvaluator:
    """XGBoost gblinear order: bias + base, then each present feature's x * w in feature order."""

    def __init__(self, model: LinearModel, base_score: np.float32):
        self._weights = model.weights.astype(np.float32)
        self._start = np.float32(np.float32(model.bias) + base_score)

    def batch(self, X: np.ndarray) -> np.ndarray:
        terms = np.where(np.isnan(X), np.float32(0), X * self._weights)
        start = np.full((X.shape[0], 1), self._start, dtype=np.float32)
        return np.cumsum(np.concatenate([start, terms], axis=1), axis=1, dtype=np.float32)[:, -1]

    def one(self, x: np.ndarray) -> np.float32:
        return self.batch(x[None, :])[0]
