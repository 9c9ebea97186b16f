"""The local stand-in for the telemetry queue: batched routes get SQS events, failures are redelivered."""

from __future__ import annotations

import time

import pytest

from edgeloop.cloud.sqs_event import SqsEvent, is_sqs_event
from edgeloop.local.bridge import IotRuleBridge
from edgeloop.local.pki import IssuedCert
from edgeloop.local.queue_batches import MAX_RECEIVES, DeliveryCount, QueuedMessage, deliver_batch, sqs_event
from edgeloop.schemas import names
from edgeloop.schemas.envelope import IotRuleEvent

TELEMETRY = names.telemetry_topic("gw-1")
ANNOUNCE = names.announce_topic("gw-1")


def message(n: int) -> QueuedMessage:
    return QueuedMessage(IotRuleEvent.from_message(TELEMETRY, bytes([n]), received_at_ms=1000 + n))


def test_the_local_event_is_what_ingest_parses_from_sqs():
    messages = [message(1), message(2)]
    event = sqs_event(messages)
    assert is_sqs_event(event)
    records = SqsEvent.model_validate(event).sqs_records()
    assert [r.message_id for r in records] == [m.message_id for m in messages]
    assert [IotRuleEvent.model_validate_json(r.body) for r in records] == [m.event for m in messages]


def test_reported_failures_are_delivered_again_until_max_receives():
    messages = [message(i) for i in range(3)]
    always_failing = messages[1].message_id
    calls: list[list[str]] = []

    def invoke(event: dict) -> dict:
        ids = [r["messageId"] for r in event["Records"]]
        calls.append(ids)
        return {"batchItemFailures": [{"itemIdentifier": always_failing}] if always_failing in ids else []}

    count, remaining = DeliveryCount(), messages
    while remaining:
        remaining = deliver_batch(remaining, invoke, count)
    assert calls[0] == [m.message_id for m in messages] and calls[1:] == [[always_failing]] * (MAX_RECEIVES - 1)
    assert (count.invocations, count.delivered, count.dead_lettered) == (MAX_RECEIVES, 2, 1)


def test_an_invocation_that_raises_returns_the_whole_batch():
    attempts = []

    def invoke(event: dict) -> dict:
        attempts.append(len(event["Records"]))
        if len(attempts) == 1:
            raise ConnectionError("S3 is away")
        return {"batchItemFailures": []}

    count = DeliveryCount()
    again = deliver_batch([message(1), message(2)], invoke, count)
    assert len(again) == 2 and "S3 is away" in count.last_error
    assert deliver_batch(again, invoke, count) == [] and count.delivered == 2 and attempts == [2, 2]


@pytest.mark.parametrize("batch_size, window_s, expected", [(3, 30.0, [3, 3, 1]), (100, 0.2, [7])])
def test_the_bridge_gathers_a_batched_route_by_size_or_window(batch_size, window_s, expected):
    seen: dict[str, list] = {"ingest": [], "device_registry": []}
    handlers = {
        route.function: (lambda event, context, f=route.function: seen.setdefault(f, []).append(event))
        for route in names.IOT_ROUTES
    }
    bridge = IotRuleBridge(
        "localhost",
        1,
        IssuedCert.__new__(IssuedCert),
        handlers=handlers,
        batch_size=batch_size,
        batch_window_s=window_s,
    )
    bridge.start_worker()
    try:
        for i in range(7):
            bridge.on_message(TELEMETRY, bytes([i]))
        bridge.on_message(ANNOUNCE, b"{}")  # not batched: one direct event, without waiting for a batch
        if window_s > 1:
            time.sleep(0.3)
            assert [len(e["Records"]) for e in seen["ingest"]] == expected[:-1]
            bridge.release_batches()
        bridge.wait_idle(timeout=10)
    finally:
        bridge.stop()
    assert [len(e["Records"]) for e in seen["ingest"]] == expected
    bodies = [IotRuleEvent.model_validate_json(r["body"]).payload for e in seen["ingest"] for r in e["Records"]]
    assert bodies == [bytes([i]) for i in range(7)]
    assert [e["topic"] for e in seen["device_registry"]] == [ANNOUNCE]
    assert (bridge.delivered, bridge.failed) == (8, 0)
