"""QuickScorer-style bitvector evaluation of tree ensembles (Lucchese et al., SIGIR 2015), bit-exact
with XGBoost in float32, reshaped so numpy does contiguous work instead of pointer chasing:
- each tree's leaves are numbered left to right; a split that is false for x (x >= threshold, or
  NaN with a right default) rules out the leaves of its left subtree, and x exits at the leftmost
  leaf nobody ruled out: the lowest set bit of the AND of the splits' surviving-leaf masks;
- per feature, its distinct thresholds cut the axis into bins (bin b: exactly b thresholds <= x,
  plus a bin for NaN); each bin has one precomputed table row holding, per tree, the AND of the
  masks of every split on that feature the bin makes false;
- a row is then one binary search per feature, one table-row gather per feature, an AND across
  features, a lowest-set-bit per tree and a leaf gather; base_score is pre-added to tree 0's leaves
  (base + leaf is the first float32 addition XGBoost makes anyway).
Trees of more than 64 leaves take several uint64 words. `LeafLayout` and `FeatureThresholds` also
tell the scorer how large the tables would be, to choose between this and the level traversal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tree_format import TreeEnsemble

# Rows binned per pass of the bitvector path: bounds its (features x rows) bin indices to a few MB.
_BIN_CHUNK_ROWS = 32768
# Bytes of gathered table rows per bitvector step: keeps that working set in a core's cache share.
_MASK_CHUNK_BYTES = 2 << 20
_WORD_BITS = 64
_ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
# A uint64 with a single bit set converts to float64 exactly; its exponent field is 1023 + the bit's index.
_EXPONENT_SHIFT = 52
_EXPONENT_BIAS = 1023
_NO_LEAF = np.iinfo(np.int64).max
# Single-row keys: feature j's int32 float keys plus j << 33, so features never interleave.
_FEATURE_KEY_SHIFT = 33
_FLOOR_KEY = -(1 << 31) - 1  # below every float32 key
_MAGNITUDE_BITS = np.int32(0x7FFF_FFFF)


@dataclass(frozen=True)
class LeafLayout:
    """Leaves numbered left to right within each tree, and each tree's span of uint64 words."""

    left: np.ndarray  # int64 global node id of the left child, -1 on leaves
    first_leaf: np.ndarray  # int64 per node: number (within its tree) of its leftmost leaf
    leaf_count: np.ndarray  # int64 per node: leaves below it (1 on a leaf)
    tree_of_node: np.ndarray  # int64 per node
    word_offsets: np.ndarray  # int64 (n_trees + 1,): first word of each tree, then the word count

    @property
    def n_words(self) -> int:
        return int(self.word_offsets[-1])

    @classmethod
    def of(cls, trees: TreeEnsemble) -> LeafLayout:
        left, right = trees.global_children()
        levels = [trees.tree_offsets[:-1]]
        while (internal := levels[-1][left[levels[-1]] >= 0]).size:
            levels.append(np.concatenate([left[internal], right[internal]]))
        leaf_count = trees.is_leaf.astype(np.int64)
        for level in reversed(levels):  # children before parents
            internal = level[left[level] >= 0]
            leaf_count[internal] = leaf_count[left[internal]] + leaf_count[right[internal]]
        first_leaf = np.zeros(len(left), dtype=np.int64)
        for level in levels:  # parents before children
            internal = level[left[level] >= 0]
            first_leaf[left[internal]] = first_leaf[internal]
            first_leaf[right[internal]] = first_leaf[internal] + leaf_count[left[internal]]
        words = -(-leaf_count[trees.tree_offsets[:-1]] // _WORD_BITS)
        word_offsets = np.concatenate([[0], np.cumsum(words)]).astype(np.int64)
        tree_of_node = np.repeat(np.arange(trees.n_trees, dtype=np.int64), np.diff(trees.tree_offsets))
        return cls(left, first_leaf, leaf_count, tree_of_node, word_offsets)


@dataclass(frozen=True)
class FeatureThresholds:
    """Sorted distinct split thresholds of each feature that any split uses."""

    features: np.ndarray  # intp: the used features, ascending
    tables: list[np.ndarray]  # float32 per used feature

    @property
    def table_rows(self) -> int:
        return sum(len(t) + 3 for t in self.tables)  # NaN (sign bit set), bins 0..n, NaN

    @classmethod
    def of(cls, trees: TreeEnsemble) -> FeatureThresholds:
        internal = ~trees.is_leaf
        features = np.unique(trees.split_feature[internal]).astype(np.intp)
        split_feature, threshold = trees.split_feature[internal], trees.threshold[internal]
        return cls(features, [np.unique(threshold[split_feature == f]).astype(np.float32) for f in features])


class BitvectorEvaluator:
    """QuickScorer-style evaluation (see the module docstring); bit-exact with XGBoost in float32."""

    def __init__(self, trees: TreeEnsemble, base_score: np.float32, layout: LeafLayout, thresholds: FeatureThresholds):
        self._features = thresholds.features
        counts = np.array([len(t) for t in thresholds.tables], dtype=np.int64)
        first_rows = np.concatenate([[0], np.cumsum(counts + 3)]).astype(np.int64)
        self._bin0_rows = first_rows[:-1, None] + 1  # (features, 1): broadcasts over a row chunk
        # x[:k] is a view, x[features] a copy: most models use every feature
        self._used_prefix = len(self._features) if (self._features == np.arange(len(self._features))).all() else None
        # row 0 is a spare: single-row lookups index the table from it, batches from row 1 on
        self._table_from_spare = _mask_table(trees, layout, thresholds, first_rows)
        self._table = self._table_from_spare[1:]
        # batch binning: searchsorted(side="right") counts thresholds <= x; NaN sorts after them all
        self._search_tables = [np.append(t, np.float32(np.nan)) for t in thresholds.tables]
        # single-row binning: one searchsorted over all features at once, on order-preserving integer
        # keys with the feature in the high bits. Each feature's keys are framed by one below any key,
        # one at -inf (NaNs with the sign bit set key below it) and one just above +inf (the other
        # NaNs), so the count of keys <= x is x's row in the spare-row table, NaNs included.
        key_offsets = np.arange(len(counts), dtype=np.int64) << _FEATURE_KEY_SHIFT
        self._key_offsets = key_offsets
        lowest, highest = _ordered_keys(np.array([-np.inf, np.inf], dtype=np.float32)).astype(np.int64)
        self._single_keys = np.concatenate(
            [
                np.concatenate([[_FLOOR_KEY, lowest], _threshold_keys(t), [highest + 1]]) + offset
                for t, offset in zip(thresholds.tables, key_offsets)
            ]
        )
        self._leaf_values, self._slot_base = _leaf_slots(trees, layout, base_score)
        self._tree_first_word = layout.word_offsets[:-1]
        self._multiword = layout.n_words != trees.n_trees
        self._rows_per_step = int(np.clip(_MASK_CHUNK_BYTES // (8 * layout.n_words * len(counts)), 1, _BIN_CHUNK_ROWS))

    def batch(self, X: np.ndarray) -> np.ndarray:
        margin = np.empty(X.shape[0], dtype=np.float32)
        for start in range(0, X.shape[0], _BIN_CHUNK_ROWS):
            rows = self._bin_rows(X[start : start + _BIN_CHUNK_ROWS])
            for step in range(0, rows.shape[1], self._rows_per_step):
                part = rows[:, step : step + self._rows_per_step]
                alive = np.bitwise_and.reduce(np.take(self._table, part, axis=0), axis=0)
                margin[start + step : start + step + part.shape[1]] = self._sum_exit_leaves(alive)
        return margin

    def one(self, x: np.ndarray) -> np.float32:
        used = x[: self._used_prefix] if self._used_prefix is not None else x[self._features]
        keys = _ordered_keys(used) + self._key_offsets
        rows = np.searchsorted(self._single_keys, keys, side="right")
        alive = np.bitwise_and.reduce(np.take(self._table_from_spare, rows, axis=0), axis=0)
        return self._sum_exit_leaves(alive)

    def _bin_rows(self, X: np.ndarray) -> np.ndarray:
        """(features, rows) index of each row's bin row in the mask table."""
        columns = np.ascontiguousarray(X[:, self._features].T)
        rows = np.empty(columns.shape, dtype=np.intp)
        for j, table in enumerate(self._search_tables):
            rows[j] = np.searchsorted(table, columns[j], side="right")
        rows += self._bin0_rows
        return rows

    def _sum_exit_leaves(self, alive: np.ndarray) -> np.ndarray:
        """Margins of ([rows,] words) surviving-leaf masks: lowest set bit per tree -> leaf -> sum."""
        lowest = np.negative(alive)
        lowest &= alive
        slot = lowest.astype(np.float64).view(np.int64) >> _EXPONENT_SHIFT  # a power of two: positive bits
        slot += self._slot_base
        if self._multiword:
            # a tree's exit leaf is in the first of its words with a surviving bit
            slot[alive == 0] = _NO_LEAF
            slot = np.minimum.reduceat(slot, self._tree_first_word, axis=-1)
        leaves = np.take(self._leaf_values, slot.T)  # (trees, rows): each tree's outputs contiguous
        return np.add.accumulate(leaves, axis=0)[-1]


def _ordered_keys(values: np.ndarray) -> np.ndarray:
    """int32 keys of float32 values, ordered like the values; -0.0 keys just below 0.0, NaNs beyond +-inf."""
    bits = values.view(np.int32)
    return bits ^ ((bits >> 31) & _MAGNITUDE_BITS)  # negative floats order backwards: flip all but the sign


def _threshold_keys(thresholds: np.ndarray) -> np.ndarray:
    """int64 keys of sorted thresholds such that key(x) >= key(t) exactly when x >= t (x not NaN).

    A zero threshold takes the key of -0.0: both -0.0 and 0.0 are >= 0.0, and nothing else between.
    """
    keys = _ordered_keys(np.where(thresholds == 0, np.float32(-0.0), thresholds).astype(np.float32))
    return keys.astype(np.int64)


def _mask_table(
    trees: TreeEnsemble, layout: LeafLayout, thresholds: FeatureThresholds, first_rows: np.ndarray
) -> np.ndarray:
    """(1 + bin rows, words) uint64: a spare row, then per feature: NaN, bins 0..n (thresholds <= x), NaN."""
    node, column, clear = _split_masks(trees, layout)
    feature_slot = np.full(int(trees.split_feature.max(initial=0)) + 1, -1, dtype=np.int64)
    feature_slot[thresholds.features] = np.arange(len(thresholds.features))
    slot = feature_slot[trees.split_feature[node]]
    bin_index = np.empty(len(node), dtype=np.int64)
    for j, table in enumerate(thresholds.tables):
        mine = slot == j
        bin_index[mine] = np.searchsorted(table, trees.threshold[node[mine]])
    spare_and_table = np.full((1 + int(first_rows[-1]), layout.n_words), _ALL_ONES, dtype=np.uint64)
    table = spare_and_table[1:]
    # a split with threshold index k is false from bin k + 1 on: record it there, then AND forward
    np.bitwise_and.at(table, (first_rows[slot] + 2 + bin_index, column), clear)
    for j, table_f in enumerate(thresholds.tables):
        bins = table[first_rows[j] + 2 : first_rows[j] + 2 + len(table_f)]
        np.bitwise_and.accumulate(bins, axis=0, out=bins)
    nan_right = ~trees.default_left[node]
    nan_rows = first_rows[:-1] + 2 + np.array([len(t) for t in thresholds.tables], dtype=np.int64)
    np.bitwise_and.at(table, (nan_rows[slot][nan_right], column[nan_right]), clear[nan_right])
    table[first_rows[:-1]] = table[nan_rows]  # NaNs with the sign bit set are missing values too
    return spare_and_table


def _split_masks(trees: TreeEnsemble, layout: LeafLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (split, word it touches): the split node, the word's column and the mask clearing its left leaves."""
    internal = np.flatnonzero(~trees.is_leaf)
    start = layout.first_leaf[internal]
    stop = start + layout.leaf_count[layout.left[internal]]
    first_word, last_word = start // _WORD_BITS, (stop - 1) // _WORD_BITS
    n_words = last_word - first_word + 1
    node = np.repeat(internal, n_words)
    word = np.repeat(first_word, n_words) + np.arange(n_words.sum()) - np.repeat(np.cumsum(n_words) - n_words, n_words)
    low = np.maximum(np.repeat(start, n_words) - word * _WORD_BITS, 0)
    high = np.minimum(np.repeat(stop, n_words) - word * _WORD_BITS, _WORD_BITS)
    column = layout.word_offsets[layout.tree_of_node[node]] + word
    return node, column, ~(_low_bits(high) & ~_low_bits(low))


def _low_bits(n: np.ndarray) -> np.ndarray:
    """uint64 with the n lowest bits set, 0 <= n <= 64 (a shift by 64 is undefined, hence the where)."""
    shifted = np.left_shift(np.uint64(1), np.minimum(n, _WORD_BITS - 1).astype(np.uint64)) - np.uint64(1)
    return np.where(n >= _WORD_BITS, _ALL_ONES, shifted)


def _leaf_slots(trees: TreeEnsemble, layout: LeafLayout, base_score: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Leaf outputs by (word, bit) slot, and per word the slot of bit 0 minus the float64 exponent bias.

    base_score is folded into tree 0's leaves: base + leaf is the first float32 addition XGBoost makes.
    """
    leaf = np.flatnonzero(trees.is_leaf)
    tree = layout.tree_of_node[leaf]
    values = trees.leaf_value[leaf].astype(np.float32)
    values = np.where(tree == 0, base_score + values, values).astype(np.float32)
    leaf_values = np.zeros(layout.n_words * _WORD_BITS, dtype=np.float32)
    leaf_values[layout.word_offsets[tree] * _WORD_BITS + layout.first_leaf[leaf]] = values
    slot_base = np.arange(layout.n_words, dtype=np.int64) * _WORD_BITS - _EXPONENT_BIAS
    return leaf_values, slot_base
