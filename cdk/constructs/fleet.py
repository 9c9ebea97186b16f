"""The fleet: device and deployment tables, the registry and status intake (IoT rule targets),
and the orchestrator that turns an approved model package into a Greengrass rollout.

Status intake shares the orchestrator's settings (the rollout policy among them, from the
edgeloop:* rollout context keys) and permissions: a device's status report can complete a wave,
and then status intake starts the next one. The wave controller runs every
minute (EventBridge schedule): it marks silent devices OFFLINE, times rollouts out, finishes
interrupted rollbacks and advances rollouts whose completing report was lost, so it may deliver
too; it needs no model registry or manifest access (the deployment record holds the updates).
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from constructs import Construct

from edgeloop.schemas import RolloutPolicy, names

from .functions import EdgeloopFunction, FunctionFactory
from .storage import Storage

# cloud/fleet/delivery.py ROLLOUT_GROUP_PREFIX: the thing groups a rollout creates
# (a test keeps the two equal).
ROLLOUT_GROUP_PREFIX = f"{names.PROJECT}-rollout-"
GREENGRASS_DELIVERY = "greengrass"

DEVICE_TABLE_ACTIONS = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:ConditionCheckItem",
]
DEPLOYMENT_TABLE_ACTIONS = DEVICE_TABLE_ACTIONS
# greengrass:CreateDeployment's dependent actions (Service Authorization Reference, AWS IoT
# Greengrass V2): Greengrass creates an IoT job per deployment and tracks it in thing shadows.
DEPLOYMENT_JOB_ACTIONS = ["iot:CreateJob", "iot:DescribeJob", "iot:UpdateJob", "iot:CancelJob"]
DEPLOYMENT_THING_ACTIONS = ["iot:DescribeThing", "iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"]
COHORT_GROUP_ACTIONS = ["iot:CreateThingGroup", "iot:DescribeThingGroup"]
COHORT_MEMBERSHIP_ACTIONS = ["iot:AddThingToThingGroup", "iot:RemoveThingFromThingGroup"]
WAVE_CONTROLLER_SCHEDULE = events.Schedule.rate(Duration.minutes(1))
# The functions that plan, advance and deliver rollouts: one environment (tables, delivery, rollout
# policy) for all three. key -> (timeout, description)
ROLLOUT_FUNCTIONS = {
    "status_intake": (Duration.minutes(1), "Records model status reports and advances rollouts whose wave completed"),
    "orchestrator": (Duration.minutes(2), "Plans and starts a Greengrass rollout of an approved model package"),
    "wave_controller": (
        Duration.minutes(1),
        "Every minute: marks silent devices offline, times out and rolls back rollouts, advances stalled waves",
    ),
}


def build_table(
    scope: Construct, construct_id: str, keys: names.TableKeys, *, time_to_live_attribute: str | None = None
) -> dynamodb.Table:
    """A table whose key schema and indexes are exactly `keys` (all keys are strings); items expire at the
    epoch seconds of `time_to_live_attribute` if given."""
    table = dynamodb.Table(
        scope,
        construct_id,
        partition_key=_string(keys.partition_key),
        sort_key=_string(keys.sort_key) if keys.sort_key else None,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        removal_policy=RemovalPolicy.RETAIN,
        time_to_live_attribute=time_to_live_attribute,
    )
    for index_name, partition_key, sort_key in keys.indexes:
        table.add_global_secondary_index(
            index_name=index_name,
            partition_key=_string(partition_key),
            sort_key=_string(sort_key) if sort_key else None,
            projection_type=dynamodb.ProjectionType.ALL,
        )
    return table


def _string(name: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)


def _arn(service: str, resource: str) -> str:
    return f"arn:{Aws.PARTITION}:{service}:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"


class Fleet(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        factory: FunctionFactory,
        gateway_component_version: str,
        model_runner_component_version: str,
        rollout_policy: RolloutPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.devices = build_table(self, "DeviceTable", names.DEVICE_TABLE_KEYS)
        self.deployments = build_table(self, "DeploymentTable", names.DEPLOYMENT_TABLE_KEYS)
        rollout_environment = {
            names.DEVICE_TABLE_ENV: self.devices.table_name,
            names.DEPLOYMENT_TABLE_ENV: self.deployments.table_name,
            names.MODEL_BUCKET_ENV: storage.models.bucket_name,
            names.DELIVERY_ENV: GREENGRASS_DELIVERY,
            names.GATEWAY_COMPONENT_VERSION_ENV: gateway_component_version,
            names.MODEL_RUNNER_COMPONENT_VERSION_ENV: model_runner_component_version,
            **rollout_policy.environment(),
        }
        # The registry also enrolls: a gateway announcing itself after an approval gets the approved model
        # through the rollout machinery (cloud/fleet/enrollment.py), so it shares the rollout environment.
        self.device_registry = factory.create(
            self,
            "device_registry",
            environment=rollout_environment,
            memory_mb=256,
            timeout=Duration.minutes(1),
            description="Upserts a gateway's DeviceRecord (announcements, IoT lifecycle events) and enrolls it",
        )
        self.status_intake, self.orchestrator, self.wave_controller = (
            factory.create(self, key, environment=rollout_environment, timeout=timeout, description=description)
            for key, (timeout, description) in ROLLOUT_FUNCTIONS.items()
        )
        for function in (self.device_registry, self.status_intake, self.orchestrator):
            self._rollout_access(function, storage)
        for function in (self.device_registry, self.status_intake):
            self._quarantine_access(function, storage)
        self.device_registry.allow(
            actions=["sagemaker:ListModelPackages"],
            resources=["*"],
            reason="Resource '*' only for actions without resource-level permissions: sagemaker:ListModelPackages "
            "(enrollment lists a group's approved packages), greengrass:CreateDeployment and X-Ray's "
            "PutTraceSegments and PutTelemetryRecords (active tracing)",
        )
        self._delivery_access(self.wave_controller)
        self._route_approvals()
        self._schedule_wave_controller()

    def _table_access(self, function: EdgeloopFunction, table: dynamodb.Table, actions: list[str]) -> None:
        function.allow(
            actions=actions,
            resources=[table.table_arn, f"{table.table_arn}/index/*"],
            reason="item access on one edgeloop table and its own indexes (index names vary with the schema)",
        )

    def _rollout_access(self, function: EdgeloopFunction, storage: Storage) -> None:
        self._delivery_access(function)
        function.allow(
            actions=["s3:GetObject"],
            resources=[Storage.objects(storage.models, names.MODELS_PREFIX)],
            reason=f"reads model manifests, only under {names.MODELS_PREFIX}/ of the model bucket",
        )
        function.allow(
            actions=["sagemaker:DescribeModelPackage"],
            resources=[_arn("sagemaker", f"model-package/{names.MODEL_PACKAGE_GROUP_PREFIX}-*/*")],
            reason=f"any version of the model packages in edgeloop's groups ({names.MODEL_PACKAGE_GROUP_PREFIX}-<use case>-<line>)",
        )

    def _quarantine_access(self, function: EdgeloopFunction, storage: Storage) -> None:
        """Device messages these functions refuse land in quarantine with their reason, as ingest's do."""
        function.function.add_environment(names.DATA_BUCKET_ENV, storage.data.bucket_name)
        function.allow(
            actions=["s3:PutObject"],
            resources=[Storage.objects(storage.data, names.QUARANTINE_PREFIX)],
            reason=f"writes refused device messages, only under {names.QUARANTINE_PREFIX}/ of the data bucket",
        )

    def _delivery_access(self, function: EdgeloopFunction) -> None:
        """Both tables, and what a Greengrass delivery (a wave or a rollback) needs."""
        self._table_access(function, self.devices, DEVICE_TABLE_ACTIONS)
        self._table_access(function, self.deployments, DEPLOYMENT_TABLE_ACTIONS)
        function.allow(
            actions=["greengrass:CreateDeployment"],
            resources=["*"],
            # Same finding id as the X-Ray statement every function role has, so one reason for both.
            reason="Resource '*' only for actions without resource-level permissions: greengrass:CreateDeployment "
            "(no resource type in the Service Authorization Reference) and X-Ray's PutTraceSegments and "
            "PutTelemetryRecords (active tracing)",
        )
        function.allow(
            actions=["greengrass:TagResource"],
            resources=[_arn("greengrass", "deployments:*")],
            reason="deployments are tagged with their edgeloop deployment id at creation; their ids are generated",
        )
        cohort_groups = _arn("iot", f"thinggroup/{ROLLOUT_GROUP_PREFIX}*")
        any_thing = _arn("iot", "thing/*")
        function.allow(
            actions=COHORT_GROUP_ACTIONS,
            resources=[cohort_groups],
            reason=f"rollout cohort groups are named {ROLLOUT_GROUP_PREFIX}<deployment id>-<tier>",
        )
        function.allow(
            actions=COHORT_MEMBERSHIP_ACTIONS,
            resources=[cohort_groups, any_thing],
            reason=f"membership of the {ROLLOUT_GROUP_PREFIX}* cohort groups; the members are any gateway a rollout picks",
        )
        function.allow(
            actions=["iot:ListThingGroupsForThing", *DEPLOYMENT_THING_ACTIONS],
            resources=[any_thing],
            reason="a rollout targets gateways chosen at run time from the device table",
        )
        function.allow(
            actions=DEPLOYMENT_JOB_ACTIONS,
            resources=[_arn("iot", "job/*"), cohort_groups],
            reason="Greengrass deployments run as IoT jobs with generated ids on the rollout cohort groups",
        )

    def _route_approvals(self) -> None:
        rule = events.Rule(
            self,
            "ModelApproved",
            description="edgeloop: an approved model package in an edgeloop group -> orchestrator",
            event_pattern=approval_event_pattern(),
        )
        rule.add_target(
            targets.LambdaFunction(
                self.orchestrator.function,
                dead_letter_queue=self.orchestrator.failure_queue,
                retry_attempts=2,
                max_event_age=Duration.hours(2),
            )
        )

    def _schedule_wave_controller(self) -> None:
        rule = events.Rule(
            self,
            "WaveControllerSchedule",
            schedule=WAVE_CONTROLLER_SCHEDULE,
            description="edgeloop: every minute -> wave controller (offline marking, rollout timeouts, rollbacks)",
        )
        rule.add_target(
            targets.LambdaFunction(
                self.wave_controller.function,
                dead_letter_queue=self.wave_controller.failure_queue,
                retry_attempts=0,  # the next minute's round is the retry
                max_event_age=Duration.minutes(1),
            )
        )


def approval_event_pattern() -> events.EventPattern:
    return events.EventPattern(
        source=[names.MODEL_PACKAGE_EVENT_SOURCE],
        detail_type=[names.MODEL_PACKAGE_STATE_CHANGE],
        detail={
            "ModelApprovalStatus": ["Approved"],
            "ModelPackageGroupName": [{"prefix": f"{names.MODEL_PACKAGE_GROUP_PREFIX}-"}],
        },
    )
