"""The wave controller: move a rollout from wave to wave as its devices report.

A wave is done when each of its targets has reported the deployment's version applied, or has
failed (rejected / rolled back) while the failed share stays within the wave's
failure_threshold; then the next wave is delivered, and after the last one the rollout has
SUCCEEDED. As soon as the failed share passes the threshold, the wave and the rollout are FAILED
with the devices and their reasons recorded, and then rolled back: the devices
it reached get their previous model again and the rollout ends ROLLED_BACK. A rollout IN_PROGRESS
past its timeout_s, or whose current wave heard nothing for the wave timeout, ends TIMED_OUT; the
devices that never reported are released with that reason. advance() finishes whatever follow-up
a stopped rollout still owes (a crash between the two steps, a late report), so calling it again
is always safe; the scheduled wave_controller does that every minute.

Each transition is written by compare-and-swap before the wave is delivered, so of two status
reports that complete a wave at once exactly one delivers the next wave. If the delivery raises,
the transition is undone, so the next report (or the Lambda retry) delivers again.

Cost per status report. Reading every device of the current wave after each report would make a
rollout quadratic in its size, and so would reading the deployment record, which lists every
target. So a wave's outcomes are also counted (data_access: one counter item per wave, tracked
from before its delivery, carrying a WaveSummary of the wave). The orchestrator records each
target's wave on the device (deployment_wave); status intake reads that wave's counter and moves
the device's count with `count_outcome` when its own compare-and-swap moves it into or out of an
outcome. Only when `worth_a_look` says the counts may complete or fail the wave (or the wave is
no longer in progress, or the rollout is past its deadline) does it call advance(), which reads
the deployment and the wave and decides as always. A device without a recorded wave (marked by an
earlier version) falls back to `count_report` with the deployment record and
`advance(..., after_report=True)`, which reads the counter before the wave.

The counts only choose when to look: a count lost between a device's write and its counter update
(a crash) delays the decision until the scheduled round, which always reads the whole wave; a
count too many (a device that went OFFLINE and reported again) only costs reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from edgeloop.cloud.fleet.devices import DeviceTable, DeviceWrite, StoredDevice
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
from edgeloop.schemas.common import semver_key

from .delivery import ROLLBACK_WAVE_BASE, ModelDelivery
from .deployments import DeploymentTable, StoredDeployment, WaveCounts, WaveSummary

FAILED_STATUSES = (DeviceStatus.REJECTED, DeviceStatus.ROLLED_BACK)
DEFAULT_ATTEMPTS = 20
DEFAULT_WAVE_TIMEOUT_S = 900
NAMED_DEVICES_MAX = 20  # reasons name this many devices, then count the rest


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


class WaveOutcome(StrEnum):
    """Where a device stands in a rollout's wave; no outcome (None) means it is still waited for."""

    APPLIED = "applied"
    FAILED = "failed"


def outcome_of(record: DeploymentRecord, device: DeviceRecord | None) -> WaveOutcome | None:
    """The device's outcome for this rollout: what tally_wave counts and the wave counters mirror."""
    return _outcome(record.deployment_id, record.model_version, device)


def _outcome(deployment_id: str, model_version: str, device: DeviceRecord | None) -> WaveOutcome | None:
    if device is None or device.deployment_id != deployment_id:
        return None  # has not reported on this deployment yet
    if device.status is DeviceStatus.APPLIED and device.current_model_version == model_version:
        return WaveOutcome.APPLIED
    if device.status in FAILED_STATUSES:
        return WaveOutcome.FAILED
    return None


def tally_wave(record: DeploymentRecord, wave: RolloutWave, devices: Mapping[str, DeviceRecord]) -> WaveTally:
    applied, failed, waiting = [], {}, []
    for thing in wave.targets:
        device = devices.get(thing)
        outcome = outcome_of(record, device)
        if device is None:
            failed[thing] = "not in the device table"
        elif outcome is WaveOutcome.APPLIED:
            applied.append(thing)
        elif outcome is WaveOutcome.FAILED:
            failed[thing] = f"{device.status.value}: {device.reason}" if device.reason else device.status.value
        else:
            waiting.append(thing)
    return WaveTally(wave, applied, failed, waiting)


def wave_of(record: DeploymentRecord, thing_name: str) -> RolloutWave | None:
    return next((w for w in record.waves if thing_name in w.targets), None)


