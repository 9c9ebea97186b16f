"""Violation operating points of a level predictor: precision and recall per decision margin, and the choice.

A violation (LSL or USL) counts as hit only when predicted as that same class; precision = hits /
flagged violations, recall = hits / actual violations, over the rows given (one definition,
cloud/scoring.py, also used by score_predictions). `precision_recall_curve` scores a grid of margins (model_runtime/decision.py);
`choose_margin` picks the smallest margin whose recall reaches the target (with at least
`min_precision`), which on a curve whose recall grows with the margin is the best precision that
reaches it; when no margin does, the point of the best F1 (ties: the smaller margin), with
`reaches_target` False. The precision floor keeps a wide margin that flags nearly every pack (any
recall, little precision, an F1 below the trivial baselines') from being taken for reaching the target. Training calls it on
out-of-fold predictions of its training folds only (train.py), never on reference rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

# one definition of the violation figures, shared with live accuracy (cloud/scoring.py)
from edgeloop.cloud.scoring import f1_score, violation_scores
from edgeloop.model_runtime.decision import classify_levels
from edgeloop.schemas.common import Contract
from edgeloop.schemas.decision import MARGIN_LIMIT, DecisionConfig

DEFAULT_MARGINS: tuple[float, ...] = tuple(DecisionConfig().margins)
FRAME_COLUMNS = ("label_class", "spec_lower", "spec_upper")


class OperatingPoint(Contract):
    """Violation precision, recall and F1 of a predictor at one decision margin."""

    margin: float = Field(
        ge=0, lt=MARGIN_LIMIT, description="fraction of the half spec band (model_runtime/decision.py)"
    )
    precision: float | None = Field(description="None: no violation flagged at this margin")
    recall: float | None = Field(description="None: the rows hold no violation")
    f1: float | None = Field(description="None: the rows hold no violation; 0: none hit")
    reaches_target: bool | None = Field(
        default=None, description="choose_margin: whether recall reaches the target; None: a curve point"
    )


def _check_frame(levels: np.ndarray, frame: pd.DataFrame) -> None:
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    if len(levels) != len(frame):
        raise ValueError(f"levels has {len(levels)} rows, frame {len(frame)}")


def precision_recall_curve(
    levels: np.ndarray, frame: pd.DataFrame, margins: tuple[float, ...] | list[float] = DEFAULT_MARGINS
) -> list[OperatingPoint]:
    """One OperatingPoint per margin (in the order given) of level predictions on frame's rows."""
    levels = np.asarray(levels)
    _check_frame(levels, frame)
    lower, upper = frame["spec_lower"].to_numpy(np.float64), frame["spec_upper"].to_numpy(np.float64)
    actual = frame["label_class"].astype(str).to_numpy()
    points = []
    for margin in margins:
        precision, recall, f1 = violation_scores(classify_levels(levels, lower, upper, margin), actual)
        points.append(OperatingPoint(margin=margin, precision=precision, recall=recall, f1=f1))
    return points


def choose_margin(
    levels: np.ndarray,
    frame: pd.DataFrame,
    target_recall: float,
    margins: tuple[float, ...] | list[float] = DEFAULT_MARGINS,
    *,
    min_precision: float = 0.0,
) -> OperatingPoint:
    """The smallest margin whose violation recall reaches target_recall at a precision of at least
    min_precision; else the best-F1 point, flagged. Rows without any violation: margin 0 (nothing to
    tune on), flagged."""
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall={target_recall!r} must be in (0, 1]")
    curve = sorted(precision_recall_curve(levels, frame, margins), key=lambda p: p.margin)
    if not curve:
        raise ValueError("margins is empty")
    reaching = [
        p for p in curve if p.recall is not None and p.recall >= target_recall and (p.precision or 0.0) >= min_precision
    ]
    if reaching:
        return reaching[0].model_copy(update={"reaches_target": True})
    if curve[0].recall is None:
        return precision_recall_curve(levels, frame, [0.0])[0].model_copy(update={"reaches_target": False})
    best = max(curve, key=lambda p: (p.f1 or 0.0, -p.margin))
    return best.model_copy(update={"reaches_target": False})


def recall_at_precision(curve: list[OperatingPoint], precision: float) -> float | None:
    """The highest recall among the curve's points with precision >= `precision`; None when none has."""
    recalls = [p.recall for p in curve if p.precision is not None and p.precision >= precision and p.recall is not None]
    return max(recalls) if recalls else None


__all__ = [
    "DEFAULT_MARGINS",
    "OperatingPoint",
    "choose_margin",
    "f1_score",
    "precision_recall_curve",
    "recall_at_precision",
    "violation_scores",
]
