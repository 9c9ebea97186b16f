"""Alerts and a moto account for the alert notice tests (functions/predictions/notify.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from event_queues import queue, queue_behind_rule
from moto import mock_aws

from edgeloop.cloud.aws import client, reset_clients
from edgeloop.local.aws import table_definition
from edgeloop.schemas import names
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.prediction import AlertEvent

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
INTERVAL_S = 900
TABLE = "edgeloop-monitoring-test"
BUS = "default"
SPEC = {"target_metric": "cold_od_average", "lower": 2.9, "upper": 3.2}
MODEL = {
    "model_id": "extrusion-line-1",
    "version": "1.4.0",
    "deployment_id": "d-7",
    "precision": "fp32",
    "decision_margin": 0.1,
}


def alert(
    line: str = "line-1", number: int = 1, *, at: datetime = T0, event: str = "raise", cls: str = "usl_violation"
) -> AlertEvent:
    thing = f"gw-{line}"
    raise_ = event == "raise"
    return AlertEvent.model_validate(
        {
            "thing_name": thing,
            "line_id": line,
            "alert_id": f"{thing}-{cls}-{number}",
            "event": event,
            "violation_class": cls,
            "raised_at": at.isoformat() if raise_ else (at - timedelta(minutes=1)).isoformat(),
            "at": at.isoformat(),
            "predicted_for": (at + timedelta(seconds=270)).isoformat(),
            "lead_time_s": 268.0 if raise_ else None,
            "consecutive": 2 if raise_ else 3,
            "predicted_level": 3.3 if raise_ else 3.1,
            "spec": SPEC,
            "model": MODEL,
            "sent_at": (at + timedelta(seconds=2)).isoformat(),
        }
    )


@dataclass(frozen=True)
class Account:
    topic_arn: str
    notices_queue: str  # subscribed to the topic, no filter
    line_2_queue: str  # subscribed with a filter policy on line_id = line-2
    events_queue: str  # the target of an EventBridge rule matching alert events


@contextmanager
def moto_account() -> Iterator[Account]:
    """The monitoring table, the alert topic with two subscribed queues, and an alert rule to a queue.
    (In AWS each queue also needs a policy letting sns.amazonaws.com / events.amazonaws.com send to it;
    moto delivers without one, so these tests do not prove the policies.)"""
    with mock_aws():
        reset_clients()
        client("dynamodb").create_table(**table_definition(TABLE, names.MONITORING_TABLE_KEYS))
        topic_arn = client("sns").create_topic(Name="edgeloop-alerts")["TopicArn"]
        notices_url, notices_arn = queue("notices")
        line_2_url, line_2_arn = queue("line-2-notices")
        client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=notices_arn)
        client("sns").subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=line_2_arn,
            Attributes={"FilterPolicy": json.dumps({"line_id": ["line-2"]}), "FilterPolicyScope": "MessageAttributes"},
        )
        pattern = {"source": [names.EVENT_SOURCE], "detail-type": [names.ALERT_DETAIL_TYPE]}
        events_url = queue_behind_rule("edgeloop-alerts", pattern, bus=BUS)
        try:
            yield Account(topic_arn, notices_url, line_2_url, events_url)
        finally:
            reset_clients()


def notice_item(line: str) -> dict:
    key = {names.MONITORING_TABLE_KEYS.partition_key: {"S": f"{names.ALERT_NOTICE_KEY_PREFIX}{line}"}}
    return client("dynamodb").get_item(TableName=TABLE, Key=key, ConsistentRead=True).get("Item", {})
