"""EdgeloopStack, synthesized once in-process with cdk-nag's AWS Solutions checks enabled.

The fixture itself is a test: an unacknowledged cdk-nag finding makes Template.from_stack raise.
"""

from __future__ import annotations

import json
import re

import pytest

from edgeloop.cdk.constructs.lambda_runtime import RUNTIME_ENVIRONMENT
from edgeloop.schemas import RolloutPolicy, names
from edgeloop.schemas.deployment import ROLLOUT_POLICY_ENV

pytestmark = pytest.mark.slow

THING_VARIABLE = "${iot:Connection.Thing.ThingName}"
PANDAS_FUNCTIONS = {"compaction", "metric_packer", "rollups", "context", "live_accuracy"}
# Built only with the context flag edgeloop:enableTimestream (tests/infrastructure/test_cdk_hot_path.py).
OPTIONAL_FUNCTIONS = {"hot_path"}
DEFAULT_FUNCTIONS = sorted(set(names.FUNCTIONS) - OPTIONAL_FUNCTIONS)
ROLLOUT_ENV = {
    names.DEVICE_TABLE_ENV,
    names.DEPLOYMENT_TABLE_ENV,
    names.MODEL_BUCKET_ENV,
    names.DELIVERY_ENV,
    names.GATEWAY_COMPONENT_VERSION_ENV,
    names.MODEL_RUNNER_COMPONENT_VERSION_ENV,
    *ROLLOUT_POLICY_ENV.values(),
}
# The stack is built with part of the rollout policy set, as cdk.json (JSON numbers) or `-c` (strings) would.
ROLLOUT_CONTEXT = {
    "edgeloop:canaryShare": "0.25",
    "edgeloop:failureThreshold": 0.05,
    "edgeloop:waveTimeoutSeconds": 600,
}
EXPECTED_ENV = {
    "ingest": {names.DATA_BUCKET_ENV, names.USE_CASE_ENV, names.LATENESS_SLA_DAYS_ENV},
    "compaction": {names.DATA_BUCKET_ENV, names.USE_CASE_ENV, names.LATENESS_SLA_DAYS_ENV},
    "metric_packer": {names.DATA_BUCKET_ENV, names.USE_CASE_ENV},
    "rollups": {names.DATA_BUCKET_ENV, names.USE_CASE_ENV},
    "context": {names.DATA_BUCKET_ENV, names.USE_CASE_ENV},
    # the use case's monitoring block rate-limits alert notices; events, notices and their rate limit items
    "predictions": {
        names.DATA_BUCKET_ENV,
        names.USE_CASE_ENV,
        names.EVENT_BUS_ENV,
        names.ALERT_TOPIC_ARN_ENV,
        names.MONITORING_TABLE_ENV,
    },
    "live_accuracy": {names.DATA_BUCKET_ENV, names.USE_CASE_ENV, names.EVENT_BUS_ENV, names.LANDING_DELAY_MINUTES_ENV},
    # no edgeloop:lineIds in this stack's context: no EDGELOOP_LINE_IDS (test_cdk_field_monitoring.py sets them)
    "retraining": {names.USE_CASE_ENV, names.EVENT_BUS_ENV, names.MONITORING_TABLE_ENV},
    "device_registry": {*ROLLOUT_ENV, names.DATA_BUCKET_ENV},  # refused messages go to quarantine
    "status_intake": {*ROLLOUT_ENV, names.DATA_BUCKET_ENV},
    "orchestrator": ROLLOUT_ENV,
    "wave_controller": ROLLOUT_ENV,
    "fleet_status": {names.DEVICE_TABLE_ENV, names.DEPLOYMENT_TABLE_ENV},
}


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    from aws_cdk.assertions import Template

    from edgeloop.cdk.app import build_app

    app, stack = build_app(
        context=ROLLOUT_CONTEXT,
        outdir=str(tmp_path_factory.mktemp("cdk-out")),
        staging_dir=tmp_path_factory.mktemp("lambda-staging"),
    )
    template = Template.from_stack(stack)  # runs the cdk-nag validation; raises on any finding
    return stack, template.to_json()


@pytest.fixture(scope="module")
def resources(synthesized):
    return synthesized[1]["Resources"]


def of_type(resources: dict, cfn_type: str) -> dict:
    return {logical_id: r["Properties"] for logical_id, r in resources.items() if r["Type"] == cfn_type}


