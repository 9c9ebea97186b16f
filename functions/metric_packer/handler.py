"""Update the training examples of lines whose curated data changed.

Triggered by new curated partitions (S3 / EventBridge "Object Created" on curated/, or the
compaction result passed on); see `lines_from_event` for the accepted event shapes. Only the runs
whose curated days or context changed since the last build are packed (cloud/packing/incremental.py);
the stored examples are what a full rebuild gives. Then the line's packs without a measured label get
semi-automatic labels: confident auto labels, the rest queued for review (cloud/packing/label_review.py).
"""

from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools
from edgeloop.cloud.packing.examples import PackStats, build_line_examples_with_stats
from edgeloop.cloud.packing.label_review import queue_line_proposals

from .logic import lines_from_event
from .settings import Settings

logger, tracer, metrics = powertools("metric_packer")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def lambda_handler(event: dict, context) -> dict:
    return _handle(event or {}, context_or_local(context, "metric_packer"))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def _handle(event: dict, context) -> dict:
    return rebuild_lines(lines_from_event(event), logger=logger, metrics=metrics)


def rebuild_lines(line_ids: list[str], *, logger: Logger, metrics: Metrics) -> dict:
    """Rebuild each line's examples, then propose labels for its unlabeled packs; report both."""
    settings = _settings()
    use_case = settings.use_case_config
    total = PackStats()
    per_line, review = {}, {"auto_labeled": 0, "pending": 0, "newly_queued": 0}
    for line_id in line_ids:
        build = build_line_examples_with_stats(settings.data_bucket, line_id, use_case)
        total.add(build.stats)
        per_line[line_id] = build.stats.examples
        queued = queue_line_proposals(settings.data_bucket, line_id, build.examples, build.unlabeled, use_case)
        for name in review:
            review[name] += getattr(queued, name)
        logger.info(
            "examples updated",
            extra={"line_id": line_id, "runs_packed": build.runs_packed, **vars(build.stats), **vars(queued)},
        )
    metrics.add_metric(name="ExamplesBuilt", unit=MetricUnit.Count, value=total.examples)
    metrics.add_metric(name="PacksCut", unit=MetricUnit.Count, value=total.packs_cut)
    dropped = (
        total.dropped_label_outside_run + total.dropped_no_spec + total.dropped_label_too_sparse + total.dropped_empty
    )
    metrics.add_metric(name="PacksDropped", unit=MetricUnit.Count, value=dropped)
    # packs left out for a machine state outside the use case's productive_states (not a data problem)
    metrics.add_metric(name="PacksExcludedNonProductive", unit=MetricUnit.Count, value=total.excluded_non_productive)
    metrics.add_metric(name="LabelsAuto", unit=MetricUnit.Count, value=review["auto_labeled"])
    metrics.add_metric(name="LabelsQueuedForReview", unit=MetricUnit.Count, value=review["newly_queued"])
    metrics.add_metric(name="LabelsPendingReview", unit=MetricUnit.Count, value=review["pending"])
    return {"examples_per_line": per_line, "stats": vars(total), "review": review}
