"""EventBridge: the hourly schedule and live accuracy's MODEL_DEGRADED_DETAIL_TYPE events -> pipeline starts."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.aws import client
from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools
from edgeloop.cloud.retraining_table import RetrainingTable

from .logic import run_retraining
from .settings import Settings

logger, tracer, metrics = powertools("retraining")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event, context_or_local(context, "retraining"))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    settings = _settings()
    result = run_retraining(
        event,
        use_case=settings.use_case_config,
        line_ids=settings.line_ids,
        table=RetrainingTable(settings.monitoring_table),
        sagemaker=client("sagemaker"),
        eventbridge=client("events"),
        event_bus=settings.event_bus,
        now=datetime.now(UTC),
    )
    metrics.add_metric(name="RetrainingStarted", unit=MetricUnit.Count, value=len(result.started))
    metrics.add_metric(name="RetrainingHeld", unit=MetricUnit.Count, value=len(result.held))
    metrics.add_metric(name="RetrainingErrors", unit=MetricUnit.Count, value=len(result.errors))
    for started in result.started:
        logger.info("retraining started", extra=started.model_dump(mode="json"))
    for decision in result.held:
        logger.info("retraining held back", extra={"line_id": decision.line_id, "why": decision.why})
    if result.errors:
        # Fail the invocation: the errors alarm sees it, and EventBridge's async retry tries again
        # (each failed start gave its claim back; the retried start sends the same token).
        raise RuntimeError(f"retraining not started for {len(result.errors)} lines: {result.errors}")
    return result.model_dump(mode="json")