@pytest.fixture(scope="module")
def functions_by_key(resources):
    """names.FUNCTIONS key -> (logical id, properties), matched by handler string."""
    by_handler = {
        props["Handler"]: (logical_id, props)
        for logical_id, props in of_type(resources, "AWS::Lambda::Function").items()
    }
    return {key: by_handler[handler] for key, handler in names.FUNCTIONS.items() if handler in by_handler}


def statements(resources: dict, role_logical_id: str) -> list[dict]:
    found = []
    for props in of_type(resources, "AWS::IAM::Policy").values():
        if {"Ref": role_logical_id} in props["Roles"]:
            found += props["PolicyDocument"]["Statement"]
    return found


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def flat(value) -> str:
    return json.dumps(value)


# --- DynamoDB -------------------------------------------------------------------------------------


def _expected_key_schema(partition_key: str, sort_key: str | None) -> list[dict]:
    schema = [{"AttributeName": partition_key, "KeyType": "HASH"}]
    return schema + ([{"AttributeName": sort_key, "KeyType": "RANGE"}] if sort_key else [])


@pytest.mark.parametrize(
    "table_id, keys",
    [
        ("DeviceTable", names.DEVICE_TABLE_KEYS),
        ("DeploymentTable", names.DEPLOYMENT_TABLE_KEYS),
        ("MonitoringTable", names.MONITORING_TABLE_KEYS),
    ],
)
def test_table_keys_and_indexes_come_from_names(resources, table_id, keys):
    tables = {i: p for i, p in of_type(resources, "AWS::DynamoDB::Table").items() if table_id in i}
    assert len(tables) == 1, f"expected one {table_id}, found {sorted(tables)}"
    table = next(iter(tables.values()))
    assert table["KeySchema"] == _expected_key_schema(keys.partition_key, keys.sort_key)
    indexes = {gsi["IndexName"]: gsi["KeySchema"] for gsi in table.get("GlobalSecondaryIndexes", [])}
    assert indexes == {name: _expected_key_schema(pk, sk) for name, pk, sk in keys.indexes}
    assert all(gsi["Projection"] == {"ProjectionType": "ALL"} for gsi in table.get("GlobalSecondaryIndexes", []))
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True


# --- IoT ------------------------------------------------------------------------------------------


def test_one_topic_rule_per_route_with_its_sql_target_and_error_action(resources, functions_by_key):
    rules = {p["RuleName"]: p["TopicRulePayload"] for p in of_type(resources, "AWS::IoT::TopicRule").values()}
    assert set(rules) == {route.rule_name for route in names.IOT_ROUTES}
    for route in names.IOT_ROUTES:
        payload = rules[route.rule_name]
        assert payload["Sql"] == route.sql
        target_id, _ = functions_by_key[route.function]
        if route.batched:  # to the function's queue: test_telemetry_rule_sends_to_the_ingest_queue_...
            assert list(payload["Actions"][0]) == ["Sqs"], route.rule_name
        else:
            assert payload["Actions"] == [{"Lambda": {"FunctionArn": {"Fn::GetAtt": [target_id, "Arn"]}}}]
        error_s3 = payload["ErrorAction"]["S3"]
        assert error_s3["Key"].startswith(f"{names.IOT_ERRORS_PREFIX}/{route.rule_name}/")
        assert "DataBucket" in error_s3["BucketName"]["Ref"]


def test_each_routed_function_may_be_invoked_by_its_rule_only(resources, functions_by_key):
    rule_ids = {p["RuleName"]: i for i, p in of_type(resources, "AWS::IoT::TopicRule").items()}
    permissions = [
        p for p in of_type(resources, "AWS::Lambda::Permission").values() if p["Principal"] == "iot.amazonaws.com"
    ]
    granted = {(flat(p["FunctionName"]), flat(p["SourceArn"])) for p in permissions}
    expected = {
        (
            flat({"Fn::GetAtt": [functions_by_key[r.function][0], "Arn"]}),
            flat({"Fn::GetAtt": [rule_ids[r.rule_name], "Arn"]}),
        )
        for r in names.IOT_ROUTES
        if not r.batched  # invoked by their event source mapping, not by the rule
    }
    assert granted == expected
    assert all("SourceAccount" in p for p in permissions)


