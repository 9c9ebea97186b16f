"""Change-mode labels: a model that learns future minus now, and the level it stands for.

In `label.mode: change` the training label is `label - current`, where `current` is the target's
current value as the features define it: the float32 feature `<target>__last` (the last grid value
of the target in the pack, `UseCaseConfig.current_value_feature`), which the cloud's metric packer
and the gateway compute with the same `pack_features`. The payload names that feature
(`current_feature`) and says `label_mode`; the device scorer adds the feature back:

    level = float32(model output) + float32(current)

one float32 addition after the model's own output (IEEE addition is exact-rounded and commutes, so
that single step is the whole order). Every level prediction of a change-mode model, on the device,
in evaluation and in the export's parity check, goes through `level_from_change`, so all of them
agree bit for bit. A current value that is missing (NaN) gives a NaN level, which the gateway does
not publish and training leaves out.
"""

from __future__ import annotations

import numpy as np

from edgeloop.schemas.use_case import LabelMode


def level_from_change(change: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The level a change-mode prediction stands for, in float32: change + current."""
    return np.add(np.asarray(change, dtype=np.float32), np.asarray(current, dtype=np.float32), dtype=np.float32)


def change_label(label: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The change-mode training label (float64): the level label minus the float32 current value."""
    current64 = np.asarray(current, dtype=np.float32).astype(np.float64)
    return np.asarray(label, dtype=np.float64) - current64


def current_index(features: list[str], current_feature: str) -> int:
    """Column of the current value among a model's features; ValueError when the model lacks it."""
    try:
        return list(features).index(current_feature)
    except ValueError:
        raise ValueError(
            f"current_feature={current_feature!r} is not among the model's features {list(features)}"
        ) from None


def to_level(predictions: np.ndarray, X: np.ndarray, mode: LabelMode | str, current_column: int | None) -> np.ndarray:
    """Level predictions from a model's own float32 outputs on rows X (n, n_features): unchanged in level
    mode, `level_from_change(predictions, X[:, current_column])` in change mode."""
    if LabelMode(mode) == LabelMode.LEVEL:
        return np.asarray(predictions, dtype=np.float32)
    if current_column is None:
        raise ValueError("label mode 'change' needs the column of the current value")
    return level_from_change(predictions, np.asarray(X, dtype=np.float32)[:, current_column])
