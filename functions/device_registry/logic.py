"""Register a gateway from its announcement: upsert its DeviceRecord in the device table.

What the gateway says about itself (site, line, use case, hardware, runtime, precisions) is
refreshed on every announcement; what the fleet decided for it (current and desired model,
deployment, status) is kept, because a restart does not change which model it runs. After the
announcement the handler enrolls the device (edgeloop.cloud.fleet.enrollment): it gets the
currently approved model of its line unless it runs it already.

The same function takes AWS IoT's lifecycle events ($aws/events/presence/...): a connect or
disconnect refreshes the device's last_seen and connection state (edgeloop.cloud.fleet.liveness).

Both are bounded before they are parsed (schemas/bounded_json.py: MAX_ANNOUNCEMENT_JSON,
MAX_LIFECYCLE_JSON) and validated strictly. A refused announcement, and a lifecycle event that is
not one (or came on another topic), carries its reasons field by field; the handler quarantines it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from edgeloop.cloud.fleet.device_messages import (
    DeviceMessageRefused,
    json_payload,
    parse_device_message,
    validated_message,
)
from edgeloop.cloud.fleet.devices import DeviceTable, DeviceWrite, StoredDevice
from edgeloop.cloud.fleet.liveness import online_event, record_presence, seen
from edgeloop.schemas import (
    DeviceAnnouncement,
    DeviceProfile,
    DeviceRecord,
    DeviceStatus,
    IotRuleEvent,
    LifecycleEvent,
    QuarantineReason,
    names,
)
from edgeloop.schemas.bounded_json import MAX_ANNOUNCEMENT_JSON, MAX_LIFECYCLE_JSON
from edgeloop.schemas.common import ThingName

_THING_NAME = TypeAdapter(ThingName)


class Registration(BaseModel):
    """The outcome of one announce message: the stored record, or why it was refused."""

    model_config = ConfigDict(frozen=True)

    record: DeviceRecord | None = None
    created: bool = False
    refused: str | None = None
    reasons: list[QuarantineReason] = []  # of a refused announcement, field by field (quarantined)
    quarantine_key: str | None = None
    enrollment: str | None = Field(default=None, description="what enrollment did, and why")
    enrollment_deployment_id: str | None = None


class PresenceUpdate(BaseModel):
    """The outcome of one lifecycle event: the device it moved, or why it was ignored."""

    model_config = ConfigDict(frozen=True)

    record: DeviceRecord | None = None
    applied: bool = False  # newer than the connection state kept (else only last_seen may have moved)
    ignored: str | None = None
    reasons: list[QuarantineReason] = []  # when it is no lifecycle event at all (quarantined)
    quarantine_key: str | None = None


def is_presence_topic(topic: str) -> bool:
    return topic.startswith(f"{names.PRESENCE_TOPIC_ROOT}/")


def handle_presence(event: IotRuleEvent, table: DeviceTable) -> PresenceUpdate:
    """Apply a connect/disconnect event to the device its client id names (suffixes `#<n>` stripped)."""
    try:
        lifecycle = validated_message(event, json_payload(event, MAX_LIFECYCLE_JSON), LifecycleEvent)
    except DeviceMessageRefused as exc:
        return PresenceUpdate(ignored=str(exc), reasons=exc.reasons)
    expected = names.presence_topic(lifecycle.event_type, lifecycle.client_id)
    if event.topic != expected:
        reason = QuarantineReason.of("topic", event.topic, f"is not {expected!r}")
        return PresenceUpdate(ignored=f"topic={event.topic!r} is not {expected!r}", reasons=[reason])
    try:
        _THING_NAME.validate_python(lifecycle.thing_name)
    except ValidationError:
        return PresenceUpdate(ignored=f"client {lifecycle.client_id!r} names no thing ({lifecycle.thing_name!r})")
    record, applied = record_presence(lifecycle, table)
    if record is None:
        return PresenceUpdate(
            ignored=f"client {lifecycle.client_id!r} is no device of the table (thing {lifecycle.thing_name!r})"
        )
    return PresenceUpdate(record=record, applied=applied)


def handle_announcement(event: IotRuleEvent, table: DeviceTable, *, now: datetime | None = None) -> Registration:
    try:
        announcement = parse_announcement(event)
    except DeviceMessageRefused as exc:
        return Registration(refused=str(exc), reasons=exc.reasons)
    existed = table.get(announcement.thing_name) is not None
    record = register_device(announcement, table, now=now)
    return Registration(record=record, created=not existed)


def parse_announcement(event: IotRuleEvent) -> DeviceAnnouncement:
    """The announcement in the event; ValueError naming the field and value when it is not one."""
    return parse_device_message(event, names.announce_topic, DeviceAnnouncement, MAX_ANNOUNCEMENT_JSON)


def register_device(
    announcement: DeviceAnnouncement, table: DeviceTable, *, now: datetime | None = None
) -> DeviceRecord:
    seen_at = now or datetime.now(UTC)

    def upsert(stored: StoredDevice | None) -> DeviceWrite:
        if stored is None:
            return DeviceWrite(_new_record(announcement, seen_at))
        return DeviceWrite(_refreshed_record(stored.record, announcement, seen_at))

    record = table.compare_and_swap_with_history(announcement.thing_name, upsert, event=online_event)
    assert record is not None  # upsert always writes
    return record


def _new_record(announcement: DeviceAnnouncement, seen_at: datetime) -> DeviceRecord:
    return DeviceRecord(
        **_self_description(announcement),
        current_model_version=announcement.current_model_version,
        status=DeviceStatus.REGISTERED,
        status_since=seen_at,
        last_seen=seen_at,
    )


def _refreshed_record(record: DeviceRecord, announcement: DeviceAnnouncement, seen_at: datetime) -> DeviceRecord:
    if record.current_model_version is None and announcement.current_model_version is not None:
        record = record.model_copy(update={"current_model_version": announcement.current_model_version})
    # Announcing means it is back (if it was OFFLINE); it runs whatever it ran before going dark.
    return record.model_copy(update={**_self_description(announcement), **seen(record, seen_at)})


def _self_description(announcement: DeviceAnnouncement) -> dict:
    return announcement.model_dump(include=set(DeviceProfile.model_fields))
