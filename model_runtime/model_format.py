"""The weight-only model payload: one `.npz` container, shared by export (cloud) and scorer (device).

A payload holds plain arrays plus a JSON header stored as a uint8 array under `header`. Nothing is
pickled, so a device can load a payload from an untrusted channel without executing code, and
the device needs numpy only (no xgboost).

Header fields: format, format_version, model_id, version, family, objective, base_score (margin
space: the value tree outputs are added to), features (ordered), feature_schema_hash, precision,
n_features, and for tree ensembles n_trees and threshold_encoding. `arrays` names each stored
array with its meaning, so a payload documents itself.

Tree ensembles (family "xgboost") are stored node by node, trees one after another:
  tree_offsets      int32 (n_trees + 1,)  first node of each tree, then the node count
  split_feature     int16|int32 (n_nodes,) feature index of the split, -1 on leaves
  left_child        int16|int32 (n_nodes,) child taken when x < threshold (index within the tree), -1 on leaves
  right_child       int16|int32 (n_nodes,) child taken otherwise, -1 on leaves
  default_left      uint8 (n_nodes,)       1 when a missing value (NaN) goes left
  leaf_value        float32|float16|int8 (n_leaves,) leaf outputs in node order (float16 for
                    fp16-leaves; int8 codes for quantized, see below)
and split thresholds, exact in float32 either way:
  threshold_encoding "table-uint8" / "table-uint16": threshold_table float32 (sorted distinct
    thresholds of feature 0, then feature 1, ...), threshold_table_offsets int32 (n_features + 1,),
    threshold_index uint8|uint16 (n_nodes,) index into the split feature's slice (0 on leaves);
  threshold_encoding "raw": threshold float32 (n_nodes,).
Linear models (family "linear"): weights float32 (n_features,), bias float32 (1,), and for models
trained on standardized features (e.g. lasso) optionally feature_center and feature_scale float32
(n_features,): x is used as (x - center) / scale. Without them x is used as is (XGBoost gblinear).

Quantized tree payloads (precision "quantized", format_version 2, runtime 1.2.0) store each leaf as
an int8 code q in [-127, 127] with a per-tree scale and offset (`leaf_scale`, `leaf_offset`, float32
(n_trees,)); the reader dequantizes at load, leaf = float32(float64(offset) + float64(scale) * q), so
the scorer sees the same float32 arrays as for the other tiers. fp32 and fp16-leaves payloads stay
format_version 1, readable by every runtime; a runtime that only knows version 1 refuses version 2
on its format_version check.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from edgeloop.schemas.model import MODEL_FORMAT_VERSION, ModelFamily, Precision, feature_schema_hash

FORMAT_NAME = "edgeloop-model"
FORMAT_VERSION = MODEL_FORMAT_VERSION  # fp32 and fp16-leaves payloads: every runtime reads them
QUANTIZED_FORMAT_VERSION = 2  # adds int8 leaves with a per-tree scale and offset
SUPPORTED_FORMAT_VERSIONS = (FORMAT_VERSION, QUANTIZED_FORMAT_VERSION)
# The device runtime this code is, as tiers name it in min_runtime_version: 1.0.0 read fp32,
# 1.1.0 added fp16-leaves, 1.2.0 the quantized tier. Provisioning and the recipes default to it.
RUNTIME_VERSION = "1.2.0"
HEADER_ARRAY = "header"
_ZIP_MAGIC = b"PK\x03\x04"

_INT16_MAX = np.iinfo(np.int16).max


class Objective(StrEnum):
    REG_SQUAREDERROR = "reg:squarederror"
    BINARY_LOGISTIC = "binary:logistic"


class ThresholdEncoding(StrEnum):
    TABLE_UINT8 = "table-uint8"
    TABLE_UINT16 = "table-uint16"
    RAW = "raw"


# Leaf storage per precision tier, and the format version each tier is written in (the lowest
# that can hold it, so older runtimes keep reading the tiers they always could).
_LEAF_DTYPES = {
    Precision.FP32: np.dtype(np.float32),
    Precision.FP16_LEAVES: np.dtype(np.float16),
    Precision.QUANTIZED: np.dtype(np.int8),
}
_PRECISION_FORMAT_VERSION = {
    Precision.FP32: FORMAT_VERSION,
    Precision.FP16_LEAVES: FORMAT_VERSION,
    Precision.QUANTIZED: QUANTIZED_FORMAT_VERSION,
}
_QUANTIZED_CODE_MAX = 127  # symmetric codes: -127..127, so the offset sits exactly in the middle

_TREE_ARRAYS = {
    "tree_offsets": "int32 (n_trees + 1,): first node of each tree, then the node count",
    "split_feature": "feature index of each node's split, -1 on leaves",
    "left_child": "child (index within the tree) taken when x < threshold, -1 on leaves",
    "right_child": "child (index within the tree) taken when x >= threshold, -1 on leaves",
    "default_left": "uint8: 1 when a missing value (NaN) takes the left child",
    "leaf_value": "leaf outputs in node order",
}
_TABLE_ARRAYS = {
    "threshold_table": "float32: distinct split thresholds per feature, features concatenated",
    "threshold_table_offsets": "int32 (n_features + 1,): each feature's slice of threshold_table",
    "threshold_index": "per node: index of its threshold within its split feature's slice",
}
_RAW_ARRAYS = {"threshold": "float32 split threshold per node"}
_QUANTIZED_ARRAYS = {
    "leaf_value": "int8 leaf codes q in node order: leaf = offset + scale * q of the leaf's tree",
    "leaf_scale": "float32 (n_trees,): dequantization step of each tree's leaves",
    "leaf_offset": "float32 (n_trees,): leaf value of code 0 in each tree",
}
_LINEAR_ARRAYS = {
    "weights": "float32 (n_features,): margin = base_score + bias + sum(w * x) over present x",
    "bias": "float32 (1,)",
    "feature_center": "optional float32 (n_features,): subtracted from x before the weights",
    "feature_scale": "optional float32 (n_features,): x - center is divided by it (all > 0)",
}
_LINEAR_SCALING = ("feature_center", "feature_scale")


@dataclass(frozen=True)
class TreeEnsemble:
    """Decoded trees, node arrays in the stored order (see the module docstring)."""

    tree_offsets: np.ndarray  # int64 (n_trees + 1,)
    split_feature: np.ndarray  # int32, -1 on leaves
    threshold: np.ndarray  # float32, NaN on leaves
    left_child: np.ndarray  # int32, index within the tree, -1 on leaves
    right_child: np.ndarray  # int32
    default_left: np.ndarray  # bool
    leaf_value: np.ndarray  # float32 per node, 0 on internal nodes
    max_depth: int = 0  # edges on the longest root-to-leaf path

    @property
    def n_trees(self) -> int:
        return len(self.tree_offsets) - 1

    @property
    def is_leaf(self) -> np.ndarray:
        return self.left_child < 0


@dataclass(frozen=True)
class LinearModel:
    weights: np.ndarray  # float32 (n_features,)
    bias: float
    # standardization the weights were fitted on: x -> (x - center) / scale; None: x as is
    feature_center: np.ndarray | None = None
    feature_scale: np.ndarray | None = None


# --- writing -------------------------------------------------------------------------------------


def write_payload(
    model: TreeEnsemble | LinearModel,
    *,
    model_id: str,
    version: str,
    objective: Objective | str,
    base_score: float,
    features: list[str],
    precision: Precision = Precision.FP32,
) -> bytes:
    """Serialise a model into payload bytes. `base_score` is in margin space."""
    precision = Precision(precision)
    objective = Objective(objective)
    if precision not in _LEAF_DTYPES:
        raise ValueError(f"precision={precision.value!r} is not defined by format version {FORMAT_VERSION}")
    if precision == Precision.QUANTIZED and not isinstance(model, TreeEnsemble):
        raise ValueError(f"precision={precision.value!r} applies to tree ensembles only, not {type(model).__name__}")
    _check_features(features)
    header: dict = {
        "format": FORMAT_NAME,
        "format_version": _PRECISION_FORMAT_VERSION[precision],
        "model_id": model_id,
        "version": version,
        "objective": objective.value,
        "base_score": float(np.float32(base_score)),  # a float32 widened to double round-trips exactly
        "features": list(features),
        "feature_schema_hash": feature_schema_hash(list(features)),
        "precision": precision.value,
        "n_features": len(features),
    }
    if isinstance(model, TreeEnsemble):
        arrays, tree_header = _encode_trees(model, len(features), _LEAF_DTYPES[precision])
        header.update(family=ModelFamily.XGBOOST.value, **tree_header)
    elif isinstance(model, LinearModel):
        arrays = _encode_linear(model, len(features))
        header.update(family=ModelFamily.LINEAR.value, arrays=_LINEAR_ARRAYS)
    else:
        raise TypeError(f"model must be a TreeEnsemble or LinearModel, not {type(model).__name__}")
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{HEADER_ARRAY: np.frombuffer(header_bytes, dtype=np.uint8)}, **arrays)
    return buffer.getvalue()


def _check_features(features: list[str]) -> None:
    if not features or not all(isinstance(f, str) and f for f in features):
        raise ValueError(f"features must be a non-empty list of non-empty names, got {features!r}")
    if len(set(features)) != len(features):
        raise ValueError(f"features repeat a name: {features}")


def _index_dtype(max_value: int) -> np.dtype:
    return np.dtype(np.int16) if max_value <= _INT16_MAX else np.dtype(np.int32)


def _encode_trees(trees: TreeEnsemble, n_features: int, leaf_dtype: np.dtype) -> tuple[dict, dict]:
    leaf = trees.left_child < 0
    internal_features = trees.split_feature[~leaf]
    if internal_features.size and (internal_features.min() < 0 or internal_features.max() >= n_features):
        raise ValueError(f"split_feature outside [0, {n_features}): {np.unique(internal_features)}")
    if np.isnan(trees.threshold[~leaf]).any():
        raise ValueError("a split threshold is NaN")
    max_tree_nodes = int(np.diff(trees.tree_offsets).max(initial=1))
    child_dtype = _index_dtype(max_tree_nodes)
    arrays = {
        "tree_offsets": trees.tree_offsets.astype(np.int32),
        "split_feature": np.where(leaf, -1, trees.split_feature).astype(_index_dtype(n_features)),
        "left_child": np.where(leaf, -1, trees.left_child).astype(child_dtype),
        "right_child": np.where(leaf, -1, trees.right_child).astype(child_dtype),
        "default_left": trees.default_left.astype(np.uint8),
    }
    if leaf_dtype == np.int8:
        arrays.update(_quantize_leaves(trees))
    else:
        arrays["leaf_value"] = trees.leaf_value[leaf].astype(leaf_dtype)
    encoding, threshold_arrays = _encode_thresholds(trees.threshold, trees.split_feature, leaf, n_features)
    arrays.update(threshold_arrays)
    described = {**_TREE_ARRAYS, **(_RAW_ARRAYS if encoding == ThresholdEncoding.RAW else _TABLE_ARRAYS)}
    if leaf_dtype == np.int8:
        described.update(_QUANTIZED_ARRAYS)
    return arrays, {"n_trees": trees.n_trees, "threshold_encoding": encoding.value, "arrays": described}


def _quantize_leaves(trees: TreeEnsemble) -> dict[str, np.ndarray]:
    """int8 leaf codes around each tree's own mid-range: later trees have small leaves, and a
    per-tree step keeps their resolution instead of spending it on the first trees' range."""
    leaf = trees.is_leaf
    if not np.isfinite(trees.leaf_value[leaf]).all():
        raise ValueError("a leaf value is not finite: it cannot be quantized")
    tree_of_node = np.repeat(np.arange(trees.n_trees), np.diff(trees.tree_offsets))
    values = trees.leaf_value[leaf].astype(np.float64)
    tree_of_leaf = tree_of_node[leaf]
    low = np.full(trees.n_trees, np.inf)
    high = np.full(trees.n_trees, -np.inf)
    np.minimum.at(low, tree_of_leaf, values)
    np.maximum.at(high, tree_of_leaf, values)
    # codes are chosen against the float32 offset and scale the device will use, so the
    # error measured at export is the error the device makes
    offset = ((low + high) / 2).astype(np.float32)
    scale = ((high - low) / (2 * _QUANTIZED_CODE_MAX)).astype(np.float32)
    step = scale.astype(np.float64)[tree_of_leaf]
    centred = values - offset.astype(np.float64)[tree_of_leaf]
    codes = np.divide(centred, step, out=np.zeros_like(centred), where=step > 0)
    codes = np.clip(np.rint(codes), -_QUANTIZED_CODE_MAX, _QUANTIZED_CODE_MAX).astype(np.int8)
    return {"leaf_value": codes, "leaf_scale": scale, "leaf_offset": offset}


