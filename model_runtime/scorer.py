"""Device-side scoring of weight-only payloads with numpy alone.

Trees are evaluated exactly as XGBoost does in float32: inputs are rounded to float32, a node sends
x left when `x < threshold` and sends NaN along its default direction, and tree outputs are added
one tree at a time in float32 starting from base_score. That order matters: a pairwise `sum` gives
different bits, `np.add.accumulate` along the tree axis keeps the sequential order.

Tree ensembles are scored with bitvectors in the style of QuickScorer (Lucchese et al., SIGIR 2015),
reshaped so numpy does contiguous work instead of pointer chasing:
- each tree's leaves are numbered left to right; a split that is false for x (x >= threshold, or
  NaN with a right default) rules out the leaves of its left subtree, and x exits at the leftmost
  leaf nobody ruled out: the lowest set bit of the AND of the splits' surviving-leaf masks;
- per feature, its distinct thresholds cut the axis into bins (bin b: exactly b thresholds <= x,
  plus a bin for NaN); each bin has one precomputed table row holding, per tree, the AND of the
  masks of every split on that feature the bin makes false;
- a row is then one binary search per feature, one table-row gather per feature, an AND across
  features, a lowest-set-bit per tree and a leaf gather; base_score is pre-added to tree 0's leaves
  (base + leaf is the first float32 addition XGBoost makes anyway).
Trees of more than 64 leaves take several uint64 words. When the tables would outgrow a memory
budget (deep trees times many thresholds), or many features make the AND costlier than walking
shallow trees, a level-by-level traversal of all trees is used instead; both are bit-exact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from edgeloop.schemas.model import ModelFamily, Precision

from .model_format import LinearModel, Objective, TreeEnsemble, decode_linear, decode_trees, read_payload

# Rows per level-traversal chunk: bounds the (rows x trees) index arrays to a few MB on small gateways.
_LEVEL_CHUNK_ROWS = 4096
# Rows binned per pass of the bitvector path: bounds its (features x rows) bin indices to a few MB.
_BIN_CHUNK_ROWS = 32768
# Bytes of gathered table rows per bitvector step: keeps that working set in a core's cache share.
_MASK_CHUNK_BYTES = 2 << 20
# Above this many bytes of bitvector tables the level-by-level traversal is used: slower, but its
# memory grows with the node count only, not with nodes x thresholds.
BITVECTOR_TABLE_BUDGET_BYTES = 32 << 20
# Measured (1 thread, 10k rows): an AND of one feature's words costs about 1/9 of one level step over
# all trees, so with many features and shallow trees the level traversal is as fast and much smaller.
BITVECTOR_WORK_RATIO = 9
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
        if isinstance(model, TreeEnsemble):
            self._margin = tree_evaluator(model, self._base_score)
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
        return self._transform(self._margin.batch(X))

    def predict_one(self, x: np.ndarray) -> float:
        """Prediction for one feature vector (n_features,): no batch bookkeeping, for live scoring."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != (self._n_features,):
            raise ValueError(f"x has shape {x.shape}; expected ({self._n_features},) for features {self.features}")
        return float(self._transform(self._margin.one(x)))

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


def tree_evaluator(trees: TreeEnsemble, base_score: np.float32) -> _BitvectorEvaluator | _LevelEvaluator:
    """The bitvector evaluator when its tables fit the memory budget, else the level traversal."""
    layout = _LeafLayout.of(trees)
    thresholds = _FeatureThresholds.of(trees)
    has_splits = len(thresholds.features) > 0  # a model of single-leaf trees has nothing to bin
    fits = thresholds.table_rows * layout.n_words * 8 <= BITVECTOR_TABLE_BUDGET_BYTES
    # per row, the bitvector path ANDs (used features x words) and the level path makes (depth x trees) steps
    bitvector_work = len(thresholds.features) * layout.n_words
    level_work = BITVECTOR_WORK_RATIO * trees.max_depth * trees.n_trees
    if has_splits and fits and bitvector_work <= level_work:
        return _BitvectorEvaluator(trees, base_score, layout, thresholds)
    return _LevelEvaluator(trees, base_score)


@dataclass(frozen=True)
class _LeafLayout:
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
    def of(cls, trees: TreeEnsemble) -> _LeafLayout:
        sizes = np.diff(trees.tree_offsets)
        starts = np.repeat(trees.tree_offsets[:-1], sizes)
        left = np.where(trees.is_leaf, -1, trees.left_child + starts)
        right = np.where(trees.is_leaf, -1, trees.right_child + starts)
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
        tree_of_node = np.repeat(np.arange(trees.n_trees, dtype=np.int64), sizes)
        return cls(left, first_leaf, leaf_count, tree_of_node, word_offsets)


@dataclass(frozen=True)
class _FeatureThresholds:
    """Sorted distinct split thresholds of each feature that any split uses."""

    features: np.ndarray  # intp: the used features, ascending
    tables: list[np.ndarray]  # float32 per used feature

    @property
    def table_rows(self) -> int:
        return sum(len(t) + 3 for t in self.tables)  # NaN (sign bit set), bins 0..n, NaN

    @classmethod
    def of(cls, trees: TreeEnsemble) -> _FeatureThresholds:
        internal = ~trees.is_leaf
        features = np.unique(trees.split_feature[internal]).astype(np.intp)
        split_feature, threshold = trees.split_feature[internal], trees.threshold[internal]
        return cls(features, [np.unique(threshold[split_feature == f]).astype(np.float32) for f in features])


class _BitvectorEvaluator:
    """QuickScorer-style evaluation (see the module docstring); bit-exact with XGBoost in float32."""

    def __init__(
        self, trees: TreeEnsemble, base_score: np.float32, layout: _LeafLayout, thresholds: _FeatureThresholds
    ):
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
    trees: TreeEnsemble, layout: _LeafLayout, thresholds: _FeatureThresholds, first_rows: np.ndarray
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


def _split_masks(trees: TreeEnsemble, layout: _LeafLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _leaf_slots(trees: TreeEnsemble, layout: _LeafLayout, base_score: np.float32) -> tuple[np.ndarray, np.ndarray]:
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


class _LevelEvaluator:
    """Level-by-level traversal of all trees at once: one gather per level over (rows x trees).

    Leaves point to themselves, so every row can take `max_depth` steps without a per-tree stop.
    """

    def __init__(self, trees: TreeEnsemble, base_score: np.float32):
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
