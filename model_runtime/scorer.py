"""Device-side scoring of weight-only payloads with numpy alone.

Trees are evaluated exactly as XGBoost does in float32: inputs are rounded to float32, a node sends
x left when `x < threshold` and sends NaN along its default direction, and tree outputs are added
one tree at a time in float32 starting from base_score. That order matters: a pairwise `sum` gives
different bits, `np.add.accumulate` along the tree axis keeps the sequential order.

Tree ensembles are scored with bitvectors in the style of QuickScorer (bitvector.py). When its
tables would outgrow a memory budget (deep trees times many thresholds), or many features make the
AND costlier than walking shallow trees, a level-by-level traversal of all trees is used instead
(level_traversal.py); both are bit-exact.
"""

from __future__ import annotations

import hashlib

import numpy as np

from edgeloop.schemas.model import ModelFamily, Precision

from .bitvector import BitvectorEvaluator, FeatureThresholds, LeafLayout
from .decision import classify_levels
from .label_mode import LabelMode, current_index, level_from_change
from .level_traversal import LevelEvaluator
from .linear_format import LinearModel, decode_linear
from .model_format import Objective, read_payload
from .tree_format import TreeEnsemble, decode_trees

# Above this many bytes of bitvector tables the level-by-level traversal is used: slower, but its
# memory grows with the node count only, not with nodes x thresholds.
BITVECTOR_TABLE_BUDGET_BYTES = 32 << 20
# Measured (1 thread, 10k rows): an AND of one feature's words costs about 1/9 of one level step over
# all trees, so with many features and shallow trees the level traversal is as fast and much smaller.
BITVECTOR_WORK_RATIO = 9
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
        self._logistic = self.objective == Objective.BINARY_LOGISTIC  # checked once, not on every live row
        self.family = ModelFamily(header["family"])
        self._base_score = np.float32(header["base_score"])
        self._n_features = len(self.features)
        # change mode: the model predicts future minus now; predictions add the current value back
        self.label_mode = LabelMode(header.get("label_mode", LabelMode.LEVEL.value))
        self._current: int | None = None
        if self.label_mode == LabelMode.CHANGE:
            self._current = current_index(self.features, header["current_feature"])
        # the line's violation decision margin (decision.py); payloads without it decide at the limits
        self.decision_margin: float = float(header.get("decision_margin", 0.0))
        if isinstance(model, TreeEnsemble):
            self._margin = tree_evaluator(model, self._base_score)
        else:
            self._margin = _LinearEvaluator(model, self._base_score)

    def __repr__(self) -> str:
        return f"Scorer({self.model_id} {self.version} {self.precision.value}, {self._n_features} features)"

    def predict(self, X: np.ndarray) -> np.ndarray:
        """float32 (n,) level predictions for X of shape (n, n_features) in `features` order."""
        X = np.ascontiguousarray(X, dtype=np.float32)  # XGBoost also rounds inputs to float32
        if X.ndim != 2 or X.shape[1] != self._n_features:
            raise ValueError(
                f"X has shape {X.shape}; expected (n_rows, {self._n_features}) for features {self.features}"
            )
        if X.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        output = self._transform(self._margin.batch(X))
        return output if self._current is None else level_from_change(output, X[:, self._current])

    def predict_one(self, x: np.ndarray) -> float:
        """Prediction for one feature vector (n_features,): no batch bookkeeping, for live scoring."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != (self._n_features,):
            raise ValueError(f"x has shape {x.shape}; expected ({self._n_features},) for features {self.features}")
        output = self._transform(self._margin.one(x))
        return float(output if self._current is None else level_from_change(output, x[self._current]))

    def classify(self, level, lower, upper):
        """ViolationClass value(s) of level prediction(s) against the spec limits at this model's decision
        margin: a str for a scalar level, else a numpy str array (decision.classify_levels)."""
        classes = classify_levels(level, lower, upper, self.decision_margin)
        return str(classes) if classes.ndim == 0 else classes

    def _transform(self, margin):
        if self._logistic:
            # XGBoost computes 1 / (expf(min(-m, 88.7f)) + 1) in float32 (the clamp keeps expf finite).
            # Neither numpy's float32 exp nor float64 exp rounded to float32 always gives glibc's
            # expf bits (1 ulp apart now and then), so glibc's algorithm is reproduced here.
            one = np.float32(1.0)
            exponent = np.minimum(-np.asarray(margin, dtype=np.float32), _SIGMOID_CLAMP)
            return one / (glibc_expf(exponent) + one)
        return margin


# glibc's expf (sysdeps/ieee754/flt-32/e_expf.c, from Arm Optimized Routines), step by step in float64:
# x * 32 / ln2 = k + r, exp(x) = 2^(k/32) * 2^(r/32), 2^(k/32) from a 32-entry table whose entries
# have (i << 47) subtracted so adding k << 47 also sets the exponent, 2^(r/32) by a cubic.
# fmt: off
_EXP2F_TABLE = np.array(
    [
        0x3FF0000000000000, 0x3FEFD9B0D3158574, 0x3FEFB5586CF9890F, 0x3FEF9301D0125B51,
        0x3FEF72B83C7D517B, 0x3FEF54873168B9AA, 0x3FEF387A6E756238, 0x3FEF1E9DF51FDEE1,
        0x3FEF06FE0A31B715, 0x3FEEF1A7373AA9CB, 0x3FEEDEA64C123422, 0x3FEECE086061892D,
        0x3FEEBFDAD5362A27, 0x3FEEB42B569D4F82, 0x3FEEAB07DD485429, 0x3FEEA47EB03A5585,
        0x3FEEA09E667F3BCD, 0x3FEE9F75E8EC5F74, 0x3FEEA11473EB0187, 0x3FEEA589994CCE13,
        0x3FEEACE5422AA0DB, 0x3FEEB737B0CDC5E5, 0x3FEEC49182A3F090, 0x3FEED503B23E255D,
        0x3FEEE89F995AD3AD, 0x3FEEFF76F2FB5E47, 0x3FEF199BDD85529C, 0x3FEF3720DCEF9069,
        0x3FEF5818DCFBA487, 0x3FEF7C97337B9B5F, 0x3FEFA4AFA2A490DA, 0x3FEFD0765B6E4540,
    ],
    dtype=np.uint64,
)
# fmt: on
_EXP2F_N = 32
_EXP2F_INDEX_SHIFT = np.uint64(52 - 5)
_EXPF_INV_LN2_N = float.fromhex("0x1.71547652b82fep+0") * _EXP2F_N
_EXPF_ROUNDING_SHIFT = float.fromhex("0x1.8p+52")  # adding it rounds to an integer, ties to even
_EXPF_POLY = (
    float.fromhex("0x1.c6af84b912394p-5") / _EXP2F_N**3,
    float.fromhex("0x1.ebfce50fac4f3p-3") / _EXP2F_N**2,
    float.fromhex("0x1.62e42ff0c52d6p-1") / _EXP2F_N,
)
_EXPF_UNDERFLOW = float.fromhex("-0x1.9fe368p6")  # below log(2^-150) the result rounds to 0


def glibc_expf(x: np.ndarray) -> np.ndarray:
    """expf of float32 x, bit for bit what glibc returns, for x <= 88.7 (no overflow handling needed)."""
    xd = np.asarray(x, dtype=np.float32).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # -inf and NaN give NaN here; the where fixes -inf
        z = _EXPF_INV_LN2_N * xd
        k_shifted = z + _EXPF_ROUNDING_SHIFT
        k_bits = k_shifted.view(np.uint64)
        r = z - (k_shifted - _EXPF_ROUNDING_SHIFT)
        scale = (_EXP2F_TABLE[k_bits % np.uint64(_EXP2F_N)] + (k_bits << _EXP2F_INDEX_SHIFT)).view(np.float64)
        c0, c1, c2 = _EXPF_POLY
        y = (c0 * r + c1) * (r * r) + (c2 * r + 1.0)
        return np.where(xd < _EXPF_UNDERFLOW, 0.0, y * scale).astype(np.float32)


def tree_evaluator(trees: TreeEnsemble, base_score: np.float32) -> BitvectorEvaluator | LevelEvaluator:
    """The bitvector evaluator when its tables fit the memory budget, else the level traversal."""
    layout = LeafLayout.of(trees)
    thresholds = FeatureThresholds.of(trees)
    has_splits = len(thresholds.features) > 0  # a model of single-leaf trees has nothing to bin
    fits = thresholds.table_rows * layout.n_words * 8 <= BITVECTOR_TABLE_BUDGET_BYTES
    # per row, the bitvector path ANDs (used features x words) and the level path makes (depth x trees) steps
    bitvector_work = len(thresholds.features) * layout.n_words
    level_work = BITVECTOR_WORK_RATIO * trees.max_depth * trees.n_trees
    if has_splits and fits and bitvector_work <= level_work:
        return BitvectorEvaluator(trees, base_score, layout, thresholds)
    return LevelEvaluator(trees, base_score)


class _LinearEvaluator:
    """XGBoost gblinear order: bias + base, then each present feature's x * w in feature order.

    A standardized model (feature_center/feature_scale) uses (x - center) / scale instead of x, in
    float32; a missing x contributes nothing either way."""

    def __init__(self, model: LinearModel, base_score: np.float32):
        self._weights = model.weights.astype(np.float32)
        self._start = np.float32(np.float32(model.bias) + base_score)
        self._center = model.feature_center
        self._scale = model.feature_scale

    def batch(self, X: np.ndarray) -> np.ndarray:
        if self._center is not None:
            X = (X - self._center) / self._scale
        terms = np.where(np.isnan(X), np.float32(0), X * self._weights)
        start = np.full((X.shape[0], 1), self._start, dtype=np.float32)
        return np.cumsum(np.concatenate([start, terms], axis=1), axis=1, dtype=np.float32)[:, -1]

    def one(self, x: np.ndarray) -> np.float32:
        return self.batch(x[None, :])[0]
