"""Registering a model version: its line's Model Package Group, the next version, the package, approval.

A package is created PendingManualApproval with the artifacts already in the model bucket
(artifacts.upload_artifacts) and its lineage in CustomerMetadataProperties (lineage.py); approving it
is what starts a rollout (SageMaker emits the state-change event the orchestrator listens to).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from edgeloop.cloud import aws
from edgeloop.model_runtime.signing import Ed25519PrivateKey, identity_of_manifest, sign_identity
from edgeloop.schemas import names
from edgeloop.schemas.common import s3_uri, semver_key
from edgeloop.schemas.model import Precision

from .artifacts import upload_artifacts
from .images import serving_image_uri
from .lineage import METADATA_PREFIX, metadata_properties

if TYPE_CHECKING:  # annotations only: the export and the step reports are handed in
    from .dataset import DatasetInfo
    from .evaluate import EvaluationReport
    from .export import ExportedModel

# What describe/list answer for a group that does not exist (moto and AWS differ).
_NO_SUCH_GROUP = ("ValidationException", "ResourceNotFound")


class ValidationFailed(RuntimeError):
    """The evaluate step did not pass the candidate: it must not reach the registry."""


def register_model(
    exported: ExportedModel,
    *,
    model_bucket: str,
    serving_image: str | None = None,
    dataset: DatasetInfo | None = None,
    evaluation: EvaluationReport | None = None,
    signing_key: Ed25519PrivateKey | None = None,
) -> str:
    """Upload the artifacts and create a PendingManualApproval model package; returns its ARN.

    With `signing_key` the manifest carries the version's signed identity (sign_identity_of), which
    every update of it carries and a device with a public key requires.

    `serving_image`: the image URI the package names (the pipeline passes its region's); None: SageMaker's
    XGBoost serving image of the client's region (images.py). With `evaluation`, a candidate that failed validation is refused before
    anything is uploaded."""
    if evaluation is not None:
        check_evaluation(evaluation, exported.manifest.line_ids)
    if len(exported.manifest.line_ids) != 1:
        raise ValueError(f"line_ids={exported.manifest.line_ids}: a model package group holds one line's models")
    exported = sign_identity_of(exported, signing_key)
    manifest = exported.manifest
    group_name = names.model_package_group_name(manifest.use_case, manifest.line_ids[0])
    manifest_uri = upload_artifacts(manifest, exported.payloads, model_bucket)
    ensure_model_package_group(group_name, f"{manifest.use_case} models of line {manifest.line_ids[0]}")
    sagemaker = aws.client("sagemaker")
    # the exact tier is what a SageMaker endpoint would serve, whatever order the tiers were listed in
    primary = manifest.tier(Precision.FP32)
    response = sagemaker.create_model_package(
        ModelPackageGroupName=group_name,
        ModelPackageDescription=f"{manifest.model_id} {manifest.version} ({manifest.target})",
        InferenceSpecification={
            "Containers": [
                {
                    "Image": serving_image or serving_image_uri(sagemaker.meta.region_name),
                    "ModelDataUrl": s3_uri(model_bucket, primary.payload_key),
                    "Framework": "XGBOOST",
                }
            ],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties=metadata_properties(manifest, manifest_uri, dataset=dataset, evaluation=evaluation),
    )
    return response["ModelPackageArn"]


def sign_identity_of(exported: ExportedModel, signing_key: Ed25519PrivateKey | None) -> ExportedModel:
    """`exported` with its manifest's signed identity (model, use case, line, version, tier digests, now);
    unchanged without a key."""
    if signing_key is None:
        return exported
    document = identity_of_manifest(exported.manifest, issued_at_ms=int(time.time() * 1000))
    manifest = exported.manifest.model_copy(update={"identity": sign_identity(document, signing_key)})
    return dataclasses.replace(exported, manifest=manifest)


def check_evaluation(evaluation: EvaluationReport, line_ids: list[str]) -> None:
    if evaluation.line_id not in line_ids:
        raise ValueError(f"evaluation line_id={evaluation.line_id!r} is not the model's line_ids={line_ids}")
    check_passed(evaluation)


def check_passed(evaluation: EvaluationReport) -> None:
    if not evaluation.passed:
        raise ValidationFailed(f"line {evaluation.line_id}: validation failed, not registering: {evaluation.reason}")


def ensure_model_package_group(group_name: str, description: str) -> None:
    sagemaker = aws.client("sagemaker")
    try:
        sagemaker.describe_model_package_group(ModelPackageGroupName=group_name)
        return
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in _NO_SUCH_GROUP:
            raise
    sagemaker.create_model_package_group(ModelPackageGroupName=group_name, ModelPackageGroupDescription=description)


def next_version(group_name: str) -> str:
    """One patch above the highest edgeloop:version registered in the group (1.0.0 for a new group)."""
    sagemaker = aws.client("sagemaker")
    versions: list[str] = []
    request: dict[str, Any] = {"ModelPackageGroupName": group_name}
    try:
        while True:
            page = sagemaker.list_model_packages(**request)
            for summary in page.get("ModelPackageSummaryList", []):
                package = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
                version = (package.get("CustomerMetadataProperties") or {}).get(f"{METADATA_PREFIX}version")
                if version:
                    versions.append(version)
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in _NO_SUCH_GROUP:
            raise
    if not versions:
        return "1.0.0"
    major, minor, patch = max(semver_key(v) for v in versions)
    return f"{major}.{minor}.{patch + 1}"


def approve_package(model_package_arn: str, *, description: str = "approved by edgeloop") -> dict[str, Any]:
    """Set Approved; returns the package described after the change (AWS then emits its state-change
    event; the local runtime builds that event from this: edgeloop/local/approval.py).

    UpdateModelPackage is given the current CustomerMetadataProperties back: moto blanks fields an
    update omits, and passing them unchanged is a no-op on AWS.
    """
    sagemaker = aws.client("sagemaker")
    current = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
    update: dict[str, Any] = {
        "ModelPackageArn": model_package_arn,
        "ModelApprovalStatus": "Approved",
        "ApprovalDescription": description,
    }
    if current.get("CustomerMetadataProperties"):
        update["CustomerMetadataProperties"] = current["CustomerMetadataProperties"]
    sagemaker.update_model_package(**update)
    approved = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
    if approved.get("CustomerMetadataProperties") != current.get("CustomerMetadataProperties"):
        raise RuntimeError(f"approving {model_package_arn} changed its CustomerMetadataProperties")
    return approved
