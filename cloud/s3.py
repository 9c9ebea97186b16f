"""Small S3 helpers shared by the data-path functions (no pandas/numpy: ingest imports this)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from botocore.exceptions import ClientError

from .aws import client

# S3 answers 412 when IfNoneMatch="*" finds the key, and 409 when a concurrent conditional
# write to the same key is still in flight; both mean "someone else wrote this object".
_ALREADY_WRITTEN = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def list_keys(bucket: str, prefix: str) -> Iterator[str]:
    paginator = client("s3").get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"]


def get_bytes(bucket: str, key: str) -> bytes:
    return client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def get_bytes_or_none(bucket: str, key: str) -> bytes | None:
    try:
        return get_bytes(bucket, key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in {"NoSuchKey", "404"}:
            return None
        raise


def put_bytes(bucket: str, key: str, body: bytes, *, content_type: str = "application/octet-stream") -> None:
    client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def put_bytes_if_absent(
    bucket: str,
    key: str,
    body: bytes,
    *,
    content_type: str = "application/octet-stream",
    content_encoding: str | None = None,
) -> bool:
    """Create `key` only if it does not exist yet; False when it already did (an idempotent retry)."""
    extra = {"ContentEncoding": content_encoding} if content_encoding else {}
    try:
        client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*", **extra)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in _ALREADY_WRITTEN:
            return False
        raise
    return True


def delete_keys(bucket: str, keys: Iterable[str]) -> None:
    keys = list(keys)
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
        chunk = [{"Key": key} for key in keys[start : start + 1000]]
        client("s3").delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
