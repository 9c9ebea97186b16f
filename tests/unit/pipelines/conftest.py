"""Fixtures of the pipeline tests."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws


@pytest.fixture
def registry(request):
    """A moto account holding the test module's MODEL_BUCKET; yields its SageMaker client (the registry)."""
    with mock_aws():
        boto3.client("s3").create_bucket(
            Bucket=request.module.MODEL_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        yield boto3.client("sagemaker")
