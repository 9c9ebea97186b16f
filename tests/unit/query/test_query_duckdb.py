"""Every named query on DuckDB over the mirrored bucket, checked against pandas on the sent samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgeloop.cloud.datalake.context import context_columns, join_context, sub_intervals
from edgeloop.cloud.datalake.rollups import RESOLUTIONS
from edgeloop.functions.rollups.logic import read_rollups
from edgeloop.query import DuckDbEngine, QueryParameterError, mirror_tables, queries
from edgeloop.query.tables import TABLES
from edgeloop.schemas import MetricRole, load_use_case, names

from .conftest import DAY_MS, HOURS, T0

END = T0 + HOURS * 3_600_000
STATS = ["count", "sum", "min", "max", "mean", "variance"]


@pytest.fixture(scope="module")
def dataset(data_bucket):
    return data_bucket[0]


@pytest.fixture(scope="module")
def engine(data_bucket, tmp_path_factory):
    dataset, _ = data_bucket
    engine, mirrored = DuckDbEngine.from_bucket(dataset.bucket, tmp_path_factory.mktemp("mirror"), threads=1)
    assert mirrored.downloaded and not mirrored.removed
    yield engine
    engine.close()


def on_time(dataset) -> pd.DataFrame:
    return dataset.samples[~dataset.samples["late"]]


def expected_stats(samples: pd.DataFrame, width_ms: int, keys=("metric",)) -> pd.DataFrame:
    """count, sum, min, max, mean, population variance per bucket, straight from samples."""
    frame = samples.assign(bucket_start_ms=samples["time_ms"] // width_ms * width_ms)
    grouped = frame.groupby([*keys, "bucket_start_ms"])["value"]
    stats = grouped.agg(["count", "sum", "min", "max", "mean"]).join(grouped.var(ddof=0).rename("variance"))
    return stats.reset_index()


def assert_stats_equal(actual: pd.DataFrame, expected: pd.DataFrame, keys) -> None:
    actual = actual.sort_values(list(keys)).reset_index(drop=True)
    expected = expected.sort_values(list(keys)).reset_index(drop=True)
    assert len(actual) == len(expected) > 0
    for key in keys:
        assert actual[key].tolist() == expected[key].tolist(), key
    assert actual["count"].tolist() == expected["count"].tolist()
    for column in ("sum", "min", "max", "mean", "variance"):
        np.testing.assert_allclose(
            actual[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-9, atol=1e-9, err_msg=column
        )


def test_views_have_the_table_columns_with_partition_keys_as_strings(engine):
    for table in TABLES.values():
        described = engine.execute(f'DESCRIBE "{table.name}"')
        expected = [
            (c.name, {"string": "VARCHAR", "bigint": "BIGINT", "double": "DOUBLE"}[c.type]) for c in table.columns
        ]
        expected += [(p.name, "VARCHAR") for p in table.partitions]
        assert list(zip(described["column_name"], described["column_type"], strict=True)) == expected


def test_metric_samples_equal_the_on_time_samples_sent(engine, dataset):
    start, end = T0 + 3_600_000, T0 + 3 * 3_600_000  # crosses midnight and the month boundary
    result = engine.run("metric_samples", line="line-us-1", metric="pressure", start_ms=start, end_ms=end)
    sent = on_time(dataset)
    expected = sent[
        (sent["line_id"] == "line-us-1")
        & (sent["metric"] == "pressure")
        & (sent["time_ms"] >= start)
        & (sent["time_ms"] < end)
    ]
    assert len(result) == len(expected) == 2 * 3600 // 10
    assert result["time_ms"].tolist() == expected["time_ms"].tolist()
    assert result["value"].tolist() == expected["value"].tolist()
    assert result["seq"].tolist() == expected["seq"].tolist()
    assert result["ingest_time_ms"].tolist() == expected["ingest_time_ms"].tolist()
    assert set(result["line_id"]) == {"line-us-1"}


@pytest.mark.parametrize("resolution", list(RESOLUTIONS))
def test_rollups_with_mean_and_variance_derived_in_sql_equal_pandas(engine, dataset, resolution):
    result = engine.run(
        "rollups", line="line-a", metric="pressure", resolution=resolution, start_ms=T0 - DAY_MS, end_ms=END
    )
    sent = on_time(dataset)
    expected = expected_stats(
        sent[(sent["line_id"] == "line-a") & (sent["metric"] == "pressure")], RESOLUTIONS[resolution]
    )
    assert_stats_equal(result, expected, ["metric", "bucket_start_ms"])
    # the 1d level spans two days and two months: both month partitions were read
    if resolution == "1d":
        assert result["bucket_start_ms"].tolist() == [T0 // DAY_MS * DAY_MS, T0 // DAY_MS * DAY_MS + DAY_MS]


def test_rollups_time_range_selects_bucket_starts(engine):
    start, end = T0 + 30 * 60_000, T0 + 40 * 60_000
    result = engine.run("rollups", line="line-a", metric="pressure", resolution="5m", start_ms=start, end_ms=end)
    assert result["bucket_start_ms"].tolist() == [start, start + 300_000]


def test_rollups_with_context_equal_join_context(engine, dataset):
    result = engine.run("rollups_with_context", line="line-a", metric="pressure", start_ms=T0, end_ms=END)
    rollups = read_rollups(dataset.bucket, "line-a", "1m")
    rollups = rollups[rollups["metric"] == "pressure"].reset_index(drop=True)
    expected = join_context(rollups, sub_intervals(dataset.intervals["line-a"], "line-a"), "1m")
    assert result["bucket_start_ms"].tolist() == expected["bucket_start_ms"].tolist()
    for column in context_columns():
        if column in ("spec_lower", "spec_upper"):
            np.testing.assert_array_equal(result[column].to_numpy(float), expected[column].to_numpy(float))
        else:
            actual = [None if pd.isna(v) else v for v in result[column]]
            wanted = [None if pd.isna(v) else v for v in expected[column].astype(object)]
            assert actual == wanted, column
    # the data really varies: rows outside every slice, two runs, and a spec only during run-1
    assert result["run_id"].isna().any() and {"run-1", "run-2"} <= set(result["run_id"].dropna())
    assert set(result.loc[result["run_id"] == "run-1", "spec_upper"]) == {2.1}
    np.testing.assert_allclose(result["variance"], expected["m2"] / expected["count"], rtol=1e-12)


def test_rollups_with_context_of_a_line_without_slices_has_null_context(engine):
    result = engine.run("rollups_with_context", line="line-us-1", metric="temp_die", start_ms=T0, end_ms=T0 + 600_000)
    assert len(result) == 10
    assert result[context_columns()].isna().all().all()


def _role_expected(dataset, use_case, role: str, width: int) -> pd.DataFrame:
    frames = []
    sent = on_time(dataset)
    for line in ("line-a", "line-us-1"):
        key = use_case.key_for_role(line, role)
        mapping = use_case.roles_for_line(line)[key]
        rows = sent[(sent["line_id"] == line) & (sent["metric"] == key)]
        frames.append(rows.assign(value=rows["value"] * mapping.scale + mapping.offset, line=line))
    return expected_stats(pd.concat(frames), width, keys=("line", "metric"))


@pytest.mark.parametrize("resolution", ["1m", "1h"])
def test_rollups_by_role_convert_units_across_lines(engine, dataset, resolution):
    use_case = load_use_case("extrusion")
    result = engine.run(
        "rollups_by_role",
        use_case="extrusion",
        role="die_temperature",
        lines="line-a,line-us-1",
        resolution=resolution,
        start_ms=T0,
        end_ms=END,
    )
    assert set(result["role"]) == {"die_temperature"} and set(result["unit"]) == {"degC"}
    assert_stats_equal(
        result,
        _role_expected(dataset, use_case, "die_temperature", RESOLUTIONS[resolution]),
        ["line", "bucket_start_ms"],
    )
    # line-us-1 sends °F: its converted mean is far below its raw mean
    raw = engine.run("rollups", line="line-us-1", metric="temp_die", resolution=resolution, start_ms=T0, end_ms=END)
    converted = result[result["line"] == "line-us-1"]
    np.testing.assert_allclose(converted["mean"].to_numpy(), (raw["mean"].to_numpy() - 32) * 5 / 9, rtol=1e-12)


def test_rollups_by_role_with_a_negative_scale_swaps_min_and_max(engine, dataset):
    base = load_use_case("extrusion")
    flipped = base.model_copy(
        update={
            "line_taxonomy": {
                "line-us-1": {"pressure": MetricRole(role="melt_pressure", unit="bar", scale=-2.0, offset=5.0)}
            }
        }
    )
    result = engine.run(
        "rollups_by_role",
        use_case=flipped,
        role="melt_pressure",
        lines=["line-us-1", "line-a"],
        resolution="5m",
        start_ms=T0,
        end_ms=END,
    )
    assert_stats_equal(
        result, _role_expected(dataset, flipped, "melt_pressure", RESOLUTIONS["5m"]), ["line", "bucket_start_ms"]
    )
    us = result[result["line"] == "line-us-1"]
    assert (us["min"] <= us["mean"]).all() and (us["mean"] <= us["max"]).all() and (us["min"] < us["max"]).all()


def test_late_rows_per_day_count_the_rows_beyond_the_sla(engine, dataset):
    result = engine.run(
        "late_rows_per_day", lines=["line-a", "line-us-1"], from_date="2026-01-01", to_date="2026-03-31"
    )
    late = dataset.samples[dataset.samples["late"]]
    ingest_dates = pd.to_datetime(late["ingest_time_ms"], unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    expected = late.assign(ingest_date=ingest_dates).groupby(["line_id", "ingest_date"]).size()
    assert len(result) > 0
    assert list(zip(result["line"], result["ingest_date"], result["late_rows"], strict=True)) == [
        (line, day, count) for (line, day), count in expected.items()
    ]
    delays = (late["ingest_time_ms"] - late["time_ms"]).groupby([late["line_id"], ingest_dates])
    assert result["min_delay_ms"].tolist() == delays.min().tolist()
    assert result["max_delay_ms"].tolist() == delays.max().tolist()
    assert (result["min_delay_ms"] > 14 * DAY_MS).all() and (result["things"] == 1).all()
    outside = engine.run("late_rows_per_day", lines="line-a", from_date="2026-01-01", to_date="2026-01-31")
    assert outside.empty


def test_every_named_query_is_exercised_here():
    exercised = {"metric_samples", "rollups", "rollups_with_context", "rollups_by_role", "late_rows_per_day"}
    assert set(queries()) == exercised


def test_bad_parameters_fail_before_reaching_duckdb(engine):
    with pytest.raises(QueryParameterError, match=r"line='line-a; DROP TABLE rollups'"):
        engine.run(
            "rollups", line="line-a; DROP TABLE rollups", metric="pressure", resolution="1m", start_ms=0, end_ms=1
        )
    with pytest.raises(QueryParameterError, match=r"role='die_temp'"):
        engine.run(
            "rollups_by_role",
            use_case="extrusion",
            role="die_temp",
            lines="line-a",
            resolution="1m",
            start_ms=0,
            end_ms=1,
        )


def test_mirror_copies_only_changes_and_removes_objects_gone_from_the_bucket(data_bucket, tmp_path):
    dataset, s3 = data_bucket
    first = mirror_tables(dataset.bucket, tmp_path)
    again = mirror_tables(dataset.bucket, tmp_path)
    assert first.downloaded and not again.downloaded and again.unchanged == len(first.downloaded)
    slices_key = f"{names.CONTEXT_SLICES_PREFIX}/line=line-a/slices.parquet"
    body = s3.get_object(Bucket=dataset.bucket, Key=slices_key)["Body"].read()
    s3.delete_object(Bucket=dataset.bucket, Key=slices_key)
    try:
        gone = mirror_tables(dataset.bucket, tmp_path, ["context_slices"])
        assert gone.removed == [slices_key] and not (tmp_path / slices_key).exists()
        with DuckDbEngine(tmp_path) as local:  # a table without files is an empty, typed view
            assert local.execute("SELECT count(*) AS n FROM context_slices")["n"].tolist() == [0]
    finally:
        s3.put_object(Bucket=dataset.bucket, Key=slices_key, Body=body)
    back = mirror_tables(dataset.bucket, tmp_path, ["context_slices"])
    assert back.downloaded == [slices_key]
    with pytest.raises(ValueError, match=r"tables \['packs'\]"):
        mirror_tables(dataset.bucket, tmp_path, ["packs"])
