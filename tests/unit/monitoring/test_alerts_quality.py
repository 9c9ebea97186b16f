"""benchmarks/alerts_quality.py: the alert figures' scoring rule, on traces worked out by hand, and a small run."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from benchmarks.alerts_quality import GatewayTrace, alerts_quality, measured_classes, score_alerts
from edgeloop.schemas import ContextInterval, load_use_case
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.prediction import AlertEvent

T0 = datetime(2026, 4, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
STRIDE_MS, HORIZON_MS = 30_000, 300_000
USL, LSL, OK = "usl_violation", "lsl_violation", "in_range"


def raise_at(seconds: int, violation: str = USL) -> AlertEvent:
    at = T0 + timedelta(seconds=seconds)
    return AlertEvent.model_validate(
        {
            "thing_name": "gw-1",
            "line_id": "line-1",
            "alert_id": f"gw-1-{violation}-{seconds}",
            "event": "raise",
            "violation_class": violation,
            "raised_at": at,
            "at": at,
            "predicted_for": at + timedelta(seconds=300),
            "lead_time_s": 300.0,
            "consecutive": 2,
            "predicted_level": 3.2,
            "spec": {"target_metric": "cold_od_average", "lower": 2.8, "upper": 3.1},
            "model": {"model_id": "m", "version": "1.0.0", "precision": "fp32", "decision_margin": 0.2},
            "sent_at": at,
        }
    )


def trace(classes: list[str], raises: list[AlertEvent]) -> GatewayTrace:
    """Predictions made every 30 s from T0; classes[n]: the measured class at made_at n + horizon."""
    made = T0_MS + STRIDE_MS * np.arange(len(classes), dtype=np.int64)
    return GatewayTrace(
        raises, len(classes), len(classes), made, np.asarray(classes, dtype=object), HORIZON_MS, STRIDE_MS
    )


def test_precision_recall_and_lead_time_follow_the_rule():
    # measured at made_at + 300 s: grid point n describes T0 + 300 + 30 n seconds
    classes = [OK] * 40
    classes[20:24] = [USL] * 4  # episode 1 starts at T0 + 300 + 600 = 900 s
    classes[30:32] = [LSL] * 2  # episode 2 starts at T0 + 300 + 900 = 1200 s
    classes[36] = USL  # episode 3 at 1380 s, never alerted
    raises = [
        raise_at(720),  # 180 s before episode 1: true, caught it, lead 180 s
        raise_at(780),  # 120 s before it: true too, but episode 1 counts its earliest raise
        raise_at(1140, LSL),  # 60 s before episode 2: true, lead 60 s
        raise_at(100),  # nothing over the USL within [100, 400] s: false
        raise_at(1000, LSL),  # LSL measured at 1200 s, 200 s later: true, but 1200 - 1000 = 200 caught episode 2 first
    ]
    figures = score_alerts(trace(classes, raises))
    assert figures["alerts.raises"]["value"] == 5 and figures["alerts.true_raises"]["value"] == 4
    assert figures["alerts.precision"] == {"value": pytest.approx(0.8), "unit": "ratio"}
    assert figures["alerts.violation_episodes"]["value"] == 3 and figures["alerts.episodes_caught"]["value"] == 2
    assert figures["alerts.recall"]["value"] == pytest.approx(2 / 3)
    assert figures["alerts.lead_time_median_s"] == {"value": pytest.approx((180 + 200) / 2), "unit": "s"}
    # episodes of 4, 2 and 1 grid points: only the first lasts 3 or more, and it was caught
    assert figures["alerts.sustained_episodes"]["value"] == 1 and figures["alerts.recall_sustained"]["value"] == 1


def test_a_raise_long_before_an_episode_or_of_the_other_class_catches_nothing():
    classes = [OK] * 30
    classes[20:25] = [USL] * 5  # episode at 900 s
    figures = score_alerts(trace(classes, [raise_at(500), raise_at(800, LSL)]))
    assert figures["alerts.episodes_caught"]["value"] == 0 and figures["alerts.recall"]["value"] == 0
    assert figures["alerts.true_raises"]["value"] == 0, "500 s: the USL comes 400 s later; no LSL at all"
    assert math.isnan(figures["alerts.lead_time_median_s"]["value"])


def test_a_gap_in_the_grid_splits_an_episode_and_no_alerts_leaves_precision_undefined():
    classes = np.asarray([USL] * 6, dtype=object)
    made = T0_MS + STRIDE_MS * np.array([0, 1, 2, 10, 11, 12], dtype=np.int64)
    figures = score_alerts(GatewayTrace([], 6, 6, made, classes, HORIZON_MS, STRIDE_MS))
    assert figures["alerts.violation_episodes"]["value"] == 2
    assert math.isnan(figures["alerts.precision"]["value"]) and figures["alerts.recall"]["value"] == 0


def test_measured_classes_are_the_labelers_mean_over_the_label_window_against_the_runs_limits():
    use_case = load_use_case("extrusion")  # horizon 300 s, label window 30 s
    target_ms = T0_MS + 1000 * np.arange(3600, dtype=np.int64)
    values = np.where(target_ms >= T0_MS + 1_000_000, 3.3, 3.0)  # over the USL from 1000 s on
    run = ContextInterval.model_validate(
        {
            "kind": "run",
            "interval_id": "run-1",
            "line_id": "line-1",
            "start": T0,
            "end": T0 + timedelta(seconds=3000),
            "spec": {"target_metric": use_case.target_metric, "lower": 2.8, "upper": 3.1},
        }
    )
    made = T0_MS + 1000 * np.array([600, 690, 2670, 2760, 3000], dtype=np.int64)
    classes = measured_classes(made, target_ms, values, [run], use_case)
    # 600 s: mean over [900, 930) = 3.0; 690 s: [990, 1020) has 10 s at 3.0 and 20 at 3.3 -> 3.2 > 3.1;
    # 2670 s: [2970, 3000) ends with the run; 2760 s: [3060, 3090) ends after it; 3000 s: outside the run
    assert classes.tolist() == [OK, USL, USL, "", ""]


def test_a_small_run_through_the_gateway_gives_every_figure():
    figures = alerts_quality(train_days=2, held_out_days=0.25, candidates=1)
    for name in ("alerts.precision", "alerts.recall"):
        assert figures[name]["unit"] == "ratio"
        assert math.isnan(figures[name]["value"]) or 0 <= figures[name]["value"] <= 1
    assert figures["alerts.predictions"]["value"] >= 0.25 * 86_400 / 30 - 20, "one prediction per 30 s stride"
    assert figures["alerts.predictions_classified"]["value"] > 0, "the simulator's runs reach the context store"
    assert figures["alerts.true_raises"]["value"] <= figures["alerts.raises"]["value"]
