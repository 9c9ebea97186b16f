"""Fleet queries: history items in the device table, fleet_status filters, why_not explanations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fleet_helpers import MODEL_BUCKET, NOW, RecordingDelivery, device, manifest, rule_event, status_report, tier

from edgeloop.cloud.fleet.devices import (
    DeviceWrite,
    history_entry,
    history_key,
)
from edgeloop.cloud.fleet.planning import model_updates, plan_rollout
from edgeloop.cloud.fleet.queries import (
    InvalidParameter,
    NotFound,
    WhyNotCategory,
    device_history,
    fleet_status,
    why_not,
)
from edgeloop.functions.status_intake.logic import Outcome, handle_status_report
from edgeloop.schemas import (
    Architecture,
    DeploymentState,
    DeviceEvent,
    DeviceStatus,
    Precision,
    names,
)

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/edgeloop-extrusion-line-1/3"


def _set(devices, thing, event=None, **fields):
    """Change a device through the history-keeping compare-and-swap."""

    def change(stored):
        return DeviceWrite(stored.record.model_copy(update=fields))

    return devices.compare_and_swap_with_history(thing, change, event=event)


def _register(devices, record):
    return devices.compare_and_swap_with_history(record.thing_name, lambda stored: DeviceWrite(record))


# --- history ---------------------------------------------------------------------------------------


def test_history_is_newest_first_and_kept_out_of_device_queries(devices):
    _register(devices, device("gw-1"))
    _set(devices, "gw-1", status=DeviceStatus.PENDING, deployment_id="dep-1", status_since=NOW)
    _set(devices, "gw-1", status=DeviceStatus.APPLIED, current_model_version="2.0.0", status_since=NOW + timedelta(1))
    _set(devices, "gw-1", last_seen=NOW + timedelta(2))  # no status change: no history item
    _register(devices, device("gw-2"))

    history = devices.history("gw-1")
    assert [(e.event, e.status, e.revision) for e in history] == [
        (DeviceEvent.APPLIED, DeviceStatus.APPLIED, 3),
        (DeviceEvent.PENDING, DeviceStatus.PENDING, 2),
        (DeviceEvent.REGISTERED, DeviceStatus.REGISTERED, 1),
    ]
    assert history[0].previous_status is DeviceStatus.PENDING and history[0].model_version == "2.0.0"
    assert history[1].at == NOW and history[1].deployment_id == "dep-1"
    assert [e.revision for e in devices.history("gw-1", limit=2)] == [3, 2]
    # The history items share the table but none of the device queries sees them.
    assert [d.thing_name for d in devices.scan_all()] == ["gw-1", "gw-2"]
    assert [d.thing_name for d in devices.by_line("line-1")] == ["gw-1", "gw-2"]
    assert [d.thing_name for d in devices.by_status(DeviceStatus.REGISTERED)] == ["gw-2"]
    assert [d.thing_name for d in devices.by_model_version("2.0.0")] == ["gw-1"]
    assert [e.thing_name for e in devices.history("gw-2")] == ["gw-2"]


def test_named_event_is_recorded_even_without_a_status_change(devices):
    _register(devices, device("gw-1"))
    _set(devices, "gw-1", event=DeviceEvent.ANNOUNCED, last_seen=NOW)
    assert [e.event for e in devices.history("gw-1")] == [DeviceEvent.ANNOUNCED, DeviceEvent.REGISTERED]
    assert devices.history("gw-1")[0].at == NOW  # no status change: when it was seen


def test_history_append_is_idempotent_and_history_entry_needs_a_change(devices):
    before = device("gw-1")
    assert history_entry(before, before.model_copy(update={"last_seen": NOW}), revision=2) is None
    entry = history_entry(before, before.model_copy(update={"status": DeviceStatus.OFFLINE}), revision=2)
    assert entry.event is DeviceEvent.OFFLINE
    devices.append_history(entry)
    devices.append_history(entry.model_copy(update={"reason": "a retry must not overwrite"}))
    assert devices.history("gw-1") == [entry]
    assert history_key("gw-1", 2) == "gw-1#history#000000000002"
    with pytest.raises(ValueError, match="limit=0"):
        devices.history("gw-1", limit=0)


def test_status_intake_appends_history_only_for_recorded_reports(devices, deployments):
    _register(devices, device("gw-1"))
    report = status_report("gw-1", "dep-x", DeviceStatus.REJECTED, NOW, reason="sha256 mismatch")
    event = rule_event(names.model_status_topic("gw-1"), report.model_dump(mode="json"))
    delivery = RecordingDelivery()
    first = handle_status_report(event, devices=devices, deployments=deployments, delivery=delivery, now=NOW)
    again = handle_status_report(event, devices=devices, deployments=deployments, delivery=delivery, now=NOW)
    assert (first.outcome, again.outcome) == (Outcome.RECORDED, Outcome.STALE)
    newest, oldest = device_history(devices, "gw-1")
    assert (newest.event, newest.reason, newest.at) == (DeviceEvent.REJECTED, "sha256 mismatch", NOW)
    assert oldest.event is DeviceEvent.REGISTERED


def test_device_history_of_an_unknown_or_misspelt_thing(devices):
    with pytest.raises(NotFound, match="thing='gw-9'"):
        device_history(devices, "gw-9")
    with pytest.raises(InvalidParameter, match=r"thing='gw 1'"):
        device_history(devices, "gw 1")
    with pytest.raises(InvalidParameter, match="limit=0"):
        device_history(devices, "gw-1", limit=0)


# --- fleet status ----------------------------------------------------------------------------------


def test_fleet_status_filters_combine(devices):
    devices.put(device("gw-1", current_model_version="2.0.0", status=DeviceStatus.APPLIED))
    devices.put(device("gw-2", site="plant-b", current_model_version="2.0.0", status=DeviceStatus.APPLIED))
    devices.put(device("gw-3", line_id="line-2", status=DeviceStatus.OFFLINE))
    assert [d.thing_name for d in fleet_status(devices, model_version="2.0.0", site="plant-a")] == ["gw-1"]
    assert [d.thing_name for d in fleet_status(devices, status="offline")] == ["gw-3"]
    assert [d.thing_name for d in fleet_status(devices, line_id="line-1")] == ["gw-1", "gw-2"]
    assert len(fleet_status(devices)) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "lost"}, "status='lost'"),
        ({"model_version": "2.0"}, "model='2.0'"),
        ({"line_id": "Line 1"}, "line='Line 1'"),
        ({"site": ""}, "site=''"),
    ],
)
def test_fleet_status_names_the_bad_parameter(devices, kwargs, message):
    with pytest.raises(InvalidParameter, match=message):
        fleet_status(devices, **kwargs)


# --- why not ---------------------------------------------------------------------------------------


def _fleet(devices):
    fleet = [
        device("applied", status=DeviceStatus.APPLIED, current_model_version="2.0.0"),
        device("rejected"),
        device("rolled-back", current_model_version="1.0.0"),
        device("pending"),
        device("armv7-old", architecture=Architecture.ARMV7L, runtime_version="1.0.0"),
        device("riscv-like", architecture=Architecture.ARMV7L, supported_precisions=[Precision.FP32]),
        device("offline", status=DeviceStatus.OFFLINE),
        device("other-line", line_id="line-2"),
        device("other-use-case", use_case="packaging"),
    ]
    for record in fleet:
        devices.put(record)
    return fleet


def _record_rollout(devices, deployments, model, *, state=DeploymentState.IN_PROGRESS, reason=""):
    record = plan_rollout(model, devices.scan_all(), model_package_arn=ARN, now=NOW)
    record = record.model_copy(update={"state": state, "reason": reason})
    assert deployments.put_if_absent(record, model_updates(model, record.deployment_id, MODEL_BUCKET))
    return record


def _explained(report):
    return {d.thing_name: (d.category, d.reason) for d in report.devices}


def test_why_not_explains_every_device_not_on_the_version(devices, deployments):
    _fleet(devices)
    model = manifest(
        tiers=[
            tier(Precision.FP32, [Architecture.X86_64, Architecture.AARCH64]),
            tier(Precision.FP16_LEAVES, [Architecture.ARMV7L], min_runtime="1.1.0"),
        ]
    )
    rollout = _record_rollout(devices, deployments, model)
    dep = rollout.deployment_id
    _set(devices, "rejected", deployment_id=dep, status=DeviceStatus.REJECTED, reason="feature schema mismatch")
    _set(devices, "rolled-back", deployment_id=dep, status=DeviceStatus.ROLLED_BACK, reason="health check failed")
    _set(devices, "pending", deployment_id=dep, status=DeviceStatus.PENDING, status_since=NOW)
    devices.put(device("late-comer"))  # registered after the plan

    report = why_not(devices, deployments, "2.0.0", manifest_of=lambda record: model)
    explained = _explained(report)
    assert report.on_version == ["applied"] and report.deployments == [dep]
    assert set(explained) == {d.thing_name for d in devices.scan_all()} - {"applied"}
    assert explained["rejected"] == (WhyNotCategory.REJECTED, "feature schema mismatch")
    assert explained["rolled-back"] == (WhyNotCategory.ROLLED_BACK, "health check failed")
    assert explained["pending"][0] is WhyNotCategory.PENDING and "wave" in explained["pending"][1]
    category, reason = explained["armv7-old"]
    assert category is WhyNotCategory.INCOMPATIBLE and "runtime 1.0.0 < 1.1.0" in reason
    category, reason = explained["riscv-like"]
    assert category is WhyNotCategory.INCOMPATIBLE and "precision fp16-leaves not in supported" in reason
    assert explained["offline"][0] is WhyNotCategory.OFFLINE
    assert explained["other-line"] == (WhyNotCategory.NOT_TARGETED, "line line-2 not targeted")
    assert explained["other-use-case"][0] is WhyNotCategory.NOT_TARGETED
    assert "packaging" in explained["other-use-case"][1]
    category, reason = explained["late-comer"]
    assert category is WhyNotCategory.NOT_TARGETED and "registered after it was planned" in reason


def test_why_not_without_a_readable_manifest_uses_the_plan(devices, deployments):
    _fleet(devices)
    model = manifest()
    _record_rollout(devices, deployments, model)
    explained = _explained(why_not(devices, deployments, "2.0.0", manifest_of=lambda record: None))
    assert explained["offline"][0] is WhyNotCategory.OFFLINE
    assert explained["other-line"][0] is WhyNotCategory.NOT_TARGETED
    assert explained["riscv-like"][0] is WhyNotCategory.INCOMPATIBLE


def test_why_not_when_the_rollout_stopped_or_the_device_moved_on(devices, deployments):
    _fleet(devices)
    rollout = _record_rollout(
        devices, deployments, manifest(), state=DeploymentState.FAILED, reason="wave 0 (fp32): 1 of 1 devices failed"
    )
    _set(devices, "pending", deployment_id=rollout.deployment_id, status=DeviceStatus.PENDING)
    _set(devices, "rejected", deployment_id="a-later-rollout", status=DeviceStatus.PENDING)
    explained = _explained(why_not(devices, deployments, "2.0.0", manifest_of=lambda record: None))
    category, reason = explained["pending"]
    assert category is WhyNotCategory.ROLLOUT_STOPPED and "failed: wave 0" in reason
    category, reason = explained["rejected"]
    assert category is WhyNotCategory.MOVED_ON and "a-later-rollout" in reason


def test_why_not_of_a_version_never_rolled_out_or_misspelt(devices, deployments):
    with pytest.raises(NotFound, match="model_version='9.9.9'"):
        why_not(devices, deployments, "9.9.9")
    with pytest.raises(InvalidParameter, match="model_version='latest'"):
        why_not(devices, deployments, "latest")