def _policy(resources: dict, name_part: str) -> list[dict]:
    policies = [p for i, p in of_type(resources, "AWS::IoT::Policy").items() if name_part in i]
    assert len(policies) == 1, name_part
    return policies[0]["PolicyDocument"]["Statement"]


def _actions_to_resources(statement_list: list[dict]) -> dict[str, list[str]]:
    mapping: dict[str, list[str]] = {}
    for statement in statement_list:
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            mapping.setdefault(action, []).extend(flat(r) for r in as_list(statement["Resource"]))
    return mapping


def test_gateway_data_policy_confines_a_gateway_to_its_own_client_id_and_topics(resources):
    granted = _actions_to_resources(_policy(resources, "GatewayDataPolicy"))
    assert set(granted) == {"iot:Connect", "iot:Publish", "iot:Receive", "iot:Subscribe"}
    own_topics = f"{names.TOPIC_ROOT}/{THING_VARIABLE}/*"
    assert all(r.endswith(f':client/{THING_VARIABLE}"]]}}') for r in granted["iot:Connect"])
    for action, kind in (("iot:Publish", "topic"), ("iot:Receive", "topic"), ("iot:Subscribe", "topicfilter")):
        assert granted[action], action
        assert all(r.endswith(f':{kind}/{own_topics}"]]}}') for r in granted[action]), (action, granted[action])


def test_greengrass_core_policy_names_no_thing_and_grants_the_minimal_data_plane(resources):
    """Thing policy variables are not supported for core devices (Greengrass v2 developer guide,
    device-auth.html): the shared core policy holds only what names no thing; each core device's MQTT
    permissions come from its own policy (schemas/iot_policies.py, created by provisioning)."""
    from edgeloop.schemas.iot_policies import GREENGRASS_DATA_PLANE_ACTIONS

    statement_list = _policy(resources, "GreengrassCorePolicy")
    assert "iot:Connection.Thing" not in json.dumps(statement_list)
    granted = _actions_to_resources(statement_list)
    assert set(granted) == {"iot:AssumeRoleWithCertificate", *GREENGRASS_DATA_PLANE_ACTIONS}
    assert all(granted[action] == [flat("*")] for action in GREENGRASS_DATA_PLANE_ACTIONS)
    assert all("RoleAlias" in r for r in granted["iot:AssumeRoleWithCertificate"])
    assert not any(action.startswith("iot:") and action != "iot:AssumeRoleWithCertificate" for action in granted)


def test_provisioning_reads_the_role_alias_from_this_stack(synthesized):
    from edgeloop.cdk.app import STACK_NAME
    from edgeloop.provisioning.request import ROLE_ALIAS_OUTPUT
    from edgeloop.provisioning.request import STACK_NAME as PROVISIONING_STACK_NAME

    stack, template = synthesized
    assert stack.stack_name == STACK_NAME == PROVISIONING_STACK_NAME
    (alias,) = of_type(template["Resources"], "AWS::IoT::RoleAlias").values()
    assert template["Outputs"][ROLE_ALIAS_OUTPUT]["Value"] == alias["RoleAlias"]


def test_token_exchange_role_reads_only_models_and_component_artifacts(resources):
    roles = {i: p for i, p in of_type(resources, "AWS::IAM::Role").items() if "TokenExchange" in i}
    ((role_id, role),) = roles.items()
    assert "credentials.iot.amazonaws.com" in flat(role["AssumeRolePolicyDocument"])
    granted = _actions_to_resources(statements(resources, role_id))
    assert set(granted) == {"s3:GetObject", "s3:GetBucketLocation"}
    prefixes = sorted(re.findall(r"/(\w+)/\*", " ".join(granted["s3:GetObject"])))
    assert prefixes == [names.MODELS_PREFIX]
    aliases = of_type(resources, "AWS::IoT::RoleAlias")
    assert [flat(a["RoleArn"]) for a in aliases.values()] == [flat({"Fn::GetAtt": [role_id, "Arn"]})]


# --- EventBridge ----------------------------------------------------------------------------------


