"""Labeled metric packs: the training examples the pipeline builds and the models learn from."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .common import Contract, Identifier, UtcDatetime


class ViolationClass(StrEnum):
    LSL = "lsl_violation"
    IN_RANGE = "in_range"
    USL = "usl_violation"


class LabelSource(StrEnum):
    MEASURED = "measured"
    AUTO = "auto"
    REVIEWED = "reviewed"


class TrainingExample(Contract):
    """One labeled metric pack with its features (a row of packs/line=<id>/examples.parquet).

    The pack covers [window_start, window_end); the label is the target metric averaged over
    [window_end + horizon, window_end + horizon + label_window).
    """

    line_id: Identifier
    run_id: str = Field(description="the production run the window belongs to")
    window_start: UtcDatetime
    window_end: UtcDatetime
    features: dict[str, float]
    label: float
    label_class: ViolationClass
    label_source: LabelSource = LabelSource.MEASURED
    spec_lower: float
    spec_upper: float
