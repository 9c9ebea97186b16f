"""The key holder's signed rollback of a deployment, carried to that deployment's devices.

`edgeloop models rollback` signs a schemas.signed_model.RollbackAuthorization (the key never enters
the fleet) and sends it here as a SIGNED_ROLLBACK_REQUEST event. The orchestrator cannot sign and
does not need to: it finds the ModelUpdate an earlier rollout recorded for the version gone back to
(per precision, with that version's signed identity), re-addresses it to the rolled-back deployment,
attaches the signed rollback (ModelUpdate.rollback) and delivers it as rollback waves (one per
precision) to every device of that deployment and line, in the most precise tier each can run. The
deployment stops (ROLLED_BACK, no further waves) and each device is marked ROLLED_BACK with the
reason until its own report arrives. Each device re-checks everything itself
(model_runtime.signing.verify_signed_update); nothing here is trusted by it.

Safe to repeat: a device that applied the rollback answers "already active".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from edgeloop.cloud.fleet.delivery import ROLLBACK_WAVE_BASE, ModelDelivery
from edgeloop.cloud.fleet.deployments import DeploymentTable, StoredDeployment
from edgeloop.cloud.fleet.devices import DeviceTable, DeviceWrite, StoredDevice
from edgeloop.schemas import DeploymentRecord, DeploymentState, DeviceStatus, ModelUpdate, Precision, RolloutWave, names
from edgeloop.schemas.common import validation_problems
from edgeloop.schemas.compatibility import incompatibility, most_precise_first
from edgeloop.schemas.signed_model import SignedRollback

# Signed rollback waves of a deployment, apart from the automatic restore's (ROLLBACK_WAVE_BASE + n).
SIGNED_ROLLBACK_WAVE_BASE = ROLLBACK_WAVE_BASE + 500
ATTEMPTS = 5


class RollbackRefused(ValueError):
    """The signed rollback cannot be carried out; the message names the field, its value and why."""


@dataclass(frozen=True)
class RollbackResult:
    deployment_id: str
    to_version: str
    delivered: dict[str, str] = field(default_factory=dict)  # thing -> precision
    skipped: dict[str, str] = field(default_factory=dict)  # thing -> why not

    def as_dict(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "to_version": self.to_version,
            "delivered": self.delivered,
            "skipped": self.skipped,
        }


def rollback_event(rollback: SignedRollback) -> dict[str, Any]:
    """The event the CLI sends the orchestrator."""
    return {"detail-type": names.SIGNED_ROLLBACK_REQUEST, "detail": {"rollback": rollback.model_dump(mode="json")}}


def is_rollback_event(event: Mapping[str, Any]) -> bool:
    return event.get("detail-type") == names.SIGNED_ROLLBACK_REQUEST


def rollback_from_event(event: Mapping[str, Any]) -> SignedRollback:
    detail = event.get("detail")
    if not isinstance(detail, Mapping) or not isinstance(detail.get("rollback"), Mapping):
        raise RollbackRefused(f"detail={str(detail)[:80]!r}: not an object with a 'rollback' object")
    try:
        return SignedRollback.model_validate(detail["rollback"])
    except ValidationError as exc:
        problems = validation_problems(exc, name_of=lambda f: f"detail.rollback.{f}", max_value_chars=80)
        raise RollbackRefused(f"not a signed rollback: {problems}") from None


def updates_of_version(
    stored: list[StoredDeployment], model_id: str, version: str, use_case: str, line_id: str
) -> list[ModelUpdate]:
    """The ModelUpdates (one per precision) earlier rollouts recorded for `model_id` `version` on this line."""
    found: dict[Precision, ModelUpdate] = {}
    for deployment in stored:
        for precision, update in deployment.updates.items():
            identity = update.identity.document if update.identity is not None else None
            if (update.model_id, update.version) != (model_id, version):
                continue
            if identity is not None and (identity.use_case != use_case or line_id not in identity.line_ids):
                continue
            found.setdefault(precision, update)
    return most_precise_first(found.values())


def latest_deployment_of_line(stored: list[StoredDeployment], use_case: str, line_id: str) -> DeploymentRecord | None:
    """The newest started deployment whose (signed) updates name this use case and line."""
    for deployment in reversed(stored):  # scan_stored is oldest first
        if deployment.record.state is DeploymentState.PLANNED:
            continue
        for update in deployment.updates.values():
            identity = update.identity.document if update.identity is not None else None
            if identity is not None and identity.use_case == use_case and line_id in identity.line_ids:
                return deployment.record
    return None


def deliver_signed_rollback(
    rollback: SignedRollback,
    *,
    devices: DeviceTable,
    deployments: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime,
) -> RollbackResult:
    document = rollback.document
    deployment_id = document.rolls_back_deployment_id
    stored = deployments.get_stored(deployment_id)
    if stored is None:
        raise RollbackRefused(f"rolls_back_deployment_id={deployment_id!r}: no such deployment")
    record = stored.record
    if record.model_version != document.rolls_back_version:
        raise RollbackRefused(
            f"rolls_back_version={document.rolls_back_version}: deployment {deployment_id!r} delivered "
            f"{record.model_id} {record.model_version}"
        )
    candidates = updates_of_version(
        deployments.scan_stored(), document.model_id, document.to_version, document.use_case, document.line_id
    )
    if not candidates:
        raise RollbackRefused(
            f"to_version={document.to_version}: no rollout recorded a ModelUpdate of {document.model_id} "
            f"{document.to_version} for line {document.line_id!r}, nothing to deliver"
        )
    # Every target, reached or not: one the rollout never reached already runs the older model (or
    # older still) and answers "already active" (or applies it), which also settles it out of PENDING.
    targets = [t for w in record.waves if w.index < ROLLBACK_WAVE_BASE for t in w.targets]
    result = RollbackResult(deployment_id, document.to_version)
    cohorts: dict[Precision, tuple[ModelUpdate, list[str]]] = {}
    for thing, device in sorted(devices.get_many(targets).items()):
        if device.line_id != document.line_id:
            result.skipped[thing] = f"on line {device.line_id!r}, the rollback is for {document.line_id!r}"
        elif device.deployment_id != deployment_id:
            result.skipped[thing] = f"moved on to deployment {device.deployment_id!r}"
        else:
            runnable = [u for u in candidates if incompatibility(u, device) is None]
            if not runnable:
                problem = incompatibility(candidates[0], device)
                result.skipped[thing] = f"runs none of {document.to_version}'s tiers ({problem.refusal()})"
                continue
            update = runnable[0]
            cohorts.setdefault(update.precision, (update, []))[1].append(thing)
    for index, (precision, (update, things)) in enumerate(sorted(cohorts.items())):
        addressed = update.model_copy(update={"deployment_id": deployment_id, "rollback": rollback})
        wave = RolloutWave(
            index=SIGNED_ROLLBACK_WAVE_BASE + index, precision=precision, targets=things, failure_threshold=1.0
        )
        delivery.deliver(deployment_id, wave, addressed)  # before marking: a crash leaves them to a repeat
        reason = f"signed rollback of {deployment_id} to {document.model_id} {document.to_version}"
        for thing in things:
            devices.compare_and_swap_with_history(thing, _rolling_back(deployment_id, document.to_version, reason, now))
            result.delivered[thing] = precision.value
    _stop(deployments, deployment_id, f"rolled back to {document.to_version} by a signed rollback")
    return result


def _rolling_back(deployment_id: str, version: str, reason: str, now: datetime) -> Callable:
    def change(stored: StoredDevice | None) -> DeviceWrite | None:
        if stored is None or stored.record.deployment_id != deployment_id:
            return None
        device = stored.record
        if device.status is DeviceStatus.ROLLED_BACK and device.desired_model_version == version:
            return None  # marked by an earlier run of this rollback
        return DeviceWrite(
            device.model_copy(
                update={
                    "status": DeviceStatus.ROLLED_BACK,
                    "reason": reason,
                    "desired_model_version": version,
                    "status_since": now,
                }
            )
        )

    return change


def _stop(deployments: DeploymentTable, deployment_id: str, reason: str) -> None:
    """The deployment ends ROLLED_BACK: no wave of it starts again."""
    for _ in range(ATTEMPTS):
        stored = deployments.get_stored(deployment_id)
        if stored is None or stored.record.state is DeploymentState.ROLLED_BACK:
            return
        stopped = stored.record.model_copy(update={"state": DeploymentState.ROLLED_BACK, "reason": reason})
        if deployments.replace_if_unchanged(stored, stopped):
            return
    raise RollbackRefused(f"deployment {deployment_id!r}: {ATTEMPTS} conflicting writes in a row, not marked stopped")