def test_approved_model_packages_of_edgeloop_groups_reach_the_orchestrator(resources, functions_by_key):
    approvals = [
        p
        for p in of_type(resources, "AWS::Events::Rule").values()
        if "EventPattern" in p and p["EventPattern"].get("source") == ["aws.sagemaker"]
    ]
    assert len(approvals) == 1
    assert approvals[0]["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {
            "ModelApprovalStatus": ["Approved"],
            "ModelPackageGroupName": [{"prefix": f"{names.MODEL_PACKAGE_GROUP_PREFIX}-"}],
        },
    }
    orchestrator_id, _ = functions_by_key["orchestrator"]
    (target,) = approvals[0]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [orchestrator_id, "Arn"]}
    assert "DeadLetterConfig" in target


def test_compaction_runs_on_a_schedule_and_new_curated_objects_reach_the_metric_packer(resources, functions_by_key):
    rules = of_type(resources, "AWS::Events::Rule").values()
    targets = {flat(t["Arn"]): rule for rule in rules for t in rule["Targets"]}
    compaction = targets[flat({"Fn::GetAtt": [functions_by_key["compaction"][0], "Arn"]})]
    assert compaction["ScheduleExpression"] == "rate(1 hour)"  # edgeloop:compactionIntervalMinutes' default
    packer = targets[flat({"Fn::GetAtt": [functions_by_key["metric_packer"][0], "Arn"]})]
    assert packer["EventPattern"]["detail"]["object"]["key"] == [{"prefix": f"{names.CURATED_PREFIX}/"}]
    buckets = of_type(resources, "AWS::S3::Bucket")
    data_id = packer["EventPattern"]["detail"]["bucket"]["name"][0]["Ref"]
    assert buckets[data_id]["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True


# --- Lambda ---------------------------------------------------------------------------------------


def test_every_function_in_names_is_deployed_once_with_its_handler(resources):
    handlers = sorted(p["Handler"] for p in of_type(resources, "AWS::Lambda::Function").values())
    assert handlers == sorted(names.FUNCTIONS[key] for key in DEFAULT_FUNCTIONS)


def test_functions_run_python_3_11_on_arm64(resources):
    for props in of_type(resources, "AWS::Lambda::Function").values():
        assert props["Runtime"] == "python3.11"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}


@pytest.mark.parametrize("key", DEFAULT_FUNCTIONS)
def test_function_environment(functions_by_key, key):
    _, props = functions_by_key[key]
    variables = props["Environment"]["Variables"]
    edgeloop_variables = {v for v in variables if v.startswith("EDGELOOP_")}
    assert edgeloop_variables == EXPECTED_ENV[key]
    assert all(value not in ("", None) for value in variables.values())
    assert variables["POWERTOOLS_SERVICE_NAME"] == key
    assert RUNTIME_ENVIRONMENT.items() <= variables.items()  # e.g. no pydantic plugin scan on a cold start
    if names.DELIVERY_ENV in variables:
        assert variables[names.DELIVERY_ENV] == "greengrass"
    if names.USE_CASE_ENV in variables:
        assert variables[names.USE_CASE_ENV] == "extrusion"
    if names.LATENESS_SLA_DAYS_ENV in variables:  # ingest and compaction enforce the same SLA
        assert variables[names.LATENESS_SLA_DAYS_ENV] == str(names.DEFAULT_LATENESS_SLA_DAYS)


@pytest.mark.parametrize("key", ["status_intake", "orchestrator", "wave_controller"])
def test_the_rollout_functions_get_the_rollout_policy_from_context(functions_by_key, key):
    variables = functions_by_key[key][1]["Environment"]["Variables"]
    policy = {variable: variables[variable] for variable in ROLLOUT_POLICY_ENV.values()}
    assert policy == {
        names.CANARY_SHARE_ENV: "0.25",
        names.FAILURE_THRESHOLD_ENV: "0.05",
        names.WAVE_TIMEOUT_S_ENV: "600",
        names.ROLLOUT_TIMEOUT_S_ENV: "3600",  # not in the context: RolloutPolicy's default
        names.OFFLINE_SILENCE_S_ENV: "900",
    }
    assert RolloutPolicy.from_environment(variables) == RolloutPolicy(
        canary_share=0.25, failure_threshold=0.05, wave_timeout_s=600
    )


@pytest.mark.parametrize("key", DEFAULT_FUNCTIONS)
def test_function_layers(synthesized, functions_by_key, key):
    """Layer ARNs come from AWS's public SSM parameters (cdk/constructs/layers.py), never a publisher account."""
    parameters = synthesized[1]["Parameters"]
    layers = [parameters[layer["Ref"]]["Default"] for layer in functions_by_key[key][1]["Layers"]]
    assert layers[0].startswith("/aws/service/powertools/python/arm64/python3.11/")
    assert any(p.startswith("/aws/service/aws-sdk-pandas/") for p in layers) == (key in PANDAS_FUNCTIONS)


