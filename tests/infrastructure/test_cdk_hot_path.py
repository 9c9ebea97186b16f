"""The optional Timestream hot path (edgeloop:enableTimestream): built with the flag, absent without.

With the flag on, the whole app is synthesized with cdk-nag's AWS Solutions checks (an
unacknowledged finding makes Template.from_stack raise), its validation report must show no
violations, and cfn-lint must find no errors in the template.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeloop.cdk.constructs.config import (
    DEFAULT_TIMESTREAM_MAGNETIC_RETENTION_DAYS,
    DEFAULT_TIMESTREAM_MEMORY_RETENTION_HOURS,
    ENABLE_TIMESTREAM_KEY,
    TIMESTREAM_MAGNETIC_RETENTION_KEY,
    TIMESTREAM_MEMORY_RETENTION_KEY,
    ConfigError,
    StackConfig,
)
from edgeloop.schemas import names

pytestmark = pytest.mark.slow

HOT_PATH_HANDLER = names.FUNCTIONS["hot_path"]
RETENTION_CONTEXT = {TIMESTREAM_MEMORY_RETENTION_KEY: "48", TIMESTREAM_MAGNETIC_RETENTION_KEY: 30}


def synthesize(tmp_path_factory, context: dict) -> tuple[object, dict, Path]:
    from aws_cdk.assertions import Template

    from edgeloop.cdk.app import build_app

    outdir = tmp_path_factory.mktemp("cdk-out")
    app, stack = build_app(context=context, outdir=str(outdir), staging_dir=tmp_path_factory.mktemp("lambda-staging"))
    template = Template.from_stack(stack)  # runs cdk-nag; raises on an unacknowledged finding
    return stack, template.to_json(), outdir


@pytest.fixture(scope="module")
def enabled(tmp_path_factory):
    # CLI context arrives as strings, cdk.json context as JSON values: both forms are used here.
    return synthesize(tmp_path_factory, {ENABLE_TIMESTREAM_KEY: "true", **RETENTION_CONTEXT})


@pytest.fixture(scope="module")
def resources(enabled):
    return enabled[1]["Resources"]


def of_type(resources: dict, cfn_type: str) -> dict:
    return {logical_id: r for logical_id, r in resources.items() if r["Type"] == cfn_type}


def flat(value) -> str:
    return json.dumps(value)


@pytest.fixture(scope="module")
def hot_path_function(resources) -> tuple[str, dict]:
    (found,) = [
        (logical_id, r["Properties"])
        for logical_id, r in of_type(resources, "AWS::Lambda::Function").items()
        if r["Properties"]["Handler"] == HOT_PATH_HANDLER
    ]
    return found


def granted(resources: dict, role_id: str) -> dict[str, list[str]]:
    """action -> resources (as JSON text) over every policy attached to the role."""
    mapping: dict[str, list[str]] = {}
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        props = policy["Properties"]
        if {"Ref": role_id} not in props["Roles"]:
            continue
        for statement in props["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for action in actions:
                mapping.setdefault(action, []).extend(flat(t) for t in targets)
    return mapping


# --- flag on --------------------------------------------------------------------------------------


def test_enabled_stack_has_no_unacknowledged_findings_and_every_reason_says_something(enabled):
    report = json.loads((enabled[2] / "validation-report.json").read_text())
    plugins = {p["pluginName"]: p for p in report["pluginReports"]}
    nag = plugins["AwsSolutions"]
    assert nag["conclusion"] == "success" and nag["violations"] == []
    assert all(p["violations"] == [] for p in plugins.values()), {n: p["violations"] for n, p in plugins.items()}
    suppressed = [v for p in plugins.values() for v in p.get("suppressedViolations", [])]
    hot_path = [v for v in suppressed if "/HotPath/" in flat(v["violatingConstructs"])]
    assert {v["ruleName"] for v in hot_path} >= {"AwsSolutions-TS3", "W3697", "AwsSolutions-IAM5[Resource::*]"}
    assert all(len(v["reason"]) >= 20 for v in suppressed)


def test_enabled_template_passes_cfn_lint(enabled):
    template = enabled[2] / "Edgeloop.template.json"
    lint = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--non-zero-exit-code", "error", str(template)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert lint.returncode == 0, lint.stdout[-6000:] + lint.stderr[-2000:]


def test_database_and_table_with_retention_from_context_and_magnetic_writes(resources):
    (database_id, database), *others = of_type(resources, "AWS::Timestream::Database").items()
    assert not others
    assert "KmsKeyId" not in database.get("Properties", {})  # Timestream's AWS managed key
    ((table_id, table),) = of_type(resources, "AWS::Timestream::Table").items()
    props = table["Properties"]
    assert props["DatabaseName"] == {"Ref": database_id}
    assert props["RetentionProperties"] == {
        "MemoryStoreRetentionPeriodInHours": "48",
        "MagneticStoreRetentionPeriodInDays": "30",
    }
    assert props["MagneticStoreWriteProperties"] == {"EnableMagneticStoreWrites": True}
    for resource in (database, table):
        assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"


def test_function_gets_bucket_database_and_table_and_the_powertools_layer_only(resources, hot_path_function):
    _, props = hot_path_function
    variables = props["Environment"]["Variables"]
    assert {v for v in variables if v.startswith("EDGELOOP_")} == {
        names.DATA_BUCKET_ENV,
        names.TIMESTREAM_DATABASE_ENV,
        names.TIMESTREAM_TABLE_ENV,
    }
    (database_id,) = of_type(resources, "AWS::Timestream::Database")
    (table_id,) = of_type(resources, "AWS::Timestream::Table")
    assert variables[names.TIMESTREAM_DATABASE_ENV] == {"Ref": database_id}
    assert variables[names.TIMESTREAM_TABLE_ENV] == {"Fn::GetAtt": [table_id, "Name"]}
    assert "DataBucket" in variables[names.DATA_BUCKET_ENV]["Ref"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == "hot_path"
    layers = flat(props["Layers"])
    assert "powertools" in layers and "awssdkpandas" not in layers
    assert props["Timeout"] >= 60


def test_function_role_is_least_privilege(resources, hot_path_function):
    _, props = hot_path_function
    role_id = props["Role"]["Fn::GetAtt"][0]
    actions = granted(resources, role_id)
    (table_id,) = of_type(resources, "AWS::Timestream::Table")
    assert actions["timestream:WriteRecords"] == [flat({"Fn::GetAtt": [table_id, "Arn"]})]
    assert actions["timestream:DescribeEndpoints"] == ['"*"']
    (raw_objects,) = actions["s3:GetObject"]
    assert "DataBucket" in raw_objects and raw_objects.endswith(f'"/{names.RAW_PREFIX}/*"]]}}')
    owned = {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    owned |= {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}  # its own failure queue
    assert set(actions) - owned == {"s3:GetObject", "timestream:WriteRecords", "timestream:DescribeEndpoints"}
    wildcard = {action for action, targets in actions.items() if '"*"' in targets}
    assert wildcard == {"timestream:DescribeEndpoints", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_new_raw_objects_reach_the_function_with_a_dead_letter_queue(resources, hot_path_function):
    function_id, _ = hot_path_function
    rules = [
        r["Properties"]
        for r in of_type(resources, "AWS::Events::Rule").values()
        if any(t["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]} for t in r["Properties"].get("Targets", []))
    ]
    (rule,) = rules
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": f"{names.RAW_PREFIX}/"}]
    data_bucket = pattern["detail"]["bucket"]["name"][0]["Ref"]
    bucket = resources[data_bucket]["Properties"]
    assert bucket["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True
    (target,) = rule["Targets"]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    invoke_configs = [
        c["Properties"]
        for c in of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    (invoke_config,) = invoke_configs
    failure_queue = invoke_config["DestinationConfig"]["OnFailure"]["Destination"]
    assert target["DeadLetterConfig"]["Arn"] == failure_queue  # the function's own failure queue
    permissions = [
        p["Properties"]
        for p in of_type(resources, "AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "events.amazonaws.com"
        and p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
    ]
    assert len(permissions) == 1


def test_outputs_name_the_database_and_table(enabled):
    outputs = {k: v["Value"] for k, v in enabled[1]["Outputs"].items()}
    values = [flat(v) for v in outputs.values()]
    assert any("Timestream" in k for k in outputs) and any("HotPathDatabase" in v for v in values)


# --- flag off (the default) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def disabled(tmp_path_factory):
    return synthesize(tmp_path_factory, {})


def test_by_default_nothing_of_the_hot_path_is_synthesized(disabled):
    stack, template, _ = disabled
    assert stack.hot_path is None and stack.config.enable_timestream is False
    resources = template["Resources"]
    assert not [r for r in resources.values() if r["Type"].startswith("AWS::Timestream::")]
    handlers = [r["Properties"]["Handler"] for r in of_type(resources, "AWS::Lambda::Function").values()]
    assert HOT_PATH_HANDLER not in handlers
    raw_rules = [
        r for r in of_type(resources, "AWS::Events::Rule").values() if f'"prefix": "{names.RAW_PREFIX}/"' in flat(r)
    ]
    assert raw_rules == []
    assert "timestream:" not in flat(resources)
    assert not [k for k in resources if k.startswith("HotPath")]


# --- context settings (no synth) ------------------------------------------------------------------


def config(**context) -> StackConfig:
    return StackConfig.from_context(context.get)


@pytest.mark.parametrize(
    "value, expected", [(None, False), ("false", False), (True, True), ("true", True), ("1", True)]
)
def test_the_flag_is_off_by_default_and_accepted_on(value, expected):
    parsed = config(**{ENABLE_TIMESTREAM_KEY: value})
    assert parsed.enable_timestream is expected
    assert parsed.timestream_memory_retention_hours == DEFAULT_TIMESTREAM_MEMORY_RETENTION_HOURS
    assert parsed.timestream_magnetic_retention_days == DEFAULT_TIMESTREAM_MAGNETIC_RETENTION_DAYS


def test_retention_settings_from_context():
    parsed = config(**{ENABLE_TIMESTREAM_KEY: True, **RETENTION_CONTEXT})
    assert (parsed.timestream_memory_retention_hours, parsed.timestream_magnetic_retention_days) == (48, 30)


@pytest.mark.parametrize(
    "key, value",
    [
        (TIMESTREAM_MEMORY_RETENTION_KEY, "0"),
        (TIMESTREAM_MEMORY_RETENTION_KEY, "8767"),
        (TIMESTREAM_MEMORY_RETENTION_KEY, "a day"),
        (TIMESTREAM_MAGNETIC_RETENTION_KEY, "73001"),
        (TIMESTREAM_MAGNETIC_RETENTION_KEY, "-1"),
        (TIMESTREAM_MAGNETIC_RETENTION_KEY, True),
    ],
)
def test_bad_retention_names_the_key_and_the_value(key, value):
    with pytest.raises(ConfigError) as raised:
        config(**{ENABLE_TIMESTREAM_KEY: "true", key: value})
    assert key in str(raised.value) and repr(value) in str(raised.value)
