"""The context function: IoT rule events in, intervals upserted, bad ones quarantined, slices rebuilt."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta

import boto3
import pyarrow.parquet as pq
import pytest

from edgeloop.cloud.datalake.context import (
    context_columns,
    get_context_intervals,
    put_context_intervals,
    quantize,
    sub_intervals,
)
from edgeloop.cloud.datalake.context_store import slices_key
from edgeloop.cloud.datalake.quarantine import MessageRefused
from edgeloop.functions.context.handler import lambda_handler, lines_to_rebuild
from edgeloop.functions.context.logic import parse_context_message
from edgeloop.schemas import ContextInterval, IotRuleEvent, QuarantineRecord, SpecLimits, names

BUCKET = "edgeloop-context-test"
THING = "gw-line-1"
LINE = "line-1"
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
RECEIVED_MS = int((T0 + timedelta(hours=3)).timestamp() * 1000)
SPEC = SpecLimits(target_metric="cold_od_average", lower=4.9, upper=5.1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def interval(kind: str, interval_id: str, start: float, end: float, *, line_id: str = LINE, **extra) -> dict:
    return ContextInterval(
        kind=kind, interval_id=interval_id, line_id=line_id, start=at(start), end=at(end), value=interval_id, **extra
    ).model_dump(mode="json")


def rule_event(payload, *, topic: str | None = None) -> dict:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return IotRuleEvent.from_message(topic or names.context_topic(THING), body, RECEIVED_MS).model_dump(mode="json")


@pytest.fixture()
def s3(s3):
    """The data bucket, and this module's gateway registered with its line."""
    register(THING, LINE)
    return s3


def register(thing: str, line_id: str) -> None:
    """The thing in the IoT registry with its line, as `edgeloop gateway provision` leaves it."""
    boto3.client("iot").create_thing(
        thingName=thing, attributePayload={"attributes": {names.GATEWAY_LINE_ATTRIBUTE: line_id}}
    )


