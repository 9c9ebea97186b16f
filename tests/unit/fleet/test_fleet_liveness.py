"""Liveness without false OFFLINE: AWS IoT lifecycle events (through the registry's presence route)
and the model runner's periodic status (through status intake) keep a running gateway online."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fleet_helpers import NOW, RecordingDelivery, device, rule_event

from edgeloop.cloud.fleet.liveness import mark_silent_devices
from edgeloop.functions.device_registry import handler as registry_handler
from edgeloop.functions.device_registry.logic import handle_presence
from edgeloop.functions.status_intake.logic import Outcome, handle_status_report
from edgeloop.functions.wave_controller.logic import run_round
from edgeloop.schemas import DeviceEvent, DeviceStatus, LifecycleEvent, PeriodicStatus, RolloutPolicy, names

SILENCE = timedelta(seconds=RolloutPolicy().offline_silence_s)


def lifecycle(
    event_type: str, at, *, client_id: str = "gw-1", session: str = "s-1", version: int = 1, reason: str = ""
) -> dict:
    """A lifecycle event document as AWS IoT publishes it (field names and types of the developer guide)."""
    document = {
        "clientId": client_id,
        "timestamp": int(at.timestamp() * 1000),
        "eventType": event_type,
        "sessionIdentifier": session,
        "principalIdentifier": "a1b2c3d4e5f6",
        "versionNumber": version,
    }
    if event_type == "connected":
        document.update(ipAddress="192.0.2.10", cleanStart=False)  # a field edgeloop does not model
    else:
        document.update(clientInitiatedDisconnect=False, disconnectReason=reason or "CONNECTION_LOST")
    return document


def presence(devices, event_type: str, at, **fields):
    document = lifecycle(event_type, at, **fields)
    topic = names.presence_topic(event_type, document["clientId"])
    return handle_presence(rule_event(topic, document, received_at=at), devices)


def periodic(devices, deployments, thing: str, at, **fields):
    status = PeriodicStatus(thing_name=thing, sent_at=at, **fields)
    event = rule_event(names.model_status_topic(thing), json.loads(status.model_dump_json(exclude_none=True)), at)
    return handle_status_report(event, devices=devices, deployments=deployments, delivery=RecordingDelivery(), now=at)


def test_the_presence_route_feeds_the_registry_from_aws_reserved_topics():
    (route,) = [r for r in names.IOT_ROUTES if r.rule_name == "edgeloop_presence"]
    assert route.function == "device_registry"
    for event_type in ("connected", "disconnected"):
        assert names.topic_matches(route.topic_filter, names.presence_topic(event_type, "gw-1"))
    assert "FROM '$aws/events/presence/+/+'" in route.sql


def test_suffixed_client_ids_of_the_nucleus_map_back_to_the_thing():
    event = LifecycleEvent.model_validate(lifecycle("connected", NOW, client_id="gw-1#2"))
    assert event.thing_name == "gw-1" and event.connected
    exclusive = LifecycleEvent.model_validate({**lifecycle("connected", NOW, client_id="x"), "thingName": "gw-7"})
    assert exclusive.thing_name == "gw-7"


def test_a_connected_device_is_never_marked_offline_however_long_it_is_silent(devices):
    devices.put(device("gw-1", last_seen=NOW - timedelta(days=1)))
    result = presence(devices, "connected", NOW - timedelta(hours=23))
    assert result.applied and result.record.connection.connected
    assert mark_silent_devices(devices, now=NOW) == []
    assert devices.get("gw-1").status is DeviceStatus.REGISTERED


def test_after_a_disconnect_the_silence_counts_from_the_disconnect(devices):
    devices.put(device("gw-1", last_seen=NOW - timedelta(hours=2)))
    presence(devices, "connected", NOW - timedelta(hours=1))
    disconnected = presence(devices, "disconnected", NOW - timedelta(minutes=10)).record
    assert disconnected.last_seen == NOW - timedelta(minutes=10) and not disconnected.connection.connected
    assert disconnected.connection.disconnect_reason == "CONNECTION_LOST"
    assert mark_silent_devices(devices, now=NOW) == []
    (marked,) = mark_silent_devices(devices, now=NOW - timedelta(minutes=10) + SILENCE + timedelta(seconds=1))
    assert marked.thing_name == "gw-1" and marked.reason.startswith("silent since")


def test_a_late_disconnect_of_the_old_session_does_not_disconnect_the_new_one(devices):
    """A client reconnecting with its id: AWS closes the old session (DUPLICATE_CLIENTID) and that
    disconnect may arrive after the new session's connect, with a later timestamp."""
    devices.put(device("gw-1"))
    presence(devices, "connected", NOW - timedelta(minutes=3), session="old", version=4)
    presence(devices, "connected", NOW - timedelta(minutes=1), session="new", version=5)
    late = presence(devices, "disconnected", NOW, session="old", version=4, reason="DUPLICATE_CLIENTID")
    assert not late.applied and late.record.connection.connected
    assert late.record.connection.session_identifier == "new"
    assert late.record.last_seen == NOW  # it was there at that moment all the same


def test_out_of_order_and_duplicate_events_of_one_session(devices):
    devices.put(device("gw-1"))
    assert presence(devices, "disconnected", NOW, session="s", version=3).applied
    stale_connect = presence(devices, "connected", NOW - timedelta(minutes=5), session="s", version=3)
    assert not stale_connect.applied and not stale_connect.record.connection.connected
    assert not presence(devices, "disconnected", NOW, session="s", version=3).applied  # a duplicate
    older_session = presence(devices, "connected", NOW - timedelta(hours=1), session="r", version=2)
    assert not older_session.applied and not older_session.record.connection.connected
    assert presence(devices, "connected", NOW + timedelta(seconds=5), session="t", version=4).applied


