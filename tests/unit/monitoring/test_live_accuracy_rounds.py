"""Live accuracy rounds: due windows only, scored once, the degraded streak's one event, damaged lines."""

from __future__ import annotations

import json
from datetime import timedelta

import boto3
import pytest
from event_queues import queue_behind_rule, received
from live_accuracy_fixtures import DAY, DELAY_S, USE_CASE, Recorder, bucket, due_at  # noqa: F401 (fixture)

from benchmarks.monitoring_data import land, line_day
from edgeloop.cloud import s3
from edgeloop.functions.live_accuracy import handler, store
from edgeloop.functions.live_accuracy.handler import lambda_handler
from edgeloop.functions.live_accuracy.logic import run_round
from edgeloop.schemas import names
from edgeloop.schemas.monitoring import (
    DEGRADED_LINES_METRIC,
    LIVE_ACCURACY_METRICS,
    LIVE_ACCURACY_WINDOW_RECORD,
    ModelDegradedDetail,
)

HOUR = timedelta(hours=1)


def objects(bucket_name: str) -> dict[str, bytes]:
    keys = s3.list_keys(bucket_name, f"{names.MONITORING_PREFIX}/")
    return {key: s3.get_bytes(bucket_name, key) for key in keys}


def round_at(bucket_name: str, now, eventbridge=None, **kwargs):
    return run_round(
        bucket_name,
        USE_CASE,
        now,
        landing_delay_s=DELAY_S,
        eventbridge=eventbridge or Recorder(),
        registered_rmse=lambda *_: None,
        **kwargs,
    )


def test_windows_not_yet_due_are_not_scored(bucket):  # noqa: F811
    land(bucket, line_day(DAY, USE_CASE, hours=3))
    just_before = due_at(DAY + 2 * HOUR) - timedelta(seconds=1)
    first = round_at(bucket, just_before)
    assert [r.window_start for r in first.reports] == [DAY]  # 01:00-02:00 ends its label windows too late
    state, reports = store.read_line_monitoring(bucket, "line-1")
    assert state.scored_through == DAY + HOUR and [r.window_start for r in reports] == [DAY]
    second = round_at(bucket, due_at(DAY + 2 * HOUR))
    assert [r.window_start for r in second.reports] == [DAY + HOUR]
    assert store.read_line_monitoring(bucket, "line-1")[0].windows_scored == 2


def test_a_late_round_scores_each_window_once_and_a_rerun_rewrites_the_same(bucket):  # noqa: F811
    land(bucket, line_day(DAY, USE_CASE, hours=4, offset=0.12))
    late = due_at(DAY + 4 * HOUR) + 5 * HOUR  # the schedule missed five rounds
    events = Recorder()
    first = round_at(bucket, late, events)
    assert [r.window_start for r in first.reports] == [DAY + i * HOUR for i in range(4)]
    written = objects(bucket)
    assert len(events.entries) == 1
    again = round_at(bucket, late, events)  # the same round once more: nothing is due any more
    assert again.reports == [] and again.trips == [] and len(events.entries) == 1
    assert objects(bucket) == written
    # a round that died before writing its state: the next one redoes it, byte for byte
    boto3.client("s3").delete_object(Bucket=bucket, Key=store.state_key("line-1"))
    redo = round_at(bucket, late, events)
    assert objects(bucket) == written
    assert [t.model_dump() for t in redo.trips] == [t.model_dump() for t in first.trips]


def test_a_stale_state_write_loses_and_is_reported(bucket):  # noqa: F811
    land(bucket, line_day(DAY, USE_CASE, hours=2))
    round_at(bucket, due_at(DAY + HOUR))
    state, etag = store.load_state(bucket, "line-1")
    round_at(bucket, due_at(DAY + 2 * HOUR))  # another round advanced the line meanwhile
    assert store.save_state(bucket, state, etag) is False
    assert store.save_state(bucket, state.model_copy(update={"line_id": "line-2"}), None) is True
    assert store.save_state(bucket, state.model_copy(update={"line_id": "line-2"}), None) is False


@pytest.fixture()
def degraded_queue(bucket):  # noqa: F811
    """An SQS queue behind an EventBridge rule on the degraded detail type (moto delivers to it)."""
    pattern = {"source": [names.EVENT_SOURCE], "detail-type": [names.MODEL_DEGRADED_DETAIL_TYPE]}
    return queue_behind_rule("degraded", pattern)


@pytest.fixture()
def fresh_settings():
    handler._settings.cache_clear()  # the use case (line_metrics) is read once per cold start
    yield
    handler._settings.cache_clear()


