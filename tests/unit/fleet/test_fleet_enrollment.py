"""Enrollment: a gateway that announces itself after an approval gets the approved model through a
deployment of its own (planned, recorded, delivered and reported like a rollout wave)."""

from __future__ import annotations

from datetime import timedelta

import boto3
import pytest
from fleet_helpers import MODEL_BUCKET, NOW, RecordingDelivery, announcement, manifest, rule_event
from registry_helpers import create_package

from edgeloop.cloud.fleet.enrollment import ENROLLMENT_PREFIX, enroll, enrollment_id
from edgeloop.cloud.fleet.planning import deployment_id_for, model_updates, plan_rollout
from edgeloop.functions.device_registry import handler as registry_handler
from edgeloop.functions.device_registry.logic import handle_announcement
from edgeloop.functions.orchestrator.logic import start_rollout
from edgeloop.functions.status_intake.logic import handle_status_report
from edgeloop.schemas import DeploymentState, DeviceEvent, DeviceStatus, ModelStatusReport, names

GROUP = names.model_package_group_name("extrusion", "line-1")


def register(version: str, approval: str = "Approved") -> str:
    """A model package of the line's group whose manifest is `manifest(version=...)`."""
    s3, sagemaker = boto3.client("s3"), boto3.client("sagemaker")
    if MODEL_BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=MODEL_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    key = f"{names.MODELS_PREFIX}/extrusion-line-1/{version}/manifest.json"
    s3.put_object(Bucket=MODEL_BUCKET, Key=key, Body=manifest(version=version).model_dump_json().encode())
    return create_package(sagemaker, GROUP, f"s3://{MODEL_BUCKET}/{key}", approval)


def rolled_out(deployments, arn: str, version: str, state: DeploymentState = DeploymentState.SUCCEEDED) -> None:
    """Record the package's own rollout as ended in `state` (SUCCEEDED: a newcomer may get it)."""
    plan = plan_rollout(manifest(version=version), [], model_package_arn=arn, now=NOW)
    record = plan.model_copy(update={"state": state})
    assert deployments.put_if_absent(record, model_updates(manifest(version=version), plan.deployment_id, MODEL_BUCKET))


def approval(arn: str) -> dict:
    return {
        "detail-type": names.MODEL_PACKAGE_STATE_CHANGE,
        "source": names.MODEL_PACKAGE_EVENT_SOURCE,
        "detail": {"ModelPackageArn": arn, "ModelApprovalStatus": "Approved", "ModelPackageGroupName": GROUP},
    }


def announce(devices, deployments, delivery, thing="gw-new", at=NOW, **fields):
    registration = handle_announcement(
        rule_event(names.announce_topic(thing), announcement(thing, sent_at=at, **fields).model_dump(mode="json"), at),
        devices,
        now=at,
    )
    return enroll(
        registration.record,
        devices=devices,
        deployments=deployments,
        delivery=delivery,
        model_bucket=MODEL_BUCKET,
        now=at,
    )


def report(devices, deployments, delivery, thing, deployment_id, status, at, version="2.0.0"):
    document = ModelStatusReport(
        thing_name=thing,
        deployment_id=deployment_id,
        model_id="extrusion-line-1",
        version=version,
        status=status,
        sent_at=at,
    ).model_dump(mode="json")
    event = rule_event(names.model_status_topic(thing), document, at)
    return handle_status_report(event, devices=devices, deployments=deployments, delivery=delivery, now=at)


