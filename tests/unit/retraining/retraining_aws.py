"""moto fixtures of the retraining tests: the monitoring table, the use case's pipeline, a queue that
receives the RETRAINING_DETAIL_TYPE events, and helpers to read what was started."""

from __future__ import annotations

import json
from datetime import datetime

import boto3
from event_queues import queue_behind_rule
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends

from edgeloop.local.aws import table_definition
from edgeloop.schemas import names

TABLE = "edgeloop-monitoring-test"
REGION = "eu-west-1"
ROLE_ARN = f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/pipeline"
DEFINITION = json.dumps({"Version": "2020-12-01", "Parameters": [{"Name": "LineId", "Type": "String"}], "Steps": []})


def create_resources(pipeline: str) -> str:
    """The table, the pipeline and an SQS queue subscribed to retraining events; returns the queue URL."""
    boto3.client("dynamodb").create_table(**table_definition(TABLE, names.MONITORING_TABLE_KEYS))
    boto3.client("sagemaker").create_pipeline(
        PipelineName=pipeline, PipelineDefinition=DEFINITION, RoleArn=ROLE_ARN, ClientRequestToken="t" * 32
    )
    pattern = {"source": [names.EVENT_SOURCE], "detail-type": [names.RETRAINING_DETAIL_TYPE]}
    return queue_behind_rule("retraining-started", pattern)


def executions(pipeline: str) -> list[dict]:
    """Every execution of the pipeline with its parameters, oldest first."""
    sagemaker = boto3.client("sagemaker")
    summaries = sagemaker.list_pipeline_executions(PipelineName=pipeline)["PipelineExecutionSummaries"]
    found = []
    for summary in sorted(summaries, key=lambda s: s["StartTime"]):
        arn = summary["PipelineExecutionArn"]
        parameters = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
        found.append({**summary, "Parameters": {p["Name"]: p["Value"] for p in parameters}})
    return found


def set_status(pipeline: str, execution_arn: str, status: str) -> None:
    """moto finishes every execution at once; a real one is Executing for hours."""
    backend = sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION]
    backend.pipelines[pipeline].pipeline_executions[execution_arn].pipeline_execution_status = status


def item(line_id: str) -> dict | None:
    from boto3.dynamodb.types import TypeDeserializer

    raw = boto3.client("dynamodb").get_item(TableName=TABLE, Key={"pk": {"S": f"retraining#{line_id}"}}).get("Item")
    return None if raw is None else {k: TypeDeserializer().deserialize(v) for k, v in raw.items()}


def degraded_event(detail: dict, at: datetime, event_id: str = "e-1") -> dict:
    return {
        "version": "0",
        "id": event_id,
        "source": names.EVENT_SOURCE,
        "detail-type": names.MODEL_DEGRADED_DETAIL_TYPE,
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resources": [],
        "detail": detail,
    }


def scheduled_event(at: datetime) -> dict:
    return {
        "version": "0",
        "id": "s-1",
        "source": "aws.events",
        "detail-type": "Scheduled Event",
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/edgeloop-retraining"],
        "detail": {},
    }
