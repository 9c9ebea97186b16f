"""Compaction's scheduled rounds list only the ingest hours still open; the day's first round sweeps all of
raw/, so an object landing in an hour already closed is compacted then, never lost nor compacted twice."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from edgeloop.cloud.datalake.curated import read_curated
from edgeloop.cloud.line_directory import StaticLineDirectory
from edgeloop.functions.compaction.checkpoint import (
    HOUR_CLOSES_AFTER,
    Checkpoint,
    last_closed_hour,
    read_checkpoint,
)
from edgeloop.functions.compaction.logic import compact
from edgeloop.functions.ingest.data_access import S3IngestStore
from edgeloop.functions.ingest.logic import ingest_event
from edgeloop.schemas import ColumnarSamples, IotRuleEvent, TelemetryBatch, encode_batch, load_use_case, names
from edgeloop.schemas.compat import UTC

BUCKET = "edgeloop-compaction-checkpoint-test"
USE_CASE = load_use_case("extrusion")
DAY_1 = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)


def land(seq: int, received: datetime) -> str:
    """One sample of gw-1 landed through ingest as received by the broker at `received`; its raw key."""
    received_ms = int(received.timestamp() * 1000)
    batch = TelemetryBatch(
        thing_name="gw-1",
        line_id="line-1",
        seq_first=seq,
        seq_last=seq,
        samples=ColumnarSamples(metrics=["speed"], metric_index=[0], time_ms=[received_ms - 5000], values=[float(seq)]),
    )
    event = IotRuleEvent.from_message(names.telemetry_topic("gw-1"), encode_batch(batch), received_ms)
    lines = StaticLineDirectory({"gw-1": "line-1"})
    result = ingest_event(event, use_case=USE_CASE, store=S3IngestStore(BUCKET), lines=lines, lateness_sla_days=3650)
    assert result.landed_samples == 1
    return result.raw_key


def curated_seqs() -> list[int]:
    return sorted(read_curated(BUCKET, "line-1")["seq"])


def test_an_hour_closes_two_hours_after_its_end():
    assert HOUR_CLOSES_AFTER == timedelta(hours=2)
    assert last_closed_hour(datetime(2026, 3, 2, 12, 59, tzinfo=UTC)) == datetime(2026, 3, 2, 9, tzinfo=UTC)
    assert last_closed_hour(datetime(2026, 3, 2, 13, 0, tzinfo=UTC)) == datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_scheduled_rounds_list_only_open_hours_and_the_daily_sweep_catches_late_objects(s3):
    old = [land(seq, DAY_1 - timedelta(hours=6 + seq)) for seq in range(5)]  # hours long closed
    first = compact(BUCKET, now=DAY_1)
    assert first.swept and first.raw_objects == 5 and curated_seqs() == [0, 1, 2, 3, 4]
    assert read_checkpoint(BUCKET) == Checkpoint(
        closed_through=datetime(2026, 3, 2, 7, tzinfo=UTC), swept_on=DAY_1.date()
    )

    open_key = land(10, DAY_1 - timedelta(minutes=20))  # the hour 10:00, still open
    late_key = land(11, DAY_1 - timedelta(hours=5))  # 05:xx: landed after its hour closed (a redrive)
    second = compact(BUCKET, now=DAY_1 + timedelta(minutes=15))
    assert not second.swept
    # listed: only the open hours' keys; the closed hours' five objects are not even looked at
    assert second.raw_objects == 1 and second.skipped_keys == []
    assert curated_seqs() == [0, 1, 2, 3, 4, 10]

    third = compact(BUCKET, now=DAY_1 + timedelta(minutes=30))
    assert third.raw_objects == 0 and third.skipped_keys == [open_key]  # marked: not compacted twice

    next_day = compact(BUCKET, now=DAY_1 + timedelta(days=1))
    assert next_day.swept and next_day.raw_objects == 1  # the late object, and nothing else again
    assert sorted(next_day.skipped_keys) == sorted([*old, open_key])
    assert curated_seqs() == [0, 1, 2, 3, 4, 10, 11]
    assert late_key not in next_day.skipped_keys
    assert read_checkpoint(BUCKET).closed_through == last_closed_hour(DAY_1 + timedelta(days=1))


def test_the_checkpoint_never_moves_back_and_a_round_without_now_lists_everything(s3):
    land(0, DAY_1 - timedelta(hours=3))
    compact(BUCKET, now=DAY_1)
    stored = read_checkpoint(BUCKET)
    compact(BUCKET, now=DAY_1 - timedelta(hours=5))  # a clock running behind
    assert read_checkpoint(BUCKET).closed_through == stored.closed_through
    land(1, DAY_1 - timedelta(hours=4))
    assert compact(BUCKET).raw_objects == 1  # no now: a full listing (tools, tests), checkpoint untouched
    assert read_checkpoint(BUCKET).closed_through == stored.closed_through


def test_explicit_raw_keys_skip_only_marked_ones(s3):
    first = land(0, DAY_1 - timedelta(hours=30))
    second = land(1, DAY_1 - timedelta(hours=30))
    assert compact(BUCKET, raw_keys=[first], now=DAY_1).raw_objects == 1
    again = compact(BUCKET, raw_keys=[first, second], now=DAY_1)
    assert again.skipped_keys == [first] and again.raw_objects == 1
    assert curated_seqs() == [0, 1]
    assert read_checkpoint(BUCKET) is None  # explicit keys do not move the checkpoint


def test_a_damaged_checkpoint_is_an_error_naming_the_key(s3):
    s3.put_object(Bucket=BUCKET, Key=names.COMPACTION_CHECKPOINT_KEY, Body=b'{"closed_through": "yesterday"}')
    with pytest.raises(ValueError, match="_state/compaction/checkpoint.json"):
        compact(BUCKET, now=DAY_1)
