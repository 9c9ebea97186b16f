"""The optional Timestream hot path: raw objects -> timestream-write WriteRecords.

moto's timestream-write stores what WriteRecords sends (it ignores Version and never rejects), so
the record layout, batching and the handler run against moto; partial rejections and throttling,
which moto cannot produce, run against botocore's Stubber.
"""

from __future__ import annotations

import json
import math
import struct
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from edgeloop.cloud.datalake.raw import raw_object_key
from edgeloop.functions.hot_path import handler
from edgeloop.functions.hot_path.data_access import (
    MAX_RECORDS_PER_REQUEST,
    RejectedRecord,
    TimestreamWriter,
    WriteOutcome,
    read_raw_batch,
    throttle_delay_s,
)
from edgeloop.functions.hot_path.logic import (
    MAX_REJECTED_EXAMPLES,
    copy_raw_object,
    land_raw_batch,
    raw_key_from_event,
    timestream_records,
)
from edgeloop.functions.hot_path.settings import Settings
from edgeloop.schemas import ColumnarSamples, TelemetryBatch, names
from edgeloop.schemas.raw_batch import RawBatch

BUCKET = "edgeloop-hot-path-test"
DATABASE, TABLE = "edgeloop_hot", "telemetry"
ACCOUNT, REGION = "123456789012", "eu-west-1"
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
METRICS = ["speed", "temp_die"]


def raw_batch(n: int, *, seq_first: int = 0, skipped: frozenset[int] = frozenset(), thing: str = "gw-1") -> RawBatch:
    """A landed batch of n sent samples; indexes in `skipped` were quarantined by ingest."""
    kept = [i for i in range(n) if i not in skipped]
    return RawBatch(
        thing_name=thing,
        line_id="line-1",
        seq_first=seq_first,
        seq_last=seq_first + n - 1,
        received_at_ms=T0 + n * 1000,
        samples=ColumnarSamples(
            metrics=METRICS,
            metric_index=[i % 2 for i in kept],
            time_ms=[T0 + i * 1000 for i in kept],
            values=[i * 0.1 for i in kept],
        ),
        seq=[seq_first + i for i in kept],
    )


def key_of(raw: RawBatch) -> str:
    """The key ingest gives this batch (raw_object_key reads only the sent batch's thing and range)."""
    n = raw.seq_last - raw.seq_first + 1
    sent = TelemetryBatch(
        thing_name=raw.thing_name,
        line_id=raw.line_id,
        seq_first=raw.seq_first,
        seq_last=raw.seq_last,
        samples=ColumnarSamples(metrics=["m"], metric_index=[0] * n, time_ms=[0] * n, values=[0.0] * n),
    )
    return raw_object_key(sent, datetime.fromtimestamp(raw.received_at_ms / 1000, tz=UTC))


def object_created(key: str, bucket: str = BUCKET) -> dict:
    """An EventBridge event as S3 sends it (docs: "EventBridge event message structure")."""
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": "2026-01-01T00:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": key, "size": 5, "etag": "b1946ac92492d2347c6235b4d2611184", "sequencer": "617f0829"},
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": ACCOUNT,
            "reason": "PutObject",
        },
    }


@pytest.fixture()
def aws(monkeypatch):
    monkeypatch.setenv(names.DATA_BUCKET_ENV, BUCKET)
    monkeypatch.setenv(names.TIMESTREAM_DATABASE_ENV, DATABASE)
    monkeypatch.setenv(names.TIMESTREAM_TABLE_ENV, TABLE)
    handler._settings.cache_clear()
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        timestream = boto3.client("timestream-write")
        timestream.create_database(DatabaseName=DATABASE)
        timestream.create_table(DatabaseName=DATABASE, TableName=TABLE)
        yield s3
    handler._settings.cache_clear()


def put_raw(s3, raw: RawBatch) -> str:
    key = key_of(raw)
    s3.put_object(Bucket=BUCKET, Key=key, Body=raw.to_gzip_json())
    return key


def stored_records() -> list[dict]:
    from moto.timestreamwrite.models import timestreamwrite_backends

    return timestreamwrite_backends[ACCOUNT][REGION].databases[DATABASE].tables[TABLE].records


