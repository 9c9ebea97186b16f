"""start_rollout end to end in moto: approval event -> registry -> manifest in S3 -> plan -> wave 0."""

from __future__ import annotations

import boto3
import pytest
from fleet_helpers import (
    DEPLOYMENT_TABLE,
    MODEL_BUCKET,
    NOW,
    RecordingDelivery,
    device,
    manifest,
)
from registry_helpers import create_package

from edgeloop.cloud.fleet.planning import deployment_id_for, model_updates, plan_rollout
from edgeloop.functions.orchestrator import handler as orchestrator_handler
from edgeloop.functions.orchestrator.logic import NotApproved, start_rollout
from edgeloop.schemas import DeploymentState, DeviceStatus, Precision, names

GROUP = names.model_package_group_name("extrusion", "line-1")
MANIFEST_KEY = f"{names.MODELS_PREFIX}/extrusion-line-1/2.0.0/manifest.json"


def _register(approval: str = "Approved", manifest_uri: str | None = None) -> str:
    boto3.client("s3").create_bucket(Bucket=MODEL_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    boto3.client("s3").put_object(Bucket=MODEL_BUCKET, Key=MANIFEST_KEY, Body=manifest().model_dump_json().encode())
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    return create_package(sagemaker, GROUP, manifest_uri or f"s3://{MODEL_BUCKET}/{MANIFEST_KEY}", approval)


def _event(arn: str, status: str = "Approved") -> dict:
    return {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "SageMaker Model Package State Change",
        "source": "aws.sagemaker",
        "account": "123456789012",
        "region": "eu-west-1",
        "resources": [arn],
        "detail": {
            "ModelPackageGroupName": GROUP,
            "ModelPackageArn": arn,
            "ModelApprovalStatus": status,
            "ModelPackageVersion": 1,
        },
    }


def _fleet(devices):
    for i in range(10):
        devices.put(device(f"gw-x{i}", current_model_version="1.0.0", status=DeviceStatus.APPLIED))
    devices.put(device("gw-arm", architecture="armv7l", supported_precisions=["fp16-leaves"]))
    devices.put(device("gw-old", runtime_version="0.9.0"))
    devices.put(device("gw-line-2", line_id="line-2"))


def test_an_approval_plans_records_marks_and_delivers_the_first_wave(devices, deployments):
    arn = _register()
    _fleet(devices)
    delivery = RecordingDelivery()

    record = start_rollout(
        _event(arn), devices=devices, deployments=deployments, delivery=delivery, model_bucket=MODEL_BUCKET, now=NOW
    )

    assert record.deployment_id == deployment_id_for(arn)
    assert record.state is DeploymentState.IN_PROGRESS
    assert deployments.get(record.deployment_id) == record
    assert [(w.precision, len(w.targets), w.state) for w in record.waves] == [
        (Precision.FP32, 1, DeploymentState.IN_PROGRESS),
        (Precision.FP32, 9, DeploymentState.PLANNED),
        (Precision.FP16_LEAVES, 1, DeploymentState.PLANNED),
    ]
    assert {e.thing_name: e.reason for e in record.excluded} == {
        "gw-old": "runtime 0.9.0 < 1.0.0 of fp32 tier; architecture x86_64 not in fp16-leaves tier [armv7l]",
        "gw-line-2": "line line-2 not targeted",
    }

    for wave in record.waves:
        for thing in wave.targets:
            target = devices.get(thing)
            assert (target.desired_model_version, target.deployment_id, target.deployment_wave) == (
                "2.0.0",
                record.deployment_id,
                wave.index,
            )
            assert (target.status, target.status_since) == (DeviceStatus.PENDING, NOW)
    assert devices.get("gw-x0").current_model_version == "1.0.0"  # still running the old model
    untouched = devices.get("gw-old")
    assert (untouched.status, untouched.deployment_id) == (DeviceStatus.REGISTERED, None)

    assert len(delivery.deliveries) == 1
    deployment_id, wave, update = delivery.deliveries[0]
    assert (deployment_id, wave) == (record.deployment_id, record.waves[0])
    assert update.payload_uri == f"s3://{MODEL_BUCKET}/{manifest().tier(Precision.FP32).payload_key}"
    assert (update.version, update.precision, update.sha256) == (
        "2.0.0",
        Precision.FP32,
        manifest().tier(Precision.FP32).sha256,
    )


def test_a_repeated_approval_event_changes_nothing(devices, deployments):
    arn = _register()
    _fleet(devices)
    delivery = RecordingDelivery()
    first = start_rollout(
        _event(arn), devices=devices, deployments=deployments, delivery=delivery, model_bucket=MODEL_BUCKET, now=NOW
    )
    devices_after_first = devices.scan_all()

    again = start_rollout(
        _event(arn), devices=devices, deployments=deployments, delivery=delivery, model_bucket=MODEL_BUCKET
    )

    assert again == first
    assert len(delivery.deliveries) == 1
    assert devices.scan_all() == devices_after_first
    assert len(deployments.scan_all()) == 1


def test_a_start_that_failed_to_deliver_completes_on_the_retried_event(devices, deployments):
    arn = _register()
    _fleet(devices)
    delivery = RecordingDelivery(fail_times=1)
    with pytest.raises(ConnectionError):
        start_rollout(
            _event(arn), devices=devices, deployments=deployments, delivery=delivery, model_bucket=MODEL_BUCKET, now=NOW
        )
    assert deployments.get(deployment_id_for(arn)).state is DeploymentState.PLANNED

    record = start_rollout(
        _event(arn), devices=devices, deployments=deployments, delivery=delivery, model_bucket=MODEL_BUCKET, now=NOW
    )
    assert record.state is DeploymentState.IN_PROGRESS and delivery.waves == [0]


@pytest.mark.parametrize("status", ["Rejected", "PendingManualApproval"])
def test_events_other_than_approval_are_ignored(devices, deployments, status):
    arn = _register(approval=status)
    _fleet(devices)
    delivery = RecordingDelivery()
    with pytest.raises(NotApproved, match=status):
        start_rollout(
            _event(arn, status), devices=devices, deployments=deployments, delivery=delivery, model_bucket=MODEL_BUCKET
        )
    # An "Approved" event for a package the registry no longer holds approved is ignored too.
    with pytest.raises(NotApproved, match=f"is {status} in the registry"):
        start_rollout(
            _event(arn), devices=devices, deployments=deployments, delivery=delivery, model_bucket=MODEL_BUCKET
        )
    assert delivery.deliveries == [] and deployments.scan_all() == []


def test_a_package_without_manifest_metadata_is_refused_by_name(devices, deployments):
    arn = _register(manifest_uri="https://example.invalid/manifest.json")
    with pytest.raises(ValueError, match="manifest uri='https://example.invalid/manifest.json' is not an s3:// URI"):
        start_rollout(
            _event(arn),
            devices=devices,
            deployments=deployments,
            delivery=RecordingDelivery(),
            model_bucket=MODEL_BUCKET,
        )


def test_a_malformed_event_is_refused_naming_the_field(devices, deployments):
    common = {
        "devices": devices,
        "deployments": deployments,
        "delivery": RecordingDelivery(),
        "model_bucket": MODEL_BUCKET,
    }
    with pytest.raises(ValueError, match="detail-type='Object Created'"):
        start_rollout({**_event("arn:x"), "detail-type": "Object Created"}, **common)
    event = _event("arn:x")
    del event["detail"]["ModelPackageArn"]
    with pytest.raises(ValueError, match="detail.ModelPackageArn"):
        start_rollout(event, **common)


def test_handler_rolls_out_with_the_delivery_from_settings(devices, deployments, handler_delivery):
    arn = _register()
    _fleet(devices)
    delivery = handler_delivery()
    started = orchestrator_handler.lambda_handler(_event(arn), None)
    ignored = orchestrator_handler.lambda_handler(_event(arn, "Rejected"), None)
    assert started["state"] == "in_progress" and started["deployment_id"] == deployment_id_for(arn)
    assert "is Rejected" in ignored["ignored"]
    assert delivery.waves == [0] and delivery.closed


def test_a_deployment_of_twenty_thousand_devices_fits_one_item(deployments):
    """The record lists every target; compressed, 20,000 realistic thing names stay far below 400 KB."""
    fleet = [
        device(f"plant-{i % 7:02d}-line-{i % 13:02d}-gateway-{i:06d}", current_model_version="1.0.0")
        for i in range(20_000)
    ]
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/9"
    record = plan_rollout(manifest(), fleet, model_package_arn=arn, now=NOW)
    assert len(record.targets) == 20_000
    assert deployments.put_if_absent(record, model_updates(manifest(), record.deployment_id, MODEL_BUCKET))

    item = boto3.client("dynamodb").get_item(
        TableName=DEPLOYMENT_TABLE, Key={names.DEPLOYMENT_TABLE_KEYS.partition_key: {"S": record.deployment_id}}
    )["Item"]
    assert len(item["document"]["B"]) < 200_000
    assert deployments.get(record.deployment_id) == record
