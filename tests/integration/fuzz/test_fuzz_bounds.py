"""Issue 14: each bound of the device messages besides telemetry, through the real handlers on moto.

Context, status reports, announcements, lifecycle events and the raw objects the hot path reads are
bounded before they are parsed (schemas/bounded_json.py), validated strictly (no number from a
string or a boolean, no time from a number), and a refusal never raises out of a handler: it is a
quarantine record naming field, value and reason, and the good intervals of a mixed context
message still land.
"""

from __future__ import annotations

import gzip
import json
import math

import pytest
from fuzz_cloud import DATA_BUCKET, DEVICE_TABLE, LINE, RECEIVED_AT, THING
from fuzz_messages import (
    announcement_document,
    lifecycle_document,
    object_created,
    raw_batch,
    raw_key,
    rule_event,
)

from edgeloop.cloud.datalake.context import get_context_intervals
from edgeloop.cloud.fleet.devices import DeviceTable
from edgeloop.functions.context import handler as context_handler
from edgeloop.functions.device_registry import handler as registry_handler
from edgeloop.functions.hot_path import handler as hot_path_handler
from edgeloop.functions.hot_path.data_access import MAX_RAW_JSON_BYTES
from edgeloop.functions.status_intake import handler as status_handler
from edgeloop.schemas import ContextInterval, ModelStatusReport, QuarantineRecord, names
from edgeloop.schemas.bounded_json import (
    MAX_CONTEXT_INTERVALS,
    MAX_CONTEXT_JSON,
    MAX_DEVICE_STRING_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_STATUS_JSON,
    MAX_SUPPORTED_PRECISIONS,
    JsonLimits,
    MessageDecodeError,
    check_document,
    loads_bounded,
)
from edgeloop.schemas.device import MAX_ID_CHARS

# --- helpers ---------------------------------------------------------------------------------------


def interval(interval_id: str, **changes) -> dict:
    document = ContextInterval(
        kind="run",
        interval_id=interval_id,
        line_id=LINE,
        start="2026-01-01T06:00:00Z",
        end="2026-01-01T07:00:00Z",
        value="PE-100",
        spec={"target_metric": "cold_od_average", "lower": 4.9, "upper": 5.1},
    ).model_dump(mode="json")
    document.update(changes)
    return document


def send_context(payload) -> dict:
    return context_handler.lambda_handler(rule_event(names.context_topic(THING), payload), None)


def record(s3, key: str | None) -> QuarantineRecord:
    assert key, "no quarantine record"
    return QuarantineRecord.model_validate_json(s3.get_object(Bucket=DATA_BUCKET, Key=key)["Body"].read())


def only_reason(s3, key: str | None):
    (reason,) = record(s3, key).reasons
    return reason


def stored_ids() -> set[str]:
    """The ids of the line's stored intervals (the module's tests share the cloud: ids are unique)."""
    return {i.interval_id for i in get_context_intervals(DATA_BUCKET, LINE)}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- context ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_CONTEXT_JSON.max_depth + 1, 5_000, 60_000])
def test_deeply_nested_context_is_quarantined_not_raised(cloud, depth):
    result = send_context(nested(depth))  # 10 KB of [[[ raised RecursionError out of the handler
    assert (result["accepted"], result["refused"]) == (0, 1)
    reason = only_reason(cloud, result["quarantine_key"])
    assert reason.field == "<payload>"
    assert "MAX_CONTEXT_JSON_DEPTH" in reason.error or "MAX_CONTEXT_JSON_CONTAINERS" in reason.error


def test_more_intervals_than_a_message_may_hold_are_refused(cloud):
    intervals = [interval(f"many-{i}") for i in range(MAX_CONTEXT_INTERVALS + 1)]
    result = send_context(intervals)
    assert result["accepted"] == 0
    reason = only_reason(cloud, result["quarantine_key"])
    assert reason.value == f"'{MAX_CONTEXT_INTERVALS + 1} intervals'" and "MAX_CONTEXT_INTERVALS" in reason.error
    assert "many-0" not in stored_ids()


def test_a_context_payload_over_iot_cores_limit_is_refused(cloud):
    payload = json.dumps([interval("big-1", value="x" * 900)] * 150).encode()
    assert len(payload) > MAX_PAYLOAD_BYTES
    reason = only_reason(cloud, send_context(payload)["quarantine_key"])
    assert reason.value == f"'{len(payload)} bytes'" and "MAX_CONTEXT_JSON_BYTES" in reason.error


