"""Backfill's storage: what `edgeloop backfill` (edgeloop/backfill/) writes, in the lake's own formats.

- Curated rows (`curated_rows`, `write_partition`): one Parquet part per (line, event date) with
  compaction's format (curated.curated_parquet_bytes, the part-<sha>.parquet naming) instead of raw
  JSON batches for compaction to fold: gzip JSON of ~20 M samples and compaction's pandas merge
  would take minutes, the direct write takes seconds (`make bench-onboarding`). A day's rows come in
  curated order (metric, time) and are de-duplicated like compaction does (first copy of a (thing,
  seq) wins), so a partition nobody wrote yet takes the part as it is; a partition that already
  holds parts goes through compaction's own merge (curated.merge_partition: old and new rows,
  de-duplicated, one new part, old parts deleted).
- Exactly once: a backfilled reading's seq is derived from (metric, event time) (raw.backfill_seq),
  so a re-run, an overlapping or a corrected file stores each reading once.
- The recording as received (`put_recording`), under raw_backfill/ (not raw/: the hot path would
  copy history into Timestream), beside its lineage (raw.BackfillLineage); see raw.py.

Reading recordings with a mapping, validation, quarantine and the lineage's commit are the
command's (edgeloop/backfill/): they need the device shims' readers.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from botocore.exceptions import ClientError

from edgeloop.cloud import s3
from edgeloop.cloud.aws import client
from edgeloop.cloud.datalake.curated import (
    CURATED_SCHEMA,
    curated_parquet_bytes,
    merge_partition,
    partition_prefix,
    read_parts,
)
from edgeloop.cloud.datalake.raw import BACKFILL_SEQ_BASE, BACKFILL_SLOT_BITS
from edgeloop.schemas import names

DAY_MS = 86_400_000


def curated_rows(
    thing_name: str,
    line_id: str,
    metrics: list[str],
    slots: np.ndarray,
    code: np.ndarray,
    time_ms: np.ndarray,
    value: np.ndarray,
    received_at_ms: int,
) -> pa.Table:
    """Samples (metric code into `metrics`, time, value; in curated order) as curated rows
    (CURATED_SCHEMA, strings dictionary-encoded), a repeated (metric, time) kept once (its first
    copy), as compaction's de-duplication does. `slots`: raw.backfill_slot of each metric."""
    if len(code) > 1:
        repeat = (code[1:] == code[:-1]) & (time_ms[1:] == time_ms[:-1])
        if repeat.any():
            first = np.concatenate([[True], ~repeat])
            code, time_ms, value = code[first], time_ms[first], value[first]
    seq = BACKFILL_SEQ_BASE + (time_ms << BACKFILL_SLOT_BITS) + slots[code]
    n = len(code)
    zeros = np.zeros(n, dtype=np.int32)
    return pa.table(
        {
            "thing_name": pa.DictionaryArray.from_arrays(zeros, pa.array([thing_name])),
            "line_id": pa.DictionaryArray.from_arrays(zeros, pa.array([line_id])),
            "metric": pa.DictionaryArray.from_arrays(code, pa.array(metrics)),
            "time_ms": time_ms,
            "value": value,
            "seq": seq,
            "ingest_time_ms": np.full(n, received_at_ms, dtype=np.int64),
        }
    )


def partitions_with_parts(bucket: str, line_id: str) -> set[str]:
    """The line's curated partition prefixes that hold a part already."""
    root = f"{names.CURATED_PREFIX}/line={line_id}/"
    return {key.rsplit("/", 1)[0] + "/" for key in s3.list_keys(bucket, root) if key.endswith(".parquet")}


def write_partition(bucket: str, line_id: str, day: int, rows: pa.Table, existing: set[str]) -> tuple[str, int, int]:
    """(prefix, rows new to curated, rows it already held) of one UTC day (days since 1970). A
    partition nobody wrote yet (not in `existing`) takes the rows as one part; one that holds parts
    goes through compaction's merge."""
    event_date = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")
    prefix = partition_prefix(line_id, event_date)
    if prefix not in existing:
        body = curated_parquet_bytes(rows)
        key = f"{prefix}part-{hashlib.sha256(body).hexdigest()[:16]}.parquet"
        s3.put_bytes(bucket, key, body, content_type="application/vnd.apache.parquet")
        return prefix, rows.num_rows, 0
    frame = rows.cast(CURATED_SCHEMA).to_pandas()
    before = _stored_rows(bucket, prefix)
    written, _ = merge_partition(bucket, prefix, frame)
    new = written - before
    return prefix, new, rows.num_rows - new


def _stored_rows(bucket: str, prefix: str) -> int:
    keys = [k for k in s3.list_keys(bucket, prefix) if k.endswith(".parquet")]
    return len(read_parts(bucket, keys))


def put_recording(bucket: str, key: str, data: bytes, content_type: str) -> bool:
    """The recording as received, created once (s3.put_bytes_if_absent's rule); False if it was there.
    Its CRC32 is computed here, in C, and sent as a header: left to botocore, a body of this size is
    framed as aws-chunked with a trailing checksum in Python (~18 ns a byte: 3 s for a 180 MB recording)."""
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    try:
        client("s3").put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            IfNoneMatch="*",
            ChecksumCRC32=crc,
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] in s3._ALREADY_WRITTEN:
            return False
        raise
    return True
