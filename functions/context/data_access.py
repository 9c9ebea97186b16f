"""Where the context function writes: 1-minute slices and quarantine records.

The intervals themselves are stored with cloud/datalake/context.py, where the metric packer and
the dataset step read them. Slices live at context_slices/line=<id>/slices.parquet: one object per
line under a fixed name, so a rebuild replaces it in one PUT and a table over the prefix never
sees two versions.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.cloud import s3
from edgeloop.schemas import names


def slices_key(line_id: str) -> str:
    return f"{names.CONTEXT_SLICES_PREFIX}/line={line_id}/slices.parquet"


def put_slices(bucket: str, line_id: str, table: pa.Table) -> str:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    key = slices_key(line_id)
    s3.put_bytes(bucket, key, buffer.getvalue(), content_type="application/vnd.apache.parquet")
    return key


def get_slices(bucket: str, line_id: str) -> pa.Table:
    return pq.read_table(io.BytesIO(s3.get_bytes(bucket, slices_key(line_id))))


def put_quarantine(bucket: str, key: str, body: bytes) -> None:
    s3.put_bytes(bucket, key, body, content_type="application/json")
