"""The wave controller: move a rollout from wave to wave as its devices report.

A wave is done when each of its targets has reported the deployment's version applied, or has
failed (rejected / rolled back) while the failed share stays within the wave's
failure_threshold; then the next wave is delivered, and after the last one the rollout has
SUCCEEDED. As soon as the failed share passes the threshold, the wave and the rollout are FAILED
with the devices and their reasons recorded, and then rolled back (rollback.py): the devices
it reached get their previous model again and the rollout ends ROLLED_BACK. A rollout IN_PROGRESS
past its timeout_s, or whose current wave heard nothing for the wave timeout, ends TIMED_OUT; the
devices that never reported are released with that reason. advance() finishes whatever follow-up
a stopped rollout still owes (a crash between the two steps, a late report), so calling it again
is always safe; the scheduled wave_controller does that every minute.

Each transition is written by compare-and-swap before the wave is delivered, so of two status
reports that complete a wave at once exactly one delivers the next wave. If the delivery raises,
the transition is undone, so the next report (or the Lambda retry) delivers again.

After a status report, the wave's outcome counters (wave_counts.py) say whether the wave is worth
reading at all: `advance(..., after_report=True)` reads the counter before the wave.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from edgeloop.schemas import DeploymentRecord, DeploymentState, DeviceRecord, DeviceStatus, RolloutPolicy, RolloutWave

from .delivery import ModelDelivery
from .deployments import DeploymentTable, StoredDeployment
from .devices import DeviceTable
from .rollback import release_timed_out, roll_back
from .wave_counts import WaveTally, may_change, tally_wave

DEFAULT_ATTEMPTS = 20
NAMED_DEVICES_MAX = 20  # reasons name this many devices, then count the rest


class DeploymentConflict(RuntimeError):
    """Compare-and-swap on the deployment kept losing to other writers."""


def advance(
    deployment_id: str,
    *,
    devices_table: DeviceTable,
    deployments_table: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime | None = None,
    wave_timeout_s: float | None = None,
    after_report: bool = False,
    reported_by: str | None = None,
) -> DeploymentRecord:
    """Re-evaluate a rollout after a status report (or on schedule); deliver the next wave when due,
    fail / time it out when due (a wave silent for `wave_timeout_s`, default: the default
    RolloutPolicy's), and carry out what a stopped rollout owes its devices.

    `after_report=True` (status intake, right after counting the report) first asks the wave's
    counter whether anything can have changed and, if not, returns without reading the wave; wave
    timeouts are then left to the scheduled call (a report just arrived, so the wave is not silent).
    `reported_by` names the device whose report led here: when the rollout had stopped already,
    only that device's follow-up is done (a restore it still needs), not a pass over every device,
    which the scheduled call makes.
    """
    now = now or datetime.now(UTC)
    wave_timeout_s = wave_timeout_s if wave_timeout_s is not None else RolloutPolicy().wave_timeout_s
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
        roll_back(record, devices=devices, deployments=deployments, delivery=delivery, now=now, only=only)
        if only is not None:
            return record  # the rollout's state is left to the full pass
        return _transition(record.deployment_id, _rolled_back, deployments, delivery)
    if record.state is DeploymentState.TIMED_OUT:
        release_timed_out(record, devices=devices, now=now, only=only)
    return record


def _failed_wave(record: DeploymentRecord) -> RolloutWave | None:
    return next((w for w in record.waves if w.state is DeploymentState.FAILED), None)


def _rolled_back(record: DeploymentRecord) -> DeploymentRecord:
    if record.state is not DeploymentState.FAILED:
        return record
    return record.model_copy(update={"state": DeploymentState.ROLLED_BACK})


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
