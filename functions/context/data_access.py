"""Where the context function writes its quarantine records.

The intervals and the 1-minute slices are stored with cloud/datalake/context_store.py (shared with
`edgeloop backfill`); the metric packer and the dataset step read them there.
"""

from __future__ import annotations

from edgeloop.cloud import s3


def put_quarantine(bucket: str, key: str, body: bytes) -> None:
    s3.put_bytes(bucket, key, body, content_type="application/json")
