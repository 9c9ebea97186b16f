"""Compaction: raw -> curated Parquet, de-duplicated by (thing, seq), incremental across runs."""

from __future__ import annotations

import io

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from edgeloop.functions.compaction.logic import CURATED_SCHEMA, compact, marker_key, read_curated
from edgeloop.functions.ingest.data_access import S3IngestStore
from edgeloop.functions.ingest.logic import ingest_event
from edgeloop.schemas import ColumnarSamples, IotRuleEvent, TelemetryBatch, encode_batch, load_use_case, names

BUCKET = "edgeloop-compaction-test"
DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
USE_CASE = load_use_case("extrusion")


@pytest.fixture()
def s3(monkeypatch):
    monkeypatch.setenv(names.DATA_BUCKET_ENV, BUCKET)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def land(seq_first: int, times_ms: list[int], *, thing="gw-1", line="line-1", received_at_ms=None, metric="speed"):
    """Land a batch through the real ingest path; returns its raw key."""
    n = len(times_ms)
    batch = TelemetryBatch(
        thing_name=thing,
        line_id=line,
        seq_first=seq_first,
        seq_last=seq_first + n - 1,
        samples=ColumnarSamples(
            metrics=[metric, "temp_die"],
            metric_index=[i % 2 for i in range(n)],
            time_ms=times_ms,
            values=[float(seq_first + i) for i in range(n)],
        ),
    )
    received = received_at_ms if received_at_ms is not None else max(times_ms) + 1000
    event = IotRuleEvent.from_message(names.telemetry_topic(thing), encode_batch(batch), received)
    result = ingest_event(event, use_case=USE_CASE, store=S3IngestStore(BUCKET))
    assert result.landed_samples in (n, 0)
    return result.raw_key


def curated_keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="curated/").get("Contents", []))


def read_part(s3, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))


def test_compaction_writes_sorted_typed_partitions_by_line_and_event_date(s3):
    land(0, [T0 + 5000, T0 + 1000, T0 + 3000, T0 + 2000])
    land(10, [T0 + DAY_MS + 1000, T0 + DAY_MS + 2000], thing="gw-2", line="line-2", received_at_ms=T0 + DAY_MS + 5000)

    result = compact(BUCKET)

    assert result.raw_objects == 2 and result.rows_read == 6 and result.rows_written == 6
    assert result.line_ids == ["line-1", "line-2"]
    keys = curated_keys(s3)
    assert [k.rsplit("/", 1)[0] for k in keys] == [
        "curated/line=line-1/event_date=2026-01-01",
        "curated/line=line-2/event_date=2026-01-02",
    ]
    assert all(k.rsplit("/", 1)[1].startswith("part-") and k.endswith(".parquet") for k in keys)
    table = read_part(s3, keys[0])
    assert table.schema.equals(CURATED_SCHEMA)
    rows = table.to_pylist()
    # batch order: seq 0 speed@5s, 1 temp_die@1s, 2 speed@3s, 3 temp_die@2s
    assert [(r["metric"], r["time_ms"] - T0, r["seq"]) for r in rows] == [
        ("speed", 3000, 2),
        ("speed", 5000, 0),
        ("temp_die", 1000, 1),
        ("temp_die", 2000, 3),
    ]
    assert {r["ingest_time_ms"] for r in rows} == {T0 + 6000}


def test_duplicates_are_dropped_within_a_run_and_against_existing_partition(s3):
    times = [T0 + 1000 * i for i in range(1, 5)]
    first = land(0, times, received_at_ms=T0 + 10_000)
    land(0, times, received_at_ms=T0 + 10_000 + 3_600_000)  # re-sent an hour later: another raw key
    first_result = compact(BUCKET)
    assert first_result.rows_read == 8 and first_result.rows_written == 4 and first_result.duplicates_dropped == 4

    land(2, times[2:], received_at_ms=T0 + 3 * 3_600_000)  # an overlapping re-send after compaction
    land(4, [T0 + 6000], received_at_ms=T0 + 3 * 3_600_000)
    second = compact(BUCKET)

    assert second.raw_objects == 2 and second.duplicates_dropped == 2
    assert first in second.skipped_keys
    curated = read_curated(BUCKET, "line-1")
    assert sorted(curated["seq"]) == [0, 1, 2, 3, 4]
    # the earliest ingested copy wins
    assert set(curated.loc[curated["seq"] < 4, "ingest_time_ms"]) == {T0 + 10_000}
    assert len(curated_keys(s3)) == 1  # the partition was rewritten, its old part deleted


def test_rerun_without_new_raw_objects_changes_nothing(s3):
    raw_key = land(0, [T0 + 1000, T0 + 2000])
    compact(BUCKET)
    before = curated_keys(s3)

    again = compact(BUCKET)

    assert again.raw_objects == 0 and again.partitions == [] and again.skipped_keys == [raw_key]
    assert curated_keys(s3) == before
    assert s3.head_object(Bucket=BUCKET, Key=marker_key(raw_key))["ContentLength"] == 0


def test_explicit_raw_keys_compact_only_those(s3):
    kept = land(0, [T0 + 1000, T0 + 2000])
    later = land(2, [T0 + 3000, T0 + 4000])

    result = compact(BUCKET, raw_keys=[kept])

    assert result.raw_objects == 1
    assert sorted(read_curated(BUCKET, "line-1")["seq"]) == [0, 1]
    assert compact(BUCKET).raw_objects == 1  # the other one is still new
    assert sorted(read_curated(BUCKET, "line-1")["seq"]) == [0, 1, 2, 3]
    assert compact(BUCKET, raw_keys=[kept, later]).skipped_keys == [kept, later]


def test_read_curated_dedupes_parts_left_by_an_interrupted_merge(s3):
    land(0, [T0 + 1000, T0 + 2000])
    compact(BUCKET)
    (key,) = curated_keys(s3)
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key.replace("part-", "part-copy-"), Body=body)

    assert len(read_curated(BUCKET, "line-1")) == 2


def test_read_curated_of_an_unknown_line_is_empty_with_columns(s3):
    frame = read_curated(BUCKET, "line-none")
    assert frame.empty and list(frame.columns) == CURATED_SCHEMA.names


def test_compaction_handler_compacts_everything_new(s3):
    from edgeloop.functions.compaction import handler

    handler._settings.cache_clear()
    land(0, [T0 + 1000, T0 + 2000])
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}

    first = handler.lambda_handler(scheduled, None)
    second = handler.lambda_handler(scheduled, None)

    assert first["raw_objects"] == 1 and first["line_ids"] == ["line-1"]
    assert second["raw_objects"] == 0


def test_compaction_handler_refuses_bad_raw_keys(s3):
    from edgeloop.functions.compaction import handler

    handler._settings.cache_clear()
    with pytest.raises(ValueError, match="raw_keys='raw/x'"):
        handler.lambda_handler({"raw_keys": "raw/x"}, None)


def test_keys_outside_raw_are_refused(s3):
    with pytest.raises(ValueError, match="curated/x.parquet"):
        compact(BUCKET, raw_keys=["curated/x.parquet"])
