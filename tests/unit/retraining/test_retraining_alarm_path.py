"""The alarm path end to end in moto: a model made to degrade trips live accuracy's streak, its
MODEL_DEGRADED_DETAIL_TYPE event reaches an EventBridge rule (delivered to SQS: moto invokes no Lambda),
and the retraining function, handed each delivered event, starts the line's pipeline exactly once
within the cool-down, however often the rounds run and the event is delivered again."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from event_queues import queue_behind_rule, received
from moto import mock_aws

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retraining_aws import TABLE, create_resources, executions, item  # noqa: E402

from benchmarks.monitoring_data import land, line_day  # noqa: E402
from edgeloop.cdk.constructs.retraining import degraded_event_pattern  # noqa: E402
from edgeloop.cloud.retraining_table import RetrainingTable  # noqa: E402
from edgeloop.functions.live_accuracy.logic import run_round  # noqa: E402
from edgeloop.functions.retraining.logic import run_retraining  # noqa: E402
from edgeloop.schemas import load_use_case, names  # noqa: E402

BUCKET = "edgeloop-alarm-path-test"
DAY = datetime(2026, 3, 2, tzinfo=UTC)
USE_CASE = load_use_case("extrusion")
PIPELINE = names.pipeline_name(USE_CASE.use_case)
DELAY_S = 600.0
HOUR = timedelta(hours=1)


@pytest.fixture
def degraded_queue():
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        create_resources(PIPELINE)
        # the stack's rule, with a queue standing in for the function
        stack_pattern = degraded_event_pattern()
        pattern = {"source": stack_pattern.source, "detail-type": stack_pattern.detail_type}
        url = queue_behind_rule("degraded-to-retraining", pattern)
        yield url


def retrain(event: dict, now: datetime):
    return run_retraining(
        event,
        use_case=USE_CASE,
        line_ids=[],
        table=RetrainingTable(TABLE),
        sagemaker=boto3.client("sagemaker"),
        eventbridge=boto3.client("events"),
        event_bus="default",
        now=now,
    )


def test_a_degraded_model_starts_its_lines_pipeline_exactly_once_within_the_cool_down(degraded_queue):
    hours = USE_CASE.monitoring.degraded_windows + 2  # the trip, and two rounds of the same streak after it
    land(BUCKET, line_day(DAY, USE_CASE, hours=hours, offset=0.12))  # every window worse than persistence
    eventbridge = boto3.client("events")
    seen = []
    for hour in range(1, hours + 1):  # the hourly schedule; the streak trips at degraded_windows
        now = DAY + hour * HOUR + timedelta(seconds=USE_CASE.label_window_s + DELAY_S)
        run_round(
            BUCKET, USE_CASE, now, landing_delay_s=DELAY_S, eventbridge=eventbridge, registered_rmse=lambda *_: None
        )
        for event in received(degraded_queue):
            seen.append(event)
            retrain(event, now)
            retrain(event, now + timedelta(minutes=2))  # EventBridge delivers at least once
    assert len(seen) == 1, [e["detail"] for e in seen]
    (execution,) = executions(PIPELINE)
    assert execution["Parameters"]["LineId"] == "line-1"
    assert execution["PipelineExecutionDisplayName"].startswith("line-1-degraded-")
    recorded = item("line-1")
    assert recorded["trigger"] == "degraded" and recorded["execution_arn"] == execution["PipelineExecutionArn"]
    assert recorded["version"] == seen[0]["detail"]["version"]
    # the same finding sent again by a round that died before saving its state, a day later: no second start
    again = retrain(seen[0], DAY + 30 * HOUR)
    assert again.started == [] and again.held[0].why.startswith("already started by this degraded trigger")
    assert len(executions(PIPELINE)) == 1