def _encode_thresholds(
    threshold: np.ndarray, split_feature: np.ndarray, leaf: np.ndarray, n_features: int
) -> tuple[ThresholdEncoding, dict]:
    """A per-feature table of distinct float32 thresholds + a small index when it fits: exact and compact."""
    threshold = threshold.astype(np.float32)
    internal = ~leaf
    tables = [np.unique(threshold[internal & (split_feature == f)]) for f in range(n_features)]
    widest = max((len(t) for t in tables), default=0)
    if widest > np.iinfo(np.uint16).max + 1:
        return ThresholdEncoding.RAW, {"threshold": np.where(leaf, np.float32(0), threshold).astype(np.float32)}
    encoding = ThresholdEncoding.TABLE_UINT8 if widest <= 256 else ThresholdEncoding.TABLE_UINT16
    index_dtype = np.uint8 if encoding == ThresholdEncoding.TABLE_UINT8 else np.uint16
    offsets = np.zeros(n_features + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(t) for t in tables])
    index = np.zeros(len(threshold), dtype=index_dtype)
    for f, table in enumerate(tables):
        nodes = internal & (split_feature == f)
        # searchsorted on the sorted distinct values finds each threshold's exact slot
        index[nodes] = np.searchsorted(table, threshold[nodes])
    table = np.concatenate(tables).astype(np.float32) if tables else np.zeros(0, np.float32)
    return encoding, {"threshold_table": table, "threshold_table_offsets": offsets, "threshold_index": index}


