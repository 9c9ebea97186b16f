"""What a live accuracy round publishes: CloudWatch bills each distinct (metric name, dimension set) per month,
so with line_metrics off the count is fixed per use case; per (line, model version) only with it on. Every
scored window is one plain JSON log record (no EMF) with the schema's fields."""

from __future__ import annotations

import json
from datetime import timedelta
from statistics import median

import pytest
from aws_lambda_powertools.metrics import Metrics
from live_accuracy_fixtures import DAY

from edgeloop.functions.live_accuracy.metrics import emit_round, round_figures, window_record
from edgeloop.schemas import names
from edgeloop.schemas.monitoring import (
    LIVE_ACCURACY_METRICS,
    LIVE_ACCURACY_RECORD_FIELDS,
    LIVE_ACCURACY_ROUND_METRICS,
    LIVE_ACCURACY_SERVICE,
    LIVE_ACCURACY_WINDOW_RECORD,
    LiveAccuracyWindow,
    LiveFigures,
    MonitoringConfig,
)

HOUR = timedelta(hours=1)


def window(line: str, version: str, *, ratio: float = 0.8, judged: bool = True, joined: int = 100):
    """A scored window with every figure defined (all 9 per-line metrics present)."""
    figures = LiveFigures(
        rmse=0.01 * ratio, mae=0.008, violation_precision=0.5, violation_recall=0.75, lead_time_median_s=120.0
    )
    return LiveAccuracyWindow(
        line_id=line,
        model_id="extrusion-diameter",
        version=version,
        window_start=DAY,
        window_end=DAY + HOUR,
        predictions=joined + 5,
        joined=joined,
        model=figures,
        persistence=LiveFigures(rmse=0.01, mae=0.009),
        registered_rmse=0.008,
        rmse_ratio_vs_persistence=ratio,
        rmse_ratio_vs_registration=ratio * 1.25,
        judged=judged,
        degraded=judged and ratio > 1.0,
        reasons=["live RMSE above persistence's"] if judged and ratio > 1.0 else [],
    )


def fleet(lines: int, versions: int) -> list[LiveAccuracyWindow]:
    return [
        window(f"line-{i}", f"1.{v}.0", ratio=0.5 + 0.2 * i + 0.1 * v) for i in range(lines) for v in range(versions)
    ]


def published(windows: list[LiveAccuracyWindow], line_metrics: bool, capsys) -> tuple[list[dict], list[dict]]:
    """(EMF documents, other JSON lines) one round prints, the handler's metrics flushed as at its end."""
    metrics = Metrics(namespace=names.PROJECT, service=LIVE_ACCURACY_SERVICE)
    metrics.clear_metrics()
    capsys.readouterr()
    emit_round(windows, metrics, line_metrics=line_metrics)
    metrics.flush_metrics()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    return [d for d in lines if "_aws" in d], [d for d in lines if "_aws" not in d]


def billed_metrics(documents: list[dict]) -> set[tuple]:
    """Each distinct (namespace, metric name, dimension name/value set): what CloudWatch bills per month."""
    found = set()
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dimensions = frozenset((name, document[name]) for name in dimension_set)
                found |= {(directive["Namespace"], m["Name"], dimensions) for m in directive["Metrics"]}
    return found


def test_line_metrics_is_off_by_default():
    assert MonitoringConfig().line_metrics is False


def test_with_line_metrics_off_a_round_publishes_a_fixed_set_of_service_metrics(capsys):
    documents, records = published(fleet(3, 2), False, capsys)
    billed = billed_metrics(documents)
    service_only = frozenset({("service", LIVE_ACCURACY_SERVICE)})
    assert billed == {(names.PROJECT, name, service_only) for name in LIVE_ACCURACY_ROUND_METRICS}
    assert len(records) == 6  # one log record per window instead
    small, _ = published(fleet(1, 1), False, capsys)
    assert billed_metrics(small) == billed  # one line or a fleet: the same metrics, the same bill


