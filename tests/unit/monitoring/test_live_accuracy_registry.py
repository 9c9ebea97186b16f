"""The registered RMSE live accuracy compares with: read from the model package the register step wrote."""

from __future__ import annotations

import math

import boto3
import pytest
from moto import mock_aws

from edgeloop.functions.live_accuracy import registry
from edgeloop.sagemaker_pipelines.steps import lineage
from edgeloop.schemas import names
from edgeloop.schemas.model import ModelMetrics


def test_the_keys_read_are_the_keys_the_register_step_writes():
    metrics = lineage._metrics_properties(ModelMetrics(mse=0.25, mae=0.4, n_train=1, n_test=1))
    reference = lineage._reference_properties(lineage.ReferenceSummary(rows=1, content_sha256="0" * 64, mse=0.09))
    written = {*metrics, *(f"{lineage.METADATA_PREFIX}{key}" for key in reference)}
    assert set(registry.MSE_KEYS) <= written
    assert registry.VERSION_KEY == f"{lineage.METADATA_PREFIX}version"
    assert registry.MODEL_ID_KEY == f"{lineage.METADATA_PREFIX}model_id"


@pytest.fixture()
def group():
    with mock_aws():
        sagemaker = boto3.client("sagemaker")
        name = names.model_package_group_name("extrusion", "line-1")
        sagemaker.create_model_package_group(ModelPackageGroupName=name)
        for version, properties in (
            ("1.0.0", {"edgeloop:reference:mse": "0.0004", "edgeloop:metric:mse": "0.01"}),
            ("1.0.1", {"edgeloop:metric:mse": "0.0009"}),  # registered without an evaluate step
        ):
            sagemaker.create_model_package(
                ModelPackageGroupName=name,
                CustomerMetadataProperties={"edgeloop:version": version, "edgeloop:model_id": "m", **properties},
            )
        yield name


def test_the_reference_figure_first_then_the_test_blocks(group):
    assert registry.registered_rmse("extrusion", "line-1", "m", "1.0.0") == pytest.approx(0.02)
    assert registry.registered_rmse("extrusion", "line-1", "m", "1.0.1") == pytest.approx(math.sqrt(0.0009))
    assert registry.registered_rmse("extrusion", "line-1", "m", "9.9.9") is None
    assert registry.registered_rmse("extrusion", "line-1", "other-model", "1.0.0") is None
    assert registry.registered_rmse("extrusion", "line-2", "m", "1.0.0") is None  # no such group
