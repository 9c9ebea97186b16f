"""When a line's pipeline runs again (issue 17): the triggers, and the one rule that decides on them.

Two triggers start a line's pipeline: its model degraded (functions/live_accuracy's
MODEL_DEGRADED_DETAIL_TYPE event), or its last start is `retrain_every_days` old (the hourly
schedule; None: never scheduled). Either is held back while an execution of the line is
Executing, or within `retrain_cooldown_hours` of the line's last start; a trigger that already
started its execution (the same token) starts nothing again. `decide_retraining` is pure: the
retraining function acts on its decisions, `edgeloop monitor` shows them ("what would fire").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeloop.cloud.pipeline_execution import (
    client_request_token,
    execution_description,
    execution_display_name,
)
from edgeloop.schemas import names
from edgeloop.schemas.common import Identifier, UtcDatetime, validation_problems
from edgeloop.schemas.monitoring import ModelDegradedDetail, MonitoringConfig

ITEM_EXPIRY_MARGIN = timedelta(days=30)


def retraining_item_key(line_id: str) -> str:
    """The line's item in the monitoring table."""
    return f"{names.RETRAINING_KEY_PREFIX}{line_id}"


class TriggerKind(StrEnum):
    DEGRADED = "degraded"
    SCHEDULED = "scheduled"


class RetrainingTrigger(BaseModel):
    """What asks for a line's pipeline: a degraded model (with live accuracy's finding) or the schedule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TriggerKind
    line_id: Identifier
    at: UtcDatetime = Field(description="the event's time: a degraded finding's, or the schedule's hour")
    reason: str = Field(max_length=1000)
    model_id: str | None = None
    version: str | None = None
    windows: tuple[str, ...] = Field(default=(), description="the degraded windows, as live accuracy named them")

    @property
    def identity(self) -> str:
        """The same for a redelivered event: a degraded finding by model, version and last window; the
        schedule by its hour (a second hourly run is a new trigger, which the cool-down holds back)."""
        if self.kind is TriggerKind.DEGRADED:
            last = self.windows[-1] if self.windows else self.at.isoformat()
            return f"{self.model_id}|{self.version}|{last}"
        return self.at.replace(minute=0, second=0, microsecond=0).isoformat()

    def token(self, pipeline_name: str) -> str:
        return client_request_token(pipeline_name, self.line_id, self.kind.value, self.identity)

    def display_name(self) -> str:
        return execution_display_name(self.line_id, self.at, self.kind.value)

    def description(self) -> str:
        model = f"; model {self.model_id} {self.version}" if self.model_id else ""
        windows = f"; windows {self.windows[0]} .. {self.windows[-1]}" if self.windows else ""
        return execution_description(
            f"edgeloop retraining of line {self.line_id}: {self.kind.value} at {self.at.isoformat()} "
            f"({self.reason}){model}{windows}"
        )


class LineRetraining(BaseModel):
    """The monitoring table's item retraining#<line>: the line's last start and what made it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    line_id: Identifier
    started_at: UtcDatetime
    trigger: TriggerKind
    reason: str
    token: str
    execution_arn: str | None = None  # None: claimed, not (yet) started or recorded


class Decision(BaseModel):
    """One line's verdict: start (with its trigger), or why not."""

    model_config = ConfigDict(frozen=True)

    line_id: Identifier
    start: bool
    why: str
    trigger: RetrainingTrigger | None = None
    next_scheduled_at: UtcDatetime | None = None


def scheduled_trigger(line_id: str, at: datetime) -> RetrainingTrigger:
    return RetrainingTrigger(kind=TriggerKind.SCHEDULED, line_id=line_id, at=at, reason="scheduled retraining")


def degraded_trigger(detail: Mapping[str, Any], at: datetime) -> RetrainingTrigger:
    """A trigger from a MODEL_DEGRADED_DETAIL_TYPE event's detail (schemas.monitoring.ModelDegradedDetail)."""
    if not isinstance(detail, Mapping) or not detail.get("line_id"):
        raise ValueError(f"degraded event detail={detail!r}: line_id is missing")
    try:
        finding = ModelDegradedDetail.model_validate(detail)
    except ValidationError as exc:
        problems = validation_problems(exc, root="detail", missing="is missing")
        raise ValueError(f"degraded event of line {detail['line_id']!r}: {problems}") from None
    return RetrainingTrigger(
        kind=TriggerKind.DEGRADED,
        line_id=finding.line_id,
        at=at,
        reason=finding.reason[:1000] or "model degraded",
        model_id=finding.model_id,
        version=finding.version,
        windows=tuple(window.isoformat() for window in finding.windows),
    )


def next_scheduled_at(config: MonitoringConfig, state: LineRetraining | None, now: datetime) -> datetime | None:
    """When the schedule asks for the line next (None: scheduling is off); a line never started: now."""
    if config.retrain_every_days is None:
        return None
    if state is None:
        return now
    return state.started_at + timedelta(days=config.retrain_every_days)


