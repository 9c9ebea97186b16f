"""Ed25519 signatures of model payloads: the cloud signs at export, the device verifies before loading.

What is signed: the message `SIGNED_CONTEXT + sha256(payload)` (the 32 raw digest bytes), not the
payload bytes themselves. The device computes that digest anyway to check the update's sha256, so
verifying costs one Ed25519 check and no second pass over the payload; the context prefix keeps a
payload signature from being valid for any other message the same key might ever sign.

Since issue 14 a payload signature alone is not enough for a device with a key: the register step
also signs the model version's identity (schemas/signed_model.py) and `verify_signed_update` checks
both, the identity against the update and the device, and refuses downgrades below the version floor
the device persists (VersionFloor) unless the update carries the key holder's signed rollback of the
deployment the device runs (sign_rollback, `edgeloop models rollback`); see its docstring. The
rules it applies once the signatures hold (what the device runs, its version floor, the downgrade
rule) are in update_order.py; this module holds what is signed and how it is verified.

Encodings travel as text: a signature is base64 of its 64 bytes, a public key is base64 of its raw
32 bytes (what the ModelRunner configuration holds), a private key is PKCS#8 PEM (file or text).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgeloop.schemas.model import ModelManifest, ModelUpdate
from edgeloop.schemas.signed_model import RollbackAuthorization, SignedIdentity, SignedModelIdentity, SignedRollback

from .update_order import (
    RunningModel,
    VersionFloor,
    identity_problems,
    order_problem,
    rollback_problems,
    rollback_refusal,
)

SIGNED_CONTEXT = b"edgeloop-model-payload-sha256:v1\n"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
PRIVATE_KEY_FILE = "model-signing.key.pem"
PUBLIC_KEY_FILE = "model-signing.pub.b64"


class SignatureRejected(Exception):
    """A payload signature that does not verify; `reason` names what failed (for status reports)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KeyPairFiles:
    private_key_path: Path
    public_key_b64: str


# --- keys ----------------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def write_key_pair(directory: str | Path) -> KeyPairFiles:
    """A new key pair in `directory` (private PEM readable by the owner only); reuses one already there."""
    directory = Path(directory)
    private_path = directory / PRIVATE_KEY_FILE
    if private_path.exists():
        return KeyPairFiles(private_path, public_key_b64(load_private_key(private_path)))
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # novermin: flags, not a union type
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_key_pem(key))
    public = public_key_b64(key)
    (directory / PUBLIC_KEY_FILE).write_text(public + "\n")
    return KeyPairFiles(private_path, public)


