"""Where alarms go: one encrypted SNS topic operators subscribe to (email, chat, paging)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct


class Monitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        # A customer-managed key: CloudWatch cannot publish to a topic under the AWS-managed
        # alias/aws/sns key, because that key's policy cannot grant the CloudWatch service.
        self.key = kms.Key(
            self,
            "AlarmTopicKey",
            description="Encrypts the edgeloop alarm topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        self.key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(
            self, "AlarmTopic", display_name="edgeloop alarms", master_key=self.key, enforce_ssl=True
        )
        self._action = cloudwatch_actions.SnsAction(self.topic)

    def alarm(
        self, scope: Construct, construct_id: str, *, metric: cloudwatch.IMetric, description: str
    ) -> cloudwatch.Alarm:
        """Alarm when `metric` reaches 1 in any 5-minute period (errors, messages left in a DLQ)."""
        alarm = cloudwatch.Alarm(
            scope,
            construct_id,
            metric=metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(self._action)
        return alarm
