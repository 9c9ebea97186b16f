"""Enrollment: a gateway that announces itself after a model was approved gets that model.

A rollout's targets are fixed when the model is approved, so a gateway installed (or back, or
replaced) later would never hear of it. When a device announces itself, the registry asks here
for the currently approved model of its use case and line: the newest Approved package of the
group `edgeloop-<use case>-<line>` whose own rollout has finished well (succeeded, or found no
device to take it at approval). Other packages are passed over for the one before them: one whose
rollout was rolled back, failed in a wave or timed out; one the orchestrator has not planned yet
(its plan will include this device, which is registered now); and one still rolling out, whose
canary waves a newcomer must not bypass (it gets the previous model meanwhile). The device then gets it the way a
rollout wave delivers: one more DeploymentRecord (id `enroll-<thing>-<digest>`, one wave with the
device), planned by the orchestrator's own `plan_rollout` (the same line, offline and
compatibility-tier rule), recorded in the deployment table, the device marked PENDING with event
ENROLLED and a reason that says why, delivered by `begin`. Its status reports then go through
status intake and the wave controller like any wave's: applied completes it, a rejection fails
and rolls it back, silence times it out.

Nothing is delivered to a device that already runs the approved version, that a rollout is
bringing a model to (PENDING), that rejected this package in its rollout, or that was enrolled
with this package before (the id is per package and device: an announcement repeated after a
failed enrollment does not retry it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgeloop.cloud import model_registry
from edgeloop.cloud.aws import client as aws_client
from edgeloop.schemas import (
    DeploymentRecord,
    DeploymentState,
    DeviceEvent,
    DeviceRecord,
    DeviceStatus,
    ModelManifest,
    RolloutPolicy,
    names,
)

from .delivery import ModelDelivery
from .deployments import DeploymentTable
from .devices import DeviceTable, DeviceWrite, StoredDevice
from .planning import deployment_id_for, model_updates, pending_update, plan_rollout
from .waves import begin

APPROVED = "Approved"
ENROLLMENT_PREFIX = "enroll-"
_THING_SLUG_MAX = 40
_REFUSED_BEFORE = (DeviceStatus.REJECTED, DeviceStatus.ROLLED_BACK)


@dataclass(frozen=True)
class ApprovedModel:
    model_package_arn: str
    manifest: ModelManifest


@dataclass(frozen=True)
class Enrollment:
    """What enrollment did for a device: the deployment it started (or found), or None and why not."""

    deployment: DeploymentRecord | None
    reason: str

    @property
    def started(self) -> bool:
        return self.deployment is not None and self.deployment.state is DeploymentState.IN_PROGRESS


def enrollment_id(model_package_arn: str, thing_name: str) -> str:
    """One per (package, device); [A-Za-z0-9-] like every deployment id, short enough for a cohort group."""
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", thing_name).strip("-")[:_THING_SLUG_MAX].strip("-")
    digest = hashlib.sha256(f"{model_package_arn}/{thing_name}".encode()).hexdigest()[:12]
    return f"{ENROLLMENT_PREFIX}{slug}-{digest}" if slug else f"{ENROLLMENT_PREFIX}{digest}"


def rollout_is_usable(record: DeploymentRecord | None) -> bool:
    """A package's rollout has finished well, so a newcomer may get its model without a canary of its own."""
    if record is None:
        return False  # not planned yet: the orchestrator's plan will include the (registered) device
    if record.state is DeploymentState.SUCCEEDED:
        return True
    # FAILED without a failed wave: no device could take it at approval (e.g. none had announced yet).
    return record.state is DeploymentState.FAILED and not any(w.state is DeploymentState.FAILED for w in record.waves)


def approved_package_arns(use_case: str, line_id: str, sagemaker: Any | None = None) -> list[str]:
    """The Approved packages of the (use case, line) group, newest version first."""
    sagemaker = sagemaker if sagemaker is not None else aws_client("sagemaker")
    group = names.model_package_group_name(use_case, line_id)
    summaries = []
    paginator = sagemaker.get_paginator("list_model_packages")
    try:
        for page in paginator.paginate(ModelPackageGroupName=group, ModelApprovalStatus=APPROVED):
            summaries.extend(page.get("ModelPackageSummaryList", []))
    except sagemaker.exceptions.ResourceNotFound:
        return []  # no group yet: nothing trained for this line
    summaries.sort(key=lambda s: (s.get("ModelPackageVersion") or 0, s.get("CreationTime") or 0), reverse=True)
    return [s["ModelPackageArn"] for s in summaries]


