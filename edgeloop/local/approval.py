"""The local runtime's model approval: approve a package and hand back the event AWS would deliver.

In AWS, approving a model package makes SageMaker emit a "SageMaker Model Package State Change"
event that EventBridge routes to the orchestrator. moto emits no such event, so the demo and the
end-to-end tests build it here from the approved package and invoke the orchestrator with it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from edgeloop.sagemaker_pipelines.steps.registration import approve_package
from edgeloop.schemas import names


def approve_model(model_package_arn: str, *, description: str = "approved by edgeloop") -> dict[str, Any]:
    """Approve the package in the registry and return the state-change event for that approval."""
    return model_package_state_change(approve_package(model_package_arn, description=description))


def model_package_state_change(package: dict[str, Any]) -> dict[str, Any]:
    """The "SageMaker Model Package State Change" event for a described model package."""
    arn = package["ModelPackageArn"]
    _, _, _, region, account, _ = arn.split(":", 5)
    detail = {
        "ModelPackageGroupName": package.get("ModelPackageGroupName"),
        "ModelPackageVersion": package.get("ModelPackageVersion"),
        "ModelPackageArn": arn,
        "ModelPackageName": package.get("ModelPackageName"),
        "CreationTime": _epoch_ms(package.get("CreationTime")),
        "InferenceSpecification": package.get("InferenceSpecification"),
        "ModelPackageStatus": package.get("ModelPackageStatus"),
        "ModelApprovalStatus": package["ModelApprovalStatus"],
        "ApprovalDescription": package.get("ApprovalDescription"),
        "CustomerMetadataProperties": dict(package.get("CustomerMetadataProperties") or {}),
    }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": names.MODEL_PACKAGE_STATE_CHANGE,
        "source": names.MODEL_PACKAGE_EVENT_SOURCE,
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [arn],
        "detail": detail,
    }


def _epoch_ms(value: Any) -> int | None:
    # EventBridge carries times as epoch milliseconds; boto3 parses them into datetimes
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return value
