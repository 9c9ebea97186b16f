"""Retraining (issue 17): an event in, the decided starts of the use case's pipeline out.

The hourly schedule ("Scheduled Event" from aws.events) asks for every configured line that is due;
a MODEL_DEGRADED_DETAIL_TYPE event from live accuracy asks for its own line. cloud/retraining.py
decides; here a start claims the line in the monitoring table (a conditional write: one start per
line within the cool-down, however many events race), starts the execution with a token derived
from the trigger (a redelivered event starts nothing twice), announces it (RETRAINING_DETAIL_TYPE)
and records its ARN on the line's item.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgeloop.cloud.pipeline_execution import executing_lines, execution_parameters
from edgeloop.cloud.retraining import (
    Decision,
    RetrainingStarted,
    RetrainingTrigger,
    claim_cutoff,
    decide_asking_what_runs,
    degraded_trigger,
    item_expiry,
)
from edgeloop.cloud.retraining_table import RetrainingTable
from edgeloop.schemas import names
from edgeloop.schemas.use_case import UseCaseConfig

SCHEDULE_SOURCE = "aws.events"
SCHEDULED_EVENT = "Scheduled Event"


class RetrainingResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    started: list[RetrainingStarted] = []
    held: list[Decision] = []  # triggers that asked and were held back (executing, cool-down, started)
    errors: dict[str, str] = {}  # line -> why its start failed (the claim was given back)


def event_triggers(event: Mapping[str, Any]) -> tuple[list[RetrainingTrigger], datetime | None]:
    """(degraded triggers, the schedule's time or None) of an EventBridge event; anything else is refused."""
    source, detail_type = event.get("source"), event.get("detail-type")
    try:
        at = datetime.fromisoformat(str(event["time"]))
    except (KeyError, ValueError):
        raise ValueError(f"event time={event.get('time')!r} is not an ISO timestamp") from None
    if source == names.EVENT_SOURCE and detail_type == names.MODEL_DEGRADED_DETAIL_TYPE:
        return [degraded_trigger(event.get("detail"), at)], None
    if source == SCHEDULE_SOURCE and detail_type == SCHEDULED_EVENT:
        return [], at
    raise ValueError(
        f"event source={source!r} detail-type={detail_type!r}: retraining takes {SCHEDULED_EVENT!r} from "
        f"{SCHEDULE_SOURCE!r} or {names.MODEL_DEGRADED_DETAIL_TYPE!r} from {names.EVENT_SOURCE!r}"
    )


def run_retraining(
    event: Mapping[str, Any],
    *,
    use_case: UseCaseConfig,
    line_ids: Sequence[str],
    table: RetrainingTable,
    sagemaker: Any,
    eventbridge: Any,
    event_bus: str,
    now: datetime,
) -> RetrainingResult:
    """Decide on the event's triggers and start what may start; a line whose start fails is reported in
    `errors` (its claim given back) and the others still start."""
    degraded, scheduled_at = event_triggers(event)
    lines = list(line_ids) if scheduled_at is not None else []  # a degraded event decides its own line only
    pipeline = names.pipeline_name(use_case.use_case)
    states = table.states([*lines, *(t.line_id for t in degraded)])

    decisions, error = decide_asking_what_runs(
        lambda: executing_lines(sagemaker, pipeline, now),
        config=use_case.monitoring,
        now=now,
        lines=lines,
        states=states,
        degraded=degraded,
        pipeline_name=pipeline,
        scheduled_at=scheduled_at,
    )
    if error is not None:  # never start blind: a line may have an execution running
        raise error
    started, held, errors = [], [d for d in decisions if d.trigger and not d.start], {}
    starter = _Starter(use_case, pipeline, table, sagemaker, eventbridge, event_bus, now)
    for decision in (d for d in decisions if d.start):
        try:
            outcome = starter.start(decision.trigger)
        except Exception as exc:  # noqa: BLE001 (one line's failure must not hold back the others)
            errors[decision.line_id] = f"{type(exc).__name__}: {exc}"
            continue
        if isinstance(outcome, RetrainingStarted):
            started.append(outcome)
        else:
            held.append(decision.model_copy(update={"start": False, "why": outcome}))
    return RetrainingResult(started=started, held=held, errors=errors)


class _Starter:
    def __init__(
        self,
        use_case: UseCaseConfig,
        pipeline: str,
        table: RetrainingTable,
        sagemaker: Any,
        eventbridge: Any,
        event_bus: str,
        now: datetime,
    ) -> None:
        self.use_case, self.pipeline, self.table = use_case, pipeline, table
        self.sagemaker, self.eventbridge, self.event_bus, self.now = sagemaker, eventbridge, event_bus, now

    def start(self, trigger: RetrainingTrigger) -> RetrainingStarted | str:
        """The started execution, or why the line was held after all (another start claimed it first)."""
        token = trigger.token(self.pipeline)
        config = self.use_case.monitoring
        cutoff, expires = claim_cutoff(config, trigger, self.now), item_expiry(config, self.now)
        previous = self.table.claim(trigger, token, now=self.now, cutoff=cutoff, expires=expires)
        if previous is None:
            return f"another start claimed line {trigger.line_id} first (monitoring table item)"
        try:
            arn = self.sagemaker.start_pipeline_execution(
                PipelineName=self.pipeline,
                PipelineParameters=execution_parameters(line_id=trigger.line_id),
                PipelineExecutionDisplayName=trigger.display_name(),
                PipelineExecutionDescription=trigger.description(),
                ClientRequestToken=token,
            )["PipelineExecutionArn"]
        except Exception:
            self.table.release(trigger.line_id, token, previous)
            raise
        started = RetrainingStarted(
            line_id=trigger.line_id,
            use_case=self.use_case.use_case,
            pipeline_name=self.pipeline,
            execution_arn=arn,
            display_name=trigger.display_name(),
            trigger=trigger.kind,
            reason=trigger.reason,
            model_id=trigger.model_id,
            version=trigger.version,
            windows=trigger.windows,
            started_at=self.now,
            client_request_token=token,
        )
        # announced before the ARN is recorded: a failure here leaves the claim open for the retried
        # event, whose start (the same token) SageMaker answers with this same execution
        self._announce(started)
        self.table.record_start(trigger.line_id, token, arn)
        return started

    def _announce(self, started: RetrainingStarted) -> None:
        response = self.eventbridge.put_events(
            Entries=[
                {
                    "Source": names.EVENT_SOURCE,
                    "DetailType": names.RETRAINING_DETAIL_TYPE,
                    "Detail": json.dumps(started.model_dump(mode="json")),
                    "Resources": [started.execution_arn],
                    "EventBusName": self.event_bus,
                }
            ]
        )
        if response.get("FailedEntryCount"):
            (entry,) = response["Entries"]
            raise RuntimeError(
                f"PutEvents refused the {names.RETRAINING_DETAIL_TYPE!r} event of line {started.line_id}: "
                f"{entry.get('ErrorCode')}: {entry.get('ErrorMessage')}"
            )
