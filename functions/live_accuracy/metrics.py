"""What a round publishes (namespace names.PROJECT, service LIVE_ACCURACY_SERVICE; schemas/monitoring.py).

CloudWatch bills a custom metric per distinct (name, dimension set) per month, so what grows with the fleet
must not be a metric. Always, whatever the number of lines:
- per round, LIVE_ACCURACY_ROUND_METRICS with dimension service only (on the handler's Metrics, beside
  DegradedLines): a fixed number of metrics per use case;
- per scored window, one plain JSON log line (`window_record`; no `_aws` key, so CloudWatch extracts no
  metric from it) that the dashboard's Logs Insights table reads.
With MonitoringConfig.line_metrics, also per (line, model version) window one EMF document of its own:
dimensions service, line_id and model_version (3 of CloudWatch's 30; 9 metrics of its 100), stamped with
the window's end so the graph shows accuracy at the time it is about, not when it was scored.
EphemeralMetrics, because powertools' Metrics share one dimension set across instances.
"""

from __future__ import annotations

import json
import os
from statistics import median

from aws_lambda_powertools.metrics import EphemeralMetrics, Metrics, MetricUnit

from edgeloop.schemas import names
from edgeloop.schemas.monitoring import (
    LIVE_ACCURACY_RECORD_FIELDS,
    LIVE_ACCURACY_ROUND_METRICS,
    LIVE_ACCURACY_SERVICE,
    LIVE_ACCURACY_WINDOW_RECORD,
    LiveAccuracyWindow,
    model_version_key,
)


def window_figures(window: LiveAccuracyWindow) -> dict[str, tuple[float, MetricUnit]]:
    """The window's metric values (a figure that is undefined, e.g. no violation predicted, is left out)."""
    figures: dict[str, tuple[float | None, MetricUnit]] = {"PredictionsJoined": (window.joined, MetricUnit.Count)}
    if window.model is not None and window.persistence is not None:
        figures |= {
            "LiveRmse": (window.model.rmse, MetricUnit.NoUnit),
            "LiveMae": (window.model.mae, MetricUnit.NoUnit),
            "PersistenceRmse": (window.persistence.rmse, MetricUnit.NoUnit),
            "LiveRmseRatioVsPersistence": (window.rmse_ratio_vs_persistence, MetricUnit.NoUnit),
            "LiveRmseRatioVsRegistration": (window.rmse_ratio_vs_registration, MetricUnit.NoUnit),
            "LiveViolationPrecision": (window.model.violation_precision, MetricUnit.NoUnit),
            "LiveViolationRecall": (window.model.violation_recall, MetricUnit.NoUnit),
            "LiveLeadTimeMedian": (window.model.lead_time_median_s, MetricUnit.Seconds),
        }
    return {name: (float(value), unit) for name, (value, unit) in figures.items() if value is not None}


def emit_window(window: LiveAccuracyWindow) -> None:
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", names.PROJECT)
    metrics = EphemeralMetrics(namespace=namespace, service=LIVE_ACCURACY_SERVICE)
    metrics.add_dimension(name="line_id", value=window.line_id)
    metrics.add_dimension(name="model_version", value=model_version_key(window.model_id, window.version))
    for name, (value, unit) in window_figures(window).items():
        metrics.add_metric(name=name, unit=unit, value=value)
    metrics.set_timestamp(window.window_end)
    metrics.flush_metrics()


def round_figures(windows: list[LiveAccuracyWindow]) -> dict[str, tuple[float, MetricUnit]]:
    """LIVE_ACCURACY_ROUND_METRICS over a round's windows; a ratio no judged window defines is left out."""
    judged = [w for w in windows if w.judged]
    vs_persistence = [w.rmse_ratio_vs_persistence for w in judged if w.rmse_ratio_vs_persistence is not None]
    vs_registration = [w.rmse_ratio_vs_registration for w in judged if w.rmse_ratio_vs_registration is not None]
    figures: dict[str, tuple[float | None, MetricUnit]] = {
        "LinesJudged": (len({w.line_id for w in judged}), MetricUnit.Count),
        "WindowsJudged": (len(judged), MetricUnit.Count),
        "WindowsDegraded": (sum(w.degraded for w in judged), MetricUnit.Count),
        "PredictionsJoined": (sum(w.joined for w in windows), MetricUnit.Count),
        "WorstRmseRatioVsPersistence": (max(vs_persistence, default=None), MetricUnit.NoUnit),
        "WorstRmseRatioVsRegistration": (max(vs_registration, default=None), MetricUnit.NoUnit),
        "MedianRmseRatioVsPersistence": (median(vs_persistence) if vs_persistence else None, MetricUnit.NoUnit),
    }
    if set(figures) != set(LIVE_ACCURACY_ROUND_METRICS):  # one list of names, the schema's
        raise RuntimeError(f"round figures {sorted(figures)} differ from LIVE_ACCURACY_ROUND_METRICS")
    return {name: (float(value), unit) for name, (value, unit) in figures.items() if value is not None}


def window_status(window: LiveAccuracyWindow) -> str:
    if not window.judged:
        return "not judged"
    return "degraded" if window.degraded else "healthy"


def window_record(window: LiveAccuracyWindow) -> dict:
    """The window's log record: `record`, `service`, then LIVE_ACCURACY_RECORD_FIELDS (None: undefined)."""
    model, persistence = window.model, window.persistence
    fields = {
        "line_id": window.line_id,
        "model_id": window.model_id,
        "version": window.version,
        "model_version": model_version_key(window.model_id, window.version),
        "window_start": window.window_start.isoformat(),
        "window_end": window.window_end.isoformat(),
        "predictions": window.predictions,
        "joined": window.joined,
        "rmse": model.rmse if model else None,
        "mae": model.mae if model else None,
        "persistence_rmse": persistence.rmse if persistence else None,
        "registered_rmse": window.registered_rmse,
        "rmse_ratio_vs_persistence": window.rmse_ratio_vs_persistence,
        "rmse_ratio_vs_registration": window.rmse_ratio_vs_registration,
        "violation_precision": model.violation_precision if model else None,
        "violation_recall": model.violation_recall if model else None,
        "lead_time_median_s": model.lead_time_median_s if model else None,
        "judged": window.judged,
        "degraded": window.degraded,
        "status": window_status(window),
        "reasons": window.reasons,
    }
    if tuple(fields) != LIVE_ACCURACY_RECORD_FIELDS:  # the dashboard's query names the schema's fields
        raise RuntimeError(f"window record fields {list(fields)} differ from LIVE_ACCURACY_RECORD_FIELDS")
    return {"record": LIVE_ACCURACY_WINDOW_RECORD, "service": LIVE_ACCURACY_SERVICE, **fields}


def emit_round(windows: list[LiveAccuracyWindow], metrics: Metrics, *, line_metrics: bool) -> None:
    """Log every window, add the round's aggregates to `metrics`; EMF per window only with `line_metrics`."""
    for window in windows:
        # print, not the Logger: the record is data the dashboard reads, kept whatever the log level
        print(json.dumps(window_record(window), separators=(",", ":")), flush=True)  # noqa: T201
        if line_metrics:
            emit_window(window)
    for name, (value, unit) in round_figures(windows).items():
        metrics.add_metric(name=name, unit=unit, value=value)
