"""Register a gateway from its announcement: upsert its DeviceRecord in the device table.

What the gateway says about itself (site, line, use case, hardware, runtime, precisions) is
refreshed on every announcement; what the fleet decided for it (current and desired model,
deployment, status) is kept, because a restart does not change which model it runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, ValidationError

from edgeloop.cloud.fleet.devices import DeviceTable, DeviceWrite, StoredDevice
from edgeloop.schemas import DeviceAnnouncement, DeviceEvent, DeviceRecord, DeviceStatus, IotRuleEvent, names

_VALUE_PREVIEW = 200


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
    topic_thing = thing_of_topic(event.topic, names.announce_topic)
    document = json_payload(event)
    try:
        announcement = DeviceAnnouncement.model_validate(document)
    except ValidationError as exc:
        raise ValueError(f"not a DeviceAnnouncement: {describe_errors(exc)}") from exc
    if announcement.thing_name != topic_thing:
        raise ValueError(
            f"thing_name={announcement.thing_name!r} does not match the thing {topic_thing!r} of topic {event.topic!r}"
        )
    return announcement


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
    return {
        "thing_name": announcement.thing_name,
        "site": announcement.site,
        "line_id": announcement.line_id,
        "use_case": announcement.use_case,
        "architecture": announcement.architecture,
        "runtime_version": announcement.runtime_version,
        "supported_precisions": list(announcement.supported_precisions),
    }


# --- shared by the fleet functions that take IoT rule events ----------------------------------------


def thing_of_topic(topic: str, expected_topic: Callable[[str], str]) -> str:
    """The thing name of a device topic, checked against the topic the route is for."""
    thing = names.thing_from_topic(topic)
    if topic != expected_topic(thing):
        raise ValueError(f"topic={topic!r} is not {expected_topic(thing)!r}")
    return thing


def json_payload(event: IotRuleEvent) -> dict:
    try:
        payload = event.payload
    except ValueError as exc:
        raise ValueError(f"payload_b64={_preview(event.payload_b64)} is not base64: {exc}") from exc
    try:
        document = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"payload={_preview(payload)} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"payload is a JSON {type(document).__name__}, not an object")
    return document


def describe_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(map(str, error["loc"])) or "<document>"
        if error["type"] == "missing":
            parts.append(f"{field} is missing")
        else:
            parts.append(f"{field}={_preview(error.get('input'))}: {error['msg']}")
    return "; ".join(parts)


def _preview(value) -> str:
    return repr(value)[:_VALUE_PREVIEW]


# --- offline marking (the scheduled wave_controller calls this) --------------------------------------

DEFAULT_OFFLINE_SILENCE_S = 15 * 60


def mark_silent_devices(
    table: DeviceTable, *, now: datetime, silence_s: float = DEFAULT_OFFLINE_SILENCE_S
) -> list[DeviceRecord]:
    """Mark OFFLINE every device not seen for `silence_s`, with reason "silent since <last_seen>".

    A later announcement (above) or status report brings the device back. The write re-checks
    last_seen, so a device heard from between the scan and the write stays online.
    """
    if silence_s <= 0:
        raise ValueError(f"silence_s={silence_s} must be > 0")
    cutoff = now - timedelta(seconds=silence_s)
    marked = []
    for device in table.scan_all():
        if device.status is DeviceStatus.OFFLINE or device.last_seen >= cutoff:
            continue
        record = table.compare_and_swap_with_history(
            device.thing_name, _offline_if_silent(cutoff, now), event=DeviceEvent.OFFLINE
        )
        if record is not None and record.status is DeviceStatus.OFFLINE and record.status_since == now:
            marked.append(record)
    return marked


def _offline_if_silent(cutoff: datetime, now: datetime) -> Callable[[StoredDevice | None], DeviceWrite | None]:
    def change(stored: StoredDevice | None) -> DeviceWrite | None:
        if stored is None:
            return None
        device = stored.record
        if device.status is DeviceStatus.OFFLINE or device.last_seen >= cutoff:
            return None
        return DeviceWrite(
            device.model_copy(
                update={
                    "status": DeviceStatus.OFFLINE,
                    "reason": f"silent since {device.last_seen.isoformat()}",
                    "status_since": now,
                }
            )
        )

    return change
