"""Prediction and alert landing (logic.py): one IoT rule event, or an SQS batch of them (each record's
body the rule's event), as ingest's batched route delivers them. Environment: EDGELOOP_DATA_BUCKET.
The IoT registry's line directory is built once per warm container (its per-thing cache outlives an
invocation)."""

from __future__ import annotations

import json
import os
from functools import lru_cache

from edgeloop.cloud import s3
from edgeloop.cloud.line_directory import IotLineDirectory
from edgeloop.cloud.sqs_event import SqsEvent, is_sqs_event
from edgeloop.schemas import IotRuleEvent, names

from .logic import land_messages


def rule_events(event: dict) -> list[IotRuleEvent]:
    if not is_sqs_event(event):
        return [IotRuleEvent.model_validate(event)]
    records = SqsEvent.model_validate(event).sqs_records()
    return [IotRuleEvent.model_validate(json.loads(record.body)) for record in records]


@lru_cache(maxsize=1)
def line_directory() -> IotLineDirectory:
    return IotLineDirectory()


def lambda_handler(event: dict, context) -> dict:
    bucket = os.environ[names.DATA_BUCKET_ENV]
    result = land_messages(
        rule_events(event),
        lambda key, body: s3.put_bytes(bucket, key, body, content_type="application/json"),
        line_directory(),
    )
    counts = {"predictions": result.predictions, "alerts": result.alerts, "quarantined": result.quarantined}
    # an SQS batch lands whole or raises (and is delivered again whole: the keys are content digests)
    return {**counts, "batchItemFailures": []} if is_sqs_event(event) else counts
