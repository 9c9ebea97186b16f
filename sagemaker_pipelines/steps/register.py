"""Register an exported model in the SageMaker model registry and approve it.

Payloads and manifest.json go to the model bucket under models/<model_id>/<version>/. The model
package carries a compact, searchable summary in CustomerMetadataProperties (manifest location,
version, feature schema, per-tier hardware compatibility); the manifest itself stays the full record.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from edgeloop.functions.common import aws
from edgeloop.greengrass_components.model_runner.signing import Ed25519PrivateKey, load_private_key
from edgeloop.schemas import names
from edgeloop.schemas.model import ModelManifest, Precision
from edgeloop.schemas.use_case import load_use_case

from .export import ExportedModel, export_model, manifest_key
from .train import load_trained

# The sagemaker-xgboost serving image, as `sagemaker.image_uris.retrieve("xgboost", region,
# version=XGBOOST_IMAGE_VERSION)` returns it (the SDK is not a dependency here). Edge devices never
# run this container: it documents the model's framework in the registry and lets a package be
# deployed to a SageMaker endpoint for side-by-side checks. Accounts per region from the SDK's
# image_uri_config/xgboost.json.
XGBOOST_IMAGE_VERSION = "1.7-1"
XGBOOST_IMAGE_URI = "{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-xgboost:{version}"
XGBOOST_IMAGE_ACCOUNTS = {
    "af-south-1": "510948584623",
    "ap-east-1": "651117190479",
    "ap-northeast-1": "354813040037",
    "ap-northeast-2": "366743142698",
    "ap-northeast-3": "867004704886",
    "ap-south-1": "720646828776",
    "ap-southeast-1": "121021644041",
    "ap-southeast-2": "783357654285",
    "ca-central-1": "341280168497",
    "eu-central-1": "492215442770",
    "eu-north-1": "662702820516",
    "eu-south-1": "978288397137",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-west-3": "659782779980",
    "me-south-1": "801668240914",
    "sa-east-1": "737474898029",
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
}

# SageMaker's limits on CustomerMetadataProperties (CreateModelPackage API reference).
METADATA_PATTERN = r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$"  # Python's re has no \p{..}: see _metadata_text
METADATA_PUNCTUATION = frozenset("_.:/=+-@")
METADATA_KEY_MAX = 128
METADATA_VALUE_MAX = 256
METADATA_ENTRIES_MAX = 50
METADATA_PREFIX = "edgeloop:"

APPROVAL_EVENT_SOURCE = "aws.sagemaker"
APPROVAL_EVENT_DETAIL_TYPE = "SageMaker Model Package State Change"


def xgboost_image_uri(region: str) -> str:
    if region not in XGBOOST_IMAGE_ACCOUNTS:
        known = sorted(XGBOOST_IMAGE_ACCOUNTS)
        raise ValueError(f"region={region!r} has no known sagemaker-xgboost image; known: {known}")
    account = XGBOOST_IMAGE_ACCOUNTS[region]
    return XGBOOST_IMAGE_URI.format(account=account, region=region, version=XGBOOST_IMAGE_VERSION)


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    match = re.match(r"^s3://([^/]+)/(.+)$", uri)
    if not match:
        raise ValueError(f"manifest_uri={uri!r} is not s3://bucket/key")
    return match.group(1), match.group(2)


# --- metadata ------------------------------------------------------------------------------------


def metadata_properties(manifest: ModelManifest, manifest_uri: str) -> dict[str, str]:
    """The registry's summary of a model version: enough to pick devices without reading S3."""
    properties = {
        names.MANIFEST_URI_METADATA_KEY: manifest_uri,
        f"{METADATA_PREFIX}model_id": manifest.model_id,
        f"{METADATA_PREFIX}version": manifest.version,
        f"{METADATA_PREFIX}use_case": manifest.use_case,
        f"{METADATA_PREFIX}line_ids": " ".join(manifest.line_ids),
        f"{METADATA_PREFIX}feature_schema_hash": manifest.feature_schema_hash,
        f"{METADATA_PREFIX}tiers": " ".join(t.precision.value for t in manifest.tiers),
    }
    for tier in manifest.tiers:
        prefix = f"{METADATA_PREFIX}tier:{tier.precision.value}:"
        properties[f"{prefix}architectures"] = " ".join(a.value for a in tier.architectures)
        properties[f"{prefix}min_runtime_version"] = tier.min_runtime_version
        properties[f"{prefix}sha256"] = tier.sha256
    check_metadata(properties)
    return properties


def check_metadata(properties: dict[str, str]) -> None:
    if len(properties) > METADATA_ENTRIES_MAX:
        raise ValueError(f"{len(properties)} metadata properties exceed SageMaker's {METADATA_ENTRIES_MAX}")
    for key, value in properties.items():
        if not (1 <= len(key) <= METADATA_KEY_MAX) or not _metadata_text(key):
            raise ValueError(
                f"metadata key {key!r} breaks SageMaker's rule (1-{METADATA_KEY_MAX} chars of {METADATA_PATTERN})"
            )
        if not isinstance(value, str) or len(value) > METADATA_VALUE_MAX or not _metadata_text(value):
            raise ValueError(
                f"metadata {key}={value!r} breaks SageMaker's rule "
                f"(<= {METADATA_VALUE_MAX} chars of {METADATA_PATTERN})"
            )