def test_with_line_metrics_on_each_line_and_version_adds_its_nine_metrics(capsys):
    documents, records = published(fleet(3, 2), True, capsys)
    billed = billed_metrics(documents)
    per_line = {m for m in billed if len(m[2]) == 3}
    assert len(billed) == len(LIVE_ACCURACY_ROUND_METRICS) + 3 * 2 * len(LIVE_ACCURACY_METRICS) == 61
    assert {name for _, name, _ in per_line} == set(LIVE_ACCURACY_METRICS)
    assert {dict(d)["model_version"] for _, _, d in per_line} == {
        "extrusion-diameter@1.0.0",
        "extrusion-diameter@1.1.0",
    }
    line_documents = [d for d in documents if "line_id" in d]
    assert len(line_documents) == 6 and {d["_aws"]["Timestamp"] for d in line_documents} == {
        int((DAY + HOUR).timestamp() * 1000)
    }
    assert len(records) == 6  # the log records are written either way


def test_round_figures_are_taken_over_judged_windows():
    windows = [
        window("line-0", "1.0.0", ratio=0.9),
        window("line-0", "1.1.0", ratio=1.4),
        window("line-1", "1.0.0", ratio=1.1),
        window("line-2", "1.0.0", ratio=5.0, judged=False, joined=3),  # too few joined: not judged
        window("line-3", "1.0.0", ratio=0.7).model_copy(update={"rmse_ratio_vs_registration": None}),
    ]
    figures = {name: value for name, (value, _) in round_figures(windows).items()}
    assert figures == {
        "LinesJudged": 3.0,
        "WindowsJudged": 4.0,
        "WindowsDegraded": 2.0,
        "PredictionsJoined": 403.0,  # every window's, judged or not
        "WorstRmseRatioVsPersistence": 1.4,
        "WorstRmseRatioVsRegistration": 1.4 * 1.25,
        "MedianRmseRatioVsPersistence": median([0.9, 1.4, 1.1, 0.7]),
    }


def test_a_round_without_judged_windows_leaves_the_ratios_out_and_counts_zero():
    figures = round_figures([window("line-0", "1.0.0", judged=False, joined=2)])
    assert {name: value for name, (value, _) in figures.items()} == {
        "LinesJudged": 0.0,
        "WindowsJudged": 0.0,
        "WindowsDegraded": 0.0,
        "PredictionsJoined": 2.0,
    }
    assert {name: value for name, (value, _) in round_figures([]).items()}["LinesJudged"] == 0.0


@pytest.mark.parametrize("line_metrics", [False, True])
def test_each_window_is_one_plain_json_record_with_the_schemas_fields(capsys, line_metrics):
    degraded = window("line-1", "1.1.0", ratio=1.2)
    _, records = published([degraded], line_metrics, capsys)
    (record,) = records
    assert list(record) == ["record", "service", *LIVE_ACCURACY_RECORD_FIELDS]
    assert record == window_record(degraded)
    assert record | {"reasons": None} == {
        "record": LIVE_ACCURACY_WINDOW_RECORD,
        "service": LIVE_ACCURACY_SERVICE,
        "line_id": "line-1",
        "model_id": "extrusion-diameter",
        "version": "1.1.0",
        "model_version": "extrusion-diameter@1.1.0",
        "window_start": "2026-03-02T00:00:00+00:00",
        "window_end": "2026-03-02T01:00:00+00:00",
        "predictions": 105,
        "joined": 100,
        "rmse": pytest.approx(0.012),
        "mae": 0.008,
        "persistence_rmse": 0.01,
        "registered_rmse": 0.008,
        "rmse_ratio_vs_persistence": 1.2,
        "rmse_ratio_vs_registration": 1.5,
        "violation_precision": 0.5,
        "violation_recall": 0.75,
        "lead_time_median_s": 120.0,
        "judged": True,
        "degraded": True,
        "status": "degraded",
        "reasons": None,
    }
    assert record["reasons"] == ["live RMSE above persistence's"]


def test_a_window_with_nothing_joined_is_recorded_with_empty_figures():
    empty = LiveAccuracyWindow(
        line_id="line-9", model_id="m", version="2.0.0", window_start=DAY, window_end=DAY + HOUR,
        predictions=4, joined=0, judged=False,
    )  # fmt: skip
    record = window_record(empty)
    assert record["status"] == "not judged" and record["joined"] == 0
    assert [f for f in LIVE_ACCURACY_RECORD_FIELDS if record[f] is None] == [
        "rmse",
        "mae",
        "persistence_rmse",
        "registered_rmse",
        "rmse_ratio_vs_persistence",
        "rmse_ratio_vs_registration",
        "violation_precision",
        "violation_recall",
        "lead_time_median_s",
    ]
