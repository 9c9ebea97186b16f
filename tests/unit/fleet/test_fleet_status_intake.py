"""Status intake: newest report wins by the device's sent_at, stale ones are ignored, rollouts advance."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

from fleet_helpers import (
    MODEL_BUCKET,
    NOW,
    RecordingDelivery,
    device,
    manifest,
    rule_event,
    status_report,
)

from edgeloop.cloud.fleet.planning import model_updates, plan_rollout
from edgeloop.cloud.fleet.waves import begin
from edgeloop.functions.status_intake import handler as intake_handler
from edgeloop.functions.status_intake.logic import Outcome, handle_status_report, record_report
from edgeloop.schemas import DeploymentState, DeviceStatus, names


def _event(report):
    return rule_event(names.model_status_topic(report.thing_name), report.model_dump(mode="json"))


def test_a_report_updates_status_version_reason_and_since(devices):
    devices.put(device("gw-1", current_model_version="1.0.0", status=DeviceStatus.PENDING, deployment_id="dep-1"))
    sent = NOW + timedelta(minutes=1)
    outcome, record = record_report(
        status_report("gw-1", "dep-1", DeviceStatus.APPLIED, sent), devices, now=sent + timedelta(seconds=2)
    )

    assert outcome is Outcome.RECORDED
    assert (record.status, record.current_model_id, record.current_model_version) == (
        DeviceStatus.APPLIED,
        "extrusion-line-1",
        "2.0.0",
    )
    assert (record.status_since, record.last_seen, record.deployment_id) == (sent, sent + timedelta(seconds=2), "dep-1")
    assert devices.get("gw-1") == record

    rejected_at = sent + timedelta(minutes=1)
    outcome, record = record_report(
        status_report("gw-1", "dep-2", DeviceStatus.REJECTED, rejected_at, version="3.0.0", reason="sha256 mismatch"),
        devices,
    )
    # A rejected update leaves the device on the model it had.
    assert (record.status, record.reason, record.current_model_version) == (
        DeviceStatus.REJECTED,
        "sha256 mismatch",
        "2.0.0",
    )
    assert (record.status_since, record.deployment_id) == (rejected_at, "dep-2")


def test_a_stale_report_is_ignored_and_counted(devices):
    devices.put(device("gw-1"))
    newer = status_report("gw-1", "dep-1", DeviceStatus.APPLIED, NOW + timedelta(minutes=5))
    older = status_report("gw-1", "dep-1", DeviceStatus.REJECTED, NOW + timedelta(minutes=4), reason="late")
    assert record_report(newer, devices)[0] is Outcome.RECORDED

    outcome, record = record_report(older, devices)
    assert outcome is Outcome.STALE
    assert record.status is DeviceStatus.APPLIED and record.reason == ""
    assert record_report(newer, devices)[0] is Outcome.STALE  # the same report delivered twice
    # Microseconds count: 1 µs newer is newer.
    assert (
        record_report(newer.model_copy(update={"sent_at": newer.sent_at + timedelta(microseconds=1)}), devices)[0]
        is Outcome.RECORDED
    )


def test_200_concurrent_reports_on_20_devices_leave_the_newest_of_each(devices):
    things = [f"gw-{i:02d}" for i in range(20)]
    for thing in things:
        devices.put(device(thing))
    statuses = [DeviceStatus.APPLIED, DeviceStatus.REJECTED, DeviceStatus.ROLLED_BACK, DeviceStatus.PENDING]
    reports = [
        status_report(thing, f"dep-{n}", statuses[n % 4], NOW + timedelta(seconds=n), reason=f"report {n}")
        for thing in things
        for n in range(10)
    ]
    random.Random(7).shuffle(reports)
    outcomes: list[Outcome] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(10)
    chunks = [reports[i::10] for i in range(10)]

    def send(chunk):
        barrier.wait()
        for report in chunk:
            try:
                outcomes.append(record_report(report, devices)[0])
            except Exception as exc:  # surfaced below
                errors.append(exc)

    threads = [threading.Thread(target=send, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(outcomes) == 200
    assert outcomes.count(Outcome.RECORDED) >= 20  # at least the newest of each device
    for thing in things:
        record = devices.get(thing)
        assert (record.reason, record.deployment_id, record.status) == ("report 9", "dep-9", statuses[9 % 4]), thing
        assert devices.get_stored(thing).report_sent_at_us == int((NOW + timedelta(seconds=9)).timestamp()) * 1_000_000


def test_refused_reports_name_the_problem(devices, deployments):
    devices.put(device("gw-1"))
    delivery = RecordingDelivery()
    common = {"devices": devices, "deployments": deployments, "delivery": delivery, "now": NOW}
    report = status_report("gw-1", "dep-1", DeviceStatus.APPLIED, NOW)

    wrong_topic = handle_status_report(
        rule_event(names.model_status_topic("gw-2"), report.model_dump(mode="json")), **common
    )
    assert wrong_topic.outcome is Outcome.REFUSED
    assert (
        wrong_topic.refused == "thing_name='gw-1' does not match the thing 'gw-2' of topic 'edgeloop/gw-2/model-status'"
    )

    unknown = handle_status_report(_event(report.model_copy(update={"thing_name": "gw-9"})), **common)
    assert unknown.refused == "thing_name='gw-9' has not announced itself (not in the device table)"

    bad_status = report.model_dump(mode="json") | {"status": "exploded"}
    refused = handle_status_report(rule_event(names.model_status_topic("gw-1"), bad_status), **common)
    assert "status='exploded'" in refused.refused
    assert devices.get("gw-1").status is DeviceStatus.REGISTERED


def test_the_canarys_report_releases_the_next_wave_through_the_handler(devices, deployments, handler_delivery):
    fleet = [device(f"gw-{i}") for i in range(5)]
    record = plan_rollout(
        manifest(), fleet, model_package_arn="arn:aws:sagemaker:eu-west-1:1:model-package/g/1", now=NOW
    )
    deployments.put_if_absent(record, model_updates(manifest(), record.deployment_id, MODEL_BUCKET))
    for d in fleet:
        devices.put(d.model_copy(update={"deployment_id": record.deployment_id, "status": DeviceStatus.PENDING}))
    delivery = RecordingDelivery()
    begin(record.deployment_id, deployments_table=deployments, delivery=delivery)

    handler_delivery(delivery)
    canary = record.waves[0].targets[0]
    report = status_report(canary, record.deployment_id, DeviceStatus.APPLIED, NOW + timedelta(minutes=1))
    recorded = intake_handler.lambda_handler(_event(report).model_dump(), None)
    stale = intake_handler.lambda_handler(_event(report).model_dump(), None)

    assert recorded["outcome"] == "recorded"
    assert recorded["deployment"]["waves"][1]["state"] == DeploymentState.IN_PROGRESS.value
    assert stale["outcome"] == "stale" and stale["deployment"] is None
    assert delivery.waves == [0, 1]
    assert delivery.deliveries[1][1].targets == record.waves[1].targets


def test_a_report_for_a_deployment_edgeloop_did_not_make_only_updates_the_device(devices, deployments):
    devices.put(device("gw-1"))
    result = handle_status_report(
        _event(status_report("gw-1", "console-deployment", DeviceStatus.APPLIED, NOW)),
        devices=devices,
        deployments=deployments,
        delivery=RecordingDelivery(),
        now=NOW,
    )
    assert result.outcome is Outcome.RECORDED and result.deployment is None
    assert devices.get("gw-1").deployment_id == "console-deployment"
