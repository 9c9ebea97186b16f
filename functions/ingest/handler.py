"""Ingest's entry point, for both paths of edgeloop/+/telemetry:
- batched (the stack's): an SQS event of up to a batch of the IoT rule's messages (batched.py); the
  response's batchItemFailures names the messages SQS must redeliver;
- direct: one IotRuleEvent per invocation (an IoT rule's Lambda action, tools, older stacks).

Logs at scale: an invocation prints one EMF document (its metrics, summed) and a WARNING only when
something is quarantined; the per-invocation summary is DEBUG, sampled by
POWERTOOLS_LOGGER_SAMPLE_RATE (powertools re-draws the sampling decision every invocation).

Cold start matters here (every telemetry message): no numpy/pandas on this import path. The event
is parsed with its pydantic model directly, which is what powertools' `parser.parse` does: that
package imports every built-in event model and envelope on import (about 150 ms here).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import logger_and_metrics
from edgeloop.cloud.sqs_event import SqsEvent, is_sqs_event
from edgeloop.schemas import IotRuleEvent

from .batched import ingest_sqs_records
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
    if is_sqs_event(event):
        return _handle_batch(event, settings)
    rule_event = IotRuleEvent.model_validate(event)
    result = ingest_event(
        rule_event,
        use_case=settings.use_case_config,
        store=S3IngestStore(settings.data_bucket),
        lines=settings.line_directory,
        lateness_sla_days=settings.lateness_sla_days,
    )
    _record([result], rule_event.topic)
    return result.model_dump()


def _handle_batch(event: dict, settings: Settings) -> dict:
    outcome = ingest_sqs_records(
        SqsEvent.model_validate(event).sqs_records(),
        use_case=settings.use_case_config,
        store=S3IngestStore(settings.data_bucket),
        lines=settings.line_directory,
        lateness_sla_days=settings.lateness_sla_days,
    )
    _record(list(outcome.results.values()), f"sqs batch of {len(event['Records'])}")
    if outcome.failed:  # one line per invocation, however many failed (an S3 outage fails them all)
        metrics.add_metric(name="MessagesRetried", unit=MetricUnit.Count, value=len(outcome.failed))
        first_id, first_error = next(iter(outcome.failed.items()))
        logger.warning(
            "messages not landed, left to SQS to redeliver",
            extra={"count": len(outcome.failed), "first_message_id": first_id, "first_error": first_error},
        )
    return outcome.response()


def _record(results: Sequence[IngestResult], source: str) -> None:
    """One EMF document per invocation, each metric summed over its messages; WARNING lines only for
    quarantine (at most one per message); the rest in one DEBUG line, printed only in the share of
    invocations that POWERTOOLS_LOGGER_SAMPLE_RATE samples. A metric that is 0 is left out (its
    name and value would cost log bytes in every invocation; a Sum over none is 0 all the same)."""
    landed = [r for r in results if r.raw_key and not r.duplicate]
    counts = {
        "SamplesLanded": sum(r.landed_samples for r in results),
        "SamplesQuarantined": sum(r.quarantined_samples for r in results),
        "BatchesLanded": len(landed),
        "DuplicateBatches": sum(1 for r in results if r.duplicate),
        "BatchesQuarantined": sum(1 for r in results if r.raw_key is None and r.quarantine_key),
    }
    for name, value in counts.items():
        if value or name == "SamplesLanded":  # one metric always: powertools warns on an empty document
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    for result in results:
        if result.raw_key is None and result.quarantine_key:
            logger.warning("batch quarantined", extra={"quarantine_key": result.quarantine_key, "topic": source})
        elif result.quarantine_key:
            logger.warning(
                "samples quarantined",
                extra={"quarantine_key": result.quarantine_key, "count": result.quarantined_samples},
            )
    logger.debug(
        "ingested",
        extra={"topic": source, **counts, "raw_keys": list(dict.fromkeys(r.raw_key for r in results if r.raw_key))},
    )
