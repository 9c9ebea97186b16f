"""A line's training examples in the data bucket: packs/line=<line>/examples.parquet.

One row per labeled metric pack (the metadata columns, then the use case's features), rewritten
whole by the metric packer each time the line's curated data changes (cloud/packing/examples.py
builds it). The label review reads it to leave out windows that have a measured label.
"""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.cloud import s3
from edgeloop.schemas import names


def examples_key(line_id: str) -> str:
    return f"{names.PACKS_PREFIX}/line={line_id}/examples.parquet"


def put_examples(bucket: str, line_id: str, examples: pd.DataFrame) -> str:
    """Write the line's examples table as Parquet; returns the object key."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(examples, preserve_index=False), buffer, compression="zstd")
    key = examples_key(line_id)
    s3.put_bytes(bucket, key, buffer.getvalue(), content_type="application/vnd.apache.parquet")
    return key


def get_examples(bucket: str, line_id: str) -> pd.DataFrame:
    """The line's examples table."""
    return pq.read_table(io.BytesIO(s3.get_bytes(bucket, examples_key(line_id)))).to_pandas()
