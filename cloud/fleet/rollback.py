"""What a stopped rollout owes its devices: the previous model back after a failure, a reason after a timeout.

The update agent keeps the model it replaced on disk, but only the cloud knows the rollout failed,
so the previous model comes back as an ordinary ModelUpdate: the one an earlier rollout delivered
for the device's previous model (recorded on the device when this rollout marked it pending),
re-addressed to this deployment so the device's confirmation comes back to it. The agent has no
"remove the model" operation (an empty modelUpdate is ignored), so a device with no previous
model keeps the new one, which passed its own health check, and is told why.

Devices the rollout never reached, and those of a timed-out wave that never reported, stop being
PENDING and carry the rollout's reason. Everything here is safe to repeat; waves.advance calls it
after every look at a stopped rollout and then records the rollout ROLLED_BACK.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from edgeloop.schemas import (
    DeploymentRecord,
    DeploymentState,
    DeviceEvent,
    DeviceRecord,
    DeviceStatus,
    ModelUpdate,
    Precision,
    RolloutWave,
)
from edgeloop.schemas.compatibility import incompatibility, most_precise_first

from .delivery import ROLLBACK_WAVE_BASE, ModelDelivery
from .deployments import DeploymentTable
from .devices import DeviceTable, DeviceWrite, StoredDevice

# A restore wave is delivered once and never tallied, so no share of failures stops it.
ROLLBACK_WAVE_FAILURE_THRESHOLD = 1.0


def roll_back(
    record: DeploymentRecord,
    *,
    devices: DeviceTable,
    deployments: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime,
    only: str | None = None,
) -> None:
    """Restore the previous model on every device the failed rollout reached, and release those it never reached.

    Safe to repeat: a device already marked is left alone; one that applied the new version since
    (a late report) is restored again; one that confirmed the restored model is marked ROLLED_BACK.
    With `only`, just that device is looked at (after its own report).
    """
    reached = [t for w in record.waves if w.state is not DeploymentState.PLANNED for t in w.targets]
    if only is not None:
        reached = [only] if only in reached else []
    restores: dict[tuple[str, str, Precision], tuple[ModelUpdate, list[str]]] = {}
    previous = _PreviousUpdates(deployments)
    for thing, device in sorted(devices.get_many(reached).items()):
        if device.deployment_id != record.deployment_id:
            continue  # moved on to another rollout since
        if _runs_or_awaits_new(record, device):
            update = previous.for_device(device, record)
            if update is None:
                devices.compare_and_swap_with_history(thing, _kept(record, _no_previous_reason(record, device), now))
            else:
                key = (update.model_id, update.version, update.precision)
                restores.setdefault(key, (update, []))[1].append(thing)
        elif device.status is DeviceStatus.APPLIED:
            devices.compare_and_swap_with_history(thing, _confirmed_restore(record, now))
    for index, (_, (update, things)) in enumerate(sorted(restores.items())):
        wave = RolloutWave(
            index=ROLLBACK_WAVE_BASE + index,
            precision=update.precision,
            targets=things,
            failure_threshold=ROLLBACK_WAVE_FAILURE_THRESHOLD,
        )
        # Deliver before marking: a crash in between leaves the devices to be restored next time.
        delivery.deliver(record.deployment_id, wave, update)
        for thing in things:
            devices.compare_and_swap_with_history(thing, _restoring(record, update, now))
    if only is None:
        _release(record, _unreached(record), devices, now)


def release_timed_out(
    record: DeploymentRecord, *, devices: DeviceTable, now: datetime, only: str | None = None
) -> None:
    """Devices of a timed-out rollout that never reported stop being PENDING, with its reason
    (with `only`: that device, if it is one of them)."""
    stopped = [t for w in record.waves if w.state is DeploymentState.TIMED_OUT for t in w.targets]
    released = stopped + _unreached(record)
    if only is not None:
        released = [only] if only in released else []
    _release(record, released, devices, now)


def _unreached(record: DeploymentRecord) -> list[str]:
    return [t for w in record.waves if w.state is DeploymentState.PLANNED for t in w.targets]


def _runs_or_awaits_new(record: DeploymentRecord, device: DeviceRecord) -> bool:
    if device.status is DeviceStatus.PENDING:
        return True
    return device.status is DeviceStatus.APPLIED and device.current_model_version == record.model_version


def _no_previous_reason(record: DeploymentRecord, device: DeviceRecord) -> str:
    if device.previous_model_version is None or device.previous_model_version == record.model_version:
        why = "no previous model to restore (the update agent cannot remove a model)"
    else:
        why = (
            f"previous model {device.previous_model_id or '?'} {device.previous_model_version} "
            f"was not delivered by any recorded rollout, nothing to restore it from"
        )
    return f"{record.reason}; {why}"


def _restoring(record: DeploymentRecord, update: ModelUpdate, now: datetime) -> Callable:
    reason = f"{record.reason}; restoring {update.model_id} {update.version}"

    def change(stored: StoredDevice | None) -> DeviceWrite | None:
        if stored is None or not _runs_or_awaits_new(record, stored.record):
            return None  # deregistered, or already reported back since
        device = stored.record
        if stored.record.deployment_id != record.deployment_id:
            return None
        return DeviceWrite(
            device.model_copy(
                update={
                    "status": DeviceStatus.ROLLED_BACK,
                    "reason": reason,
                    "desired_model_version": update.version,
                    "status_since": now,
                }
            )
        )

    return change


def _confirmed_restore(record: DeploymentRecord, now: datetime) -> Callable:
    """The device reported the restored model applied: it is rolled back, and says why."""

    def change(stored: StoredDevice | None) -> DeviceWrite | None:
        if stored is None:
            return None
        device = stored.record
        confirmed = (
            device.deployment_id == record.deployment_id
            and device.status is DeviceStatus.APPLIED
            and device.current_model_version != record.model_version
        )
        if not confirmed:
            return None
        reason = f"{record.reason}; restored {device.current_model_id or '?'} {device.current_model_version}"
        return DeviceWrite(
            device.model_copy(update={"status": DeviceStatus.ROLLED_BACK, "reason": reason, "status_since": now})
        )

    return change


def _kept(record: DeploymentRecord, reason: str, now: datetime) -> Callable:
    """No previous model to restore: the device stays on what it runs, not left PENDING."""

    def change(stored: StoredDevice | None) -> DeviceWrite | None:
        if stored is None:
            return None
        device = stored.record
        if device.deployment_id != record.deployment_id or device.reason == reason:
            return None
        return DeviceWrite(_settled(device, reason, now))

    return change


def _release(record: DeploymentRecord, things: list[str], devices: DeviceTable, now: datetime) -> None:
    event = DeviceEvent.TIMED_OUT if record.state is DeploymentState.TIMED_OUT else None
    for thing in things:

        def change(stored: StoredDevice | None) -> DeviceWrite | None:
            if stored is None:
                return None
            device = stored.record
            if device.deployment_id != record.deployment_id or device.reason.startswith(record.reason):
                return None
            if device.status is DeviceStatus.OFFLINE:
                # Stays OFFLINE (an announcement brings it back), but says which rollout gave up on it.
                return DeviceWrite(device.model_copy(update={"reason": f"{record.reason}; {device.reason}"}))
            if device.status is not DeviceStatus.PENDING:
                return None  # reported meanwhile: its own status stands
            return DeviceWrite(_settled(device, record.reason, now))

        devices.compare_and_swap_with_history(thing, change, event=event)


def _settled(device: DeviceRecord, reason: str, now: datetime) -> DeviceRecord:
    """Out of PENDING: on whatever model it runs, with the reason the rollout stopped."""
    status = device.status
    if status is DeviceStatus.PENDING:
        status = DeviceStatus.APPLIED if device.current_model_version is not None else DeviceStatus.REGISTERED
    update: dict = {"status": status, "reason": reason, "desired_model_version": device.current_model_version}
    if status is not device.status:
        update["status_since"] = now
    return device.model_copy(update=update)


class _PreviousUpdates:
    """The ModelUpdates earlier rollouts delivered, by (model id, version), read once per rollback."""

    def __init__(self, deployments: DeploymentTable) -> None:
        self.deployments = deployments
        self._by_version: dict[str, list[ModelUpdate]] | None = None

    def for_device(self, device: DeviceRecord, failed: DeploymentRecord) -> ModelUpdate | None:
        version = device.previous_model_version
        if version is None or version == failed.model_version:
            return None
        candidates = [
            u
            for u in self._updates().get(version, [])
            # the checks the update agent makes, so the restore is not refused on arrival
            if device.previous_model_id in (None, u.model_id) and incompatibility(u, device) is None
        ]
        if not candidates:
            return None
        return most_precise_first(candidates)[0].model_copy(update={"deployment_id": failed.deployment_id})

    def _updates(self) -> dict[str, list[ModelUpdate]]:
        if self._by_version is None:
            self._by_version = {}
            for stored in self.deployments.scan_stored():
                for update in stored.updates.values():
                    self._by_version.setdefault(update.version, []).append(update)
        return self._by_version
