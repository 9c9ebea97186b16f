"""From an approved model package to a planned, started rollout.

`start_rollout` wires the plan (edgeloop.cloud.fleet.planning: which devices get the model, at
which precision, in which waves, and why every other device of the use case does not) to the
registry, the tables and the delivery, and is safe to run twice for the same approval
(EventBridge delivers at least once): the deployment id is derived from the model package ARN and
every write is conditional.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeloop.cloud import model_registry
from edgeloop.cloud.fleet.delivery import ModelDelivery
from edgeloop.cloud.fleet.deployments import DeploymentTable
from edgeloop.cloud.fleet.devices import DeviceTable, DeviceWrite, StoredDevice
from edgeloop.cloud.fleet.planning import deployment_id_for, model_updates, pending_update, plan_rollout
from edgeloop.cloud.fleet.waves import begin
from edgeloop.schemas import DeploymentRecord, DeploymentState, DeviceEvent, RolloutPolicy, names
from edgeloop.schemas.common import validation_problems

APPROVED = "Approved"


# --- starting ------------------------------------------------------------------------------------


class ApprovalEvent(BaseModel):
    """The part of an EventBridge "SageMaker Model Package State Change" event the rollout needs."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    model_package_arn: str = Field(alias="ModelPackageArn", min_length=1)
    approval_status: str = Field(alias="ModelApprovalStatus", min_length=1)

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> ApprovalEvent:
        detail_type = event.get("detail-type")
        if detail_type != names.MODEL_PACKAGE_STATE_CHANGE:
            raise ValueError(f"detail-type={detail_type!r} is not {names.MODEL_PACKAGE_STATE_CHANGE!r}")
        detail = event.get("detail")
        if not isinstance(detail, Mapping):
            raise ValueError(f"detail={detail!r} is not an object")
        try:
            return cls.model_validate(detail)
        except ValidationError as exc:
            problems = validation_problems(exc, name_of=lambda field: f"detail.{field}")
            raise ValueError(f"not a model package state change: {problems}") from exc


class NotApproved(Exception):
    """The model package is not (or no longer) approved: nothing to roll out."""


def start_rollout(
    event: Mapping[str, Any],
    *,
    devices: DeviceTable,
    deployments: DeploymentTable,
    delivery: ModelDelivery,
    model_bucket: str,
    now: datetime | None = None,
    policy: RolloutPolicy | None = None,
) -> DeploymentRecord:
    """Plan (under `policy`, default RolloutPolicy's defaults), record and start the rollout of an
    approved model package; raises NotApproved otherwise."""
    now = now or datetime.now(UTC)
    approval = ApprovalEvent.from_event(event)
    if approval.approval_status != APPROVED:
        raise NotApproved(f"model package {approval.model_package_arn} is {approval.approval_status}")
    deployment_id = deployment_id_for(approval.model_package_arn)
    stored = deployments.get(deployment_id)
    if stored is not None and stored.state is not DeploymentState.PLANNED:
        return stored  # a repeated event: the rollout is under way or over
    if stored is None:
        stored = _plan_and_record(
            approval.model_package_arn, devices, deployments, model_bucket, now, policy or RolloutPolicy()
        )
        if stored.state is not DeploymentState.PLANNED:
            return stored
    _mark_targets_pending(stored, devices, now)
    return begin(deployment_id, deployments_table=deployments, delivery=delivery, now=now)


def _plan_and_record(
    model_package_arn: str,
    devices: DeviceTable,
    deployments: DeploymentTable,
    model_bucket: str,
    now: datetime,
    policy: RolloutPolicy,
) -> DeploymentRecord:
    package = model_registry.describe_model_package(model_package_arn)
    status = package.get("ModelApprovalStatus")
    if status != APPROVED:
        # The event is older than the registry: the package was rejected again since.
        raise NotApproved(f"model package {model_package_arn} is {status} in the registry")
    manifest = model_registry.load_manifest(model_registry.manifest_uri_of(package))
    record = plan_rollout(
        manifest,
        devices.scan_all(),
        model_package_arn=model_package_arn,
        policy=policy,
        now=now,
    )
    if deployments.put_if_absent(record, model_updates(manifest, record.deployment_id, model_bucket)):
        return record
    return deployments.get(record.deployment_id)  # a concurrent duplicate event recorded it first


def _mark_targets_pending(record: DeploymentRecord, devices: DeviceTable, now: datetime) -> None:
    for wave in record.waves:
        for thing in wave.targets:
            devices.compare_and_swap_with_history(
                thing, _pending_in(record, wave.index, now), event=DeviceEvent.PENDING
            )


def _pending_in(
    record: DeploymentRecord, wave_index: int, now: datetime
) -> Callable[[StoredDevice | None], DeviceWrite | None]:
    def mark(stored: StoredDevice | None) -> DeviceWrite | None:
        if stored is None:
            return None  # deregistered since planning; its wave will count it as failed
        device = stored.record
        if device.deployment_id == record.deployment_id and device.desired_model_version == record.model_version:
            return None  # marked by an earlier run of this event; do not undo later reports
        return DeviceWrite(device.model_copy(update=pending_update(device, record, wave_index, now)))

    return mark
