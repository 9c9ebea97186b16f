"""A model version's RMSE at registration, from the SageMaker model registry.

The register step records, in the package's CustomerMetadataProperties, the evaluate step's figures on the
reference data (scored by cloud/scoring.py, the rule live accuracy scores with) as `edgeloop:reference:mse`,
and the training test block's as `edgeloop:metric:mse` (sagemaker_pipelines/steps/lineage.py writes both;
the package is found by `edgeloop:version` in the line's group). The reference figure is preferred; the
test block's is taken for packages registered without an evaluate step. Each version is looked up once:
the round keeps what it found in the line's state.
"""

from __future__ import annotations

import math

from botocore.exceptions import ClientError

from edgeloop.cloud.aws import client
from edgeloop.schemas import names

# Written by sagemaker_pipelines/steps/lineage.py (METADATA_PREFIX "edgeloop:").
VERSION_KEY = "edgeloop:version"
MODEL_ID_KEY = "edgeloop:model_id"
MSE_KEYS = ("edgeloop:reference:mse", "edgeloop:metric:mse")
_NO_SUCH_GROUP = {"ValidationException", "ResourceNotFound"}


def rmse_of(properties: dict[str, str]) -> float | None:
    for key in MSE_KEYS:
        if key in properties:
            mse = float(properties[key])
            return math.sqrt(mse) if math.isfinite(mse) and mse >= 0 else None
    return None


def registered_rmse(use_case: str, line_id: str, model_id: str, version: str) -> float | None:
    """The version's registered RMSE (None: no such package in the line's group, or no figure)."""
    sagemaker = client("sagemaker")
    request = {
        "ModelPackageGroupName": names.model_package_group_name(use_case, line_id),
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
    }
    try:
        while True:
            page = sagemaker.list_model_packages(**request)
            for summary in page.get("ModelPackageSummaryList", []):
                package = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
                properties = package.get("CustomerMetadataProperties") or {}
                if properties.get(VERSION_KEY) == version and properties.get(MODEL_ID_KEY, model_id) == model_id:
                    return rmse_of(properties)
            if not page.get("NextToken"):
                return None
            request["NextToken"] = page["NextToken"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] in _NO_SUCH_GROUP:
            return None
        raise
