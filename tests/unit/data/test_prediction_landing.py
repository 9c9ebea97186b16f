"""Landing of gateways' prediction and alert messages (functions/predictions, issue 17)."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta

import boto3

from edgeloop.cloud.datalake.landed_jsonl import landed_lines
from edgeloop.cloud.line_directory import StaticLineDirectory
from edgeloop.functions.predictions.handler import lambda_handler, rule_events
from edgeloop.functions.predictions.logic import land_messages
from edgeloop.schemas import IotRuleEvent, QuarantineRecord, names
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.prediction import PredictionBatch, PredictionMessage

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


def prediction_batch(*predictions: dict, thing: str = THING, line: str = "line-1") -> dict:
    """What a gateway's model runner sends on its predictions topic."""
    return {"thing_name": thing, "line_id": line, "predictions": list(predictions)}


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
    predictions = [prediction(fast - timedelta(seconds=30 * i + 2), fast) for i in range(4)]
    wire = PredictionBatch.model_validate(prediction_batch(*predictions)).to_payload()  # as the gateway sends it
    store, result = land(event(names.prediction_topic(THING), wire))
    assert (result.predictions, result.quarantined) == (4, 0)
    (key,) = store
    assert key.startswith(f"{names.PREDICTIONS_PREFIX}/line=line-1/made_date=2026-01-01/") and key.endswith(".jsonl.gz")
    landed = [PredictionMessage.model_validate_json(line) for line in gzip.decompress(store[key]).splitlines()]
    assert [m.made_at for m in landed] == [fast - timedelta(seconds=30 * i + 2) for i in range(4)]


def test_alerts_land_apart_and_a_redelivered_batch_lands_on_the_same_key():
    events = [
        event(names.alert_topic(THING), alert(NOW)),
        event(names.prediction_topic(THING), prediction_batch(prediction(NOW, NOW))),
    ]
    first, result = land(*events)
    again, _ = land(*events)
    assert result.alerts == 1 and result.predictions == 1 and first.keys() == again.keys()
    assert any(k.startswith(f"{names.ALERTS_PREFIX}/line=line-1/event_date=2026-01-01/") for k in first)
    assert [a.alert_id for a in result.landed_alerts] == [f"{THING}-usl_violation-1"]


def test_landed_alerts_are_the_accepted_ones_in_landing_order():
    later, other_day = alert(NOW + timedelta(minutes=5)), alert(NOW - timedelta(days=1))
    refused = {**alert(NOW), "line_id": "line-2"}
    _, result = land(*(event(names.alert_topic(THING), a) for a in (later, refused, other_day, alert(NOW))))
    assert (result.alerts, result.quarantined) == (3, 1)
    assert [a.at for a in result.landed_alerts] == [NOW - timedelta(days=1), NOW + timedelta(minutes=5), NOW]


def test_messages_land_per_day_of_when_they_were_made_one_prediction_a_line_whatever_the_batches():
    yesterday, today = prediction(NOW - timedelta(days=1), NOW), prediction(NOW, NOW)
    later = prediction(NOW + timedelta(seconds=30), NOW + timedelta(seconds=30))
    events = [
        event(names.prediction_topic(THING), prediction_batch(yesterday, today)),
        event(names.prediction_topic(THING), later),
    ]
    store, result = land(*events)
    assert result.predictions == 3, "a single PredictionMessage (a runner from before batching) lands too"
    assert sorted(k.split("/")[2] for k in store) == ["made_date=2025-12-31", "made_date=2026-01-01"]
    (today_key,) = [k for k in store if "made_date=2026-01-01" in k]
    landed = [PredictionMessage.model_validate_json(line) for line in landed_lines(today_key, store[today_key])]
    assert [m.made_at for m in landed] == [NOW, NOW + timedelta(seconds=30)]


def test_a_batch_with_one_bad_prediction_is_quarantined_whole_naming_it():
    good = prediction(NOW, NOW)
    bad_batches = {
        "<prediction_batch>.predictions[1].predicted_level": prediction_batch(
            good, {**good, "predicted_level": "high"}
        ),
        "<prediction_batch>.predictions[2].line_id": prediction_batch(good, good, {**good, "line_id": "line-2"}),
        "<prediction_batch>.predictions[1].thing_name": prediction_batch(good, {**good, "thing_name": "gw-line-2"}),
        "thing_name": prediction_batch(prediction(NOW, NOW, thing="gw-line-2"), thing="gw-line-2"),
        "line_id": prediction_batch(*[{**good, "line_id": "line-2"}] * 2, line="line-2"),
    }
    store, result = land(*(event(names.prediction_topic(THING), b) for b in bad_batches.values()))
    assert (result.predictions, result.quarantined) == (0, len(bad_batches))
    records = [QuarantineRecord.model_validate_json(body) for body in store.values()]
    assert sorted(r.reasons[0].field for r in records) == sorted(bad_batches), records
    (line_reason,) = [r.reasons[0] for r in records if r.reasons[0].field.endswith("[2].line_id")]
    assert line_reason.value == "'line-2'" and "line-1" in line_reason.error, line_reason


