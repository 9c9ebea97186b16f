"""The fleet API handler: API Gateway REST proxy events in, JSON out, against moto's DynamoDB."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fleet_helpers import DEPLOYMENT_TABLE, DEVICE_TABLE, MODEL_BUCKET, NOW, device, manifest

from edgeloop.cloud.fleet.devices import DeviceWrite
from edgeloop.cloud.fleet.planning import model_updates, plan_rollout
from edgeloop.functions.fleet_status import handler
from edgeloop.schemas import DeviceStatus, names

PACKAGE_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/3"


@pytest.fixture
def api(devices, deployments, monkeypatch):
    monkeypatch.setenv(names.DEVICE_TABLE_ENV, DEVICE_TABLE)
    monkeypatch.setenv(names.DEPLOYMENT_TABLE_ENV, DEPLOYMENT_TABLE)

    def call(path: str, query: dict[str, str] | None = None, path_parameters: dict[str, str] | None = None):
        response = handler.lambda_handler(rest_event(path, query, path_parameters), None)
        return response["statusCode"], json.loads(response["body"])

    return call


def rest_event(path: str, query: dict[str, str] | None, path_parameters: dict[str, str] | None) -> dict:
    """An API Gateway REST proxy event as an IAM-authorized GET arrives."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": "GET",
        "headers": {"Accept": "application/json"},
        "multiValueHeaders": {"Accept": ["application/json"]},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": "GET",
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "identity": {"userArn": "arn:aws:iam::123456789012:user/operator", "caller": "AIDAEXAMPLE"},
        },
        "body": None,
        "isBase64Encoded": False,
    }


def test_devices_filtered_by_query_parameters(api, devices):
    devices.put(device("gw-1", current_model_version="2.0.0", status=DeviceStatus.APPLIED))
    devices.put(device("gw-2", site="plant-b", current_model_version="2.0.0", status=DeviceStatus.APPLIED))
    devices.put(device("gw-3", status=DeviceStatus.OFFLINE))
    status, body = api("/devices", {"model": "2.0.0", "site": "plant-b"})
    assert status == 200
    assert [d["thing_name"] for d in body["devices"]] == ["gw-2"]
    assert body["devices"][0]["current_model_version"] == "2.0.0"
    status, body = api("/devices")
    assert status == 200 and [d["thing_name"] for d in body["devices"]] == ["gw-1", "gw-2", "gw-3"]


@pytest.mark.parametrize("filters", [{"model": "2.0.0"}, {"line": "line-1"}, {}])
def test_devices_come_in_pages_that_chain_without_gaps_or_repeats(api, devices, filters):
    for i in range(11):
        devices.put(device(f"gw-{i:02d}", current_model_version="2.0.0", status=DeviceStatus.APPLIED))
    devices.put(device("gw-other", line_id="line-2", current_model_version="1.0.0"))
    expected = [f"gw-{i:02d}" for i in range(11)] + ([] if filters else ["gw-other"])

    seen, pages, after = [], 0, None
    while True:
        status, body = api("/devices", {**filters, "limit": "4", **({"next": after} if after else {})})
        assert status == 200 and len(body["devices"]) <= 4
        seen += [d["thing_name"] for d in body["devices"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert sorted(seen) == expected and len(seen) == len(set(seen))
    assert pages >= 3
    if filters:
        assert seen == expected  # an index hands pages out in thing name order


def test_the_default_page_holds_up_to_500_devices(api, devices):
    devices.put(device("gw-1"))
    status, body = api("/devices")
    assert status == 200 and body == {"devices": [body["devices"][0]], "next": None}


@pytest.mark.parametrize(
    ("query", "parameter", "value"),
    [
        ({"limit": "0"}, "limit", 0),
        ({"limit": "1001"}, "limit", 1001),
        ({"limit": "many"}, "limit", "many"),
        ({"next": "not a thing"}, "next", "not a thing"),
        ({"status": "lost"}, "status", "lost"),
        ({"model": "two"}, "model", "two"),
        ({"line": "LINE 1"}, "line", "LINE 1"),
        ({"colour": "red"}, "colour", "red"),
    ],
)
def test_bad_query_values_are_400_naming_parameter_and_value(api, query, parameter, value):
    status, body = api("/devices", query)
    assert status == 400
    assert (body["parameter"], body["value"]) == (parameter, str(value))  # as the request spelled it
    assert f"{parameter}={value!r}" in body["error"]


def test_history_newest_first(api, devices):
    devices.compare_and_swap_with_history("gw-1", lambda stored: DeviceWrite(device("gw-1")))
    pending = {"status": DeviceStatus.PENDING, "deployment_id": "dep-1", "status_since": NOW}
    devices.compare_and_swap_with_history("gw-1", lambda s: DeviceWrite(s.record.model_copy(update=pending)))
    status, body = api("/devices/gw-1/history", path_parameters={"thing": "gw-1"})
    assert status == 200 and body["thing_name"] == "gw-1"
    assert [e["event"] for e in body["history"]] == ["pending", "registered"]
    status, body = api("/devices/gw-1/history", {"limit": "1"}, {"thing": "gw-1"})
    assert [e["event"] for e in body["history"]] == ["pending"]
    status, body = api("/devices/gw-1/history", {"limit": "-3"}, {"thing": "gw-1"})
    assert status == 400 and body["parameter"] == "limit"


def test_history_of_an_unknown_device_is_404(api):
    status, body = api("/devices/gw-9/history", path_parameters={"thing": "gw-9"})
    assert status == 404 and "gw-9" in body["error"]


def test_why_not_reads_the_manifest_from_the_model_registry(api, devices, deployments, monkeypatch):
    import boto3

    model = manifest()
    boto3.client("s3").create_bucket(
        Bucket="test-models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    boto3.client("s3").put_object(
        Bucket="test-models", Key="models/m/2.0.0/manifest.json", Body=model.model_dump_json()
    )
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName="edgeloop-extrusion-line-1")
    package_arn = sagemaker.create_model_package(
        ModelPackageGroupName="edgeloop-extrusion-line-1",
        ModelApprovalStatus="Approved",
        CustomerMetadataProperties={names.MANIFEST_URI_METADATA_KEY: "s3://test-models/models/m/2.0.0/manifest.json"},
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/xgboost:1"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
    )["ModelPackageArn"]
    devices.put(device("gw-x86"))
    devices.put(device("gw-old", runtime_version="0.9.0", last_seen=NOW - timedelta(minutes=1)))
    record = plan_rollout(model, devices.scan_all(), model_package_arn=package_arn, now=NOW)
    deployments.put_if_absent(record, model_updates(model, record.deployment_id, MODEL_BUCKET))
    # An old runtime excluded at planning, upgraded since: only the manifest can tell it fits now.
    devices.put(device("gw-old", runtime_version="1.2.0"))

    status, body = api("/models/2.0.0/why-not", path_parameters={"version": "2.0.0"})
    assert status == 200 and body["deployments"] == [record.deployment_id]
    explained = {d["thing_name"]: d for d in body["devices"]}
    assert explained["gw-x86"]["category"] == "pending"
    assert explained["gw-old"]["category"] == "not_targeted"
    assert "can run the fp32 tier now" in explained["gw-old"]["reason"]


def test_why_not_errors(api):
    status, body = api("/models/1.2/why-not", path_parameters={"version": "1.2"})
    assert status == 400 and (body["parameter"], body["value"]) == ("model_version", "1.2")
    status, body = api("/models/3.0.0/why-not", path_parameters={"version": "3.0.0"})
    assert status == 404 and "3.0.0" in body["error"]
