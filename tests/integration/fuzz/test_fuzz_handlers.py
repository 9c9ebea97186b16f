"""Issue 14: the fuzz suite. Every device message the cloud parses, good, mixed and hostile, through
the real handlers (lambda_handler with the event an IoT rule or EventBridge sends) on moto:

- no handler raises, whatever the bytes;
- every refusal leaves a quarantine record whose every reason names a field and an error (the
  hot path, which reads what ingest wrote, refuses without retrying and says why);
- of a mixed message (a telemetry batch with bad samples in either wire format, a context list
  with bad intervals) exactly the good samples or intervals land, and each bad one has a reason.

Examples are derandomized (the same on every run); memory is in test_fuzz_memory.py.
"""

from __future__ import annotations

import re

import pytest
from fuzz_cloud import DATA_BUCKET, LINE
from fuzz_messages import (
    Sent,
    context_messages,
    fleet_messages,
    hostile_context,
    hostile_fleet_messages,
    hostile_telemetry,
    object_created,
    raw_objects,
    telemetry_batches,
)
from hypothesis import HealthCheck, given, settings

from edgeloop.cloud.datalake.context import get_context_intervals
from edgeloop.functions.context import handler as context_handler
from edgeloop.functions.device_registry import handler as registry_handler
from edgeloop.functions.hot_path import handler as hot_path_handler
from edgeloop.functions.ingest import handler as ingest_handler
from edgeloop.functions.status_intake import handler as status_handler
from edgeloop.schemas import QuarantineRecord
from edgeloop.schemas.raw_batch import RawBatch

HANDLERS = {
    "ingest": ingest_handler,
    "context": context_handler,
    "status_intake": status_handler,
    "device_registry": registry_handler,
    "hot_path": hot_path_handler,
}


def fuzz(examples: int):
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


@pytest.fixture(autouse=True)
def _quiet_powertools(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # no EMF line per invocation


def invoke(sent: Sent) -> dict:
    return HANDLERS[sent.handler].lambda_handler(sent.event, None)


def quarantined(s3, key: str | None) -> QuarantineRecord:
    """The record at `key`: every reason names a field and an error."""
    assert key, "a refusal without a quarantine record"
    record = QuarantineRecord.model_validate_json(s3.get_object(Bucket=DATA_BUCKET, Key=key)["Body"].read())
    assert record.reasons and all(r.field and r.error for r in record.reasons), record
    return record


def indexes(record: QuarantineRecord, pattern: str) -> set[int]:
    return {int(m.group(1)) for r in record.reasons if (m := re.match(pattern, r.field))}


def check_outcome(s3, sent: Sent, result: dict) -> None:
    """Whatever the message: it landed, or it was refused with reasons."""
    if sent.handler == "ingest":
        assert result["raw_key"] or result["quarantine_key"], result
        if result["quarantine_key"]:
            quarantined(s3, result["quarantine_key"])
    elif sent.handler == "context":
        assert result["accepted"] or result["refused"], result
        if result["refused"]:
            quarantined(s3, result["quarantine_key"])
    elif sent.handler == "status_intake":
        if result["outcome"] == "refused":
            assert result["refused"] and result["reasons"], result
            quarantined(s3, result["quarantine_key"])
        else:
            assert result["record"] is not None, result
    elif "refused" in result:  # an announcement
        if result["refused"]:
            quarantined(s3, result["quarantine_key"])
        else:
            assert result["record"] is not None, result
    else:  # a lifecycle event: applied, ignored as no device's, or refused with reasons
        assert result["record"] is not None or result["ignored"], result
        if result["reasons"]:
            quarantined(s3, result["quarantine_key"])


# --- telemetry, both wire formats ----------------------------------------------------------------


@fuzz(60)
@given(sent=telemetry_batches())
def test_the_good_samples_of_a_mixed_batch_land_and_each_bad_one_has_a_reason(cloud, sent):
    result = invoke(sent)
    assert (result["landed_samples"], result["quarantined_samples"]) == (len(sent.good), len(sent.bad)), result
    if sent.good:
        raw = RawBatch.from_gzip_json(cloud.get_object(Bucket=DATA_BUCKET, Key=result["raw_key"])["Body"].read())
        assert raw.seq == sent.good
    if sent.bad:
        record = quarantined(cloud, result["quarantine_key"])
        assert indexes(record, r"samples\.\w+\[(\d+)\]$") == set(sent.bad), record.reasons


@fuzz(100)
@given(sent=hostile_telemetry())
def test_hostile_telemetry_never_raises_and_every_refusal_has_a_reason(cloud, sent):
    check_outcome(cloud, sent, invoke(sent))


# --- context --------------------------------------------------------------------------------------


@fuzz(40)
@given(sent=context_messages())
def test_the_good_intervals_of_a_mixed_context_message_land_and_each_bad_one_has_a_reason(cloud, sent):
    result = invoke(sent)
    assert (result["accepted"], result["refused"]) == (len(sent.good), len(sent.bad)), result
    stored = {interval.interval_id for interval in get_context_intervals(DATA_BUCKET, LINE)}
    assert set(sent.good) <= stored
    if sent.bad:
        assert indexes(quarantined(cloud, result["quarantine_key"]), r"\[(\d+)\]") == set(sent.bad)


@fuzz(60)
@given(sent=hostile_context())
def test_hostile_context_never_raises_and_every_refusal_has_a_reason(cloud, sent):
    result = invoke(sent)
    check_outcome(cloud, sent, result)


# --- status reports, periodic status, announcements, lifecycle events -----------------------------


@fuzz(25)
@given(sent=fleet_messages())
def test_valid_fleet_messages_are_taken(cloud, sent):
    result = invoke(sent)
    check_outcome(cloud, sent, result)
    assert result.get("outcome") != "refused" and not result.get("refused") and not result.get("reasons"), result


@fuzz(120)
@given(sent=hostile_fleet_messages())
def test_hostile_fleet_messages_never_raise_and_every_refusal_has_a_reason(cloud, sent):
    check_outcome(cloud, sent, invoke(sent))


# --- the hot path -----------------------------------------------------------------------------------


@fuzz(30)
@given(case=raw_objects())
def test_the_hot_path_writes_valid_raw_objects_and_refuses_the_rest_without_raising(cloud, case):
    key, body, valid = case
    cloud.put_object(Bucket=DATA_BUCKET, Key=key, Body=body)
    result = hot_path_handler.lambda_handler(object_created(key), None)
    if valid:
        assert result["refused"] is None and result["written"] == result["samples"] > 0, result
    else:
        assert result["refused"] or result["written"] == result["samples"], result