def _encode_linear(model: LinearModel, n_features: int) -> dict:
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
    return arrays


# --- reading -------------------------------------------------------------------------------------


def read_payload(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse and validate payload bytes. Raises ValueError saying what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"payload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(_ZIP_MAGIC):
        raise ValueError(f"payload is not an npz container: starts with {data[:8]!r}, expected {_ZIP_MAGIC!r}")
    arrays = _load_arrays(data)
    header = _parse_header(arrays.pop(HEADER_ARRAY, None))
    family = ModelFamily(header["family"])
    if family == ModelFamily.XGBOOST:
        _validate_tree_arrays(header, arrays)
    else:
        _validate_linear_arrays(header, arrays)
    return header, arrays


def _load_arrays(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            # reading every member here makes CRC and decompression errors surface now
            return {name: npz[name] for name in npz.files}
    # BadZipFile, zlib.error, EOFError, a bad .npy header...: any decoding failure means garbled bytes
    except Exception as exc:
        raise ValueError(f"payload container is unreadable ({type(exc).__name__}: {exc})") from exc


_HEADER_FIELDS = {
    "format": str,
    "format_version": int,
    "model_id": str,
    "version": str,
    "family": str,
    "objective": str,
    "base_score": (int, float),
    "features": list,
    "feature_schema_hash": str,
    "precision": str,
    "n_features": int,
}


def _parse_header(raw: np.ndarray | None) -> dict:
    if raw is None:
        raise ValueError(f"payload has no {HEADER_ARRAY!r} array")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"header must be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError(f"header must be a JSON object, got {type(header).__name__}")
    for field, kind in _HEADER_FIELDS.items():
        if field not in header:
            raise ValueError(f"header has no {field!r}")
        if not isinstance(header[field], kind) or isinstance(header[field], bool):
            raise ValueError(f"header {field}={header[field]!r} has the wrong type")
    if header["format"] != FORMAT_NAME:
        raise ValueError(f"header format={header['format']!r}, expected {FORMAT_NAME!r}")
    if header["format_version"] not in SUPPORTED_FORMAT_VERSIONS:
        raise ValueError(
            f"header format_version={header['format_version']} is not supported "
            f"(this reader: {list(SUPPORTED_FORMAT_VERSIONS)}); the payload needs a newer runtime"
        )
    family = _check_enum("family", header["family"], ModelFamily)
    _check_enum("objective", header["objective"], Objective)
    precision = _check_enum("precision", header["precision"], Precision)
    if precision not in _LEAF_DTYPES:
        raise ValueError(f"header precision={precision.value!r} is not defined by format version {FORMAT_VERSION}")
    if header["format_version"] != _PRECISION_FORMAT_VERSION[precision]:
        raise ValueError(
            f"header format_version={header['format_version']} is not supported for precision={precision.value!r} "
            f"(written as format version {_PRECISION_FORMAT_VERSION[precision]})"
        )
    if precision == Precision.QUANTIZED and family != ModelFamily.XGBOOST:
        raise ValueError(f"header precision={precision.value!r} applies to tree ensembles only, not {family.value!r}")
    _check_features(header["features"])
    if header["n_features"] != len(header["features"]):
        raise ValueError(f"header n_features={header['n_features']} but {len(header['features'])} features are named")
    actual_hash = feature_schema_hash(header["features"])
    if header["feature_schema_hash"] != actual_hash:
        raise ValueError(
            f"header feature_schema_hash={header['feature_schema_hash']} does not match its features ({actual_hash})"
        )
    if not np.isfinite(header["base_score"]):
        raise ValueError(f"header base_score={header['base_score']} is not finite")
    return header


def _check_enum(field: str, value: str, enum: type[StrEnum]):
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"header {field}={value!r} is not one of {[e.value for e in enum]}") from None


def _expect(arrays: dict, name: str, dtypes: tuple, shape: tuple | None = None) -> np.ndarray:
    if name not in arrays:
        raise ValueError(f"payload has no {name!r} array")
    array = arrays[name]
    if array.dtype not in [np.dtype(d) for d in dtypes]:
        expected = [np.dtype(d).name for d in dtypes]
        raise ValueError(f"array {name!r} has dtype {array.dtype}, expected one of {expected}")
    if array.ndim != 1 or (shape is not None and array.shape != shape):
        raise ValueError(f"array {name!r} has shape {array.shape}, expected {shape or '1-D'}")
    return array


def _reject_unknown(arrays: dict, known: set[str]) -> None:
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise ValueError(f"payload has unknown arrays {unknown}")


def _validate_tree_arrays(header: dict, arrays: dict) -> None:
    if not isinstance(header.get("n_trees"), int) or header["n_trees"] < 1:
        raise ValueError(f"header n_trees={header.get('n_trees')!r} must be a positive integer")
    encoding = _check_enum("threshold_encoding", header.get("threshold_encoding"), ThresholdEncoding)
    threshold_arrays = _RAW_ARRAYS if encoding == ThresholdEncoding.RAW else _TABLE_ARRAYS
    quantized = Precision(header["precision"]) == Precision.QUANTIZED
    leaf_arrays = _QUANTIZED_ARRAYS if quantized else {}
    _reject_unknown(arrays, set(_TREE_ARRAYS) | set(threshold_arrays) | set(leaf_arrays))
    offsets = _expect(arrays, "tree_offsets", (np.int32,), (header["n_trees"] + 1,))
    if offsets[0] != 0 or (np.diff(offsets) < 1).any():
        raise ValueError("tree_offsets must start at 0 and grow by at least one node per tree")
    n_nodes = int(offsets[-1])
    index_types = (np.int16, np.int32)
    for name in ("split_feature", "left_child", "right_child"):
        _expect(arrays, name, index_types, (n_nodes,))
    _expect(arrays, "default_left", (np.uint8,), (n_nodes,))
    leaf_dtype = _LEAF_DTYPES[Precision(header["precision"])]
    n_leaves = int((arrays["left_child"] < 0).sum())
    _expect(arrays, "leaf_value", (leaf_dtype,), (n_leaves,))
    if quantized:
        _validate_leaf_quantization(header, arrays)
    if encoding == ThresholdEncoding.RAW:
        _expect(arrays, "threshold", (np.float32,), (n_nodes,))
    else:
        index_dtype = np.uint8 if encoding == ThresholdEncoding.TABLE_UINT8 else np.uint16
        _expect(arrays, "threshold_index", (index_dtype,), (n_nodes,))
        _expect(arrays, "threshold_table_offsets", (np.int32,), (header["n_features"] + 1,))
        _expect(arrays, "threshold_table", (np.float32,))
    decode_trees(header, arrays)  # structural checks: children in range, no cycles


def _validate_leaf_quantization(header: dict, arrays: dict) -> None:
    n_trees = header["n_trees"]
    scale = _expect(arrays, "leaf_scale", (np.float32,), (n_trees,))
    offset = _expect(arrays, "leaf_offset", (np.float32,), (n_trees,))
    if not (np.isfinite(scale).all() and np.isfinite(offset).all()):
        raise ValueError("leaf_scale or leaf_offset is not finite")
    if (scale < 0).any():
        raise ValueError(f"leaf_scale is negative for trees {np.flatnonzero(scale < 0).tolist()[:10]}")
    codes = arrays["leaf_value"]
    if codes.size and np.abs(codes.astype(np.int16)).max() > _QUANTIZED_CODE_MAX:
        raise ValueError(f"a leaf code is outside [-{_QUANTIZED_CODE_MAX}, {_QUANTIZED_CODE_MAX}]")


def _validate_linear_arrays(header: dict, arrays: dict) -> None:
    _reject_unknown(arrays, set(_LINEAR_ARRAYS))
    _expect(arrays, "weights", (np.float32,), (header["n_features"],))
    _expect(arrays, "bias", (np.float32,), (1,))
    if not np.isfinite(arrays["weights"]).all() or not np.isfinite(arrays["bias"]).all():
        raise ValueError("linear weights or bias are not finite")
    present = [name for name in _LINEAR_SCALING if name in arrays]
    if present and len(present) != len(_LINEAR_SCALING):
        raise ValueError(f"linear scaling needs both {list(_LINEAR_SCALING)}, the payload has only {present}")
    for name in present:
        _expect(arrays, name, (np.float32,), (header["n_features"],))
        if not np.isfinite(arrays[name]).all():
            raise ValueError(f"{name} is not finite")
    if present and not (arrays["feature_scale"] > 0).all():
        bad = int(np.flatnonzero(~(arrays["feature_scale"] > 0))[0])
        raise ValueError(f"feature_scale[{bad}]={arrays['feature_scale'][bad]} must be > 0")


# --- decoding ------------------------------------------------------------------------------------


def decode_trees(header: dict, arrays: dict[str, np.ndarray]) -> TreeEnsemble:
    """Turn stored tree arrays into a TreeEnsemble, checking that every tree is a proper tree."""
    offsets = arrays["tree_offsets"].astype(np.int64)
    n_features = header["n_features"]
    left = arrays["left_child"].astype(np.int32)
    right = arrays["right_child"].astype(np.int32)
    feature = arrays["split_feature"].astype(np.int32)
    leaf = left < 0
    if ((right < 0) != leaf).any():
        raise ValueError("a node has exactly one child")
    if (feature[~leaf] < 0).any() or (feature[~leaf] >= n_features).any():
        raise ValueError(f"a split_feature is outside [0, {n_features})")
    tree_size = np.repeat(np.diff(offsets), np.diff(offsets))
    if (left[~leaf] >= tree_size[~leaf]).any() or (right[~leaf] >= tree_size[~leaf]).any():
        raise ValueError("a child index points outside its tree")
    threshold = _decode_thresholds(header, arrays, feature, leaf)
    leaf_value = np.zeros(len(left), dtype=np.float32)
    leaf_value[leaf] = _decode_leaves(header, arrays, offsets, leaf)
    trees = TreeEnsemble(
        tree_offsets=offsets,
        split_feature=feature,
        threshold=threshold,
        left_child=left,
        right_child=right,
        default_left=arrays["default_left"].astype(bool),
        leaf_value=leaf_value,
    )
    return replace(trees, max_depth=_max_depth(trees))


def _decode_leaves(header: dict, arrays: dict, offsets: np.ndarray, leaf: np.ndarray) -> np.ndarray:
    """float32 leaf outputs; quantized codes are dequantized here so the scorer is the same for all tiers."""
    if header["precision"] != Precision.QUANTIZED:
        return arrays["leaf_value"].astype(np.float32)
    tree_of_leaf = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))[leaf]
    scale = arrays["leaf_scale"].astype(np.float64)[tree_of_leaf]
    offset = arrays["leaf_offset"].astype(np.float64)[tree_of_leaf]
    # float64 then one rounding to float32: the same bits on every architecture
    return (offset + scale * arrays["leaf_value"].astype(np.float64)).astype(np.float32)


