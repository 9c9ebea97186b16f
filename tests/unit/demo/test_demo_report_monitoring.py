"""The demo report's alerts timeline and live-accuracy-vs-persistence sections, from a made-up outcome."""

from __future__ import annotations

from datetime import datetime, timedelta

from edgeloop.demo.outcome import DemoOutcome
from edgeloop.demo.report_monitoring import accuracy_rows, alert_rows, monitoring_sections
from edgeloop.monitor_view import alert_episodes
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.context import SpecLimits
from edgeloop.schemas.monitoring import LiveAccuracyWindow, LiveFigures
from edgeloop.schemas.prediction import AlertEvent, AlertEventKind, ModelIdentity
from edgeloop.schemas.training import ViolationClass

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MODEL = ModelIdentity(model_id="extrusion-line-1", version="1.0.0", precision="fp32", decision_margin=0.0)


def event(alert_id: str, kind: AlertEventKind, minute: int, cls: ViolationClass = ViolationClass.USL) -> AlertEvent:
    at = START + timedelta(minutes=minute)
    return AlertEvent(
        thing_name="gw-line-1",
        line_id="line-1",
        alert_id=alert_id,
        event=kind,
        violation_class=cls,
        raised_at=START + timedelta(minutes=minute if kind is AlertEventKind.RAISE else minute - 5),
        at=at,
        predicted_for=at + timedelta(minutes=5),
        lead_time_s=268.0 if kind is AlertEventKind.RAISE else None,
        consecutive=2,
        predicted_level=3.8997,
        spec=SpecLimits(target_metric="cold_od_average", lower=3.75, upper=3.85),
        model=MODEL,
        sent_at=at,
    )


def outcome() -> DemoOutcome:
    result = DemoOutcome(model_version="1.0.0")
    result.alerts["line-1"] = alert_episodes(
        [
            event("a", AlertEventKind.RAISE, 10),
            event("a", AlertEventKind.CLEAR, 15),
            event("b", AlertEventKind.RAISE, 30, ViolationClass.LSL),
        ]
    )
    result.alerts["line-2"] = []
    result.last_prediction_at["line-1"] = START + timedelta(minutes=40)
    result.predictions_landed = {"line-1": 80, "line-2": 0}
    result.live_accuracy["line-1"] = [
        LiveAccuracyWindow(
            line_id="line-1",
            model_id=MODEL.model_id,
            version=MODEL.version,
            window_start=START,
            window_end=START + timedelta(hours=1),
            predictions=80,
            joined=12,
            model=LiveFigures(rmse=0.0171, mae=0.0114),
            persistence=LiveFigures(rmse=0.0427, mae=0.0310),
            rmse_ratio_vs_persistence=0.40,
            judged=False,
        )
    ]
    return result


def test_alerts_are_listed_oldest_first_with_lead_time_and_an_open_one_says_so():
    rows = alert_rows(outcome())
    assert rows == [
        ["line-1", "usl_violation", "2026-03-02 09:10:00", "268 s", "3.8997", "09:15:00"],
        ["line-1", "lsl_violation", "2026-03-02 09:30:00", "268 s", "3.8997", "open"],
    ]


def test_live_accuracy_rows_put_the_model_beside_persistence_and_say_when_a_window_is_not_judged():
    (row,) = accuracy_rows(outcome())
    assert row[3] == "12/80 (too few to judge)" and row[4:9] == ["0.0171", "0.0427", "0.40", "0.0114", "0.0310"]
    assert row[-1] == "-"


def test_the_sections_draw_a_timeline_and_a_bar_chart_without_loading_plotly_again():
    text = monitoring_sections(outcome())
    assert "Violation alerts: raise to clear, per line" in text and "Live RMSE per line and window" in text
    assert "a: lead time 268 s" in text and "b: lead time 268 s, open" in text
    assert "line-1 80, line-2 0" in text
    assert "plotly.js v" not in text.lower() and "<table>" in text  # the first figure of the report embeds it
    empty = monitoring_sections(DemoOutcome())
    assert "No alert was raised in the live period." in empty and "No window could be scored." in empty
