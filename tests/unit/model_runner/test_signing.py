"""Ed25519 payload signatures: sign at export, verify on the device; bad keys and signatures say what is wrong."""

from __future__ import annotations

import base64
import hashlib
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.greengrass_components.model_runner.component import settings_from_env
from edgeloop.model_runtime.signing import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    SIGNED_CONTEXT,
    SignatureRejected,
    generate_private_key,
    load_private_key,
    parse_public_key,
    private_key_pem,
    public_key_b64,
    sign_payload,
    signed_message,
    verify_payload_signature,
    write_key_pair,
)
from edgeloop.sagemaker_pipelines.steps.signing_key import signing_key_for
from edgeloop.schemas import ModelUpdate, names
from edgeloop.schemas.model import CompatibilityTier

KEY = generate_private_key()
PUBLIC = public_key_b64(KEY)


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@settings(max_examples=30, deadline=None)
@given(payload=st.binary(max_size=4096))
def test_a_signature_verifies_for_its_payload_only(payload):
    signature = sign_payload(payload, KEY)
    assert len(base64.b64decode(signature)) == 64
    verify_payload_signature(digest(payload), signature, PUBLIC)
    with pytest.raises(SignatureRejected, match="does not verify"):
        verify_payload_signature(digest(payload + b"\0"), signature, PUBLIC)


def test_what_is_signed_is_the_context_and_the_sha256_digest():
    payload = b"weights"
    message = signed_message(digest(payload))
    assert message == SIGNED_CONTEXT + hashlib.sha256(payload).digest()
    KEY.public_key().verify(base64.b64decode(sign_payload(payload, KEY)), message)  # raises if not


def test_another_keys_signature_is_rejected_naming_the_configured_key():
    payload = b"weights"
    signature = sign_payload(payload, generate_private_key())
    with pytest.raises(SignatureRejected) as refused:
        verify_payload_signature(digest(payload), signature, PUBLIC)
    assert PUBLIC in refused.value.reason and digest(payload) in refused.value.reason


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        (None, "unsigned payload"),
        ("", "unsigned payload"),
        ("not base64!", "signature='not base64!' is not valid base64"),
        (base64.b64encode(b"x" * 10).decode(), "is 10 bytes, an Ed25519 signature has 64"),
    ],
)
def test_missing_or_malformed_signatures_are_rejected(signature, expected):
    with pytest.raises(SignatureRejected, match=expected):
        verify_payload_signature(digest(b"p"), signature, PUBLIC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "is not base64 text"),
        ("%%%", "is not valid base64"),
        (base64.b64encode(b"k" * 31).decode(), "decodes to 31 bytes"),
    ],
)
def test_bad_public_keys_name_the_field_and_value(value, expected):
    with pytest.raises(ValueError, match=expected) as error:
        parse_public_key(value, field="modelSigningPublicKey")
    assert f"modelSigningPublicKey={value!r}" in str(error.value)


def test_private_keys_load_from_pem_text_bytes_and_path(tmp_path):
    pem = private_key_pem(KEY)
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    for source in (pem, pem.decode(), path, str(path)):
        assert public_key_b64(load_private_key(source)) == PUBLIC


def test_unusable_private_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"path='.*missing.pem' cannot be read"):
        load_private_key(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="is not an unencrypted PEM private key"):
        load_private_key(garbage)


def test_non_ed25519_keys_are_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        load_private_key(other)


def test_key_pair_files_are_private_and_reused(tmp_path):
    first = write_key_pair(tmp_path / "keys")
    assert first.private_key_path == tmp_path / "keys" / PRIVATE_KEY_FILE
    assert stat.S_IMODE(first.private_key_path.stat().st_mode) == 0o600
    assert (tmp_path / "keys" / PUBLIC_KEY_FILE).read_text().strip() == first.public_key_b64
    assert write_key_pair(tmp_path / "keys") == first
    assert public_key_b64(load_private_key(first.private_key_path)) == first.public_key_b64


def test_register_step_signs_with_a_configured_key_and_warns_without(tmp_path, capsys):
    path = write_key_pair(tmp_path).private_key_path
    assert public_key_b64(signing_key_for(str(path))) == public_key_b64(load_private_key(path))
    assert signing_key_for(None) is None
    assert "UNSIGNED payloads" in capsys.readouterr().err


def test_signature_fields_are_optional_and_checked():
    tier = dict(
        precision="fp32",
        architectures=["x86_64"],
        min_runtime_version="1.0.0",
        payload_key="models/m/1.0.0/fp32.npz",
        payload_bytes=10,
        sha256="0" * 64,
        max_abs_error=0.0,
    )
    assert CompatibilityTier(**tier).signature is None  # documents from before signing still validate
    assert CompatibilityTier(**tier, signature=sign_payload(b"x", KEY)).signature
    with pytest.raises(ValueError, match="signature"):
        CompatibilityTier(**tier, signature="short")
    update = ModelUpdate(
        deployment_id="d",
        model_id="m",
        version="1.0.0",
        precision="fp32",
        payload_uri="s3://b/k",
        sha256="0" * 64,
        features=["a"],
        feature_schema_hash="0" * 64,
    )
    assert (update.signature, update.payload_bytes, update.architectures, update.min_runtime_version) == (None,) * 4


def _env(tmp_path, **extra):
    return {
        names.THING_NAME_ENV: "gw-1",
        names.WORK_DIR_ENV: str(tmp_path),
        names.LINE_ID_ENV: "line-1",
        names.USE_CASE_ENV: "extrusion",
        **extra,
    }


def test_component_settings_take_the_public_key_from_the_configuration(tmp_path):
    assert settings_from_env(_env(tmp_path)).model_signing_public_key is None
    empty_default = _env(tmp_path, **{names.MODEL_SIGNING_PUBLIC_KEY_ENV: "", names.RUNTIME_VERSION_ENV: ""})
    assert settings_from_env(empty_default).model_signing_public_key is None
    configured = settings_from_env(
        _env(tmp_path, **{names.MODEL_SIGNING_PUBLIC_KEY_ENV: PUBLIC, names.RUNTIME_VERSION_ENV: "1.1.0"})
    )
    assert (configured.model_signing_public_key, configured.runtime_version) == (PUBLIC, "1.1.0")
    with pytest.raises(ValueError, match=f"{names.MODEL_SIGNING_PUBLIC_KEY_ENV}='nope'"):
        settings_from_env(_env(tmp_path, **{names.MODEL_SIGNING_PUBLIC_KEY_ENV: "nope"}))
