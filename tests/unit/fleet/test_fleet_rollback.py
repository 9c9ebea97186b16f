"""Automatic rollback: a wave past its failure threshold restores the previous model on every
device the rollout reached, through the same ModelDelivery, and the rollout ends ROLLED_BACK."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fleet_helpers import (
    MODEL_BUCKET,
    NOW,
    RecordingDelivery,
    TickingClock,
    advance_rollout,
    concurrently,
    device,
    manifest,
    report_each,
    tier,
)

from edgeloop.cloud.fleet.delivery import ROLLBACK_WAVE_BASE, cohort_group_name
from edgeloop.cloud.fleet.planning import model_updates, plan_rollout
from edgeloop.cloud.fleet.waves import begin
from edgeloop.functions.orchestrator.logic import _mark_targets_pending
from edgeloop.functions.wave_controller.logic import run_round
from edgeloop.schemas import Architecture, DeploymentState, DeviceStatus, Precision, RolloutPolicy

OLD_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/2"
NEW_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/3"
MODEL = "extrusion-line-1"


def _old_manifest():
    return manifest(
        version="1.0.0",
        tiers=[
            tier(Precision.FP32, [Architecture.X86_64, Architecture.AARCH64]),
            tier(Precision.FP16_LEAVES, [Architecture.ARMV7L]),
        ],
    )


def _fleet(devices, deployments, things_on_old, things_without_model=(), armv7=()):
    """Record the 1.0.0 rollout (what a rollback restores from) and the devices running it."""
    old = plan_rollout(_old_manifest(), [], model_package_arn=OLD_ARN, now=NOW - timedelta(days=3))
    assert deployments.put_if_absent(old, model_updates(_old_manifest(), old.deployment_id, MODEL_BUCKET))
    fleet = []
    for thing in things_on_old:
        arch = Architecture.ARMV7L if thing in armv7 else Architecture.X86_64
        fleet.append(
            device(
                thing,
                architecture=arch,
                current_model_id=MODEL,
                current_model_version="1.0.0",
                deployment_id=old.deployment_id,
                status=DeviceStatus.APPLIED,
            )
        )
    fleet += [device(thing) for thing in things_without_model]
    for d in fleet:
        devices.put(d)
    return fleet, old


def _start(devices, deployments, fleet, delivery, *, canary_share=1.0):
    record = plan_rollout(
        manifest(), fleet, model_package_arn=NEW_ARN, policy=RolloutPolicy(canary_share=canary_share), now=NOW
    )
    assert deployments.put_if_absent(record, model_updates(manifest(), record.deployment_id, MODEL_BUCKET))
    _mark_targets_pending(record, devices, NOW)
    return begin(record.deployment_id, deployments_table=deployments, delivery=delivery, now=NOW)


def test_failed_wave_restores_the_previous_model_on_devices_it_reached(devices, deployments):
    fleet, old = _fleet(devices, deployments, ["gw-00", "gw-01", "gw-02", "gw-03", "gw-04"], ["gw-05"])
    delivery, clock = RecordingDelivery(), TickingClock()
    record = _start(devices, deployments, fleet, delivery)
    assert devices.get("gw-00").previous_model_version == "1.0.0"
    report_each(devices, record, ["gw-00", "gw-01", "gw-05"], DeviceStatus.APPLIED, clock)
    report_each(devices, record, ["gw-02", "gw-03"], DeviceStatus.REJECTED, clock, reason="sha256 mismatch")
    # gw-04 has not reported: it may still apply the new model, so it is restored too.

    done = advance_rollout(devices, deployments, delivery, record)

    reason = (
        f"rollout {record.deployment_id} failed at wave 0 (fp32): 2/6 failed (33% > threshold 20%): "
        "gw-02 rejected: sha256 mismatch; gw-03 rejected: sha256 mismatch"
    )
    assert done.state is DeploymentState.ROLLED_BACK and done.reason == reason
    assert deployments.get(record.deployment_id) == done
    assert [w.state for w in done.waves] == [DeploymentState.FAILED]
    [forward, (deployment_id, wave, update)] = delivery.deliveries
    assert deployment_id == record.deployment_id == update.deployment_id
    assert wave.index == ROLLBACK_WAVE_BASE and wave.targets == ["gw-00", "gw-01", "gw-04"]
    assert (update.model_id, update.version, update.precision) == (MODEL, "1.0.0", Precision.FP32)
    restored = model_updates(_old_manifest(), old.deployment_id, MODEL_BUCKET)[Precision.FP32]
    assert update == restored.model_copy(update={"deployment_id": record.deployment_id})
    for thing in ("gw-00", "gw-01", "gw-04"):
        d = devices.get(thing)
        assert d.status is DeviceStatus.ROLLED_BACK, thing
        assert d.reason == f"{reason}; restoring {MODEL} 1.0.0"
        assert d.desired_model_version == "1.0.0"
    assert {devices.get(t).status for t in ("gw-02", "gw-03")} == {DeviceStatus.REJECTED}
    assert devices.get("gw-02").reason == "sha256 mismatch"
    no_previous = devices.get("gw-05")
    assert no_previous.status is DeviceStatus.APPLIED and no_previous.current_model_version == "2.0.0"
    assert no_previous.reason == f"{reason}; no previous model to restore (the update agent cannot remove a model)"

    # Retried (Lambda retry, a duplicate report, the schedule): nothing is delivered or changed again.
    before = {t: devices.get(t) for t in ("gw-00", "gw-04", "gw-05")}
    assert advance_rollout(devices, deployments, delivery, record) == done
    assert len(delivery.deliveries) == 2
    assert {t: devices.get(t) for t in before} == before


def test_confirmed_and_late_devices_end_rolled_back(devices, deployments):
    fleet, _ = _fleet(devices, deployments, ["gw-00", "gw-01", "gw-02", "gw-03"])
    delivery, clock = RecordingDelivery(), TickingClock()
    record = _start(devices, deployments, fleet, delivery)
    report_each(devices, record, ["gw-00"], DeviceStatus.APPLIED, clock)
    report_each(devices, record, ["gw-01", "gw-02"], DeviceStatus.REJECTED, clock, reason="feature schema differs")
    advance_rollout(devices, deployments, delivery, record)
    assert delivery.deliveries[-1][1].targets == ["gw-00", "gw-03"]

    # gw-00 confirms the restored model (the report names this deployment, so it lands here).
    report_each(devices, record, ["gw-00"], DeviceStatus.APPLIED, clock, version="1.0.0", reason="already active")
    advance_rollout(devices, deployments, delivery, record)
    confirmed = devices.get("gw-00")
    assert confirmed.status is DeviceStatus.ROLLED_BACK and confirmed.current_model_version == "1.0.0"
    assert confirmed.reason.startswith(f"rollout {record.deployment_id} failed at wave 0 (fp32): 2/4 failed")
    assert confirmed.reason.endswith(f"; restored {MODEL} 1.0.0")

    # gw-03 applies the failed rollout's model late: it is restored again, alone.
    report_each(devices, record, ["gw-03"], DeviceStatus.APPLIED, clock)
    assert devices.get("gw-03").status is DeviceStatus.APPLIED
    advance_rollout(devices, deployments, delivery, record)
    assert delivery.deliveries[-1][1].targets == ["gw-03"] and len(delivery.deliveries) == 3
    assert devices.get("gw-03").status is DeviceStatus.ROLLED_BACK


def test_devices_of_waves_never_delivered_are_released_not_left_pending(devices, deployments):
    things = [f"gw-{i:02d}" for i in range(10)]
    fleet, _ = _fleet(devices, deployments, things)
    delivery, clock = RecordingDelivery(), TickingClock()
    record = _start(devices, deployments, fleet, delivery, canary_share=0.1)
    canary, rest = record.waves
    report_each(devices, record, canary.targets, DeviceStatus.REJECTED, clock, reason="health check failed")

    done = advance_rollout(devices, deployments, delivery, record)

    assert done.state is DeploymentState.ROLLED_BACK
    assert [w.state for w in done.waves] == [DeploymentState.FAILED, DeploymentState.PLANNED]
    assert [wave.index for _, wave, _ in delivery.deliveries] == [0]  # nothing to restore, rest never reached
    for thing in rest.targets:
        d = devices.get(thing)
        assert (d.status, d.current_model_version, d.desired_model_version) == (DeviceStatus.APPLIED, "1.0.0", "1.0.0")
        assert d.reason == done.reason


def test_each_previous_model_and_tier_is_restored_on_its_own(devices, deployments):
    fleet, _ = _fleet(devices, deployments, ["gw-00", "gw-01", "gw-02", "gw-03"], armv7={"gw-02", "gw-03"})
    # gw-01 ran 0.9.0, which no recorded rollout delivered: nothing to restore it from.
    devices.put(devices.get("gw-01").model_copy(update={"current_model_version": "0.9.0"}))
    fleet = [devices.get(t) for t in ("gw-00", "gw-01", "gw-02", "gw-03")]
    delivery, clock = RecordingDelivery(), TickingClock()
    record = _start(devices, deployments, fleet, delivery)
    fp32, fp16 = record.waves
    assert (fp32.precision, fp16.precision) == (Precision.FP32, Precision.FP16_LEAVES)
    report_each(devices, record, ["gw-00", "gw-01"], DeviceStatus.APPLIED, clock)
    report_each(devices, record, ["gw-02"], DeviceStatus.APPLIED, clock)
    # Complete the fp32 cohort, then fail the fp16 canary.
    advance_rollout(devices, deployments, delivery, record)
    report_each(devices, record, ["gw-03"], DeviceStatus.REJECTED, clock, reason="runtime too old")
    done = advance_rollout(devices, deployments, delivery, record)

    assert done.state is DeploymentState.ROLLED_BACK
    restores = {
        (w.precision, tuple(w.targets)): u.version for _, w, u in delivery.deliveries if w.index >= ROLLBACK_WAVE_BASE
    }
    assert restores == {(Precision.FP32, ("gw-00",)): "1.0.0", (Precision.FP16_LEAVES, ("gw-02",)): "1.0.0"}
    kept = devices.get("gw-01")
    assert kept.status is DeviceStatus.APPLIED and "previous model ? 0.9.0 was not delivered" not in kept.reason
    assert f"previous model {MODEL} 0.9.0 was not delivered by any recorded rollout" in kept.reason


def test_restores_get_their_own_greengrass_group_per_previous_model():
    from edgeloop.schemas import RolloutWave

    update = model_updates(_old_manifest(), "dep-1", MODEL_BUCKET)[Precision.FP32]
    forward = RolloutWave(index=0, precision=Precision.FP32, targets=["gw-00"], failure_threshold=0.2)
    restore = forward.model_copy(update={"index": ROLLBACK_WAVE_BASE})
    assert cohort_group_name("dep-1", forward) == "edgeloop-rollout-dep-1-fp32"
    name = cohort_group_name("dep-1", restore, update)
    assert name.startswith("edgeloop-rollout-dep-1-restore-") and name.endswith("-fp32")
    assert name != cohort_group_name("dep-1", restore, update.model_copy(update={"version": "1.1.0"}))
    with pytest.raises(ValueError, match="rollback wave 1000 of 'dep-1' needs its ModelUpdate"):
        cohort_group_name("dep-1", restore)


def test_concurrent_reports_roll_back_once_and_consistently(devices, deployments):
    things = [f"gw-{i:02d}" for i in range(8)]
    fleet, _ = _fleet(devices, deployments, things)
    delivery, clock = RecordingDelivery(), TickingClock()
    record = _start(devices, deployments, fleet, delivery)
    report_each(devices, record, things[:4], DeviceStatus.APPLIED, clock)
    report_each(devices, record, things[4:], DeviceStatus.REJECTED, clock, reason="bad payload")
    results = concurrently(6, lambda: advance_rollout(devices, deployments, delivery, record))
    assert {r.state for r in results} == {DeploymentState.ROLLED_BACK}
    restored = {t for _, w, _ in delivery.deliveries if w.index >= ROLLBACK_WAVE_BASE for t in w.targets}
    assert restored == set(things[:4])  # a retry may deliver twice; the device answers "already active"
    assert {devices.get(t).status for t in things[:4]} == {DeviceStatus.ROLLED_BACK}


def test_a_rollback_interrupted_by_a_failed_delivery_is_finished_by_the_wave_controller(devices, deployments):
    fleet, _ = _fleet(devices, deployments, ["gw-00", "gw-01", "gw-02"])
    delivery, clock = RecordingDelivery(), TickingClock()
    record = _start(devices, deployments, fleet, delivery)
    report_each(devices, record, ["gw-00"], DeviceStatus.APPLIED, clock)
    report_each(devices, record, ["gw-01", "gw-02"], DeviceStatus.REJECTED, clock, reason="bad payload")
    delivery.fail_times = 1
    with pytest.raises(ConnectionError):
        advance_rollout(devices, deployments, delivery, record)
    assert deployments.get(record.deployment_id).state is DeploymentState.FAILED
    assert devices.get("gw-00").status is DeviceStatus.APPLIED  # not marked before it was delivered

    result = run_round(devices=devices, deployments=deployments, delivery=delivery, now=NOW, policy=RolloutPolicy())
    assert result.errors == {} and result.advanced == {record.deployment_id: "rolled_back"}
    assert delivery.deliveries[-1][1].targets == ["gw-00"]
    assert devices.get("gw-00").status is DeviceStatus.ROLLED_BACK
