"""From an approved model package to a planned, started rollout.

`plan_rollout` is pure: which devices get the model, at which precision, in which waves, and why
every other device of the use case does not. `start_rollout` wires it to the registry, the
tables and the delivery, and is safe to run twice for the same approval (EventBridge delivers at
least once): the deployment id is derived from the model package ARN and every write is
conditional.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeloop.cloud import model_registry
from edgeloop.cloud.fleet.delivery import ModelDelivery
from edgeloop.cloud.fleet.deployments import DeploymentTable
from edgeloop.cloud.fleet.devices import DeviceTable, DeviceWrite, StoredDevice
from edgeloop.cloud.fleet.waves import begin
from edgeloop.schemas import (
    CompatibilityTier,
    DeploymentRecord,
    DeploymentState,
    DeviceEvent,
    DeviceRecord,
    DeviceStatus,
    ExcludedDevice,
    ModelManifest,
    ModelUpdate,
    Precision,
    RolloutWave,
)
from edgeloop.schemas.common import semver_key

APPROVAL_DETAIL_TYPE = "SageMaker Model Package State Change"
APPROVED = "Approved"
# Most precise first: a device gets the first tier it can run.
PRECISION_ORDER = (Precision.FP32, Precision.FP16_LEAVES, Precision.QUANTIZED)
_DEPLOYMENT_SLUG_MAX = 60


# --- planning ------------------------------------------------------------------------------------


def deployment_id_for(model_package_arn: str) -> str:
    """Stable per model package: a repeated approval event maps to the same deployment.

    Readable part from the ARN's resource (group and version), plus a digest of the whole ARN so
    packages of different accounts or regions never collide. Fits Greengrass and IoT name rules.
    """
    resource = model_package_arn.split(":model-package/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", resource).strip("-")[:_DEPLOYMENT_SLUG_MAX].strip("-")
    digest = hashlib.sha256(model_package_arn.encode()).hexdigest()[:12]
    return f"{slug}-{digest}" if slug else digest


def plan_rollout(
    manifest: ModelManifest,
    devices: list[DeviceRecord],
    *,
    model_package_arn: str,
    canary_share: float = 0.1,
    failure_threshold: float = 0.2,
    now: datetime,
) -> DeploymentRecord:
    if not 0 < canary_share <= 1:
        raise ValueError(f"canary_share={canary_share} must be in (0, 1]")
    if not 0 <= failure_threshold <= 1:
        raise ValueError(f"failure_threshold={failure_threshold} must be in [0, 1]")
    deployment_id = deployment_id_for(model_package_arn)
    cohorts: dict[Precision, list[str]] = {}
    excluded: list[ExcludedDevice] = []
    for device in sorted(devices, key=lambda d: d.thing_name):
        if device.use_case != manifest.use_case:
            continue  # another use case's devices are not candidates, so not "excluded" either
        tier, reason = choose_tier(manifest, device)
        if tier is None:
            excluded.append(ExcludedDevice(thing_name=device.thing_name, reason=reason))
        else:
            cohorts.setdefault(tier.precision, []).append(device.thing_name)
    waves = _waves(deployment_id, cohorts, canary_share, failure_threshold)
    nobody = (
        ""
        if waves
        else (
            f"no device of use case {manifest.use_case!r} on lines {manifest.line_ids} can run any tier "
            f"of {manifest.model_id} {manifest.version}"
        )
    )
    return DeploymentRecord(
        deployment_id=deployment_id,
        model_id=manifest.model_id,
        model_version=manifest.version,
        model_package_arn=model_package_arn,
        waves=waves,
        excluded=excluded,
        state=DeploymentState.PLANNED if waves else DeploymentState.FAILED,
        reason=nobody,
        created_at=now,
    )


def choose_tier(manifest: ModelManifest, device: DeviceRecord) -> tuple[CompatibilityTier | None, str]:
    """The most precise tier the device can run, or None and why not (one reason per tier)."""
    if device.line_id not in manifest.line_ids:
        return None, f"line {device.line_id} not targeted"
    if device.status is DeviceStatus.OFFLINE:
        return None, f"offline since {device.status_since.isoformat()}"
    reasons = []
    for tier in sorted(manifest.tiers, key=lambda t: PRECISION_ORDER.index(t.precision)):
        mismatch = tier_mismatch(tier, device)
        if mismatch is None:
            return tier, ""
        reasons.append(mismatch)
    return None, "; ".join(reasons)


def tier_mismatch(tier: CompatibilityTier, device: DeviceRecord) -> str | None:
    if device.architecture not in tier.architectures:
        allowed = ", ".join(a.value for a in tier.architectures)
        return f"architecture {device.architecture.value} not in {tier.precision.value} tier [{allowed}]"
    if semver_key(device.runtime_version) < semver_key(tier.min_runtime_version):
        return f"runtime {device.runtime_version} < {tier.min_runtime_version} of {tier.precision.value} tier"
    if tier.precision not in device.supported_precisions:
        supported = ", ".join(p.value for p in device.supported_precisions)
        return f"precision {tier.precision.value} not in supported precisions [{supported}]"
    return None


def _waves(
    deployment_id: str, cohorts: Mapping[Precision, list[str]], canary_share: float, failure_threshold: float
) -> list[RolloutWave]:
    """Per cohort, most precise first: a canary wave, then the rest."""
    waves: list[RolloutWave] = []
    for precision in PRECISION_ORDER:
        things = cohorts.get(precision)
        if not things:
            continue
        # Canaries are drawn by a digest of (deployment, thing): stable for one rollout, but not
        # always the same devices (nor the alphabetically first line) for every rollout.
        ordered = sorted(things, key=lambda t: hashlib.sha256(f"{deployment_id}/{t}".encode()).hexdigest())
        # round(): 0.1 * 30 is 3.0000000000000004 in binary floating point, ceil would give 4.
        canaries = min(len(ordered), max(1, math.ceil(round(canary_share * len(ordered), 9))))
        for targets in (ordered[:canaries], ordered[canaries:]):
            if targets:
                waves.append(
                    RolloutWave(
                        index=len(waves), precision=precision, targets=targets, failure_threshold=failure_threshold
                    )
                )
    return waves


def model_updates(manifest: ModelManifest, deployment_id: str, model_bucket: str) -> dict[Precision, ModelUpdate]:
    """The weight-only update each cohort receives: its tier's payload (signature, size, compatibility), the
    model's feature layout. The device re-checks all of it before loading."""
    return {
        tier.precision: ModelUpdate(
            deployment_id=deployment_id,
            model_id=manifest.model_id,
            version=manifest.version,
            precision=tier.precision,
            payload_uri=f"s3://{model_bucket}/{tier.payload_key}",
            sha256=tier.sha256,
            features=manifest.features,
            feature_schema_hash=manifest.feature_schema_hash,
            signature=tier.signature,
            payload_bytes=tier.payload_bytes,
            architectures=tier.architectures,
            min_runtime_version=tier.min_runtime_version,
        )
        for tier in manifest.tiers
    }


