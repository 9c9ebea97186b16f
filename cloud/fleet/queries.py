"""Which device runs which model version, where, since when, and why not: the operator's queries.

`fleet_status` picks the most selective table access for its filters (line, then model version,
then status index; a scan when none) and narrows the result with the others; `fleet_status_page`
does the same one page at a time (the HTTP API: a Lambda response holds at most 6 MB, a few
thousand device records). `device_history`
reads a device's history items newest first. `why_not` explains, for every device not on a model
version, why: its own report (rejected, rolled back, pending), the rollout's plan (excluded as
incompatible or offline, not targeted), or, for devices no rollout of the version mentions, the
model's manifest checked with the planner's own `choose_tier` (planning.py).

The CLI (`edgeloop fleet ...`) and the HTTP API (handler.py) both call these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from edgeloop.cloud import model_registry
from edgeloop.cloud.fleet.deployments import DeploymentTable
from edgeloop.cloud.fleet.devices import BY_LINE, BY_MODEL_VERSION, BY_STATUS, DeviceTable
from edgeloop.cloud.fleet.planning import choose_tier
from edgeloop.schemas import (
    CompatibilityTier,
    DeploymentRecord,
    DeploymentState,
    DeviceHistoryEntry,
    DeviceRecord,
    DeviceStatus,
    ModelManifest,
)
from edgeloop.schemas.common import Identifier, SemVer, ThingName

STOPPED_STATES = (DeploymentState.FAILED, DeploymentState.ROLLED_BACK, DeploymentState.TIMED_OUT)
MAX_HISTORY = 1000
DEFAULT_PAGE = 500
MAX_PAGE = 1000


class InvalidParameter(ValueError):
    """A query parameter with a value the query cannot take; the message names both (`problem`: "is not ...")."""

    def __init__(self, parameter: str, value: Any, problem: str) -> None:
        super().__init__(f"{parameter}={value!r} {problem}")
        self.parameter = parameter
        self.value = value


class NotFound(LookupError):
    """The device or model version asked about is unknown."""


# --- parameters ------------------------------------------------------------------------------------

_IDENTIFIER = TypeAdapter(Identifier)
_SEMVER = TypeAdapter(SemVer)
_THING = TypeAdapter(ThingName)
_LIMIT = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_HISTORY)])
_PAGE = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_PAGE)])


def checked(parameter: str, value: Any, adapter: TypeAdapter) -> Any:
    """`value` validated by `adapter`, or InvalidParameter naming the parameter and the value."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise InvalidParameter(parameter, value, "is not valid: " + "; ".join(e["msg"] for e in exc.errors())) from None


def checked_status(parameter: str, value: DeviceStatus | str) -> DeviceStatus:
    try:
        return DeviceStatus(value)
    except ValueError:
        raise InvalidParameter(parameter, value, f"is not one of {[s.value for s in DeviceStatus]}") from None


# --- status ----------------------------------------------------------------------------------------


class DeviceFilters(BaseModel):
    """The fleet status filters, checked: a bad value raises InvalidParameter naming the parameter."""

    model_config = ConfigDict(frozen=True)

    site: str | None = None
    line_id: str | None = None
    model_version: str | None = None
    status: DeviceStatus | None = None

    @classmethod
    def checked(
        cls,
        site: str | None = None,
        line_id: str | None = None,
        model_version: str | None = None,
        status: DeviceStatus | str | None = None,
    ) -> DeviceFilters:
        return cls(
            site=None if site is None else checked("site", site, _IDENTIFIER),
            line_id=None if line_id is None else checked("line", line_id, _IDENTIFIER),
            model_version=None if model_version is None else checked("model", model_version, _SEMVER),
            status=None if status is None else checked_status("status", status),
        )

    def index(self) -> tuple[tuple[str, str, str | None], str] | None:
        """The most selective index for these filters and its key value; None: scan the table."""
        if self.line_id is not None:
            return BY_LINE, self.line_id
        if self.model_version is not None:
            return BY_MODEL_VERSION, self.model_version
        if self.status is not None:
            return BY_STATUS, self.status.value
        return None

    def select(self, devices: Iterable[DeviceRecord]) -> list[DeviceRecord]:
        selected = [
            d
            for d in devices
            if (self.site is None or d.site == self.site)
            and (self.line_id is None or d.line_id == self.line_id)
            and (self.model_version is None or d.current_model_version == self.model_version)
            and (self.status is None or d.status is self.status)
        ]
        return sorted(selected, key=lambda d: d.thing_name)


class FleetPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    devices: list[DeviceRecord]
    next: str | None = Field(description="pass as `after` for the next page; None: this was the last")


# What an operator sees of each device in a listing (`edgeloop fleet status`, the demo's report).
DEVICE_SUMMARY_COLUMNS = ("thing", "site", "line", "arch", "runtime", "model", "status", "reason", "since")


def device_summary(device: DeviceRecord, *, status_text: Callable[[str], str] = str) -> tuple[str, ...]:
    """The device's cells under DEVICE_SUMMARY_COLUMNS; `status_text` may dress the status (a colour)."""
    return (
        device.thing_name,
        device.site,
        device.line_id,
        device.architecture.value,
        device.runtime_version,
        device.current_model_version or "-",
        status_text(device.status.value),
        device.reason or "-",
        device.status_since.isoformat(timespec="seconds"),
    )


def fleet_status(
    table: DeviceTable,
    *,
    site: str | None = None,
    line_id: str | None = None,
    model_version: str | None = None,
    status: DeviceStatus | str | None = None,
) -> list[DeviceRecord]:
    devices: list[DeviceRecord] = []
    after = None
    while True:
        page = fleet_status_page(
            table, site=site, line_id=line_id, model_version=model_version, status=status, limit=MAX_PAGE, after=after
        )
        devices += page.devices
        if page.next is None:
            return sorted(devices, key=lambda d: d.thing_name)
        after = page.next


def fleet_status_page(
    table: DeviceTable,
    *,
    site: str | None = None,
    line_id: str | None = None,
    model_version: str | None = None,
    status: DeviceStatus | str | None = None,
    limit: int = DEFAULT_PAGE,
    after: str | None = None,
) -> FleetPage:
    """One page of `fleet_status`: `limit` devices read at most (fewer match when filters narrow
    them; a page may even be empty with a `next`). Pages of an indexed filter come in thing name
    order; those of an unfiltered listing in the table's order."""
    filters = DeviceFilters.checked(site, line_id, model_version, status)
    limit = checked("limit", limit, _PAGE)
    after = None if after is None else checked("next", after, _THING)
    index, value = filters.index() or (None, None)
    page = table.page(index, value, limit=limit, after=after)
    return FleetPage(devices=filters.select(page.records), next=page.after)


# --- history ---------------------------------------------------------------------------------------


def device_history(table: DeviceTable, thing_name: str, *, limit: int | None = None) -> list[DeviceHistoryEntry]:
    """The device's status changes, newest first; NotFound when the table has neither it nor its history."""
    thing_name = checked("thing", thing_name, _THING)
    limit = None if limit is None else checked("limit", limit, _LIMIT)
    entries = table.history(thing_name, limit=limit)
    if not entries and table.get(thing_name) is None:
        raise NotFound(f"thing={thing_name!r} is not in the device table")
    return entries


# --- why not ---------------------------------------------------------------------------------------


class WhyNotCategory(StrEnum):
    INCOMPATIBLE = "incompatible"  # architecture, runtime version or precision: no tier fits
    OFFLINE = "offline"
    REJECTED = "rejected"  # the device refused the update (checksum, signature, feature schema, health check)
    ROLLED_BACK = "rolled_back"
    PENDING = "pending"  # targeted; no final report yet
    ROLLOUT_STOPPED = "rollout_stopped"  # targeted, but the rollout failed or timed out before reaching it
    MOVED_ON = "moved_on"  # targeted, since picked by another rollout
    NOT_TARGETED = "not_targeted"  # another line or use case, or registered after the rollout was planned


class WhyNotDevice(BaseModel):
    model_config = ConfigDict(frozen=True)

    thing_name: str
    site: str
    line_id: str
    category: WhyNotCategory
    reason: str
    status: DeviceStatus
    since: datetime
    current_model_version: str | None
    deployment_id: str | None


class WhyNotReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_version: str
    deployments: list[str] = Field(description="the rollouts of this version, newest first")
    on_version: list[str] = Field(description="devices that run it")
    devices: list[WhyNotDevice] = Field(description="every other device, and why")


ManifestLoader = Callable[[DeploymentRecord], ModelManifest | None]


def manifest_from_registry(record: DeploymentRecord) -> ModelManifest | None:
    """The manifest a rollout was planned from (model registry -> S3); None when it cannot be read."""
    try:
        package = model_registry.describe_model_package(record.model_package_arn)
        return model_registry.load_manifest(model_registry.manifest_uri_of(package))
    except Exception:  # noqa: BLE001 - deleted package, moved manifest: the deployment record still explains
        return None


def why_not(
    devices: DeviceTable,
    deployments: DeploymentTable,
    model_version: str,
    *,
    model_id: str | None = None,
    manifest_of: ManifestLoader = manifest_from_registry,
) -> WhyNotReport:
    model_version = checked("model_version", model_version, _SEMVER)
    rollouts = sorted(
        (
            d
            for d in deployments.scan_all()
            if d.model_version == model_version and (model_id is None or d.model_id == model_id)
        ),
        key=lambda d: (d.created_at, d.deployment_id),
        reverse=True,
    )
    if not rollouts:
        wanted = f"{model_id} {model_version}" if model_id else model_version
        raise NotFound(f"model_version={model_version!r}: no rollout of {wanted} in the deployment table")
    manifests = _manifests(rollouts, manifest_of)
    on_version, explained = [], []
    for device in devices.scan_all():
        if device.current_model_version == model_version and (model_id is None or device.current_model_id == model_id):
            on_version.append(device.thing_name)
        else:
            category, reason = explain(device, rollouts, manifests)
            explained.append(_why_not_device(device, category, reason))
    return WhyNotReport(
        model_version=model_version,
        deployments=[r.deployment_id for r in rollouts],
        on_version=on_version,
        devices=sorted(explained, key=lambda d: (d.category.value, d.thing_name)),
    )


def _manifests(rollouts: Iterable[DeploymentRecord], manifest_of: ManifestLoader) -> dict[str, ModelManifest]:
    by_package: dict[str, ModelManifest | None] = {}
    for rollout in rollouts:
        if rollout.model_package_arn not in by_package:
            by_package[rollout.model_package_arn] = manifest_of(rollout)
    return {
        r.deployment_id: by_package[r.model_package_arn]
        for r in rollouts
        if by_package[r.model_package_arn] is not None
    }


def explain(
    device: DeviceRecord, rollouts: list[DeploymentRecord], manifests: dict[str, ModelManifest]
) -> tuple[WhyNotCategory, str]:
    """Why `device` is not on the version of `rollouts` (newest first); `manifests` by deployment id."""
    own = next((r for r in rollouts if r.deployment_id == device.deployment_id), None)
    if own is not None:
        return _in_rollout(device, own)
    for rollout in rollouts:
        excluded = {e.thing_name: e.reason for e in rollout.excluded}
        if device.thing_name in excluded:
            return _excluded(device, excluded[device.thing_name], manifests.get(rollout.deployment_id))
        if device.thing_name in rollout.targets:
            # Not marked by the rollout yet (still planned) or picked by another rollout since.
            return _in_rollout(device, rollout) if device.deployment_id is None else _moved_on(device, rollout)
    return _unplanned(device, rollouts, manifests)


def _in_rollout(device: DeviceRecord, rollout: DeploymentRecord) -> tuple[WhyNotCategory, str]:
    """The device's latest status is about this rollout."""
    since = device.status_since.isoformat(timespec="seconds")
    if device.status is DeviceStatus.OFFLINE:
        return WhyNotCategory.OFFLINE, f"offline since {since} (in rollout {rollout.deployment_id})"
    if device.status is DeviceStatus.REJECTED:
        return WhyNotCategory.REJECTED, device.reason or "rejected without a reason"
    if device.status is DeviceStatus.ROLLED_BACK:
        return WhyNotCategory.ROLLED_BACK, device.reason or "rolled back without a reason"
    if rollout.state in STOPPED_STATES:
        why = f": {rollout.reason}" if rollout.reason else ""
        return WhyNotCategory.ROLLOUT_STOPPED, f"rollout {rollout.deployment_id} {rollout.state.value}{why}"
    wave = next((w for w in rollout.waves if device.thing_name in w.targets), None)
    where = f"wave {wave.index} ({wave.state.value})" if wave else "no wave"
    return WhyNotCategory.PENDING, f"{device.status.value} since {since}, {where} of rollout {rollout.deployment_id}"


