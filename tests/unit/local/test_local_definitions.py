"""Pure pieces of the local runtime: topic matching, table definitions, the local environment."""

from __future__ import annotations

import pytest
from moto import mock_aws

from edgeloop.cloud.aws import client
from edgeloop.local.aws import create_local_resources, local_aws_environment, table_definition
from edgeloop.local.mosquitto import CLOUD_IDENTITY, acl_text
from edgeloop.schemas import names
from edgeloop.schemas.names import topic_matches


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("edgeloop/+/telemetry", "edgeloop/gw-1/telemetry", True),
        ("edgeloop/+/telemetry", "edgeloop/gw-1/announce", False),
        ("edgeloop/+/telemetry", "edgeloop/gw-1/telemetry/extra", False),
        ("edgeloop/+/telemetry", "edgeloop/telemetry", False),
        ("edgeloop/#", "edgeloop", True),
        ("edgeloop/#", "edgeloop/a/b/c", True),
        ("edgeloop/gw-1/#", "edgeloop/gw-2/telemetry", False),
        ("other/#", "edgeloop/gw-1/telemetry", False),
    ],
)
def test_topic_matching_follows_mqtt_wildcards(topic_filter, topic, expected):
    assert topic_matches(topic_filter, topic) is expected


def test_every_route_matches_the_topic_builder_it_serves():
    builders = {
        "edgeloop_telemetry": names.telemetry_topic,
        "edgeloop_announce": names.announce_topic,
        "edgeloop_model_status": names.model_status_topic,
        "edgeloop_context": names.context_topic,
        "edgeloop_predictions": names.prediction_topic,
        "edgeloop_alerts": names.alert_topic,
        "edgeloop_presence": lambda thing: names.presence_topic("connected", thing),
    }
    for route in names.IOT_ROUTES:
        assert topic_matches(route.topic_filter, builders[route.rule_name]("gw-1"))


def test_device_table_definition_comes_from_the_shared_keys():
    definition = table_definition("t", names.DEVICE_TABLE_KEYS)
    assert definition["BillingMode"] == "PAY_PER_REQUEST"
    assert definition["KeySchema"] == [{"AttributeName": "thing_name", "KeyType": "HASH"}]
    indexes = {i["IndexName"]: i["KeySchema"] for i in definition["GlobalSecondaryIndexes"]}
    assert set(indexes) == {name for name, _, _ in names.DEVICE_TABLE_KEYS.indexes}
    assert indexes["by_line"] == [
        {"AttributeName": "line_id", "KeyType": "HASH"},
        {"AttributeName": "thing_name", "KeyType": "RANGE"},
    ]
    attributes = [a["AttributeName"] for a in definition["AttributeDefinitions"]]
    assert sorted(attributes) == sorted({"thing_name", "current_model_version", "line_id", "status"})
    assert len(attributes) == len(set(attributes))


def test_a_table_with_a_sort_key_and_no_index():
    definition = table_definition("t", names.TableKeys(partition_key="pk", sort_key="sk"))
    assert [k["KeyType"] for k in definition["KeySchema"]] == ["HASH", "RANGE"]
    assert "GlobalSecondaryIndexes" not in definition


def test_local_environment_names_the_local_resources():
    env = local_aws_environment("http://127.0.0.1:5000")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert env[names.DEVICE_TABLE_ENV] == names.LOCAL_DEVICE_TABLE
    assert env[names.MODEL_BUCKET_ENV] == names.LOCAL_MODEL_BUCKET
    assert env[names.DELIVERY_ENV] == "local"
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"


def test_a_bad_endpoint_is_refused_by_name():
    with pytest.raises(ValueError, match="endpoint_url '127.0.0.1:5000'"):
        local_aws_environment("127.0.0.1:5000")


def test_the_acl_confines_gateways_and_frees_the_cloud():
    lines = acl_text().splitlines()
    assert "pattern readwrite edgeloop/%u/#" in lines
    assert lines.index(f"user {CLOUD_IDENTITY}") < lines.index("topic readwrite edgeloop/#")


@mock_aws
def test_creating_local_resources_twice_is_harmless():
    create_local_resources()
    resources = create_local_resources()
    buckets = {b["Name"] for b in client("s3").list_buckets()["Buckets"]}
    assert buckets == set(resources.buckets) == {names.LOCAL_DATA_BUCKET, names.LOCAL_MODEL_BUCKET}
    assert sorted(client("dynamodb").list_tables()["TableNames"]) == sorted(resources.tables)