# --- starting ------------------------------------------------------------------------------------


class ApprovalEvent(BaseModel):
    """The part of an EventBridge "SageMaker Model Package State Change" event the rollout needs."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    model_package_arn: str = Field(alias="ModelPackageArn", min_length=1)
    approval_status: str = Field(alias="ModelApprovalStatus", min_length=1)

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> ApprovalEvent:
        detail_type = event.get("detail-type")
        if detail_type != APPROVAL_DETAIL_TYPE:
            raise ValueError(f"detail-type={detail_type!r} is not {APPROVAL_DETAIL_TYPE!r}")
        detail = event.get("detail")
        if not isinstance(detail, Mapping):
            raise ValueError(f"detail={detail!r} is not an object")
        try:
            return cls.model_validate(detail)
        except ValidationError as exc:
            problems = "; ".join(
                f"detail.{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"not a model package state change: {problems}") from exc


class NotApproved(Exception):
    """The model package is not (or no longer) approved: nothing to roll out."""


def start_rollout(
    event: Mapping[str, Any],
    *,
    devices: DeviceTable,
    deployments: DeploymentTable,
    delivery: ModelDelivery,
    model_bucket: str,
    now: datetime | None = None,
    canary_share: float = 0.1,
    failure_threshold: float = 0.2,
) -> DeploymentRecord:
    """Plan, record and start the rollout of an approved model package; raises NotApproved otherwise."""
    now = now or datetime.now(UTC)
    approval = ApprovalEvent.from_event(event)
    if approval.approval_status != APPROVED:
        raise NotApproved(f"model package {approval.model_package_arn} is {approval.approval_status}")
    deployment_id = deployment_id_for(approval.model_package_arn)
    stored = deployments.get(deployment_id)
    if stored is not None and stored.state is not DeploymentState.PLANNED:
        return stored  # a repeated event: the rollout is under way or over
    if stored is None:
        stored = _plan_and_record(
            approval.model_package_arn, devices, deployments, model_bucket, now, canary_share, failure_threshold
        )
        if stored.state is not DeploymentState.PLANNED:
            return stored
    _mark_targets_pending(stored, devices, now)
    return begin(deployment_id, deployments_table=deployments, delivery=delivery, now=now)


def _plan_and_record(
    model_package_arn: str,
    devices: DeviceTable,
    deployments: DeploymentTable,
    model_bucket: str,
    now: datetime,
    canary_share: float,
    failure_threshold: float,
) -> DeploymentRecord:
    package = model_registry.describe_model_package(model_package_arn)
    status = package.get("ModelApprovalStatus")
    if status != APPROVED:
        # The event is older than the registry: the package was rejected again since.
        raise NotApproved(f"model package {model_package_arn} is {status} in the registry")
    manifest = model_registry.load_manifest(model_registry.manifest_uri_of(package))
    record = plan_rollout(
        manifest,
        devices.scan_all(),
        model_package_arn=model_package_arn,
        canary_share=canary_share,
        failure_threshold=failure_threshold,
        now=now,
    )
    if deployments.put_if_absent(record, model_updates(manifest, record.deployment_id, model_bucket)):
        return record
    return deployments.get(record.deployment_id)  # a concurrent duplicate event recorded it first


def _mark_targets_pending(record: DeploymentRecord, devices: DeviceTable, now: datetime) -> None:
    for wave in record.waves:
        for thing in wave.targets:
            devices.compare_and_swap_with_history(
                thing, _pending_in(record, wave.index, now), event=DeviceEvent.PENDING
            )


def _pending_in(
    record: DeploymentRecord, wave_index: int, now: datetime
) -> Callable[[StoredDevice | None], DeviceWrite | None]:
    def mark(stored: StoredDevice | None) -> DeviceWrite | None:
        if stored is None:
            return None  # deregistered since planning; its wave will count it as failed
        device = stored.record
        if device.deployment_id == record.deployment_id and device.desired_model_version == record.model_version:
            return None  # marked by an earlier run of this event; do not undo later reports
        update = {
            "desired_model_version": record.model_version,
            "deployment_id": record.deployment_id,
            "deployment_wave": wave_index,  # where status intake counts its reports
            "status": DeviceStatus.PENDING,
            "status_since": now,
            "reason": "",
        }
        if device.current_model_version != record.model_version:
            # What a rollback of this rollout restores (waves.roll_back).
            update["previous_model_id"] = device.current_model_id
            update["previous_model_version"] = device.current_model_version
        return DeviceWrite(device.model_copy(update=update))

    return mark
