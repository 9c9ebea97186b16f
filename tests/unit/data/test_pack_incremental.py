"""The metric packer packs only runs that changed, reading only their curated days, and what it stores is
exactly what packing every run from scratch gives: rows, order, counts, and the review queue's input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from tiny_use_case import TARGET, TINY_USE_CASE

from edgeloop.cloud.datalake import curated as curated_store
from edgeloop.cloud.datalake.context import put_context_intervals
from edgeloop.cloud.datalake.curated import merge_partition, partition_prefix, read_curated
from edgeloop.cloud.datalake.packs import examples_key, get_examples, put_examples, read_packs, unlabeled_key
from edgeloop.cloud.packing import incremental
from edgeloop.cloud.packing.examples import assemble_examples, build_line_examples_with_stats
from edgeloop.schemas import ContextInterval, ContextKind, SpecLimits

BUCKET = "edgeloop-pack-incremental-test"
LINE = "line-1"
DAY_2 = datetime(2026, 1, 2, tzinfo=UTC)  # runs straddle midnight: one run, two event dates
USE_CASE = TINY_USE_CASE.model_copy(update={"productive_states": ["running"]})


def at(seconds: int) -> datetime:
    return DAY_2 + timedelta(seconds=seconds)


def interval(kind: ContextKind, interval_id: str, start_s: int, end_s: int, value: str, limits=None) -> ContextInterval:
    spec = SpecLimits(target_metric=TARGET, lower=limits[0], upper=limits[1]) if limits else None
    return ContextInterval(
        kind=kind, interval_id=interval_id, line_id=LINE, start=at(start_s), end=at(end_s), value=value, spec=spec
    )


def land(start_s: int, end_s: int, *, seq0: int, level: float = 2.0, only_gaps: bool = False) -> None:
    """Curated rows at 1 Hz for [start_s, end_s); the target misses 6 s of every 40 (too sparse labels),
    or, `only_gaps`, the target in just those seconds (a late gateway filling them)."""
    rows = []
    for k in range(start_s, end_s):
        values = {"speed": float(k % 17), "temp_die": 200.0 + (k % 5), TARGET: level + 0.01 * (k % 23)}
        for m, (metric, value) in enumerate(values.items()):
            if (metric == TARGET and k % 40 < 6) != only_gaps:
                continue
            rows.append(("gw-1", LINE, metric, int(at(k).timestamp() * 1000), value, seq0 + 3 * k + m, 0))
    frame = pd.DataFrame(rows, columns=curated_store.CURATED_SCHEMA.names)
    days = pd.to_datetime(frame["time_ms"], unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    for day, group in frame.groupby(days):
        merge_partition(BUCKET, partition_prefix(LINE, day), group)


def from_scratch(intervals: list[ContextInterval]):
    return assemble_examples(read_curated(BUCKET, LINE), intervals, USE_CASE)


def assert_same(incremental, full) -> None:
    pd.testing.assert_frame_equal(incremental.examples, full.examples, check_dtype=False)
    pd.testing.assert_frame_equal(incremental.unlabeled, full.unlabeled, check_dtype=False)
    assert vars(incremental.stats) == vars(full.stats)
    pd.testing.assert_frame_equal(get_examples(BUCKET, LINE), full.examples, check_dtype=False)


def test_incremental_rounds_store_exactly_a_full_build_and_read_only_changed_runs_days(s3, monkeypatch):
    read_keys: list[str] = []
    get_bytes = curated_store.s3.get_bytes
    monkeypatch.setattr(
        curated_store.s3, "get_bytes", lambda bucket, key: read_keys.append(key) or get_bytes(bucket, key)
    )
    first_day = [
        interval(ContextKind.RUN, "r1", -90000, -88800, "cable-a", (1.9, 2.15)),  # Dec 31, 23:00-23:20
        interval(ContextKind.STATE, "s1", -90000, 600, "running"),
    ]
    land(-90000, -88800, seq0=300_000)
    put_context_intervals(BUCKET, LINE, first_day)
    one = build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    assert one.runs_packed == 1 and len(one.examples) > 100 and len(one.unlabeled) > 10
    assert_same(one, from_scratch(first_day))

    # round 2: a run across midnight lands; r1's day is untouched, so it is not read again (a run
    # whose day's partition changed is re-packed, even for rows outside it: partitions are the unit)
    second_context = [*first_day, interval(ContextKind.RUN, "r2", -600, 600, "cable-b", (1.9, 2.2))]
    land(-600, 600, seq0=100_000, level=2.05)
    put_context_intervals(BUCKET, LINE, second_context)
    read_keys.clear()
    two = build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    days_read = {k.split("/")[2] for k in read_keys if k.startswith("curated/")}
    assert days_read == {"event_date=2026-01-01", "event_date=2026-01-02"}
    assert two.runs_packed == 1
    assert_same(two, from_scratch(second_context))

    # round 3: nothing changed: nothing packed, no curated object read, nothing rewritten
    read_keys.clear()
    with monkeypatch.context() as quiet:
        quiet.setattr(incremental, "write_packs", lambda *args, **kwargs: pytest.fail(f"rewrote {args[1]}"))
        three = build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    assert not [k for k in read_keys if k.startswith("curated/")]
    assert three.runs_packed == 0
    assert_same(three, from_scratch(second_context))

    # round 4: a limits interval and a stop inside r2, r1 withdrawn from the context, late data on day 2
    fourth_context = [
        second_context[1],
        second_context[2],
        interval(ContextKind.LIMITS, "l1", 0, 300, "tight", (2.0, 2.1)),
        interval(ContextKind.STATE, "s2", 200, 260, "stopped"),
    ]
    put_context_intervals(BUCKET, LINE, fourth_context)
    land(100, 160, seq0=100_000, level=3.0)  # re-sent copies: de-duplicated, the partition rewritten
    four = build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    assert four.runs_packed == 1 and set(four.examples["run_id"]) == {"r2"}
    assert_same(four, from_scratch(fourth_context))
    assert four.stats.excluded_non_productive > 0

    # round 5: only data changes (the target's gaps filled late): the run is packed again
    land(-600, 600, seq0=500_000, level=2.05, only_gaps=True)
    five = build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    assert five.runs_packed == 1 and len(five.unlabeled) < len(four.unlabeled)
    assert_same(five, from_scratch(fourth_context))


def test_a_use_case_change_repacks_every_run_and_both_files_record_the_runs(s3):
    context = [interval(ContextKind.RUN, "r1", 0, 900, "cable-a", (1.9, 2.15))]
    land(0, 900, seq0=0)
    put_context_intervals(BUCKET, LINE, context)
    build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    stored, unlabeled = read_packs(BUCKET, examples_key(LINE)), read_packs(BUCKET, unlabeled_key(LINE))
    assert set(stored.runs) == set(unlabeled.runs) == {"r1"}
    assert stored.runs["r1"]["signature"] == unlabeled.runs["r1"]["signature"]

    wider = USE_CASE.model_copy(update={"example_stride_s": 10})
    again = build_line_examples_with_stats(BUCKET, LINE, wider)
    assert again.runs_packed == 1
    full = assemble_examples(read_curated(BUCKET, LINE), context, wider)
    pd.testing.assert_frame_equal(again.examples, full.examples, check_dtype=False)
    assert np.all(np.diff(again.examples["window_start"].to_numpy()) == np.timedelta64(10, "s"))


def test_a_packer_that_lost_the_race_packs_again_from_what_the_winner_wrote(s3, monkeypatch):
    context = [interval(ContextKind.RUN, "r1", 0, 600, "cable-a", (1.9, 2.15))]
    land(0, 600, seq0=0)
    put_context_intervals(BUCKET, LINE, context)
    real_write = incremental.write_packs
    raced = []

    def write_after_a_rival(bucket, key, frame, runs, **kwargs):
        if kwargs.get("conditional") and not raced:
            raced.append(key)
            real_write(bucket, key, frame.iloc[:0], {}, conditional=False)  # a rival's write in between
        return real_write(bucket, key, frame, runs, **kwargs)

    monkeypatch.setattr(incremental, "write_packs", write_after_a_rival)
    build = build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    assert raced == [examples_key(LINE)]
    pd.testing.assert_frame_equal(get_examples(BUCKET, LINE), from_scratch(context).examples, check_dtype=False)
    assert build.runs_packed == 1


def test_examples_written_before_incremental_packing_are_repacked_whole(s3):
    context = [interval(ContextKind.RUN, "r1", 0, 600, "cable-a", (1.9, 2.15))]
    land(0, 600, seq0=0)
    put_context_intervals(BUCKET, LINE, context)
    full = from_scratch(context)
    put_examples(BUCKET, LINE, full.examples.iloc[:3])  # an old file: no runs recorded, and stale
    build = build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    assert build.runs_packed == 1
    assert_same(build, full)
