"""Landing of gateways' prediction and alert messages (functions/predictions, issue 17)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import boto3

from edgeloop.cloud.line_directory import StaticLineDirectory
from edgeloop.functions.predictions.handler import lambda_handler, rule_events
from edgeloop.functions.predictions.logic import land_messages
from edgeloop.schemas import IotRuleEvent, QuarantineRecord, names
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.prediction import PredictionMessage

THING = "gw-line-1"
LINES = StaticLineDirectory({THING: "line-1"})  # what the IoT registry holds
BUCKET = "edgeloop-data-test"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # the cloud's clock when the messages arrive
MODEL = {"model_id": "extrusion-line-1", "version": "1.0.0", "precision": "fp32", "decision_margin": 0.1}
SPEC = {"target_metric": "cold_od_average", "lower": 2.9, "upper": 3.2}


def prediction(made_at: datetime, sent_at: datetime, thing: str = THING, level: float = 3.0) -> dict:
    return {
        "thing_name": thing,
        "line_id": "line-1",
        "model": MODEL,
        "target_metric": "cold_od_average",
        "made_at": made_at.isoformat(),
        "horizon_s": 300,
        "label_window_s": 30,
        "predicted_level": level,
        "violation_class": "in_range",
        "spec": SPEC,
        "sent_at": sent_at.isoformat(),
        "lead_time_s": 300.0 - (sent_at - made_at).total_seconds(),
    }


def alert(at: datetime) -> dict:
    return {
        "thing_name": THING,
        "line_id": "line-1",
        "alert_id": f"{THING}-usl_violation-1",
        "event": "raise",
        "violation_class": "usl_violation",
        "raised_at": at.isoformat(),
        "at": at.isoformat(),
        "predicted_for": (at + timedelta(seconds=270)).isoformat(),
        "lead_time_s": 268.0,
        "consecutive": 2,
        "predicted_level": 3.3,
        "spec": SPEC,
        "model": MODEL,
        "sent_at": (at + timedelta(seconds=2)).isoformat(),
    }


def event(topic: str, document: dict | bytes) -> IotRuleEvent:
    payload = document if isinstance(document, bytes) else json.dumps(document).encode()
    return IotRuleEvent.from_message(topic, payload, int(NOW.timestamp() * 1000))


def land(*events: IotRuleEvent) -> tuple[dict[str, bytes], object]:
    store: dict[str, bytes] = {}
    result = land_messages(events, store.__setitem__, LINES)
    return store, result


def test_a_gateway_clock_two_minutes_fast_still_lands_every_prediction():
    fast = NOW + timedelta(minutes=2)  # the gateway's clock: made_at and sent_at both 2 min ahead of ours
    events = [
        event(names.prediction_topic(THING), prediction(fast - timedelta(seconds=30 * i + 2), fast)) for i in range(4)
    ]
    store, result = land(*events)
    assert (result.predictions, result.quarantined) == (4, 0)
    (key,) = store
    assert key.startswith(f"{names.PREDICTIONS_PREFIX}/line=line-1/made_date=2026-01-01/") and key.endswith(".jsonl")
    landed = [PredictionMessage.model_validate_json(line) for line in store[key].decode().splitlines()]
    assert [m.made_at for m in landed] == [fast - timedelta(seconds=30 * i + 2) for i in range(4)]


def test_alerts_land_apart_and_a_redelivered_batch_lands_on_the_same_key():
    events = [event(names.alert_topic(THING), alert(NOW)), event(names.prediction_topic(THING), prediction(NOW, NOW))]
    first, result = land(*events)
    again, _ = land(*events)
    assert result.alerts == 1 and result.predictions == 1 and first.keys() == again.keys()
    assert any(k.startswith(f"{names.ALERTS_PREFIX}/line=line-1/event_date=2026-01-01/") for k in first)


def test_messages_land_per_day_of_when_they_were_made():
    events = [
        event(names.prediction_topic(THING), prediction(NOW - timedelta(days=1), NOW)),
        event(names.prediction_topic(THING), prediction(NOW, NOW)),
    ]
    store, _ = land(*events)
    assert sorted(k.split("/")[2] for k in store) == ["made_date=2025-12-31", "made_date=2026-01-01"]


def test_another_things_or_a_malformed_message_is_quarantined_with_its_reason():
    store, result = land(
        event(names.prediction_topic(THING), prediction(NOW, NOW, thing="gw-line-2")),
        event(names.prediction_topic(THING), b"[" * 100),
        event(names.prediction_topic(THING), {**prediction(NOW, NOW), "predicted_level": "high"}),
    )
    assert (result.predictions, result.quarantined) == (0, 3)
    reasons = [QuarantineRecord.model_validate_json(body).reasons[0] for body in store.values()]
    assert sorted(r.field for r in reasons) == sorted(["thing_name", "<prediction>", "<prediction>.predicted_level"]), (
        reasons
    )
    assert all(k.startswith(f"{names.QUARANTINE_PREFIX}/") for k in store)


def test_the_handler_takes_one_rule_event_or_an_sqs_batch_of_them():
    one = event(names.prediction_topic(THING), prediction(NOW, NOW))
    assert rule_events(one.model_dump()) == [one]
    batch = {"Records": [{"messageId": "m1", "body": one.model_dump_json(), "eventSource": "aws:sqs"}]}
    assert rule_events(batch) == [one]


def _registered(thing: str, line: str) -> None:
    from edgeloop.functions.predictions import handler

    handler.line_directory.cache_clear()  # a new container: a fresh registry cache
    attributes = {"attributes": {names.GATEWAY_LINE_ATTRIBUTE: line}}
    boto3.client("iot").create_thing(thingName=thing, attributePayload=attributes)


def test_a_prediction_for_another_line_than_the_registry_holds_is_quarantined(s3):
    _registered(THING, "line-2")
    rule_event = event(names.prediction_topic(THING), prediction(NOW, NOW))
    assert lambda_handler(rule_event.model_dump(), None) == {"predictions": 0, "alerts": 0, "quarantined": 1}
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    (reason,) = QuarantineRecord.model_validate_json(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).reasons
    assert (reason.field, reason.value) == ("line_id", "'line-1'") and "line-2" in reason.error, reason


def test_the_handler_lands_in_the_data_bucket(s3):
    _registered(THING, "line-1")
    fast = NOW + timedelta(minutes=2)
    rule_event = event(names.prediction_topic(THING), prediction(fast, fast))
    batch = {"Records": [{"messageId": "m1", "body": rule_event.model_dump_json(), "eventSource": "aws:sqs"}]}
    assert lambda_handler(batch, None) == {"predictions": 1, "alerts": 0, "quarantined": 0, "batchItemFailures": []}
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert PredictionMessage.model_validate_json(body).made_at == fast
