"""Metric packs of a tiny use case with one informative feature (feed__mean), for the label review tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from edgeloop.schemas import UseCaseConfig
from edgeloop.schemas.training import ViolationClass

T0 = datetime(2026, 2, 1, tzinfo=UTC)
LOWER, UPPER = 1.0, 3.0


def tiny_use_case(**overrides) -> UseCaseConfig:
    return UseCaseConfig(
        use_case="tiny",
        metrics=["feed", "quality"],
        target_metric="quality",
        sample_period_s=1,
        pack_window_s=10,
        horizon_s=5,
        label_window_s=4,
        example_stride_s=5,
        feature_stats=["mean"],
        model_families=["xgboost"],
        precisions=["fp32"],
        **overrides,
    )


def violation_class(value: float) -> str:
    if value < LOWER:
        return ViolationClass.LSL.value
    return ViolationClass.USL.value if value > UPPER else ViolationClass.IN_RANGE.value


def packs_frame(line_id: str, x: np.ndarray, label: np.ndarray | None, *, first_window: int = 0) -> pd.DataFrame:
    """Packs in the packer's layout, 5 s apart from T0; label None: unlabeled (no class, no source)."""
    n = len(x)
    starts = pd.Series([T0 + timedelta(seconds=5 * (first_window + i)) for i in range(n)]).dt.as_unit("ns")
    return pd.DataFrame(
        {
            "line_id": line_id,
            "run_id": "run-1",
            "window_start": starts,
            "window_end": starts + pd.Timedelta(seconds=10),
            "label": np.full(n, np.nan) if label is None else label,
            "label_class": [None] * n if label is None else [violation_class(v) for v in label],
            "label_source": None if label is None else "measured",
            "spec_lower": LOWER,
            "spec_upper": UPPER,
            "feed__mean": x,
            "quality__mean": np.nan,  # the target is never among the inputs here: NaN everywhere
        }
    )
