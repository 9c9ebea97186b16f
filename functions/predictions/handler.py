"""Prediction and alert landing (logic.py): one IoT rule event, or an SQS batch of them (each record's
body the rule's event), as ingest's batched route delivers them. Landed alerts then go on to
EventBridge and, rate-limited per line, to the operators' SNS topic (notify.py). Environment:
settings.py. The IoT registry's line directory is built once per warm container with the settings
(its per-thing cache outlives an invocation).

Metrics (EMF, service "predictions"): PredictionsLanded and MessagesQuarantined every invocation;
with alerts, AlertsRaised, AlertsCleared, AlertNoticesSent, AlertNoticesSuppressed.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud import s3
from edgeloop.cloud.aws import client
from edgeloop.cloud.datalake.landed_jsonl import content_type
from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import logger_and_metrics
from edgeloop.cloud.sqs_event import SqsEvent, is_sqs_event
from edgeloop.schemas import IotRuleEvent
from edgeloop.schemas.compat import UTC

from .logic import LandingResult, land_messages
from .notify import AlertEventsNotSent, NoticeResult, notify_alerts
from .settings import Settings

logger, metrics = logger_and_metrics("predictions")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def rule_events(event: dict) -> list[IotRuleEvent]:
    if not is_sqs_event(event):
        return [IotRuleEvent.model_validate(event)]
    records = SqsEvent.model_validate(event).sqs_records()
    return [IotRuleEvent.model_validate(json.loads(record.body)) for record in records]


def lambda_handler(event: dict, context) -> dict:
    return _handle(event, context_or_local(context, "predictions"))


@metrics.log_metrics
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    settings = _settings()
    result = land_messages(
        rule_events(event),
        lambda key, body: s3.put_bytes(settings.data_bucket, key, body, content_type=content_type(key)),
        settings.line_directory,
    )
    notices = NoticeResult()
    if result.landed_alerts:
        try:
            notices = _notify(result, settings)
        except AlertEventsNotSent as exc:
            _record(result, exc.result)
            # raised: Lambda retries the invocation (async) or SQS redelivers the batch; see notify.py
            logger.warning("alert events not put on EventBridge", extra={"failures": exc.failures})
            raise
    _record(result, notices)
    counts = {"predictions": result.predictions, "alerts": result.alerts, "quarantined": result.quarantined}
    # an SQS batch lands whole or raises (and is delivered again whole: the keys are content digests)
    return {**counts, "batchItemFailures": []} if is_sqs_event(event) else counts


def _notify(result: LandingResult, settings: Settings) -> NoticeResult:
    return notify_alerts(
        result.landed_alerts,
        eventbridge=client("events"),
        sns=client("sns"),
        table=settings.monitoring_table,
        topic_arn=settings.alert_topic_arn,
        bus=settings.event_bus,
        now=datetime.now(UTC),
        interval_s=settings.alert_notice_interval_s,
    )


def _record(result: LandingResult, notices: NoticeResult) -> None:
    metrics.add_metric(name="PredictionsLanded", unit=MetricUnit.Count, value=result.predictions)
    metrics.add_metric(name="MessagesQuarantined", unit=MetricUnit.Count, value=result.quarantined)
    if result.landed_alerts:
        metrics.add_metric(name="AlertsRaised", unit=MetricUnit.Count, value=notices.raised)
        metrics.add_metric(name="AlertsCleared", unit=MetricUnit.Count, value=notices.cleared)
        metrics.add_metric(name="AlertNoticesSent", unit=MetricUnit.Count, value=notices.notices_sent)
        metrics.add_metric(name="AlertNoticesSuppressed", unit=MetricUnit.Count, value=notices.notices_suppressed)
        logger.info(
            "alerts passed on",
            extra={
                "alerts": [f"{a.line_id}/{a.alert_id}/{a.event.value}" for a in result.landed_alerts],
                "events_put": notices.events_put,
                "notices_sent": notices.notices_sent,
                "notices_suppressed": notices.notices_suppressed,
                "notices_repeated": notices.notices_repeated,
            },
        )
