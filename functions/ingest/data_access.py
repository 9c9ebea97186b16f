"""What ingest writes: raw objects (create-once) and quarantine records in the data bucket."""

from __future__ import annotations

from typing import Protocol

from edgeloop.cloud import s3


class IngestStore(Protocol):
    def put_raw_if_absent(self, key: str, body: bytes) -> bool:
        """Write the raw object unless the key exists; False means a duplicate delivery."""

    def put_quarantine(self, key: str, body: bytes) -> None: ...


class S3IngestStore:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    def put_raw_if_absent(self, key: str, body: bytes) -> bool:
        # Conditional create (If-None-Match: *): a re-delivered batch maps to the same key and
        # loses the race instead of overwriting, so it is counted as a duplicate.
        return s3.put_bytes_if_absent(self.bucket, key, body, content_type="application/gzip")

    def put_quarantine(self, key: str, body: bytes) -> None:
        s3.put_bytes(self.bucket, key, body, content_type="application/json")
