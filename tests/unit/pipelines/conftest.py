"""Fixtures of the pipeline tests."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from edgeloop.schemas import names


@pytest.fixture(autouse=True)
def extrusion_use_case(monkeypatch):
    """The steps have no default use case: those run without --use-case serve extrusion through the
    environment, as a SageMaker job does (EDGELOOP_USE_CASE in every step's environment)."""
    monkeypatch.setenv(names.USE_CASE_ENV, "extrusion")
    monkeypatch.delenv(names.USE_CASE_FILE_ENV, raising=False)


@pytest.fixture
def registry(request):
    """A moto account holding the test module's MODEL_BUCKET; yields its SageMaker client (the registry)."""
    with mock_aws():
        boto3.client("s3").create_bucket(
            Bucket=request.module.MODEL_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        yield boto3.client("sagemaker")


@pytest.fixture(scope="module")
def trained_dir(request, tmp_path_factory):
    """The test module's LINE with one trained model (synthetic extrusion examples), saved as the register
    step reads it."""
    from synthetic_line_examples import synthetic_examples

    from edgeloop.sagemaker_pipelines.steps.train import save_trained, train_line_model
    from edgeloop.schemas import load_use_case

    config = load_use_case("extrusion")
    trained = train_line_model(synthetic_examples(config, n=360, seed=3), config, seed=0, candidates_per_template=1)
    root = tmp_path_factory.mktemp("trained")
    save_trained(trained, root / request.module.LINE)
    return root
