"""Device liveness: what keeps a device online, and marking the silent ones OFFLINE.

A device is live while AWS IoT says it is connected (lifecycle events, `record_presence`), or
while it was heard from within the policy's offline silence: an announcement (device registry),
a status report or the model runner's periodic status (status intake), a connect or disconnect
event. The scheduled wave controller calls `mark_silent_devices` every minute; it never marks a
connected device, so a gateway that keeps publishing is never OFFLINE. Any of those messages
brings an OFFLINE device back (history event ONLINE).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from edgeloop.schemas import DeviceEvent, DeviceRecord, DeviceStatus, LifecycleEvent, RolloutPolicy

from .devices import DeviceTable, DeviceWrite, StoredDevice


def is_live(device: DeviceRecord, cutoff: datetime) -> bool:
    """Connected (by the newest lifecycle event applied), or heard from since `cutoff`."""
    connected = device.connection is not None and device.connection.connected
    return connected or device.last_seen >= cutoff


def mark_silent_devices(table: DeviceTable, *, now: datetime, silence_s: float | None = None) -> list[DeviceRecord]:
    """Mark OFFLINE every device not connected and not seen for `silence_s` (default: the default
    RolloutPolicy's offline silence), with reason "silent since <last_seen>".

    The write re-checks, so a device heard from between the scan and the write stays online.
    """
    silence_s = silence_s if silence_s is not None else RolloutPolicy().offline_silence_s
    if silence_s <= 0:
        raise ValueError(f"silence_s={silence_s} must be > 0")
    cutoff = now - timedelta(seconds=silence_s)
    marked = []
    for device in table.scan_all():
        if device.status is DeviceStatus.OFFLINE or is_live(device, cutoff):
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
        if device.status is DeviceStatus.OFFLINE or is_live(device, cutoff):
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


# --- heard from ------------------------------------------------------------------------------------


def seen(device: DeviceRecord, seen_at: datetime) -> dict[str, Any]:
    """The update of a device heard from at `seen_at`: last_seen moves forward (never back), and an
    OFFLINE device is back with the model it ran before going dark."""
    update: dict[str, Any] = {"last_seen": max(device.last_seen, seen_at)}
    if device.status is DeviceStatus.OFFLINE:
        update["status"] = DeviceStatus.APPLIED if device.current_model_version else DeviceStatus.REGISTERED
        update["status_since"] = seen_at
        update["reason"] = ""
    return update


def online_event(before: DeviceRecord | None, after: DeviceRecord) -> DeviceEvent | None:
    """ONLINE when the write brought the device back from OFFLINE; else nothing to record."""
    if before is not None and before.status is DeviceStatus.OFFLINE and after.status is not DeviceStatus.OFFLINE:
        return DeviceEvent.ONLINE
    return None


def refresh_last_seen(table: DeviceTable, thing_name: str, seen_at: datetime) -> DeviceRecord | None:
    """Record that the device was heard from at `seen_at`; None when it is not in the table."""

    def change(stored: StoredDevice | None) -> DeviceWrite | None:
        if stored is None:
            return None
        update = seen(stored.record, seen_at)
        if all(getattr(stored.record, key) == value for key, value in update.items()):
            return None  # nothing newer: no write
        return DeviceWrite(stored.record.model_copy(update=update))

    return table.compare_and_swap_with_history(thing_name, change, event=online_event)


def record_presence(event: LifecycleEvent, table: DeviceTable) -> tuple[DeviceRecord | None, bool]:
    """Apply a lifecycle event to its device: (the record, whether the event was newer than the
    connection state kept); (None, False) when the client is no device of the table.

    Every event, even a late one, is evidence the device was there at its timestamp (last_seen);
    only a newer one changes the connection state (DeviceConnection.superseded_by), and only a
    newer connect brings an OFFLINE device back.
    """
    connection = event.connection()
    applied = False

    def change(stored: StoredDevice | None) -> DeviceWrite | None:
        nonlocal applied
        if stored is None:
            return None
        device = stored.record
        applied = device.connection is None or device.connection.superseded_by(connection)
        update: dict[str, Any] = {"last_seen": max(device.last_seen, connection.at)}
        if applied:
            update["connection"] = connection
            if connection.connected:
                update = {**seen(device, connection.at), **update}
        if all(getattr(device, key) == value for key, value in update.items()):
            return None
        return DeviceWrite(device.model_copy(update=update))

    record = table.compare_and_swap_with_history(event.thing_name, change, event=online_event)
    return record, applied
