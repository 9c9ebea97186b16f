"""Offline marking: a device silent longer than the configured silence becomes OFFLINE with
"silent since <last_seen>"; an announcement or a status report brings it back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fleet_helpers import NOW, announcement, device, rule_event, status_report

from edgeloop.cloud.fleet.liveness import mark_silent_devices
from edgeloop.functions.device_registry.logic import handle_announcement
from edgeloop.functions.status_intake.logic import record_report
from edgeloop.functions.wave_controller import handler as wave_controller_handler
from edgeloop.schemas import DeviceStatus, names


def _seed(devices):
    devices.put(
        device(
            "gw-silent",
            last_seen=NOW - timedelta(minutes=16),
            status=DeviceStatus.APPLIED,
            current_model_version="1.0.0",
        )
    )
    devices.put(device("gw-recent", last_seen=NOW - timedelta(minutes=14)))
    devices.put(
        device(
            "gw-gone",
            last_seen=NOW - timedelta(days=2),
            status=DeviceStatus.OFFLINE,
            reason="silent since earlier",
            status_since=NOW - timedelta(days=1),
        )
    )


def test_silent_devices_are_marked_offline_with_when_they_went_silent(devices):
    _seed(devices)
    marked = mark_silent_devices(devices, now=NOW)  # default silence: 15 minutes

    assert [d.thing_name for d in marked] == ["gw-silent"]
    silent = devices.get("gw-silent")
    assert silent.status is DeviceStatus.OFFLINE and silent.status_since == NOW
    assert silent.reason == f"silent since {(NOW - timedelta(minutes=16)).isoformat()}"
    assert silent.current_model_version == "1.0.0"  # still what it ran when last heard
    assert devices.get("gw-recent").status is DeviceStatus.REGISTERED
    gone = devices.get("gw-gone")  # already offline: untouched, keeps its original since/reason
    assert (gone.reason, gone.status_since) == ("silent since earlier", NOW - timedelta(days=1))
    assert mark_silent_devices(devices, now=NOW) == []  # repeated: nothing new


def test_the_silence_is_configurable_and_checked(devices):
    _seed(devices)
    assert {d.thing_name for d in mark_silent_devices(devices, now=NOW, silence_s=60)} == {"gw-silent", "gw-recent"}
    with pytest.raises(ValueError, match="silence_s=0 must be > 0"):
        mark_silent_devices(devices, now=NOW, silence_s=0)


def test_an_announcement_brings_an_offline_device_back(devices):
    _seed(devices)
    mark_silent_devices(devices, now=NOW)
    back_at = NOW + timedelta(minutes=1)
    announced = announcement(
        "gw-silent", architecture="x86_64", runtime_version="1.2.0", current_model_version="1.0.0", sent_at=back_at
    )
    event = rule_event(names.announce_topic("gw-silent"), announced.model_dump(mode="json"), back_at)
    handle_announcement(event, devices, now=back_at)
    back = devices.get("gw-silent")
    assert (back.status, back.reason, back.last_seen) == (DeviceStatus.APPLIED, "", back_at)
    later = mark_silent_devices(devices, now=back_at + timedelta(minutes=14))
    assert "gw-silent" not in {d.thing_name for d in later}


def test_a_status_report_brings_an_offline_device_back(devices):
    _seed(devices)
    mark_silent_devices(devices, now=NOW)
    back_at = NOW + timedelta(minutes=2)
    record_report(status_report("gw-silent", "dep-1", DeviceStatus.APPLIED, back_at), devices, now=back_at)
    back = devices.get("gw-silent")
    assert (back.status, back.current_model_version, back.last_seen) == (DeviceStatus.APPLIED, "2.0.0", back_at)


def test_the_wave_controller_handler_marks_offline_on_schedule(devices, deployments, handler_delivery):
    devices.put(device("gw-old", last_seen=NOW - timedelta(days=400)))  # the handler uses the real clock
    devices.put(device("gw-live", last_seen=NOW + timedelta(days=3650)))
    delivery = handler_delivery()
    result = wave_controller_handler.lambda_handler({"source": "aws.events"}, None)
    assert result["marked_offline"] == ["gw-old"] and result["errors"] == {}
    assert devices.get("gw-old").status is DeviceStatus.OFFLINE
    assert devices.get("gw-live").status is DeviceStatus.REGISTERED
    assert delivery.closed
