"""The register step signs each model version's identity (schemas/signed_model.py): the manifest and every
update of it carry the document and its Ed25519 signature, which verifies with the key's public half and
names the version's model, use case, line, version and every tier's payload digest (issue 14)."""

from __future__ import annotations

import time

import boto3
import pytest
from moto import mock_aws

from edgeloop.cloud.fleet.planning import model_updates
from edgeloop.cloud.model_registry import load_manifest
from edgeloop.model_runtime.signing import (
    SignatureRejected,
    generate_private_key,
    parse_public_key,
    private_key_pem,
    public_key_b64,
    verify_identity_signature,
)
from edgeloop.sagemaker_pipelines.steps.register import main as register_main
from edgeloop.schemas import names

MODEL_BUCKET = "edgeloop-models-identity-test"
LINE = "line-1"


@pytest.fixture
def aws(monkeypatch):
    for variable in (names.MODEL_SIGNING_KEY_ENV, names.MODEL_SIGNING_KEY_SECRET_ARN_ENV):
        monkeypatch.delenv(variable, raising=False)
    with mock_aws():
        location = {"LocationConstraint": "eu-west-1"}
        boto3.client("s3").create_bucket(Bucket=MODEL_BUCKET, CreateBucketConfiguration=location)
        yield


def _registered_manifest(trained_dir, *extra: str):
    arns = register_main(["--trained", str(trained_dir), "--model-bucket", MODEL_BUCKET, "--version", "1.2.3", *extra])
    package = boto3.client("sagemaker").describe_model_package(ModelPackageName=arns[LINE])
    return load_manifest(package["CustomerMetadataProperties"][names.MANIFEST_URI_METADATA_KEY])


def test_the_register_step_signs_the_identity_every_update_carries(trained_dir, aws, tmp_path):
    key = generate_private_key()
    (tmp_path / "key.pem").write_bytes(private_key_pem(key))
    before_ms = int(time.time() * 1000)
    manifest = _registered_manifest(trained_dir, "--signing-key", str(tmp_path / "key.pem"))

    assert manifest.identity is not None
    document = verify_identity_signature(manifest.identity, parse_public_key(public_key_b64(key)), what="manifest")
    assert (document.model_id, document.use_case, document.line_ids, document.version) == (
        manifest.model_id,
        "extrusion",
        [LINE],
        "1.2.3",
    )
    assert document.payload_sha256 == {tier.precision.value: tier.sha256 for tier in manifest.tiers}
    assert before_ms <= document.issued_at_ms <= int(time.time() * 1000)
    updates = model_updates(manifest, "dep-1", MODEL_BUCKET)
    assert all(u.identity == manifest.identity for u in updates.values()) and updates
    with pytest.raises(SignatureRejected, match="does not verify"):
        verify_identity_signature(manifest.identity, parse_public_key(public_key_b64(generate_private_key())), what="m")


def test_without_a_key_no_identity_is_signed(trained_dir, aws):
    assert _registered_manifest(trained_dir).identity is None
