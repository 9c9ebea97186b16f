"""A wave's outcomes: which of its devices applied the rollout's version, failed, or are waited for.

`tally_wave` reads the devices of a wave and decides (waves.advance acts on it). Reading every
device after each status report would make a rollout quadratic in its size, so a wave's outcomes
are also counted (deployments: one counter item per wave, tracked from before its delivery,
carrying a WaveSummary of the wave). The orchestrator records each target's wave on the device
(deployment_wave); status intake reads that wave's counter and moves the device's count with
`count_outcome` when its own compare-and-swap moves it into or out of an outcome. Only when
`worth_a_look` says the counts may complete or fail the wave (or the wave is no longer in progress,
or the rollout is past its deadline) does it call advance(), which reads the deployment and the
wave and decides as always. A device without a recorded wave (marked by an earlier version) falls
back to `count_report` with the deployment record.

The counts only choose when to look: a count lost between a device's write and its counter update
(a crash) delays the decision until the scheduled round, which always reads the whole wave; a
count too many (a device that went OFFLINE and reported again) only costs reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from edgeloop.schemas import DeploymentRecord, DeploymentState, DeviceRecord, DeviceStatus, RolloutWave

from .deployments import DeploymentTable, WaveCounts, WaveSummary

FAILED_STATUSES = (DeviceStatus.REJECTED, DeviceStatus.ROLLED_BACK)


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
