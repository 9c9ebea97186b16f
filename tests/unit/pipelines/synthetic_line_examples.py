"""Synthetic labeled metric packs with a learnable signal, shaped like packs/line=<id>/examples.parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgeloop.schemas.training import ViolationClass
from edgeloop.schemas.use_case import UseCaseConfig

SPEC_LOWER, SPEC_UPPER = 9.8, 10.2
RUN_ROWS = 30  # a run every 15 min (30 s stride): enough whole runs for the reference and the CV folds


def synthetic_examples(
    config: UseCaseConfig, line_id: str = "line-1", n: int = 600, seed: int = 0, start: str = "2026-03-01T06:00:00Z"
) -> pd.DataFrame:
    """The label follows a slow drift visible in two features (target mean and die temperature)."""
    rng = np.random.default_rng(seed)
    # A cycle (period 80 packs, 40 min) plus short-memory noise: every period of the series covers
    # the same range, so a tree model trained on the past can score the future and all classes occur.
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = 0.8 * noise[i - 1] + rng.normal(scale=0.04)
    drift = 0.3 * np.sin(2 * np.pi * np.arange(n) / 80 + rng.uniform(0, 2 * np.pi)) + noise
    window_start = pd.Timestamp(start) + pd.to_timedelta(np.arange(n) * config.example_stride_s, unit="s")
    frame = pd.DataFrame(
        {
            "line_id": line_id,
            "run_id": [f"run-{i // RUN_ROWS}" for i in range(n)],
            "window_start": window_start,
            "window_end": window_start + pd.Timedelta(seconds=config.pack_window_s),
        }
    )
    features = rng.normal(size=(n, len(config.feature_names)))
    features[rng.random(features.shape) < 0.02] = np.nan
    names = config.feature_names
    features[:, names.index(f"{config.target_metric}__mean")] = 10 + drift + rng.normal(scale=0.02, size=n)
    if config.current_value_feature in names:  # the target's value at the pack end: what persistence predicts
        features[:, names.index(config.current_value_feature)] = 10 + drift + rng.normal(scale=0.02, size=n)
    features[:, names.index("temp_die__last")] = 200 + 5 * drift + rng.normal(scale=0.2, size=n)
    frame = pd.concat([frame, pd.DataFrame(features, columns=names)], axis=1)
    label = 10 + 1.2 * drift + rng.normal(scale=0.03, size=n)
    frame["label"] = label
    above = np.where(label > SPEC_UPPER, ViolationClass.USL.value, ViolationClass.IN_RANGE.value)
    frame["label_class"] = np.where(label < SPEC_LOWER, ViolationClass.LSL.value, above)
    frame["label_source"] = "measured"
    frame["spec_lower"] = SPEC_LOWER
    frame["spec_upper"] = SPEC_UPPER
    return frame
