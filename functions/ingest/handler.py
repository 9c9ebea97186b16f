"""IoT rule target for edgeloop/+/telemetry: one MQTT message per invocation.

Cold start matters here (every telemetry message): no numpy/pandas on this import path. The event
is parsed with its pydantic model directly, which is what powertools' `parser.parse` does: that
package imports every built-in event model and envelope on import (about 150 ms here).
"""

from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import logger_and_metrics
from edgeloop.schemas import IotRuleEvent

from .data_access import S3IngestStore
from .logic import IngestResult, ingest_event
from .settings import Settings

logger, metrics = logger_and_metrics("ingest")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event, context_or_local(context, "ingest"))


@metrics.log_metrics
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    settings = _settings()
    rule_event = IotRuleEvent.model_validate(event)
    result = ingest_event(
        rule_event,
        use_case=settings.use_case_config,
        store=S3IngestStore(settings.data_bucket),
        lines=settings.line_directory,
        lateness_sla_days=settings.lateness_sla_days,
    )
    _record(result, rule_event)
    return result.model_dump()


def _record(result: IngestResult, event: IotRuleEvent) -> None:
    metrics.add_metric(name="SamplesLanded", unit=MetricUnit.Count, value=result.landed_samples)
    metrics.add_metric(name="SamplesQuarantined", unit=MetricUnit.Count, value=result.quarantined_samples)
    if result.raw_key and not result.duplicate:
        metrics.add_metric(name="BatchesLanded", unit=MetricUnit.Count, value=1)
    if result.duplicate:
        metrics.add_metric(name="DuplicateBatches", unit=MetricUnit.Count, value=1)
        logger.info("duplicate batch", extra={"raw_key": result.raw_key, "topic": event.topic})
    if result.raw_key is None and result.quarantine_key:
        metrics.add_metric(name="BatchesQuarantined", unit=MetricUnit.Count, value=1)
        logger.warning("batch quarantined", extra={"quarantine_key": result.quarantine_key, "topic": event.topic})
    elif result.quarantine_key:
        logger.warning(
            "samples quarantined", extra={"quarantine_key": result.quarantine_key, "count": result.quarantined_samples}
        )
