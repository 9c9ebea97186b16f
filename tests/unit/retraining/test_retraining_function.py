"""functions/retraining against moto: a degraded model or the schedule starts the line's pipeline once.

moto finishes executions at once and ignores ClientRequestToken, so "Executing" is set on moto's
backend, and idempotency is checked twice: no second start by our own bookkeeping (the item records
the trigger's token and ARN), and a retried start sends the same token (SageMaker's own guarantee).
Every call is also held against botocore's model (names and types; not patterns or lengths, which
test_retraining_decision checks)."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws_contract"))
from botocore_contract import call_problems, recording  # noqa: E402
from event_queues import received  # noqa: E402
from retraining_aws import (  # noqa: E402
    TABLE,
    create_resources,
    degraded_event,
    executions,
    item,
    scheduled_event,
    set_status,
)

from edgeloop.cloud.retraining_table import RetrainingTable  # noqa: E402
from edgeloop.functions.retraining.logic import run_retraining  # noqa: E402
from edgeloop.schemas import names  # noqa: E402
from edgeloop.schemas.monitoring import MonitoringConfig  # noqa: E402
from edgeloop.schemas.use_case import resolve_use_case  # noqa: E402

NOW = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)
USE_CASE = resolve_use_case("extrusion", None)
PIPELINE = names.pipeline_name(USE_CASE.use_case)
DETAIL = {
    "line_id": "line-1",
    "model_id": "extrusion-line-1",
    "version": "1.0.3",
    "reason": "3 windows in a row: live RMSE above 1.5x the registered RMSE",
    "windows": ["2026-12-06T10:00:00Z", "2026-12-06T11:00:00Z", "2026-12-06T12:00:00Z"],
}


@pytest.fixture
def queue_url():
    with mock_aws():
        yield create_resources(PIPELINE)


def run(event, now=NOW, line_ids=(), monitoring: MonitoringConfig | None = None):
    use_case = USE_CASE if monitoring is None else USE_CASE.model_copy(update={"monitoring": monitoring})
    return run_retraining(
        event,
        use_case=use_case,
        line_ids=list(line_ids),
        table=RetrainingTable(TABLE),
        sagemaker=boto3.client("sagemaker"),
        eventbridge=boto3.client("events"),
        event_bus="default",
        now=now,
    )


def test_a_degraded_model_starts_its_lines_pipeline_with_the_trigger_as_lineage(queue_url):
    with recording() as calls:
        result = run(degraded_event(DETAIL, NOW))
    assert call_problems(calls) == []
    ((started,), (execution,)) = result.started, executions(PIPELINE)
    assert execution["PipelineExecutionArn"] == started.execution_arn
    assert execution["Parameters"] == {"LineId": "line-1", "StartDate": "", "EndDate": ""}
    assert execution["PipelineExecutionDisplayName"] == "line-1-degraded-20261206-130000"
    assert (
        "degraded" in execution["PipelineExecutionDescription"] and "1.0.3" in execution["PipelineExecutionDescription"]
    )
    (start_call,) = [c for c in calls if c.operation == "StartPipelineExecution"]
    assert start_call.params["ClientRequestToken"] == started.client_request_token
    recorded = item("line-1")
    assert recorded["execution_arn"] == started.execution_arn and recorded["trigger"] == "degraded"
    assert recorded["token"] == started.client_request_token and recorded["reason"] == DETAIL["reason"]
    # kept a month past the longest hold it enforces (7 days' schedule + 24 h cool-down): never mistaken for "never"
    expiry = NOW + timedelta(days=7, hours=24) + timedelta(days=30)
    assert recorded[names.MONITORING_TABLE_TTL_ATTRIBUTE] == int(expiry.timestamp())
    (event,) = received(queue_url)
    assert event["detail-type"] == names.RETRAINING_DETAIL_TYPE and event["source"] == names.EVENT_SOURCE
    assert event["detail"]["execution_arn"] == started.execution_arn
    assert event["detail"]["trigger"] == "degraded" and event["detail"]["windows"] == [
        w.replace("Z", "+00:00") for w in DETAIL["windows"]
    ]


def test_exactly_one_start_within_the_cool_down_however_the_degraded_events_come(queue_url):
    event = degraded_event(DETAIL, NOW)
    assert len(run(event).started) == 1
    redelivered = run(event, now=NOW + timedelta(minutes=3))
    assert redelivered.started == [] and redelivered.held[0].why.startswith("already started by this degraded trigger")
    next_round = degraded_event(
        {**DETAIL, "windows": [*DETAIL["windows"], "2026-12-06T13:00:00Z"]}, NOW + timedelta(hours=1)
    )
    held = run(next_round, now=NOW + timedelta(hours=1))
    assert held.started == [] and held.held[0].why.startswith("within the cool-down")
    assert len(executions(PIPELINE)) == 1
    assert len(received(queue_url)) == 1


def test_after_the_cool_down_a_running_execution_still_holds_the_line_back(queue_url):
    (first,) = run(degraded_event(DETAIL, NOW)).started
    set_status(PIPELINE, first.execution_arn, "Executing")
    later = NOW + timedelta(hours=25)
    event = degraded_event({**DETAIL, "windows": ["2026-12-07T13:00:00Z"]}, later)
    held = run(event, now=later)
    assert held.started == [] and held.held[0].why == f"an execution of line line-1 is Executing: {first.execution_arn}"
    set_status(PIPELINE, first.execution_arn, "Succeeded")
    assert len(run(event, now=later).started) == 1
    assert len(executions(PIPELINE)) == 2


def test_an_execution_of_another_line_does_not_hold_this_one(queue_url):
    (other,) = run(degraded_event({**DETAIL, "line_id": "line-2"}, NOW)).started
    set_status(PIPELINE, other.execution_arn, "Executing")
    assert [s.line_id for s in run(degraded_event(DETAIL, NOW)).started] == ["line-1"]


def test_racing_triggers_of_one_line_start_one_execution(queue_url, monkeypatch):
    # DynamoDB applies a write's condition atomically; moto does not, so the fleet tests' lock stands in
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    original = DynamoDBBackend.update_item

    def atomic(*args, **kwargs):
        with lock:
            return original(*args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "update_item", atomic)
    events = [degraded_event({**DETAIL, "windows": [f"2026-12-06T1{i}:00:00Z"]}, NOW) for i in range(6)]
    results = []
    threads = [threading.Thread(target=lambda e=e: results.append(run(e))) for e in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(r.started) for r in results) == 1
    assert len(executions(PIPELINE)) == 1


def test_the_schedule_starts_only_lines_due_and_each_once(queue_url):
    config = MonitoringConfig(retrain_every_days=7, retrain_cooldown_hours=24)
    first = run(scheduled_event(NOW), line_ids=["line-1", "line-2"], monitoring=config)
    assert sorted(s.line_id for s in first.started) == ["line-1", "line-2"]  # never started: due
    assert {s.trigger.value for s in first.started} == {"scheduled"}
    an_hour_later = NOW + timedelta(hours=1)
    assert (
        run(scheduled_event(an_hour_later), now=an_hour_later, line_ids=["line-1", "line-2"], monitoring=config).started
        == []
    )
    week_later = NOW + timedelta(days=7)
    again = run(scheduled_event(week_later), now=week_later, line_ids=["line-1", "line-2"], monitoring=config)
    assert sorted(s.line_id for s in again.started) == ["line-1", "line-2"]
    assert len(executions(PIPELINE)) == 4
    off, month_later = MonitoringConfig(retrain_every_days=None), week_later + timedelta(days=30)
    assert run(scheduled_event(month_later), now=month_later, line_ids=["line-1"], monitoring=off).started == []


def test_a_failed_start_gives_the_claim_back_and_the_retry_sends_the_same_token(queue_url, monkeypatch):
    sagemaker = boto3.client("sagemaker")
    previous = run(degraded_event(DETAIL, NOW)).started[0]
    later = NOW + timedelta(days=2)
    event = degraded_event({**DETAIL, "windows": ["2026-12-08T12:00:00Z"]}, later)
    broken = {"fail": True}
    original = sagemaker.start_pipeline_execution

    def flaky(**kwargs):
        if broken["fail"]:
            raise RuntimeError("throttled")
        return original(**kwargs)

    monkeypatch.setattr(sagemaker, "start_pipeline_execution", flaky)
    with recording() as calls:
        failed = run_retraining_with(sagemaker, event, later)
    assert failed.errors == {"line-1": "RuntimeError: throttled"}
    assert item("line-1")["execution_arn"] == previous.execution_arn  # the previous start, as it was
    broken["fail"] = False
    with recording() as retry_calls:
        (started,) = run_retraining_with(sagemaker, event, later).started
    assert item("line-1")["execution_arn"] == started.execution_arn
    assert started.client_request_token == event_token(event)
    assert call_problems(calls + retry_calls) == []


def run_retraining_with(sagemaker, event, now):
    return run_retraining(
        event,
        use_case=USE_CASE,
        line_ids=[],
        table=RetrainingTable(TABLE),
        sagemaker=sagemaker,
        eventbridge=boto3.client("events"),
        event_bus="default",
        now=now,
    )


def event_token(event) -> str:
    from edgeloop.cloud.retraining import degraded_trigger

    return degraded_trigger(event["detail"], NOW).token(PIPELINE)


def test_the_handler_reads_its_environment_and_refuses_foreign_events(queue_url, monkeypatch):
    from edgeloop.functions.retraining import handler

    monkeypatch.setenv(names.USE_CASE_ENV, "extrusion")
    monkeypatch.setenv(names.MONITORING_TABLE_ENV, TABLE)
    monkeypatch.setenv(names.LINE_IDS_ENV, "line-1,line-2")
    result = handler.lambda_handler(degraded_event(DETAIL, datetime.now(UTC)), None)
    assert [s["line_id"] for s in result["started"]] == ["line-1"]
    with pytest.raises(ValueError, match="detail-type='Object Created'"):
        handler.lambda_handler({**degraded_event(DETAIL, NOW), "detail-type": "Object Created"}, None)


def test_bad_line_ids_in_the_environment_are_refused_naming_the_variable(monkeypatch):
    from edgeloop.functions.retraining.settings import Settings

    environ = {names.USE_CASE_ENV: "extrusion", names.MONITORING_TABLE_ENV: TABLE, names.LINE_IDS_ENV: "ok,Bad Line"}
    with pytest.raises(ValueError, match=r"EDGELOOP_LINE_IDS='ok,Bad Line': \['Bad Line'\]"):
        Settings.from_env(environ)


def test_a_first_start_that_fails_leaves_no_claim_behind(queue_url, monkeypatch):
    sagemaker = boto3.client("sagemaker")

    def refuse(**kwargs):
        raise RuntimeError("pipeline deleted")

    monkeypatch.setattr(sagemaker, "start_pipeline_execution", refuse)
    with recording() as calls:
        failed = run_retraining_with(sagemaker, degraded_event(DETAIL, NOW), NOW)
    assert failed.errors == {"line-1": "RuntimeError: pipeline deleted"} and failed.started == []
    assert item("line-1") is None  # the line may be claimed again at once
    assert [c.operation for c in calls if c.service == "dynamodb"] == ["BatchGetItem", "UpdateItem", "DeleteItem"]
    assert call_problems(calls) == []
