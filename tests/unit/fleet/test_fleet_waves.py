"""The wave controller: canary first, then the rest; a failed share past the threshold stops it."""

from __future__ import annotations

import pytest
from fleet_helpers import (
    NOW,
    RecordingDelivery,
    TickingClock,
    advance_rollout,
    concurrently,
    device,
    manifest,
    report_each,
    status_report,
)

from edgeloop.cloud.fleet.planning import model_updates, plan_rollout
from edgeloop.cloud.fleet.waves import advance, begin
from edgeloop.functions.status_intake.logic import record_report
from edgeloop.schemas import DeploymentState, DeviceStatus, RolloutPolicy

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/3"


def _rollout(devices, deployments, count: int, *, failure_threshold: float = 0.2):
    fleet = [device(f"gw-{i:02d}") for i in range(count)]
    record = plan_rollout(
        manifest(), fleet, model_package_arn=ARN, policy=RolloutPolicy(failure_threshold=failure_threshold), now=NOW
    )
    assert deployments.put_if_absent(record, model_updates(manifest(), record.deployment_id, "models"))
    for d in fleet:
        devices.put(d.model_copy(update={"deployment_id": record.deployment_id, "status": DeviceStatus.PENDING}))
    return record


def test_canary_then_rest_then_succeeded(devices, deployments):
    record = _rollout(devices, deployments, 10)
    canary, rest = record.waves
    assert (len(canary.targets), len(rest.targets)) == (1, 9)
    delivery, clock = RecordingDelivery(), TickingClock()

    started = begin(record.deployment_id, deployments_table=deployments, delivery=delivery)
    assert started.state is DeploymentState.IN_PROGRESS
    assert [w.state for w in started.waves] == [DeploymentState.IN_PROGRESS, DeploymentState.PLANNED]
    assert delivery.waves == [0]
    deployment_id, wave, update = delivery.deliveries[0]
    assert (deployment_id, wave.targets, update.deployment_id) == (
        record.deployment_id,
        canary.targets,
        record.deployment_id,
    )

    # Nothing reported yet: no change, no delivery. Starting twice does not redeliver either.
    assert advance_rollout(devices, deployments, delivery, record) == started
    assert begin(record.deployment_id, deployments_table=deployments, delivery=delivery) == started
    assert delivery.waves == [0]

    report_each(devices, record, canary.targets, DeviceStatus.APPLIED, clock)
    after_canary = advance_rollout(devices, deployments, delivery, record)
    assert [w.state for w in after_canary.waves] == [DeploymentState.SUCCEEDED, DeploymentState.IN_PROGRESS]
    assert delivery.waves == [0, 1] and delivery.deliveries[1][1].targets == rest.targets

    report_each(devices, record, rest.targets[:-1], DeviceStatus.APPLIED, clock)
    assert advance_rollout(devices, deployments, delivery, record).state is DeploymentState.IN_PROGRESS
    report_each(devices, record, rest.targets[-1:], DeviceStatus.APPLIED, clock)
    done = advance_rollout(devices, deployments, delivery, record)
    assert done.state is DeploymentState.SUCCEEDED
    assert [w.state for w in done.waves] == [DeploymentState.SUCCEEDED, DeploymentState.SUCCEEDED]
    assert deployments.get(record.deployment_id) == done
    assert delivery.waves == [0, 1]
    # A late report after the end changes nothing.
    assert advance_rollout(devices, deployments, delivery, record) == done


def test_a_device_applied_on_another_version_does_not_count(devices, deployments):
    record = _rollout(devices, deployments, 1)
    delivery, clock = RecordingDelivery(), TickingClock()
    begin(record.deployment_id, deployments_table=deployments, delivery=delivery)
    record_report(
        status_report("gw-00", record.deployment_id, DeviceStatus.APPLIED, clock.tick(), version="1.9.0"), devices
    )
    assert advance_rollout(devices, deployments, delivery, record).state is DeploymentState.IN_PROGRESS


def test_failures_within_the_threshold_let_the_rollout_go_on(devices, deployments):
    record = _rollout(devices, deployments, 10)  # canary 1, rest 9
    delivery, clock = RecordingDelivery(), TickingClock()
    begin(record.deployment_id, deployments_table=deployments, delivery=delivery)
    report_each(devices, record, record.waves[0].targets, DeviceStatus.APPLIED, clock)
    advance_rollout(devices, deployments, delivery, record)

    rest = record.waves[1].targets
    report_each(devices, record, rest[:1], DeviceStatus.REJECTED, clock, reason="sha256 mismatch")  # 1/9 = 11% <= 20%
    report_each(devices, record, rest[1:], DeviceStatus.APPLIED, clock)
    done = advance_rollout(devices, deployments, delivery, record)
    assert done.state is DeploymentState.SUCCEEDED and done.reason == ""


