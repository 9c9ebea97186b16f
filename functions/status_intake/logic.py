"""Take one ModelStatusReport into the device table, then let the wave controller look again.

Reports can arrive late, twice or out of order (MQTT QoS 1, Lambda retries, a gateway catching up
after being offline). The device keeps the status of the newest report by the device's own
sent_at: the write is conditional on the stored report being older, so a stale report changes
nothing (it is counted), and two concurrent reports cannot overwrite each other's newer state.

A recorded report that moves the device into or out of an outcome of its rollout (applied the
rollout's version; rejected or rolled back) moves the device's count in its wave's counter, judged
from the device as that compare-and-swap found it and left it: a duplicate or stale report changes
nothing and so counts nothing. The device knows its wave (deployment_wave, set when the rollout
marked it pending), and the wave's counter item carries the wave's size, threshold, state and the
rollout's version and deadline, so a report costs the same few calls at any fleet size: the
device's read, write and history entry, the counter's read and (on a change of outcome) its
update. Only a report whose counts may complete or fail the wave reads the deployment and the
wave (cloud/fleet/waves.py).

The model runner also publishes a PeriodicStatus on the same topic every few minutes: it only
moves the device's last_seen forward (and brings an OFFLINE device back), so a gateway that keeps
running is never marked offline; it changes no status, model or rollout.

A message is bounded before it is parsed (schemas/bounded_json.py MAX_STATUS_JSON: 16 KB, one flat
object, strings of at most 1000 characters) and validated strictly; a refused one (REFUSED, with a
reason per field: edgeloop.cloud.fleet.device_messages) changes nothing and is quarantined by the
handler.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from edgeloop.cloud.fleet.delivery import ModelDelivery
from edgeloop.cloud.fleet.deployments import DeploymentTable, WaveCounter
from edgeloop.cloud.fleet.device_messages import (
    DeviceMessageRefused,
    json_payload,
    parse_device_message,
    thing_of_topic,
    validated_message,
)
from edgeloop.cloud.fleet.devices import DeviceTable, DeviceWrite, StoredDevice, microseconds
from edgeloop.cloud.fleet.liveness import refresh_last_seen
from edgeloop.cloud.fleet.wave_counts import count_outcome, count_report, worth_a_look
from edgeloop.cloud.fleet.waves import advance
from edgeloop.schemas import (
    DeploymentRecord,
    DeviceRecord,
    DeviceStatus,
    IotRuleEvent,
    ModelStatusReport,
    PeriodicStatus,
    QuarantineReason,
    RolloutPolicy,
    names,
)
from edgeloop.schemas.bounded_json import MAX_STATUS_JSON
from edgeloop.schemas.device import PERIODIC_STATUS_KIND


class Outcome(StrEnum):
    RECORDED = "recorded"
    STALE = "stale"  # an equally new or newer report was recorded already
    REFUSED = "refused"  # not a report, wrong topic, or an unknown device
    PERIODIC = "periodic"  # a periodic status: last_seen refreshed, nothing else


class Intake(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcome: Outcome
    record: DeviceRecord | None = None
    refused: str | None = None
    reasons: list[QuarantineReason] = []  # of a REFUSED message, field by field (quarantined)
    quarantine_key: str | None = None  # where the handler kept the refused message
    deployment: DeploymentRecord | None = None


class UnknownDevice(DeviceMessageRefused):
    """The message names a thing the device table does not hold (it never announced itself)."""

    def __init__(self, thing_name: str) -> None:
        super().__init__(
            [QuarantineReason.of("thing_name", thing_name, "has not announced itself (not in the device table)")]
        )


@dataclass(frozen=True)
class ReportWrite:
    """What taking a report did to the device: its record before and after (equal when STALE)."""

    outcome: Outcome
    before: DeviceRecord
    after: DeviceRecord


def handle_status_report(
    event: IotRuleEvent,
    *,
    devices: DeviceTable,
    deployments: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime | None = None,
    policy: RolloutPolicy | None = None,
) -> Intake:
    """Record the report and advance its rollout under `policy` (default: RolloutPolicy's defaults)."""
    now = now or datetime.now(UTC)
    try:
        message = parse_status_message(event)
        if isinstance(message, PeriodicStatus):
            return _periodic(message, devices, now)
        report = message
        written = write_report(report, devices, now=now)
    except DeviceMessageRefused as exc:
        return Intake(outcome=Outcome.REFUSED, refused=str(exc), reasons=exc.reasons)
    deployment = None
    if written.outcome is Outcome.RECORDED and report.deployment_id:
        wave_timeout_s = (policy or RolloutPolicy()).wave_timeout_s
        deployment = _count_and_advance(
            report.deployment_id, written, devices, deployments, delivery, now, wave_timeout_s
        )
    return Intake(outcome=written.outcome, record=written.after, deployment=deployment)


def parse_report(event: IotRuleEvent) -> ModelStatusReport:
    return parse_device_message(event, names.model_status_topic, ModelStatusReport, MAX_STATUS_JSON)


def parse_status_message(event: IotRuleEvent) -> ModelStatusReport | PeriodicStatus:
    """A ModelStatusReport, or a PeriodicStatus when the document says `"kind": "periodic"`."""
    thing = thing_of_topic(event.topic, names.model_status_topic)
    document = json_payload(event, MAX_STATUS_JSON)
    contract = PeriodicStatus if document.get("kind") == PERIODIC_STATUS_KIND else ModelStatusReport
    return validated_message(event, document, contract, thing)


def _periodic(status: PeriodicStatus, devices: DeviceTable, now: datetime) -> Intake:
    # The broker's receive time, not the device's sent_at: a gateway clock that runs behind must
    # not make a live gateway look silent.
    record = refresh_last_seen(devices, status.thing_name, now)
    if record is None:
        raise UnknownDevice(status.thing_name)
    return Intake(outcome=Outcome.PERIODIC, record=record)


def record_report(
    report: ModelStatusReport, devices: DeviceTable, *, now: datetime | None = None
) -> tuple[Outcome, DeviceRecord]:
    """Store the report's status unless a newer report is stored; (RECORDED | STALE, the record)."""
    written = write_report(report, devices, now=now)
    return written.outcome, written.after


def write_report(report: ModelStatusReport, devices: DeviceTable, *, now: datetime | None = None) -> ReportWrite:
    """`record_report`, also returning the device as the winning compare-and-swap found it."""
    now = now or datetime.now(UTC)
    sent_at_us = microseconds(report.sent_at)
    outcome = Outcome.RECORDED
    before: DeviceRecord | None = None

    def apply(stored: StoredDevice | None) -> DeviceWrite | None:
        # Runs once per attempt; the last run is the one whose write won (or that wrote nothing).
        nonlocal outcome, before
        if stored is None:
            raise UnknownDevice(report.thing_name)
        before = stored.record
        if stored.report_sent_at_us is not None and sent_at_us <= stored.report_sent_at_us:
            outcome = Outcome.STALE
            return None
        outcome = Outcome.RECORDED
        return DeviceWrite(_reported(stored.record, report, now), report_sent_at_us=sent_at_us)

    # The history item follows a successful write only, so a stale report leaves no trace there.
    after = devices.compare_and_swap_with_history(report.thing_name, apply)
    return ReportWrite(outcome, before, after)


def _reported(device: DeviceRecord, report: ModelStatusReport, now: datetime) -> DeviceRecord:
    update: dict = {
        "status": report.status,
        "reason": report.reason,
        "last_seen": max(device.last_seen, now),
    }
    if report.deployment_id:
        update["deployment_id"] = report.deployment_id
        if report.deployment_id != device.deployment_id:
            update["deployment_wave"] = None  # a deployment edgeloop did not plan: in none of its waves
    if report.status is DeviceStatus.APPLIED:
        update["current_model_id"] = report.model_id
        update["current_model_version"] = report.version
    changed = (
        report.status is not device.status
        or update.get("deployment_id", device.deployment_id) != device.deployment_id
        or update.get("current_model_version", device.current_model_version) != device.current_model_version
    )
    if changed:
        update["status_since"] = report.sent_at
    return device.model_copy(update=update)


def _count_and_advance(
    deployment_id: str,
    written: ReportWrite,
    devices: DeviceTable,
    deployments: DeploymentTable,
    delivery: ModelDelivery,
    now: datetime,
    wave_timeout_s: float,
) -> DeploymentRecord | None:
    """Count the report into the device's wave and advance the rollout if the counts call for it;
    the rollout as advance() left it, or None when it was not looked at."""
    counter = _wave_counter_of(deployment_id, written.after, deployments)
    if counter is not None and counter.summary is not None:
        counts = count_outcome(counter.summary, written.before, written.after, deployments_table=deployments)
        if not worth_a_look(counter.summary, counts or counter.counts, now):
            return None  # the wave can neither be complete nor failed: the deployment need not be read
        consult_counter = False  # just did
    else:
        # No tracked wave on the device (marked by an earlier version, or a deployment made outside
        # edgeloop): find its wave in the deployment record.
        record = deployments.get(deployment_id)
        if record is None:
            return None  # e.g. a deployment made outside edgeloop; nothing to advance
        count_report(record, written.before, written.after, deployments_table=deployments)
        consult_counter = True
    return advance(
        deployment_id,
        devices_table=devices,
        deployments_table=deployments,
        delivery=delivery,
        now=now,
        wave_timeout_s=wave_timeout_s,
        after_report=consult_counter,
        reported_by=written.after.thing_name,
    )


def _wave_counter_of(deployment_id: str, device: DeviceRecord, deployments: DeploymentTable) -> WaveCounter | None:
    if device.deployment_id != deployment_id or device.deployment_wave is None:
        return None
    return deployments.wave_counter(deployment_id, device.deployment_wave)