def keys(s3, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/").get("Contents", []))


def stored_slices(s3, line_id: str = LINE):
    body = s3.get_object(Bucket=BUCKET, Key=slices_key(line_id))["Body"].read()
    return pq.read_table(io.BytesIO(body))


def quarantined(s3) -> list[QuarantineRecord]:
    return [
        QuarantineRecord.model_validate_json(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        for key in keys(s3, names.QUARANTINE_PREFIX)
    ]


# --- landing and slices ---------------------------------------------------------------------------


def test_a_list_of_intervals_lands_and_the_line_gets_its_1_minute_slices(s3):
    intervals = [
        interval("run", "r1", 0, 120, spec=SPEC.model_dump()),
        interval("state", "running", 30, 90),
        interval("shift", "early", 60, 180),
    ]
    response = lambda_handler(rule_event(intervals), None)

    assert (response["thing_name"], response["line_id"], response["accepted"], response["refused"]) == (
        THING,
        LINE,
        3,
        0,
    )
    assert response["quarantine_key"] is None and keys(s3, names.QUARANTINE_PREFIX) == []
    stored = get_context_intervals(BUCKET, LINE)
    assert sorted(i.interval_id for i in stored) == ["early", "r1", "running"]

    table = stored_slices(s3)
    expected = quantize(sub_intervals(stored, LINE), "1m")
    assert table.column_names == ["slice_start_ms", "slice_end_ms", *context_columns()]
    assert table.column_names == list(expected.columns)  # quantize()'s columns, unchanged
    frame = table.to_pandas()
    assert (
        frame[["slice_start_ms", "slice_end_ms"]].values.tolist()
        == expected[["slice_start_ms", "slice_end_ms"]].values.tolist()
    )
    assert table.column("run_id").to_pylist() == ["r1", "r1", "r1", "r1", None]
    assert frame["spec_upper"].iloc[0] == SPEC.upper
    assert response["slices"]["minutes"] == 180 and response["slices"]["slices"] == len(expected) == 5


def test_a_single_interval_object_is_accepted_and_upserts_by_kind_and_id(s3):
    lambda_handler(rule_event([interval("run", "r1", 0, 60), interval("state", "idle", 0, 60)]), None)
    lambda_handler(rule_event(interval("run", "r1", 0, 90)), None)  # r1 extended: replaces, not duplicates

    stored = {(i.kind.value, i.interval_id): i for i in get_context_intervals(BUCKET, LINE)}
    assert sorted(stored) == [("run", "r1"), ("state", "idle")]
    assert stored[("run", "r1")].end == at(90)
    frame = stored_slices(s3).to_pandas()
    assert frame["slice_end_ms"].max() == int(at(90).timestamp() * 1000)


def test_bad_intervals_are_quarantined_with_field_value_and_error_while_good_ones_land(s3):
    good = interval("run", "r1", 0, 60)
    backwards = {**interval("state", "s1", 0, 10), "start": at(20).isoformat()}
    wrong_type = {**interval("shift", "early", 0, 60), "kind": "lunch"}
    missing = {k: v for k, v in interval("work_order", "wo-1", 0, 60).items() if k != "line_id"}
    response = lambda_handler(rule_event([good, backwards, wrong_type, missing, "not an object"]), None)

    assert (response["accepted"], response["refused"]) == (1, 4)
    assert [i.interval_id for i in get_context_intervals(BUCKET, LINE)] == ["r1"]
    (record,) = quarantined(s3)
    assert response["quarantine_key"] == keys(s3, names.QUARANTINE_PREFIX)[0]
    assert record.source == names.context_topic(THING)
    assert (
        base64.b64decode(record.payload_b64)
        == json.dumps([good, backwards, wrong_type, missing, "not an object"]).encode()
    )
    reasons = {r.field: r for r in record.reasons}
    assert "must be before end" in reasons["[1]"].error
    assert reasons["[2].kind"].value == "'lunch'"
    assert reasons["[3].line_id"].error == "is missing"
    assert reasons["[4]"].value == "'not an object'"
    assert stored_slices(s3).num_rows == 1


@pytest.mark.parametrize(
    ("payload", "topic", "field", "error"),
    [
        (b"{not json", None, "<payload>", "is not JSON"),
        (b'"a string"', None, "<payload>", "is a JSON str"),
        (b"[]", None, "<payload>", "empty list"),
        (b"{}", f"{names.TOPIC_ROOT}/{THING}/telemetry", "topic", "is not a context topic"),
        (b"{}", "elsewhere/gw/context", "topic", "not an edgeloop device topic"),
    ],
)
def test_a_refused_message_lands_nothing_and_says_why(s3, payload, topic, field, error):
    response = lambda_handler(rule_event(payload, topic=topic), None)
    assert (response["accepted"], response["refused"], response["slices"]) == (0, 1, None)
    (record,) = quarantined(s3)
    assert record.reasons[0].field == field and error in record.reasons[0].error
    assert keys(s3, names.CONTEXT_PREFIX) == [] and keys(s3, names.CONTEXT_SLICES_PREFIX) == []


def test_intervals_of_two_lines_in_one_message_are_refused_together(s3):
    payload = [interval("run", "r1", 0, 60), interval("run", "r9", 0, 60, line_id="line-9")]
    response = lambda_handler(rule_event(payload), None)
    assert response["accepted"] == 0
    (record,) = quarantined(s3)
    (reason,) = record.reasons
    assert reason.field == "line_id" and "line-1" in reason.value and "line-9" in reason.value
    assert keys(s3, names.CONTEXT_PREFIX) == []


def test_a_body_that_is_not_base64_is_refused_naming_the_field():
    event = IotRuleEvent(payload_b64="@@not base64@@", topic=names.context_topic(THING), received_at_ms=RECEIVED_MS)
    with pytest.raises(MessageRefused, match="payload_b64"):
        parse_context_message(event)


def test_an_event_that_is_neither_a_rule_event_nor_a_rebuild_is_an_error(s3):
    with pytest.raises(ValueError, match="topic"):
        lambda_handler({"payload_b64": "e30="}, None)


# --- direct rebuild ---------------------------------------------------------------------------------


def test_a_direct_invoke_rebuilds_slices_from_stored_intervals(s3):
    put_context_intervals(
        BUCKET,
        LINE,
        [
            ContextInterval.model_validate(interval("run", "r1", 0, 30)),
            ContextInterval.model_validate(interval("run", "r2", 30, 45)),
        ],
    )
    response = lambda_handler({"line_ids": [LINE, "line-2"]}, None)
    built = {b["line_id"]: b for b in response["rebuilt"]}
    assert (built[LINE]["intervals"], built[LINE]["slices"], built[LINE]["minutes"]) == (2, 2, 45)
    assert stored_slices(s3).column("run_id").to_pylist() == ["r1", "r2"]
    # A line without intervals gets an empty table with the same typed columns.
    empty = stored_slices(s3, "line-2")
    assert empty.num_rows == 0 and empty.schema == stored_slices(s3).schema
    assert str(empty.schema.field("run_id").type) == "string"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"line_ids": "line-1"}, "a rebuild event is"),
        ({"line_ids": [1]}, "a rebuild event is"),
        ({"line_ids": ["line-1"], "extra": 1}, "a rebuild event is"),
    ],
)
def test_bad_rebuild_events_are_refused(event, message):
    with pytest.raises(ValueError, match=message):
        lines_to_rebuild(event)


def test_a_rebuild_of_a_bad_line_id_names_it(s3):
    with pytest.raises(ValueError, match=r"line_id='Line 1'"):
        lambda_handler({"line_ids": ["Line 1"]}, None)


def test_settings_name_the_missing_bucket(monkeypatch):
    from edgeloop.functions.context.settings import Settings

    with pytest.raises(ValueError, match=names.DATA_BUCKET_ENV):
        Settings.from_env({})


def test_a_gateway_may_describe_only_the_line_the_registry_gives_it(s3):
    response = lambda_handler(rule_event([interval("run", "r9", 0, 60, line_id="line-9")]), None)
    assert (response["accepted"], response["refused"]) == (0, 1)
    (record,) = quarantined(s3)
    (reason,) = record.reasons
    assert (reason.field, reason.value) == ("line_id", "'line-9'")
    assert "differs from line 'line-1'" in reason.error and THING in reason.error
    assert keys(s3, names.CONTEXT_PREFIX) == [] and keys(s3, names.CONTEXT_SLICES_PREFIX) == []


def test_an_unregistered_gateway_lands_no_context(s3):
    topic = names.context_topic("gw-unknown")
    response = lambda_handler(rule_event([interval("run", "r1", 0, 60)], topic=topic), None)
    assert response["accepted"] == 0
    (record,) = quarantined(s3)
    assert record.reasons[0].field == "line_id" and "has no line for thing 'gw-unknown'" in record.reasons[0].error
