"""EventBridge target for S3 "Object Created" on raw/: copies the new raw object into Timestream.

Deployed only when the stack is built with edgeloop:enableTimestream=true (the optional hot path;
S3 stays the system of record). See logic.py for the record layout and why re-runs are safe.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools

from .data_access import TimestreamWriter
from .logic import HotPathResult, land_raw_batch, merge_results, raw_key_from_event, read_landed_batches
from .settings import Settings

logger, tracer, metrics = powertools("hot_path")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event, context_or_local(context, "hot_path"))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    settings = _settings()
    key = raw_key_from_event(event, data_bucket=settings.data_bucket)
    try:
        batches = read_landed_batches(settings.data_bucket, key)
    except ValueError as exc:
        # Not retried: the same bytes would be refused again. Compaction quarantines the object.
        metrics.add_metric(name="RawObjectsRefused", unit=MetricUnit.Count, value=1)
        logger.warning("raw object refused", extra={"raw_key": key, "reason": str(exc)[:1000]})
        return asdict(HotPathResult(raw_key=key, refused=str(exc)[:1000]))
    writer = TimestreamWriter(settings.database, settings.table)
    result = merge_results(key, [land_raw_batch(raw, raw_key=key, writer=writer) for raw in batches])
    _record(result)
    return asdict(result)


def _record(result: HotPathResult) -> None:
    metrics.add_metric(name="TimestreamRecordsWritten", unit=MetricUnit.Count, value=result.written)
    metrics.add_metric(name="TimestreamRecordsDuplicate", unit=MetricUnit.Count, value=result.duplicates)
    metrics.add_metric(name="TimestreamRecordsRejected", unit=MetricUnit.Count, value=result.rejected)
    metrics.add_metric(name="TimestreamThrottleRetries", unit=MetricUnit.Count, value=result.throttle_retries)
    if result.rejected:
        logger.warning(
            "Timestream rejected records",
            extra={
                "raw_key": result.raw_key,
                "rejected_by_reason": result.rejected_by_reason,
                "examples": [asdict(example) for example in result.rejected_examples],
            },
        )
    logger.info(
        "raw object copied to Timestream",
        extra={"raw_key": result.raw_key, "samples": result.samples, "requests": result.requests},
    )