def test_a_gateway_added_after_approval_gets_the_approved_model_with_a_history_saying_why(devices, deployments):
    arn = register("2.0.0")
    rollout = start_rollout(
        approval(arn), devices=devices, deployments=deployments, delivery=RecordingDelivery(), model_bucket=MODEL_BUCKET
    )
    assert rollout.state is DeploymentState.FAILED and rollout.waves == []  # approved before any gateway existed
    delivery = RecordingDelivery()
    enrollment = announce(devices, deployments, delivery, at=NOW + timedelta(hours=1))
    assert enrollment.started and enrollment.deployment.deployment_id == enrollment_id(arn, "gw-new")
    ((deployment_id, wave, update),) = delivery.deliveries
    assert deployment_id.startswith(ENROLLMENT_PREFIX) and wave.targets == ["gw-new"]
    assert (update.deployment_id, update.version, update.precision.value) == (deployment_id, "2.0.0", "fp32")
    pending = devices.get("gw-new")
    assert (pending.status, pending.desired_model_version, pending.deployment_id) == (
        DeviceStatus.PENDING,
        "2.0.0",
        deployment_id,
    )
    assert pending.reason.startswith("enrollment: extrusion-line-1 2.0.0 (fp32) was approved for line line-1")

    after = report(
        devices,
        deployments,
        delivery,
        "gw-new",
        deployment_id,
        DeviceStatus.APPLIED,
        NOW + timedelta(hours=1, minutes=2),
    )
    assert after.record.current_model_version == "2.0.0" and after.deployment.state is DeploymentState.SUCCEEDED
    history = devices.history("gw-new")
    assert [e.event for e in history] == [DeviceEvent.APPLIED, DeviceEvent.ENROLLED, DeviceEvent.REGISTERED]
    assert "enrollment" in history[1].reason and history[1].deployment_id == deployment_id


def test_a_device_that_runs_the_approved_version_gets_nothing(devices, deployments):
    rolled_out(deployments, register("2.0.0"), "2.0.0")
    delivery = RecordingDelivery()
    enrollment = announce(devices, deployments, delivery, current_model_version="2.0.0")
    assert enrollment.deployment is None and "already runs the approved extrusion-line-1 2.0.0" in enrollment.reason
    assert delivery.deliveries == [] and len(deployments.scan_all()) == 1  # the package's own rollout
    assert devices.get("gw-new").status is DeviceStatus.REGISTERED


def test_announcing_again_does_not_enroll_twice(devices, deployments):
    arn = register("2.0.0")
    rolled_out(deployments, arn, "2.0.0")
    delivery = RecordingDelivery()
    announce(devices, deployments, delivery)
    again = announce(devices, deployments, delivery, at=NOW + timedelta(minutes=1))
    assert again.deployment is None and "is bringing it 2.0.0" in again.reason
    deployment_id = enrollment_id(arn, "gw-new")
    report(devices, deployments, delivery, "gw-new", deployment_id, DeviceStatus.REJECTED, NOW + timedelta(minutes=2))
    third = announce(devices, deployments, delivery, at=NOW + timedelta(minutes=3))
    assert third.deployment.deployment_id == deployment_id and "enrolled before with 2.0.0" in third.reason
    assert len(delivery.deliveries) == 1  # the rejection is not retried on every restart


def test_a_package_whose_rollout_was_rolled_back_is_passed_over(devices, deployments):
    rolled_out(deployments, register("1.0.0"), "1.0.0")
    rolled_out(deployments, register("2.0.0"), "2.0.0", DeploymentState.ROLLED_BACK)
    delivery = RecordingDelivery()
    enrollment = announce(devices, deployments, delivery)
    assert enrollment.started and delivery.deliveries[0][2].version == "1.0.0"


def test_a_device_that_can_run_no_tier_is_told_why(devices, deployments):
    rolled_out(deployments, register("2.0.0"), "2.0.0")
    enrollment = announce(devices, deployments, RecordingDelivery(), architecture="armv7l")
    assert enrollment.deployment is None and enrollment.reason.startswith("cannot run extrusion-line-1 2.0.0: ")
    assert len(deployments.scan_all()) == 1  # the package's own rollout, no enrollment


def test_without_an_approved_package_nothing_happens(devices, deployments):
    register("2.0.0", approval="PendingManualApproval")
    enrollment = announce(devices, deployments, RecordingDelivery())
    assert enrollment.deployment is None and enrollment.reason == f"no approved model in {GROUP}"
    other_line = announce(devices, deployments, RecordingDelivery(), thing="gw-2", line_id="line-9")
    assert other_line.reason == f"no approved model in {names.model_package_group_name('extrusion', 'line-9')}"


