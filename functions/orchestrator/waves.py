"""The wave controller: move a rollout from wave to wave as its devices report.

A wave is done when each of its targets has reported the deployment's version applied, or has
failed (rejected / rolled back) while the failed share stays within the wave's
failure_threshold; then the next wave is delivered, and after the last one the rollout has
SUCCEEDED. As soon as the failed share passes the threshold, the wave and the rollout are FAILED
with the devices and their reasons recorded (rolling the applied devices back is later work).

Each transition is written by compare-and-swap before the wave is delivered, so of two status
reports that complete a wave at once exactly one delivers the next wave. If the delivery raises,
the transition is undone, so the next report (or the Lambda retry) delivers again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from edgeloop.functions.device_registry.data_access import DeviceTable
from edgeloop.schemas import DeploymentRecord, DeploymentState, DeviceRecord, DeviceStatus, RolloutWave

from .data_access import DeploymentTable, StoredDeployment
from .delivery import ModelDelivery

FAILED_STATUSES = (DeviceStatus.REJECTED, DeviceStatus.ROLLED_BACK)
DEFAULT_ATTEMPTS = 20


class DeploymentConflict(RuntimeError):
    """Compare-and-swap on the deployment kept losing to other writers."""


@dataclass(frozen=True)
class WaveTally:
    wave: RolloutWave
    applied: list[str]
    failed: dict[str, str]  # thing -> why
    waiting: list[str]

    @property
    def failed_share(self) -> float:
        return len(self.failed) / len(self.wave.targets)

    @property
    def over_threshold(self) -> bool:
        return self.failed_share > self.wave.failure_threshold

    @property
    def complete(self) -> bool:
        return not self.waiting


def tally_wave(record: DeploymentRecord, wave: RolloutWave, devices: Mapping[str, DeviceRecord]) -> WaveTally:
    applied, failed, waiting = [], {}, []
    for thing in wave.targets:
        device = devices.get(thing)
        if device is None:
            failed[thing] = "not in the device table"
        elif device.deployment_id != record.deployment_id:
            waiting.append(thing)  # has not reported on this deployment yet
        elif device.status is DeviceStatus.APPLIED and device.current_model_version == record.model_version:
            applied.append(thing)
        elif device.status in FAILED_STATUSES:
            failed[thing] = f"{device.status.value}: {device.reason}" if device.reason else device.status.value
        else:
            waiting.append(thing)
    return WaveTally(wave, applied, failed, waiting)


def advance(
    deployment_id: str,
    *,
    devices_table: DeviceTable,
    deployments_table: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime | None = None,
) -> DeploymentRecord:
    """Re-evaluate an in-progress rollout after a status report; deliver the next wave when due.

    `now` is accepted for the rollout timeout (later work); transitions do not depend on it yet.
    """

    def step(record: DeploymentRecord) -> DeploymentRecord:
        if record.state is not DeploymentState.IN_PROGRESS:
            return record
        current = _current_wave(record)
        if current is None:
            return _start_next_wave(record)  # a previous delivery failed and was undone
        tally = tally_wave(record, current, devices_table.get_many(current.targets))
        if tally.over_threshold:
            return _failed(record, tally)
        if tally.complete:
            return _start_next_wave(_with_wave(record, current.index, DeploymentState.SUCCEEDED))
        return record

    return _transition(deployment_id, step, deployments_table, delivery)


def begin(deployment_id: str, *, deployments_table: DeploymentTable, delivery: ModelDelivery) -> DeploymentRecord:
    """Start a PLANNED rollout: deliver its first wave."""

    def step(record: DeploymentRecord) -> DeploymentRecord:
        if record.state is not DeploymentState.PLANNED:
            return record
        return _start_next_wave(record.model_copy(update={"state": DeploymentState.IN_PROGRESS}))

    return _transition(deployment_id, step, deployments_table, delivery)


def _transition(
    deployment_id: str,
    step: Callable[[DeploymentRecord], DeploymentRecord],
    table: DeploymentTable,
    delivery: ModelDelivery,
    attempts: int = DEFAULT_ATTEMPTS,
) -> DeploymentRecord:
    for _ in range(attempts):
        stored = table.get_stored(deployment_id)
        if stored is None:
            raise LookupError(f"deployment_id={deployment_id!r} is not in the deployment table")
        new = step(stored.record)
        if new == stored.record:
            return new
        if not table.replace_if_unchanged(stored, new):
            continue  # someone else moved it: look again
        started = _newly_started_wave(stored.record, new)
        if started is not None:
            _deliver_or_undo(stored, new, started, table, delivery)
        return new
    raise DeploymentConflict(f"deployment {deployment_id!r}: {attempts} conflicting writes in a row, giving up")


def _deliver_or_undo(
    stored: StoredDeployment, new: DeploymentRecord, wave: RolloutWave, table: DeploymentTable, delivery: ModelDelivery
) -> None:
    update = stored.updates.get(wave.precision)
    try:
        if update is None:
            raise LookupError(f"deployment {new.deployment_id!r} holds no {wave.precision.value} ModelUpdate")
        delivery.deliver(new.deployment_id, wave, update)
    except Exception:
        written = StoredDeployment(new, stored.revision + 1, stored.updates)
        table.replace_if_unchanged(written, stored.record)  # lost race: someone moved on already
        raise


def _current_wave(record: DeploymentRecord) -> RolloutWave | None:
    return next((w for w in record.waves if w.state is DeploymentState.IN_PROGRESS), None)


def _start_next_wave(record: DeploymentRecord) -> DeploymentRecord:
    planned = next((w for w in record.waves if w.state is DeploymentState.PLANNED), None)
    if planned is None:
        return record.model_copy(update={"state": DeploymentState.SUCCEEDED})
    return _with_wave(record, planned.index, DeploymentState.IN_PROGRESS)


def _failed(record: DeploymentRecord, tally: WaveTally) -> DeploymentRecord:
    wave = tally.wave
    details = "; ".join(f"{thing} {why}" for thing, why in sorted(tally.failed.items()))
    reason = (
        f"wave {wave.index} ({wave.precision.value}): {len(tally.failed)} of {len(wave.targets)} devices failed "
        f"({tally.failed_share:.0%} > threshold {wave.failure_threshold:.0%}): {details}"
    )
    failed = _with_wave(record, wave.index, DeploymentState.FAILED)
    return failed.model_copy(update={"state": DeploymentState.FAILED, "reason": reason})


def _with_wave(record: DeploymentRecord, index: int, state: DeploymentState) -> DeploymentRecord:
    waves = [w.model_copy(update={"state": state}) if w.index == index else w for w in record.waves]
    return record.model_copy(update={"waves": waves})


def _newly_started_wave(before: DeploymentRecord, after: DeploymentRecord) -> RolloutWave | None:
    for old, new in zip(before.waves, after.waves):
        if new.state is DeploymentState.IN_PROGRESS and old.state is not DeploymentState.IN_PROGRESS:
            return new
    return None
