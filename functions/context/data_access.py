"""Where the context function reads and writes: intervals, 1-minute slices and quarantine records.

Intervals stay where the metric packer reads them (context/line=<id>/intervals.jsonl, see
metric_packer.data_access). Slices live at context_slices/line=<id>/slices.parquet: one object
per line under a fixed name, so a rebuild replaces it in one PUT and a table over the prefix
never sees two versions.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.cloud import s3
from edgeloop.functions.metric_packer.data_access import get_context_intervals, upsert_context_intervals
from edgeloop.schemas import ContextInterval, names


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


def store_intervals(bucket: str, line_id: str, intervals: list[ContextInterval]) -> list[ContextInterval]:
    """Add the intervals to the line's, replacing stored ones with the same (kind, interval_id);
    returns every interval the line has now."""
    return upsert_context_intervals(bucket, line_id, intervals)


def stored_intervals(bucket: str, line_id: str) -> list[ContextInterval]:
    return get_context_intervals(bucket, line_id)
