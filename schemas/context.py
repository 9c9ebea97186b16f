"""Context intervals: what the line was doing when, so samples can be grouped and labeled."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from .common import Contract, Identifier, UtcDatetime


class ContextKind(StrEnum):
    RUN = "run"  # a production run of one product; carries its spec limits
    STATE = "state"  # running / idle / down / changeover
    SHIFT = "shift"
    WORK_ORDER = "work_order"


class SpecLimits(Contract):
    """The tolerance [lower, upper] of the quality target during a run."""

    target_metric: str
    lower: float
    upper: float

    @model_validator(mode="after")
    def _ordered(self) -> "SpecLimits":
        if not self.lower < self.upper:
            raise ValueError(f"lower={self.lower} must be below upper={self.upper}")
        return self


class ContextInterval(Contract):
    kind: ContextKind
    interval_id: str = Field(min_length=1, max_length=128)
    line_id: Identifier
    start: UtcDatetime
    end: UtcDatetime = Field(description="exclusive")
    value: str = Field(default="", description="e.g. the product code, state name or shift name")
    spec: SpecLimits | None = Field(default=None, description="only for kind=run")

    @model_validator(mode="after")
    def _valid_span(self) -> "ContextInterval":
        if not self.start < self.end:
            raise ValueError(f"start={self.start.isoformat()} must be before end={self.end.isoformat()}")
        if self.spec is not None and self.kind is not ContextKind.RUN:
            raise ValueError(f"spec limits belong to run intervals, not kind={self.kind.value}")
        return self
