"""EventBridge schedule target: compact every raw object not compacted yet.

The event body is ignored except for an optional `raw_keys` list (the local runtime passes the
keys it just landed to compact them at once; after a dead-letter redrive, the redriven objects'
keys compact them at once instead of at the next day's sweep). Without it the round lists the ingest
hours still open and sweeps all of raw/ once a day (checkpoint.py).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools
from edgeloop.schemas.compat import UTC

from .logic import compact
from .settings import Settings

logger, tracer, metrics = powertools("compaction")
DELAY_METRICS = {
    "p50": "IngestionDelayP50Seconds",
    "p90": "IngestionDelayP90Seconds",
    "p99": "IngestionDelayP99Seconds",
    "max": "IngestionDelayMaxSeconds",
}


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event or {}, context_or_local(context, "compaction"))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    raw_keys = event.get("raw_keys")
    if raw_keys is not None and not (isinstance(raw_keys, list) and all(isinstance(k, str) for k in raw_keys)):
        raise ValueError(f"raw_keys={raw_keys!r} must be a list of S3 keys")
    settings = _settings()
    result = compact(
        settings.data_bucket,
        raw_keys=raw_keys,
        lateness_sla_days=settings.lateness_sla_days,
        now=datetime.now(UTC),
    )
    metrics.add_metric(name="RawObjectsCompacted", unit=MetricUnit.Count, value=result.raw_objects)
    metrics.add_metric(name="CuratedRowsWritten", unit=MetricUnit.Count, value=result.rows_written)
    metrics.add_metric(name="DuplicateRowsDropped", unit=MetricUnit.Count, value=result.duplicates_dropped)
    metrics.add_metric(name="LateRows", unit=MetricUnit.Count, value=result.late_rows)
    metrics.add_metric(name="RawObjectsQuarantined", unit=MetricUnit.Count, value=len(result.quarantined_keys))
    if result.quarantined_keys:
        logger.warning("raw objects quarantined", extra={"quarantine_keys": result.quarantined_keys})
    for quantile, seconds in result.delay_quantiles_s.items():
        metrics.add_metric(name=DELAY_METRICS[quantile], unit=MetricUnit.Seconds, value=seconds)
    logger.info(
        "compacted",
        extra={
            "partitions": result.partitions,
            "late_partitions": result.late_partitions,
            "raw_objects": result.raw_objects,
            "swept": result.swept,
            "late_rows": result.late_rows,
        },
    )
    return {**asdict(result), "line_ids": result.line_ids}
