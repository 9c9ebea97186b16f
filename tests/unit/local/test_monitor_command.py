"""`edgeloop monitor` against moto: alerts paired with their lead time, live accuracy per line and
version beside persistence, and the retraining decision each line would get now."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.cloud.retraining import scheduled_trigger
from edgeloop.cloud.retraining_table import RetrainingTable
from edgeloop.functions.live_accuracy.store import put_report, save_state
from edgeloop.local.aws import table_definition
from edgeloop.monitor_view import alert_episodes
from edgeloop.schemas import names
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.context import SpecLimits
from edgeloop.schemas.monitoring import (
    DegradedStreak,
    LiveAccuracyReport,
    LiveAccuracyState,
    LiveAccuracyWindow,
    LiveFigures,
)
from edgeloop.schemas.prediction import AlertEvent, AlertEventKind, ModelIdentity
from edgeloop.schemas.training import ViolationClass

BUCKET, TABLE = "monitor-test-data", "monitor-test-monitoring"
NOW = datetime.now(UTC).replace(microsecond=0)
MODEL = ModelIdentity(model_id="extrusion-line-1", version="1.2.0", precision="fp32", decision_margin=0.1)


def alert(alert_id: str, kind: AlertEventKind, at: datetime, *, line: str = "line-1", lead: float | None = 250.0):
    return AlertEvent(
        thing_name=f"gw-{line}",
        line_id=line,
        alert_id=alert_id,
        event=kind,
        violation_class=ViolationClass.USL,
        raised_at=at if kind is AlertEventKind.RAISE else at - timedelta(minutes=3),
        at=at,
        predicted_for=at + timedelta(minutes=5),
        lead_time_s=lead if kind is AlertEventKind.RAISE else None,
        consecutive=2,
        predicted_level=3.8621,
        spec=SpecLimits(target_metric="cold_od_average", lower=3.75, upper=3.85),
        model=MODEL,
        sent_at=at,
    )


def land(events: list[AlertEvent], name: str) -> None:
    day = events[0].at.strftime("%Y-%m-%d")
    body = "".join(e.model_dump_json() + "\n" for e in events).encode()
    key = f"{names.ALERTS_PREFIX}/line={events[0].line_id}/event_date={day}/{name}.jsonl"
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)


def window(start: datetime, rmse: float, persistence: float, degraded: bool) -> LiveAccuracyWindow:
    figures = LiveFigures(
        rmse=rmse, mae=rmse * 0.8, violation_precision=0.75, violation_recall=0.5, lead_time_median_s=240
    )
    return LiveAccuracyWindow(
        line_id="line-1",
        model_id=MODEL.model_id,
        version=MODEL.version,
        window_start=start,
        window_end=start + timedelta(hours=1),
        predictions=120,
        joined=118,
        model=figures,
        persistence=LiveFigures(rmse=persistence, mae=persistence * 0.8),
        registered_rmse=0.012,
        rmse_ratio_vs_persistence=rmse / persistence,
        rmse_ratio_vs_registration=rmse / 0.012,
        judged=True,
        degraded=degraded,
    )


@pytest.fixture()
def monitored():
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        boto3.client("dynamodb").create_table(**table_definition(TABLE, names.MONITORING_TABLE_KEYS))
        first = NOW - timedelta(hours=5)
        raise_1, clear_1 = (
            alert("a-1", AlertEventKind.RAISE, first),
            alert("a-1", AlertEventKind.CLEAR, first + timedelta(minutes=4)),
        )
        land([raise_1], "r1")
        land([raise_1, clear_1], "r1-again")  # a redelivered raise lands again: it counts once
        land([alert("a-2", AlertEventKind.RAISE, NOW - timedelta(minutes=10), lead=171.0)], "r2")  # still open
        land([alert("old", AlertEventKind.RAISE, NOW - timedelta(days=30))], "old")  # older than --days
        windows = [NOW.replace(minute=0, second=0) - timedelta(hours=h) for h in (4, 3, 2)]
        for start, rmse in zip(windows, (0.032, 0.030, 0.031)):
            put_report(
                BUCKET,
                LiveAccuracyReport(
                    line_id="line-1",
                    window_start=start,
                    window_end=start + timedelta(hours=1),
                    models=[window(start, rmse, 0.025, rmse > 0.025)],
                ),
            )
        streak = DegradedStreak(model_id=MODEL.model_id, version=MODEL.version, windows=windows, tripped=True)
        state = LiveAccuracyState(line_id="line-1", scored_through=windows[-1] + timedelta(hours=1), streaks=[streak])
        assert save_state(BUCKET, state, None)
        # line-1 started an hour ago (cool-down); line-2 never did (the schedule asks for it)
        trigger = scheduled_trigger("line-1", NOW - timedelta(hours=1))
        started = NOW - timedelta(hours=1)
        RetrainingTable(TABLE).claim(
            trigger, "token-1", now=started, cutoff=started - timedelta(days=7), expires=started + timedelta(days=90)
        )
        yield


def run_monitor(*args: str):
    options = ["--bucket", BUCKET, "--monitoring-table", TABLE, "--use-case", "extrusion"]
    result = CliRunner().invoke(app, ["monitor", *options, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_monitor_shows_alerts_with_lead_time_live_accuracy_and_what_would_fire(monitored):
    output = run_monitor("--line", "line-1", "--line", "line-2")
    assert "Alerts on line-1 (2 of 2)" in output  # a-1 once, a-2; the 30-day-old one is past --days
    assert "a-1" in output and "250 s" in output and "(after 240 s)" in output and "3.8621 (> 3.85)" in output
    assert "a-2" in output and "171 s" in output
    # raised 10 minutes before NOW (taken at import); the command's clock runs on from there
    open_for = re.search(r"open for (\d+) s", output)
    assert open_for and 600 <= int(open_for.group(1)) < 600 + 3600, output
    assert "Alerts on line-2 (0 of 0)" in output
    # the newest scored window of the version: worse than persistence, the third in a row (tripped)
    assert "extrusion-line-1 1.2.0" in output and "0.0310 (0.0250)" in output
    assert "1.24" in output and "2.58 (0.0120)" in output and "0.75 / 0.50" in output and "240 s" in output
    assert "3/3 (tripped)" in output
    line_1 = next(row for row in output.splitlines() if row.startswith("│ line-1") and "degraded" in row)
    assert "no" in line_1 and "within the cool-down" in line_1  # its start an hour ago holds the trigger back
    line_2 = next(row for row in output.splitlines() if row.startswith("│ line-2") and "scheduled" in row)
    assert "yes" in line_2
    assert "running executions of edgeloop-extrusion not known" in output  # moto has no such pipeline


def test_json_carries_the_same_alerts_windows_and_decisions(monitored):
    document = json.loads(run_monitor("--line", "line-1", "--json", "--alerts", "1"))
    (line,) = document["lines"]
    assert [a["alert_id"] for a in line["alerts"]] == ["a-2"] and line["alerts"][0]["clear"] is None
    assert line["alerts"][0]["raise"]["lead_time_s"] == 171.0
    (window,) = line["live_accuracy"]
    assert window["model"]["rmse"] == 0.031 and window["persistence"]["rmse"] == 0.025
    assert line["state"]["streaks"][0]["tripped"] is True
    assert document["decisions"][0]["line_id"] == "line-1" and document["decisions"][0]["start"] is False


def test_every_monitored_line_is_shown_without_line_and_a_missing_bucket_is_an_error(monitored):
    output = run_monitor()
    assert "Alerts on line-1" in output and "line-2" not in output
    result = CliRunner().invoke(app, ["monitor", "--bucket", "no-such-bucket", "--use-case", "extrusion"])
    assert result.exit_code == 1 and "NoSuchBucket" in result.output


def test_raises_and_clears_pair_by_alert_id_and_a_clear_alone_keeps_its_raise_time():
    start = NOW - timedelta(hours=1)
    events = [
        alert("b", AlertEventKind.CLEAR, start + timedelta(minutes=30)),  # its raise is older than what was read
        alert("a", AlertEventKind.RAISE, start),
        alert("a", AlertEventKind.CLEAR, start + timedelta(minutes=2)),
        alert("a", AlertEventKind.RAISE, start),
    ]
    episodes = alert_episodes(events)
    assert [e.alert_id for e in episodes] == ["b", "a"]  # newest raise first
    b, a = episodes
    assert b.raised is None and b.lead_time_s is None and b.raised_at == start + timedelta(minutes=27)
    assert a.lead_time_s == 250.0 and not a.open and a.cleared.at == start + timedelta(minutes=2)
