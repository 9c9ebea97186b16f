"""Named queries parse on both dialects; parameters bind as safe literals; tables match the writers."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp
from typer.testing import CliRunner

from edgeloop.cloud.datalake.context import context_columns, quantize
from edgeloop.cloud.datalake.curated import CURATED_SCHEMA, late_partition_prefix, partition_prefix
from edgeloop.cloud.datalake.rollups import RESOLUTIONS, ROLLUP_SCHEMA
from edgeloop.functions.rollups import data_access as rollups_data_access
from edgeloop.query import QueryParameterError, UnknownQueryError, get_query, queries, render
from edgeloop.query.cli import parse_params, query_app
from edgeloop.query.named import parse_query, string_literal
from edgeloop.query.tables import CONTEXT_SLICES, CURATED_SAMPLES, LATE_SAMPLES, ROLLUPS, TABLES
from edgeloop.schemas import ContextKind, SubInterval

T0 = 1_769_896_800_000  # 2026-01-31 22:00 UTC
EXAMPLE_PARAMS = {
    "metric_samples": {"line": "line-a", "metric": "temp_die", "start_ms": T0, "end_ms": T0 + 3_600_000},
    "rollups": {"line": "line-a", "metric": "temp_die", "resolution": "5m", "start_ms": T0, "end_ms": T0 + 1},
    "rollups_with_context": {"line": "line-a", "metric": "temp_die", "start_ms": T0, "end_ms": T0 + 1},
    "rollups_by_role": {
        "use_case": "extrusion",
        "role": "die_temperature",
        "lines": "line-a,line-us-1",
        "resolution": "1h",
        "start_ms": T0,
        "end_ms": T0 + 1,
    },
    "late_rows_per_day": {"lines": ["line-a"], "from_date": "2026-01-01", "to_date": "2026-01-31"},
}
GLUE_TYPE_OF_ARROW = {pa.string(): "string", pa.large_string(): "string", pa.int64(): "bigint", pa.float64(): "double"}


def glue_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return GLUE_TYPE_OF_ARROW[arrow_type]


# --- the tables cannot drift from the writers ---------------------------------------------------


@pytest.mark.parametrize("table", [CURATED_SAMPLES, LATE_SAMPLES])
def test_sample_tables_equal_the_curated_schema(table):
    assert [(c.name, c.type) for c in table.columns] == [(f.name, glue_type(f.type)) for f in CURATED_SCHEMA]


def test_rollups_table_equals_the_rollup_schema_and_resolutions():
    assert [(c.name, c.type) for c in ROLLUPS.columns] == [(f.name, glue_type(f.type)) for f in ROLLUP_SCHEMA]
    assert ROLLUPS.partitions[0].projection["values"].split(",") == list(RESOLUTIONS)


def test_context_slices_table_equals_what_quantize_produces():
    start = pd.Timestamp(T0, unit="ms", tz="UTC").to_pydatetime()
    sub = SubInterval(
        line_id="line-a",
        start=start,
        end=start + pd.Timedelta(minutes=5).to_pytimedelta(),
        contexts={kind.value: {"interval_id": f"{kind.value}-1", "value": "v"} for kind in ContextKind},
        spec={"target_metric": "m", "lower": 1, "upper": 2},
    )
    frame = quantize([sub], "1m")
    assert CONTEXT_SLICES.column_names == list(frame.columns) == ["slice_start_ms", "slice_end_ms", *context_columns()]
    typed = pa.Table.from_pandas(frame, preserve_index=False).schema
    assert [(c.name, c.type) for c in CONTEXT_SLICES.columns] == [(f.name, glue_type(f.type)) for f in typed]


def test_partition_paths_match_the_writers_keys():
    assert CURATED_SAMPLES.location_template("s3://b").replace("${line}", "l1").replace(
        "${event_date}", "2026-01-31"
    ) == (f"s3://b/{partition_prefix('l1', '2026-01-31')}")
    assert LATE_SAMPLES.location_template("s3://b").replace("${line}", "l1").replace(
        "${ingest_date}", "2026-02-01"
    ) == (f"s3://b/{late_partition_prefix('l1', '2026-02-01')}")
    rollup_key = rollups_data_access.rollup_key("1h", "l1", "2026-01")
    template = (
        ROLLUPS.location_template("s3://b")
        .replace("${res}", "1h")
        .replace("${line}", "l1")
        .replace("${month}", "2026-01")
    )
    assert f"s3://b/{rollup_key}".startswith(template)
    assert CONTEXT_SLICES.location_template("s3://b") == "s3://b/context_slices/line=${line}/"


def test_every_table_pins_line_with_an_injected_projection():
    for table in TABLES.values():
        assert "line" in table.partition_names
        assert next(p for p in table.partitions if p.name == "line").projection == {"type": "injected"}


# --- one SQL text, two dialects -------------------------------------------------------------------


def test_example_parameters_cover_every_query():
    assert set(EXAMPLE_PARAMS) == set(queries())


@pytest.mark.parametrize("name", sorted(EXAMPLE_PARAMS))
@pytest.mark.parametrize("dialect", ["trino", "duckdb"])
def test_every_bound_query_parses_in_both_dialects(name, dialect):
    sql = render(name, **EXAMPLE_PARAMS[name])
    tree = sqlglot.parse_one(sql, read=dialect)
    assert isinstance(tree, exp.Query)
    assert not list(tree.find_all(exp.Placeholder)), "a placeholder survived binding"
    tables = {t.name for t in tree.find_all(exp.Table)} - {"taxonomy"}
    assert tables and tables <= set(TABLES)


@pytest.mark.parametrize("name", sorted(EXAMPLE_PARAMS))
def test_every_query_pins_the_injected_line_partition(name):
    """Athena refuses a query on an injected partition without a static equality on it."""
    tree = sqlglot.parse_one(render(name, **EXAMPLE_PARAMS[name]), read="trino")
    for select in tree.find_all(exp.Select):
        sources = [t for t in select.find_all(exp.Table) if t.name in TABLES and t.parent_select is select]
        for table in sources:
            where = select.args.get("where")
            alias = table.alias_or_name
            pinned = [
                c
                for c in (where.find_all(exp.Column) if where else [])
                if c.name == "line" and c.table in ("", alias) and isinstance(c.parent, (exp.EQ, exp.In))
            ]
            assert pinned, f"{name}: {table.name} is read without a static condition on line"


# --- binding --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "change", "message"),
    [
        ("rollups", {"line": "Line A"}, r"parameter line='Line A': is not a line id"),
        ("rollups", {"line": "a' OR '1'='1"}, r"parameter line=\"a' OR '1'='1\""),
        ("rollups", {"metric": "temp;die"}, r"parameter metric='temp;die': is not a metric name"),
        ("rollups", {"resolution": "2m"}, r"parameter resolution='2m': is not one of \['1m', '5m', '1h', '1d'\]"),
        ("rollups", {"start_ms": 1.5}, r"parameter start_ms=1.5: must be a whole number"),
        ("rollups", {"start_ms": True}, r"parameter start_ms=True"),
        ("rollups", {"start_ms": -1}, r"parameter start_ms=-1: is outside"),
        ("rollups", {"start_ms": T0 + 10}, r"start_ms=1769896800010 is after end_ms=1769896800001"),
        ("rollups", {"colour": "red"}, r"unknown parameter\(s\) \['colour'\] \(value\(s\) \['red'\]\)"),
        ("late_rows_per_day", {"from_date": "2026-02-30"}, r"parameter from_date='2026-02-30': is not a date"),
        ("late_rows_per_day", {"lines": "line-a,BAD"}, r"parameter lines='line-a,BAD': holds 'BAD'"),
        ("late_rows_per_day", {"lines": []}, r"parameter lines=\[\]: names no line"),
        ("rollups_by_role", {"use_case": "welding"}, r"parameter use_case='welding': use case 'welding'"),
        ("rollups_by_role", {"role": "die_temp"}, r"parameter role='die_temp' is not a role of use case 'extrusion'"),
    ],
)
def test_bad_parameters_name_the_parameter_and_the_value(query, change, message):
    with pytest.raises(QueryParameterError, match=message):
        render(query, **{**EXAMPLE_PARAMS[query], **change})


def test_missing_parameters_are_listed():
    with pytest.raises(QueryParameterError, match=r"missing parameter\(s\) \['metric', 'end_ms'\]"):
        render("metric_samples", line="line-a", start_ms=0)


def test_unknown_query_names_the_value_and_the_choices():
    with pytest.raises(UnknownQueryError, match=r"query name='drop_all' is not one of \['late_rows_per_day'"):
        get_query("drop_all")


def test_string_literals_double_quotes_and_refuse_control_characters():
    assert string_literal("it's") == "'it''s'"
    with pytest.raises(ValueError, match="control character"):
        string_literal("a\nb")


def test_placeholders_inside_strings_and_comments_are_left_alone():
    query = parse_query(
        "probe", "-- :line line_id\nSELECT ':line' AS text, \"x:line\" -- :line\nFROM t WHERE line = :line"
    )
    assert (
        query.render(line="a")
        == "-- :line line_id\nSELECT ':line' AS text, \"x:line\" -- :line\nFROM t WHERE line = 'a'"
    )


def test_query_files_must_declare_placeholders_and_use_parameters():
    with pytest.raises(ValueError, match=r"placeholders \['metric'\] are not declared"):
        parse_query("probe", "-- :line line_id\nSELECT 1 FROM t WHERE line = :line AND metric = :metric")
    with pytest.raises(ValueError, match=r"parameters \['metric'\] are declared but not used"):
        parse_query("probe", "-- :line line_id\n-- :metric metric\nSELECT 1 FROM t WHERE line = :line")


def test_time_parameters_derive_utc_partition_values():
    sql = render("rollups", **{**EXAMPLE_PARAMS["rollups"], "end_ms": T0 + 3 * 3_600_000})
    assert "\"month\" BETWEEN '2026-01' AND '2026-02'" in sql
    sql = render("metric_samples", **EXAMPLE_PARAMS["metric_samples"])
    assert "event_date BETWEEN '2026-01-31' AND '2026-01-31'" in sql


def test_taxonomy_values_carry_each_line_conversion():
    sql = render("rollups_by_role", **EXAMPLE_PARAMS["rollups_by_role"])
    assert (
        "('line-us-1', 'temp_die', 'die_temperature', 'degC', CAST(0.5555555555555556 AS DOUBLE), CAST(-17.77777777777778 AS DOUBLE))"
        in sql
    )
    assert "('line-a', 'temp_die', 'die_temperature', 'degC', CAST(1.0 AS DOUBLE), CAST(0.0 AS DOUBLE))" in sql
    assert "r.line IN ('line-a', 'line-us-1')" in sql


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_params_are_key_value_pairs():
    assert parse_params(["line=a", "lines=a,b"]) == {"line": "a", "lines": "a,b"}
    with pytest.raises(ValueError, match=r"--param 'line' is not key=value"):
        parse_params(["line"])
    with pytest.raises(ValueError, match=r"--param 'line' is given twice"):
        parse_params(["line=a", "line=b"])


def test_cli_prints_the_bound_sql_and_refuses_bad_parameters(tmp_path):
    runner = CliRunner()
    args = [
        "run",
        "rollups",
        "-p",
        "line=line-a",
        "-p",
        "metric=temp_die",
        "-p",
        "resolution=1h",
        "-p",
        f"start_ms={T0}",
        "-p",
        f"end_ms={T0 + 1}",
    ]
    shown = runner.invoke(query_app, [*args, "--sql"])
    assert shown.exit_code == 0, shown.output
    assert "res = '1h'" in shown.output
    bad = runner.invoke(query_app, [*args[:-2], "-p", "end_ms=soon", "--root", str(tmp_path)])
    assert bad.exit_code == 2 and "end_ms='soon'" in bad.output
    neither = runner.invoke(query_app, args)
    assert neither.exit_code == 2 and "--root DIR" in neither.output


def test_cli_runs_a_query_on_duckdb_and_prints_a_table(tmp_path):
    result = CliRunner().invoke(
        query_app,
        [
            "run",
            "late_rows_per_day",
            "-p",
            "lines=line-a",
            "-p",
            "from_date=2026-01-01",
            "-p",
            "to_date=2026-01-02",
            "--root",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "late_rows_per_day: 0 rows" in result.output
