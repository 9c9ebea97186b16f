"""The data-path tests' S3: a moto data bucket named by the test module's BUCKET."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from edgeloop.schemas import names


@pytest.fixture()
def s3(monkeypatch, request):
    """An S3 client with the module's BUCKET created, and EDGELOOP_DATA_BUCKET naming it (for handlers),
    whose use case is extrusion (EDGELOOP_USE_CASE: the functions have no default)."""
    bucket = request.module.BUCKET
    monkeypatch.setenv(names.DATA_BUCKET_ENV, bucket)
    monkeypatch.setenv(names.USE_CASE_ENV, "extrusion")
    monkeypatch.delenv(names.USE_CASE_FILE_ENV, raising=False)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client
