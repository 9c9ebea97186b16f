"""EventBridge target for "SageMaker Model Package State Change": roll out approved models; and the target of
`edgeloop models rollback` (names.SIGNED_ROLLBACK_REQUEST): deliver the key holder's signed rollback."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.fleet.rollout_context import rollout_context
from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools
from edgeloop.schemas import DeploymentState

from .logic import NotApproved, start_rollout
from .rollback import RollbackRefused, deliver_signed_rollback, is_rollback_event, rollback_from_event
from .settings import Settings

logger, tracer, metrics = powertools("orchestrator")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event, context_or_local(context, "orchestrator"))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    settings = _settings()
    if is_rollback_event(event):
        return _signed_rollback(event, settings)
    try:
        with rollout_context(settings) as rollout:
            record = start_rollout(
                event,
                devices=rollout.devices,
                deployments=rollout.deployments,
                delivery=rollout.delivery,
                model_bucket=settings.model_bucket,
                policy=rollout.policy,
            )
    except NotApproved as exc:
        logger.info("model package state change ignored", extra={"reason": str(exc)})
        metrics.add_metric(name="StateChangesIgnored", unit=MetricUnit.Count, value=1)
        return {"ignored": str(exc)}
    metrics.add_metric(name="DevicesTargeted", unit=MetricUnit.Count, value=len(record.targets))
    metrics.add_metric(name="DevicesExcluded", unit=MetricUnit.Count, value=len(record.excluded))
    if record.state is DeploymentState.FAILED:
        logger.warning("rollout not started", extra={"deployment_id": record.deployment_id, "reason": record.reason})
    else:
        logger.info(
            "rollout started",
            extra={"deployment_id": record.deployment_id, "waves": len(record.waves), "excluded": len(record.excluded)},
        )
    return record.model_dump(mode="json")


def _signed_rollback(event: dict, settings: Settings) -> dict:
    try:
        rollback = rollback_from_event(event)
        with rollout_context(settings) as rollout:
            result = deliver_signed_rollback(
                rollback,
                devices=rollout.devices,
                deployments=rollout.deployments,
                delivery=rollout.delivery,
                now=datetime.now(UTC),
            )
    except RollbackRefused as exc:
        logger.warning("signed rollback refused", extra={"reason": str(exc)})
        return {"refused": str(exc)}
    metrics.add_metric(name="DevicesRolledBack", unit=MetricUnit.Count, value=len(result.delivered))
    logger.info("signed rollback delivered", extra=result.as_dict())
    return result.as_dict()
