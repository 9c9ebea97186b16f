"""The gateways' AWS IoT policy documents (schemas/iot_policies.py), evaluated as AWS IoT would match
resources: `*` is a wildcard, MQTT's `+` and `#` are literal characters."""

from __future__ import annotations

import fnmatch
import json

import pytest

from edgeloop.schemas import iot_policies, names

ARNS = iot_policies.IotArns(partition="aws", region="eu-west-1", account="123456789012")
PREFIX = "arn:aws:iot:eu-west-1:123456789012:"


def allows(document: dict, action: str, resource: str) -> bool:
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if action in actions and any(fnmatch.fnmatchcase(resource, pattern) for pattern in map(_glob, resources)):
            return True
    return False


def _glob(pattern: str) -> str:
    """IoT policy wildcard `*` only: escape what fnmatch would treat as special ([ ] ?)."""
    return "".join(c if c == "*" else f"[{c}]" if c in "[]?" else c for c in pattern)


@pytest.fixture
def gw_a() -> dict:
    return iot_policies.greengrass_thing_policy(ARNS, "gw-a")


def test_core_device_connects_with_its_thing_name_and_the_nucleus_suffixed_client_ids(gw_a):
    for client_id in ("gw-a", "gw-a#2", "gw-a#7", "gw-a#endpoint-switch"):
        assert allows(gw_a, "iot:Connect", f"{PREFIX}client/{client_id}"), client_id
    # a prefix wildcard (`gw-a*`) would let gw-a take over the sessions of gw-a2 or gw-ab
    for client_id in ("gw-a2", "gw-ab", "gw-b", "gw-b#2"):
        assert not allows(gw_a, "iot:Connect", f"{PREFIX}client/{client_id}"), client_id
    connect = [s for s in gw_a["Statement"] if s["Action"] == "iot:Connect"]
    assert connect[0]["Resource"] == [f"{PREFIX}client/gw-a", f"{PREFIX}client/gw-a#*"]


def test_core_device_publishes_health_and_talks_on_its_jobs_and_shadow_topics(gw_a):
    for topic in ("greengrass/health/json", "greengrassv2/health/json", "jobs/notify", "shadow/update"):
        assert allows(gw_a, "iot:Publish", f"{PREFIX}topic/$aws/things/gw-a/{topic}"), topic
    for topic_filter in ("jobs/notify-next", "shadow/name/AWSManagedGreengrassV2Deployment/update/delta"):
        assert allows(gw_a, "iot:Subscribe", f"{PREFIX}topicfilter/$aws/things/gw-a/{topic_filter}")
        assert allows(gw_a, "iot:Receive", f"{PREFIX}topic/$aws/things/gw-a/{topic_filter}")
    assert allows(gw_a, "iot:UpdateThingShadow", f"{PREFIX}thing/gw-a")


def test_gateway_a_cannot_reach_gateway_b(gw_a):
    for topic in ("telemetry", "announce", "model-status", "context"):
        assert allows(gw_a, "iot:Publish", f"{PREFIX}topic/{names.TOPIC_ROOT}/gw-a/{topic}")
        assert not allows(gw_a, "iot:Publish", f"{PREFIX}topic/{names.TOPIC_ROOT}/gw-b/{topic}")
        assert not allows(gw_a, "iot:Receive", f"{PREFIX}topic/{names.TOPIC_ROOT}/gw-b/{topic}")
        assert not allows(gw_a, "iot:Subscribe", f"{PREFIX}topicfilter/{names.TOPIC_ROOT}/gw-b/{topic}")
    assert not allows(gw_a, "iot:Subscribe", f"{PREFIX}topicfilter/{names.TOPIC_ROOT}/+/telemetry")
    assert not allows(gw_a, "iot:Publish", f"{PREFIX}topic/$aws/things/gw-b/jobs/x")
    assert not allows(gw_a, "iot:Publish", f"{PREFIX}topic/$aws/things/gw-ab/greengrass/health/json")
    assert not allows(gw_a, "iot:GetThingShadow", f"{PREFIX}thing/gw-b")
    text = json.dumps(gw_a)
    assert "gw-b" not in text and "${" not in text


def test_every_thing_policy_resource_names_the_thing_literally(gw_a):
    resources: list[str] = []
    for statement in gw_a["Statement"]:
        listed = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        resources.extend(listed)
    assert resources and all(r.startswith(PREFIX) for r in resources)
    assert all("/gw-a" in r for r in resources)
    assert not any(a.startswith("greengrass:") for s in gw_a["Statement"] for a in _actions(s))


def _actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def test_fleet_policy_grants_the_minimal_data_plane_without_thing_variables():
    alias = f"{PREFIX}rolealias/Edgeloop-gateway-token-exchange"
    fleet = iot_policies.greengrass_fleet_policy(alias)
    assert "iot:Connection.Thing" not in json.dumps(fleet)
    for action in iot_policies.GREENGRASS_DATA_PLANE_ACTIONS:
        assert allows(fleet, action, "arn:aws:greengrass:eu-west-1:123456789012:components:anything")
    assert allows(fleet, "iot:AssumeRoleWithCertificate", alias)
    assert not any(allows(fleet, a, f"{PREFIX}topic/x") for a in ("iot:Publish", "iot:Receive", "iot:Connect"))
    assert set(iot_policies.GREENGRASS_DATA_PLANE_ACTIONS) == {
        "greengrass:GetComponentVersionArtifact",
        "greengrass:ResolveComponentCandidates",
        "greengrass:GetDeploymentConfiguration",
        "greengrass:ListThingGroupsForCoreDevice",
    }


def test_device_data_policy_of_shims_keeps_the_thing_variable_and_the_attachment_condition():
    shim = iot_policies.device_data_policy(ARNS)
    variable = iot_policies.THING_NAME_VARIABLE
    (connect,) = [s for s in shim["Statement"] if s["Action"] == "iot:Connect"]
    assert connect["Resource"] == f"{PREFIX}client/{variable}"
    assert connect["Condition"] == {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
    assert allows(shim, "iot:Publish", f"{PREFIX}topic/{names.TOPIC_ROOT}/{variable}/telemetry")


@pytest.mark.parametrize("thing", ["${iot:Connection.Thing.ThingName}", "gw-*"])
def test_thing_policy_refuses_variables_and_wildcards(thing):
    with pytest.raises(ValueError, match="must be literal"):
        iot_policies.greengrass_thing_policy(ARNS, thing)


def test_thing_policy_name_refuses_what_aws_would():
    assert iot_policies.thing_policy_name("gw-a") == f"{names.PROJECT}-thing-gw-a"
    with pytest.raises(ValueError, match="no ':'"):
        iot_policies.thing_policy_name("plant:gw-a")
    with pytest.raises(ValueError, match="at most 113 characters"):
        iot_policies.thing_policy_name("g" * 114)
    assert len(iot_policies.thing_policy_name("g" * 113)) == 128


def test_arns_come_from_any_iot_arn_of_the_account():
    assert iot_policies.IotArns.from_arn(f"{PREFIX}thing/gw-a") == ARNS
    assert iot_policies.IotArns.from_arn("arn:aws-cn:iot:cn-north-1:1:thing/x")("client/x") == (
        "arn:aws-cn:iot:cn-north-1:1:client/x"
    )
    with pytest.raises(ValueError, match="not an AWS IoT ARN"):
        iot_policies.IotArns.from_arn("arn:aws:s3:::bucket")