def test_every_async_function_has_an_encrypted_ssl_only_failure_queue_and_alarms(resources, functions_by_key):
    """All edgeloop functions are invoked asynchronously (IoT rules, EventBridge)."""
    invoke_configs = {
        p["FunctionName"]["Ref"]: p for p in of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
    }
    queues = of_type(resources, "AWS::SQS::Queue")
    queue_policies = of_type(resources, "AWS::SQS::QueuePolicy").values()
    alarms = of_type(resources, "AWS::CloudWatch::Alarm").values()
    for key, (function_id, _) in functions_by_key.items():
        config = invoke_configs[function_id]
        destination = config["DestinationConfig"]["OnFailure"]["Destination"]
        queue_id = destination["Fn::GetAtt"][0]
        assert queue_id in queues, key
        assert queues[queue_id]["SqsManagedSseEnabled"] is True
        policy = next(p for p in queue_policies if {"Ref": queue_id} in p["Queues"])
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in policy["PolicyDocument"]["Statement"]
        ), key
        watched = [flat(a["Dimensions"]) for a in alarms]
        assert any(function_id in d for d in watched), f"{key}: no errors alarm"
        assert any(queue_id in d for d in watched), f"{key}: no failure-queue alarm"
    assert all(a["AlarmActions"] for a in alarms)


def test_no_function_role_uses_managed_policies_or_full_wildcards(resources, functions_by_key):
    for key, (_, props) in functions_by_key.items():
        role_id = props["Role"]["Fn::GetAtt"][0]
        assert "ManagedPolicyArns" not in of_type(resources, "AWS::IAM::Role")[role_id], key
        for statement in statements(resources, role_id):
            actions = as_list(statement["Action"])
            assert not any(a == "*" or a.endswith(":*") for a in actions), (key, actions)
            if as_list(statement["Resource"]) == ["*"]:
                # ListModelPackages has no resource type (Service Authorization Reference); only
                # enrollment (device_registry) lists a line's approved packages, and live accuracy its versions.
                listing = {"sagemaker:ListModelPackages"} if key in ("device_registry", "live_accuracy") else set()
                assert set(actions) <= {
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                    "greengrass:CreateDeployment",
                    *listing,
                }, (key, actions)


def test_orchestrator_role_is_scoped_to_edgeloop_model_packages_and_rollout_groups(resources, functions_by_key):
    role_id = functions_by_key["orchestrator"][1]["Role"]["Fn::GetAtt"][0]
    granted = _actions_to_resources(statements(resources, role_id))
    (package_resource,) = granted["sagemaker:DescribeModelPackage"]
    assert f":model-package/{names.MODEL_PACKAGE_GROUP_PREFIX}-*/*" in package_resource
    assert "greengrass:CreateDeployment" in granted
    for action in (
        "iot:CreateThingGroup",
        "iot:AddThingToThingGroup",
        "iot:RemoveThingFromThingGroup",
        "iot:ListThingGroupsForThing",
    ):
        assert action in granted, action
    assert all(":thinggroup/edgeloop-rollout-*" in r for r in granted["iot:CreateThingGroup"])
    (models,) = granted["s3:GetObject"]
    assert f"/{names.MODELS_PREFIX}/*" in models and "ModelBucket" in models
    dynamo = " ".join(granted["dynamodb:PutItem"])
    assert "DeviceTable" in dynamo and "DeploymentTable" in dynamo
    assert "s3:PutObject" not in granted


def test_ingest_writes_only_raw_and_quarantine(resources, functions_by_key):
    role_id = functions_by_key["ingest"][1]["Role"]["Fn::GetAtt"][0]
    granted = _actions_to_resources(statements(resources, role_id))
    assert sorted(re.findall(r"/([\w-]+)/\*", " ".join(granted["s3:PutObject"]))) == sorted(
        [names.RAW_PREFIX, names.QUARANTINE_PREFIX]
    )
    assert not {"s3:GetObject", "s3:DeleteObject", "s3:ListBucket"} & set(granted)