def test_a_context_string_over_the_limit_is_refused(cloud):
    result = send_context([interval("long-1", value="x" * (MAX_DEVICE_STRING_CHARS + 1))])
    reason = only_reason(cloud, result["quarantine_key"])
    assert reason.field == "<payload>[0].value" and "MAX_CONTEXT_JSON_STRING_CHARS" in reason.error
    assert "long-1" not in stored_ids()


def test_mistyped_intervals_are_refused_not_coerced_and_the_good_one_lands(cloud):
    good = interval("run-good")
    text_lower = interval("run-text", spec={"target_metric": "cold_od_average", "lower": "4.9", "upper": 5.1})
    bool_upper = interval("run-bool", spec={"target_metric": "cold_od_average", "lower": 0, "upper": True})
    epoch_start = interval("run-epoch", start=1767247200)
    result = send_context([text_lower, good, bool_upper, epoch_start])
    assert (result["accepted"], result["refused"]) == (1, 3)
    assert stored_ids() & {"run-good", "run-text", "run-bool", "run-epoch"} == {"run-good"}
    reasons = {r.field: r.value for r in record(cloud, result["quarantine_key"]).reasons}
    assert reasons == {"[0].spec.lower": "'4.9'", "[2].spec.upper": "True", "[3].start": "1767247200"}


def test_nan_and_infinity_are_not_json_numbers(cloud):
    payload = json.dumps([interval("run-inf", spec={"target_metric": "m", "lower": -math.inf, "upper": 5.0})])
    reason = only_reason(cloud, send_context(payload.encode())["quarantine_key"])
    assert "-Infinity is not a JSON number" in reason.error
    assert "run-inf" not in stored_ids()


def test_a_line_break_in_a_context_string_cannot_poison_the_lines_intervals(cloud):
    first = send_context([interval("line-1", value="two\u2028lines"), interval("line-2")])
    second = send_context([interval("line-3")])  # once raised: the stored JSON lines broke at U+2028
    assert (first["accepted"], first["refused"], second["accepted"]) == (1, 1, 1)
    assert only_reason(cloud, first["quarantine_key"]).field == "[0].value"
    assert stored_ids() & {"line-1", "line-2", "line-3"} == {"line-2", "line-3"}


# --- status reports ---------------------------------------------------------------------------------


def status_document(**changes) -> dict:
    report = ModelStatusReport(
        thing_name=THING, deployment_id="dep-1", model_id="m", version="1.0.0", status="applied", sent_at=RECEIVED_AT
    )
    return {**report.model_dump(mode="json"), **changes}


def send_status(payload, topic: str = names.model_status_topic(THING)) -> dict:
    return status_handler.lambda_handler(rule_event(topic, payload), None)


@pytest.mark.parametrize(
    ("payload", "field", "error"),
    [
        (nested(5_000), "<payload>", "MAX_STATUS_JSON"),  # raised RecursionError
        (status_document(sent_at=1767247200), "sent_at", "valid datetime"),  # was taken as a time
        (status_document(reason="r" * (MAX_DEVICE_STRING_CHARS + 1)), "<payload>.reason", "STRING_CHARS"),
        (status_document(deployment_id="d" * (MAX_ID_CHARS + 1)), "deployment_id", f"at most {MAX_ID_CHARS}"),
        (b"x" * (MAX_STATUS_JSON.max_bytes + 1), "<payload>", "MAX_STATUS_JSON_BYTES"),
        (status_document(thing_name="gw-other"), "thing_name", "does not match the thing"),
    ],
)
def test_a_refused_status_report_is_quarantined_with_field_and_reason(cloud, payload, field, error):
    result = send_status(payload)
    assert result["outcome"] == "refused"
    reasons = record(cloud, result["quarantine_key"]).reasons
    assert any(r.field == field and error in r.error for r in reasons), reasons
    assert DeviceTable(DEVICE_TABLE).get(THING).status.value == "registered"  # nothing changed


def test_a_status_report_of_a_device_that_never_announced_itself_is_quarantined(cloud):
    result = send_status(status_document(thing_name="gw-9"), topic=names.model_status_topic("gw-9"))
    assert result["outcome"] == "refused"
    reason = only_reason(cloud, result["quarantine_key"])
    assert (reason.field, reason.value) == ("thing_name", "'gw-9'") and "has not announced itself" in reason.error


# --- announcements and lifecycle events ------------------------------------------------------------


def send_registry(topic: str, payload) -> dict:
    return registry_handler.lambda_handler(rule_event(topic, payload), None)


