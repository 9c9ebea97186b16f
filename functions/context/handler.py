"""Context intake and slices.

Events:
- the IoT rule of edgeloop/<thing>/context (IotRuleEvent: payload_b64, topic, received_at_ms):
  one ContextInterval or a JSON list of them, all of the gateway's own line (checked against the
  IoT registry); bad intervals are quarantined, good ones upserted, then the line's 1-minute
  slices are rebuilt;
- a direct invoke `{"line_ids": [...]}`: rebuild those lines' slices from the stored intervals.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.datalake.context_store import rebuild_slices
from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools
from edgeloop.schemas import IotRuleEvent

from .logic import handle_context_message
from .settings import Settings

logger, tracer, metrics = powertools("context")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event, context_or_local(context, "context"))


def lines_to_rebuild(event: dict) -> list[str] | None:
    """The line ids of a rebuild request; None when the event is not one."""
    if not isinstance(event, dict) or "line_ids" not in event:
        return None
    line_ids = event["line_ids"]
    if set(event) != {"line_ids"} or not isinstance(line_ids, list) or not all(isinstance(i, str) for i in line_ids):
        raise ValueError(f"a rebuild event is {{'line_ids': [<line id>, ...]}}, got {event!r}"[:300])
    return line_ids


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    settings = _settings()
    bucket = settings.data_bucket
    line_ids = lines_to_rebuild(event)
    if line_ids is not None:
        built = [rebuild_slices(bucket, line_id) for line_id in line_ids]
        metrics.add_metric(name="ContextSlicesRebuilt", unit=MetricUnit.Count, value=len(built))
        logger.info("slices rebuilt", extra={"lines": line_ids})
        return {"rebuilt": [asdict(b) for b in built]}
    result = handle_context_message(bucket, IotRuleEvent.model_validate(event), lines=settings.line_directory)
    metrics.add_metric(name="ContextIntervalsAccepted", unit=MetricUnit.Count, value=result.accepted)
    metrics.add_metric(name="ContextIntervalsRefused", unit=MetricUnit.Count, value=result.refused)
    if result.quarantine_key:
        logger.warning("context refused", extra={"thing": result.thing_name, "key": result.quarantine_key})
    logger.info("context landed", extra={"line_id": result.line_id, "accepted": result.accepted})
    return asdict(result)