def test_a_connect_brings_an_offline_device_back_with_its_model(devices):
    devices.put(
        device("gw-1", status=DeviceStatus.OFFLINE, current_model_version="1.0.0", reason="silent since earlier")
    )
    record = presence(devices, "connected", NOW).record
    assert (record.status, record.status_since, record.reason) == (DeviceStatus.APPLIED, NOW, "")
    assert devices.history("gw-1")[0].event is DeviceEvent.ONLINE


def test_events_of_clients_that_are_no_device_are_ignored(devices):
    result = presence(devices, "connected", NOW, client_id="some-other-client")
    assert result.record is None and "no device" in result.ignored
    wrong_topic = handle_presence(
        rule_event(names.presence_topic("connected", "gw-9"), lifecycle("connected", NOW)), devices
    )
    assert "is not" in wrong_topic.ignored
    garbage = handle_presence(rule_event(names.presence_topic("connected", "gw-1"), b"not json"), devices)
    assert "not JSON" in garbage.ignored
    nameless = presence(devices, "connected", NOW, client_id="#2")
    assert nameless.record is None and "names no thing" in nameless.ignored


def test_a_periodic_status_refreshes_last_seen_and_changes_nothing_else(devices, deployments):
    pending = device(
        "gw-1",
        status=DeviceStatus.PENDING,
        deployment_id="dep-2",
        deployment_wave=0,
        desired_model_version="2.0.0",
        current_model_version="1.0.0",
    )
    devices.put(pending)
    result = periodic(devices, deployments, "gw-1", NOW, model_id="m", version="1.0.0", deployment_id="dep-1")
    assert result.outcome is Outcome.PERIODIC
    assert result.record == pending.model_copy(update={"last_seen": NOW})
    assert devices.history("gw-1") == []
    unknown = periodic(devices, deployments, "gw-9", NOW)
    assert unknown.outcome is Outcome.REFUSED and "has not announced" in unknown.refused


def test_a_periodic_status_brings_an_offline_device_back(devices, deployments):
    devices.put(device("gw-1", status=DeviceStatus.OFFLINE, reason="silent since earlier"))
    record = periodic(devices, deployments, "gw-1", NOW).record
    assert (record.status, record.last_seen) == (DeviceStatus.REGISTERED, NOW)
    assert devices.history("gw-1")[0].event is DeviceEvent.ONLINE


@pytest.mark.parametrize("connected", [False, True], ids=["periodic-status-only", "connected-and-periodic"])
def test_a_gateway_that_keeps_publishing_for_30_minutes_stays_online(devices, deployments, connected):
    """The wave controller runs every simulated minute; the runner's status comes every 5 minutes
    (the default interval). A silent neighbour is marked offline in the same rounds."""
    devices.put(device("gw-live", last_seen=NOW, status=DeviceStatus.APPLIED, current_model_version="1.0.0"))
    devices.put(device("gw-silent", last_seen=NOW))
    if connected:
        presence(devices, "connected", NOW, client_id="gw-live")
    policy = RolloutPolicy()
    offline_rounds = {}
    for minute in range(1, 31):
        now = NOW + timedelta(minutes=minute)
        if minute % (names.DEFAULT_STATUS_INTERVAL_S // 60) == 0:
            assert periodic(devices, deployments, "gw-live", now, version="1.0.0").outcome is Outcome.PERIODIC
        result = run_round(
            devices=devices, deployments=deployments, delivery=RecordingDelivery(), now=now, policy=policy
        )
        for thing in result.marked_offline:
            offline_rounds.setdefault(thing, minute)
    live = devices.get("gw-live")
    assert live.status is DeviceStatus.APPLIED and live.last_seen == NOW + timedelta(minutes=30)
    assert DeviceEvent.OFFLINE not in {e.event for e in devices.history("gw-live")}
    assert offline_rounds == {"gw-silent": int(SILENCE.total_seconds() // 60) + 1}


def test_the_registry_handler_routes_lifecycle_events(devices, monkeypatch):
    monkeypatch.setenv(names.DEVICE_TABLE_ENV, devices.table_name)
    monkeypatch.delenv(names.DEPLOYMENT_TABLE_ENV, raising=False)
    registry_handler._settings.cache_clear()
    devices.put(device("gw-1"))
    try:
        topic = names.presence_topic("connected", "gw-1#2")
        document = lifecycle("connected", NOW, client_id="gw-1#2")
        answer = registry_handler.lambda_handler(rule_event(topic, document).model_dump(), None)
    finally:
        registry_handler._settings.cache_clear()
    assert answer["applied"] is True and answer["record"]["connection"]["client_id"] == "gw-1#2"
    assert devices.get("gw-1").connection.connected


def test_the_status_intake_handler_counts_periodic_statuses(devices, handler_delivery):
    from edgeloop.functions.status_intake import handler as status_intake_handler

    handler_delivery()
    devices.put(device("gw-1", last_seen=NOW - timedelta(minutes=4)))
    status = PeriodicStatus(thing_name="gw-1", sent_at=NOW, model_id="m", version="1.0.0")
    event = rule_event(names.model_status_topic("gw-1"), json.loads(status.model_dump_json(exclude_none=True)), NOW)
    answer = status_intake_handler.lambda_handler(event.model_dump(), None)
    assert answer["outcome"] == "periodic" and devices.get("gw-1").last_seen == NOW
