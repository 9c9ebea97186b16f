"""Labeler: the measured quality target some time after each metric pack, and its spec class.

The label of a pack ending at t is the mean of the target metric's raw samples in
[t + horizon_s, t + horizon_s + label_window_s). A pack is dropped when that window reaches past
the end of its run (another product, other spec limits) or holds fewer than half the samples the
use case's sample period promises (a gap in the measurement would make the mean unreliable).

Examples always carry the level label (and its class against the spec limits). With the use case's
`label.mode: change` a model trains on `training_labels`: the label minus the current value, the
target's `last` feature at the pack end (model_runtime/label_mode.py, the definition the device
scorer uses to add it back); packs without a current value cannot be predicted in that mode and are
left out (`predictable`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from edgeloop.model_runtime.label_mode import change_label
from edgeloop.schemas import SpecLimits, UseCaseConfig, ViolationClass
from edgeloop.schemas.use_case import LabelMode


@dataclass(frozen=True)
class Labels:
    value: np.ndarray  # float64 per pack, NaN where dropped
    keep: np.ndarray  # bool per pack
    outside_run: int  # dropped: label window ends after the run
    too_sparse: int  # dropped: fewer than half the expected target samples


def min_label_samples(use_case: UseCaseConfig) -> float:
    return 0.5 * use_case.label_window_s / use_case.sample_period_s


def label_packs(
    window_end_ms: np.ndarray,
    target_time_ms: np.ndarray,
    target_values: np.ndarray,
    *,
    run_end_ms: int,
    use_case: UseCaseConfig,
) -> Labels:
    """Labels for packs ending at `window_end_ms`, from the run's target samples sorted by time."""
    window_end_ms = np.asarray(window_end_ms, dtype=np.int64)
    target_time_ms = np.asarray(target_time_ms, dtype=np.int64)
    target_values = np.asarray(target_values, dtype=np.float64)
    label_start = window_end_ms + use_case.horizon_s * 1000
    label_end = label_start + use_case.label_window_s * 1000  # exclusive, like the run's end

    # Prefix sums give every window's sum and count with two binary searches: no loop per pack.
    prefix = np.concatenate([[0.0], np.cumsum(target_values)])
    lo = np.searchsorted(target_time_ms, label_start, side="left")
    hi = np.searchsorted(target_time_ms, label_end, side="left")
    count = hi - lo
    inside_run = label_end <= run_end_ms
    dense = count >= min_label_samples(use_case)
    keep = inside_run & dense
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(keep, (prefix[hi] - prefix[lo]) / count, np.nan)
    return Labels(
        value=value,
        keep=keep,
        outside_run=int((~inside_run).sum()),
        too_sparse=int((inside_run & ~dense).sum()),
    )


def predictable(examples: pd.DataFrame, use_case: UseCaseConfig) -> pd.DataFrame:
    """The examples a model of the use case's label mode can predict: all in level mode; in change mode
    those with a current value (the target's `last` feature is not NaN)."""
    if use_case.label.mode == LabelMode.LEVEL:
        return examples
    return examples[examples[use_case.current_value_feature].notna()]


def training_labels(examples: pd.DataFrame, use_case: UseCaseConfig) -> np.ndarray:
    """What a model learns per example (float64): the level label, or in change mode the label minus the
    float32 current value (label_mode.change_label)."""
    label = examples["label"].to_numpy(dtype=np.float64)
    if use_case.label.mode == LabelMode.LEVEL:
        return label
    return change_label(label, examples[use_case.current_value_feature].to_numpy(dtype=np.float32))


def classify(labels: np.ndarray, spec: SpecLimits) -> np.ndarray:
    """ViolationClass values per label: below lower -> LSL, above upper -> USL, else in range."""
    return classify_between(labels, spec.lower, spec.upper)


def classify_between(labels: np.ndarray, lower: np.ndarray | float, upper: np.ndarray | float) -> np.ndarray:
    """Like `classify`, with limits per label (limits that move within a run)."""
    labels = np.asarray(labels, dtype=np.float64)
    return np.select(
        [labels < lower, labels > upper],
        [ViolationClass.LSL.value, ViolationClass.USL.value],
        default=ViolationClass.IN_RANGE.value,
    ).astype(object)