@pytest.mark.parametrize("line_metrics", [False, True])
def test_a_degraded_model_trips_exactly_once_after_n_windows(
    bucket,  # noqa: F811
    degraded_queue,
    monkeypatch,
    capsys,
    tmp_path,
    fresh_settings,
    line_metrics,
):
    land(bucket, line_day(DAY, USE_CASE, hours=6, offset=0.12))  # every window worse than persistence
    monitoring = USE_CASE.monitoring.model_copy(update={"line_metrics": line_metrics})
    use_case_file = tmp_path / "extrusion.json"
    use_case_file.write_text(USE_CASE.model_copy(update={"monitoring": monitoring}).model_dump_json())
    monkeypatch.setenv(names.DATA_BUCKET_ENV, bucket)
    monkeypatch.setenv(names.USE_CASE_ENV, "extrusion")
    monkeypatch.setenv(names.USE_CASE_FILE_ENV, str(use_case_file))
    monkeypatch.setenv(names.LANDING_DELAY_MINUTES_ENV, str(DELAY_S / 60))
    monkeypatch.setenv(names.EVENT_BUS_ENV, "default")
    monkeypatch.setattr("edgeloop.functions.live_accuracy.logic.registry.registered_rmse", lambda *_: None)
    n = USE_CASE.monitoring.degraded_windows
    degraded_counts = []
    for hour in range(1, 7):  # the hourly schedule, one window due each time
        capsys.readouterr()
        now = due_at(DAY + hour * HOUR)
        summary = lambda_handler({"detail-type": "Scheduled Event", "time": now.isoformat()}, None)
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        documents = [d for d in printed if "_aws" in d]
        (round_document,) = [d for d in documents if DEGRADED_LINES_METRIC in d]
        (count,) = round_document[DEGRADED_LINES_METRIC]  # EMF: a list
        degraded_counts.append(count)
        assert (round_document["WindowsJudged"], round_document["LinesJudged"]) == ([1.0], [1.0])
        assert round_document["WorstRmseRatioVsPersistence"][0] > USE_CASE.monitoring.max_rmse_ratio_vs_persistence
        (record,) = [d for d in printed if d.get("record") == LIVE_ACCURACY_WINDOW_RECORD]
        assert (record["line_id"], record["status"]) == ("line-1", "degraded")
        assert record["window_start"] == (DAY + (hour - 1) * HOUR).isoformat()
        windows = [d for d in documents if "LiveRmse" in d]
        assert len(windows) == (1 if line_metrics else 0)
        for window in windows:
            assert window["line_id"] == "line-1"
            assert window["_aws"]["Timestamp"] == int((DAY + hour * HOUR).timestamp() * 1000)
            assert {m["Name"] for m in window["_aws"]["CloudWatchMetrics"][0]["Metrics"]} <= set(LIVE_ACCURACY_METRICS)
        assert summary["windows"] == 1
    assert degraded_counts == [0] * (n - 1) + [1] + [0] * (6 - n)
    (event,) = received(degraded_queue)
    detail = ModelDegradedDetail.model_validate(event["detail"])
    assert event["detail-type"] == names.MODEL_DEGRADED_DETAIL_TYPE and event["source"] == names.EVENT_SOURCE
    assert detail.line_id == "line-1" and detail.version == "1.0.0"
    assert detail.windows == [DAY + i * HOUR for i in range(n)] and "persistence RMSE" in detail.reason
    state, _ = store.read_line_monitoring(bucket, "line-1")
    assert state.streaks[0].tripped and len(state.streaks[0].windows) == n


def test_a_healthy_window_ends_the_streak(bucket):  # noqa: F811
    n = USE_CASE.monitoring.degraded_windows
    land(bucket, line_day(DAY, USE_CASE, hours=n - 1, offset=0.12))
    land(bucket, line_day(DAY + (n - 1) * HOUR, USE_CASE, hours=1, seed=1))  # one good hour
    land(bucket, line_day(DAY + n * HOUR, USE_CASE, hours=n - 1, offset=0.12, seed=2))
    result = round_at(bucket, due_at(DAY + (2 * n - 1) * HOUR))
    assert [w.degraded for r in result.reports for w in r.models] == [True] * (n - 1) + [False] + [True] * (n - 1)
    assert result.trips == []


def test_a_damaged_landed_line_is_skipped_and_counted(bucket):  # noqa: F811
    data = line_day(DAY, USE_CASE, hours=2)
    land(bucket, data)
    clean = round_at(bucket, due_at(DAY + 2 * HOUR), line_ids=["line-1"])
    boto3.client("s3").delete_object(Bucket=bucket, Key=store.state_key("line-1"))
    good = data.predictions[0].model_dump_json()
    damaged = "\n".join(["{not json", good.replace('"horizon_s":300', '"horizon_s":-1'), good[:40]]) + "\n"
    s3.put_bytes(
        bucket, f"{names.PREDICTIONS_PREFIX}/line=line-1/made_date={DAY:%Y-%m-%d}/damaged.jsonl", damaged.encode()
    )
    result = round_at(bucket, due_at(DAY + 2 * HOUR), line_ids=["line-1"])
    assert result.skipped.count == 3 and all("damaged.jsonl line" in e for e in result.skipped.examples)
    assert [r.models for r in result.reports] == [r.models for r in clean.reports]  # the rest scored as before


def test_a_line_that_fails_keeps_no_other_line_unscored(bucket):  # noqa: F811
    land(bucket, line_day(DAY, USE_CASE, hours=1, line_id="line-1"))
    land(bucket, line_day(DAY, USE_CASE, hours=1, line_id="line-2"))
    s3.put_bytes(bucket, store.state_key("line-1"), b'{"line_id": "line-1"}')  # a damaged state
    result = round_at(bucket, due_at(DAY + HOUR))
    assert [r.line_id for r in result.reports] == ["line-2"]
    assert (
        list(result.failed_lines) == ["line-1"]
        and "state.json is not a LiveAccuracyState" in result.failed_lines["line-1"]
    )
