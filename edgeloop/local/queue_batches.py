"""The local stand-in for a batched route's SQS queue and its Lambda event source mapping.

In AWS a batched route's rule (names.IotRoute.batched) puts its message into an SQS queue and Lambda
invokes the function with up to a batch of them, gathered for at most a batching window
(cdk/constructs/ingestion.py). Locally the bridge keeps the messages in memory and hands the function
the same SQS event (records with messageId, body, attributes, eventSource), with a short window so
the demo and the tests stay fast; messages the response lists in batchItemFailures (or all of them,
when the invocation raises) are delivered again, up to MAX_RECEIVES times, as SQS would before its
redrive to the dead-letter queue.

In memory rather than moto's SQS: the same event shape without a poll loop against moto_server.
Measured (moto_server on this 2-core machine, 5.6 KB bodies): SendMessage 16 ms and
ReceiveMessage + DeleteMessageBatch 21 ms per message, ~38 ms a message, so a demo gateway's
history flush of a few thousand messages would wait minutes on the stand-in alone.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgeloop.schemas.envelope import IotRuleEvent

# Defaults of the local stand-in: a batch goes out when it holds BATCH_SIZE messages or its first has
# waited BATCH_WINDOW_S. AWS: 1000 messages / 60 s (cdk/constructs/ingestion.py).
BATCH_SIZE = 1000
BATCH_WINDOW_S = 0.5
# As the telemetry queue's redrive policy (cdk/constructs/ingestion.py TELEMETRY_MAX_RECEIVES).
MAX_RECEIVES = 5
LOCAL_QUEUE_ARN = "arn:aws:sqs:local:000000000000:edgeloop-telemetry"


@dataclass
class QueuedMessage:
    event: IotRuleEvent
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    sent_at_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    receives: int = 0


def sqs_record(message: QueuedMessage) -> dict:
    """One record of a Lambda SQS event: the rule's message (IotRuleEvent JSON) as its body."""
    body = message.event.model_dump_json()
    return {
        "messageId": message.message_id,
        "receiptHandle": f"local-{message.message_id}-{message.receives}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(message.receives),
            "SentTimestamp": str(message.sent_at_ms),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's own checksum, not security
        "eventSource": "aws:sqs",
        "eventSourceARN": LOCAL_QUEUE_ARN,
        "awsRegion": "local",
    }


def sqs_event(messages: Sequence[QueuedMessage]) -> dict:
    return {"Records": [sqs_record(m) for m in messages]}


@dataclass
class DeliveryCount:
    invocations: int = 0
    delivered: int = 0  # messages handled (not listed as failures)
    dead_lettered: int = 0  # messages given up after MAX_RECEIVES
    last_error: str | None = None


def deliver_batch(
    messages: list[QueuedMessage], invoke: Callable[[dict], object], count: DeliveryCount
) -> list[QueuedMessage]:
    """Invoke once with `messages`; the ones to deliver again (failed, fewer than MAX_RECEIVES receives)."""
    for message in messages:
        message.receives += 1
    count.invocations += 1
    try:
        response = invoke(sqs_event(messages))
        failed_ids = {item["itemIdentifier"] for item in (response or {}).get("batchItemFailures", [])}
    except Exception as exc:  # the whole batch returns to the queue, as with SQS
        count.last_error = f"{type(exc).__name__}: {exc}"
        failed_ids = {m.message_id for m in messages}
    failed = [m for m in messages if m.message_id in failed_ids]
    count.delivered += len(messages) - len(failed)
    if failed and count.last_error is None:
        count.last_error = f"{len(failed)} message(s) reported in batchItemFailures"
    again = [m for m in failed if m.receives < MAX_RECEIVES]
    count.dead_lettered += len(failed) - len(again)
    return again
