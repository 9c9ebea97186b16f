"""How a line's level predictions become violation decisions: the decision margin and its search grid.

A decision margin m is a fraction of the half spec band: a level is flagged USL when it is above
upper - m x (upper - lower) / 2 and LSL when below lower + m x (upper - lower) / 2
(model_runtime/decision.py). m = 0 flags only predicted crossings; a larger m flags earlier and
trades precision for recall. Training picks m per line on out-of-fold predictions of its training
folds (sagemaker_pipelines/steps/operating_point.py); the payload carries it to the gateway.
"""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from .common import Contract

# m < 1 keeps the LSL threshold below the USL one, so no level is both
MARGIN_LIMIT = 1.0


def check_margin(margin: object, field: str = "decision_margin") -> float:
    """The margin as a float when finite and 0 <= margin < MARGIN_LIMIT; ValueError naming the field otherwise."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise ValueError(f"{field}={margin!r} must be a number")
    if not (math.isfinite(margin) and 0 <= margin < MARGIN_LIMIT):
        raise ValueError(f"{field}={margin!r} must be finite with 0 <= {field} < {MARGIN_LIMIT:g}")
    return float(margin)


class DecisionConfig(Contract):
    """The violation operating point training aims at, and the margins it may choose from."""

    target_recall_violation: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="training picks the smallest decision margin whose out-of-fold violation recall reaches this "
        "with at least min_precision_violation (the best precision that reaches it); when none does, the margin "
        "of the best violation F1",
    )
    min_precision_violation: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="a margin that reaches the target recall only below this out-of-fold violation precision is "
        "not taken (flagging most packs would reach any recall); 0: recall alone decides",
    )
    max_margin: float = Field(
        default=0.8, ge=0, lt=MARGIN_LIMIT, description="largest margin tried (a fraction of the half spec band)"
    )
    margin_step: float = Field(default=0.05, gt=0, le=0.5, description="spacing of the margins tried from 0")

    @model_validator(mode="after")
    def _grid(self) -> DecisionConfig:
        if len(self.margins) > 201:
            raise ValueError(f"max_margin={self.max_margin} / margin_step={self.margin_step} tries over 201 margins")
        return self

    @property
    def margins(self) -> list[float]:
        """0, step, 2 x step, ... up to max_margin (rounded so that the grid reads as written)."""
        count = int(math.floor(self.max_margin / self.margin_step + 1e-9)) + 1
        return [round(i * self.margin_step, 9) for i in range(count)]
