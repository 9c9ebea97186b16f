"""EventBridge schedule (every minute): offline marking, rollout timeouts, rollbacks, stalled waves."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.fleet.rollout_context import rollout_context
from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools

from .logic import run_round
from .settings import Settings

logger, tracer, metrics = powertools("wave_controller")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event, context_or_local(context, "wave_controller"))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    with rollout_context(_settings()) as rollout:
        result = run_round(
            devices=rollout.devices,
            deployments=rollout.deployments,
            delivery=rollout.delivery,
            now=datetime.now(UTC),
            policy=rollout.policy,
        )
    metrics.add_metric(name="DevicesMarkedOffline", unit=MetricUnit.Count, value=len(result.marked_offline))
    metrics.add_metric(name="RolloutsAdvanced", unit=MetricUnit.Count, value=len(result.advanced))
    metrics.add_metric(name="RolloutAdvanceErrors", unit=MetricUnit.Count, value=len(result.errors))
    for deployment_id, error in result.errors.items():
        logger.error("rollout not advanced", extra={"deployment_id": deployment_id, "error": error})
    if result.errors:
        # Fail the invocation so the alarm on the function's errors sees it; the next round retries.
        raise RuntimeError(f"{len(result.errors)} rollouts not advanced: {sorted(result.errors)}")
    return result.model_dump(mode="json")
