"""Context intervals: what the line was doing when, so samples can be grouped and labeled."""

from __future__ import annotations

from pydantic import Field, model_validator

from .common import Contract, Identifier, UtcDatetime
from .compat import StrEnum


class ContextKind(StrEnum):
    RUN = "run"  # a production run of one product; carries its spec limits
    STATE = "state"  # running / idle / down / changeover
    SHIFT = "shift"
    WORK_ORDER = "work_order"
    # Spec limits in force, when they move within a run (setpoint ± band, run median ± band): they
    # override the active run's own limits for as long as they are active.
    LIMITS = "limits"


SPEC_KINDS = (ContextKind.RUN, ContextKind.LIMITS)


class SpecLimits(Contract):
    """The tolerance [lower, upper] of the quality target during a run."""

    target_metric: str
    lower: float
    upper: float

    @model_validator(mode="after")
    def _ordered(self) -> SpecLimits:
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
    spec: SpecLimits | None = Field(default=None, description="only for kind=run (optional) and kind=limits (required)")

    @model_validator(mode="after")
    def _valid_span(self) -> ContextInterval:
        if not self.start < self.end:
            raise ValueError(f"start={self.start.isoformat()} must be before end={self.end.isoformat()}")
        if self.spec is not None and self.kind not in SPEC_KINDS:
            raise ValueError(f"spec limits belong to run or limits intervals, not kind={self.kind.value}")
        if self.spec is None and self.kind is ContextKind.LIMITS:
            raise ValueError("a limits interval needs spec limits")
        return self


class ActiveContext(Contract):
    """The interval of one kind that is active during a sub-interval."""

    interval_id: str = Field(min_length=1, max_length=128)
    value: str = ""


class SubInterval(Contract):
    """The longest period of a line during which every context kind is constant.

    Context intervals of all kinds pre-joined into one timeline (Mímir III-B), so metrics join one
    table instead of one window join per kind.
    """

    line_id: Identifier
    start: UtcDatetime
    end: UtcDatetime = Field(description="exclusive")
    contexts: dict[ContextKind, ActiveContext] = Field(
        default_factory=dict, description="the active interval per kind; a kind absent has none active"
    )
    spec: SpecLimits | None = Field(
        default=None, description="the limits in force: the active limits interval's, else the active run's, if any"
    )

    @model_validator(mode="after")
    def _valid(self) -> SubInterval:
        if not self.start < self.end:
            raise ValueError(f"start={self.start.isoformat()} must be before end={self.end.isoformat()}")
        if self.spec is not None and not any(kind in self.contexts for kind in SPEC_KINDS):
            raise ValueError("spec limits need an active run or limits interval in contexts")
        return self

    def interval_id(self, kind: ContextKind) -> str | None:
        active = self.contexts.get(kind)
        return active.interval_id if active else None

    def value(self, kind: ContextKind) -> str | None:
        active = self.contexts.get(kind)
        return active.value if active else None
