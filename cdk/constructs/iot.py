"""AWS IoT Core: topic rules that route device topics to functions, and what a gateway may do.

Rules come from names.IOT_ROUTES, the same table the embedded runtime's local bridge reads, so
the routes cannot drift between AWS and `make demo`. A batched route's rule sends its message (the
SQL's JSON: base64 payload, topic, receive time) to the function's queue with the SQS action; the
queue's event source mapping invokes the function with batches. Other rules invoke their function.

The policy documents come from schemas/iot_policies.py (one definition for the stack and for
provisioning; its docstring says why, citing the Greengrass v2 developer guide). The stack defines:
- the device data policy (plain device shims): connect only as itself, own edgeloop/<thing>/* topics,
  through `${iot:Connection.Thing.ThingName}`, which works for devices whose client id is the thing name;
- the Greengrass fleet policy: the Greengrass data-plane calls and the token exchange role alias,
  naming no thing, because thing policy variables are not supported for core devices.
A core device's MQTT permissions (client ids `<thing>` and `<thing>#*`, health, jobs and shadow
topics, its own edgeloop topics) name its thing literally in a per-thing policy that
`edgeloop gateway provision --greengrass` creates (iot_policies.greengrass_thing_policy), so gateway A
cannot publish or subscribe on gateway B's topics.
"""

from __future__ import annotations

from aws_cdk import Aws, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from edgeloop.schemas import iot_policies, names

from .nag import allow
from .storage import Storage

SQL_VERSION = "2016-03-23"
TOKEN_CREDENTIAL_SECONDS = 3600
STACK_ARNS = iot_policies.IotArns(partition=Aws.PARTITION, region=Aws.REGION, account=Aws.ACCOUNT_ID)


def gateway_data_policy_document() -> dict:
    return iot_policies.device_data_policy(STACK_ARNS)


def greengrass_core_policy_document(role_alias_arn: str) -> dict:
    return iot_policies.greengrass_fleet_policy(role_alias_arn)


class IotRouting(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        route_targets: dict[str, lambda_.IFunction],
        route_queues: dict[str, sqs.IQueue] | None = None,
    ) -> None:
        """`route_queues`: per function key, the queue feeding it: every batched route's function needs one."""
        super().__init__(scope, construct_id)
        route_queues = dict(route_queues or {})
        missing = sorted({route.function for route in names.IOT_ROUTES} - set(route_targets))
        if missing:
            raise ValueError(f"IoT routes need functions {missing}; got {sorted(route_targets)}")
        unqueued = sorted({r.function for r in names.IOT_ROUTES if r.batched} - set(route_queues))
        if unqueued:
            raise ValueError(f"batched IoT routes need queues for functions {unqueued}; got {sorted(route_queues)}")
        self.error_role = iam.Role(
            self,
            "RuleErrorRole",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description="edgeloop IoT rule error action",
        )
        allow(
            self.error_role,
            actions=["s3:PutObject"],
            resources=[Storage.objects(storage.data, names.IOT_ERRORS_PREFIX)],
            reason=f"IoT rule error actions may write only under {names.IOT_ERRORS_PREFIX}/ of the data bucket",
        )
        self.rules = {
            route.rule_name: (
                self._queue_route(route, route_queues[route.function], storage)
                if route.batched
                else self._route(route, route_targets[route.function], storage)
            )
            for route in names.IOT_ROUTES
        }
        self._gateway_access(storage)

    def _route(self, route: names.IotRoute, function: lambda_.IFunction, storage: Storage) -> iot.CfnTopicRule:
        action = iot.CfnTopicRule.ActionProperty(
            lambda_=iot.CfnTopicRule.LambdaActionProperty(function_arn=function.function_arn)
        )
        rule = self._rule(route, action, f"{route.topic_filter} -> {route.function}", storage)
        function.add_permission(
            f"InvokedBy{_camel(route.rule_name)}",
            principal=iam.ServicePrincipal("iot.amazonaws.com"),
            source_arn=rule.attr_arn,
            source_account=Aws.ACCOUNT_ID,
        )
        return rule

    def _queue_route(self, route: names.IotRoute, queue: sqs.IQueue, storage: Storage) -> iot.CfnTopicRule:
        role = iam.Role(
            self,
            f"{_camel(route.rule_name)}QueueRole",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description=f"edgeloop IoT rule {route.rule_name}: send to its queue",
        )
        allow(
            role,
            actions=["sqs:SendMessage"],
            resources=[queue.queue_arn],
            reason=f"the {route.rule_name} rule sends to its one queue",
        )
        # The body is the SQL's JSON, whose payload is already base64 (binary wire format): no useBase64.
        action = iot.CfnTopicRule.ActionProperty(
            sqs=iot.CfnTopicRule.SqsActionProperty(queue_url=queue.queue_url, role_arn=role.role_arn, use_base64=False)
        )
        return self._rule(route, action, f"{route.topic_filter} -> SQS -> {route.function} (batched)", storage)

    def _rule(
        self, route: names.IotRoute, action: iot.CfnTopicRule.ActionProperty, description: str, storage: Storage
    ) -> iot.CfnTopicRule:
        return iot.CfnTopicRule(
            self,
            _camel(route.rule_name),
            rule_name=route.rule_name,
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                sql=route.sql,
                aws_iot_sql_version=SQL_VERSION,
                rule_disabled=False,
                description=description,
                actions=[action],
                error_action=iot.CfnTopicRule.ActionProperty(
                    s3=iot.CfnTopicRule.S3ActionProperty(
                        bucket_name=storage.data.bucket_name,
                        key=f"{names.IOT_ERRORS_PREFIX}/{route.rule_name}/"
                        '${parse_time("yyyy-MM-dd", timestamp())}/${newuuid()}.json',
                        role_arn=self.error_role.role_arn,
                    )
                ),
            ),
        )

    def _gateway_access(self, storage: Storage) -> None:
        self.token_exchange_role = iam.Role(
            self,
            "GatewayTokenExchangeRole",
            assumed_by=iam.ServicePrincipal("credentials.iot.amazonaws.com"),
            # cdk/constructs/components.py grants it the component artifacts (CDK assets) as well.
            description="Greengrass token exchange role of edgeloop gateways: read models and component artifacts",
        )
        allow(
            self.token_exchange_role,
            actions=["s3:GetObject"],
            resources=[Storage.objects(storage.models, names.MODELS_PREFIX)],
            reason=f"gateways read only the {names.MODELS_PREFIX}/ prefix of the model bucket (model payloads)",
        )
        allow(
            self.token_exchange_role,
            actions=["s3:GetBucketLocation"],
            resources=[storage.models.bucket_arn],
            reason="the Greengrass artifact downloader asks the bucket's region first",
        )
        self.role_alias = iot.CfnRoleAlias(
            self,
            "GatewayRoleAlias",
            role_alias=f"{Stack.of(self).stack_name}-gateway-token-exchange",
            role_arn=self.token_exchange_role.role_arn,
            credential_duration_seconds=TOKEN_CREDENTIAL_SECONDS,
        )
        self.data_policy = iot.CfnPolicy(
            self,
            "GatewayDataPolicy",
            policy_name=names.GATEWAY_DATA_POLICY,
            policy_document=gateway_data_policy_document(),
        )
        self.greengrass_policy = iot.CfnPolicy(
            self,
            "GreengrassCorePolicy",
            policy_name=names.GREENGRASS_CORE_POLICY,
            policy_document=greengrass_core_policy_document(self.role_alias.attr_role_alias_arn),
        )


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))
