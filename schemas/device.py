"""Devices: what a gateway says about itself, what it reports, and what the registry keeps."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .bounded_json import MAX_DEVICE_STRING_CHARS, MAX_SUPPORTED_PRECISIONS
from .common import Contract, Identifier, SemVer, ThingName, UtcDatetime
from .compat import StrEnum
from .model import Architecture, Precision
from .presence import DeviceConnection

# Deployment and model ids in device messages: DynamoDB keys (at most 1024 bytes) and S3 key parts.
MAX_ID_CHARS = 256


class DeviceStatus(StrEnum):
    REGISTERED = "registered"  # announced, no model yet
    PENDING = "pending"  # an update is on its way
    APPLIED = "applied"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    OFFLINE = "offline"


class DeviceIdentity(Contract):
    """Which gateway it is, where it stands and what it runs on (its configuration holds these too)."""

    thing_name: ThingName
    site: Identifier
    line_id: Identifier
    use_case: Identifier
    architecture: Architecture
    runtime_version: SemVer

    def identity(self) -> dict[str, Any]:
        """Just these fields, to build another document about the same device."""
        return {field: getattr(self, field) for field in DeviceIdentity.model_fields}


class DeviceProfile(DeviceIdentity):
    """Who and what a gateway is, as it says itself: the fields an announcement refreshes in its record."""

    supported_precisions: list[Precision] = Field(min_length=1, max_length=MAX_SUPPORTED_PRECISIONS)


class DeviceAnnouncement(DeviceProfile):
    """Published by a gateway on start (announce topic): who and what it is."""

    current_model_version: SemVer | None = None
    sent_at: UtcDatetime


class ModelStatusReport(Contract):
    """Published by a gateway's update agent (model-status topic) after each update attempt."""

    thing_name: ThingName
    deployment_id: str = Field(max_length=MAX_ID_CHARS)
    model_id: str = Field(max_length=MAX_ID_CHARS)
    version: SemVer
    status: DeviceStatus
    reason: str = Field(default="", max_length=MAX_DEVICE_STRING_CHARS)
    sent_at: UtcDatetime


PERIODIC_STATUS_KIND = "periodic"


class PeriodicStatus(Contract):
    """Published by the model runner every few minutes (model-status topic, beside its
    ModelStatusReports): it runs, and which model it serves. Status intake only refreshes the
    device's last_seen from it (and brings an offline device back); it never changes a rollout."""

    kind: Literal["periodic"] = PERIODIC_STATUS_KIND
    thing_name: ThingName
    deployment_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    model_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    version: SemVer | None = Field(default=None, description="the model version in use; None: no model yet")
    sent_at: UtcDatetime


class DeviceRecord(DeviceProfile):
    """One device in the registry table (see schemas.names.DEVICE_TABLE_KEYS)."""

    current_model_id: str | None = None
    current_model_version: SemVer | None = None
    desired_model_version: SemVer | None = None
    # The model the device ran when a rollout marked it pending: what a rollback restores.
    previous_model_id: str | None = None
    previous_model_version: SemVer | None = None
    deployment_id: str | None = None
    deployment_wave: int | None = Field(
        default=None, ge=0, description="the wave of deployment_id the device is in: where its reports are counted"
    )
    status: DeviceStatus = DeviceStatus.REGISTERED
    reason: str = ""
    status_since: UtcDatetime
    last_seen: UtcDatetime
    connection: DeviceConnection | None = Field(
        default=None, description="the newest AWS IoT lifecycle event applied (None: none seen yet)"
    )


class DeviceEvent(StrEnum):
    """What happened to a device, as its history records it (the new status says where it ended up)."""

    REGISTERED = "registered"  # first announcement: the device entered the table
    ANNOUNCED = "announced"  # a later announcement (a restart, or back from offline)
    PENDING = "pending"  # a rollout picked it
    APPLIED = "applied"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    OFFLINE = "offline"  # silent for longer than the configured limit
    TIMED_OUT = "timed_out"  # its rollout timed out before it reported
    STATUS_CHANGED = "status_changed"  # any other change of status, deployment or model
    ENROLLED = "enrolled"  # it joined after a model was approved and gets that model (enrollment)
    ONLINE = "online"  # heard from again after being marked offline (connected, or a periodic status)


class DeviceHistoryEntry(Contract):
    """One status change of a device, kept in the device table (cloud/fleet/devices.py)."""

    thing_name: ThingName
    revision: int = Field(ge=1, description="the device item's revision this change produced: orders the history")
    at: UtcDatetime
    event: DeviceEvent
    status: DeviceStatus
    previous_status: DeviceStatus | None = None
    reason: str = ""
    deployment_id: str | None = None
    model_id: str | None = None
    model_version: SemVer | None = Field(default=None, description="the version it runs after the change")
    desired_model_version: SemVer | None = None
