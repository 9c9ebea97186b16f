"""A line's training examples in the data bucket, rewritten by the metric packer (cloud/packing/incremental.py):

- packs/line=<line>/examples.parquet: one row per labeled metric pack (the metadata columns, then the
  use case's features). The label review reads it to leave out windows that have a measured label.
- packs/line=<line>/unlabeled.parquet: the packs whose label window held too sparse a measurement
  (label NaN), which the review queue scores.

Each file's Parquet metadata (RUNS_METADATA) records, per run it holds, the signature of what the run
was packed from and the run's pack counts: the packer re-packs only runs whose signature changed,
and a run counts as packed only when both files agree on it (so two packers racing on one line
cannot leave it half written). examples.parquet is replaced only if it is still the version read
(IfMatch / IfNoneMatch); the loser re-reads and packs again.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from edgeloop.cloud import s3
from edgeloop.cloud.aws import client
from edgeloop.schemas import names

RUNS_METADATA = b"edgeloop.runs"
_PARQUET = "application/vnd.apache.parquet"
# 412: changed (or appeared) since read; 409: a concurrent conditional write; NoSuchKey: deleted since read
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409", "NoSuchKey", "404"}


def examples_key(line_id: str) -> str:
    return f"{names.PACKS_PREFIX}/line={line_id}/examples.parquet"


def unlabeled_key(line_id: str) -> str:
    return f"{names.PACKS_PREFIX}/line={line_id}/unlabeled.parquet"


@dataclass(frozen=True)
class StoredPacks:
    """One packs file as read: its rows, what it records per run, and the ETag a rewrite must match."""

    frame: pd.DataFrame | None  # None: the file does not exist
    runs: dict[str, dict] = field(default_factory=dict)  # run_id -> {"signature": str, "stats": {...}}
    etag: str | None = None


def read_packs(bucket: str, key: str) -> StoredPacks:
    try:
        response = client("s3").get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in {"NoSuchKey", "404"}:
            return StoredPacks(frame=None)
        raise
    table = pq.read_table(io.BytesIO(response["Body"].read()))
    raw_runs = (table.schema.metadata or {}).get(RUNS_METADATA)
    runs = json.loads(raw_runs) if raw_runs else {}
    return StoredPacks(frame=table.to_pandas(), runs=runs, etag=response["ETag"])


def write_packs(
    bucket: str,
    key: str,
    frame: pd.DataFrame,
    runs: dict[str, dict],
    *,
    etag: str | None = None,
    conditional: bool = False,
) -> bool:
    """Write a packs file recording `runs`; with `conditional`, only if it is still the version read
    (`etag`; None: still absent). False when another writer got there first."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), RUNS_METADATA: json.dumps(runs).encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    condition = {} if not conditional else ({"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"})
    try:
        client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue(), ContentType=_PARQUET, **condition)
    except ClientError as exc:
        if conditional and exc.response["Error"]["Code"] in _LOST_RACE:
            return False
        raise
    return True


def put_examples(bucket: str, line_id: str, examples: pd.DataFrame) -> str:
    """Write the line's examples table as Parquet, recording no runs (the next packer run re-packs
    them all); returns the object key."""
    write_packs(bucket, examples_key(line_id), examples, {})
    return examples_key(line_id)


def get_examples(bucket: str, line_id: str) -> pd.DataFrame:
    """The line's examples table."""
    return pq.read_table(io.BytesIO(s3.get_bytes(bucket, examples_key(line_id)))).to_pandas()
