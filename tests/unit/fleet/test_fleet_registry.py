"""Device registry: announcements upsert DeviceRecords; wrong topics and bad payloads are refused."""

from __future__ import annotations

from datetime import timedelta

import boto3
import pytest
from fleet_helpers import DEVICE_TABLE, NOW, announcement, device, rule_event

from edgeloop.cloud.fleet.devices import DeviceTable, DeviceWrite, WriteConflict
from edgeloop.cloud.fleet.queries import fleet_status
from edgeloop.functions.device_registry import handler as registry_handler
from edgeloop.functions.device_registry.logic import handle_announcement, register_device
from edgeloop.functions.device_registry.settings import Settings
from edgeloop.schemas import Architecture, DeviceStatus, Precision, names


def test_first_announcement_creates_a_registered_device(devices):
    record = register_device(announcement(current_model_version="1.0.0"), devices, now=NOW)

    assert record == devices.get("gw-1")
    assert record.status is DeviceStatus.REGISTERED
    assert record.current_model_version == "1.0.0"
    assert record.architecture is Architecture.AARCH64
    assert record.status_since == record.last_seen == NOW
    item = boto3.client("dynamodb").get_item(TableName=DEVICE_TABLE, Key={"thing_name": {"S": "gw-1"}})["Item"]
    # None fields are left out, so the by_model_version GSI never sees a NULL key.
    assert "desired_model_version" not in item and "deployment_id" not in item


def test_reannouncement_refreshes_hardware_and_keeps_model_fields(devices):
    devices.put(
        device(
            "gw-1",
            architecture="x86_64",
            runtime_version="0.9.0",
            supported_precisions=["fp32"],
            current_model_id="extrusion-line-1",
            current_model_version="1.0.0",
            desired_model_version="2.0.0",
            deployment_id="dep-1",
            status=DeviceStatus.PENDING,
            reason="waiting",
            status_since=NOW - timedelta(hours=2),
            last_seen=NOW - timedelta(hours=1),
        )
    )
    later = NOW + timedelta(minutes=3)
    record = register_device(
        announcement(
            architecture="armv7l",
            runtime_version="1.1.0",
            supported_precisions=["fp16-leaves", "quantized"],
            current_model_version="0.5.0",
        ),
        devices,
        now=later,
    )

    assert (record.architecture, record.runtime_version) == (Architecture.ARMV7L, "1.1.0")
    assert record.supported_precisions == [Precision.FP16_LEAVES, Precision.QUANTIZED]
    assert record.last_seen == later
    assert (record.current_model_id, record.current_model_version) == ("extrusion-line-1", "1.0.0")
    assert (record.desired_model_version, record.deployment_id) == ("2.0.0", "dep-1")
    assert (record.status, record.reason, record.status_since) == (
        DeviceStatus.PENDING,
        "waiting",
        NOW - timedelta(hours=2),
    )
    assert devices.get("gw-1") == record


def test_offline_device_that_announces_is_back(devices):
    devices.put(device("gw-1", status=DeviceStatus.OFFLINE, current_model_version="1.0.0", reason="no heartbeat"))
    record = register_device(announcement(), devices, now=NOW)
    assert (record.status, record.status_since, record.reason) == (DeviceStatus.APPLIED, NOW, "")


def test_announcement_on_another_things_topic_is_refused(devices):
    event = rule_event(names.announce_topic("gw-2"), announcement("gw-1").model_dump(mode="json"))
    result = handle_announcement(event, devices, now=NOW)
    assert result.record is None
    assert result.refused == "thing_name='gw-1' does not match the thing 'gw-2' of topic 'edgeloop/gw-2/announce'"
    assert devices.scan_all() == []


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        (names.telemetry_topic("gw-1"), None, "topic='edgeloop/gw-1/telemetry' is not 'edgeloop/gw-1/announce'"),
        ("other/gw-1/announce", None, "is not an edgeloop device topic"),
        (names.announce_topic("gw-1"), b"\x78\x9c not json", "is not JSON"),
        (names.announce_topic("gw-1"), b"[1, 2]", "payload is a JSON list, not an object"),
        (names.announce_topic("gw-1"), {"architecture": "sparc"}, "architecture='sparc'"),
        (names.announce_topic("gw-1"), {"runtime_version": "1.0"}, "runtime_version='1.0'"),
        (names.announce_topic("gw-1"), {"site": None}, "site=None"),
    ],
)
def test_bad_announcements_are_refused_naming_field_and_value(devices, topic, payload, expected):
    document = announcement().model_dump(mode="json")
    if isinstance(payload, dict):
        document.update(payload)
    event = rule_event(topic, payload if isinstance(payload, bytes) else document)
    result = handle_announcement(event, devices, now=NOW)
    assert result.record is None
    assert expected in result.refused
    assert devices.scan_all() == []