def item_expiry(config: MonitoringConfig, now: datetime) -> datetime:
    """When a line's item may go (TTL): a month after the longest hold it enforces, so the schedule never
    mistakes an expired item for a line never started."""
    hold = timedelta(days=config.retrain_every_days or 0) + timedelta(hours=config.retrain_cooldown_hours)
    return now + hold + ITEM_EXPIRY_MARGIN


def claim_cutoff(config: MonitoringConfig, trigger: RetrainingTrigger, now: datetime) -> datetime:
    """A start may claim the line only if its last start is not after this (the conditional write's bound)."""
    hold = timedelta(hours=config.retrain_cooldown_hours)
    if trigger.kind is TriggerKind.SCHEDULED and config.retrain_every_days is not None:
        hold = max(hold, timedelta(days=config.retrain_every_days))
    return now - hold


def decide_retraining(
    *,
    config: MonitoringConfig,
    now: datetime,
    lines: Iterable[str],
    states: Mapping[str, LineRetraining],
    degraded: Sequence[RetrainingTrigger] = (),
    running: Mapping[str, str] | None = None,
    pipeline_name: str,
    scheduled_at: datetime | None = None,
) -> list[Decision]:
    """One decision per line (the scheduled lines and every degraded one), in line order.

    `states`: the lines' retraining items; `running`: {line: ARN} of Executing executions;
    `scheduled_at`: the schedule event's time (its hour names a scheduled trigger; default `now`).
    A degraded trigger outranks the schedule for its line (one start carries both)."""
    running = running or {}
    wanted: dict[str, RetrainingTrigger] = {}
    for trigger in degraded:
        wanted.setdefault(trigger.line_id, trigger)
    decisions = []
    for line_id in sorted({*lines, *wanted}):
        state = states.get(line_id)
        due = next_scheduled_at(config, state, now)
        trigger = wanted.get(line_id)
        if trigger is None and due is not None and due <= now:
            trigger = scheduled_trigger(line_id, scheduled_at or now)
        if trigger is None:
            why = "scheduled retraining is off" if due is None else f"next scheduled start at {due.isoformat()}"
            decisions.append(Decision(line_id=line_id, start=False, why=why, next_scheduled_at=due))
            continue
        why = _held_back(config, trigger, state, running.get(line_id), pipeline_name, now)
        decisions.append(
            Decision(
                line_id=line_id, start=why is None, why=why or trigger.reason, trigger=trigger, next_scheduled_at=due
            )
        )
    return decisions


def decide_asking_what_runs(
    running_lines: Callable[[], Mapping[str, str]], **decide: Any
) -> tuple[list[Decision], Exception | None]:
    """decide_retraining (its keyword arguments but `running`), asking `running_lines()` (SageMaker's
    Executing executions of the pipeline, {line: ARN}) only when a start would fire: most rounds start
    nothing and make no SageMaker call. When SageMaker cannot answer, the decisions made without it
    come back with the error: the function raises it, `edgeloop monitor` shows it."""
    decisions = decide_retraining(**decide, running={})
    if not any(d.start for d in decisions):
        return decisions, None
    try:
        running = running_lines()
    except (ClientError, BotoCoreError) as exc:
        return decisions, exc
    return decide_retraining(**decide, running=running), None


def _held_back(
    config: MonitoringConfig,
    trigger: RetrainingTrigger,
    state: LineRetraining | None,
    executing_arn: str | None,
    pipeline_name: str,
    now: datetime,
) -> str | None:
    if state is not None and state.token == trigger.token(pipeline_name) and state.execution_arn:
        return f"already started by this {trigger.kind.value} trigger: {state.execution_arn}"
    if executing_arn:
        return f"an execution of line {trigger.line_id} is Executing: {executing_arn}"
    if state is not None and state.started_at > claim_cutoff(config, trigger, now):
        if state.token == trigger.token(pipeline_name):
            return None  # this trigger's own claim, its start not recorded: start again (same token)
        until = state.started_at + timedelta(hours=config.retrain_cooldown_hours)
        return (
            f"within the cool-down: last start {state.started_at.isoformat()} ({state.trigger.value}: "
            f"{state.reason}); retrain_cooldown_hours={config.retrain_cooldown_hours} holds starts until "
            f"{until.isoformat()}"
        )
    return None


class RetrainingStarted(BaseModel):
    """Detail of the RETRAINING_DETAIL_TYPE event: which execution a trigger started, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line_id: Identifier
    use_case: Identifier
    pipeline_name: str
    execution_arn: str
    display_name: str
    trigger: TriggerKind
    reason: str
    model_id: str | None = None
    version: str | None = None
    windows: tuple[str, ...] = ()
    started_at: UtcDatetime
    client_request_token: str
