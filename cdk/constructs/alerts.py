"""Violation alerts beyond the landing (issue 17): the operators' alert topic, the monitoring table, and
what the prediction landing's notifier (functions/predictions/notify.py) may do with them.

Every landed AlertEvent goes on the default event bus (source edgeloop, ALERT_DETAIL_TYPE) for any
rule to route; SNS notices go to the alert topic, at most one per line per alert_notice_interval_s
(a conditional write on the monitoring table's alert-notice#<line> item). The alert topic is not the
alarm topic: alarms are for whoever runs the stack, alerts for the people at the line, who subscribe
with a filter policy on the notices' MessageAttributes (line_id, violation_class, event). Both
topics share the alarm topic's customer-managed key (CloudWatch may use it; Lambda roles get grants).

The monitoring table also holds the retraining function's retraining#<line> items; every item
carries MONITORING_TABLE_TTL_ATTRIBUTE, so a line gone quiet leaves nothing behind.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_sns as sns
from constructs import Construct

from edgeloop.schemas import names

from .fleet import build_table
from .functions import EdgeloopFunction
from .monitoring import Monitoring
from .nag import acknowledge

DEFAULT_EVENT_BUS = "default"


def account_arn(service: str, resource: str) -> str:
    """ARN of a resource of this stack's account and region."""
    return f"arn:{Aws.PARTITION}:{service}:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"


def event_bus_arn(bus: str = DEFAULT_EVENT_BUS) -> str:
    return account_arn("events", f"event-bus/{bus}")


def allow_put_events(function: EdgeloopFunction, detail_types: list[str], reason: str) -> None:
    """events:PutEvents on the default bus, held to edgeloop's source and the given detail types."""
    function.allow(
        actions=["events:PutEvents"],
        resources=[event_bus_arn()],
        conditions={"StringEquals": {"events:source": [names.EVENT_SOURCE], "events:detail-type": detail_types}},
        reason=reason,
    )
    function.function.add_environment(names.EVENT_BUS_ENV, DEFAULT_EVENT_BUS)


def allow_items(function: EdgeloopFunction, table: dynamodb.ITable, actions: list[str], prefix: str) -> None:
    """Item actions on the table, only on items whose partition key starts with `prefix`."""
    function.allow(
        actions=actions,
        resources=[table.table_arn],
        conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{prefix}*"]}},
        reason=f"items of one table, held to partition keys {prefix}<line> by dynamodb:LeadingKeys",
    )
    function.function.add_environment(names.MONITORING_TABLE_ENV, table.table_name)


class Alerts(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, monitoring: Monitoring, predictions: EdgeloopFunction
    ) -> None:
        super().__init__(scope, construct_id)
        self.table = build_table(
            self,
            "MonitoringTable",
            names.MONITORING_TABLE_KEYS,
            time_to_live_attribute=names.MONITORING_TABLE_TTL_ATTRIBUTE,
        )
        self.topic = sns.Topic(
            self, "AlertTopic", display_name="edgeloop violation alerts", master_key=monitoring.key, enforce_ssl=True
        )
        monitoring.alarm(
            self,
            "AlertNoticesFailedAlarm",
            metric=self.topic.metric_number_of_notifications_failed(period=Duration.minutes(5)),
            description="edgeloop: alert notices could not be delivered to a subscriber of the alert topic",
        )
        self._notifier(predictions)

    def _notifier(self, predictions: EdgeloopFunction) -> None:
        """functions/predictions/notify.py: PutEvents, Publish, and UpdateItem on alert-notice# items."""
        allow_put_events(
            predictions,
            [names.ALERT_DETAIL_TYPE],
            reason="the default bus; no wildcard (the statement is held to edgeloop's alert events)",
        )
        allow_items(predictions, self.table, ["dynamodb:UpdateItem"], names.ALERT_NOTICE_KEY_PREFIX)
        self.topic.grant_publish(predictions.role)  # and kms:Decrypt, kms:GenerateDataKey* on the topic's key
        acknowledge(
            predictions.role,
            "IAM5[Action::kms:GenerateDataKey*]",
            "publishing to an SSE-KMS topic needs kms:GenerateDataKey* and kms:Decrypt on its key (SNS developer "
            "guide, 'Enable compatibility between event sources and encrypted topics'); only the alarm topic's key",
        )
        predictions.function.add_environment(names.ALERT_TOPIC_ARN_ENV, self.topic.topic_arn)
