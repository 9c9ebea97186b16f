"""Rebuild rollups after compaction.

Event: either `{"partitions": [...]}` -- the curated prefixes a compaction run rewrote
(`curated/line=<id>/event_date=YYYY-MM-DD/`, its result's `partitions`), so only the touched
event months are rebuilt -- or `{"line_ids": [...]}` to rebuild those lines entirely.

Compaction's on-success destination delivers its result in one of two shapes, both accepted:
the Lambda destination envelope (`{"requestContext": {"condition": "Success", ...},
"requestPayload": ..., "responsePayload": <result>}`, what the stack configures) or the bare
result (a destination with response_only). Only the result's `partitions` count (its `line_ids`
are derived from them), so a run that rewrote nothing rebuilds nothing.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools
from edgeloop.schemas import names
from edgeloop.schemas.common import IDENTIFIER, IDENTIFIER_BODY

from .logic import build_line_rollups
from .settings import Settings

logger, tracer, metrics = powertools("rollups")

_PARTITION = re.compile(rf"^{names.CURATED_PREFIX}/line=({IDENTIFIER_BODY})/event_date=(\d{{4}}-\d{{2}})-\d{{2}}/?$")
# A field only compaction's result has (functions/compaction/logic.py CompactionResult).
COMPACTION_RESULT_MARKER = "raw_objects"


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event or {}, context_or_local(context, "rollups"))


def rebuild_request(event: dict) -> dict:
    """The event as `{"partitions": ...}` or `{"line_ids": ...}`: destination deliveries unwrapped."""
    if "responsePayload" in event:
        condition = (event.get("requestContext") or {}).get("condition")
        if condition != "Success":
            raise ValueError(f"requestContext.condition={condition!r}: only a successful compaction run is rolled up")
        event = event["responsePayload"]
        if not isinstance(event, dict) or COMPACTION_RESULT_MARKER not in event:
            raise ValueError(f"responsePayload={event!r:.200} is not a compaction result")
    if COMPACTION_RESULT_MARKER in event:
        if "partitions" not in event:
            raise ValueError("the compaction result has no partitions")
        return {"partitions": event["partitions"]}
    return event


def months_to_rebuild(event: dict) -> dict[str, list[str] | None]:
    """line -> event months to rebuild (None: every month of the line)."""
    event = rebuild_request(event)
    partitions, line_ids = event.get("partitions"), event.get("line_ids")
    if (partitions is None) == (line_ids is None):
        raise ValueError(f"event needs exactly one of partitions or line_ids, got keys {sorted(event)}")
    if line_ids is not None:
        if not isinstance(line_ids, list) or not all(isinstance(i, str) and IDENTIFIER.match(i) for i in line_ids):
            raise ValueError(f"line_ids={line_ids!r} must be a list of line ids")
        return dict.fromkeys(line_ids)
    if not isinstance(partitions, list):
        raise ValueError(f"partitions={partitions!r} must be a list of curated prefixes")
    months: dict[str, list[str] | None] = {}
    for partition in partitions:
        match = _PARTITION.match(partition) if isinstance(partition, str) else None
        if not match:
            raise ValueError(f"partition={partition!r} is not {names.CURATED_PREFIX}/line=<id>/event_date=YYYY-MM-DD/")
        line_months = months.setdefault(match.group(1), [])
        if match.group(2) not in line_months:
            line_months.append(match.group(2))
    return months


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    bucket = _settings().data_bucket
    results = [
        build_line_rollups(bucket, line_id, months=months) for line_id, months in months_to_rebuild(event).items()
    ]
    metrics.add_metric(name="RollupSamplesRead", unit=MetricUnit.Count, value=sum(r.samples for r in results))
    metrics.add_metric(name="RollupMonthsBuilt", unit=MetricUnit.Count, value=sum(len(r.months) for r in results))
    logger.info("rolled up", extra={"lines": [r.line_id for r in results], "months": [r.months for r in results]})
    return {"results": [asdict(r) for r in results]}
