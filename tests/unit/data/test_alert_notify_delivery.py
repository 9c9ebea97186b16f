"""Where alert notices and events arrive (moto: SNS -> SQS subscriptions with a filter policy, an
EventBridge rule -> SQS target), PutEvents batching and failures, and the predictions handler."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from botocore.stub import ANY, Stubber
from event_queues import received
from notify_helpers import BUS, INTERVAL_S, T0, TABLE, alert, moto_account, notice_item

from edgeloop.cloud.aws import client
from edgeloop.functions.predictions import handler
from edgeloop.functions.predictions.notify import (
    MAX_ENTRIES_PER_PUT,
    MAX_PUT_BYTES,
    AlertEventsNotSent,
    alert_entry,
    entry_batches,
    entry_size,
    notify_alerts,
    put_alert_events,
)
from edgeloop.functions.predictions.settings import Settings
from edgeloop.schemas import IotRuleEvent, names
from edgeloop.schemas.prediction import AlertEvent


def notify(alerts: list[AlertEvent], topic_arn: str, *, eventbridge=None, sleeps: list | None = None):
    return notify_alerts(
        alerts,
        eventbridge=eventbridge or client("events"),
        sns=client("sns"),
        table=TABLE,
        topic_arn=topic_arn,
        bus=BUS,
        now=T0,
        interval_s=INTERVAL_S,
        sleep=(sleeps if sleeps is not None else []).append,
    )


def test_a_subscribed_queue_gets_the_notice_with_its_attributes_and_a_filter_policy_selects_a_line():
    with moto_account() as account:
        notify([alert("line-1"), alert("line-2")], account.topic_arn)
        envelopes = received(account.notices_queue)
        by_line = {e["MessageAttributes"]["line_id"]["Value"]: e for e in envelopes}
        assert sorted(by_line) == ["line-1", "line-2"]
        assert by_line["line-1"]["MessageAttributes"] == {
            "line_id": {"Type": "String", "Value": "line-1"},
            "violation_class": {"Type": "String", "Value": "usl_violation"},
            "event": {"Type": "String", "Value": "raise"},
        }
        assert by_line["line-1"]["Subject"] == "edgeloop: USL violation predicted on line line-1 in 4 min 28 s"
        # moto applies subscription filter policies: the line-2 queue got line-2's notice only
        (filtered,) = received(account.line_2_queue)
        assert filtered["MessageAttributes"]["line_id"]["Value"] == "line-2"


def test_every_alert_reaches_an_eventbridge_rule_target_suppressed_or_not():
    with moto_account() as account:
        alerts = [alert(number=1), alert(number=2), alert(number=1, at=T0 + timedelta(minutes=3), event="clear")]
        result = notify(alerts, account.topic_arn)
        assert (result.events_put, result.notices_suppressed) == (3, 1)
        delivered = received(account.events_queue)  # moto delivers rule matches to an SQS target
        assert [(e["source"], e["detail-type"]) for e in delivered] == [
            (names.EVENT_SOURCE, names.ALERT_DETAIL_TYPE)
        ] * 3
        assert [AlertEvent.model_validate(e["detail"]) for e in delivered] == alerts


def test_entries_go_ten_to_a_request_in_order():
    alerts = [alert(number=n) for n in range(1, 24)]
    batches = list(entry_batches([alert_entry(a, BUS) for a in alerts]))
    assert [len(b) for b in batches] == [MAX_ENTRIES_PER_PUT, MAX_ENTRIES_PER_PUT, 3]
    assert [json.loads(e["Detail"])["alert_id"] for b in batches for e in b] == [a.alert_id for a in alerts]
    with moto_account() as account:
        sizes: list[int] = []
        client("events").meta.events.register(
            "before-parameter-build.events.PutEvents", lambda params, **_: sizes.append(len(params["Entries"]))
        )
        assert notify(alerts, account.topic_arn).events_put == 23 and sizes == [10, 10, 3]


def test_a_request_stays_under_the_size_limit():
    big = {
        "Source": names.EVENT_SOURCE,
        "DetailType": names.ALERT_DETAIL_TYPE,
        "Detail": json.dumps({"x": "y" * 100_000}),
    }
    assert [len(b) for b in entry_batches([big] * 5)] == [2, 2, 1]
    assert all(sum(entry_size(e) for e in b) < MAX_PUT_BYTES for b in entry_batches([big] * 5))
    assert entry_size({**big, "Time": "2026-01-01T00:00:00Z", "Resources": ["ab"]}) == entry_size(big) + 14 + 2


def _failed(code: str) -> dict:
    return {"ErrorCode": code, "ErrorMessage": f"{code} for this entry"}


def test_a_throttled_entry_is_put_once_more_and_then_counts_as_put():
    alerts = [alert(number=1), alert(number=2)]
    events = client("events")
    with Stubber(events) as stub:
        entries = [alert_entry(a, BUS) for a in alerts]
        stub.add_response(
            "put_events",
            {"FailedEntryCount": 1, "Entries": [{"EventId": "e-1"}, _failed("ThrottlingException")]},
            {"Entries": entries},
        )
        stub.add_response(
            "put_events", {"FailedEntryCount": 0, "Entries": [{"EventId": "e-2"}]}, {"Entries": entries[1:]}
        )
        sleeps: list[float] = []
        assert put_alert_events(events, alerts, BUS, sleep=sleeps.append) == []
        stub.assert_no_pending_responses()
    assert len(sleeps) == 1


def test_entries_still_failing_or_not_retryable_raise_after_the_notices_are_sent():
    alerts = [alert(number=1), alert(number=2)]
    with moto_account() as account:
        events = client("events")
        with Stubber(events) as stub:
            response = {"FailedEntryCount": 2, "Entries": [_failed("InternalFailure"), _failed("MalformedDetail")]}
            stub.add_response("put_events", response, {"Entries": ANY})
            retried = {"FailedEntryCount": 1, "Entries": [_failed("InternalFailure")]}
            stub.add_response("put_events", retried, {"Entries": [alert_entry(alerts[0], BUS)]})  # only the retryable
            with pytest.raises(AlertEventsNotSent) as raised:
                notify(alerts, account.topic_arn, eventbridge=events)
            stub.assert_no_pending_responses()
        assert raised.value.failures == [
            "alert_id=gw-line-1-usl_violation-2 event=raise: MalformedDetail MalformedDetail for this entry",
            "alert_id=gw-line-1-usl_violation-1 event=raise: InternalFailure InternalFailure for this entry",
        ]
        assert (raised.value.result.events_put, raised.value.result.notices_sent) == (0, 1)
        assert len(received(account.notices_queue)) == 1


def test_a_failed_put_events_call_fails_its_entries_without_a_retry():
    events = client("events")
    with Stubber(events) as stub:
        stub.add_client_error("put_events", service_error_code="AccessDeniedException", http_status_code=400)
        sleeps: list[float] = []
        (failure,) = put_alert_events(events, [alert()], BUS, sleep=sleeps.append)
    assert failure.startswith("alert_id=gw-line-1-usl_violation-1 event=raise: AccessDeniedException") and not sleeps


# --- the handler ---------------------------------------------------------------------------------
BUCKET = "edgeloop-data-notify-test"


def _environment(monkeypatch, topic_arn: str) -> None:
    for variable, value in {
        names.DATA_BUCKET_ENV: BUCKET,
        names.USE_CASE_ENV: "extrusion",
        names.EVENT_BUS_ENV: BUS,
        names.ALERT_TOPIC_ARN_ENV: topic_arn,
        names.MONITORING_TABLE_ENV: TABLE,
    }.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv(names.USE_CASE_FILE_ENV, raising=False)


def test_the_handler_lands_an_alert_puts_its_event_sends_its_notice_and_counts_them(monkeypatch, capsys):
    with moto_account() as account:
        _environment(monkeypatch, account.topic_arn)
        client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        raised = alert()
        client("iot").create_thing(
            thingName=raised.thing_name, attributePayload={"attributes": {names.GATEWAY_LINE_ATTRIBUTE: "line-1"}}
        )
        rule_event = IotRuleEvent.from_message(
            names.alert_topic(raised.thing_name), raised.model_dump_json().encode(), 0
        )
        assert handler.lambda_handler(rule_event.model_dump(), None) == {
            "predictions": 0,
            "alerts": 1,
            "quarantined": 0,
        }
        assert handler.lambda_handler(rule_event.model_dump(), None)["alerts"] == 1  # redelivered
        assert len(client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]) == 1  # the same key twice
        assert len(received(account.events_queue)) == 2  # at least once: consumers dedupe on alert_id/event/at
        assert len(received(account.notices_queue)) == 1
        assert notice_item("line-1")["notice_published"] == {"BOOL": True}
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    first, second = metrics
    assert (first["AlertsRaised"], first["AlertsCleared"], first["AlertNoticesSent"]) == ([1.0], [0.0], [1.0])
    assert (second["AlertNoticesSent"], second["AlertNoticesSuppressed"]) == ([0.0], [0.0])
    assert first["service"] == "predictions" and first["PredictionsLanded"] == [0.0]


def test_the_settings_name_a_missing_or_wrong_variable(monkeypatch):
    _environment(monkeypatch, "arn:aws:sns:eu-west-1:123456789012:edgeloop-alerts")
    assert Settings.from_env().alert_notice_interval_s == 900
    monkeypatch.delenv(names.MONITORING_TABLE_ENV)
    with pytest.raises(ValueError, match=f"{names.MONITORING_TABLE_ENV}.*is not set"):
        Settings.from_env()
    _environment(monkeypatch, "arn:aws:sns:eu-west-1:123456789012:edgeloop-alerts.fifo")
    with pytest.raises(ValueError, match=f"{names.ALERT_TOPIC_ARN_ENV}.*edgeloop-alerts.fifo"):
        Settings.from_env()