def count_report(
    record: DeploymentRecord,
    before: DeviceRecord | None,
    after: DeviceRecord,
    *,
    deployments_table: DeploymentTable,
) -> tuple[int, int]:
    """Move the device's count in its wave's counter after a compare-and-swap from `before` to `after`.

    Only a change of outcome counts (into one, out of one, or applied -> failed, all in one update),
    so a duplicate or stale report, which changes nothing, counts nothing. Returns the (applied,
    failed) change made: (0, 0) also when the device is in no wave or its wave is not tracked.
    """
    wave = wave_of(record, after.thing_name)
    if wave is None:
        return 0, 0
    applied, failed = _outcome_change(record.deployment_id, record.model_version, before, after)
    if (applied, failed) == (0, 0):
        return 0, 0
    counted = deployments_table.count_wave_outcome(record.deployment_id, wave.index, applied=applied, failed=failed)
    return (applied, failed) if counted is not None else (0, 0)


def count_outcome(
    summary: WaveSummary, before: DeviceRecord | None, after: DeviceRecord, *, deployments_table: DeploymentTable
) -> WaveCounts | None:
    """`count_report` for a device whose wave is known (its deployment_wave), judged by the wave's
    counter summary instead of the deployment record: the counts after the change, or None when it
    changed no count (the caller's counts stand) or the wave is not tracked."""
    applied, failed = _outcome_change(summary.deployment_id, summary.model_version, before, after)
    if (applied, failed) == (0, 0):
        return None
    return deployments_table.count_wave_outcome(summary.deployment_id, summary.index, applied=applied, failed=failed)


def _outcome_change(
    deployment_id: str, model_version: str, before: DeviceRecord | None, after: DeviceRecord
) -> tuple[int, int]:
    """The (applied, failed) count change of a device going from `before` to `after`."""
    old, new = _outcome(deployment_id, model_version, before), _outcome(deployment_id, model_version, after)
    if old is new:
        return 0, 0
    return (new is WaveOutcome.APPLIED) - (old is WaveOutcome.APPLIED), (new is WaveOutcome.FAILED) - (
        old is WaveOutcome.FAILED
    )


def may_change(counts: WaveCounts | None, wave: RolloutWave) -> bool:
    """Whether the wave's counts allow it to be complete or past its threshold (no counts: it may)."""
    if counts is None:
        return True
    return _may_complete_or_fail(counts, len(wave.targets), wave.failure_threshold)


def worth_a_look(summary: WaveSummary, counts: WaveCounts, now: datetime) -> bool:
    """Whether a report counted into this wave calls for advance(): the counts may complete or fail
    it, the wave is no longer in progress (a stopped rollout may owe the device a restore), or the
    rollout is past its deadline."""
    if summary.state is not DeploymentState.IN_PROGRESS or now > summary.deadline:
        return True
    return _may_complete_or_fail(counts, summary.targets, summary.failure_threshold)


def _may_complete_or_fail(counts: WaveCounts, targets: int, failure_threshold: float) -> bool:
    return counts.reported >= targets or counts.failed / targets > failure_threshold


def advance(
    deployment_id: str,
    *,
    devices_table: DeviceTable,
    deployments_table: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime | None = None,
    wave_timeout_s: float = DEFAULT_WAVE_TIMEOUT_S,
    after_report: bool = False,
    reported_by: str | None = None,
) -> DeploymentRecord:
    """Re-evaluate a rollout after a status report (or on schedule); deliver the next wave when due,
    fail / time it out when due, and carry out what a stopped rollout owes its devices.

    `after_report=True` (status intake, right after counting the report) first asks the wave's
    counter whether anything can have changed and, if not, returns without reading the wave; wave
    timeouts are then left to the scheduled call (a report just arrived, so the wave is not silent).
    `reported_by` names the device whose report led here: when the rollout had stopped already,
    only that device's follow-up is done (a restore it still needs), not a pass over every device,
    which the scheduled call makes.
    """
    now = now or datetime.now(UTC)
    stopped_before = False

    def step(record: DeploymentRecord) -> DeploymentRecord:
        nonlocal stopped_before
        stopped_before = record.state is not DeploymentState.IN_PROGRESS
        if stopped_before:
            return record
        current = _current_wave(record)
        if current is None:
            return _start_next_wave(record, now)  # a previous delivery failed and was undone
        if after_report and not _worth_a_tally(record, current, deployments_table, now):
            return record
        current_devices = devices_table.get_many(current.targets)
        tally = tally_wave(record, current, current_devices)
        if tally.over_threshold:
            return _failed(record, tally)
        if tally.complete:
            return _start_next_wave(_with_wave(record, current.index, DeploymentState.SUCCEEDED), now)
        timeout = timeout_reason(record, tally, current_devices, now, wave_timeout_s)
        if timeout:
            timed_out = _with_wave(record, current.index, DeploymentState.TIMED_OUT)
            return timed_out.model_copy(update={"state": DeploymentState.TIMED_OUT, "reason": timeout})
        return record

    record = _transition(deployment_id, step, deployments_table, delivery)
    only = reported_by if stopped_before else None
    return _follow_up(record, devices_table, deployments_table, delivery, now, only=only)


