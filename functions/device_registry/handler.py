"""IoT rule target for edgeloop/+/announce (register or refresh a gateway, then enroll it) and for
AWS IoT's lifecycle events $aws/events/presence/+/+ (last_seen and connection state)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.fleet.device_messages import quarantine_refusal, received_rule_event
from edgeloop.cloud.fleet.devices import DeviceTable
from edgeloop.cloud.fleet.enrollment import enroll
from edgeloop.cloud.fleet.rollout_context import rollout_context
from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools
from edgeloop.schemas import IotRuleEvent

from .logic import Registration, handle_announcement, handle_presence, is_presence_topic
from .settings import Settings

logger, tracer, metrics = powertools("device_registry")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event, context_or_local(context, "device_registry"))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    rule_event, received_at = received_rule_event(event)
    table = DeviceTable(_settings().device_table)
    if is_presence_topic(rule_event.topic):
        return _presence(rule_event, received_at, table)
    result = handle_announcement(rule_event, table, now=received_at)
    if result.refused:
        key = quarantine_refusal(_settings().quarantine_bucket, rule_event, received_at, result.reasons, logger)
        metrics.add_metric(name="AnnouncementsRefused", unit=MetricUnit.Count, value=1)
        logger.warning(
            "announcement refused",
            extra={"topic": rule_event.topic, "reason": result.refused, "quarantine_key": key},
        )
        return result.model_copy(update={"quarantine_key": key}).model_dump(mode="json")
    metric = "DevicesRegistered" if result.created else "DevicesRefreshed"
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    logger.info("device registered", extra={"thing_name": result.record.thing_name, "new_device": result.created})
    return _enrolled(result, received_at).model_dump(mode="json")


def _enrolled(result: Registration, now: datetime) -> Registration:
    settings = _settings().enrollment
    if settings is None:
        return result
    with rollout_context(settings) as rollout:
        enrollment = enroll(
            result.record,
            devices=rollout.devices,
            deployments=rollout.deployments,
            delivery=rollout.delivery,
            model_bucket=settings.model_bucket,
            now=now,
            policy=rollout.policy,
        )
    if enrollment.started:
        metrics.add_metric(name="DevicesEnrolled", unit=MetricUnit.Count, value=1)
    logger.info("enrollment", extra={"thing_name": result.record.thing_name, "reason": enrollment.reason})
    deployment_id = enrollment.deployment.deployment_id if enrollment.deployment else None
    return result.model_copy(update={"enrollment": enrollment.reason, "enrollment_deployment_id": deployment_id})


def _presence(rule_event: IotRuleEvent, received_at: datetime, table: DeviceTable) -> dict:
    result = handle_presence(rule_event, table)
    if result.reasons:
        key = quarantine_refusal(_settings().quarantine_bucket, rule_event, received_at, result.reasons, logger)
        result = result.model_copy(update={"quarantine_key": key})
    if result.ignored:
        metrics.add_metric(name="LifecycleEventsIgnored", unit=MetricUnit.Count, value=1)
        logger.info("lifecycle event ignored", extra={"topic": rule_event.topic, "reason": result.ignored})
    else:
        metrics.add_metric(name="LifecycleEventsApplied", unit=MetricUnit.Count, value=1)
    return result.model_dump(mode="json")
