"""Rollups: re-aggregation equals direct aggregation, mean/variance derive correctly, S3 layout."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloop.cloud.datalake.curated import CURATED_SCHEMA
from edgeloop.cloud.datalake.rollups import (
    LEVELS,
    RESOLUTIONS,
    build_levels,
    from_arrow,
    mean,
    reaggregate,
    rollup_samples,
    to_arrow,
    variance,
    variance_from_sums,
)
from edgeloop.functions.rollups import data_access
from edgeloop.functions.rollups.handler import lambda_handler, months_to_rebuild
from edgeloop.functions.rollups.logic import build_line_rollups, read_rollups
from edgeloop.schemas import names

MINUTE = 60_000
DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
BUCKET = "edgeloop-rollups-test"
EXACT = ["count", "sum", "min", "max", "sum2"]
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def samples_frame(metrics, times, values) -> pd.DataFrame:
    return pd.DataFrame(
        {"metric": metrics, "time_ms": np.asarray(times, np.int64), "value": np.asarray(values, np.float64)}
    )


@st.composite
def sample_sets(draw, *, dyadic=True, max_rows=250):
    """Random samples over a few days; dyadic values (k/16) make every float sum exact."""
    n = draw(st.integers(1, max_rows))
    metrics = draw(st.lists(st.sampled_from(["speed", "temp_die", "pressure"]), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(T0 - DAY, T0 + 3 * DAY), min_size=n, max_size=n))
    if dyadic:
        values = [k / 16 for k in draw(st.lists(st.integers(-(2**20), 2**20), min_size=n, max_size=n))]
    else:
        values = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
    return samples_frame(metrics, times, values)


def oracle(samples: pd.DataFrame, width: int) -> pd.DataFrame:
    """A plain pandas groupby, independent of the implementation under test."""
    keyed = samples.assign(bucket_start_ms=samples["time_ms"] // width * width, sq=samples["value"] ** 2)
    grouped = keyed.groupby(["metric", "bucket_start_ms"], sort=True)
    out = grouped["value"].agg(["count", "sum", "min", "max"]).join(grouped["sq"].sum().rename("sum2"))
    out["m2"] = grouped["value"].agg(lambda v: float(((v - v.mean()) ** 2).sum()))
    return out.reset_index()


def assert_rollups_equal(actual: pd.DataFrame, expected: pd.DataFrame, *, exact=EXACT, rtol=1e-9):
    assert list(actual["metric"].astype(str)) == list(expected["metric"].astype(str))
    np.testing.assert_array_equal(actual["bucket_start_ms"], expected["bucket_start_ms"])
    for column in exact:
        np.testing.assert_array_equal(actual[column].to_numpy(), expected[column].to_numpy(), err_msg=column)
    for column in {"count", "sum", "min", "max", "sum2", "m2"} - set(exact):
        scale = np.abs(expected[column].to_numpy()).max(initial=0.0)
        np.testing.assert_allclose(
            actual[column], expected[column], rtol=rtol, atol=rtol * scale + 1e-9, err_msg=column
        )


# --- properties -----------------------------------------------------------------------------------

WIDTH_FACTORS = [1, 2, 3, 4, 5, 6, 10, 12, 15, 30, 60]


@PROPERTY
@given(sample_sets(), st.sampled_from(WIDTH_FACTORS), st.sampled_from(WIDTH_FACTORS))
def test_reaggregating_a_finer_level_equals_aggregating_directly(samples, fine_minutes, factor):
    fine, coarse = fine_minutes * MINUTE, fine_minutes * factor * MINUTE
    rolled_up = reaggregate(rollup_samples(samples, fine), coarse, from_resolution=fine)
    direct = rollup_samples(samples, coarse)
    assert_rollups_equal(rolled_up, direct)  # exact: dyadic values make every sum exact
    assert_rollups_equal(direct, oracle(samples, coarse))


@PROPERTY
@given(sample_sets(), st.randoms(use_true_random=False), st.booleans())
def test_every_level_from_split_shuffled_parts_equals_direct(samples, random, overlap):
    """Parts in any order, by day or overlapping, give the levels direct aggregation gives."""
    if overlap:
        mask = np.array([random.random() < 0.5 for _ in range(len(samples))])
        parts = [samples[mask], samples[~mask]]
    else:
        parts = [day for _, day in samples.groupby(samples["time_ms"] // DAY)]
    random.shuffle(parts)
    levels = build_levels([pa.Table.from_pandas(p, preserve_index=False) for p in parts])
    assert list(levels) == list(LEVELS)
    for name, level in levels.items():
        assert_rollups_equal(level, rollup_samples(samples, name))


@PROPERTY
@given(sample_sets(dyadic=False), st.sampled_from(["5m", "1h", "1d"]))
def test_reaggregation_of_arbitrary_floats_is_within_rounding(samples, resolution):
    rolled_up = reaggregate(rollup_samples(samples, "1m"), resolution, from_resolution="1m")
    assert_rollups_equal(rolled_up, rollup_samples(samples, resolution), exact=["count", "min", "max"], rtol=1e-9)


@PROPERTY
@given(
    st.lists(st.integers(0, 3 * DAY), min_size=2, max_size=200),
    st.floats(-1e3, 1e3),
    st.floats(1e-2, 1e2),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["1m", "1h", "1d"]),
)
def test_mean_and_variance_derived_from_sums_match_numpy(offsets, level, spread, seed, resolution):
    values = level + spread * np.random.default_rng(seed).standard_normal(len(offsets))
    samples = samples_frame(["speed"] * len(offsets), np.asarray(offsets) + T0, values)
    rollups = build_levels([samples])[resolution]
    keyed = samples.assign(bucket=samples["time_ms"] // RESOLUTIONS[resolution])
    raw = [group["value"].to_numpy() for _, group in keyed.groupby("bucket", sort=True)]
    counts, sums, sums2 = rollups["count"].to_numpy(), rollups["sum"].to_numpy(), rollups["sum2"].to_numpy()
    eps = np.finfo(np.float64).eps
    for row, group in enumerate(raw):
        assert counts[row] == len(group)
        assert mean(rollups).iloc[row] == pytest.approx(np.mean(group), rel=1e-12, abs=1e-12 * abs(level))
        # (count, sum, sum2): error bounded by eps * n * mean(x²), the documented cancellation.
        bound = 8 * eps * len(group) * np.mean(group**2) + 1e-300
        assert abs(variance_from_sums(counts[row], sums[row], sums2[row]) - np.var(group)) <= bound
        assert variance(rollups).iloc[row] == pytest.approx(np.var(group), rel=1e-9, abs=1e-12)
        if len(group) > 1:
            assert variance(rollups, ddof=1).iloc[row] == pytest.approx(np.var(group, ddof=1), rel=1e-9, abs=1e-12)
            assert variance_from_sums(counts[row], sums[row], sums2[row], ddof=1) == pytest.approx(
                np.var(group, ddof=1), abs=2 * bound
            )


def test_m2_keeps_variance_exact_where_the_sum_of_squares_cancels():
    """Why rollups carry m2: at 1e8 ± 1e-3 the (sum, sum2) formula has no correct digit left."""
    values = 1e8 + 1e-3 * np.random.default_rng(7).standard_normal(3600)
    samples = samples_frame(["temp_die"] * 3600, T0 + 1000 * np.arange(3600), values)
    hour = build_levels([samples])["1h"]
    assert len(hour) == 1
    assert variance(hour).iloc[0] == pytest.approx(np.var(values), rel=1e-6)
    naive = variance_from_sums(hour["count"], hour["sum"], hour["sum2"])[0]
    assert abs(naive - np.var(values)) > 0.01 * np.var(values)


# --- input handling -------------------------------------------------------------------------------


def test_input_order_and_container_do_not_matter():
    rng = np.random.default_rng(3)
    n = 5000
    samples = samples_frame(rng.choice(["b", "a", "c"], n), T0 + rng.integers(0, 2 * DAY, n), rng.normal(size=n))
    expected = rollup_samples(samples.sort_values(["metric", "time_ms"]))
    as_category = samples.astype({"metric": pd.CategoricalDtype(["c", "b", "a"])})
    chunked = pa.concat_tables([pa.Table.from_pandas(samples[:2000]), pa.Table.from_pandas(samples[2000:])])
    for variant in (samples, as_category, chunked, pa.Table.from_pandas(as_category)):
        assert_rollups_equal(rollup_samples(variant), expected, rtol=1e-12, exact=["count", "min", "max"])
    assert list(expected["metric"].cat.categories) == ["a", "b", "c"]


def test_sparse_samples_far_apart_land_in_their_own_buckets():
    samples = samples_frame(["a", "a", "a"], [0, 5 * 365 * DAY + 59_999, 5 * 365 * DAY + 60_000], [1.0, 2.0, 4.0])
    rolled = rollup_samples(samples)
    assert list(rolled["bucket_start_ms"]) == [0, 5 * 365 * DAY, 5 * 365 * DAY + 60_000]
    assert list(rolled["count"]) == [1, 1, 1]


def test_bucket_edges_are_start_inclusive():
    samples = samples_frame(["a"] * 4, [T0 - 1, T0, T0 + 59_999, T0 + 60_000], [1.0, 2.0, 3.0, 4.0])
    rolled = rollup_samples(samples)
    assert list(rolled["bucket_start_ms"]) == [T0 - MINUTE, T0, T0 + MINUTE]
    assert list(rolled["sum"]) == [1.0, 5.0, 4.0]


def test_empty_input_gives_empty_levels():
    levels = build_levels([samples_frame([], [], [])])
    assert all(level.empty and list(level.columns)[:2] == ["metric", "bucket_start_ms"] for level in levels.values())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: rollup_samples(samples_frame(["a"], [T0], [np.nan])),
            r"value=nan of metric 'a' at time_ms=1767225600000",
        ),
        (lambda: rollup_samples(pd.DataFrame({"metric": ["a"], "value": [1.0]})), r"lack columns \['time_ms'\]"),
        (lambda: rollup_samples(samples_frame(["a"], [T0], [1.0]), "2m"), r"resolution='2m' is not one of"),
        (lambda: rollup_samples(samples_frame(["a"], [T0], [1.0]), 0), r"resolution=0 must be"),
        (
            lambda: reaggregate(
                rollup_samples(samples_frame(["a"], [T0], [1.0]), "5m"), 7 * MINUTE, from_resolution="5m"
            ),
            r"resolution=420000 \(420000 ms\) is not a multiple",
        ),
        (
            lambda: reaggregate(
                rollup_samples(samples_frame(["a"], [T0], [1.0]), "1m").assign(bucket_start_ms=T0 + 1),
                "5m",
                from_resolution="1m",
            ),
            r"bucket_start_ms=1767225600001 is not aligned",
        ),
        (
            lambda: rollup_samples(pd.DataFrame({"metric": ["a"], "time_ms": ["x"], "value": [1.0]})),
            r"column time_ms has dtype object",
        ),
    ],
)
def test_bad_input_names_the_field_and_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_arrow_round_trip_keeps_every_column():
    rolled = rollup_samples(samples_frame(["b", "a"], [T0, T0 + 1], [1.5, -2.0]))
    table = to_arrow(rolled)
    assert table.schema.field("metric").type == pa.dictionary(pa.int32(), pa.string())
    assert_rollups_equal(from_arrow(table), rolled, exact=EXACT + ["m2"])


# --- S3 layout and the handler --------------------------------------------------------------------


def put_curated(s3, line_id: str, day: str, samples: pd.DataFrame, *, part="part-0", seq_start=0) -> None:
    n = len(samples)
    rows = samples.assign(
        thing_name="gw-1", line_id=line_id, seq=np.arange(seq_start, seq_start + n), ingest_time_ms=T0
    )
    rows = rows.sort_values(["thing_name", "metric", "time_ms"])
    buffer = io.BytesIO()
    pq.write_table(
        pa.Table.from_pandas(rows[CURATED_SCHEMA.names], schema=CURATED_SCHEMA, preserve_index=False), buffer
    )
    key = f"{names.CURATED_PREFIX}/line={line_id}/event_date={day}/{part}.parquet"
    s3.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())


def day_of_samples(day_ms: int, seed: int, n=600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return samples_frame(rng.choice(["speed", "temp_die"], n), day_ms + rng.integers(0, DAY, n), rng.normal(100, 5, n))


def rollup_keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="rollups/").get("Contents", []))


def test_build_writes_one_object_per_resolution_and_month_matching_direct_rollups(s3):
    jan, feb = day_of_samples(T0 + 30 * DAY, 1), day_of_samples(T0 + 31 * DAY, 2)  # Jan 31, Feb 1
    put_curated(s3, "line-1", "2026-01-31", jan)
    put_curated(s3, "line-1", "2026-02-01", feb)
    result = build_line_rollups(BUCKET, "line-1")
    assert result.months == ["2026-01", "2026-02"] and result.samples == 1200
    assert rollup_keys(s3) == sorted(
        f"rollups/res={res}/line=line-1/month={month}/rollups.parquet" for res in LEVELS for month in result.months
    )
    everything = pd.concat([jan, feb], ignore_index=True)
    for resolution in LEVELS:
        stored = read_rollups(BUCKET, "line-1", resolution)
        assert_rollups_equal(stored, rollup_samples(everything, resolution), exact=["count", "min", "max"], rtol=1e-12)
        assert result.rows_written[resolution] == len(stored)
    assert len(read_rollups(BUCKET, "line-1", "1d", months=["2026-02"])) == 2  # two metrics, one day


def test_rebuilding_one_month_leaves_the_others_and_drops_months_without_data(s3):
    put_curated(s3, "line-1", "2026-01-31", day_of_samples(T0 + 30 * DAY, 1))
    put_curated(s3, "line-1", "2026-02-01", day_of_samples(T0 + 31 * DAY, 2))
    build_line_rollups(BUCKET, "line-1")
    feb_key = data_access.rollup_key("1m", "line-1", "2026-02")
    feb_before = s3.get_object(Bucket=BUCKET, Key=feb_key)["LastModified"]
    s3.delete_object(Bucket=BUCKET, Key="curated/line=line-1/event_date=2026-01-31/part-0.parquet")

    result = build_line_rollups(BUCKET, "line-1", months=["2026-01"])
    assert len(result.keys_deleted) == len(LEVELS)
    assert s3.get_object(Bucket=BUCKET, Key=feb_key)["LastModified"] == feb_before
    assert all("month=2026-02" in key for key in rollup_keys(s3))


def test_a_day_left_with_two_overlapping_parts_is_counted_once(s3):
    day = day_of_samples(T0, 5)
    put_curated(s3, "line-1", "2026-01-01", day, part="part-a")
    put_curated(s3, "line-1", "2026-01-01", day, part="part-b")  # same (thing, seq): a crash remnant
    build_line_rollups(BUCKET, "line-1")
    assert read_rollups(BUCKET, "line-1", "1d")["count"].sum() == len(day)


def test_handler_rebuilds_the_months_a_compaction_touched(s3):
    put_curated(s3, "line-1", "2026-01-01", day_of_samples(T0, 1))
    put_curated(s3, "line-2", "2026-01-01", day_of_samples(T0, 2))
    response = lambda_handler({"partitions": ["curated/line=line-1/event_date=2026-01-01/"]}, None)
    assert [(r["line_id"], r["months"], r["samples"]) for r in response["results"]] == [("line-1", ["2026-01"], 600)]
    assert all("line=line-1" in key for key in rollup_keys(s3))
    lambda_handler({"line_ids": ["line-2"]}, None)
    assert any("line=line-2" in key for key in rollup_keys(s3))


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({}, "exactly one of partitions or line_ids"),
        ({"partitions": ["curated/line=line-1/"]}, r"partition='curated/line=line-1/' is not"),
        ({"line_ids": ["Line 1"]}, r"line_ids=\['Line 1'\] must be"),
        ({"line_ids": [], "partitions": []}, "exactly one of"),
    ],
)
def test_handler_refuses_bad_events(event, message):
    with pytest.raises(ValueError, match=message):
        months_to_rebuild(event)


def test_months_to_rebuild_groups_partitions_by_line():
    event = {"partitions": [f"curated/line=line-1/event_date=2026-0{m}-0{d}/" for m in (1, 2) for d in (1, 2)]}
    assert months_to_rebuild(event) == {"line-1": ["2026-01", "2026-02"]}
    assert months_to_rebuild({"line_ids": ["line-1"]}) == {"line-1": None}


# --- compaction's on-success destination -----------------------------------------------------------


def compaction_result(partitions: list[str]) -> dict:
    """What functions/compaction/handler.py returns (the responsePayload of its destination)."""
    from dataclasses import asdict

    from edgeloop.functions.compaction.logic import CompactionResult

    result = CompactionResult(raw_objects=len(partitions), rows_written=10 * len(partitions), partitions=partitions)
    return {**asdict(result), "line_ids": result.line_ids}


def destination_envelope(response: dict, condition: str = "Success") -> dict:
    """The event Lambda hands an on-success destination function (response_only=False)."""
    return {
        "version": "1.0",
        "timestamp": "2026-01-02T00:15:00.000Z",
        "requestContext": {
            "requestId": "c0ffee00-0000-4000-8000-000000000000",
            "functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:compaction:$LATEST",
            "condition": condition,
            "approximateInvokeCount": 1,
        },
        "requestPayload": {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": response,
    }


def test_the_destination_envelope_of_a_compaction_run_rebuilds_the_months_it_rewrote(s3):
    put_curated(s3, "line-1", "2026-01-01", day_of_samples(T0, 1))
    put_curated(s3, "line-2", "2026-01-01", day_of_samples(T0, 2))
    result = compaction_result(["curated/line=line-2/event_date=2026-01-01/"])
    response = lambda_handler(destination_envelope(result), None)
    assert [(r["line_id"], r["months"], r["samples"]) for r in response["results"]] == [("line-2", ["2026-01"], 600)]
    assert rollup_keys(s3) and all("line=line-2" in key for key in rollup_keys(s3))


def test_a_bare_compaction_result_is_read_by_its_partitions_alone():
    # Its line_ids are derived from the partitions, so they must not widen the rebuild to whole lines.
    result = compaction_result(["curated/line=line-1/event_date=2026-02-03/"])
    assert months_to_rebuild(result) == {"line-1": ["2026-02"]}


def test_an_empty_compaction_run_rebuilds_nothing(s3):
    put_curated(s3, "line-1", "2026-01-01", day_of_samples(T0, 1))
    assert lambda_handler(destination_envelope(compaction_result([])), None) == {"results": []}
    assert months_to_rebuild(compaction_result([])) == {}
    assert rollup_keys(s3) == []


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (destination_envelope(compaction_result([]), condition="RetriesExhausted"), "condition='RetriesExhausted'"),
        (destination_envelope({"partitions": []}), "is not a compaction result"),
        (destination_envelope(None), "is not a compaction result"),
        (destination_envelope(compaction_result(["raw/x"])), r"partition='raw/x' is not"),
        ({"raw_objects": 1}, "has no partitions"),
    ],
)
def test_bad_destination_events_are_refused_naming_the_field(event, message):
    with pytest.raises(ValueError, match=message):
        months_to_rebuild(event)
