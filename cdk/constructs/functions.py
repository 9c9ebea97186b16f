"""One edgeloop Lambda function with everything it needs to run unattended.

Each function gets its own role (no managed policies: logs are granted on its own log group),
a log group with a retention, an encrypted SSL-only SQS queue as its on-failure destination
(every edgeloop function is invoked asynchronously: IoT rules and EventBridge), and alarms on
errors and on that queue's depth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from edgeloop.schemas import names

from .lambda_runtime import RUNTIME_ENVIRONMENT, unzipped_bytes
from .layers import ARCHITECTURE, PYTHON_RUNTIME, PublicLayers, check_unzipped_size
from .monitoring import Monitoring
from .nag import acknowledge, allow

ASYNC_RETRY_ATTEMPTS = 2
MAX_EVENT_AGE = Duration.hours(6)
FAILURE_RETENTION = Duration.days(14)
LOG_RETENTION = logs.RetentionDays.THREE_MONTHS


@dataclass(frozen=True)
class FunctionFactory:
    """What all functions share: the staged code, the public layers, the alarm topic.

    `code_bytes` is the code's unzipped size: each function's code plus its layers is checked
    against Lambda's 250 MB limit when the function is created (`from_asset` measures it)."""

    code: lambda_.Code
    layers: PublicLayers
    monitoring: Monitoring
    common_environment: Mapping[str, str] = field(default_factory=dict)
    code_bytes: int = 0

    @classmethod
    def from_asset(cls, asset: Path, *, layers: PublicLayers, monitoring: Monitoring) -> FunctionFactory:
        """Code from a staged asset directory (cdk/lambda_asset.py), with its size measured."""
        return cls(
            code=lambda_.Code.from_asset(str(asset)),
            layers=layers,
            monitoring=monitoring,
            code_bytes=unzipped_bytes(Path(asset)),
        )

    def create(
        self,
        scope: Construct,
        key: str,
        *,
        environment: Mapping[str, str],
        needs_pandas: bool = False,
        timeout: Duration = Duration.seconds(30),
        memory_mb: int = 512,
        description: str,
        on_success: lambda_.IDestination | None = None,
    ) -> EdgeloopFunction:
        layers = [self.layers.powertools] + ([self.layers.pandas] if needs_pandas else [])
        published = [self.layers.powertools_spec] + ([self.layers.pandas_spec] if needs_pandas else [])
        check_unzipped_size(key, self.code_bytes, published)
        return EdgeloopFunction(
            scope,
            _construct_id(key),
            key=key,
            code=self.code,
            layers=layers,
            monitoring=self.monitoring,
            environment={**self.common_environment, **environment},
            timeout=timeout,
            memory_mb=memory_mb,
            description=description,
            on_success=on_success,
        )


class EdgeloopFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: str,
        code: lambda_.Code,
        layers: Iterable[lambda_.ILayerVersion],
        monitoring: Monitoring,
        environment: Mapping[str, str],
        timeout: Duration,
        memory_mb: int,
        description: str,
        on_success: lambda_.IDestination | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if key not in names.FUNCTIONS:
            raise ValueError(f"function key={key!r} is not one of names.FUNCTIONS {sorted(names.FUNCTIONS)}")
        self.key = key
        self.log_group = logs.LogGroup(self, "Logs", retention=LOG_RETENTION)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"edgeloop {key} function",
        )
        self.log_group.grant_write(self.role)
        self.failure_queue = sqs.Queue(
            self,
            "FailureQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=FAILURE_RETENTION,
        )
        acknowledge(
            self.failure_queue,
            "SQS3",
            f"this queue is the on-failure destination (dead-letter queue) of the {key} function; "
            "a DLQ of a DLQ would only move the same records again",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=PYTHON_RUNTIME,
            architecture=ARCHITECTURE,
            handler=names.FUNCTIONS[key],
            code=code,
            layers=list(layers),
            environment={
                **RUNTIME_ENVIRONMENT,
                "POWERTOOLS_SERVICE_NAME": key,
                "POWERTOOLS_METRICS_NAMESPACE": names.PROJECT,
                **environment,
            },
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            timeout=timeout,
            memory_size=memory_mb,
            retry_attempts=ASYNC_RETRY_ATTEMPTS,
            max_event_age=MAX_EVENT_AGE,
            on_failure=destinations.SqsDestination(self.failure_queue),
            # Lambda allows one async-invoke configuration per function, so a success destination
            # must be set here, beside the failure one.
            on_success=on_success,
        )
        acknowledge(
            self.role,
            "IAM5[Resource::*]",
            "X-Ray's PutTraceSegments and PutTelemetryRecords (active tracing) have no resource-level permissions",
        )
        acknowledge(
            self.function,
            "L1",
            f"pinned to {PYTHON_RUNTIME.name}: the public Powertools and AWS SDK for pandas layer builds the "
            "functions use are per Python version (see constructs/layers.py); they are raised together",
        )
        monitoring.alarm(
            self,
            "ErrorsAlarm",
            metric=self.function.metric_errors(period=Duration.minutes(5)),
            description=f"edgeloop {key}: the function raised errors",
        )
        monitoring.alarm(
            self,
            "FailureQueueAlarm",
            metric=self.failure_queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(5)),
            description=f"edgeloop {key}: events failed after retries and wait in the failure queue for a redrive",
        )

    def allow(
        self,
        *,
        actions: Iterable[str],
        resources: Iterable[str],
        reason: str,
        conditions: Mapping[str, Any] | None = None,
    ) -> iam.PolicyStatement:
        return allow(self.role, actions=actions, resources=resources, reason=reason, conditions=conditions)


def _construct_id(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_"))
