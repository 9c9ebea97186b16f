"""The register step's signing key from Secrets Manager (moto): signed payloads verify on the device,
an unreadable or wrong secret is refused naming its ARN before anything is uploaded, an explicit
key wins, and a step without any key registers unsigned payloads and says so (log + metadata)."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws
from upsert_arguments import UPSERT_ARGUMENTS

from edgeloop.cloud.model_registry import load_manifest
from edgeloop.model_runtime.signing import (
    SignatureRejected,
    generate_private_key,
    private_key_pem,
    public_key_b64,
    verify_payload_signature,
)
from edgeloop.sagemaker_pipelines.steps.lineage import SIGNED_METADATA_KEY, parse_lineage
from edgeloop.sagemaker_pipelines.steps.register import main as register_main
from edgeloop.sagemaker_pipelines.steps.signing_key import (
    SigningKeyUnavailable,
    signing_key_for,
    signing_key_from_secret,
)
from edgeloop.schemas import names

MODEL_BUCKET = "edgeloop-models-signing-test"
LINE = "line-1"
MISSING_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:edgeloop/absent-AbCdEf"


@pytest.fixture
def aws(monkeypatch):
    for variable in (names.MODEL_SIGNING_KEY_ENV, names.MODEL_SIGNING_KEY_SECRET_ARN_ENV):
        monkeypatch.delenv(variable, raising=False)
    with mock_aws():
        location = {"LocationConstraint": "eu-west-1"}
        boto3.client("s3").create_bucket(Bucket=MODEL_BUCKET, CreateBucketConfiguration=location)
        yield boto3.client("secretsmanager")


def _secret(secretsmanager, name: str, **value) -> str:
    return secretsmanager.create_secret(Name=name, **value)["ARN"]


@pytest.fixture
def key_secret(aws):
    """(private key, ARN of the secret holding its PEM)."""
    key = generate_private_key()
    return key, _secret(aws, "edgeloop/model-signing", SecretString=private_key_pem(key).decode())


def _register(trained_dir, *extra: str) -> str:
    arns = register_main(["--trained", str(trained_dir), "--model-bucket", MODEL_BUCKET, "--version", "1.0.0", *extra])
    return arns[LINE]


def _registered(arn: str):
    package = boto3.client("sagemaker").describe_model_package(ModelPackageName=arn)
    properties = package["CustomerMetadataProperties"]
    return properties, load_manifest(properties[names.MANIFEST_URI_METADATA_KEY])


def _payload(tier) -> bytes:
    return boto3.client("s3").get_object(Bucket=MODEL_BUCKET, Key=tier.payload_key)["Body"].read()


def _nothing_registered() -> bool:
    groups = boto3.client("sagemaker").list_model_package_groups()["ModelPackageGroupSummaryList"]
    return not groups and "Contents" not in boto3.client("s3").list_objects_v2(Bucket=MODEL_BUCKET)


# --- signed from the secret -------------------------------------------------------------------------
def test_key_from_the_secret_env_signs_every_tier_and_the_device_verifies_it(trained_dir, key_secret, monkeypatch):
    key, arn = key_secret
    monkeypatch.setenv(names.MODEL_SIGNING_KEY_SECRET_ARN_ENV, arn)
    properties, manifest = _registered(_register(trained_dir))
    assert properties[SIGNED_METADATA_KEY] == "true"
    assert parse_lineage(properties).signed is True
    assert manifest.tiers
    for tier in manifest.tiers:
        payload = _payload(tier)
        digest = hashlib.sha256(payload).hexdigest()
        assert digest == tier.sha256
        verify_payload_signature(digest, tier.signature, public_key_b64(key))
        # the device's check is real: another key's public half refuses the same payload
        with pytest.raises(SignatureRejected, match="does not verify"):
            verify_payload_signature(digest, tier.signature, public_key_b64(generate_private_key()))


def test_the_secret_arn_flag_works_like_the_env(key_secret):
    key, arn = key_secret
    loaded = signing_key_for(None, arn)
    assert public_key_b64(loaded) == public_key_b64(key)


def test_an_explicit_signing_key_wins_and_the_secret_is_not_read(trained_dir, aws, tmp_path, capsys):
    explicit = generate_private_key()
    pem_path = tmp_path / "key.pem"
    pem_path.write_bytes(private_key_pem(explicit))
    # the secret does not exist: reading it would fail the step
    _, manifest = _registered(
        _register(trained_dir, "--signing-key", str(pem_path), "--signing-key-secret-arn", MISSING_ARN)
    )
    for tier in manifest.tiers:
        verify_payload_signature(tier.sha256, tier.signature, public_key_b64(explicit))
    assert f"the signing key secret {MISSING_ARN} is not read" in capsys.readouterr().err


# --- a secret that cannot be used -------------------------------------------------------------------
def test_a_missing_secret_is_refused_naming_the_arn_before_anything_is_uploaded(trained_dir, aws, monkeypatch):
    monkeypatch.setenv(names.MODEL_SIGNING_KEY_SECRET_ARN_ENV, MISSING_ARN)
    with pytest.raises(SigningKeyUnavailable) as raised:
        _register(trained_dir)
    message = str(raised.value)
    assert f"signing_key_secret_arn={MISSING_ARN!r}" in message and "ResourceNotFoundException" in message
    assert _nothing_registered()


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"SecretString": "not-a-key-but-a-password"}, "is not PEM text"),
        ({"SecretString": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, "not an unencrypted PEM"),
        ({"SecretString": _rsa_pem()}, "not an Ed25519 private key"),
        ({"SecretBinary": b"\x00\x01binary"}, "has no SecretString"),
    ],
)
def test_a_secret_without_an_ed25519_pem_key_is_refused_naming_the_arn(aws, value, expected):
    arn = _secret(aws, "edgeloop/bad-key", **value)
    with pytest.raises(SigningKeyUnavailable) as raised:
        signing_key_from_secret(arn)
    message = str(raised.value)
    assert f"signing_key_secret_arn={arn!r}" in message and expected in message
    assert "not-a-key-but-a-password" not in message  # a secret's content never reaches a log


@pytest.mark.parametrize("value", ["edgeloop/model-signing", "arn:aws:s3:::bucket/key", "arn:aws:secretsmanager:x"])
def test_a_value_that_is_not_a_secret_arn_is_refused_naming_it(aws, value):
    with pytest.raises(SigningKeyUnavailable, match=f"signing_key_secret_arn={value!r} is not a Secrets Manager"):
        signing_key_for(None, value)


# --- no key at all --------------------------------------------------------------------------------
@pytest.mark.parametrize("secret_env", [None, ""])  # "": what CDK fills in when no secret is configured
def test_without_any_key_payloads_are_unsigned_and_it_is_said_loudly(trained_dir, aws, monkeypatch, capsys, secret_env):
    if secret_env is not None:
        monkeypatch.setenv(names.MODEL_SIGNING_KEY_SECRET_ARN_ENV, secret_env)
    properties, manifest = _registered(_register(trained_dir))
    assert all(tier.signature is None for tier in manifest.tiers)
    assert properties[SIGNED_METADATA_KEY] == "false"
    assert parse_lineage(properties).signed is False
    err = capsys.readouterr().err
    assert "warning: no signing key" in err and "UNSIGNED" in err and names.MODEL_SIGNING_KEY_SECRET_ARN_ENV in err


def test_packages_registered_before_the_signed_property_parse_as_unknown():
    from edgeloop.sagemaker_pipelines.steps.lineage import _bool_or_none

    assert _bool_or_none(None) is None
    with pytest.raises(ValueError, match=rf"{SIGNED_METADATA_KEY}='yes'"):
        _bool_or_none("yes")


# --- `edgeloop pipeline upsert --signing-key-secret-arn` -------------------------------------------
UPSERT = ("pipeline", "upsert", *UPSERT_ARGUMENTS)
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:edgeloop/model-signing-AbCdEf"


def _upsert(*extra: str):
    from typer.testing import CliRunner

    from edgeloop.cli import app

    return CliRunner().invoke(app, [*UPSERT, *extra], catch_exceptions=False)


def test_upsert_puts_the_secret_arn_into_the_register_steps_environment(aws):
    result = _upsert("--signing-key-secret-arn", SECRET_ARN)
    assert result.exit_code == 0, result.output
    assert "unsigned" not in result.output
    described = boto3.client("sagemaker").describe_pipeline(PipelineName="edgeloop-extrusion")
    definition = json.loads(described["PipelineDefinition"])
    (check,) = [s for s in definition["Steps"] if s["Type"] == "Condition"]
    (register,) = check["Arguments"]["IfSteps"]
    assert register["Arguments"]["Environment"][names.MODEL_SIGNING_KEY_SECRET_ARN_ENV] == SECRET_ARN


def test_upsert_refuses_a_value_that_is_not_a_secret_arn(aws):
    result = _upsert("--signing-key-secret-arn", "edgeloop/model-signing")
    assert result.exit_code == 2
    assert "signing_key_secret_arn='edgeloop/model-signing' is not a Secrets Manager" in result.output
    assert boto3.client("sagemaker").list_pipelines()["PipelineSummaries"] == []
