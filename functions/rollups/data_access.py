"""Curated parts in, rollup Parquet out: the S3 side of the rollups (Arrow tables only).

Rollups live at rollups/res=<1m|5m|1h|1d>/line=<id>/month=YYYY-MM/rollups.parquet. One object per
(resolution, line, event month) under a fixed name, so a rebuild overwrites it in one PUT and a
reader never sees two overlapping copies (which, unlike curated rows, could not be de-duplicated).
"""

from __future__ import annotations

import io
import re

import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.curated import dedupe_and_sort
from edgeloop.cloud.datalake.rollups import SAMPLE_COLUMNS
from edgeloop.schemas import names

_CURATED_PART = re.compile(r"/event_date=(\d{4}-\d{2})-\d{2}/[^/]+\.parquet$")
_ROLLUP_MONTH = re.compile(r"/month=(\d{4}-\d{2})/rollups\.parquet$")


def curated_parts_by_month(bucket: str, line_id: str) -> dict[str, dict[str, list[str]]]:
    """month -> event day prefix -> the Parquet part keys of that day, for one line."""
    months: dict[str, dict[str, list[str]]] = {}
    for key in s3.list_keys(bucket, f"{names.CURATED_PREFIX}/line={line_id}/"):
        match = _CURATED_PART.search(key)
        if match:
            day_prefix = key.rsplit("/", 1)[0]
            months.setdefault(match.group(1), {}).setdefault(day_prefix, []).append(key)
    return months


def read_curated_day(bucket: str, part_keys: list[str]) -> pa.Table:
    """One event day's samples (metric as dictionary, time_ms, value), free of duplicates.

    A day normally has one part, already de-duplicated and sorted by compaction. Two parts mean a
    compaction crashed between writing and deleting; they overlap, so they are merged the way
    curated readers do (cloud/datalake/curated.py).
    """
    tables = [_read_parquet(bucket, key) for key in part_keys]
    if len(tables) == 1:
        return tables[0].select(list(SAMPLE_COLUMNS))
    merged = dedupe_and_sort(pa.concat_tables(tables, promote_options="permissive").to_pandas())
    return pa.Table.from_pandas(merged[list(SAMPLE_COLUMNS)], preserve_index=False)


def _read_parquet(bucket: str, key: str) -> pa.Table:
    return read_parquet_whole(io.BytesIO(s3.get_bytes(bucket, key)))


def read_parquet_whole(source, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file with one chunk per row group: read_table splits row groups into batches,
    which the rollups would then have to concatenate (a copy of every column)."""
    return pq.ParquetFile(source, read_dictionary=["metric"]).read(columns=columns, use_threads=False)


def rollup_key(resolution: str, line_id: str, month: str) -> str:
    return f"{rollup_prefix(resolution, line_id)}month={month}/rollups.parquet"


def rollup_prefix(resolution: str, line_id: str) -> str:
    return f"{names.ROLLUPS_PREFIX}/res={resolution}/line={line_id}/"


def put_rollup_table(bucket: str, resolution: str, line_id: str, month: str, table: pa.Table) -> str:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    key = rollup_key(resolution, line_id, month)
    s3.put_bytes(bucket, key, buffer.getvalue(), content_type="application/vnd.apache.parquet")
    return key


def rollup_month_keys(bucket: str, resolution: str, line_id: str) -> dict[str, str]:
    """month -> key of the stored rollups of one resolution and line."""
    keys = {}
    for key in s3.list_keys(bucket, rollup_prefix(resolution, line_id)):
        match = _ROLLUP_MONTH.search(key)
        if match:
            keys[match.group(1)] = key
    return keys


def get_rollup_table(bucket: str, key: str) -> pa.Table:
    return _read_parquet(bucket, key)


def delete_keys(bucket: str, keys: list[str]) -> None:
    if keys:
        s3.delete_keys(bucket, keys)
