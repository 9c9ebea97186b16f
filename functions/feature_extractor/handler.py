"""On-demand rebuild of a line's examples ({"line_id": ...} or {"line_ids": [...]}), e.g. from the
pipeline's dataset step after context intervals were edited. Same chain as the metric packer's
event-driven handler: packer -> labeler -> this module's feature extraction.
"""

from __future__ import annotations

from edgeloop.functions.common.lambda_context import context_or_local
from edgeloop.functions.common.observability import powertools
from edgeloop.functions.metric_packer.handler import rebuild_lines
from edgeloop.functions.metric_packer.logic import lines_from_event

logger, tracer, metrics = powertools("feature_extractor")


def lambda_handler(event: dict, context) -> dict:
    return _handle(event or {}, context_or_local(context, "feature_extractor"))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    line_ids = lines_from_event(event)
    if not line_ids:
        raise ValueError(f"event names no line: expected line_id or line_ids, got keys {sorted(event)}")
    return rebuild_lines(line_ids, logger=logger, metrics=metrics)
