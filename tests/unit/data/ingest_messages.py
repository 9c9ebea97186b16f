"""Telemetry messages as the IoT rule hands them to ingest, for the ingest tests."""

from __future__ import annotations

import hashlib
import json
import zlib

from edgeloop.cloud.line_directory import StaticLineDirectory
from edgeloop.local.queue_batches import QueuedMessage
from edgeloop.local.queue_batches import sqs_record as local_sqs_record
from edgeloop.schemas import IotRuleEvent, load_use_case, names

THING = "gw-line-1"
LINE = "line-1"
RECEIVED_AT_MS = 1_767_225_600_000 + 13 * 3_600_000 + 5_000  # 2026-01-01 13:00:05 UTC
USE_CASE = load_use_case("extrusion")
LINES = StaticLineDirectory({THING: LINE})


def batch_doc(
    n: int = 4,
    *,
    seq_first: int = 100,
    thing: str = THING,
    line_id: str = LINE,
    metrics=("speed", "temp_die"),
    age_ms: int = 10_000,
) -> dict:
    """A batch document (wire format 1) of n samples a second apart, the first `age_ms` before receipt."""
    return {
        "format_version": 1,
        "thing_name": thing,
        "line_id": line_id,
        "seq_first": seq_first,
        "seq_last": seq_first + n - 1,
        "samples": {
            "metrics": list(metrics),
            "metric_index": [i % len(metrics) for i in range(n)],
            "time_ms": [RECEIVED_AT_MS - age_ms + 1000 * i for i in range(n)],
            "values": [10.0 + i for i in range(n)],
        },
    }


def wire(doc: dict) -> bytes:
    return zlib.compress(json.dumps(doc).encode())  # json.dumps writes NaN/Infinity tokens as Python does


def event_of(payload: bytes, *, thing: str = THING, received_at_ms: int = RECEIVED_AT_MS) -> IotRuleEvent:
    return IotRuleEvent.from_message(names.telemetry_topic(thing), payload, received_at_ms)


def sqs_record(event: IotRuleEvent, message_id: str | None = None) -> dict:
    """One record of the Lambda SQS event the stack's queue hands ingest (the local stand-in's shape):
    the rule's message as its body. The messageId derives from the body unless given (SQS keeps it
    across redeliveries)."""
    body_digest = hashlib.sha256(event.model_dump_json().encode()).hexdigest()[:36]
    message = QueuedMessage(event, message_id=message_id or body_digest, sent_at_ms=event.received_at_ms, receives=1)
    return local_sqs_record(message)


def sqs_event(*events: IotRuleEvent) -> dict:
    return {"Records": [sqs_record(event) for event in events]}
