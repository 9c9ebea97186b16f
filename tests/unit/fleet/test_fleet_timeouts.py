"""Timeouts: a rollout past timeout_s, or a wave that heard nothing for the wave timeout, ends
TIMED_OUT naming the silent devices, which are released (never left PENDING); the scheduled wave
controller drives it and also advances rollouts whose completing report was lost."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fleet_helpers import MODEL_BUCKET, NOW, RecordingDelivery, device, manifest, status_report

from edgeloop.cloud.fleet.planning import model_updates, plan_rollout
from edgeloop.cloud.fleet.waves import advance, begin
from edgeloop.functions.orchestrator.logic import _mark_targets_pending
from edgeloop.functions.status_intake.logic import record_report
from edgeloop.functions.wave_controller.logic import run_round
from edgeloop.functions.wave_controller.settings import Settings
from edgeloop.schemas import DeploymentState, DeviceStatus, RolloutPolicy, names

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/3"


def _start(devices, deployments, count, *, canary_share=1.0, timeout_s=3600):
    fleet = [
        device(f"gw-{i:02d}", current_model_id="extrusion-line-1", current_model_version="1.0.0", last_seen=NOW)
        for i in range(count)
    ]
    for d in fleet:
        devices.put(d)
    record = plan_rollout(
        manifest(), fleet, model_package_arn=ARN, policy=RolloutPolicy(canary_share=canary_share), now=NOW
    )
    record = record.model_copy(update={"timeout_s": timeout_s})
    assert deployments.put_if_absent(record, model_updates(manifest(), record.deployment_id, MODEL_BUCKET))
    _mark_targets_pending(record, devices, NOW)
    delivery = RecordingDelivery()
    return begin(record.deployment_id, deployments_table=deployments, delivery=delivery, now=NOW), delivery


def _report(devices, record, things, status, at):
    for thing in things:
        record_report(status_report(thing, record.deployment_id, status, at), devices, now=at)


def _advance(devices, deployments, delivery, record, now, wave_timeout_s=900):
    return advance(
        record.deployment_id,
        devices_table=devices,
        deployments_table=deployments,
        delivery=delivery,
        now=now,
        wave_timeout_s=wave_timeout_s,
    )


def _round(devices, deployments, delivery, now, **overrides):
    policy = RolloutPolicy(**{"offline_silence_s": 86_400, "wave_timeout_s": 900, **overrides})
    return run_round(devices=devices, deployments=deployments, delivery=delivery, now=now, policy=policy)


def test_a_rollout_past_its_timeout_is_timed_out_naming_the_silent_devices(devices, deployments):
    record, delivery = _start(devices, deployments, 4, timeout_s=600)
    assert record.waves[0].started_at == NOW
    _report(devices, record, ["gw-00", "gw-01"], DeviceStatus.APPLIED, NOW + timedelta(seconds=500))
    assert _advance(devices, deployments, delivery, record, NOW + timedelta(seconds=600)).state is (
        DeploymentState.IN_PROGRESS
    )

    late = NOW + timedelta(seconds=601)
    done = _advance(devices, deployments, delivery, record, late)

    assert done.state is DeploymentState.TIMED_OUT
    assert [w.state for w in done.waves] == [DeploymentState.TIMED_OUT]
    assert done.reason == (
        f"rollout {record.deployment_id} timed out at wave 0: in progress longer than timeout_s=600; "
        "no report from gw-02, gw-03"
    )
    for thing in ("gw-02", "gw-03"):
        silent = devices.get(thing)
        assert silent.status is DeviceStatus.APPLIED and silent.current_model_version == "1.0.0"
        assert (silent.desired_model_version, silent.reason, silent.status_since) == ("1.0.0", done.reason, late)
    reported = devices.get("gw-00")
    assert (reported.status, reported.current_model_version, reported.reason) == (DeviceStatus.APPLIED, "2.0.0", "")
    assert not devices.by_status(DeviceStatus.PENDING)
    # A timed-out rollout stays timed out; advancing it again changes nothing.
    assert _advance(devices, deployments, delivery, record, late + timedelta(hours=1)) == done


def test_a_wave_without_a_report_for_the_wave_timeout_is_timed_out(devices, deployments):
    record, delivery = _start(devices, deployments, 10, canary_share=0.5)
    canary, rest = record.waves
    offline = canary.targets[-1]  # not among the two that report
    devices.put(devices.get(offline).model_copy(update={"status": DeviceStatus.OFFLINE, "reason": "silent since x"}))
    _report(devices, record, canary.targets[:2], DeviceStatus.APPLIED, NOW + timedelta(seconds=200))
    # 250 s since the last report: within the 300 s wave timeout.
    assert _advance(devices, deployments, delivery, record, NOW + timedelta(seconds=450), 300).state is (
        DeploymentState.IN_PROGRESS
    )

    done = _advance(devices, deployments, delivery, record, NOW + timedelta(seconds=501), 300)

    silent = sorted(canary.targets[2:])
    assert done.state is DeploymentState.TIMED_OUT
    assert done.reason == (
        f"rollout {record.deployment_id} timed out at wave 0: no report since "
        f"{(NOW + timedelta(seconds=200)).isoformat()} (wave timeout 300 s); no report from {', '.join(silent)}"
    )
    assert [w.state for w in done.waves] == [DeploymentState.TIMED_OUT, DeploymentState.PLANNED]
    assert delivery.waves == [0]
    still_offline = devices.get(offline)
    assert (still_offline.status, still_offline.reason) == (DeviceStatus.OFFLINE, f"{done.reason}; silent since x")
    for thing in [t for t in silent if t != offline] + rest.targets:  # silent canaries, the wave never delivered
        released = devices.get(thing)
        assert released.status is DeviceStatus.APPLIED and released.reason == done.reason, thing


def test_a_device_without_a_model_is_released_as_registered_and_long_lists_are_cut(devices, deployments):
    fleet = [device(f"gw-{i:02d}", last_seen=NOW) for i in range(25)]
    for d in fleet:
        devices.put(d)
    record = plan_rollout(manifest(), fleet, model_package_arn=ARN, policy=RolloutPolicy(canary_share=1.0), now=NOW)
    deployments.put_if_absent(record, model_updates(manifest(), record.deployment_id, MODEL_BUCKET))
    _mark_targets_pending(record, devices, NOW)
    delivery = RecordingDelivery()
    begin(record.deployment_id, deployments_table=deployments, delivery=delivery, now=NOW)

    done = _advance(devices, deployments, delivery, record, NOW + timedelta(hours=2))

    assert done.state is DeploymentState.TIMED_OUT and done.reason.endswith("gw-19 and 5 more")
    assert {devices.get(f"gw-{i:02d}").status for i in range(25)} == {DeviceStatus.REGISTERED}


def test_the_wave_controller_advances_a_stalled_rollout_and_times_out_another(devices, deployments):
    record, delivery = _start(devices, deployments, 10, canary_share=0.1)
    # The canary applied, but the report that completes the wave never reached advance().
    _report(devices, record, record.waves[0].targets, DeviceStatus.APPLIED, NOW + timedelta(seconds=30))
    assert deployments.get(record.deployment_id).waves[1].state is DeploymentState.PLANNED

    first = _round(devices, deployments, delivery, NOW + timedelta(seconds=60))
    assert first.advanced == {record.deployment_id: "in_progress"} and first.errors == {}
    assert delivery.waves == [0, 1]
    started = deployments.get(record.deployment_id).waves[1]
    assert started.state is DeploymentState.IN_PROGRESS and started.started_at == NOW + timedelta(seconds=60)

    second = _round(devices, deployments, delivery, NOW + timedelta(seconds=60 + 901))
    assert second.advanced == {record.deployment_id: "timed_out"}
    assert _round(devices, deployments, delivery, NOW + timedelta(hours=1)).advanced == {}  # finished: left alone


def test_wave_controller_settings_default_and_refuse_bad_values(monkeypatch):
    base = {
        names.DEVICE_TABLE_ENV: "devices",
        names.DEPLOYMENT_TABLE_ENV: "deployments",
        names.MODEL_BUCKET_ENV: "models",
    }
    local = {**base, names.DELIVERY_ENV: "local"}
    settings = Settings.from_env(local)
    assert (settings.policy.offline_silence_s, settings.policy.wave_timeout_s) == (900, 900)
    assert Settings.from_env({**local, names.OFFLINE_SILENCE_S_ENV: "60"}).policy.offline_silence_s == 60
    with pytest.raises(ValueError, match=f"{names.WAVE_TIMEOUT_S_ENV}='-5'"):
        Settings.from_env({**local, names.WAVE_TIMEOUT_S_ENV: "-5"})
    with pytest.raises(ValueError, match=f"{names.OFFLINE_SILENCE_S_ENV}='soon'"):
        Settings.from_env({**local, names.OFFLINE_SILENCE_S_ENV: "soon"})
