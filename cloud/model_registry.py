"""The SageMaker model registry and the manifests its packages point at.

A registered model package carries the S3 URI of its ModelManifest in CustomerMetadataProperties
(names.MANIFEST_URI_METADATA_KEY); the manifest lists the weight-only payload of every
compatibility tier. The orchestrator, the register step and `edgeloop models` read it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeloop.cloud import s3
from edgeloop.cloud.aws import client
from edgeloop.schemas import ModelManifest, names
from edgeloop.schemas.common import split_s3_uri


def describe_model_package(model_package_arn: str) -> dict[str, Any]:
    return client("sagemaker").describe_model_package(ModelPackageName=model_package_arn)


def manifest_uri_of(package: Mapping[str, Any]) -> str:
    metadata = package.get("CustomerMetadataProperties") or {}
    uri = metadata.get(names.MANIFEST_URI_METADATA_KEY)
    if not uri:
        raise ValueError(
            f"model package {package.get('ModelPackageArn')!r} has no CustomerMetadataProperties"
            f"[{names.MANIFEST_URI_METADATA_KEY!r}] (metadata keys: {sorted(metadata)})"
        )
    return uri


def load_manifest(uri: str) -> ModelManifest:
    """Read and validate a ModelManifest from s3://bucket/key."""
    bucket, key = split_s3_uri(uri, what="manifest uri")
    body = s3.get_bytes(bucket, key)
    try:
        return ModelManifest.model_validate_json(body)
    except ValueError as exc:
        raise ValueError(f"manifest {uri} is not a valid ModelManifest: {exc}") from exc
