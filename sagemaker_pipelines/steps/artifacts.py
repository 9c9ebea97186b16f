"""A model version's artifacts in the model bucket: where they live, putting them there, reading one back.

models/<model_id>/<version>/<precision>.npz holds one tier's weight-only payload; manifest.json beside
them is the ModelManifest that lists them (cloud.model_registry.load_manifest reads it back).
"""

from __future__ import annotations

from collections.abc import Mapping

from edgeloop.cloud import aws, s3
from edgeloop.schemas import names
from edgeloop.schemas.common import s3_uri, split_s3_uri
from edgeloop.schemas.model import CompatibilityTier, ModelManifest, Precision


def payload_key(model_id: str, version: str, precision: Precision) -> str:
    return f"{names.MODELS_PREFIX}/{model_id}/{version}/{Precision(precision).value}.npz"


def manifest_key(model_id: str, version: str) -> str:
    return f"{names.MODELS_PREFIX}/{model_id}/{version}/manifest.json"


def upload_artifacts(manifest: ModelManifest, payloads: Mapping[Precision, bytes], model_bucket: str) -> str:
    """Every tier's payload, then the manifest; returns the manifest's s3:// URI.

    Payloads first, manifest last: a manifest never points at a payload that is not there yet."""
    client = aws.client("s3")
    for tier in manifest.tiers:
        client.put_object(
            Bucket=model_bucket,
            Key=tier.payload_key,
            Body=payloads[tier.precision],
            ContentType="application/octet-stream",
            Metadata={"sha256": tier.sha256},
        )
    key = manifest_key(manifest.model_id, manifest.version)
    s3.put_bytes(model_bucket, key, manifest.model_dump_json(indent=2).encode(), content_type="application/json")
    return s3_uri(model_bucket, key)


def read_payload(manifest_uri: str, tier: CompatibilityTier) -> bytes:
    """A tier's payload, from the bucket its manifest is in."""
    bucket, _ = split_s3_uri(manifest_uri, what="manifest uri")
    return s3.get_bytes(bucket, tier.payload_key)
