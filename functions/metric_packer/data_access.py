"""Context intervals and training examples of a line, in the data bucket.

Intervals live at context/line=<line>/intervals.jsonl, one ContextInterval JSON per line: small,
appended to by people and tools, and readable without pandas.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

from pydantic import ValidationError

from edgeloop.cloud import s3
from edgeloop.schemas import ContextInterval, names


def context_key(line_id: str) -> str:
    return f"{names.CONTEXT_PREFIX}/line={line_id}/intervals.jsonl"


def examples_key(line_id: str) -> str:
    return f"{names.PACKS_PREFIX}/line={line_id}/examples.parquet"


def put_context_intervals(bucket: str, line_id: str, intervals: Iterable[ContextInterval]) -> str:
    """Replace the line's intervals with `intervals` (sorted by start); returns the object key."""
    intervals = _in_order(intervals)
    for interval in intervals:
        if interval.line_id != line_id:
            raise ValueError(
                f"interval {interval.interval_id!r} has line_id={interval.line_id!r}, "
                f"not the line {line_id!r} it is being stored under"
            )
    body = "".join(interval.model_dump_json() + "\n" for interval in intervals).encode()
    key = context_key(line_id)
    s3.put_bytes(bucket, key, body, content_type="application/x-ndjson")
    return key


def upsert_context_intervals(bucket: str, line_id: str, intervals: Iterable[ContextInterval]) -> list[ContextInterval]:
    """Add intervals, replacing stored ones with the same (kind, interval_id); returns all stored now."""
    merged = {(i.kind, i.interval_id): i for i in get_context_intervals(bucket, line_id)}
    merged.update({(i.kind, i.interval_id): i for i in intervals})
    put_context_intervals(bucket, line_id, merged.values())
    return _in_order(merged.values())


def _in_order(intervals: Iterable[ContextInterval]) -> list[ContextInterval]:
    return sorted(intervals, key=lambda i: (i.start, i.kind.value, i.interval_id))


def get_context_intervals(bucket: str, line_id: str) -> list[ContextInterval]:
    """The line's intervals ([] when none were stored); a malformed line raises naming it."""
    key = context_key(line_id)
    body = s3.get_bytes_or_none(bucket, key)
    if body is None:
        return []
    intervals = []
    for number, text in enumerate(body.decode().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            intervals.append(ContextInterval.model_validate_json(text))
        except ValidationError as exc:
            raise ValueError(f"s3://{bucket}/{key} line {number} is not a ContextInterval: {exc}") from exc
    return intervals


def put_examples(bucket: str, line_id: str, examples) -> str:
    """Write the line's examples table (a pandas DataFrame) as Parquet; returns the object key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(examples, preserve_index=False), buffer, compression="zstd")
    key = examples_key(line_id)
    s3.put_bytes(bucket, key, buffer.getvalue(), content_type="application/vnd.apache.parquet")
    return key


def get_examples(bucket: str, line_id: str):
    """The line's examples table as a pandas DataFrame."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(s3.get_bytes(bucket, examples_key(line_id)))).to_pandas()
