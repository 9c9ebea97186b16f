"""Device liveness: a device not heard from for the policy's offline silence is marked OFFLINE.

The scheduled wave controller calls `mark_silent_devices` every minute. A later announcement
(device registry) or status report (status intake) brings the device back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from edgeloop.schemas import DeviceEvent, DeviceRecord, DeviceStatus, RolloutPolicy

from .devices import DeviceTable, DeviceWrite, StoredDevice


def mark_silent_devices(table: DeviceTable, *, now: datetime, silence_s: float | None = None) -> list[DeviceRecord]:
    """Mark OFFLINE every device not seen for `silence_s` (default: the default RolloutPolicy's
    offline silence), with reason "silent since <last_seen>".

    The write re-checks last_seen, so a device heard from between the scan and the write stays online.
    """
    silence_s = silence_s if silence_s is not None else RolloutPolicy().offline_silence_s
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