def test_handler_registers_and_refuses(devices, monkeypatch):
    monkeypatch.setenv(names.DEVICE_TABLE_ENV, DEVICE_TABLE)
    registry_handler._settings.cache_clear()
    document = announcement().model_dump(mode="json")

    created = registry_handler.lambda_handler(rule_event(names.announce_topic("gw-1"), document).model_dump(), None)
    refreshed = registry_handler.lambda_handler(rule_event(names.announce_topic("gw-1"), document).model_dump(), None)
    refused = registry_handler.lambda_handler(rule_event(names.announce_topic("gw-9"), document).model_dump(), None)

    assert created["created"] is True and created["record"]["thing_name"] == "gw-1"
    assert refreshed["created"] is False and refreshed["refused"] is None
    assert refused["record"] is None and "does not match the thing 'gw-9'" in refused["refused"]
    assert [d.thing_name for d in devices.scan_all()] == ["gw-1"]
    registry_handler._settings.cache_clear()


def test_settings_name_the_missing_variable():
    with pytest.raises(ValueError, match=f"{names.DEVICE_TABLE_ENV} is not set"):
        Settings.from_env({})


def test_compare_and_swap_refuses_a_write_based_on_an_outdated_read(devices):
    devices.put(device("gw-1"))
    stale = devices.get_stored("gw-1")
    devices.put(device("gw-1", reason="someone else"))
    assert devices.replace_if_unchanged(stale, DeviceWrite(device("gw-1", reason="mine"))) is False
    assert devices.get("gw-1").reason == "someone else"

    calls = []

    def always_conflicting(stored):
        calls.append(stored.revision)
        devices.put(device("gw-1", reason=f"interloper {len(calls)}"))  # wins the race every time
        return DeviceWrite(device("gw-1", reason="mine"))

    with pytest.raises(WriteConflict, match="3 conflicting writes"):
        devices.compare_and_swap("gw-1", always_conflicting, attempts=3)
    assert len(calls) == 3


def test_fleet_status_filters_through_the_indexes(devices):
    devices.put(device("gw-1", line_id="line-1", current_model_version="1.0.0", status=DeviceStatus.APPLIED))
    devices.put(device("gw-2", line_id="line-1", site="plant-b", status=DeviceStatus.PENDING))
    devices.put(device("gw-3", line_id="line-2", current_model_version="1.0.0", status=DeviceStatus.APPLIED))
    devices.put(device("gw-4", line_id="line-2", current_model_version="0.9.0", status=DeviceStatus.REJECTED))

    def things(**filters):
        return [d.thing_name for d in fleet_status(devices, **filters)]

    assert things() == ["gw-1", "gw-2", "gw-3", "gw-4"]
    assert things(line_id="line-1") == ["gw-1", "gw-2"]
    assert things(model_version="1.0.0") == ["gw-1", "gw-3"]
    assert things(status="applied") == ["gw-1", "gw-3"]
    assert things(status=DeviceStatus.REJECTED) == ["gw-4"]
    assert things(site="plant-b") == ["gw-2"]
    assert things(line_id="line-2", status="applied") == ["gw-3"]
    assert things(line_id="line-3") == []
    with pytest.raises(ValueError, match="status='broken' is not one of"):
        fleet_status(devices, status="broken")


def test_device_table_reads_many_and_queries_each_index(devices):
    for i in range(130):  # more than one BatchGetItem request
        devices.put(device(f"gw-{i:03d}", line_id="line-1" if i % 2 else "line-2"))
    found = devices.get_many([f"gw-{i:03d}" for i in range(135)])
    assert sorted(found) == [f"gw-{i:03d}" for i in range(130)]
    assert len(devices.by_line("line-1")) == 65
    assert len(devices.by_status(DeviceStatus.REGISTERED)) == 130
    assert devices.by_model_version("1.0.0") == []
    assert isinstance(devices, DeviceTable)