def _worth_a_tally(record: DeploymentRecord, wave: RolloutWave, table: DeploymentTable, now: datetime) -> bool:
    if now - record.created_at > timedelta(seconds=record.timeout_s):
        return True  # the rollout timed out: the tally names the devices that never reported
    return may_change(table.wave_counts(record.deployment_id, wave.index), wave)


def begin(
    deployment_id: str,
    *,
    deployments_table: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime | None = None,
) -> DeploymentRecord:
    """Start a PLANNED rollout: deliver its first wave."""
    now = now or datetime.now(UTC)

    def step(record: DeploymentRecord) -> DeploymentRecord:
        if record.state is not DeploymentState.PLANNED:
            return record
        return _start_next_wave(record.model_copy(update={"state": DeploymentState.IN_PROGRESS}), now)

    return _transition(deployment_id, step, deployments_table, delivery)


def timeout_reason(
    record: DeploymentRecord,
    tally: WaveTally,
    devices: Mapping[str, DeviceRecord],
    now: datetime,
    wave_timeout_s: float,
) -> str:
    """Why the rollout is timed out now, naming the devices that never reported; "" when it is not."""
    silent = _named(tally.waiting)
    wave = tally.wave
    if now - record.created_at > timedelta(seconds=record.timeout_s):
        return (
            f"rollout {record.deployment_id} timed out at wave {wave.index}: in progress longer than "
            f"timeout_s={record.timeout_s}; no report from {silent}"
        )
    last_heard = _last_report(record, wave, devices)
    if now - last_heard > timedelta(seconds=wave_timeout_s):
        return (
            f"rollout {record.deployment_id} timed out at wave {wave.index}: no report since "
            f"{last_heard.isoformat()} (wave timeout {wave_timeout_s:g} s); no report from {silent}"
        )
    return ""


def _last_report(record: DeploymentRecord, wave: RolloutWave, devices: Mapping[str, DeviceRecord]) -> datetime:
    """When the wave last heard from a device: its start, or the newest report on this rollout."""
    heard = [wave.started_at or record.created_at]
    for thing in wave.targets:
        device = devices.get(thing)
        if (
            device is not None
            and device.deployment_id == record.deployment_id
            and device.status is not DeviceStatus.PENDING
        ):
            heard.append(device.status_since)
    return max(heard)


def _named(things: list[str]) -> str:
    shown = ", ".join(sorted(things)[:NAMED_DEVICES_MAX])
    hidden = len(things) - NAMED_DEVICES_MAX
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def _follow_up(
    record: DeploymentRecord,
    devices: DeviceTable,
    deployments: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime,
    *,
    only: str | None,
) -> DeploymentRecord:
    if record.state in (DeploymentState.FAILED, DeploymentState.ROLLED_BACK) and _failed_wave(record) is not None:
        return roll_back(record, devices=devices, deployments=deployments, delivery=delivery, now=now, only=only)
    if record.state is DeploymentState.TIMED_OUT:
        release_timed_out(record, devices=devices, now=now, only=only)
    return record


def _failed_wave(record: DeploymentRecord) -> RolloutWave | None:
    return next((w for w in record.waves if w.state is DeploymentState.FAILED), None)


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
        _mirror_wave_states(stored.record, new, table)
        started = _newly_started_wave(stored.record, new)
        if started is not None:
            _deliver_or_undo(stored, new, started, table, delivery)
        return new
    raise DeploymentConflict(f"deployment {deployment_id!r}: {attempts} conflicting writes in a row, giving up")


def _mirror_wave_states(before: DeploymentRecord, after: DeploymentRecord, table: DeploymentTable) -> None:
    """Tell the counters of waves that left IN_PROGRESS (track_wave marks the start). A crash before
    this leaves a counter saying in progress; its late reports then wait for the scheduled round."""
    for old, new in zip(before.waves, after.waves):
        if old.state is DeploymentState.IN_PROGRESS and new.state is not DeploymentState.IN_PROGRESS:
            table.set_wave_state(after.deployment_id, new.index, new.state)


def _deliver_or_undo(
    stored: StoredDeployment, new: DeploymentRecord, wave: RolloutWave, table: DeploymentTable, delivery: ModelDelivery
) -> None:
    update = stored.updates.get(wave.precision)
    try:
        if update is None:
            raise LookupError(f"deployment {new.deployment_id!r} holds no {wave.precision.value} ModelUpdate")
        # Counted from before any device can have the update, so no report of the wave goes uncounted.
        table.track_wave(new, wave)
        delivery.deliver(new.deployment_id, wave, update)
    except Exception:
        written = StoredDeployment(new, stored.revision + 1, stored.updates)
        table.replace_if_unchanged(written, stored.record)  # lost race: someone moved on already
        raise


