"""Live accuracy (logic.py), run by an hourly EventBridge schedule: of the "Scheduled Event" only `time` is
read (the round's now; any other event: the invocation's time). Environment: settings.py. What a round
publishes (log records, round metrics, per-line metrics with the use case's monitoring.line_metrics): metrics.py."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.aws import client
from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import logger_and_metrics
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.monitoring import DEGRADED_LINES_METRIC, LIVE_ACCURACY_SERVICE, PREDICTION_LINES_SKIPPED_METRIC

from .logic import run_round
from .metrics import emit_round
from .settings import Settings

logger, metrics = logger_and_metrics(LIVE_ACCURACY_SERVICE)


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def round_time(event: dict) -> datetime:
    """The schedule's `time` (ISO-8601, UTC), else now."""
    text = (event or {}).get("time")
    if not isinstance(text, str):
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time={text!r} has no time zone")
    return moment.astimezone(UTC)


def lambda_handler(event: dict, context) -> dict:
    return _handle(event or {}, context_or_local(context, LIVE_ACCURACY_SERVICE))


@metrics.log_metrics
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    settings = _settings()
    result = run_round(
        settings.data_bucket,
        settings.use_case_config,
        round_time(event),
        landing_delay_s=settings.landing_delay_minutes * 60,
        eventbridge=client("events"),
        bus=settings.event_bus,
    )
    windows = [window for report in result.reports for window in report.models]
    emit_round(windows, metrics, line_metrics=settings.use_case_config.monitoring.line_metrics)
    metrics.add_metric(name=DEGRADED_LINES_METRIC, unit=MetricUnit.Count, value=len(result.degraded_lines))
    metrics.add_metric(name=PREDICTION_LINES_SKIPPED_METRIC, unit=MetricUnit.Count, value=result.skipped.count)
    if result.skipped.count:
        logger.warning(
            "prediction lines skipped", extra={"count": result.skipped.count, "examples": result.skipped.examples}
        )
    if result.state_conflicts:
        logger.warning("state written by another round first", extra={"lines": result.state_conflicts})
    summary = {
        "windows": len(windows),
        "degraded_lines": result.degraded_lines,
        "skipped_prediction_lines": result.skipped.count,
        "state_conflicts": result.state_conflicts,
    }
    logger.info("live accuracy round", extra=summary)
    if result.failed_lines:  # after the other lines' reports and metrics: the invocation counts as an error
        raise RuntimeError(f"live accuracy failed for lines {result.failed_lines}")
    return summary
