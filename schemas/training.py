"""Labeled metric packs: the training examples the pipeline builds and the models learn from."""

from __future__ import annotations

from pydantic import Field, model_validator

from .common import Contract, Identifier, UtcDatetime
from .compat import StrEnum


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
    spec_lower: float = Field(
        description="lower spec limit in force at the label's time (window_end + horizon): the active limits "
        "interval's, else the run's; label_class is against these"
    )
    spec_upper: float = Field(description="upper spec limit in force at the label's time, like spec_lower")


# The examples table's columns besides the features (one column per feature name follows them).
EXAMPLE_META_COLUMNS = tuple(name for name in TrainingExample.model_fields if name != "features")


# --- semi-automatic labels: the review queue ----------------------------------------------------


class ProposalStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"  # the proposed label, as proposed
    CORRECTED = "corrected"  # a reviewer's own label or class


class LabelProposal(Contract):
    """A label the labeling model proposes for a pack whose target was not measured, awaiting review.

    Stored with the pack's features in label_review/line=<id>/proposals.parquet. The proposed class
    is the spec class of the proposed label; `confidence` is its probability under
    N(proposed_label, prediction_std^2). A pack the labeling model could not score (too few measured
    examples on the line) has no proposal: only a correction can label it.
    """

    proposal_id: str = Field(pattern=r"^[0-9a-f]{12}$", description="stable per line and window")
    line_id: Identifier
    run_id: str
    window_start: UtcDatetime
    window_end: UtcDatetime
    spec_lower: float
    spec_upper: float
    proposed_label: float | None = None
    proposed_class: ViolationClass | None = None
    prediction_std: float | None = Field(default=None, ge=0, description="labeling model's residual std")
    confidence: float = Field(ge=0, le=1, description="probability of proposed_class; 0 without a proposal")
    status: ProposalStatus = ProposalStatus.PENDING
    proposed_at: UtcDatetime
    reviewer: str | None = None
    decided_at: UtcDatetime | None = None
    final_label: float | None = None
    final_class: ViolationClass | None = None

    @model_validator(mode="after")
    def _decided_consistently(self) -> LabelProposal:
        decided = (self.reviewer, self.decided_at, self.final_label, self.final_class)
        if self.status is ProposalStatus.PENDING and any(v is not None for v in decided):
            raise ValueError(f"proposal {self.proposal_id} is pending but carries a decision")
        if self.status is not ProposalStatus.PENDING and any(v is None for v in decided):
            raise ValueError(
                f"proposal {self.proposal_id} is {self.status.value} but lacks reviewer, decided_at, "
                "final_label or final_class"
            )
        return self


class ReviewAction(StrEnum):
    ACCEPT = "accept"
    CORRECT = "correct"


class ReviewDecision(Contract):
    """A reviewer's verdict on one proposal: accept it, or correct it with a value or a class."""

    proposal_id: str = Field(pattern=r"^[0-9a-f]{12}$")
    action: ReviewAction
    reviewer: str = Field(min_length=1, max_length=128)
    decided_at: UtcDatetime
    value: float | None = Field(default=None, allow_inf_nan=False, description="corrected target value")
    label_class: ViolationClass | None = Field(default=None, description="corrected class, when no value is known")

    @model_validator(mode="after")
    def _one_correction(self) -> ReviewDecision:
        given = [name for name in ("value", "label_class") if getattr(self, name) is not None]
        if self.action is ReviewAction.ACCEPT and given:
            raise ValueError(f"accepting proposal {self.proposal_id} takes no {given[0]}")
        if self.action is ReviewAction.CORRECT and len(given) != 1:
            raise ValueError(
                f"correcting proposal {self.proposal_id} needs exactly one of value or label_class, got {given or 'none'}"
            )
        return self
