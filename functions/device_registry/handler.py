"""IoT rule target for edgeloop/+/announce: register or refresh one gateway per message."""

from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.fleet.device_messages import received_rule_event
from edgeloop.cloud.fleet.devices import DeviceTable
from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools

from .logic import handle_announcement
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
    result = handle_announcement(rule_event, DeviceTable(_settings().device_table), now=received_at)
    if result.refused:
        metrics.add_metric(name="AnnouncementsRefused", unit=MetricUnit.Count, value=1)
        logger.warning("announcement refused", extra={"topic": rule_event.topic, "reason": result.refused})
    else:
        metric = "DevicesRegistered" if result.created else "DevicesRefreshed"
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
        logger.info("device registered", extra={"thing_name": result.record.thing_name, "new_device": result.created})
    return result.model_dump(mode="json")