@pytest.mark.parametrize(
    ("change", "field", "error"),
    [
        ({"supported_precisions": ["fp32"] * (MAX_SUPPORTED_PRECISIONS + 1)}, "supported_precisions", "at most"),
        ({"sent_at": 1767247200}, "sent_at", "valid datetime"),
        ({"site": 7}, "site", "valid string"),
    ],
)
def test_a_refused_announcement_is_quarantined_with_field_and_reason(cloud, change, field, error):
    result = send_registry(names.announce_topic(THING), {**announcement_document(), **change})
    assert result["record"] is None and result["refused"]
    reasons = record(cloud, result["quarantine_key"]).reasons
    assert any(r.field == field and error in r.error for r in reasons), reasons


def test_a_deeply_nested_announcement_is_quarantined_not_raised(cloud):
    result = send_registry(names.announce_topic(THING), nested(5_000))
    assert "MAX_ANNOUNCEMENT_JSON" in only_reason(cloud, result["quarantine_key"]).error


@pytest.mark.parametrize(
    ("change", "field"),
    [({"timestamp": "1767225604000"}, "timestamp"), ({"versionNumber": True}, "versionNumber")],
)
def test_a_mistyped_lifecycle_event_is_quarantined_not_coerced(cloud, change, field):
    document = {**lifecycle_document("connected", THING, 1), **change}
    result = send_registry(names.presence_topic("connected", THING), document)
    assert result["record"] is None and result["ignored"]
    assert only_reason(cloud, result["quarantine_key"]).field == field


def test_a_deeply_nested_lifecycle_event_is_quarantined_not_raised(cloud):
    result = send_registry(names.presence_topic("connected", THING), nested(5_000))
    assert "MAX_LIFECYCLE_JSON" in only_reason(cloud, result["quarantine_key"]).error


# --- raw objects, as the hot path reads them -------------------------------------------------------


def test_a_gzip_bomb_in_raw_is_refused_without_raising(cloud):
    key = raw_key(raw_batch(3))
    cloud.put_object(
        Bucket=DATA_BUCKET, Key=key, Body=gzip.compress(b" " * (MAX_RAW_JSON_BYTES + 1), compresslevel=1, mtime=0)
    )
    result = hot_path_handler.lambda_handler(object_created(key), None)
    assert "MAX_RAW_JSON_BYTES" in result["refused"] and result["written"] == 0


def test_a_second_gzip_member_after_a_raw_batch_is_refused_without_raising(cloud):
    raw = raw_batch(3)
    cloud.put_object(Bucket=DATA_BUCKET, Key=raw_key(raw), Body=raw.to_gzip_json() * 2)
    result = hot_path_handler.lambda_handler(object_created(raw_key(raw)), None)
    assert "bytes follow the gzip stream" in result["refused"]


# --- the shared checker ------------------------------------------------------------------------------

SMALL = JsonLimits(
    name="SMALL", max_bytes=200, max_depth=2, max_containers=3, max_strings=4, max_elements=5, max_string_chars=5
)


@pytest.mark.parametrize(
    ("text", "field", "error"),
    [
        (b"[" + b"1," * 100 + b"1]", "<payload>", "exceed 200 bytes (SMALL_BYTES)"),
        (b"[[[]]]", "<payload>", "deeper than 2 levels (SMALL_DEPTH)"),
        (b'["a","b","c","d","e"]', "<payload>", "exceed 4 (SMALL_STRINGS)"),
        (b"[1,2,3,4,5,6]", "<payload>", "exceed 5 (SMALL_ELEMENTS)"),
        (b"[[],[],[]]", "<payload>", "exceed 3 (SMALL_CONTAINERS)"),
        (b'{"a": "abcdef"}', "<payload>.a", "more than 5 (SMALL_STRING_CHARS)"),
        (b'{"a": 1} {}', "<payload>", "Extra data"),
        (b"[NaN]", "<payload>", "NaN is not a JSON number"),
        (b'["\\ud800"]', "<payload>[0]", "is not Unicode text"),
        (b'["\xff"]', "<payload>", "not UTF-8"),
    ],
)
def test_loads_bounded_refuses_naming_field_and_limit(text, field, error):
    with pytest.raises(MessageDecodeError) as refused:
        loads_bounded(text, SMALL)
    assert refused.value.field == field and error in refused.value.reason


def test_check_document_walks_a_parsed_document_without_recursion():
    deep: list = []
    for _ in range(100_000):  # recursion would overflow far earlier
        deep = [deep]
    with pytest.raises(MessageDecodeError, match="SMALL_DEPTH"):
        check_document(deep, SMALL)
    for bad, error in [({1: "a"}, "not a string"), ([math.nan], "finite"), ([b"x"], "not a JSON value")]:
        with pytest.raises(MessageDecodeError, match=error):
            check_document(bad, SMALL)
    check_document({"a": [1, 2.5, None, True]}, SMALL)
