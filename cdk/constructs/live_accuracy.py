"""Live accuracy (functions/live_accuracy): every hour, landed predictions joined with the measurements
that have landed since, scored per line and model version (monitoring/), with EMF metrics and a
MODEL_DEGRADED_DETAIL_TYPE event when a line's degraded streak trips; and the alarm on that trip.

A window is scored only once both sides of its join can have landed (`landing_delay_minutes`): the
measurements reach curated/ within the compaction interval, the predictions reach predictions/ within
the model runner's default prediction flush (predictionFlushMaxLatencySeconds) plus the queue's batch
window; LANDING_MARGIN_MINUTES more covers the gateways' telemetry flush and a round's own run time.
Rounds write their state with conditional puts, so an overlapping retry cannot lose a window; no
reserved concurrency (a new account's 10 concurrent executions leave none to reserve).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from constructs import Construct

from edgeloop.schemas import names
from edgeloop.schemas.monitoring import DEGRADED_LINES_METRIC, LIVE_ACCURACY_SERVICE

from .alerts import account_arn, allow_put_events
from .functions import FunctionFactory
from .ingestion import INGEST_BATCH_WINDOW, event_target, grant_objects
from .storage import Storage

LIVE_ACCURACY_SCHEDULE = events.Schedule.rate(Duration.hours(1))
LANDING_MARGIN_MINUTES = 10
READ_PREFIXES = [names.PREDICTIONS_PREFIX, names.CURATED_PREFIX, names.CONTEXT_PREFIX, names.MONITORING_PREFIX]


def landing_delay_minutes(compaction_interval_minutes: int) -> int:
    """Minutes after a window's last label window ends until its measurements and predictions have landed."""
    predictions_s = names.DEFAULT_PREDICTION_FLUSH_MAX_LATENCY_S + INGEST_BATCH_WINDOW.to_seconds()
    return max(compaction_interval_minutes, math.ceil(predictions_s / 60)) + LANDING_MARGIN_MINUTES


def degraded_lines_metric() -> cloudwatch.Metric:
    """Lines whose degraded streak tripped in a round (live accuracy emits it every round, 0 included)."""
    return cloudwatch.Metric(
        namespace=names.PROJECT,
        metric_name=DEGRADED_LINES_METRIC,
        dimensions_map={"service": LIVE_ACCURACY_SERVICE},
        statistic="Maximum",
        period=Duration.hours(1),
    )


class LiveAccuracy(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        factory: FunctionFactory,
        use_case: str,
        use_case_environment: Mapping[str, str],
        compaction_interval_minutes: int,
    ) -> None:
        super().__init__(scope, construct_id)
        delay = landing_delay_minutes(compaction_interval_minutes)
        self.function = factory.create(
            self,
            "live_accuracy",
            environment={
                **use_case_environment,
                names.DATA_BUCKET_ENV: storage.data.bucket_name,
                names.LANDING_DELAY_MINUTES_ENV: str(delay),
            },
            needs_pandas=True,
            timeout=Duration.minutes(10),
            memory_mb=1024,
            description="Every hour: live accuracy of each line's model versions vs persistence and registration",
        )
        data = storage.data
        self.function.allow(
            actions=["s3:ListBucket"], resources=[data.bucket_arn], reason="listing the data bucket itself"
        )
        grant_objects(self.function, data, ["s3:GetObject"], READ_PREFIXES)
        grant_objects(self.function, data, ["s3:PutObject"], [names.MONITORING_PREFIX])
        allow_put_events(self.function, [names.MODEL_DEGRADED_DETAIL_TYPE], reason="no wildcard")
        group_prefix = names.model_package_group_name(use_case, "")
        self.function.allow(
            actions=["sagemaker:DescribeModelPackage"],
            resources=[account_arn("sagemaker", f"model-package/{group_prefix}*/*")],
            reason=f"reads the registered RMSE of any version in this use case's groups ({group_prefix}<line>)",
        )
        self.function.allow(
            actions=["sagemaker:ListModelPackages"],
            resources=["*"],
            reason="Resource '*' only for actions without resource-level permissions: sagemaker:ListModelPackages "
            "(a line's registered versions) and X-Ray's PutTraceSegments and PutTelemetryRecords (active tracing)",
        )
        rule = events.Rule(
            self,
            "Schedule",
            schedule=LIVE_ACCURACY_SCHEDULE,
            description="edgeloop: every hour -> live accuracy (predictions x measurements, degraded streaks)",
        )
        rule.add_target(event_target(self.function))
        self.degraded_alarm = factory.monitoring.alarm(
            self,
            "DegradedLinesAlarm",
            metric=degraded_lines_metric(),
            description="edgeloop live accuracy: a line's model degraded for monitoring.degraded_windows windows in "
            "a row (its pipeline is started again unless one runs or the cool-down holds it)",
        )
