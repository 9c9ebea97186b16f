"""demo-report.html opened in a real headless browser (issue 17): its scripts draw the live figure, the alerts
timeline per line and the live-accuracy bars, to scale, with nothing logged to the console.

The report is written by edgeloop.demo.report.write_report from a demo-sized outcome (two lines, an hour
live); only where it reads the curated lake is replaced by the same series built from samples in memory.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from report_browser import Figure, bar_height, figures, parse_html, path_points, render, undrawn_figures

from edgeloop.demo import report
from edgeloop.demo.outcome import DemoOutcome
from edgeloop.demo.settings import DemoSettings
from edgeloop.monitor_view import alert_episodes
from edgeloop.schemas import ContextInterval, load_use_case
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.context import ContextKind, SpecLimits
from edgeloop.schemas.monitoring import LiveAccuracyWindow, LiveFigures
from edgeloop.schemas.prediction import AlertEvent, AlertEventKind, ModelIdentity
from edgeloop.schemas.training import ViolationClass

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LINES = ("line-1", "line-2")
USE_CASE = load_use_case(DemoSettings().use_case)
SPEC = SpecLimits(target_metric=USE_CASE.target_metric, lower=3.75, upper=3.85)
LIVE_TITLE = "Predicted (5 min ahead, on the gateway) vs measured"
TIMELINE_TITLE = "Violation alerts: raise to clear, per line"
ACCURACY_TITLE = "Live RMSE per line and window: model vs persistence"
# alert id -> line, class, raised and cleared (None: open) in minutes after START
ALERTS = {
    "a": ("line-1", ViolationClass.USL, 10, 17),
    "b": ("line-1", ViolationClass.LSL, 40, 44),
    "c": ("line-2", ViolationClass.USL, 20, None),
}
LAST_PREDICTION_MINUTE = 60  # an open alert's bar runs to its line's newest prediction
# line -> (model RMSE, persistence RMSE) per hour window
RMSE = {"line-1": [(0.0171, 0.0427), (0.0225, 0.0310)], "line-2": [(0.0190, 0.0150), (0.0120, 0.0400)]}


def _alert(alert_id: str, kind: AlertEventKind) -> AlertEvent:
    line_id, cls, raised, cleared = ALERTS[alert_id]
    at = START + timedelta(minutes=raised if kind is AlertEventKind.RAISE else cleared)
    return AlertEvent(
        thing_name=f"gw-{line_id}",
        line_id=line_id,
        alert_id=alert_id,
        event=kind,
        violation_class=cls,
        raised_at=START + timedelta(minutes=raised),
        at=at,
        predicted_for=at + timedelta(minutes=5),
        lead_time_s=240.0 if kind is AlertEventKind.RAISE else None,
        consecutive=2,
        predicted_level=3.86 if cls is ViolationClass.USL else 3.74,
        spec=SPEC,
        model=ModelIdentity(model_id=f"extrusion-{line_id}", version="1.0.0", precision="fp32", decision_margin=0.1),
        sent_at=at,
    )


def _window(line_id: str, hour: int, model: float, persistence: float) -> LiveAccuracyWindow:
    return LiveAccuracyWindow(
        line_id=line_id,
        model_id=f"extrusion-{line_id}",
        version="1.0.0",
        window_start=START + timedelta(hours=hour),
        window_end=START + timedelta(hours=hour + 1),
        predictions=120,
        joined=110,
        model=LiveFigures(rmse=model, mae=model * 0.8),
        persistence=LiveFigures(rmse=persistence, mae=persistence * 0.8),
        rmse_ratio_vs_persistence=model / persistence,
        judged=True,
        degraded=model > persistence,
    )


def _live_series(line_id: str, use_case) -> pd.DataFrame:
    """An hour at 1 Hz of the target drifting through the upper limit, a prediction every 30 s, as curated rows."""
    seconds = np.arange(3600)
    level = 3.80 + 0.06 * np.sin(seconds / 600.0 + LINES.index(line_id))
    start_ms = int(START.timestamp() * 1000)
    measured = pd.DataFrame({"metric": use_case.target_metric, "time_ms": start_ms + seconds * 1000, "value": level})
    made = seconds[::30]
    ahead = 3.80 + 0.06 * np.sin((made + 300) / 600.0 + LINES.index(line_id)) + 0.004
    predicted = pd.DataFrame({"metric": use_case.prediction_metric, "time_ms": start_ms + made * 1000, "value": ahead})
    frame = report.predicted_vs_measured(
        pd.concat([measured, predicted]), use_case.target_metric, use_case.prediction_metric, use_case.label_window_s
    )
    run = ContextInterval(
        kind=ContextKind.RUN,
        interval_id=f"{line_id}-run-1",
        line_id=line_id,
        start=START,
        end=START + timedelta(hours=2),
        value="PE-4mm",
        spec=SPEC,
    )
    return report.with_spec_limits(frame, [run])


def demo_outcome() -> DemoOutcome:
    outcome = DemoOutcome(model_version="1.0.0")
    events = [_alert(a, AlertEventKind.RAISE) for a in ALERTS]
    events += [_alert(a, AlertEventKind.CLEAR) for a, (*_, cleared) in ALERTS.items() if cleared is not None]
    for line_id in LINES:
        outcome.alerts[line_id] = alert_episodes(e for e in events if e.line_id == line_id)
        outcome.last_prediction_at[line_id] = START + timedelta(minutes=LAST_PREDICTION_MINUTE)
        outcome.predictions_landed[line_id] = 240
        outcome.live_accuracy[line_id] = [_window(line_id, h, *figures) for h, figures in enumerate(RMSE[line_id])]
    return outcome


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "_live_series", _live_series)
        path = report.write_report(demo_outcome(), USE_CASE, list(LINES), workdir / "demo-report.html")
    return path, workdir


def _timeline_problems(timeline: Figure) -> list[str]:
    bars = [path_points(t.find("path", "js-line")[0]) for t in timeline.traces("scatter") if t.find("path", "js-line")]
    if len(bars) != len(ALERTS):
        return [f"alerts timeline: {len(bars)} bars drawn, expected one per alert ({len(ALERTS)})"]
    problems = []
    per_row = Counter(round(bar[0][1], 1) for bar in bars)  # a line's bars share its row's y
    expected_rows = Counter(line for line, *_ in ALERTS.values())
    if sorted(per_row.values()) != sorted(expected_rows.values()):
        problems.append(f"alerts timeline: bars per row {dict(per_row)}, expected per line {dict(expected_rows)}")
    if set(timeline.tick_labels("y")) != set(expected_rows):
        problems.append(f"alerts timeline: rows labelled {timeline.tick_labels('y')}, expected {sorted(expected_rows)}")
    # in drawing order (the outcome's: newest raise first per line); lengths to scale, an open one to the last prediction
    order = [a for line in LINES for a, spec in sorted(ALERTS.items(), key=lambda i: -i[1][2]) if spec[0] == line]
    minutes = [(ALERTS[a][3] or LAST_PREDICTION_MINUTE) - ALERTS[a][2] for a in order]
    widths = [bar[-1][0] - bar[0][0] for bar in bars]
    scale = widths[0] / minutes[0] if minutes[0] else 0.0
    for alert_id, bar, width, span in zip(order, bars, widths, minutes):
        if len({round(y, 1) for _, y in bar}) != 1 or abs(width - span * scale) > 1.0:
            problems.append(
                f"alerts timeline: alert {alert_id} drawn {bar}: {width:.1f} px wide, {span} min at {scale:.2f} px/min"
            )
    if set(timeline.legend()) != {c.value for _, c, *_ in ALERTS.values()}:
        problems.append(f"alerts timeline: legend {timeline.legend()}, expected the alerts' classes")
    return problems


def _accuracy_problems(accuracy: Figure) -> list[str]:
    traces = accuracy.traces("bars")
    heights = [[bar_height(path) for point in t.find("g", "point") for path in point.find("path")] for t in traces]
    windows = [pair for line in LINES for pair in RMSE[line]]
    if len(heights) != 2 or any(len(h) != len(windows) for h in heights):
        return [
            f"live accuracy: bars per trace {[len(h) for h in heights]}, expected 2 traces x {len(windows)} windows"
        ]
    problems = []
    tallest = max(max(h) for h in heights) / max(max(pair) for pair in windows)  # px per mm of RMSE
    for (model_px, persistence_px), (model, persistence) in zip(zip(*heights), windows):
        if abs(model_px - model * tallest) > 1.0 or abs(persistence_px - persistence * tallest) > 1.0:
            problems.append(
                f"live accuracy: bars {model_px:.1f}/{persistence_px:.1f} px for RMSE {model}/{persistence}"
            )
    labels = [f"{line} {START + timedelta(hours=h):%H:%M}" for line in LINES for h in range(len(RMSE[line]))]
    if accuracy.tick_labels("x") != labels:
        problems.append(f"live accuracy: x labels {accuracy.tick_labels('x')}, expected {labels}")
    return problems


def report_problems(page_path, workdir) -> list[str]:
    """What the browser shows wrong in the report: an error logged, a figure not drawn or drawn off-scale."""
    source = parse_html(page_path.read_text())
    assert not source.find("svg", "main-svg"), "the report's HTML already holds a drawn figure: nothing to check"
    page = render(page_path, workdir)
    problems = [f"console: {message}" for message in page.console]
    problems += [f"figure not drawn: plotly div {div_id}" for div_id in undrawn_figures(page.dom)]
    drawn = figures(page.dom)
    missing = [t for t in (LIVE_TITLE, TIMELINE_TITLE, ACCURACY_TITLE) if t not in drawn]
    problems += [f"figure not drawn: {title}" for title in missing]
    if LIVE_TITLE in drawn:
        lines = [path_points(p) for t in drawn[LIVE_TITLE].traces("scatter") for p in t.find("path", "js-line")]
        # per line: measured and predicted (a point a minute or more), then the two spec limits (flat: 2 points)
        counts = [len(points) for points in lines]
        if len(lines) != 4 * len(LINES) or any(
            min(counts[i : i + 2]) < 30 or min(counts[i : i + 4]) < 2 for i in range(0, len(counts), 4)
        ):
            problems.append(f"live figure: {len(lines)} lines of {counts} points, expected 4 per line")
    if TIMELINE_TITLE in drawn:
        problems += _timeline_problems(drawn[TIMELINE_TITLE])
    if ACCURACY_TITLE in drawn:
        problems += _accuracy_problems(drawn[ACCURACY_TITLE])
    return problems


def test_the_browser_draws_the_alerts_timeline_and_live_accuracy_to_scale_without_errors(written):
    path, workdir = written
    assert report_problems(path, workdir) == []


def test_a_broken_timeline_script_is_caught(written, tmp_path):
    path, _ = written
    text = path.read_text()
    calls = [m.start() for m in re.finditer(re.escape("Plotly.newPlot("), text)]
    assert len(calls) == 3, f"expected the report's 3 figures to be drawn by Plotly.newPlot, found {len(calls)}"
    broken = tmp_path / "broken-report.html"
    broken.write_text(text[: calls[1]] + "Plotly.newPlott(" + text[calls[1] + len("Plotly.newPlot(") :])
    problems = report_problems(broken, tmp_path)
    assert f"figure not drawn: {TIMELINE_TITLE}" in problems, problems
    assert any("Uncaught TypeError" in p and "newPlott" in p for p in problems), problems
    assert not [p for p in problems if "Live RMSE" in p or "live accuracy" in p], problems  # the next one still draws


def test_without_chromium_the_check_fails_and_says_how_to_install_it(monkeypatch, tmp_path):
    import report_browser

    monkeypatch.setattr(report_browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"chromium not found .* run `make chromium`"):
        report_browser.render(tmp_path / "demo-report.html", tmp_path)