def _current_wave(record: DeploymentRecord) -> RolloutWave | None:
    return next((w for w in record.waves if w.state is DeploymentState.IN_PROGRESS), None)


def _start_next_wave(record: DeploymentRecord, now: datetime) -> DeploymentRecord:
    planned = next((w for w in record.waves if w.state is DeploymentState.PLANNED), None)
    if planned is None:
        return record.model_copy(update={"state": DeploymentState.SUCCEEDED})
    return _with_wave(record, planned.index, DeploymentState.IN_PROGRESS, started_at=now)


def _failed(record: DeploymentRecord, tally: WaveTally) -> DeploymentRecord:
    wave = tally.wave
    details = "; ".join(f"{thing} {why}" for thing, why in sorted(tally.failed.items()))
    reason = (
        f"rollout {record.deployment_id} failed at wave {wave.index} ({wave.precision.value}): "
        f"{len(tally.failed)}/{len(wave.targets)} failed "
        f"({tally.failed_share:.0%} > threshold {wave.failure_threshold:.0%}): {details}"
    )
    failed = _with_wave(record, wave.index, DeploymentState.FAILED)
    return failed.model_copy(update={"state": DeploymentState.FAILED, "reason": reason})


def _with_wave(
    record: DeploymentRecord, index: int, state: DeploymentState, *, started_at: datetime | None = None
) -> DeploymentRecord:
    update: dict = {"state": state}
    if started_at is not None:
        update["started_at"] = started_at
    waves = [w.model_copy(update=update) if w.index == index else w for w in record.waves]
    return record.model_copy(update={"waves": waves})


def _newly_started_wave(before: DeploymentRecord, after: DeploymentRecord) -> RolloutWave | None:
    for old, new in zip(before.waves, after.waves):
        if new.state is DeploymentState.IN_PROGRESS and old.state is not DeploymentState.IN_PROGRESS:
            return new
    return None


# --- rollback ------------------------------------------------------------------------------------
#
# The update agent keeps the model it replaced on disk, but only the cloud knows the rollout failed,
# so the previous model comes back as an ordinary ModelUpdate: the one an earlier rollout delivered
# for the device's previous model (recorded on the device when this rollout marked it pending),
# re-addressed to this deployment so the device's confirmation comes back to it. The agent has no
# "remove the model" operation (an empty modelUpdate is ignored), so a device with no previous
# model keeps the new one, which passed its own health check, and is told why.

_PRECISION_PREFERENCE = (Precision.FP32, Precision.FP16_LEAVES, Precision.QUANTIZED)


def roll_back(
    record: DeploymentRecord,
    *,
    devices: DeviceTable,
    deployments: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime,
    only: str | None = None,
) -> DeploymentRecord:
    """Restore the previous model on every device the failed rollout reached; end it ROLLED_BACK.

    Safe to repeat: a device already marked is left alone; one that applied the new version since
    (a late report) is restored again; one that confirmed the restored model is marked ROLLED_BACK.
    With `only`, just that device is looked at (after its own report), and the rollout's state is
    left to the full pass.
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
            index=ROLLBACK_WAVE_BASE + index, precision=update.precision, targets=things, failure_threshold=1.0
        )
        # Deliver before marking: a crash in between leaves the devices to be restored next time.
        delivery.deliver(record.deployment_id, wave, update)
        for thing in things:
            devices.compare_and_swap_with_history(thing, _restoring(record, update, now))
    if only is not None:
        return record
    _release(record, _unreached(record), devices, now)
    return _transition(record.deployment_id, _rolled_back, deployments, delivery)


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


def _rolled_back(record: DeploymentRecord) -> DeploymentRecord:
    if record.state is not DeploymentState.FAILED:
        return record
    return record.model_copy(update={"state": DeploymentState.ROLLED_BACK})


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
            if device.previous_model_id in (None, u.model_id) and _compatible(u, device)
        ]
        if not candidates:
            return None
        best = min(candidates, key=lambda u: _PRECISION_PREFERENCE.index(u.precision))
        return best.model_copy(update={"deployment_id": failed.deployment_id})

    def _updates(self) -> dict[str, list[ModelUpdate]]:
        if self._by_version is None:
            self._by_version = {}
            for stored in self.deployments.scan_stored():
                for update in stored.updates.values():
                    self._by_version.setdefault(update.version, []).append(update)
        return self._by_version


def _compatible(update: ModelUpdate, device: DeviceRecord) -> bool:
    """The checks the update agent makes, so the restore is not refused on arrival."""
    if update.architectures is not None and device.architecture not in update.architectures:
        return False
    if update.min_runtime_version is not None and semver_key(device.runtime_version) < semver_key(
        update.min_runtime_version
    ):
        return False
    return update.precision in device.supported_precisions