@pytest.mark.parametrize("key", ["ingest", "context"])
def test_line_checking_functions_read_only_things_from_the_iot_registry(resources, functions_by_key, key):
    """Ingest and context check a message's line against the thing's line_id attribute (IotLineDirectory)."""
    role_id = functions_by_key[key][1]["Role"]["Fn::GetAtt"][0]
    granted = _actions_to_resources(statements(resources, role_id))
    assert {action for action in granted if action.startswith("iot:")} == {"iot:DescribeThing"}
    (things,) = granted["iot:DescribeThing"]
    assert ":iot:" in things and things.endswith(':thing/*"]]}')


def test_prefixes_granted_to_functions_match_the_functions_code():
    """The constructs name two prefixes that live in function code, not in names.py."""
    from edgeloop.cdk.constructs.fleet import ROLLOUT_GROUP_PREFIX
    from edgeloop.cdk.constructs.ingestion import COMPACTION_STATE_PREFIX
    from edgeloop.cloud.fleet.delivery import ROLLOUT_GROUP_PREFIX as DELIVERY_GROUP_PREFIX

    assert ROLLOUT_GROUP_PREFIX == DELIVERY_GROUP_PREFIX
    assert names.COMPACTION_MARKERS_PREFIX.split("/")[0] == COMPACTION_STATE_PREFIX


# --- S3 -------------------------------------------------------------------------------------------


