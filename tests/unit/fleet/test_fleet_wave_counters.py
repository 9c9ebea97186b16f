"""Wave counters: status intake counts each device's outcome once into the wave the device is in, and
reads neither the deployment nor the wave for a report that cannot complete or fail the wave."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from fleet_helpers import DEPLOYMENT_TABLE, NOW, RecordingDelivery, device, manifest, rule_event, status_report

from edgeloop.cloud.aws import client
from edgeloop.cloud.fleet.deployments import WaveCounts, wave_counter_key
from edgeloop.cloud.fleet.planning import model_updates, plan_rollout
from edgeloop.cloud.fleet.wave_counts import count_report
from edgeloop.cloud.fleet.waves import advance, begin
from edgeloop.functions.status_intake.logic import Outcome, handle_status_report, record_report
from edgeloop.functions.wave_controller.logic import run_round
from edgeloop.local.aws import recorded_calls
from edgeloop.schemas import DeploymentState, DeviceStatus, RolloutPolicy, names

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/7"
EARLIER_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/6"
MODEL_ID = manifest().model_id
# Every device runs 1.0.0 when the rollout picks it: what a rollback restores.
RUNS_1_0_0 = {
    "current_model_id": MODEL_ID,
    "current_model_version": "1.0.0",
    "previous_model_id": MODEL_ID,
    "previous_model_version": "1.0.0",
}


def _rollout(devices, deployments, delivery, count: int, *, failure_threshold: float = 0.2, with_waves=True):
    """A started rollout of `count` devices in two waves of half each (canary_share=0.5).

    with_waves=False: devices marked as an earlier version did, without their wave (deployment_wave)."""
    fleet = [device(f"gw-{i:03d}") for i in range(count)]
    record = plan_rollout(
        manifest(),
        fleet,
        model_package_arn=ARN,
        policy=RolloutPolicy(canary_share=0.5, failure_threshold=failure_threshold),
        now=NOW,
    )
    assert deployments.put_if_absent(record, model_updates(manifest(), record.deployment_id, "models"))
    for wave in record.waves:
        for thing in wave.targets:
            marked = {"deployment_id": record.deployment_id, "status": DeviceStatus.PENDING}
            if with_waves:
                marked["deployment_wave"] = wave.index
            devices.put(device(thing, **RUNS_1_0_0, **marked))
    begin(record.deployment_id, deployments_table=deployments, delivery=delivery, now=NOW)
    return record


def _take(devices, deployments, delivery, record, thing, status, sent_at, reason=""):
    report = status_report(thing, record.deployment_id, status, sent_at, reason=reason)
    event = rule_event(names.model_status_topic(thing), report.model_dump(mode="json"))
    return handle_status_report(
        event, devices=devices, deployments=deployments, delivery=delivery, now=sent_at + timedelta(seconds=1)
    )


def _counts(deployments, record, index=0):
    return deployments.wave_counts(record.deployment_id, index)


def test_duplicate_and_stale_reports_count_nothing(devices, deployments):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 10)
    thing = record.waves[0].targets[0]
    assert _counts(deployments, record) == WaveCounts(applied=0, failed=0)

    sent = NOW + timedelta(minutes=1)
    first = _take(devices, deployments, delivery, record, thing, DeviceStatus.APPLIED, sent)
    duplicate = _take(devices, deployments, delivery, record, thing, DeviceStatus.APPLIED, sent)
    stale = _take(devices, deployments, delivery, record, thing, DeviceStatus.REJECTED, sent - timedelta(seconds=5))
    assert (first.outcome, duplicate.outcome, stale.outcome) == (Outcome.RECORDED, Outcome.STALE, Outcome.STALE)
    assert _counts(deployments, record) == WaveCounts(applied=1, failed=0)

    # A newer report of the same outcome is recorded (last_seen moves) but is no new outcome.
    again = _take(devices, deployments, delivery, record, thing, DeviceStatus.APPLIED, sent + timedelta(seconds=5))
    assert again.outcome is Outcome.RECORDED
    assert _counts(deployments, record) == WaveCounts(applied=1, failed=0)


def test_a_flip_from_applied_to_rejected_moves_the_count_in_one_update(devices, deployments):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 10)
    thing = record.waves[0].targets[0]
    sent = NOW + timedelta(minutes=1)
    _take(devices, deployments, delivery, record, thing, DeviceStatus.APPLIED, sent)

    with recorded_calls("dynamodb") as calls:
        flipped = _take(
            devices, deployments, delivery, record, thing, DeviceStatus.REJECTED, sent + timedelta(seconds=1), "health"
        )
    assert flipped.outcome is Outcome.RECORDED
    assert _counts(deployments, record) == WaveCounts(applied=0, failed=1)
    assert Counter(calls)["UpdateItem"] == 1

    # A later successful retry moves it back; reports of another version are no outcome at all.
    _take(devices, deployments, delivery, record, thing, DeviceStatus.APPLIED, sent + timedelta(seconds=2))
    assert _counts(deployments, record) == WaveCounts(applied=1, failed=0)
    other_version = status_report(thing, record.deployment_id, DeviceStatus.APPLIED, sent + timedelta(seconds=3))
    other_version = other_version.model_copy(update={"version": "1.9.0"})
    handle_status_report(
        rule_event(names.model_status_topic(thing), other_version.model_dump(mode="json")),
        devices=devices,
        deployments=deployments,
        delivery=delivery,
        now=sent + timedelta(seconds=4),
    )
    assert _counts(deployments, record) == WaveCounts(applied=0, failed=0)


@pytest.mark.parametrize("fleet_size", [20, 200])
def test_a_report_that_cannot_change_the_wave_costs_the_same_few_calls_at_any_wave_size(
    devices, deployments, fleet_size
):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, fleet_size)
    first, second = record.waves[0].targets[:2]
    sent = NOW + timedelta(minutes=1)

    with recorded_calls("dynamodb") as applied_calls:
        _take(devices, deployments, delivery, record, first, DeviceStatus.APPLIED, sent)
    with recorded_calls("dynamodb") as rejected_calls:
        _take(devices, deployments, delivery, record, second, DeviceStatus.REJECTED, sent, "checksum")

    # device read + write + history, then the counter of the device's wave: read, and ADD.
    expected = ["GetItem", "PutItem", "PutItem", "GetItem", "UpdateItem"]
    assert applied_calls == expected
    assert rejected_calls == expected
    assert deployments.get(record.deployment_id).waves[0].state is DeploymentState.IN_PROGRESS


@pytest.mark.parametrize("fleet_size", [20, 200])
def test_a_device_marked_without_its_wave_is_counted_through_the_deployment_record(devices, deployments, fleet_size):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, fleet_size, with_waves=False)
    with recorded_calls("dynamodb") as calls:
        result = _take(devices, deployments, delivery, record, record.waves[0].targets[0], DeviceStatus.APPLIED, NOW)
    # device read + write + history, deployment read, counter ADD, then advance: deployment + counter.
    assert calls == ["GetItem", "PutItem", "PutItem", "GetItem", "UpdateItem", "GetItem", "GetItem"]
    assert result.deployment.waves[0].state is DeploymentState.IN_PROGRESS
    assert _counts(deployments, record) == WaveCounts(applied=1, failed=0)


def test_the_report_that_completes_the_wave_reads_it_and_starts_the_next(devices, deployments):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 12)
    wave = record.waves[0].targets
    sent = NOW + timedelta(minutes=1)
    for n, thing in enumerate(wave[:-1]):
        with recorded_calls("dynamodb") as calls:
            result = _take(
                devices, deployments, delivery, record, thing, DeviceStatus.APPLIED, sent + n * timedelta(seconds=1)
            )
        assert "BatchGetItem" not in calls
        assert result.deployment is None  # not read: the counts say the wave cannot be complete
    assert delivery.waves == [0]

    with recorded_calls("dynamodb") as calls:
        result = _take(
            devices, deployments, delivery, record, wave[-1], DeviceStatus.APPLIED, sent + timedelta(minutes=1)
        )
    assert "BatchGetItem" in calls
    assert [w.state for w in result.deployment.waves] == [DeploymentState.SUCCEEDED, DeploymentState.IN_PROGRESS]
    assert delivery.waves == [0, 1]
    assert _counts(deployments, record, 0) == WaveCounts(applied=len(wave), failed=0)
    assert _counts(deployments, record, 1) == WaveCounts(applied=0, failed=0)  # tracked before delivery


def test_crossing_the_failure_threshold_fails_the_wave_and_rolls_back(devices, deployments):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 20, failure_threshold=0.2)
    wave = record.waves[0].targets  # 10 devices: 2 failures are within 20%, the third is past it
    sent = NOW + timedelta(minutes=1)
    for n, thing in enumerate(wave[:2]):
        with recorded_calls("dynamodb") as calls:
            result = _take(
                devices,
                deployments,
                delivery,
                record,
                thing,
                DeviceStatus.REJECTED,
                sent + n * timedelta(seconds=1),
                "sha",
            )
        assert "BatchGetItem" not in calls and result.deployment is None

    result = _take(
        devices, deployments, delivery, record, wave[2], DeviceStatus.REJECTED, sent + timedelta(seconds=9), "sha"
    )
    assert result.deployment.state is DeploymentState.ROLLED_BACK
    assert result.deployment.waves[0].state is DeploymentState.FAILED
    assert "3/10 failed" in result.deployment.reason
    assert 1 not in delivery.waves  # the second wave never went out


@pytest.mark.parametrize("with_waves", [True, False])
def test_a_wave_without_counters_is_decided_by_the_full_tally(devices, deployments, with_waves):
    """A rollout started before counters existed: every report reads the wave, and it still advances."""
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 6, with_waves=with_waves)
    client("dynamodb").delete_item(
        TableName=DEPLOYMENT_TABLE,
        Key={names.DEPLOYMENT_TABLE_KEYS.partition_key: {"S": wave_counter_key(record.deployment_id, 0)}},
    )
    wave = record.waves[0].targets
    sent = NOW + timedelta(minutes=1)
    for n, thing in enumerate(wave):
        with recorded_calls("dynamodb") as calls:
            result = _take(
                devices, deployments, delivery, record, thing, DeviceStatus.APPLIED, sent + n * timedelta(seconds=1)
            )
        assert "BatchGetItem" in calls
    assert result.deployment.waves[0].state is DeploymentState.SUCCEEDED
    assert delivery.waves == [0, 1]
    assert _counts(deployments, record, 0) is None  # counting into an untracked wave creates nothing


def test_the_scheduled_round_decides_a_wave_whose_counts_fell_behind(devices, deployments):
    """Device writes without their counts (a crash in between): reports alone cannot tell, the round can."""
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 8)
    sent = NOW + timedelta(minutes=1)
    for n, thing in enumerate(record.waves[0].targets):
        record_report(
            status_report(thing, record.deployment_id, DeviceStatus.APPLIED, sent + n * timedelta(seconds=1)), devices
        )
    quick = advance(
        record.deployment_id,
        devices_table=devices,
        deployments_table=deployments,
        delivery=delivery,
        now=sent + timedelta(minutes=1),
        after_report=True,
    )
    assert quick.waves[0].state is DeploymentState.IN_PROGRESS  # the counts say nothing happened

    round_ = run_round(
        devices=devices,
        deployments=deployments,
        delivery=delivery,
        now=sent + timedelta(minutes=1),
        policy=RolloutPolicy(offline_silence_s=3600, wave_timeout_s=900),
    )
    assert round_.errors == {}
    after = deployments.get(record.deployment_id)
    assert [w.state for w in after.waves] == [DeploymentState.SUCCEEDED, DeploymentState.IN_PROGRESS]
    assert delivery.waves == [0, 1]


def test_a_report_past_the_rollout_timeout_still_times_it_out(devices, deployments):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 10)
    late = NOW + timedelta(seconds=record.timeout_s + 60)
    result = _take(devices, deployments, delivery, record, record.waves[0].targets[0], DeviceStatus.APPLIED, late)
    assert result.deployment.state is DeploymentState.TIMED_OUT
    assert "in progress longer than timeout_s" in result.deployment.reason


def test_concurrent_and_repeated_reports_count_each_device_once(devices, deployments):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 24)
    wave = record.waves[0].targets
    sent = {thing: NOW + timedelta(minutes=1, milliseconds=n) for n, thing in enumerate(wave)}
    errors: list[BaseException] = []

    def send(things):
        try:
            for thing in things:
                _take(devices, deployments, delivery, record, thing, DeviceStatus.APPLIED, sent[thing])
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    # Each device's report is sent by two threads (a QoS 1 redelivery racing the original).
    threads = [threading.Thread(target=send, args=(wave[i::3],)) for i in range(3)]
    threads += [threading.Thread(target=send, args=(list(reversed(wave[i::2])),)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert _counts(deployments, record, 0) == WaveCounts(applied=len(wave), failed=0)
    assert delivery.waves == [0, 1]  # the next wave went out exactly once
    assert deployments.get(record.deployment_id).waves[0].state is DeploymentState.SUCCEEDED


def test_count_report_ignores_devices_outside_the_rollout_and_untracked_waves(devices, deployments):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 4)
    pending = devices.get(record.waves[1].targets[0])  # wave 1 is planned: not tracked yet
    applied = pending.model_copy(update={"status": DeviceStatus.APPLIED, "current_model_version": "2.0.0"})
    assert count_report(record, pending, applied, deployments_table=deployments) == (0, 0)
    assert _counts(deployments, record, 1) is None

    stranger = device(
        "gw-999", deployment_id=record.deployment_id, status=DeviceStatus.APPLIED, current_model_version="2.0.0"
    )
    assert count_report(record, None, stranger, deployments_table=deployments) == (0, 0)

    canary = devices.get(record.waves[0].targets[0])
    rejected = canary.model_copy(update={"status": DeviceStatus.REJECTED})
    assert count_report(record, canary, rejected, deployments_table=deployments) == (0, 1)
    assert count_report(record, rejected, rejected, deployments_table=deployments) == (0, 0)


def test_counter_items_stay_out_of_deployment_listings(devices, deployments):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 4)
    assert _counts(deployments, record, 0) is not None
    assert [r.deployment_id for r in deployments.scan_all()] == [record.deployment_id]

    clashing = record.model_copy(update={"deployment_id": "dep#wave#0"})
    with pytest.raises(ValueError, match=r"deployment_id='dep#wave#0' contains '#'"):
        deployments.put_if_absent(clashing, model_updates(manifest(), "dep", "models"))


def test_a_counter_without_its_wave_summary_counts_through_the_deployment_record(devices, deployments):
    """Counters tracked by an earlier version hold counts only: the report finds its wave in the record."""
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 6)
    client("dynamodb").update_item(
        TableName=DEPLOYMENT_TABLE,
        Key={names.DEPLOYMENT_TABLE_KEYS.partition_key: {"S": wave_counter_key(record.deployment_id, 0)}},
        UpdateExpression="REMOVE targets, failure_threshold, model_version, deadline, wave_state",
    )
    assert deployments.wave_counter(record.deployment_id, 0).summary is None
    wave = record.waves[0].targets
    sent = NOW + timedelta(minutes=1)
    for n, thing in enumerate(wave):
        result = _take(
            devices, deployments, delivery, record, thing, DeviceStatus.APPLIED, sent + n * timedelta(seconds=1)
        )
        assert result.deployment is not None  # the record path always advances
    assert _counts(deployments, record, 0) == WaveCounts(applied=len(wave), failed=0)
    assert [w.state for w in result.deployment.waves] == [DeploymentState.SUCCEEDED, DeploymentState.IN_PROGRESS]


def test_the_counter_summary_mirrors_its_wave(devices, deployments):
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, 10, failure_threshold=0.25)
    summary = deployments.wave_counter(record.deployment_id, 0).summary
    assert (summary.targets, summary.failure_threshold, summary.model_version) == (5, 0.25, record.model_version)
    assert summary.deadline == record.created_at + timedelta(seconds=record.timeout_s)
    assert summary.state is DeploymentState.IN_PROGRESS
    assert deployments.wave_counter(record.deployment_id, 1) is None  # not delivered: not tracked

    sent = NOW + timedelta(minutes=1)
    for n, thing in enumerate(record.waves[0].targets):
        _take(devices, deployments, delivery, record, thing, DeviceStatus.APPLIED, sent + n * timedelta(seconds=1))
    assert deployments.wave_counter(record.deployment_id, 0).summary.state is DeploymentState.SUCCEEDED
    assert deployments.wave_counter(record.deployment_id, 1).summary.state is DeploymentState.IN_PROGRESS


@pytest.mark.parametrize("fleet_size", [10, 40])
def test_a_report_after_the_rollback_settles_its_own_device_only(devices, deployments, fleet_size):
    """A confirmation of the restored model, arriving after the rollout ended ROLLED_BACK, marks that
    device rolled back, with the same calls at any fleet size (no pass over every device reached)."""
    delivery = RecordingDelivery()
    record = _rollout(devices, deployments, delivery, fleet_size, failure_threshold=0.0)
    canary, other = record.waves[0].targets[:2]
    earlier_manifest = manifest(version="1.0.0")  # the rollout that delivered 1.0.0: what is restored
    earlier = plan_rollout(earlier_manifest, [], model_package_arn=EARLIER_ARN, now=NOW - timedelta(days=3))
    assert deployments.put_if_absent(earlier, model_updates(earlier_manifest, earlier.deployment_id, "models"))
    failed = _take(devices, deployments, delivery, record, canary, DeviceStatus.REJECTED, NOW, "health check")
    assert failed.deployment.state is DeploymentState.ROLLED_BACK
    assert devices.get(other).status is DeviceStatus.ROLLED_BACK  # restore on its way

    confirmed_at = NOW + timedelta(minutes=2)
    report = status_report(other, record.deployment_id, DeviceStatus.APPLIED, confirmed_at, version="1.0.0")
    with recorded_calls("dynamodb") as calls:
        result = handle_status_report(
            rule_event(names.model_status_topic(other), report.model_dump(mode="json")),
            devices=devices,
            deployments=deployments,
            delivery=delivery,
            now=confirmed_at,
        )
    settled = devices.get(other)
    assert settled.status is DeviceStatus.ROLLED_BACK and settled.current_model_version == "1.0.0"
    assert settled.reason.endswith(f"; restored {MODEL_ID} 1.0.0")
    assert result.deployment.state is DeploymentState.ROLLED_BACK
    # The report's device write (read, write, history), its counter (read, ADD), the deployment, then
    # this device alone: batch read, and its rolled-back write (read, write, history).
    assert Counter(calls) == Counter({"GetItem": 4, "PutItem": 4, "UpdateItem": 1, "BatchGetItem": 1}), calls