def test_a_failed_delivery_is_completed_when_the_invocation_is_retried(devices, deployments):
    arn = register("2.0.0")
    rolled_out(deployments, arn, "2.0.0")
    with pytest.raises(ConnectionError):
        announce(devices, deployments, RecordingDelivery(fail_times=1))
    assert deployments.get(enrollment_id(arn, "gw-new")).state is DeploymentState.PLANNED
    delivery = RecordingDelivery()
    retried = announce(devices, deployments, delivery)
    assert retried.started and len(delivery.deliveries) == 1


def test_the_registry_handler_enrolls_with_the_delivery_from_settings(devices, deployments, handler_delivery):
    arn = register("2.0.0")
    rolled_out(deployments, arn, "2.0.0")
    delivery = handler_delivery()
    registry_handler._settings.cache_clear()
    try:
        document = announcement("gw-new").model_dump(mode="json")
        answer = registry_handler.lambda_handler(
            rule_event(names.announce_topic("gw-new"), document).model_dump(), None
        )
    finally:
        registry_handler._settings.cache_clear()
    assert answer["enrollment_deployment_id"] == enrollment_id(arn, "gw-new")
    assert answer["enrollment"].startswith("enrollment: ") and delivery.waves == [0]
    assert deployment_id_for(arn) != answer["enrollment_deployment_id"]


def test_a_rollout_that_picks_the_device_meanwhile_wins_over_its_enrollment(devices, deployments):
    from edgeloop.cloud.fleet.enrollment import enroll as enroll_device

    rolled_out(deployments, register("1.0.0"), "1.0.0")
    arn = register("2.0.0")
    registration = handle_announcement(
        rule_event(names.announce_topic("gw-new"), announcement("gw-new").model_dump(mode="json")), devices, now=NOW
    )
    start_rollout(  # 2.0.0's rollout marks the device PENDING after its announcement was read
        approval(arn), devices=devices, deployments=deployments, delivery=RecordingDelivery(), model_bucket=MODEL_BUCKET
    )
    delivery = RecordingDelivery()
    enrollment = enroll_device(
        registration.record,
        devices=devices,
        deployments=deployments,
        delivery=delivery,
        model_bucket=MODEL_BUCKET,
        now=NOW,
    )
    assert enrollment.deployment is None and deployment_id_for(arn) in enrollment.reason
    assert delivery.deliveries == [] and devices.get("gw-new").deployment_id == deployment_id_for(arn)


def test_the_newest_approved_version_is_the_one_a_newcomer_gets(devices, deployments):
    rolled_out(deployments, register("1.0.0"), "1.0.0")
    rolled_out(deployments, register("2.0.0"), "2.0.0")
    register("3.0.0", approval="Rejected")
    delivery = RecordingDelivery()
    assert announce(devices, deployments, delivery).started
    assert [update.version for _, _, update in delivery.deliveries] == ["2.0.0"]


@pytest.mark.parametrize("state", [None, DeploymentState.PLANNED, DeploymentState.IN_PROGRESS])
def test_a_package_not_yet_rolled_out_is_passed_over_so_no_newcomer_bypasses_its_canary(devices, deployments, state):
    """Not planned: the orchestrator's plan will include the registered device; still rolling out: the
    newcomer keeps to the model before it rather than skip the canary waves."""
    rolled_out(deployments, register("1.0.0"), "1.0.0")
    newest = register("2.0.0")
    if state is not None:
        rolled_out(deployments, newest, "2.0.0", state)
    delivery = RecordingDelivery()
    assert announce(devices, deployments, delivery).started
    assert [update.version for _, _, update in delivery.deliveries] == ["1.0.0"]
    alone = announce(devices, deployments, RecordingDelivery(), thing="gw-9", line_id="line-9")
    assert alone.deployment is None


def test_nothing_is_sent_while_the_only_approved_package_awaits_its_rollout(devices, deployments):
    arn = register("2.0.0")
    enrollment = announce(devices, deployments, RecordingDelivery())
    assert enrollment.deployment is None and f"{arn} (its rollout not planned yet)" in enrollment.reason
