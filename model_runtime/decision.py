"""THE violation decision rule: a level prediction against the spec limits, with a decision margin.

    USL when level > upper - margin x (upper - lower) / 2
    LSL when level < lower + margin x (upper - lower) / 2
    in_range otherwise (also for a NaN level: nothing is flagged on a missing prediction)

With an infinite limit (one-sided spec) the band is infinite and the margin does not apply.

margin is a fraction of the half spec band (schemas/decision.py): 0 flags predicted crossings only.
Training (train.evaluate), the baselines and the metric definition (steps/baselines.py) and the device
Scorer all classify through `classify_levels`, in float64, so the cloud's classes and the gateway's
agree for the same float32 level.
"""

from __future__ import annotations

import numpy as np

from edgeloop.schemas.decision import check_margin
from edgeloop.schemas.training import ViolationClass


def classify_levels(levels, lower, upper, margin: float = 0.0) -> np.ndarray:
    """ViolationClass values (numpy str array, the shape of the broadcast inputs) of levels against
    each level's own spec limits (arrays or scalars)."""
    margin = check_margin(margin)
    levels = np.asarray(levels, dtype=np.float64)
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    band = upper - lower
    # a one-sided limit (the other infinite) has no band to inset from: the margin is 0 there
    with np.errstate(invalid="ignore"):
        inset = np.where(np.isfinite(band), margin * band / 2, 0.0)
    return np.where(
        levels < lower + inset,
        ViolationClass.LSL.value,
        np.where(levels > upper - inset, ViolationClass.USL.value, ViolationClass.IN_RANGE.value),
    )
