"""Tree ensembles (family "xgboost") in the weight-only payload: arrays, encoding, checks, decoding.

Trees are stored node by node, one after another:
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

Quantized tree payloads (precision "quantized") store each leaf as an int8 code q in [-127, 127]
with a per-tree scale and offset (`leaf_scale`, `leaf_offset`, float32 (n_trees,)); the reader
dequantizes at load, leaf = float32(float64(offset) + float64(scale) * q), so the scorer sees the
same float32 arrays as for the other tiers.

The container, the header and the format versions are in model_format.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edgeloop.schemas.compat import StrEnum
from edgeloop.schemas.model import Precision

from .payload_checks import check_enum, expect_array, reject_unknown

_INT16_MAX = np.iinfo(np.int16).max


class ThresholdEncoding(StrEnum):
    TABLE_UINT8 = "table-uint8"
    TABLE_UINT16 = "table-uint16"
    RAW = "raw"


# Leaf storage per precision tier.
LEAF_DTYPES = {
    Precision.FP32: np.dtype(np.float32),
    Precision.FP16_LEAVES: np.dtype(np.float16),
    Precision.QUANTIZED: np.dtype(np.int8),
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

    def global_children(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) child of every node as an index over all trees' nodes, -1 on leaves."""
        starts = np.repeat(self.tree_offsets[:-1], np.diff(self.tree_offsets))
        leaf = self.is_leaf
        return np.where(leaf, -1, self.left_child + starts), np.where(leaf, -1, self.right_child + starts)


def _index_dtype(max_value: int) -> np.dtype:
    return np.dtype(np.int16) if max_value <= _INT16_MAX else np.dtype(np.int32)


def encode_trees(trees: TreeEnsemble, n_features: int, precision: Precision) -> tuple[dict, dict]:
    """The arrays to store and the header fields (n_trees, threshold_encoding, arrays) of `trees`."""
    leaf_dtype = LEAF_DTYPES[precision]
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


def validate_tree_arrays(header: dict, arrays: dict) -> None:
    """Refuse tree arrays that are missing, unknown, mistyped or do not form proper trees."""
    if not isinstance(header.get("n_trees"), int) or header["n_trees"] < 1:
        raise ValueError(f"header n_trees={header.get('n_trees')!r} must be a positive integer")
    encoding = check_enum("threshold_encoding", header.get("threshold_encoding"), ThresholdEncoding)
    threshold_arrays = _RAW_ARRAYS if encoding == ThresholdEncoding.RAW else _TABLE_ARRAYS
    quantized = Precision(header["precision"]) == Precision.QUANTIZED
    leaf_arrays = _QUANTIZED_ARRAYS if quantized else {}
    reject_unknown(arrays, set(_TREE_ARRAYS) | set(threshold_arrays) | set(leaf_arrays))
    offsets = expect_array(arrays, "tree_offsets", (np.int32,), (header["n_trees"] + 1,))
    if offsets[0] != 0 or (np.diff(offsets) < 1).any():
        raise ValueError("tree_offsets must start at 0 and grow by at least one node per tree")
    n_nodes = int(offsets[-1])
    index_types = (np.int16, np.int32)
    for name in ("split_feature", "left_child", "right_child"):
        expect_array(arrays, name, index_types, (n_nodes,))
    expect_array(arrays, "default_left", (np.uint8,), (n_nodes,))
    leaf_dtype = LEAF_DTYPES[Precision(header["precision"])]
    n_leaves = int((arrays["left_child"] < 0).sum())
    expect_array(arrays, "leaf_value", (leaf_dtype,), (n_leaves,))
    if quantized:
        _validate_leaf_quantization(header, arrays)
    if encoding == ThresholdEncoding.RAW:
        expect_array(arrays, "threshold", (np.float32,), (n_nodes,))
    else:
        index_dtype = np.uint8 if encoding == ThresholdEncoding.TABLE_UINT8 else np.uint16
        expect_array(arrays, "threshold_index", (index_dtype,), (n_nodes,))
        expect_array(arrays, "threshold_table_offsets", (np.int32,), (header["n_features"] + 1,))
        expect_array(arrays, "threshold_table", (np.float32,))
    decode_trees(header, arrays)  # structural checks: children in range, no cycles


def _validate_leaf_quantization(header: dict, arrays: dict) -> None:
    n_trees = header["n_trees"]
    scale = expect_array(arrays, "leaf_scale", (np.float32,), (n_trees,))
    offset = expect_array(arrays, "leaf_offset", (np.float32,), (n_trees,))
    if not (np.isfinite(scale).all() and np.isfinite(offset).all()):
        raise ValueError("leaf_scale or leaf_offset is not finite")
    if (scale < 0).any():
        raise ValueError(f"leaf_scale is negative for trees {np.flatnonzero(scale < 0).tolist()[:10]}")
    codes = arrays["leaf_value"]
    if codes.size and np.abs(codes.astype(np.int16)).max() > _QUANTIZED_CODE_MAX:
        raise ValueError(f"a leaf code is outside [-{_QUANTIZED_CODE_MAX}, {_QUANTIZED_CODE_MAX}]")


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
    left, right = trees.global_children()
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
