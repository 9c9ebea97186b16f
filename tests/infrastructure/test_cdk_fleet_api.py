"""The fleet API (cdk/constructs/fleet_api.py): IAM on every method, access logs, a readers policy
scoped to the API, and the fleet_status function with read-only table access.

Synthesized in a small stack with cdk-nag's AWS Solutions checks, so the fixture itself fails on
any unacknowledged finding; cfn-lint runs on its template too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeloop.schemas import names

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from edgeloop.cdk.app import FEATURE_FLAGS
    from edgeloop.cdk.constructs.fleet import build_table
    from edgeloop.cdk.constructs.fleet_api import FleetApi
    from edgeloop.cdk.constructs.functions import FunctionFactory
    from edgeloop.cdk.constructs.layers import PublicLayers
    from edgeloop.cdk.constructs.monitoring import Monitoring
    from edgeloop.cdk.constructs.storage import Storage

    code_dir = tmp_path_factory.mktemp("code")
    (code_dir / "placeholder.py").write_text("# the real asset is staged by cdk/lambda_asset.py\n")
    app = cdk.App(context=FEATURE_FLAGS, outdir=str(tmp_path_factory.mktemp("cdk-out")))
    stack = cdk.Stack(app, "FleetApiProbe")
    storage = Storage(stack, "Storage")
    factory = FunctionFactory(
        code=lambda_.Code.from_asset(str(code_dir)),
        layers=PublicLayers(stack, "Layers"),
        monitoring=Monitoring(stack, "Monitoring"),
    )
    FleetApi(
        stack,
        "FleetApi",
        storage=storage,
        factory=factory,
        devices=build_table(stack, "Devices", names.DEVICE_TABLE_KEYS),
        deployments=build_table(stack, "Deployments", names.DEPLOYMENT_TABLE_KEYS),
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return Template.from_stack(stack).to_json()  # raises on an unacknowledged cdk-nag finding


def of_type(template: dict, cfn_type: str) -> dict[str, dict]:
    return {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == cfn_type}


def logical_id(template: dict, cfn_type: str) -> str:
    (found,) = of_type(template, cfn_type)
    return found


def test_every_method_takes_iam_authorization(template):
    methods = of_type(template, "AWS::ApiGateway::Method").values()
    assert len(methods) == 3  # /devices, /devices/{thing}/history, /models/{version}/why-not
    assert {m["HttpMethod"] for m in methods} == {"GET"}
    assert all(m["AuthorizationType"] == "AWS_IAM" for m in methods)
    assert all(m["Integration"]["Type"] == "AWS_PROXY" for m in methods)


def test_routes_declare_their_parameters_and_are_validated(template):
    (validator,) = of_type(template, "AWS::ApiGateway::RequestValidator").values()
    assert validator["ValidateRequestParameters"] is True
    parameters = [set(m["RequestParameters"]) for m in of_type(template, "AWS::ApiGateway::Method").values()]
    assert {f"method.request.querystring.{p}" for p in ("site", "line", "model", "status")} in parameters
    assert {"method.request.path.thing", "method.request.querystring.limit"} in parameters
    assert {"method.request.path.version", "method.request.querystring.model_id"} in parameters
    paths = {r["PathPart"] for r in of_type(template, "AWS::ApiGateway::Resource").values()}
    assert paths == {"devices", "{thing}", "history", "models", "{version}", "why-not"}


def test_stage_writes_access_logs_to_a_retained_log_group(template):
    (stage,) = of_type(template, "AWS::ApiGateway::Stage").values()
    settings = stage["AccessLogSetting"]
    log_group_id = settings["DestinationArn"]["Fn::GetAtt"][0]
    assert template["Resources"][log_group_id]["Type"] == "AWS::Logs::LogGroup"
    assert template["Resources"][log_group_id]["Properties"]["RetentionInDays"] == 365
    assert "$context.identity.user" in settings["Format"] and "$context.status" in settings["Format"]
    assert stage["TracingEnabled"] is True


def test_readers_policy_allows_only_invoke_on_this_api(template):
    api_id = logical_id(template, "AWS::ApiGateway::RestApi")
    (policy,) = of_type(template, "AWS::IAM::ManagedPolicy").values()
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "execute-api:Invoke"
    resource = json.dumps(statement["Resource"])
    assert f'{{"Ref": "{api_id}"}}' in resource
    assert "/v1/GET/*" in resource
    assert '"*"' not in resource  # no bare wildcard


def test_function_reads_the_tables_and_nothing_writes(template):
    functions = of_type(template, "AWS::Lambda::Function")
    (function,) = [f for f in functions.values() if f["Handler"] == names.FUNCTIONS["fleet_status"]]
    variables = function["Environment"]["Variables"]
    assert {v for v in variables if v.startswith("EDGELOOP_")} == {names.DEVICE_TABLE_ENV, names.DEPLOYMENT_TABLE_ENV}
    actions = set()
    for policy in of_type(template, "AWS::IAM::Policy").values():
        for statement in policy["PolicyDocument"]["Statement"]:
            action = statement["Action"]
            actions.update([action] if isinstance(action, str) else action)
    dynamodb_actions = {a for a in actions if a.startswith("dynamodb:")}
    assert dynamodb_actions == {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan"}
    assert {"sagemaker:DescribeModelPackage", "s3:GetObject"} <= actions


def test_cfn_lint_finds_no_error_in_the_fleet_api_template(template, tmp_path):
    path = tmp_path / "fleet_api.template.json"
    path.write_text(json.dumps(template))
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    completed = subprocess.run(
        [str(cfn_lint), "--non-zero-exit-code", "error", str(path)], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
