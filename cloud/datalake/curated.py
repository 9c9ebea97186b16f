"""Curated samples: the data lake's compacted table, and the late/ store beside it.

Each curated partition `curated/line=<line>/event_date=YYYY-MM-DD/` holds Parquet parts of
CURATED_SCHEMA, sorted by (thing_name, metric, time_ms) and free of duplicate (thing_name, seq)
rows. Rows that arrived beyond the lateness SLA live in `late/line=<line>/ingest_date=YYYY-MM-DD/`
with the same columns. Compaction (functions/compaction) writes them, and `edgeloop backfill`
(edgeloop/backfill/) writes history straight into curated/, both through `merge_partition` once a
partition holds parts; a crash between its write and its delete can leave two overlapping parts, so
every reader here de-duplicates.
"""

from __future__ import annotations

import hashlib
import io
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.cloud import s3
from edgeloop.schemas import names

CURATED_SCHEMA = pa.schema(
    [
        ("thing_name", pa.string()),
        ("line_id", pa.string()),
        ("metric", pa.string()),
        ("time_ms", pa.int64()),
        ("value", pa.float64()),
        ("seq", pa.int64()),
        ("ingest_time_ms", pa.int64()),
    ]
)
SORT_KEYS = ["thing_name", "metric", "time_ms"]
_PART_KEY = re.compile(
    rf"^{names.CURATED_PREFIX}/line=[^/]+/event_date=(?P<event_date>\d{{4}}-\d{{2}}-\d{{2}})/[^/]+\.parquet$"
)
DEDUPE_KEYS = ["thing_name", "seq"]


def partition_prefix(line_id: str, event_date: str) -> str:
    return f"{names.CURATED_PREFIX}/line={line_id}/event_date={event_date}/"


def late_partition_prefix(line_id: str, ingest_date: str) -> str:
    return f"{names.LATE_PREFIX}/line={line_id}/ingest_date={ingest_date}/"


def dedupe_and_sort(rows: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated (thing_name, seq), keeping the earliest ingested copy; sort for readers."""
    rows = rows.sort_values(["ingest_time_ms", "thing_name", "seq"], kind="stable")
    rows = rows.drop_duplicates(DEDUPE_KEYS, keep="first")
    return rows.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)


# In SORT_KEYS order time_ms steps by the sample period and seq and ingest_time_ms barely move, so their
# differences pack into a few bits (DELTA_BINARY_PACKED, which Athena's Trino engine, DuckDB and Arrow
# read); dictionary-encoded, they took two thirds of a part. A part is about 3x smaller, and curated
# data is kept a year (benchmarks/bench_cost.py).
DELTA_COLUMNS = ("time_ms", "seq", "ingest_time_ms")


def curated_parquet_bytes(table: pa.Table) -> bytes:
    """A curated part as stored: CURATED_SCHEMA, zstd, DELTA_COLUMNS delta-encoded, the rest
    dictionary-encoded (read by DuckDB and Athena alike)."""
    buffer = io.BytesIO()
    pq.write_table(
        table.select(CURATED_SCHEMA.names).cast(CURATED_SCHEMA),
        buffer,
        compression="zstd",
        use_dictionary=[name for name in CURATED_SCHEMA.names if name not in DELTA_COLUMNS],
        column_encoding=dict.fromkeys(DELTA_COLUMNS, "DELTA_BINARY_PACKED"),
    )
    return buffer.getvalue()


def merge_partition(bucket: str, prefix: str, new_rows: pd.DataFrame) -> tuple[int, int]:
    """Rewrite one partition (curated or late) as old ∪ new, de-duplicated, in one new part, then delete
    the old parts; returns (rows written, duplicates dropped). Fine at demo scale; it reads the whole
    partition (see functions/compaction/logic.py)."""
    old_keys = [k for k in s3.list_keys(bucket, prefix) if k.endswith(".parquet")]
    frames = [read_curated_part(s3.get_bytes(bucket, key)) for key in old_keys]
    merged = pd.concat([*frames, new_rows], ignore_index=True)
    clean = dedupe_and_sort(merged)
    body = curated_parquet_bytes(
        pa.Table.from_pandas(clean[CURATED_SCHEMA.names], schema=CURATED_SCHEMA, preserve_index=False)
    )
    new_key = f"{prefix}part-{hashlib.sha256(body).hexdigest()[:16]}.parquet"
    s3.put_bytes(bucket, new_key, body, content_type="application/vnd.apache.parquet")
    s3.delete_keys(bucket, [k for k in old_keys if k != new_key])
    return len(clean), len(merged) - len(clean)


def read_curated_part(body: bytes) -> pd.DataFrame:
    """One stored part (curated or late) as a frame of CURATED_SCHEMA's columns."""
    table = pq.read_table(io.BytesIO(body)).select(CURATED_SCHEMA.names).cast(CURATED_SCHEMA)
    return table.to_pandas()


def empty_curated() -> pd.DataFrame:
    return CURATED_SCHEMA.empty_table().to_pandas()


def read_curated(bucket: str, line_id: str) -> pd.DataFrame:
    """Every curated row of a line, de-duplicated and sorted by (thing_name, metric, time_ms)."""
    return _read_line(bucket, names.CURATED_PREFIX, line_id)


def read_late(bucket: str, line_id: str) -> pd.DataFrame:
    """Every row of a line that arrived beyond the lateness SLA, de-duplicated and sorted like curated."""
    return _read_line(bucket, names.LATE_PREFIX, line_id)


def _read_line(bucket: str, root: str, line_id: str) -> pd.DataFrame:
    return read_parts(bucket, [k for k in s3.list_keys(bucket, f"{root}/line={line_id}/") if k.endswith(".parquet")])


def line_partitions(bucket: str, line_id: str) -> dict[str, list[str]]:
    """A line's curated part keys by event date (YYYY-MM-DD): one listing, no object read. A part's
    name is its content's digest, so a rewritten partition shows under new keys."""
    found: dict[str, list[str]] = {}
    for key in s3.list_keys(bucket, f"{names.CURATED_PREFIX}/line={line_id}/"):
        match = _PART_KEY.match(key)
        if match:
            found.setdefault(match.group("event_date"), []).append(key)
    return {event_date: sorted(keys) for event_date, keys in sorted(found.items())}


def read_parts(bucket: str, keys: list[str]) -> pd.DataFrame:
    """The rows of stored parts, de-duplicated and sorted like curated (a crash may leave two
    overlapping parts in a partition; reading through here absorbs it)."""
    if not keys:
        return empty_curated()
    frames = [read_curated_part(s3.get_bytes(bucket, key)) for key in keys]
    return dedupe_and_sort(pd.concat(frames, ignore_index=True))
