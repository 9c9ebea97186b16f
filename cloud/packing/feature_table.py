"""Feature extractor: metric packs -> the feature table, via the shared `pack_features`.

The gateway's scorer calls `pack_features` on its live window; training data goes through the
same function here, so a model never sees features computed two ways.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgeloop.model_runtime.features import pack_features
from edgeloop.schemas import UseCaseConfig

CHUNK_PACKS = 2048  # bounds the float64 temporaries of pack_features (~50 MB for 300x10 packs)


def extract_features(packs: np.ndarray, use_case: UseCaseConfig) -> np.ndarray:
    """(n_packs, n_steps, n_metrics) -> float64 (n_packs, n_features) in feature_names order."""
    packs = np.asarray(packs)
    if packs.ndim != 3:
        raise ValueError(f"packs has shape {packs.shape}; expected (n_packs, n_steps, n_metrics)")
    if len(packs) == 0:
        return np.empty((0, len(use_case.feature_names)))
    chunks = [pack_features(packs[i : i + CHUNK_PACKS], use_case) for i in range(0, len(packs), CHUNK_PACKS)]
    # pack_features returns float32 (what the gateway scores with); widening to float64 is exact.
    return np.concatenate(chunks).astype(np.float64)


def feature_frame(features: np.ndarray, use_case: UseCaseConfig) -> pd.DataFrame:
    return pd.DataFrame(features, columns=use_case.feature_names, dtype=np.float64)
