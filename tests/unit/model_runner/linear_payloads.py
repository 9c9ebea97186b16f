"""Small linear payloads whose prediction is easy to state: weight x (last cold OD of the window) + bias."""

from __future__ import annotations

import numpy as np

from edgeloop.model_runtime.linear_format import LinearModel
from edgeloop.model_runtime.model_format import write_payload
from edgeloop.schemas import load_use_case

USE_CASE = load_use_case("extrusion")
LAST_COLD = "cold_od_average__last"


def last_cold_od_payload(
    version: str = "1.0.0", *, bias: float = 0.0, weight: float = 1.0, features: list[str] | None = None
) -> bytes:
    features = features or USE_CASE.feature_names
    weights = np.zeros(len(features), dtype=np.float32)
    weights[features.index(LAST_COLD)] = weight
    return write_payload(
        LinearModel(weights=weights, bias=bias),
        model_id="extrusion-line-1",
        version=version,
        objective="reg:squarederror",
        base_score=0.0,
        features=features,
    )
