"""The query layer's Glue tables, Athena workgroup and query-users policy (cdk/constructs/catalog.py).

Synthesized in a small stack (storage + catalog) with cdk-nag's AWS Solutions checks, so the
fixture itself fails on any unacknowledged finding; cfn-lint runs on its template too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeloop.query.tables import RESOLUTIONS, TABLES
from edgeloop.schemas import names

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from edgeloop.cdk.app import FEATURE_FLAGS
    from edgeloop.cdk.constructs.catalog import Catalog
    from edgeloop.cdk.constructs.storage import Storage

    app = cdk.App(context=FEATURE_FLAGS, outdir=str(tmp_path_factory.mktemp("cdk-out")))
    stack = cdk.Stack(app, "CatalogProbe")
    Catalog(stack, "Catalog", storage=Storage(stack, "Storage"))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return Template.from_stack(stack).to_json()  # raises on an unacknowledged cdk-nag finding


def of_type(template: dict, cfn_type: str) -> list[dict]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == cfn_type]


@pytest.fixture(scope="module")
def glue_tables(template) -> dict[str, dict]:
    return {t["TableInput"]["Name"]: t for t in of_type(template, "AWS::Glue::Table")}


def test_one_glue_table_per_table_definition_in_the_database(template, glue_tables):
    (database,) = of_type(template, "AWS::Glue::Database")
    assert database["DatabaseInput"]["Name"] == names.GLUE_DATABASE
    assert set(glue_tables) == set(TABLES)
    assert {t["DatabaseName"] for t in glue_tables.values()} == {names.GLUE_DATABASE}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_glue_columns_and_partition_keys_equal_the_tables_module(glue_tables, name):
    table_input = glue_tables[name]["TableInput"]
    descriptor = table_input["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in descriptor["Columns"]] == [(c.name, c.type) for c in TABLES[name].columns]
    assert [(p["Name"], p["Type"]) for p in table_input["PartitionKeys"]] == [
        (p.name, p.type) for p in TABLES[name].partitions
    ]
    assert (
        descriptor["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    )
    assert descriptor["InputFormat"].endswith("MapredParquetInputFormat")
    assert table_input["TableType"] == "EXTERNAL_TABLE"


def _sub_text(value) -> str:
    assert "Fn::Sub" in value, value
    text, variables = value["Fn::Sub"]
    assert set(variables) == {"DataBucket"}
    return text


@pytest.mark.parametrize("name", sorted(TABLES))
def test_partition_projection_needs_no_crawler(glue_tables, name):
    table = TABLES[name]
    parameters = glue_tables[name]["TableInput"]["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["classification"] == "parquet"
    segments = "".join(f"{p.name}=${{!{p.name}}}/" for p in table.partitions)  # ${!x}: literal ${x} after Fn::Sub
    assert _sub_text(parameters["storage.location.template"]) == f"s3://${{DataBucket}}/{table.prefix}/{segments}"
    assert _sub_text(glue_tables[name]["TableInput"]["StorageDescriptor"]["Location"]) == (
        f"s3://${{DataBucket}}/{table.prefix}/"
    )
    for partition in table.partitions:
        for setting, value in partition.projection.items():
            assert parameters[f"projection.{partition.name}.{setting}"] == value


def test_projection_types_fit_each_partition(glue_tables):
    rollups = glue_tables["rollups"]["TableInput"]["Parameters"]
    curated = glue_tables["curated_samples"]["TableInput"]["Parameters"]
    late = glue_tables["late_samples"]["TableInput"]["Parameters"]
    # line ids are unknown at deploy time: injected (queries pin lines with static equality)
    assert {t["TableInput"]["Parameters"]["projection.line.type"] for t in glue_tables.values()} == {"injected"}
    assert rollups["projection.res.type"] == "enum"
    assert rollups["projection.res.values"].split(",") == list(RESOLUTIONS)
    assert rollups["projection.month.type"] == "date" and rollups["projection.month.format"] == "yyyy-MM"
    assert rollups["projection.month.interval.unit"] == "MONTHS"
    for parameters, key in ((curated, "event_date"), (late, "ingest_date")):
        assert parameters[f"projection.{key}.type"] == "date"
        assert parameters[f"projection.{key}.format"] == "yyyy-MM-dd"
        assert parameters[f"projection.{key}.interval.unit"] == "DAYS"
        assert parameters[f"projection.{key}.range"].endswith(",NOW+1DAYS")


def test_workgroup_enforces_encrypted_results_and_a_scan_cutoff(template):
    (workgroup,) = of_type(template, "AWS::Athena::WorkGroup")
    assert workgroup["Name"] == names.ATHENA_WORKGROUP
    config = workgroup["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert 0 < config["BytesScannedCutoffPerQuery"] <= 100 * 1024**3
    assert config["EngineVersion"]["SelectedEngineVersion"] == "Athena engine version 3"
    result = config["ResultConfiguration"]
    assert result["EncryptionConfiguration"]["EncryptionOption"] == "SSE_S3"
    location = json.dumps(result["OutputLocation"])
    assert f"/{names.ATHENA_RESULTS_PREFIX}/" in location and "DataBucket" in location


def test_results_live_under_an_expiring_prefix_of_the_data_bucket(template):
    (data,) = [
        r["Properties"]
        for logical_id, r in template["Resources"].items()
        if r["Type"] == "AWS::S3::Bucket" and "DataBucket" in logical_id
    ]
    rules = {rule["Id"]: rule for rule in data["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-athena-results"]["Prefix"] == f"{names.ATHENA_RESULTS_PREFIX}/"
    assert rules["expire-athena-results"]["ExpirationInDays"] == 30
    assert len(of_type(template, "AWS::S3::Bucket")) == 3  # storage's buckets only: no extra results bucket


def test_query_users_policy_reads_only_the_table_prefixes(template):
    (policy,) = of_type(template, "AWS::IAM::ManagedPolicy")
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    read = statements["ReadTheTables"]
    assert read["Action"] == "s3:GetObject"
    prefixes = sorted(json.dumps(r) for r in read["Resource"])
    assert len(prefixes) == len({t.prefix for t in TABLES.values()})
    for table in TABLES.values():
        assert any(f"/{table.prefix}/*" in p for p in prefixes), table.prefix
    assert not any(names.RAW_PREFIX + "/" in p or names.QUARANTINE_PREFIX in p for p in prefixes)
    listing = statements["ListTablesAndResults"]
    assert sorted(listing["Condition"]["StringLike"]["s3:prefix"]) == sorted(
        [f"{t.prefix}/*" for t in TABLES.values()] + [f"{names.ATHENA_RESULTS_PREFIX}/*"]
    )
    assert f"{names.ATHENA_RESULTS_PREFIX}/*" in json.dumps(statements["WriteAndReadResults"]["Resource"])
    assert "athena:StartQueryExecution" in statements["RunQueriesInTheWorkgroup"]["Action"]
    assert f"workgroup/{names.ATHENA_WORKGROUP}" in json.dumps(statements["RunQueriesInTheWorkgroup"]["Resource"])
    glue_resources = json.dumps(statements["ReadTheCatalog"]["Resource"])
    for name in TABLES:
        assert f"table/{names.GLUE_DATABASE}/{name}" in glue_resources
    all_actions = [
        a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    ]
    assert not [a for a in all_actions if "*" in a or a.startswith(("s3:Delete", "glue:Create", "glue:Update"))]


def test_cfn_lint_finds_no_error_in_the_catalog_template(template, tmp_path):
    path = tmp_path / "catalog.template.json"
    path.write_text(json.dumps(template))
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    completed = subprocess.run(
        [str(cfn_lint), "--non-zero-exit-code", "error", str(path)], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
