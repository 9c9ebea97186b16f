"""Which device runs which model version, where, since when, and why not: the operator's query.

The most selective filter given picks the table access (line, then model version, then status
index; a scan when none); the other filters narrow the result.
"""

from __future__ import annotations

from edgeloop.functions.device_registry.data_access import DeviceTable
from edgeloop.schemas import DeviceRecord, DeviceStatus


def fleet_status(
    table: DeviceTable,
    *,
    site: str | None = None,
    line_id: str | None = None,
    model_version: str | None = None,
    status: DeviceStatus | str | None = None,
) -> list[DeviceRecord]:
    status = None if status is None else _status(status)
    if line_id is not None:
        devices = table.by_line(line_id)
    elif model_version is not None:
        devices = table.by_model_version(model_version)
    elif status is not None:
        devices = table.by_status(status)
    else:
        devices = table.scan_all()
    selected = [
        d
        for d in devices
        if (site is None or d.site == site)
        and (line_id is None or d.line_id == line_id)
        and (model_version is None or d.current_model_version == model_version)
        and (status is None or d.status is status)
    ]
    return sorted(selected, key=lambda d: d.thing_name)


def _status(value: DeviceStatus | str) -> DeviceStatus:
    try:
        return DeviceStatus(value)
    except ValueError:
        raise ValueError(f"status={value!r} is not one of {[s.value for s in DeviceStatus]}") from None
