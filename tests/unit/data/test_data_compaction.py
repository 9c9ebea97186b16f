"""Compaction: raw -> curated Parquet, de-duplicated by (thing, seq), incremental across runs."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeloop.cloud.datalake.curated import CURATED_SCHEMA, read_curated, read_late
from edgeloop.cloud.line_directory import StaticLineDirectory
from edgeloop.functions.compaction.logic import compact, delay_quantiles_s, marker_key
from edgeloop.functions.compaction.settings import Settings
from edgeloop.functions.ingest.data_access import S3IngestStore
from edgeloop.functions.ingest.logic import ingest_event
from edgeloop.schemas import ColumnarSamples, IotRuleEvent, TelemetryBatch, encode_batch, load_use_case, names

BUCKET = "edgeloop-compaction-test"
DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
USE_CASE = load_use_case("extrusion")


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
    # Ingest's SLA is set far above compaction's: rows landed under a looser SLA (or before it was
    # lowered) are what compaction's late/ path exists for.
    lines = StaticLineDirectory({thing: line})
    result = ingest_event(event, use_case=USE_CASE, store=S3IngestStore(BUCKET), lines=lines, lateness_sla_days=3650)
    assert result.landed_samples in (n, 0)
    return result.raw_key


def curated_keys(s3, prefix: str = "curated/") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


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


# --- lateness SLA and ingestion delay -------------------------------------------------------------


def test_a_row_beyond_the_sla_goes_to_late_and_is_counted_while_one_within_stays_curated(s3):
    received = T0 + 15 * DAY_MS + 1000
    # seq 0 is 15 days (+1 s) late, seq 1 exactly 14 days late (not beyond), seq 2 13 days late
    land(0, [T0 + 1000, T0 + DAY_MS + 1000, T0 + 2 * DAY_MS + 1000], received_at_ms=received)

    result = compact(BUCKET)

    assert result.rows_read == 3 and result.late_rows == 1 and result.rows_written == 2
    assert result.line_ids == ["line-1"]  # late rows reopen no curated partition
    (late_key,) = curated_keys(s3, "late/")
    assert late_key.startswith("late/line=line-1/ingest_date=2026-01-16/part-") and late_key.endswith(".parquet")
    assert result.late_partitions == ["late/line=line-1/ingest_date=2026-01-16/"]
    assert read_part(s3, late_key).schema.equals(CURATED_SCHEMA)
    assert list(read_late(BUCKET, "line-1")["seq"]) == [0]
    assert sorted(read_curated(BUCKET, "line-1")["seq"]) == [1, 2]
    assert [k.rsplit("/", 1)[0] for k in curated_keys(s3)] == [
        "curated/line=line-1/event_date=2026-01-02",
        "curated/line=line-1/event_date=2026-01-03",
    ]


def test_late_rows_are_deduplicated_and_a_rerun_changes_nothing(s3):
    times = [T0 + 1000, T0 + 2000]
    land(0, times, received_at_ms=T0 + 20 * DAY_MS)
    assert compact(BUCKET).late_rows == 2
    before = curated_keys(s3, "late/")

    rerun = compact(BUCKET)
    assert rerun.raw_objects == 0 and rerun.late_rows == 0 and curated_keys(s3, "late/") == before

    land(0, times, received_at_ms=T0 + 20 * DAY_MS + 3_600_000)  # the same batch re-sent an hour later
    resent = compact(BUCKET)

    assert resent.raw_objects == 1 and resent.late_rows == 0 and resent.duplicates_dropped == 2
    late = read_late(BUCKET, "line-1")
    assert sorted(late["seq"]) == [0, 1] and set(late["ingest_time_ms"]) == {T0 + 20 * DAY_MS}
    assert len(curated_keys(s3, "late/")) == 1 and curated_keys(s3) == []


def test_the_sla_is_a_parameter(s3):
    land(0, [T0 + 1000], received_at_ms=T0 + 2 * DAY_MS + 1000)
    assert compact(BUCKET, lateness_sla_days=1).late_rows == 1
    with pytest.raises(ValueError, match="lateness_sla_days=0"):
        compact(BUCKET, lateness_sla_days=0)


def test_delay_quantiles_over_known_delays(s3):
    received = T0 + DAY_MS
    land(0, [received - k * 1000 for k in range(1, 101)], received_at_ms=received)  # delays 1..100 s

    quantiles = compact(BUCKET).delay_quantiles_s

    assert quantiles == pytest.approx({"p50": 50.5, "p90": 90.1, "p99": 99.01, "max": 100.0})
    assert delay_quantiles_s([]) == {}
    assert delay_quantiles_s([3000, 1000, 2000]) == pytest.approx({"p50": 2.0, "p90": 2.8, "p99": 2.98, "max": 3.0})


def test_settings_read_the_sla_from_the_environment():
    base = {names.DATA_BUCKET_ENV: BUCKET, names.USE_CASE_ENV: "extrusion"}
    assert Settings.from_env(base).lateness_sla_days == 14
    assert Settings.from_env({**base, names.LATENESS_SLA_DAYS_ENV: "30"}).lateness_sla_days == 30
    with pytest.raises(ValueError, match=f"{names.LATENESS_SLA_DAYS_ENV}='soon'"):
        Settings.from_env({**base, names.LATENESS_SLA_DAYS_ENV: "soon"})
    with pytest.raises(ValueError, match=f"{names.LATENESS_SLA_DAYS_ENV}='0'"):
        Settings.from_env({**base, names.LATENESS_SLA_DAYS_ENV: "0"})


def emitted_metrics(stdout: str) -> list[dict[str, tuple[float, str]]]:
    """Each EMF document powertools printed, as metric name -> (value, unit)."""
    documents = [json.loads(line) for line in stdout.splitlines() if '"_aws"' in line]
    return [
        {m["Name"]: (_single(doc[m["Name"]]), m["Unit"]) for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
        for doc in documents
    ]


def _single(value):
    """EMF may print one value as a list of one; each metric here is added once per invocation."""
    if isinstance(value, list):
        (value,) = value
    return value


def test_handler_publishes_late_rows_and_the_ingestion_delay_distribution(s3, capsys):
    from edgeloop.functions.compaction import handler

    handler._settings.cache_clear()
    received = T0 + 15 * DAY_MS
    land(0, [received - 15 * DAY_MS - 1000, received - 2000, received - 4000], received_at_ms=received)

    output = handler.lambda_handler({}, None)

    assert output["late_rows"] == 1 and output["delay_quantiles_s"]["max"] == 15 * 86_400 + 1
    (emitted,) = emitted_metrics(capsys.readouterr().out)
    assert emitted["LateRows"] == (1, "Count")
    assert emitted["CuratedRowsWritten"] == (2, "Count")
    assert emitted["IngestionDelayP50Seconds"] == (4.0, "Seconds")
    assert emitted["IngestionDelayMaxSeconds"] == (15 * 86_400 + 1, "Seconds")
    assert emitted["IngestionDelayP90Seconds"][1] == emitted["IngestionDelayP99Seconds"][1] == "Seconds"
    assert 4.0 < emitted["IngestionDelayP90Seconds"][0] < emitted["IngestionDelayP99Seconds"][0] < 15 * 86_400 + 1


def test_handler_takes_the_sla_from_its_environment(s3, capsys, monkeypatch):
    from edgeloop.functions.compaction import handler

    monkeypatch.setenv(names.LATENESS_SLA_DAYS_ENV, "20")
    handler._settings.cache_clear()
    land(0, [T0 + 1000], received_at_ms=T0 + 15 * DAY_MS)
    try:
        output = handler.lambda_handler({}, None)
    finally:
        handler._settings.cache_clear()  # later tests must not inherit this SLA

    assert output["late_rows"] == 0 and output["rows_written"] == 1
    (emitted,) = emitted_metrics(capsys.readouterr().out)
    assert emitted["LateRows"] == (0, "Count")
