"""A model package in moto's SageMaker registry naming its manifest, as the register step leaves one.

A module beside tests/conftest.py: pytest puts this folder on sys.path, so any test imports it.
"""

from __future__ import annotations

from typing import Any

from edgeloop.schemas import names

# What SageMaker requires of a model package; the fleet never reads it (gateways get weight-only payloads).
INFERENCE_SPECIFICATION = {
    "Containers": [{"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/xgboost:latest"}],
    "SupportedContentTypes": ["text/csv"],
    "SupportedResponseMIMETypes": ["text/csv"],
}


def create_package(sagemaker: Any, group: str, manifest_uri: str, approval: str = "Approved") -> str:
    """A package of `group` whose metadata points at `manifest_uri`; returns its ARN."""
    return sagemaker.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=approval,
        InferenceSpecification=INFERENCE_SPECIFICATION,
        CustomerMetadataProperties={names.MANIFEST_URI_METADATA_KEY: manifest_uri},
    )["ModelPackageArn"]