def load_private_key(source: str | bytes | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM text/bytes or from the path of a PEM file."""
    pem = _pem_bytes(source)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"signing key {_describe(source)} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"signing key {_describe(source)} is a {type(key).__name__}, not an Ed25519 private key")
    return key


def _pem_bytes(source: str | bytes | Path) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and "-----BEGIN" in source:
        return source.encode()
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"signing key path={str(path)!r} cannot be read: {exc.strerror or exc}") from None


def _describe(source: str | bytes | Path) -> str:
    if isinstance(source, bytes) or (isinstance(source, str) and "-----BEGIN" in source):
        return "(PEM text)"
    return f"path={str(source)!r}"


def parse_public_key(value: str, *, field: str = "public key") -> Ed25519PublicKey:
    """The key from base64 of its raw 32 bytes; a clear error naming `field` and the value otherwise."""
    raw = _b64(value, field)
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"{field}={value!r} decodes to {len(raw)} bytes, an Ed25519 public key has {PUBLIC_KEY_BYTES}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _b64(value: str, field: str) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}={value!r} is not base64 text")
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{field}={value!r} is not valid base64") from None


# --- signing and verifying -----------------------------------------------------------------------


def signed_message(payload_sha256_hex: str) -> bytes:
    return SIGNED_CONTEXT + bytes.fromhex(payload_sha256_hex)


def sign_payload(payload: bytes, private_key: Ed25519PrivateKey) -> str:
    """base64 Ed25519 signature of the payload (over SIGNED_CONTEXT + its SHA-256 digest)."""
    signature = private_key.sign(signed_message(hashlib.sha256(payload).hexdigest()))
    return base64.b64encode(signature).decode()


def verify_payload_signature(
    payload_sha256_hex: str, signature_b64: str | None, public_key: Ed25519PublicKey | str
) -> None:
    """Raise SignatureRejected unless `signature_b64` is the key's signature of this payload digest."""
    if isinstance(public_key, str):
        public_key = parse_public_key(public_key)
    if not signature_b64:
        raise SignatureRejected(
            f"unsigned payload (sha256 {payload_sha256_hex}): this device requires an Ed25519 signature "
            f"by key {_key_b64(public_key)}"
        )
    try:
        signature = _b64(signature_b64, "signature")
    except ValueError as exc:
        raise SignatureRejected(str(exc)) from None
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureRejected(
            f"signature={signature_b64!r} is {len(signature)} bytes, an Ed25519 signature has {SIGNATURE_BYTES}"
        )
    try:
        public_key.verify(signature, signed_message(payload_sha256_hex))
    except InvalidSignature:
        raise SignatureRejected(
            f"signature {signature_b64[:16]}... does not verify for payload sha256 {payload_sha256_hex} "
            f"with the configured key {_key_b64(public_key)} (signed by another key, or the payload changed)"
        ) from None


def _key_b64(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


# --- the signed identity of a model version (schemas/signed_model.py) -----------------------------

IDENTITY_CONTEXT = b"edgeloop-model-identity:v1\n"


def identity_of_manifest(manifest: ModelManifest, issued_at_ms: int) -> SignedModelIdentity:
    """The document the register step signs for `manifest`: its model, line(s), use case, version, tier digests."""
    return SignedModelIdentity(
        model_id=manifest.model_id,
        use_case=manifest.use_case,
        line_ids=manifest.line_ids,
        version=manifest.version,
        payload_sha256={tier.precision.value: tier.sha256 for tier in manifest.tiers},
        issued_at_ms=issued_at_ms,
    )


def sign_identity(document: SignedModelIdentity, private_key: Ed25519PrivateKey) -> SignedIdentity:
    signature = private_key.sign(IDENTITY_CONTEXT + document.canonical_bytes())
    return SignedIdentity(document=document, signature=base64.b64encode(signature).decode())


def verify_signed_update(
    update: ModelUpdate,
    payload_sha256_hex: str,
    public_key: Ed25519PublicKey | None,
    *,
    use_case: str,
    line_id: str | None,
    running: RunningModel | None = None,
    previous: RunningModel | None = None,
    floor: VersionFloor | None = None,
) -> SignedModelIdentity | None:
    """The one check of an update's origin, identity and order; raises SignatureRejected naming what failed.

    With `public_key`: the payload signature, the signed identity's signature over its canonical bytes,
    that the identity names this update (model id, version, tier digest = the payload's) and this
    device (use case, `line_id` unless None), then its order against `floor` (the highest version the
    device accepted, persisted across restarts) and `running`:
    - a newer version is accepted; the same version too, unless a rollback took the device back from it;
    - an older one only with the update's signed rollback (schemas/signed_model.RollbackAuthorization,
      checked here: signature, this model/version/use case/line, the deployment the update carries and
      the device runs, issued after the last rollback the device accepted);
    - or as the fleet's automatic restore after a failed wave (cloud/fleet/rollback.py, which holds no
      key): exactly `previous`, the model this device verified and ran just before, under the id of
      the deployment it runs. `previous` lives in memory only, so after a restart every downgrade
      needs the signed rollback.
    Without a key an identity or rollback the update carries is still matched (it cannot be trusted,
    only be consistent) and nothing is ordered: such a device accepts whatever its broker delivers.
    """
    if public_key is None:
        if update.identity is not None:
            _match_identity(update.identity.document, update, payload_sha256_hex, use_case, line_id)
        if update.rollback is not None:
            _match_rollback(update.rollback.document, update, use_case, line_id)
        return None
    verify_payload_signature(payload_sha256_hex, update.signature, public_key)
    document = verify_identity_signature(update.identity, public_key, what=f"update {update.model_id} {update.version}")
    _match_identity(document, update, payload_sha256_hex, use_case, line_id)
    if update.rollback is not None:
        _verify_rollback_document(update, public_key, use_case, line_id)
    problem = order_problem(update, payload_sha256_hex, running, previous, floor)
    if problem is None:
        return document  # in order (a rollback it may carry is not needed)
    if update.rollback is None:
        raise SignatureRejected(problem)
    refusal = rollback_refusal(update.rollback.document, running, floor)
    if refusal is not None:
        raise SignatureRejected(refusal)
    return document


def verify_identity_signature(
    identity: SignedIdentity | None, public_key: Ed25519PublicKey, *, what: str
) -> SignedModelIdentity:
    if identity is None:
        raise SignatureRejected(
            f"{what} carries no signed identity: this device requires one signed by key {_key_b64(public_key)}"
        )
    try:
        public_key.verify(base64.b64decode(identity.signature), IDENTITY_CONTEXT + identity.document.canonical_bytes())
    except InvalidSignature:
        raise SignatureRejected(
            f"signed identity of {what} does not verify with the configured key {_key_b64(public_key)} "
            f"(signed by another key, or the document was changed)"
        ) from None
    return identity.document


def _match_identity(
    document: SignedModelIdentity, update: ModelUpdate, digest: str, use_case: str, line_id: str | None
) -> None:
    problems = identity_problems(document, update, digest, use_case, line_id)
    if problems:
        raise SignatureRejected(f"signed identity does not match: {'; '.join(problems)}")


# --- signed rollbacks (schemas/signed_model.RollbackAuthorization) ---------------------------------

ROLLBACK_CONTEXT = b"edgeloop-model-rollback:v1\n"


def sign_rollback(document: RollbackAuthorization, private_key: Ed25519PrivateKey) -> SignedRollback:
    signature = private_key.sign(ROLLBACK_CONTEXT + document.canonical_bytes())
    return SignedRollback(document=document, signature=base64.b64encode(signature).decode())


def _verify_rollback_document(
    update: ModelUpdate, public_key: Ed25519PublicKey, use_case: str, line_id: str | None
) -> None:
    rollback = update.rollback
    document = rollback.document
    try:
        public_key.verify(base64.b64decode(rollback.signature), ROLLBACK_CONTEXT + document.canonical_bytes())
    except InvalidSignature:
        raise SignatureRejected(
            f"signed rollback of deployment {document.rolls_back_deployment_id!r} does not verify with the "
            f"configured key {_key_b64(public_key)} (signed by another key, or the document was changed)"
        ) from None
    _match_rollback(document, update, use_case, line_id)


def _match_rollback(document: RollbackAuthorization, update: ModelUpdate, use_case: str, line_id: str | None) -> None:
    problems = rollback_problems(document, update, use_case, line_id)
    if problems:
        raise SignatureRejected(f"signed rollback does not match: {'; '.join(problems)}")
