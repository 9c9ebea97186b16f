"""Ingest: bad input is quarantined with reasons naming field and value; good data lands once."""

from __future__ import annotations

import base64
import gzip
import json
import zlib

import boto3
import pytest
from ingest_messages import LINES, RECEIVED_AT_MS, THING, USE_CASE, batch_doc, event_of, wire

from edgeloop.cloud.datalake.sample_validation import FUTURE_TOLERANCE_MS
from edgeloop.functions.ingest.data_access import S3IngestStore
from edgeloop.functions.ingest.logic import ingest_event
from edgeloop.schemas import QuarantineRecord
from edgeloop.schemas.raw_batch import RawBatch

BUCKET = "edgeloop-ingest-test"


def ingest(s3, payload: bytes, **kwargs):
    return ingest_event(event_of(payload, **kwargs), use_case=USE_CASE, store=S3IngestStore(BUCKET), lines=LINES)


def quarantine_record(s3, key: str) -> QuarantineRecord:
    return QuarantineRecord.model_validate_json(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def landed(s3, key: str) -> RawBatch:
    return RawBatch.from_gzip_json(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def all_keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def test_good_batch_lands_under_ingestion_time_and_sequence_range(s3):
    result = ingest(s3, wire(batch_doc(4)))

    assert result.landed_samples == 4 and result.quarantined_samples == 0 and not result.duplicate
    assert result.raw_key == (f"raw/ingest_date=2026-01-01/hour=13/thing={THING}/{100:020d}-{103:020d}.json.gz")
    raw = landed(s3, result.raw_key)
    assert raw.seq == [100, 101, 102, 103]
    assert raw.received_at_ms == RECEIVED_AT_MS
    assert raw.samples.values == [10.0, 11.0, 12.0, 13.0]
    assert all_keys(s3, "quarantine/") == []


def test_duplicate_delivery_lands_once(s3):
    payload = wire(batch_doc(4))
    results = [ingest(s3, payload, received_at_ms=RECEIVED_AT_MS + i) for i in range(3)]

    assert [r.duplicate for r in results] == [False, True, True]
    assert [r.landed_samples for r in results] == [4, 0, 0]
    assert len({r.raw_key for r in results}) == 1
    assert len(all_keys(s3, "raw/")) == 1
    # the first delivery's receive time is kept
    assert landed(s3, results[0].raw_key).received_at_ms == RECEIVED_AT_MS


def _single_reason_message_refusal(s3, payload: bytes, **kwargs) -> QuarantineRecord:
    result = ingest(s3, payload, **kwargs)
    assert result.raw_key is None and result.landed_samples == 0
    assert all_keys(s3, "raw/") == []
    assert result.quarantine_key.startswith("quarantine/ingest_date=2026-01-01/")
    record = quarantine_record(s3, result.quarantine_key)
    assert base64.b64decode(record.payload_b64) == payload
    return record


def test_not_zlib_is_quarantined(s3):
    record = _single_reason_message_refusal(s3, b"plain text, not compressed")
    assert record.reasons[0].field == "<payload>"
    assert "not zlib-compressed" in record.reasons[0].error
    assert record.reasons[0].value == "0x" + b"plain text, not compressed".hex()


def test_not_json_is_quarantined(s3):
    record = _single_reason_message_refusal(s3, zlib.compress(b"{not json"))
    assert record.reasons[0].field == "<payload>"
    assert "not JSON" in record.reasons[0].error
    assert record.reasons[0].value == "'{not json'"


def test_missing_field_is_quarantined(s3):
    doc = batch_doc()
    del doc["line_id"]
    record = _single_reason_message_refusal(s3, wire(doc))
    assert [(r.field, r.error) for r in record.reasons] == [("line_id", "Field required")]


def test_wrong_type_of_batch_field_is_quarantined(s3):
    doc = batch_doc()
    doc["seq_first"] = "one hundred"
    record = _single_reason_message_refusal(s3, wire(doc))
    fields = {r.field: r for r in record.reasons}
    assert fields["seq_first"].value == "'one hundred'"
    assert "valid integer" in fields["seq_first"].error


def test_sequence_range_mismatch_is_quarantined(s3):
    doc = batch_doc(4)
    doc["seq_last"] = 110
    record = _single_reason_message_refusal(s3, wire(doc))
    reason = record.reasons[0]
    assert reason.field == "seq_first..seq_last"
    assert "100..110" in reason.value
    assert "covers 11 samples but the batch holds 4" in reason.error


def test_thing_topic_mismatch_is_quarantined(s3):
    record = _single_reason_message_refusal(s3, wire(batch_doc(thing="gw-other")))
    reason = record.reasons[0]
    assert reason.field == "thing_name" and reason.value == "'gw-other'"
    assert THING in reason.error


def test_columns_of_different_length_are_quarantined(s3):
    doc = batch_doc(4)
    doc["samples"]["values"].pop()
    record = _single_reason_message_refusal(s3, wire(doc))
    assert any(r.field == "samples" and "columns differ in length" in r.error for r in record.reasons)


def test_unknown_metric_quarantines_only_its_samples(s3):
    doc = batch_doc(6, metrics=("speed", "bogus_metric", "temp_die"))  # samples 1 and 4 are bogus
    result = ingest(s3, wire(doc))

    assert result.landed_samples == 4 and result.quarantined_samples == 2
    raw = landed(s3, result.raw_key)
    assert raw.seq == [100, 102, 103, 105]
    assert [raw.samples.metrics[i] for i in raw.samples.metric_index] == ["speed", "temp_die"] * 2
    record = quarantine_record(s3, result.quarantine_key)
    assert [r.field for r in record.reasons] == ["samples.metrics[1]"] * 2
    assert all(r.value == "'bogus_metric'" for r in record.reasons)
    assert ["seq=101" in record.reasons[0].error, "seq=104" in record.reasons[1].error] == [True, True]


def test_prediction_metric_is_accepted(s3):
    result = ingest(s3, wire(batch_doc(2, metrics=(USE_CASE.prediction_metric,))))
    assert result.landed_samples == 2 and result.quarantine_key is None


def test_future_timestamps_quarantine_only_those_samples(s3):
    doc = batch_doc(3)
    future = RECEIVED_AT_MS + FUTURE_TOLERANCE_MS + 1
    doc["samples"]["time_ms"][2] = future
    doc["samples"]["time_ms"][1] = RECEIVED_AT_MS + FUTURE_TOLERANCE_MS  # exactly at the limit: fine
    result = ingest(s3, wire(doc))

    assert result.landed_samples == 2 and result.quarantined_samples == 1
    assert landed(s3, result.raw_key).seq == [100, 101]
    (reason,) = quarantine_record(s3, result.quarantine_key).reasons
    assert reason.field == "samples.time_ms[2]" and reason.value == str(future)
    assert "seq=102" in reason.error


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_quarantine_only_those_samples(s3, bad):
    doc = batch_doc(4)
    doc["samples"]["values"][1] = bad
    doc["samples"]["values"][3] = bad
    result = ingest(s3, wire(doc))

    assert result.landed_samples == 2 and result.quarantined_samples == 2
    raw = landed(s3, result.raw_key)
    assert raw.seq == [100, 102] and raw.samples.values == [10.0, 12.0]
    reasons = quarantine_record(s3, result.quarantine_key).reasons
    assert [(r.field, r.value) for r in reasons] == [("samples.values[1]", repr(bad)), ("samples.values[3]", repr(bad))]
    assert all("not a finite number" in r.error for r in reasons)


def test_mistyped_sample_value_quarantines_only_that_sample(s3):
    doc = batch_doc(3)
    doc["samples"]["values"][0] = "warm"
    doc["samples"]["time_ms"][2] = "yesterday"
    result = ingest(s3, wire(doc))

    assert result.landed_samples == 1 and landed(s3, result.raw_key).seq == [101]
    reasons = {r.field: r for r in quarantine_record(s3, result.quarantine_key).reasons}
    assert reasons["samples.values[0]"].value == "'warm'"
    assert reasons["samples.time_ms[2]"].value == "'yesterday'"


def test_metric_index_outside_metrics_quarantines_only_that_sample(s3):
    doc = batch_doc(3)
    doc["samples"]["metric_index"][1] = 7
    result = ingest(s3, wire(doc))

    assert result.landed_samples == 2
    (reason,) = quarantine_record(s3, result.quarantine_key).reasons
    assert reason.field == "samples.metric_index[1]" and reason.value == "7"


def test_mistyped_sample_plus_message_fault_refuses_the_message(s3):
    doc = batch_doc(3)
    doc["samples"]["values"][0] = "warm"
    del doc["thing_name"]
    record = _single_reason_message_refusal(s3, wire(doc))
    assert {r.field for r in record.reasons} == {"samples.values[0]", "thing_name"}


def test_all_samples_bad_lands_nothing(s3):
    result = ingest(s3, wire(batch_doc(2, metrics=("bogus",))))
    assert result.raw_key is None and result.landed_samples == 0 and result.quarantined_samples == 2
    assert all_keys(s3, "raw/") == []
    assert len(quarantine_record(s3, result.quarantine_key).reasons) == 2


def test_duplicate_of_partly_bad_batch_quarantines_once(s3):
    payload = wire(batch_doc(4, metrics=("speed", "bogus")))
    results = [ingest(s3, payload, received_at_ms=RECEIVED_AT_MS + i) for i in range(3)]
    assert [r.duplicate for r in results] == [False, True, True]
    assert len(all_keys(s3, "quarantine/")) == 1


def emitted_metrics(stdout: str) -> list[dict]:
    """The EMF documents powertools printed, with each metric's value(s) summed."""
    documents = [json.loads(line) for line in stdout.splitlines() if '"_aws"' in line]
    return [
        {
            m["Name"]: sum(doc[m["Name"]]) if isinstance(doc[m["Name"]], list) else doc[m["Name"]]
            for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        }
        for doc in documents
    ]


def register_thing_in_iot(thing: str = THING, line_id: str = "line-1") -> None:
    """What `edgeloop gateway provision` leaves in the registry, as far as ingest reads it."""
    boto3.client("iot").create_thing(thingName=thing, attributePayload={"attributes": {"line_id": line_id}})


def test_handler_counts_metrics_and_lands(s3, capsys):
    from edgeloop.functions.ingest import handler

    handler._settings.cache_clear()
    register_thing_in_iot()
    event = event_of(wire(batch_doc(4))).model_dump()
    outputs = [handler.lambda_handler(event, None) for _ in range(3)]

    assert outputs[0]["landed_samples"] == 4 and outputs[1]["duplicate"] and outputs[2]["duplicate"]
    emitted = emitted_metrics(capsys.readouterr().out)
    assert emitted[0]["SamplesLanded"] == 4 and emitted[0]["BatchesLanded"] == 1
    assert emitted[1]["DuplicateBatches"] == 1 and "BatchesLanded" not in emitted[1]


def test_handler_counts_quarantined_batch(s3, capsys):
    from edgeloop.functions.ingest import handler

    handler._settings.cache_clear()
    result = handler.lambda_handler(event_of(b"garbage").model_dump(), None)
    assert result["quarantine_key"] and result["raw_key"] is None
    emitted = emitted_metrics(capsys.readouterr().out)
    assert emitted[-1]["BatchesQuarantined"] == 1


def test_handler_rejects_an_event_that_is_not_from_the_rule(s3):
    from edgeloop.functions.ingest import handler

    handler._settings.cache_clear()
    with pytest.raises(ValueError, match="received_at_ms"):
        handler.lambda_handler({"payload_b64": "", "topic": "edgeloop/x/telemetry"}, None)


def test_raw_object_is_gzip_json_with_receive_time(s3):
    result = ingest(s3, wire(batch_doc(2)))
    body = json.loads(gzip.decompress(s3.get_object(Bucket=BUCKET, Key=result.raw_key)["Body"].read()))
    assert body["received_at_ms"] == RECEIVED_AT_MS and body["thing_name"] == THING and body["seq_first"] == 100