def test_another_things_or_a_malformed_message_is_quarantined_with_its_reason():
    store, result = land(
        event(names.prediction_topic(THING), prediction(NOW, NOW, thing="gw-line-2")),
        event(names.prediction_topic(THING), b"[" * 100),
        event(names.prediction_topic(THING), {**prediction(NOW, NOW), "predicted_level": "high"}),
    )
    assert (result.predictions, result.quarantined) == (0, 3)
    reasons = [QuarantineRecord.model_validate_json(body).reasons[0] for body in store.values()]
    expected = ["thing_name", "<prediction_batch>", "<prediction>.predicted_level"]
    assert sorted(r.field for r in reasons) == sorted(expected), reasons
    assert all(k.startswith(f"{names.QUARANTINE_PREFIX}/") for k in store)


def test_the_handler_takes_one_rule_event_or_an_sqs_batch_of_them():
    one = event(names.prediction_topic(THING), prediction_batch(prediction(NOW, NOW)))
    assert rule_events(one.model_dump()) == [one]
    batch = {"Records": [{"messageId": "m1", "body": one.model_dump_json(), "eventSource": "aws:sqs"}]}
    assert rule_events(batch) == [one]


def _registered(thing: str, line: str, monkeypatch) -> None:
    # where landed alerts go on (functions/predictions/settings.py); these tests land none
    for variable, value in {
        names.EVENT_BUS_ENV: "default",
        names.ALERT_TOPIC_ARN_ENV: "arn:aws:sns:eu-west-1:123456789012:edgeloop-alerts",
        names.MONITORING_TABLE_ENV: "edgeloop-monitoring",
    }.items():
        monkeypatch.setenv(variable, value)
    attributes = {"attributes": {names.GATEWAY_LINE_ATTRIBUTE: line}}
    boto3.client("iot").create_thing(thingName=thing, attributePayload=attributes)


def test_a_prediction_for_another_line_than_the_registry_holds_is_quarantined(s3, monkeypatch):
    _registered(THING, "line-2", monkeypatch)
    rule_event = event(names.prediction_topic(THING), prediction_batch(prediction(NOW, NOW)))
    assert lambda_handler(rule_event.model_dump(), None) == {"predictions": 0, "alerts": 0, "quarantined": 1}
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    (reason,) = QuarantineRecord.model_validate_json(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).reasons
    assert (reason.field, reason.value) == ("line_id", "'line-1'") and "line-2" in reason.error, reason


def test_the_handler_lands_in_the_data_bucket(s3, monkeypatch):
    _registered(THING, "line-1", monkeypatch)
    fast = NOW + timedelta(minutes=2)
    rule_event = event(names.prediction_topic(THING), prediction_batch(prediction(fast, fast)))
    batch = {"Records": [{"messageId": "m1", "body": rule_event.model_dump_json(), "eventSource": "aws:sqs"}]}
    assert lambda_handler(batch, None) == {"predictions": 1, "alerts": 0, "quarantined": 0, "batchItemFailures": []}
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    stored = s3.get_object(Bucket=BUCKET, Key=key)
    assert stored["ContentType"] == "application/gzip" and "ContentEncoding" not in stored, stored
    assert PredictionMessage.model_validate_json(gzip.decompress(stored["Body"].read())).made_at == fast


def test_predictions_land_gzipped_a_redelivery_rewrites_the_same_bytes_and_alerts_stay_plain():
    predictions = [prediction(NOW + timedelta(seconds=30 * i), NOW + timedelta(seconds=30 * i)) for i in range(60)]
    events = [
        event(names.prediction_topic(THING), prediction_batch(*predictions)),
        event(names.alert_topic(THING), alert(NOW)),
    ]
    first, _ = land(*events)
    again, _ = land(*events)
    assert first == again, "same lines, same key and same bytes (no timestamp in the gzip header)"
    (key,) = [k for k in first if k.startswith(f"{names.PREDICTIONS_PREFIX}/")]
    (alert_key,) = [k for k in first if k.startswith(f"{names.ALERTS_PREFIX}/")]
    plain = gzip.decompress(first[key])
    assert len(first[key]) * 5 < len(plain), (len(first[key]), len(plain))  # a full batch: > 5x smaller
    assert [PredictionMessage.model_validate_json(line).made_at for line in plain.splitlines()] == [
        NOW + timedelta(seconds=30 * i) for i in range(60)
    ]
    assert alert_key.endswith(".jsonl") and json.loads(first[alert_key])["alert_id"] == f"{THING}-usl_violation-1"
