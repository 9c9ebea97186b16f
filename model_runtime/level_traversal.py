"""Level-by-level traversal of all trees of an ensemble at once, bit-exact with XGBoost in float32.

The scorer's fallback when the bitvector tables would outgrow their memory budget, or when many
features make their AND costlier than walking shallow trees: its memory grows with the node count
only.
"""

from __future__ import annotations

import numpy as np

from .tree_format import TreeEnsemble

# Rows per level-traversal chunk: bounds the (rows x trees) index arrays to a few MB on small gateways.
_LEVEL_CHUNK_ROWS = 4096


class LevelEvaluator:
    """Level-by-level traversal of all trees at once: one gather per level over (rows x trees).

    Leaves point to themselves, so every row can take `max_depth` steps without a per-tree stop.
    """

    def __init__(self, trees: TreeEnsemble, base_score: np.float32):
        leaf = trees.is_leaf
        own = np.arange(len(leaf))
        left, right = trees.global_children()
        # children[2 * node] is the left child, children[2 * node + 1] the right one (global ids)
        self._children = (
            np.stack([np.where(leaf, own, left), np.where(leaf, own, right)], axis=1).astype(np.int32).ravel()
        )
        self._feature = np.where(leaf, 0, trees.split_feature).astype(np.int32)
        self._threshold = trees.threshold  # NaN on leaves: `x < NaN` is False, and leaves loop anyway
        self._default_left = trees.default_left & ~leaf
        self._leaf_value = trees.leaf_value
        self._roots = trees.tree_offsets[:-1].astype(np.int32)
        self._depth = trees.max_depth
        self._base = base_score

    def _step(self, node: np.ndarray, x: np.ndarray) -> np.ndarray:
        go_left = x < self._threshold[node]
        go_left |= np.isnan(x) & self._default_left[node]
        return self._children[2 * node + (~go_left)]

    def batch(self, X: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [self._chunk(X[start : start + _LEVEL_CHUNK_ROWS]) for start in range(0, X.shape[0], _LEVEL_CHUNK_ROWS)]
        )

    def _chunk(self, X: np.ndarray) -> np.ndarray:
        n_rows, n_features = X.shape
        flat = X.ravel()
        row_start = (np.arange(n_rows, dtype=np.int32) * n_features)[:, None]
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
