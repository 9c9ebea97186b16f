"""The local runtime's model approval: approve a package and hand back the event AWS would deliver.

In AWS, approving a model package makes SageMaker emit a "SageMaker Model Package State Change"
event that EventBridge routes to the orchestrator. moto emits no such event, so the demo and the
end-to-end tests build it here from the approved package and invoke the orchestrator with it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from edgeloop.cloud.aws import client
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


class ApprovalWatcher:
    """EventBridge's stand-in for `edgeloop local up`: each `poll()` returns the state-change events of
    the packages in edgeloop's model package groups approved since the last poll (by any command:
    `pipeline run-local --approve`, `models approve`, the console), each once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def poll(self) -> list[dict[str, Any]]:
        sagemaker = client("sagemaker")
        events = []
        for group in _pages(sagemaker.list_model_package_groups, "ModelPackageGroupSummaryList"):
            name = group["ModelPackageGroupName"]
            if not name.startswith(f"{names.MODEL_PACKAGE_GROUP_PREFIX}-"):
                continue
            request = {"ModelPackageGroupName": name, "ModelApprovalStatus": "Approved"}
            for summary in _pages(sagemaker.list_model_packages, "ModelPackageSummaryList", **request):
                arn = summary["ModelPackageArn"]
                if arn in self.seen:
                    continue
                package = sagemaker.describe_model_package(ModelPackageName=arn)
                self.seen.add(arn)
                if package.get("ModelApprovalStatus") == "Approved":  # the listing's filter, checked
                    events.append(model_package_state_change(package))
        return events


def _pages(operation, items: str, **request: Any):
    while True:
        page = operation(**request)
        yield from page.get(items, [])
        if not page.get("NextToken"):
            return
        request["NextToken"] = page["NextToken"]


def _epoch_ms(value: Any) -> int | None:
    # EventBridge carries times as epoch milliseconds; boto3 parses them into datetimes
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return value
