"""The Ed25519 key the register step signs payloads with: a PEM given directly, or a Secrets Manager secret.

Without either the payloads go out unsigned, and the registry records that (lineage.SIGNED_METADATA_KEY).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from botocore.exceptions import ClientError

from edgeloop.cloud import aws
from edgeloop.model_runtime.signing import Ed25519PrivateKey, load_private_key
from edgeloop.schemas import names

from .lineage import SIGNED_METADATA_KEY

# A complete Secrets Manager secret ARN, with the 6-character suffix AWS appends to the name: the
# pipeline role may read exactly this ARN (cdk/constructs/training.py), and the register step reads it.
SECRET_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$")


class SigningKeyUnavailable(ValueError):
    """The configured signing-key secret cannot be read or does not hold an Ed25519 PEM private key."""


def check_secret_arn(secret_arn: str, *, error: type[ValueError] = ValueError) -> None:
    """Refuse anything but a complete secret ARN (the pipeline's targets and the step check the same)."""
    if not SECRET_ARN_PATTERN.match(secret_arn):
        raise error(
            f"signing_key_secret_arn={secret_arn!r} is not a Secrets Manager secret ARN "
            "(arn:aws:secretsmanager:<region>:<account>:secret:<name>-<suffix>)"
        )


def signing_key_for(source: str | Path | None, secret_arn: str | None = None) -> Ed25519PrivateKey | None:
    """The key payloads are signed with: an explicit key (PEM path or text) wins over a Secrets Manager
    secret. Without either the payloads go out unsigned: the gateways decide (one configured with a
    public key refuses them), so that is said loudly."""
    if source:
        if secret_arn:
            _warn(f"--signing-key is given: the signing key secret {secret_arn} is not read")
        return load_private_key(source)
    if secret_arn:
        return signing_key_from_secret(secret_arn)
    _warn(
        f"no signing key (--signing-key / ${names.MODEL_SIGNING_KEY_ENV} or --signing-key-secret-arn / "
        f"${names.MODEL_SIGNING_KEY_SECRET_ARN_ENV}): registering UNSIGNED payloads "
        f"(metadata {SIGNED_METADATA_KEY}=false), which gateways configured with a public key will reject"
    )
    return None


def signing_key_from_secret(secret_arn: str) -> Ed25519PrivateKey:
    """The Ed25519 private key held as PEM text in a secret's SecretString. Errors name the ARN, never
    the secret's content."""
    check_secret_arn(secret_arn, error=SigningKeyUnavailable)
    try:
        response = aws.client("secretsmanager").get_secret_value(SecretId=secret_arn)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SigningKeyUnavailable(
            f"signing_key_secret_arn={secret_arn!r} cannot be read: {error.get('Code')}: {error.get('Message')}"
        ) from None
    pem = response.get("SecretString")
    if not pem:
        raise SigningKeyUnavailable(
            f"signing_key_secret_arn={secret_arn!r} has no SecretString (a binary secret?): "
            "store the PKCS#8 PEM private key as the secret's text"
        )
    if "-----BEGIN" not in pem:
        raise SigningKeyUnavailable(
            f"signing_key_secret_arn={secret_arn!r}: its SecretString is not PEM text (no '-----BEGIN' line)"
        )
    try:
        # bytes, never str: a str without a PEM header would be taken for a file path
        return load_private_key(pem.encode())
    except ValueError as exc:
        raise SigningKeyUnavailable(f"signing_key_secret_arn={secret_arn!r}: {exc}") from None


def _warn(message: str) -> None:
    # stderr is the processing job's CloudWatch log stream
    print(f"warning: {message}", file=sys.stderr)