class RecordingWriter:
    """Wraps a writer and keeps each request's records."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.requests: list[list[dict]] = []

    def write(self, records):
        self.requests.append(list(records))
        return self.inner.write(records)


# --- against moto ---------------------------------------------------------------------------------


def test_handler_writes_every_landed_sample_with_dimensions_time_and_version(aws):
    raw = raw_batch(250, seq_first=1000, skipped=frozenset({3, 7}))
    key = put_raw(aws, raw)

    result = handler.lambda_handler(object_created(key), None)

    assert result["samples"] == result["written"] == 248
    assert (result["duplicates"], result["rejected"], result["requests"]) == (0, 0, 3)
    records = sorted(stored_records(), key=lambda r: r["Version"])
    assert len(records) == 248
    by_version = {r["Version"]: r for r in records}
    assert 1000 + 3 + 1 not in by_version and 1000 + 7 + 1 not in by_version  # quarantined samples
    first = by_version[1001]  # seq 1000 (sample 0): Version = seq + 1
    assert first["Dimensions"] == [
        {"Name": "thing_name", "Value": "gw-1"},
        {"Name": "line_id", "Value": "line-1"},
        {"Name": "metric", "Value": "speed"},
    ]
    assert (first["MeasureName"], first["MeasureValueType"], first["TimeUnit"]) == ("value", "DOUBLE", "MILLISECONDS")
    assert first["Time"] == str(T0) and float(first["MeasureValue"]) == 0.0
    sample_249 = by_version[1000 + 249 + 1]
    assert sample_249["Dimensions"][2]["Value"] == "temp_die"
    assert sample_249["Time"] == str(T0 + 249_000) and float(sample_249["MeasureValue"]) == 249 * 0.1


def test_requests_hold_at_most_100_records_and_cover_the_batch_once(aws):
    raw = raw_batch(2 * MAX_RECORDS_PER_REQUEST + 1)
    key = put_raw(aws, raw)
    writer = RecordingWriter(TimestreamWriter(DATABASE, TABLE))

    result = copy_raw_object(BUCKET, key, writer=writer, concurrency=3)

    assert sorted(len(r) for r in writer.requests) == [1, MAX_RECORDS_PER_REQUEST, MAX_RECORDS_PER_REQUEST]
    versions = sorted(record["Version"] for request in writer.requests for record in request)
    assert versions == [seq + 1 for seq in raw.seq]
    assert result.written == len(stored_records()) == 2 * MAX_RECORDS_PER_REQUEST + 1


def test_a_redelivered_event_rewrites_identical_records_so_timestream_upserts(aws):
    key = put_raw(aws, raw_batch(30))
    handler.lambda_handler(object_created(key), None)
    first = list(stored_records())
    handler.lambda_handler(object_created(key), None)  # EventBridge and Lambda deliver at least once
    second = stored_records()[len(first) :]
    # Same dimensions, time and Version: Timestream keeps one record per (dimensions, time, measure).
    canonical = lambda rs: sorted(json.dumps(r, sort_keys=True) for r in rs)  # noqa: E731
    assert canonical(second) == canonical(first)


def test_a_missing_table_fails_the_invocation_so_lambda_retries(aws):
    key = put_raw(aws, raw_batch(3))
    with pytest.raises(ClientError, match="ResourceNotFound"):
        copy_raw_object(BUCKET, key, writer=TimestreamWriter(DATABASE, "no_such_table"))


def test_handler_emits_metrics(aws, capsys):
    key = put_raw(aws, raw_batch(5))
    handler.lambda_handler(object_created(key), None)
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    (metrics,) = [m for m in emitted if "TimestreamRecordsWritten" in m]
    assert metrics["TimestreamRecordsWritten"] == [5.0] and metrics["TimestreamRecordsRejected"] == [0.0]


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, field, value",
    [
        (lambda e: e.update({"detail-type": "Object Deleted"}), "detail-type", "Object Deleted"),
        (lambda e: e.update({"source": "aws.ec2"}), "source", "aws.ec2"),
        (lambda e: e["detail"].pop("object"), "detail.object", "is missing"),
        (lambda e: e["detail"]["bucket"].update({"name": "other-bucket"}), "detail.bucket.name", "other-bucket"),
        (lambda e: e["detail"]["object"].update({"key": "curated/line=x/a.parquet"}), "detail.object.key", "curated/"),
    ],
)
def test_an_event_that_is_not_a_new_raw_object_is_refused_naming_field_and_value(change, field, value):
    event = object_created(key_of(raw_batch(2)))
    change(event)
    with pytest.raises(ValueError) as refused:
        raw_key_from_event(event, data_bucket=BUCKET)
    assert field in str(refused.value) and value in str(refused.value)


def test_url_encoded_keys_are_decoded():
    key = key_of(raw_batch(2, thing="site:gw-1"))
    encoded = key.replace("=", "%3D").replace(":", "%3A")
    assert raw_key_from_event(object_created(encoded), data_bucket=BUCKET) == key


def test_corrupt_missing_or_mislabelled_raw_objects_are_refused_naming_the_key(aws):
    with pytest.raises(LookupError, match="raw/nothing-here"):
        read_raw_batch(BUCKET, "raw/nothing-here")
    aws.put_object(Bucket=BUCKET, Key="raw/broken.json.gz", Body=b"not gzip")
    with pytest.raises(ValueError, match="raw/broken.json.gz"):
        read_raw_batch(BUCKET, "raw/broken.json.gz")
    raw = raw_batch(4)
    wrong_key = key_of(raw_batch(4, seq_first=100))
    aws.put_object(Bucket=BUCKET, Key=wrong_key, Body=raw.to_gzip_json())
    with pytest.raises(ValueError, match="its key names"):
        copy_raw_object(BUCKET, wrong_key, writer=TimestreamWriter(DATABASE, TABLE))
    assert stored_records() == []


@pytest.mark.parametrize(
    "environ, named",
    [
        ({names.DATA_BUCKET_ENV: BUCKET, names.TIMESTREAM_DATABASE_ENV: DATABASE}, names.TIMESTREAM_TABLE_ENV),
        (
            {names.DATA_BUCKET_ENV: BUCKET, names.TIMESTREAM_DATABASE_ENV: "a b", names.TIMESTREAM_TABLE_ENV: TABLE},
            "'a b'",
        ),
    ],
)
def test_settings_name_the_missing_or_bad_variable(environ, named):
    with pytest.raises(ValueError, match=named):
        Settings.from_env(environ)


def test_settings_from_the_environment():
    settings = Settings.from_env(
        {names.DATA_BUCKET_ENV: BUCKET, names.TIMESTREAM_DATABASE_ENV: DATABASE, names.TIMESTREAM_TABLE_ENV: TABLE}
    )
    assert (settings.data_bucket, settings.database, settings.table) == (BUCKET, DATABASE, TABLE)


# --- rejections and throttling (botocore Stubber: moto produces neither) --------------------------


def stubbed_writer(**kwargs) -> tuple[TimestreamWriter, Stubber, list[float]]:
    client = boto3.client("timestream-write", region_name=REGION)
    slept: list[float] = []
    return TimestreamWriter(DATABASE, TABLE, timestream=client, sleep=slept.append, **kwargs), Stubber(client), slept


def reject(stubber: Stubber, rejected: list[dict]) -> None:
    stubber.add_client_error(
        "write_records",
        service_error_code="RejectedRecordsException",
        service_message="One or more records have been rejected.",
        http_status_code=419,
        modeled_fields={"RejectedRecords": rejected},
    )


def test_rejected_records_are_counted_by_reason_and_same_version_ones_are_duplicates():
    raw = raw_batch(150, seq_first=10)
    writer, stubber, _ = stubbed_writer()
    outside = "The record timestamp is outside the time range of the data ingestion window."
    # First request: record 0 already stored with its own version (a re-run), record 5 older
    # than the retention, record 9 superseded by a higher version.
    reject(
        stubber,
        [
            {"RecordIndex": 0, "Reason": "A record with the same version exists", "ExistingVersion": 11},
            {"RecordIndex": 5, "Reason": outside},
            {"RecordIndex": 9, "Reason": "A newer version exists", "ExistingVersion": 999},
        ],
    )
    reject(stubber, [{"RecordIndex": 49, "Reason": outside}])  # second request: its last record
    with stubber:
        result = land_raw_batch(raw, raw_key="raw/k", writer=writer, concurrency=1)
        stubber.assert_no_pending_responses()

    assert (result.samples, result.requests) == (150, 2)
    assert result.duplicates == 1
    assert result.rejected == 3 and result.rejected_by_reason == {outside: 2, "A newer version exists": 1}
    assert result.written == 150 - 1 - 3  # the rest of each request still landed
    examples = {(e.seq, e.metric, e.time_ms, e.existing_version) for e in result.rejected_examples}
    assert examples == {
        (15, "temp_die", T0 + 5000, None),
        (19, "temp_die", T0 + 9000, 999),
        (159, "temp_die", T0 + 149_000, None),
    }


def test_rejected_examples_are_capped_but_counts_are_not():
    raw = raw_batch(100)
    writer, stubber, _ = stubbed_writer()
    reject(stubber, [{"RecordIndex": i, "Reason": "outside retention"} for i in range(100)])
    with stubber:
        result = land_raw_batch(raw, raw_key="raw/k", writer=writer, concurrency=1)
    assert result.rejected == 100 and result.written == 0
    assert len(result.rejected_examples) == MAX_REJECTED_EXAMPLES


def test_throttling_is_retried_with_growing_backoff():
    writer, stubber, slept = stubbed_writer()
    for _ in range(3):
        stubber.add_client_error("write_records", service_error_code="ThrottlingException", http_status_code=429)
    stubber.add_response("write_records", {"RecordsIngested": {"Total": 3, "MemoryStore": 3, "MagneticStore": 0}})
    with stubber:
        result = land_raw_batch(raw_batch(3), raw_key="raw/k", writer=writer, concurrency=1)
        stubber.assert_no_pending_responses()
    assert result.throttle_retries == 3 and result.written == 3
    assert len(slept) == 3 and slept[0] < slept[2]


def test_throttling_beyond_the_retry_budget_fails_the_invocation():
    writer, stubber, slept = stubbed_writer(max_throttle_retries=2)
    for _ in range(3):
        stubber.add_client_error("write_records", service_error_code="ThrottlingException", http_status_code=429)
    with stubber, pytest.raises(ClientError, match="ThrottlingException"):
        land_raw_batch(raw_batch(3), raw_key="raw/k", writer=writer, concurrency=1)
    assert len(slept) == 2


def test_other_errors_are_not_retried():
    writer, stubber, slept = stubbed_writer()
    stubber.add_client_error("write_records", service_error_code="ValidationException", http_status_code=400)
    with stubber, pytest.raises(ClientError, match="ValidationException"):
        writer.write(timestream_records(raw_batch(1)))
    assert slept == []


def test_the_writer_refuses_requests_over_the_api_limit():
    writer, _, _ = stubbed_writer()
    with pytest.raises(ValueError, match="records=101"):
        writer.write(timestream_records(raw_batch(101)))


def test_backoff_grows_and_is_capped():
    delays = [throttle_delay_s(retry, jitter=lambda: 1.0) for retry in range(10)]
    assert delays == sorted(delays) and delays[0] == 0.5 and delays[-1] == 8.0
    assert throttle_delay_s(0, jitter=lambda: 0.0) == 0.25


def test_a_rejection_index_outside_the_request_is_an_error():
    class Confused:
        def write(self, records):
            return WriteOutcome(rejected=(RejectedRecord(index=len(records), reason="?"),))

    with pytest.raises(ValueError, match="RecordIndex=2"):
        land_raw_batch(raw_batch(2), raw_key="raw/k", writer=Confused())


# --- record values ----------------------------------------------------------------------------------


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_measure_values_read_back_as_the_same_float64(value):
    raw = RawBatch(
        thing_name="gw-1",
        line_id="line-1",
        seq_first=0,
        seq_last=0,
        received_at_ms=T0,
        samples=ColumnarSamples(metrics=["speed"], metric_index=[0], time_ms=[T0], values=[value]),
        seq=[0],
    )
    (record,) = timestream_records(raw)
    parsed = float(record["MeasureValue"])
    assert struct.pack("<d", parsed) == struct.pack("<d", value) and math.isfinite(parsed)
    assert record["Version"] == 1  # Timestream wants a Version of at least 1; seq 0 maps to 1
