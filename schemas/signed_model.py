"""The signed identity of a model version: what the register step signs and every device verifies.

An Ed25519 signature over a payload's digest alone says "this key produced these bytes", not "for
which line, use case and version": a device would accept an older signed model after a newer one,
or another line's. The register step therefore signs this document once per model version (the
cloud's fleet never holds the key), every ModelUpdate of that version carries it, and the device
checks, with one function (model_runtime.signing.verify_signed_update), that the signature holds
over `canonical_bytes()` and that the document names the update's model, version, tier digest and
the device's own line and use case. Ordering comes from `version` (MAJOR.MINOR.PATCH, the registry's
next_version) with `issued_at_ms` recorded as the registration time.

Why the identity is signed at registration and the deployment is not in it: the key stays with the
register step (a Secrets Manager secret or a file, never the orchestrator or any fleet function), so
nothing that creates deployments can sign; and a model version is registered once but may reach a
device under several deployments. The deployment id an update carries is therefore unsigned, and
the device never lets it unlock anything on its own: going back to an older version than the highest
it accepted takes a RollbackAuthorization, the second document here, which the key holder signs with
the same key (`edgeloop models rollback`). It names the deployment it rolls back, the version that
deployment delivered and the version to go back to, for one use case and line; the device accepts
it only for the deployment it runs and only if issued after the last rollback it accepted, so it
binds the deployment id and cannot be replayed (model_runtime.signing.verify_signed_update checks
both documents).
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field, model_validator

from .common import Contract, Identifier, SemVer, Sha256Hex, semver_key

IDENTITY_FORMAT = "edgeloop-model-identity/v1"
ROLLBACK_FORMAT = "edgeloop-model-rollback/v1"
# base64 of a 64-byte Ed25519 signature (model.py's payload signatures have the same form)
IdentitySignatureB64 = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{86}==$")]


class SignedModelIdentity(Contract):
    """One model version's identity: signed as `canonical_bytes()`, never as its pretty JSON."""

    format: str = Field(default=IDENTITY_FORMAT, pattern=r"^edgeloop-model-identity/v1$")
    model_id: str = Field(min_length=1)
    use_case: Identifier
    line_ids: list[Identifier] = Field(min_length=1)
    version: SemVer
    payload_sha256: dict[str, Sha256Hex] = Field(min_length=1, description="per tier (Precision value): its digest")
    issued_at_ms: int = Field(ge=0, description="registration time, ms since the epoch")

    def canonical_bytes(self) -> bytes:
        """Sorted-key compact JSON: the same document always gives the same bytes."""
        return canonical_json(self)


def canonical_json(document: Contract) -> bytes:
    """What is signed of a document: sorted-key compact JSON of its JSON dump."""
    return json.dumps(document.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


class SignedIdentity(Contract):
    """The document and the base64 Ed25519 signature of IDENTITY_CONTEXT + its canonical bytes."""

    document: SignedModelIdentity
    signature: IdentitySignatureB64


class RollbackAuthorization(Contract):
    """The key holder's permission for the devices of one deployment to go back to an older version.

    Signed as `canonical_bytes()` with the identity's key (model_runtime.signing.ROLLBACK_CONTEXT
    keeps the two kinds of signature apart); carried by the ModelUpdate of `to_version`, whose own
    SignedIdentity binds that version to its payload digests.
    """

    format: str = Field(default=ROLLBACK_FORMAT, pattern=r"^edgeloop-model-rollback/v1$")
    model_id: str = Field(min_length=1, description="the model gone back to (the update's model_id)")
    use_case: Identifier
    line_id: Identifier
    to_version: SemVer = Field(description="the version to go back to (the update's version)")
    rolls_back_deployment_id: str = Field(
        min_length=1, description="the deployment rolled back: the update carries this id, the device must run it"
    )
    rolls_back_version: SemVer = Field(description="the version that deployment delivered (newer than to_version)")
    issued_at_ms: int = Field(
        ge=0, description="signing time, ms since the epoch: a device accepts only rollbacks newer than its last one"
    )

    @model_validator(mode="after")
    def _goes_back(self) -> RollbackAuthorization:
        if semver_key(self.to_version) >= semver_key(self.rolls_back_version):
            raise ValueError(
                f"to_version={self.to_version} is not older than rolls_back_version={self.rolls_back_version}"
            )
        return self

    def canonical_bytes(self) -> bytes:
        return canonical_json(self)


class SignedRollback(Contract):
    """The document and the base64 Ed25519 signature of ROLLBACK_CONTEXT + its canonical bytes."""

    document: RollbackAuthorization
    signature: IdentitySignatureB64