def _excluded(device: DeviceRecord, planned_reason: str, manifest: ModelManifest | None) -> tuple[WhyNotCategory, str]:
    """Left out when the rollout was planned; the manifest (if readable) tells which kind of reason."""
    if manifest is None:
        # Without the manifest, the plan's own wording (planning.choose_tier) tells the kind.
        if planned_reason.startswith("offline"):
            return WhyNotCategory.OFFLINE, planned_reason
        if planned_reason.endswith("not targeted"):
            return WhyNotCategory.NOT_TARGETED, planned_reason
        return WhyNotCategory.INCOMPATIBLE, planned_reason
    if not _targeted(device, manifest):
        return WhyNotCategory.NOT_TARGETED, planned_reason
    blocked, reason_now, tier = _blocker(device, manifest)
    if blocked is not None:
        return blocked, reason_now
    return (
        WhyNotCategory.NOT_TARGETED,
        f"excluded when the rollout was planned ({planned_reason}); can run the {tier.precision.value} tier now",
    )


def _targeted(device: DeviceRecord, manifest: ModelManifest) -> bool:
    return device.use_case == manifest.use_case and device.line_id in manifest.line_ids


def _blocker(
    device: DeviceRecord, manifest: ModelManifest
) -> tuple[WhyNotCategory | None, str, CompatibilityTier | None]:
    """What keeps a targeted device from the model now (offline, incompatible), or None and the tier it can run."""
    tier, reason = choose_tier(manifest, device)
    if device.status is DeviceStatus.OFFLINE:
        return WhyNotCategory.OFFLINE, reason, tier
    if tier is None:
        return WhyNotCategory.INCOMPATIBLE, reason, None
    return None, reason, tier


def _moved_on(device: DeviceRecord, rollout: DeploymentRecord) -> tuple[WhyNotCategory, str]:
    if device.status is DeviceStatus.OFFLINE:
        return WhyNotCategory.OFFLINE, f"offline since {device.status_since.isoformat(timespec='seconds')}"
    runs = device.current_model_version or "no model"
    return (
        WhyNotCategory.MOVED_ON,
        f"targeted by rollout {rollout.deployment_id}, since picked by {device.deployment_id or 'no rollout'} "
        f"({device.status.value}, runs {runs})",
    )


def _unplanned(
    device: DeviceRecord, rollouts: list[DeploymentRecord], manifests: dict[str, ModelManifest]
) -> tuple[WhyNotCategory, str]:
    """No rollout of the version mentions the device: check it against the models' manifests."""
    for rollout in rollouts:
        manifest = manifests.get(rollout.deployment_id)
        if manifest is None or not _targeted(device, manifest):
            continue
        blocked, reason, tier = _blocker(device, manifest)
        if blocked is not None:
            return blocked, reason
        return (
            WhyNotCategory.NOT_TARGETED,
            f"can run the {tier.precision.value} tier, but was not in rollout {rollout.deployment_id} "
            f"(registered after it was planned)",
        )
    models = sorted({f"{r.model_id} ({r.deployment_id})" for r in rollouts})
    return (
        WhyNotCategory.NOT_TARGETED,
        f"use case {device.use_case} / line {device.line_id} is not targeted by {', '.join(models)}",
    )


def _why_not_device(device: DeviceRecord, category: WhyNotCategory, reason: str) -> WhyNotDevice:
    return WhyNotDevice(
        thing_name=device.thing_name,
        site=device.site,
        line_id=device.line_id,
        category=category,
        reason=reason,
        status=device.status,
        since=device.status_since,
        current_model_version=device.current_model_version,
        deployment_id=device.deployment_id,
    )