def _decode_thresholds(header: dict, arrays: dict, feature: np.ndarray, leaf: np.ndarray) -> np.ndarray:
    if header["threshold_encoding"] == ThresholdEncoding.RAW:
        threshold = arrays["threshold"].astype(np.float32)
    else:
        table, table_offsets = arrays["threshold_table"], arrays["threshold_table_offsets"].astype(np.int64)
        if table_offsets[0] != 0 or (np.diff(table_offsets) < 0).any() or table_offsets[-1] != len(table):
            raise ValueError("threshold_table_offsets do not partition threshold_table")
        safe_feature = np.where(leaf, 0, feature)
        slot = table_offsets[safe_feature] + arrays["threshold_index"].astype(np.int64)
        if (slot[~leaf] >= table_offsets[safe_feature + 1][~leaf]).any():
            raise ValueError("a threshold_index points outside its feature's threshold table")
        if len(table) == 0:  # every tree is a single leaf: no splits, no thresholds
            return np.full(len(leaf), np.nan, dtype=np.float32)
        threshold = table[np.where(leaf, 0, slot)]
    threshold = threshold.astype(np.float32)
    if np.isnan(threshold[~leaf]).any():
        raise ValueError("a split threshold is NaN")
    return np.where(leaf, np.float32(np.nan), threshold).astype(np.float32)


def _max_depth(trees: TreeEnsemble) -> int:
    """Walk all trees level by level; a node reached twice means a cycle or a shared subtree."""
    starts = np.repeat(trees.tree_offsets[:-1], np.diff(trees.tree_offsets))
    left = np.where(trees.is_leaf, -1, trees.left_child + starts)
    right = np.where(trees.is_leaf, -1, trees.right_child + starts)
    visits = np.zeros(len(left), dtype=np.int64)
    frontier = trees.tree_offsets[:-1]
    depth = 0
    while True:
        visits += np.bincount(frontier, minlength=len(visits))
        if visits.max(initial=0) > 1:
            raise ValueError("tree nodes form a cycle or share a subtree")
        internal = frontier[left[frontier] >= 0]
        if internal.size == 0:
            return depth
        frontier = np.concatenate([left[internal], right[internal]])
        depth += 1


def decode_linear(arrays: dict[str, np.ndarray]) -> LinearModel:
    scaling = {name: arrays[name].astype(np.float32) for name in _LINEAR_SCALING if name in arrays}
    return LinearModel(weights=arrays["weights"].astype(np.float32), bias=float(arrays["bias"][0]), **scaling)