def current_approved_model(
    device: DeviceRecord,
    deployments: DeploymentTable,
    *,
    package_arns: Callable[[str, str], list[str]] = approved_package_arns,
) -> tuple[ApprovedModel | None, str]:
    """The model a newcomer of the device's use case and line gets, or None and why none."""
    passed_over = []
    for arn in package_arns(device.use_case, device.line_id):
        rollout = deployments.get(deployment_id_for(arn))
        if not rollout_is_usable(rollout):
            passed_over.append(f"{arn} (its rollout {rollout.state.value if rollout else 'not planned yet'})")
            continue
        package = model_registry.describe_model_package(arn)
        if package.get("ModelApprovalStatus") != APPROVED:
            continue  # rejected again since the listing
        manifest = model_registry.load_manifest(model_registry.manifest_uri_of(package))
        return ApprovedModel(arn, manifest), ""
    group = names.model_package_group_name(device.use_case, device.line_id)
    skipped = f"; passed over {', '.join(passed_over)}" if passed_over else ""
    return None, f"no approved model in {group}{skipped}"


def enroll(
    device: DeviceRecord,
    *,
    devices: DeviceTable,
    deployments: DeploymentTable,
    delivery: ModelDelivery,
    model_bucket: str,
    now: datetime,
    policy: RolloutPolicy | None = None,
    package_arns: Callable[[str, str], list[str]] = approved_package_arns,
) -> Enrollment:
    """Give `device` the currently approved model of its line, unless it has it or should not get it."""
    if device.status is DeviceStatus.PENDING:
        return _resume(device, deployments, delivery, now)
    approved, why_none = current_approved_model(device, deployments, package_arns=package_arns)
    if approved is None:
        return Enrollment(None, why_none)
    manifest, arn = approved.manifest, approved.model_package_arn
    if device.current_model_version == manifest.version and device.current_model_id in (None, manifest.model_id):
        return Enrollment(None, f"already runs the approved {manifest.model_id} {manifest.version}")
    if device.deployment_id == deployment_id_for(arn) and device.status in _REFUSED_BEFORE:
        return Enrollment(None, f"{device.status.value} {manifest.version} in its rollout: {device.reason}")
    plan = plan_rollout(manifest, [device], model_package_arn=arn, policy=policy, now=now)
    if not plan.waves:
        why = plan.excluded[0].reason if plan.excluded else f"use case {manifest.use_case!r} is not the device's"
        return Enrollment(None, f"cannot run {manifest.model_id} {manifest.version}: {why}")
    record = plan.model_copy(update={"deployment_id": enrollment_id(arn, device.thing_name)})
    if not deployments.put_if_absent(record, model_updates(manifest, record.deployment_id, model_bucket)):
        record = deployments.get(record.deployment_id)
        if record.state is not DeploymentState.PLANNED:
            return Enrollment(
                record, f"enrolled before with {manifest.version}: {record.deployment_id} {record.state.value}"
            )
    reason = (
        f"enrollment: {manifest.model_id} {manifest.version} ({record.waves[0].precision.value}) was approved "
        f"for line {device.line_id} before this device announced itself ({arn})"
    )
    marked = devices.compare_and_swap_with_history(
        device.thing_name, _pending_for_enrollment(record, now, reason), event=DeviceEvent.ENROLLED
    )
    if marked is None or marked.deployment_id != record.deployment_id:
        # A rollout picked the device between its announcement and here; the enrollment stays PLANNED.
        picked_by = "nobody (deregistered)" if marked is None else marked.deployment_id
        return Enrollment(None, f"not enrolled: deployment {picked_by} is bringing it a model")
    return Enrollment(begin(record.deployment_id, deployments_table=deployments, delivery=delivery, now=now), reason)


def _resume(device: DeviceRecord, deployments: DeploymentTable, delivery: ModelDelivery, now: datetime) -> Enrollment:
    """A PENDING device: an enrollment recorded but not delivered (the delivery failed, the invocation is
    retried) is delivered now; any other deployment bringing it a model is left to do so."""
    deployment_id = device.deployment_id or ""
    record = deployments.get(deployment_id) if deployment_id.startswith(ENROLLMENT_PREFIX) else None
    if record is None or record.state is not DeploymentState.PLANNED:
        return Enrollment(None, f"deployment {deployment_id} is bringing it {device.desired_model_version}")
    return Enrollment(begin(deployment_id, deployments_table=deployments, delivery=delivery, now=now), device.reason)


def _pending_for_enrollment(
    record: DeploymentRecord, now: datetime, reason: str
) -> Callable[[StoredDevice | None], DeviceWrite | None]:
    def mark(stored: StoredDevice | None) -> DeviceWrite | None:
        if stored is None or stored.record.deployment_id == record.deployment_id:
            return None  # deregistered meanwhile, or marked by an earlier run
        device = stored.record
        if device.status is DeviceStatus.PENDING:
            return None  # a rollout marked it since the announcement: it brings the model
        return DeviceWrite(device.model_copy(update=pending_update(device, record, 0, now, reason=reason)))

    return mark
