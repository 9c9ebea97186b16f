"""Register a gateway from its announcement: upsert its DeviceRecord in the device table.

What the gateway says about itself (site, line, use case, hardware, runtime, precisions) is
refreshed on every announcement; what the fleet decided for it (current and desired model,
deployment, status) is kept, because a restart does not change which model it runs.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from edgeloop.cloud.fleet.device_messages import parse_device_message
from edgeloop.cloud.fleet.devices import DeviceTable, DeviceWrite, StoredDevice
from edgeloop.schemas import DeviceAnnouncement, DeviceProfile, DeviceRecord, DeviceStatus, IotRuleEvent, names


class Registration(BaseModel):
    """The outcome of one announce message: the stored record, or why it was refused."""

    model_config = ConfigDict(frozen=True)

    record: DeviceRecord | None = None
    created: bool = False
    refused: str | None = None


def handle_announcement(event: IotRuleEvent, table: DeviceTable, *, now: datetime | None = None) -> Registration:
    try:
        announcement = parse_announcement(event)
    except ValueError as exc:
        return Registration(refused=str(exc))
    existed = table.get(announcement.thing_name) is not None
    record = register_device(announcement, table, now=now)
    return Registration(record=record, created=not existed)


def parse_announcement(event: IotRuleEvent) -> DeviceAnnouncement:
    """The announcement in the event; ValueError naming the field and value when it is not one."""
    return parse_device_message(event, names.announce_topic, DeviceAnnouncement)


def register_device(
    announcement: DeviceAnnouncement, table: DeviceTable, *, now: datetime | None = None
) -> DeviceRecord:
    seen_at = now or datetime.now(UTC)

    def upsert(stored: StoredDevice | None) -> DeviceWrite:
        if stored is None:
            return DeviceWrite(_new_record(announcement, seen_at))
        return DeviceWrite(_refreshed_record(stored.record, announcement, seen_at))

    record = table.compare_and_swap_with_history(announcement.thing_name, upsert)
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
    update: dict = {**_self_description(announcement), "last_seen": max(record.last_seen, seen_at)}
    if record.current_model_version is None and announcement.current_model_version is not None:
        update["current_model_version"] = announcement.current_model_version
    if record.status is DeviceStatus.OFFLINE:
        # Announcing means it is back; it runs whatever it ran before going dark.
        has_model = update.get("current_model_version", record.current_model_version) is not None
        update["status"] = DeviceStatus.APPLIED if has_model else DeviceStatus.REGISTERED
        update["status_since"] = seen_at
        update["reason"] = ""
    return record.model_copy(update=update)


def _self_description(announcement: DeviceAnnouncement) -> dict:
    return announcement.model_dump(include=set(DeviceProfile.model_fields))
