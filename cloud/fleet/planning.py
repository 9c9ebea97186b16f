"""Which devices get a model, at which precision, in which waves, and why every other device does not.

Pure functions of a manifest, the device records and the rollout policy: the orchestrator plans
with them, and the fleet queries (why-not) and the CLI's plan preview explain with the same ones.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from datetime import datetime

from edgeloop.schemas import (
    CompatibilityTier,
    DeploymentRecord,
    DeploymentState,
    DeviceRecord,
    DeviceStatus,
    ExcludedDevice,
    ModelManifest,
    ModelUpdate,
    Precision,
    RolloutPolicy,
    RolloutWave,
)
from edgeloop.schemas.common import s3_uri
from edgeloop.schemas.compatibility import PRECISION_ORDER, best_tier

_DEPLOYMENT_SLUG_MAX = 60


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
    policy: RolloutPolicy | None = None,
    now: datetime,
) -> DeploymentRecord:
    """The rollout of `manifest` to `devices` under `policy` (default: RolloutPolicy's defaults)."""
    policy = policy or RolloutPolicy()
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
    waves = plan_waves(deployment_id, cohorts, policy)
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
        timeout_s=policy.rollout_timeout_s,
    )


def choose_tier(manifest: ModelManifest, device: DeviceRecord) -> tuple[CompatibilityTier | None, str]:
    """The most precise tier the device can run, or None and why not (one reason per tier)."""
    if device.line_id not in manifest.line_ids:
        return None, f"line {device.line_id} not targeted"
    if device.status is DeviceStatus.OFFLINE:
        return None, f"offline since {device.status_since.isoformat()}"
    tier, problems = best_tier(manifest.tiers, device)
    return tier, ("" if tier is not None else "; ".join(map(str, problems)))


def pending_update(
    device: DeviceRecord, record: DeploymentRecord, wave_index: int, now: datetime, *, reason: str = ""
) -> dict:
    """How a device picked by `record` (in wave `wave_index`) is marked: PENDING for the rollout's
    version, counted in that wave, with what a rollback of the rollout would restore."""
    update = {
        "desired_model_version": record.model_version,
        "deployment_id": record.deployment_id,
        "deployment_wave": wave_index,  # where status intake counts its reports
        "status": DeviceStatus.PENDING,
        "status_since": now,
        "reason": reason,
    }
    if device.current_model_version != record.model_version:
        update["previous_model_id"] = device.current_model_id
        update["previous_model_version"] = device.current_model_version
    return update


def plan_waves(deployment_id: str, cohorts: Mapping[Precision, list[str]], policy: RolloutPolicy) -> list[RolloutWave]:
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
        canaries = min(len(ordered), max(1, math.ceil(round(policy.canary_share * len(ordered), 9))))
        for targets in (ordered[:canaries], ordered[canaries:]):
            if targets:
                waves.append(
                    RolloutWave(
                        index=len(waves),
                        precision=precision,
                        targets=targets,
                        failure_threshold=policy.failure_threshold,
                    )
                )
    return waves


def model_updates(manifest: ModelManifest, deployment_id: str, model_bucket: str) -> dict[Precision, ModelUpdate]:
    """The weight-only update each cohort receives: its tier's payload (signature, size, compatibility), the
    model's feature layout and its signed identity (the same document for every tier). The device re-checks
    all of it before loading."""
    return {
        tier.precision: ModelUpdate(
            deployment_id=deployment_id,
            model_id=manifest.model_id,
            version=manifest.version,
            precision=tier.precision,
            payload_uri=s3_uri(model_bucket, tier.payload_key),
            sha256=tier.sha256,
            features=manifest.features,
            feature_schema_hash=manifest.feature_schema_hash,
            signature=tier.signature,
            payload_bytes=tier.payload_bytes,
            architectures=tier.architectures,
            min_runtime_version=tier.min_runtime_version,
            identity=manifest.identity,
        )
        for tier in manifest.tiers
    }
