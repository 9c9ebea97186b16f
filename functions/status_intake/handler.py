"""IoT rule target for edgeloop/+/model-status: record a device's update outcome, advance its rollout."""

from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.fleet.device_messages import quarantine_refusal, received_rule_event
from edgeloop.cloud.fleet.rollout_context import rollout_context
from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools
from edgeloop.schemas import IotRuleEvent

from .logic import Intake, Outcome, handle_status_report
from .settings import Settings

logger, tracer, metrics = powertools("status_intake")

_METRIC_BY_OUTCOME = {
    Outcome.RECORDED: "StatusReportsRecorded",
    Outcome.STALE: "StaleStatusReports",
    Outcome.REFUSED: "StatusReportsRefused",
    Outcome.PERIODIC: "PeriodicStatusReceived",
}


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event, context_or_local(context, "status_intake"))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    rule_event, received_at = received_rule_event(event)
    settings = _settings()
    with rollout_context(settings) as rollout:
        result = handle_status_report(
            rule_event,
            devices=rollout.devices,
            deployments=rollout.deployments,
            delivery=rollout.delivery,
            now=received_at,
            policy=rollout.policy,
        )
    if result.outcome is Outcome.REFUSED:
        key = quarantine_refusal(settings.quarantine_bucket, rule_event, received_at, result.reasons, logger)
        result = result.model_copy(update={"quarantine_key": key})
    _record(result, rule_event)
    return result.model_dump(mode="json")


def _record(result: Intake, event: IotRuleEvent) -> None:
    metrics.add_metric(name=_METRIC_BY_OUTCOME[result.outcome], unit=MetricUnit.Count, value=1)
    if result.outcome is Outcome.REFUSED:
        logger.warning(
            "status report refused",
            extra={"topic": event.topic, "reason": result.refused, "quarantine_key": result.quarantine_key},
        )
    elif result.outcome is Outcome.STALE:
        logger.info("stale status report ignored", extra={"topic": event.topic})
    if result.deployment is not None:
        logger.info(
            "rollout advanced",
            extra={"deployment_id": result.deployment.deployment_id, "state": result.deployment.state.value},
        )