def _metadata_text(text: str) -> bool:
    """Letters, separators (spaces), numbers and _.:/=+-@ only."""
    return all(unicodedata.category(c)[0] in "LZN" or c in METADATA_PUNCTUATION for c in text)


# --- registration --------------------------------------------------------------------------------


def upload_artifacts(exported: ExportedModel, model_bucket: str) -> str:
    """Payloads first, manifest last: a manifest never points at a payload that is not there yet."""
    s3 = aws.client("s3")
    manifest = exported.manifest
    for tier in manifest.tiers:
        s3.put_object(
            Bucket=model_bucket,
            Key=tier.payload_key,
            Body=exported.payloads[tier.precision],
            ContentType="application/octet-stream",
            Metadata={"sha256": tier.sha256},
        )
    key = manifest_key(manifest.model_id, manifest.version)
    body = manifest.model_dump_json(indent=2).encode()
    s3.put_object(Bucket=model_bucket, Key=key, Body=body, ContentType="application/json")
    return s3_uri(model_bucket, key)


def ensure_model_package_group(group_name: str, description: str) -> None:
    sagemaker = aws.client("sagemaker")
    try:
        sagemaker.describe_model_package_group(ModelPackageGroupName=group_name)
        return
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
            raise
    sagemaker.create_model_package_group(ModelPackageGroupName=group_name, ModelPackageGroupDescription=description)


def register_model(exported: ExportedModel, *, model_bucket: str) -> str:
    """Upload the artifacts and create a PendingManualApproval model package; returns its ARN."""
    manifest = exported.manifest
    if len(manifest.line_ids) != 1:
        raise ValueError(f"line_ids={manifest.line_ids}: a model package group holds one line's models")
    group_name = names.model_package_group_name(manifest.use_case, manifest.line_ids[0])
    manifest_uri = upload_artifacts(exported, model_bucket)
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
                    "Image": xgboost_image_uri(sagemaker.meta.region_name),
                    "ModelDataUrl": s3_uri(model_bucket, primary.payload_key),
                    "Framework": "XGBOOST",
                }
            ],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties=metadata_properties(manifest, manifest_uri),
    )
    return response["ModelPackageArn"]


def approve_model(model_package_arn: str, *, description: str = "approved by edgeloop") -> dict[str, Any]:
    """Set Approved and return the EventBridge event AWS emits for that change.

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
    return approval_event(approved)


def approval_event(package: dict[str, Any]) -> dict[str, Any]:
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
        "detail-type": APPROVAL_EVENT_DETAIL_TYPE,
        "source": APPROVAL_EVENT_SOURCE,
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [arn],
        "detail": detail,
    }


def _epoch_ms(value: Any) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return value


def load_manifest(manifest_uri: str) -> ModelManifest:
    """Read a ModelManifest back from s3://bucket/models/<model_id>/<version>/manifest.json."""
    bucket, key = parse_s3_uri(manifest_uri)
    body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return ModelManifest.model_validate_json(body)


def signing_key_for(source: str | Path | None) -> Ed25519PrivateKey | None:
    """The key payloads are signed with. Without one the payloads go out unsigned: the gateways decide
    (one configured with a public key refuses them), so that is said loudly."""
    if source:
        return load_private_key(source)
    print(
        f"warning: no signing key (--signing-key or ${names.MODEL_SIGNING_KEY_ENV}): registering unsigned payloads, "
        "which gateways configured with a public key will reject",
        file=sys.stderr,
    )
    return None


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Export + register step: <trained>/<line_id>/ (from train.main) -> one model package per line."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--trained", required=True, help="directory with one saved trained model per line")
    parser.add_argument("--model-bucket", default=os.environ.get(names.MODEL_BUCKET_ENV, names.LOCAL_MODEL_BUCKET))
    parser.add_argument("--use-case", default="extrusion")
    parser.add_argument("--version", required=True, help="MAJOR.MINOR.PATCH of this model version")
    parser.add_argument(
        "--signing-key",
        default=os.environ.get(names.MODEL_SIGNING_KEY_ENV) or None,
        help=f"Ed25519 private key (PEM file path or PEM text) the payloads are signed with "
        f"(default: ${names.MODEL_SIGNING_KEY_ENV})",
    )
    args = parser.parse_args(argv)
    signing_key = signing_key_for(args.signing_key)
    config = load_use_case(args.use_case)
    line_dirs = sorted(p for p in Path(args.trained).iterdir() if p.is_dir())
    if not line_dirs:
        parser.error(f"--trained {args.trained} holds no per-line model directories")
    arns = {}
    for line_dir in line_dirs:
        exported = export_model(
            load_trained(line_dir),
            model_id=f"{config.use_case}-{line_dir.name}",
            version=args.version,
            use_case=config.use_case,
            line_ids=[line_dir.name],
            target=config.target_metric,
            signing_key=signing_key,
        )
        arns[line_dir.name] = register_model(exported, model_bucket=args.model_bucket)
    print(json.dumps(arns, indent=2))
    return arns


if __name__ == "__main__":
    main()
