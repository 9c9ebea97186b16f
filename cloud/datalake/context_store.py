"""The context path's storage: a line's intervals upserted, and its 1-minute slices rebuilt from them.

    built = store_context_intervals(bucket, line_id, intervals)   # upsert, then rebuild the slices

Shared by the context function (functions/context: gateways' context messages) and `edgeloop
backfill` (edgeloop/backfill/: the context block of a recording's mapping), so intervals from either
are stored one way: every interval meets `strict_interval` (the rule the context function checks
each message's items against), the intervals are upserted by (kind, interval_id) with
cloud/datalake/context.py, and the line's slices are rebuilt from all its intervals (the sweep and
quantization: context.py).

Slices live at context_slices/line=<id>/slices.parquet: one object per line under a fixed name, so
a rebuild replaces it in one PUT and a table over the prefix never sees two versions.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.context import (
    context_columns,
    get_context_intervals,
    quantize,
    sub_intervals,
    upsert_context_intervals,
)
from edgeloop.cloud.datalake.rollups import bucket_width_ms
from edgeloop.schemas import ContextInterval, names
from edgeloop.schemas.common import IDENTIFIER

SLICE_RESOLUTION = "1m"  # the slices join 1-minute rollups


@dataclass
class SlicesBuilt:
    line_id: str
    intervals: int
    sub_intervals: int
    slices: int  # rows of quantize(): runs of whole 1-minute slices with one context
    minutes: int  # 1-minute slices covered
    key: str


def store_context_intervals(bucket: str, line_id: str, intervals: Iterable[ContextInterval]) -> SlicesBuilt:
    """Upsert `intervals` into the line's stored ones (same (kind, interval_id): replaced), then
    rebuild the line's slices from all of them."""
    stored = upsert_context_intervals(bucket, line_id, intervals)
    return rebuild_slices(bucket, line_id, intervals=stored)


def rebuild_slices(bucket: str, line_id: str, *, intervals: list[ContextInterval] | None = None) -> SlicesBuilt:
    """Rebuild a line's 1-minute context slices from every interval stored for it (`intervals`,
    when the caller has just stored them, else read back)."""
    if not isinstance(line_id, str) or not IDENTIFIER.match(line_id):
        raise ValueError(f"line_id={line_id!r} is not a line id ({IDENTIFIER.pattern})")
    if intervals is None:
        intervals = get_context_intervals(bucket, line_id)
    subs = sub_intervals(intervals, line_id)
    slices = quantize(subs, SLICE_RESOLUTION)
    key = put_slices(bucket, line_id, slices_table(slices))
    width = bucket_width_ms(SLICE_RESOLUTION)
    minutes = int(((slices["slice_end_ms"] - slices["slice_start_ms"]) // width).sum())
    return SlicesBuilt(line_id, len(intervals), len(subs), len(slices), minutes, key)


def slices_schema() -> pa.Schema:
    """quantize()'s columns with pinned types, so a line without context writes typed empty columns."""
    fields = [pa.field("slice_start_ms", pa.int64()), pa.field("slice_end_ms", pa.int64())]
    for column in context_columns():
        fields.append(pa.field(column, pa.float64() if column in ("spec_lower", "spec_upper") else pa.string()))
    return pa.schema(fields)


def slices_table(slices: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(slices, schema=slices_schema(), preserve_index=False)


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


# What str.splitlines() breaks at and JSON leaves unescaped: the stored intervals are JSON lines.
_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")


def strict_interval(item: Any) -> ContextInterval:
    """One interval as JSON validates it strictly: numbers must be JSON numbers, times ISO strings,
    and its strings one line each (a context value is a product code, a state or shift name).

    (Strict validation of the parsed Python objects would refuse every ISO time and kind string;
    re-encoding a bounded item costs microseconds.)"""
    interval = ContextInterval.model_validate_json(json.dumps(item), strict=True)
    strings = {"interval_id": interval.interval_id, "value": interval.value}
    if interval.spec is not None:
        strings["spec.target_metric"] = interval.spec.target_metric
    for name, text in strings.items():
        if _LINE_BREAKS.search(text):
            raise ValidationError.from_exception_data(
                "ContextInterval",
                [
                    {
                        "type": "value_error",
                        "loc": tuple(name.split(".")),
                        "input": text,
                        "ctx": {"error": "holds a line break (U+0085, U+2028 or U+2029): context strings are one line"},
                    }
                ],
            )
    return interval
