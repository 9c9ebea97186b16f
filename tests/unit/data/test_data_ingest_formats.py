"""Ingest reads both wire formats: format 1 (zlib JSON) and format 2 (compact binary) land the same samples."""

from __future__ import annotations

import base64

import pytest
from ingest_messages import LINE, LINES, RECEIVED_AT_MS, THING, USE_CASE, event_of

from edgeloop.functions.ingest.data_access import S3IngestStore
from edgeloop.functions.ingest.logic import ingest_event
from edgeloop.schemas import QuarantineRecord, TelemetryBatch
from edgeloop.schemas.raw_batch import RawBatch
from edgeloop.schemas.telemetry import ColumnarSamples
from edgeloop.schemas.telemetry_codec import encode_batch
from edgeloop.schemas.telemetry_compact import COMPACT_MAGIC, Compression, encode_compact

BUCKET = "edgeloop-ingest-formats-test"


def batch(version: int, *, seq_first: int = 100, metrics=("speed", "temp_die"), values=None) -> TelemetryBatch:
    n = 6
    values = values or [12.5, 210.25, 12.51, 210.3, -0.0, 210.35]  # speed: xor mode (-0.0), temp_die: decimal
    return TelemetryBatch.model_construct(  # model_construct: lets tests put bad values on the wire
        format_version=version,
        thing_name=THING,
        line_id=LINE,
        seq_first=seq_first,
        seq_last=seq_first + n - 1,
        samples=ColumnarSamples.model_construct(
            metrics=list(metrics),
            metric_index=[i % len(metrics) for i in range(n)],
            time_ms=[RECEIVED_AT_MS - 10_000 + 1000 * (i // 2) for i in range(n)],
            values=list(values),
        ),
    )


def ingest(payload: bytes):
    return ingest_event(event_of(payload), use_case=USE_CASE, store=S3IngestStore(BUCKET), lines=LINES)


def landed(s3, key: str) -> RawBatch:
    return RawBatch.from_gzip_json(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def quarantined(s3, key: str) -> QuarantineRecord:
    return QuarantineRecord.model_validate_json(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


@pytest.mark.parametrize("compression", list(Compression))
def test_both_formats_land_the_same_samples(s3, compression):
    v1 = ingest(encode_batch(batch(1, seq_first=100)))
    v2 = ingest(encode_compact(batch(2, seq_first=200), compression))

    assert (v1.landed_samples, v2.landed_samples) == (6, 6)
    assert v1.quarantine_key is None and v2.quarantine_key is None
    first, second = landed(s3, v1.raw_key), landed(s3, v2.raw_key)
    assert second.seq == [200 + i for i in range(6)]
    assert second.samples == first.samples
    assert str(second.samples.values[4]) == "-0.0"


def test_format_2_duplicate_delivery_lands_once(s3):
    payload = encode_batch(batch(2))
    results = [ingest(payload) for _ in range(2)]
    assert [r.duplicate for r in results] == [False, True]
    assert [r.landed_samples for r in results] == [6, 0]


def test_format_2_bad_samples_are_refused_alone(s3):
    # sample 1 is not finite, and every sample of the unknown metric is refused
    values = [12.5, float("nan"), 12.51, 210.3, 12.52, 210.4]
    result = ingest(encode_batch(batch(2, values=values, metrics=("speed", "bogus_metric", "temp_die"))))

    # metric_index cycles 0,1,2: samples 1 and 4 are bogus_metric (1 is also NaN)
    assert result.landed_samples == 4 and result.quarantined_samples == 2
    assert landed(s3, result.raw_key).seq == [100, 102, 103, 105]
    reasons = quarantined(s3, result.quarantine_key).reasons
    assert ("samples.values[1]", "nan") in {(r.field, r.value) for r in reasons}
    assert {r.field for r in reasons} >= {"samples.metrics[1]"}


def test_truncated_format_2_is_quarantined_naming_field_and_value(s3):
    payload = encode_compact(batch(2), Compression.ZLIB)[:-4]
    result = ingest(payload)

    assert result.landed_samples == 0 and result.raw_key is None
    record = quarantined(s3, result.quarantine_key)
    assert base64.b64decode(record.payload_b64) == payload
    (reason,) = record.reasons
    assert reason.field == "body" and reason.value == f"'{len(payload) - 6} zlib bytes'"
    assert "truncated" in reason.error


def test_unknown_format_version_is_quarantined_naming_it(s3):
    payload = COMPACT_MAGIC + bytes([7, 0]) + b"\x00" * 8
    (reason,) = quarantined(s3, ingest(payload).quarantine_key).reasons
    assert (reason.field, reason.value) == ("header.format_version", "7")
    assert "not supported" in reason.error


def test_format_2_structure_errors_go_through_the_same_validation(s3):
    bad = batch(2).model_copy(update={"seq_last": 110})  # the binary form stores n, so rebuild the range
    payload = encode_batch(bad)
    result = ingest(payload)
    # format 2 derives seq_last from the sample count: the range cannot disagree, the batch lands
    assert result.landed_samples == 6 and landed(s3, result.raw_key).seq_last == 105
    thing_mismatch = batch(2).model_copy(update={"thing_name": "gw-other"})
    (reason,) = quarantined(s3, ingest(encode_batch(thing_mismatch)).quarantine_key).reasons
    assert reason.field == "thing_name" and reason.value == "'gw-other'"
