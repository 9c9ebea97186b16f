"""Retraining (functions/retraining): a line's pipeline starts again when live accuracy finds its model
degraded (a rule on MODEL_DEGRADED_DETAIL_TYPE events) or when its last start is retrain_every_days
old (an hourly schedule over the stack's edgeloop:lineIds); at most one Executing execution per line,
none within retrain_cooldown_hours of the last start (the monitoring table's retraining#<line> item).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from constructs import Construct

from edgeloop.schemas import names

from .alerts import account_arn, allow_items, allow_put_events
from .functions import FunctionFactory
from .ingestion import event_target

RETRAINING_SCHEDULE = events.Schedule.rate(Duration.hours(1))
# What the function reads and writes of its items: BatchGetItem (the lines' states), UpdateItem (claim,
# record), PutItem/DeleteItem (a failed start gives its claim back).
ITEM_ACTIONS = ["dynamodb:BatchGetItem", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem"]


def degraded_event_pattern() -> events.EventPattern:
    return events.EventPattern(source=[names.EVENT_SOURCE], detail_type=[names.MODEL_DEGRADED_DETAIL_TYPE])


class Retraining(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        factory: FunctionFactory,
        table: dynamodb.ITable,
        use_case_environment: Mapping[str, str],
        line_ids: Sequence[str],
        pipeline_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        environment = dict(use_case_environment)
        if line_ids:  # Lambda refuses an empty value: unset means "no scheduled lines"
            environment[names.LINE_IDS_ENV] = ",".join(line_ids)
        self.function = factory.create(
            self,
            "retraining",
            environment=environment,
            timeout=Duration.minutes(2),
            memory_mb=256,
            description="Starts a line's pipeline on a degraded model or every retrain_every_days (hourly check)",
        )
        allow_items(self.function, table, ITEM_ACTIONS, names.RETRAINING_KEY_PREFIX)
        allow_put_events(self.function, [names.RETRAINING_DETAIL_TYPE], reason="no wildcard")
        pipeline = account_arn("sagemaker", f"pipeline/{pipeline_name}")
        self.function.allow(
            actions=["sagemaker:StartPipelineExecution", "sagemaker:ListPipelineExecutions"],
            resources=[pipeline],
            reason="one pipeline, no wildcard",
        )
        self.function.allow(
            actions=["sagemaker:ListPipelineParametersForExecution"],
            resources=[f"{pipeline}/execution/*"],
            reason=f"reads the LineId of the {pipeline_name} pipeline's running executions; execution ids are generated",
        )
        schedule = events.Rule(
            self,
            "Schedule",
            schedule=RETRAINING_SCHEDULE,
            description="edgeloop: every hour -> retraining (lines whose last start is retrain_every_days old)",
        )
        schedule.add_target(event_target(self.function))
        degraded = events.Rule(
            self,
            "ModelDegraded",
            description="edgeloop: a line's model degraded (live accuracy) -> retraining",
            event_pattern=degraded_event_pattern(),
        )
        degraded.add_target(event_target(self.function))
