"""The signed identity of a model version: what the register step signs and every device verifies.

An Ed25519 signature over a payload's digest alone says "this key produced these bytes", not "for
which line, use case and version": a device would accept an older signed model after a newer one,
or another line's. The register step therefore signs this document once per model version (the
cloud's fleet never holds the key), every ModelUpdate of that version carries it, and the device
checks, with one function (model_runtime.signing.verify_signed_update), that the signature holds
over `canonical_bytes()` and that the document names the update's model, version, tier digest and
the device's own line and use case. Ordering comes from `version` (MAJOR.MINOR.PATCH, the registry's
next_version) with `issued_at_ms` recorded as the registration time.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field

from .common import Contract, Identifier, SemVer, Sha256Hex

IDENTITY_FORMAT = "edgeloop-model-identity/v1"
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
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


class SignedIdentity(Contract):
    """The document and the base64 Ed25519 signature of IDENTITY_CONTEXT + its canonical bytes."""

    document: SignedModelIdentity
    signature: IdentitySignatureB64