def test_buckets_are_encrypted_private_ssl_only_and_logged(resources):
    buckets = of_type(resources, "AWS::S3::Bucket")
    assert len(buckets) == 3
    policies = of_type(resources, "AWS::S3::BucketPolicy").values()
    for bucket_id, bucket in buckets.items():
        assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
        assert bucket["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        policy = next(p for p in policies if p["Bucket"] == {"Ref": bucket_id})
        assert any(
            s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
            for s in policy["PolicyDocument"]["Statement"]
        ), bucket_id
        if "AccessLogs" not in bucket_id:
            assert "LoggingConfiguration" in bucket, bucket_id


def test_data_lifecycle_and_model_versioning(resources):
    buckets = of_type(resources, "AWS::S3::Bucket")
    (data,) = [b for i, b in buckets.items() if "DataBucket" in i]
    expiry = {r["Prefix"]: r["ExpirationInDays"] for r in data["LifecycleConfiguration"]["Rules"] if "Prefix" in r}
    assert expiry[f"{names.RAW_PREFIX}/"] == 30
    assert expiry[f"{names.QUARANTINE_PREFIX}/"] == 90
    # compaction's markers outlive the raw objects they mark (its daily sweep lists both); its checkpoint stays
    assert expiry[f"{names.COMPACTION_MARKERS_PREFIX}/"] == 32
    assert not any(names.COMPACTION_CHECKPOINT_KEY.startswith(prefix) for prefix in expiry)
    assert f"{names.CURATED_PREFIX}/" not in expiry and f"{names.PACKS_PREFIX}/" not in expiry
    (models,) = [b for i, b in buckets.items() if "ModelBucket" in i]
    assert models["VersioningConfiguration"] == {"Status": "Enabled"}


def test_alarm_and_alert_topics_are_encrypted_with_one_rotating_key(resources):
    """Two topics: alarms (whoever runs the stack) and violation alerts (the line's people); one key."""
    topics = of_type(resources, "AWS::SNS::Topic")
    assert sorted(t["DisplayName"] for t in topics.values()) == ["edgeloop alarms", "edgeloop violation alerts"]
    (key_id,) = {topic["KmsMasterKeyId"]["Fn::GetAtt"][0] for topic in topics.values()}
    assert of_type(resources, "AWS::KMS::Key")[key_id]["EnableKeyRotation"] is True
    assert "cloudwatch.amazonaws.com" in flat(of_type(resources, "AWS::KMS::Key")[key_id]["KeyPolicy"])


def test_no_timestream_resources(resources):
    assert not [r for r in resources.values() if r["Type"].startswith("AWS::Timestream::")]


# --- rollups and context (issue 4) ----------------------------------------------------------------


def _object_grants(resources: dict, functions_by_key: dict, key: str) -> dict[str, list[str]]:
    """action -> the data bucket prefixes (or 'bucket' for the bucket itself) granted to a function."""
    role_id = functions_by_key[key][1]["Role"]["Fn::GetAtt"][0]
    grants: dict[str, list[str]] = {}
    for statement in statements(resources, role_id):
        for action in as_list(statement["Action"]):
            if not action.startswith("s3:"):
                continue
            for resource in as_list(statement["Resource"]):
                assert "DataBucket" in flat(resource), (key, action, resource)
                prefix = re.findall(r'"/([\w-]+)/\*"', flat(resource))
                grants.setdefault(action, []).extend(prefix or ["bucket"])
    return {action: sorted(prefixes) for action, prefixes in grants.items()}


def test_rollups_read_curated_and_write_only_rollups(resources, functions_by_key):
    assert _object_grants(resources, functions_by_key, "rollups") == {
        "s3:ListBucket": ["bucket"],
        "s3:GetObject": [names.CURATED_PREFIX],
        "s3:PutObject": [names.ROLLUPS_PREFIX],
        "s3:DeleteObject": [names.ROLLUPS_PREFIX],
    }


def test_context_reads_and_writes_context_and_writes_slices_and_quarantine(resources, functions_by_key):
    assert _object_grants(resources, functions_by_key, "context") == {
        "s3:ListBucket": ["bucket"],
        "s3:GetObject": [names.CONTEXT_PREFIX],
        "s3:PutObject": sorted([names.CONTEXT_PREFIX, names.CONTEXT_SLICES_PREFIX, names.QUARANTINE_PREFIX]),
    }


def test_compaction_success_goes_to_rollups_with_the_full_destination_envelope(resources, functions_by_key):
    compaction_id, compaction = functions_by_key["compaction"]
    rollups_id, _ = functions_by_key["rollups"]
    (config,) = [
        p
        for p in of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
        if p["FunctionName"] == {"Ref": compaction_id}
    ]
    # Directly to the function (not through EventBridge, as response_only=True would): the
    # rollups handler gets {"requestContext", "requestPayload", "responsePayload"}.
    assert config["DestinationConfig"]["OnSuccess"] == {"Destination": {"Fn::GetAtt": [rollups_id, "Arn"]}}
    assert "OnFailure" in config["DestinationConfig"]
    granted = _actions_to_resources(statements(resources, compaction["Role"]["Fn::GetAtt"][0]))
    assert granted["lambda:InvokeFunction"] == [
        flat({"Fn::GetAtt": [rollups_id, "Arn"]}),
        flat({"Fn::Join": ["", [{"Fn::GetAtt": [rollups_id, "Arn"]}, ":*"]]}),
    ]
    invoked_elsewhere = [
        key
        for key, (_, props) in functions_by_key.items()
        if key != "compaction"
        and "lambda:InvokeFunction" in _actions_to_resources(statements(resources, props["Role"]["Fn::GetAtt"][0]))
    ]
    assert invoked_elsewhere == []


def test_only_compaction_has_a_success_destination(resources, functions_by_key):
    with_success = {
        p["FunctionName"]["Ref"]
        for p in of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
        if "OnSuccess" in p["DestinationConfig"]
    }
    assert with_success == {functions_by_key["compaction"][0]}


def test_the_context_route_targets_the_context_function(resources, functions_by_key):
    (rule,) = [p for p in of_type(resources, "AWS::IoT::TopicRule").values() if p["RuleName"] == "edgeloop_context"]
    payload = rule["TopicRulePayload"]
    assert payload["Sql"].endswith(f"FROM '{names.TOPIC_ROOT}/+/context'")
    assert payload["Actions"] == [{"Lambda": {"FunctionArn": {"Fn::GetAtt": [functions_by_key["context"][0], "Arn"]}}}]
    assert payload["ErrorAction"]["S3"]["Key"].startswith(f"{names.IOT_ERRORS_PREFIX}/edgeloop_context/")


def test_predictions_and_alerts_route_to_the_landing_function_which_writes_only_its_prefixes(
    resources, functions_by_key
):
    rules = {p["RuleName"]: p["TopicRulePayload"] for p in of_type(resources, "AWS::IoT::TopicRule").values()}
    for rule_name, topic in (("edgeloop_predictions", "predictions"), ("edgeloop_alerts", "alerts")):
        assert rules[rule_name]["Sql"].endswith(f"FROM '{names.TOPIC_ROOT}/+/{topic}'")
    # predictions (one per pack stride per gateway) go through a queue in batches; alerts at once
    (queued,) = rules["edgeloop_predictions"]["Actions"]
    assert "PredictionsQueue" in queued["Sqs"]["QueueUrl"]["Ref"]
    target = [{"Lambda": {"FunctionArn": {"Fn::GetAtt": [functions_by_key["predictions"][0], "Arn"]}}}]
    assert rules["edgeloop_alerts"]["Actions"] == target
    assert _object_grants(resources, functions_by_key, "predictions") == {
        "s3:PutObject": sorted([names.ALERTS_PREFIX, names.PREDICTIONS_PREFIX, names.QUARANTINE_PREFIX]),
    }


def test_a_gateway_may_publish_its_own_context_and_no_other_gateways(resources):
    from edgeloop.schemas.names import topic_matches

    granted = _actions_to_resources(_policy(resources, "GatewayDataPolicy"))
    patterns = [re.search(r":topic/([^\"]+)\"", r).group(1) for r in granted["iot:Publish"]]
    own = [p.replace(THING_VARIABLE, "gw-1").replace("*", "#") for p in patterns]
    assert any(topic_matches(p, names.context_topic("gw-1")) for p in own), patterns
    assert not any(topic_matches(p, names.context_topic("gw-2")) for p in own), patterns


# --- batched ingest: IoT rule -> SQS -> ingest (issue 18) ------------------------------------------


def test_telemetry_rule_sends_to_the_ingest_queue_with_a_role_that_may_only_send_there(resources):
    from edgeloop.cdk.constructs.ingestion import TELEMETRY_VISIBILITY_TIMEOUT

    (rule,) = [p for p in of_type(resources, "AWS::IoT::TopicRule").values() if p["RuleName"] == "edgeloop_telemetry"]
    (action,) = rule["TopicRulePayload"]["Actions"]
    sqs_action = action["Sqs"]
    assert sqs_action["UseBase64"] is False  # the SQL already base64-encodes the binary payload
    queue_id = sqs_action["QueueUrl"]["Ref"]
    queue = of_type(resources, "AWS::SQS::Queue")[queue_id]
    assert "TelemetryQueue" in queue_id and queue["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] == TELEMETRY_VISIBILITY_TIMEOUT.to_seconds()
    role_id = sqs_action["RoleArn"]["Fn::GetAtt"][0]
    assert resources[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "iot.amazonaws.com"
    }
    assert [(s["Action"], s["Resource"]) for s in statements(resources, role_id)] == [
        ("sqs:SendMessage", {"Fn::GetAtt": [queue_id, "Arn"]})
    ]


@pytest.mark.parametrize("key", ["ingest", "predictions"])
def test_batched_functions_drain_their_queue_in_batches_reporting_item_failures(resources, functions_by_key, key):
    from edgeloop.cdk.constructs.ingestion import INGEST_BATCH_SIZE, INGEST_BATCH_WINDOW, TELEMETRY_MAX_RECEIVES

    ingest_id, ingest = functions_by_key[key]
    mappings = of_type(resources, "AWS::Lambda::EventSourceMapping").values()
    (mapping,) = [m for m in mappings if m["FunctionName"] == {"Ref": ingest_id}]
    assert mapping["BatchSize"] == INGEST_BATCH_SIZE == 1000
    assert mapping["MaximumBatchingWindowInSeconds"] == INGEST_BATCH_WINDOW.to_seconds() == 60
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue_id = mapping["EventSourceArn"]["Fn::GetAtt"][0]
    queue = of_type(resources, "AWS::SQS::Queue")[queue_id]
    # The Lambda docs: visibility timeout >= 6x the function timeout (+ the batching window)
    assert queue["VisibilityTimeout"] >= 6 * ingest["Timeout"] + INGEST_BATCH_WINDOW.to_seconds()
    redrive = queue["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == TELEMETRY_MAX_RECEIVES
    dead_letters_id = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert of_type(resources, "AWS::SQS::Queue")[dead_letters_id]["SqsManagedSseEnabled"] is True
    for watched in (queue_id, dead_letters_id):
        policy = next(
            p for p in of_type(resources, "AWS::SQS::QueuePolicy").values() if {"Ref": watched} in p["Queues"]
        )
        assert any(s["Effect"] == "Deny" for s in policy["PolicyDocument"]["Statement"]), watched
    alarms = [flat(a["Dimensions"]) for a in of_type(resources, "AWS::CloudWatch::Alarm").values()]
    assert any(dead_letters_id in d for d in alarms)