def test_failed_share_past_the_threshold_fails_the_rollout_with_reasons(devices, deployments):
    record = _rollout(devices, deployments, 10)
    delivery, clock = RecordingDelivery(), TickingClock()
    begin(record.deployment_id, deployments_table=deployments, delivery=delivery)
    report_each(devices, record, record.waves[0].targets, DeviceStatus.APPLIED, clock)
    advance_rollout(devices, deployments, delivery, record)

    first, second = sorted(record.waves[1].targets)[:2]
    report_each(devices, record, [first], DeviceStatus.REJECTED, clock, reason="feature schema differs")
    assert advance_rollout(devices, deployments, delivery, record).state is DeploymentState.IN_PROGRESS
    report_each(devices, record, [second], DeviceStatus.ROLLED_BACK, clock, reason="health check failed")
    failed = advance_rollout(devices, deployments, delivery, record)  # 2/9 = 22% > 20%, others still pending

    # Past the threshold the rollout fails and, with no earlier model to restore, ends rolled back.
    assert failed.state is DeploymentState.ROLLED_BACK
    assert [w.state for w in failed.waves] == [DeploymentState.SUCCEEDED, DeploymentState.FAILED]
    assert failed.reason.startswith(
        f"rollout {record.deployment_id} failed at wave 1 (fp32): 2/9 failed (22% > threshold 20%): "
        f"{first} rejected: feature schema differs; {second} rolled_back: health check failed"
    )
    assert deployments.get(record.deployment_id) == failed
    assert delivery.waves == [0, 1]
    # Devices that apply afterwards do not revive it.
    report_each(devices, record, sorted(record.waves[1].targets)[2:], DeviceStatus.APPLIED, clock)
    assert advance_rollout(devices, deployments, delivery, record) == failed


def test_a_failed_canary_stops_before_the_rest(devices, deployments):
    record = _rollout(devices, deployments, 10)
    delivery, clock = RecordingDelivery(), TickingClock()
    begin(record.deployment_id, deployments_table=deployments, delivery=delivery)
    report_each(devices, record, record.waves[0].targets, DeviceStatus.REJECTED, clock, reason="bad payload")
    assert advance_rollout(devices, deployments, delivery, record).state is DeploymentState.ROLLED_BACK
    assert delivery.waves == [0]  # the rest never received it, and nothing was restored


def test_a_failed_delivery_is_undone_and_retried(devices, deployments):
    record = _rollout(devices, deployments, 10)
    delivery, clock = RecordingDelivery(fail_times=1), TickingClock()
    with pytest.raises(ConnectionError):
        begin(record.deployment_id, deployments_table=deployments, delivery=delivery)
    assert deployments.get(record.deployment_id).state is DeploymentState.PLANNED
    begin(record.deployment_id, deployments_table=deployments, delivery=delivery)
    assert delivery.waves == [0]

    report_each(devices, record, record.waves[0].targets, DeviceStatus.APPLIED, clock)
    delivery.fail_times = 1
    with pytest.raises(ConnectionError):
        advance_rollout(devices, deployments, delivery, record)
    assert [w.state for w in deployments.get(record.deployment_id).waves] == [
        DeploymentState.IN_PROGRESS,
        DeploymentState.PLANNED,
    ]
    assert advance_rollout(devices, deployments, delivery, record).waves[1].state is DeploymentState.IN_PROGRESS
    assert delivery.waves == [0, 1]


def test_concurrent_advances_deliver_the_next_wave_once(devices, deployments):
    record = _rollout(devices, deployments, 10)
    delivery, clock = RecordingDelivery(), TickingClock()
    begin(record.deployment_id, deployments_table=deployments, delivery=delivery)
    report_each(devices, record, record.waves[0].targets, DeviceStatus.APPLIED, clock)

    results = concurrently(8, lambda: advance_rollout(devices, deployments, delivery, record))
    assert delivery.waves == [0, 1]
    assert all(r.waves[1].state is DeploymentState.IN_PROGRESS for r in results)


def test_advancing_an_unknown_deployment_names_it(devices, deployments):
    with pytest.raises(LookupError, match="deployment_id='nope' is not in the deployment table"):
        advance("nope", devices_table=devices, deployments_table=deployments, delivery=RecordingDelivery())
