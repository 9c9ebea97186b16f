"""The review queue and auto labels of a line, in the data bucket (names.LABEL_REVIEW_PREFIX).

label_review/line=<id>/proposals.parquet holds one row per LabelProposal plus the pack's feature
columns. Reviewers (CLI) and the metric packer both rewrite it, so every write is conditional on
the ETag that was read (IfMatch) or on the object's absence (IfNoneMatch): a write that lost a race
is refused and the caller re-reads and re-applies its change, so no decision is ever overwritten.

label_review/line=<id>/auto_labels.parquet holds the confident labels of the latest packer run (the
same columns as packs/line=<id>/examples.parquet); only the packer writes it, so a plain put.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from edgeloop.cloud import s3
from edgeloop.cloud.aws import client
from edgeloop.schemas import names

_PARQUET = "application/vnd.apache.parquet"
# 412: the object changed (or appeared) since it was read; 409: a concurrent conditional write
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_LINE_KEY = re.compile(rf"^{names.LABEL_REVIEW_PREFIX}/line=([^/]+)/proposals\.parquet$")


def proposals_key(line_id: str) -> str:
    return f"{names.LABEL_REVIEW_PREFIX}/line={line_id}/proposals.parquet"


def auto_labels_key(line_id: str) -> str:
    return f"{names.LABEL_REVIEW_PREFIX}/line={line_id}/auto_labels.parquet"


@dataclass(frozen=True)
class StoredProposals:
    """A line's review queue as read, with the ETag a conditional rewrite must match (None: absent)."""

    frame: pd.DataFrame | None
    etag: str | None


def read_proposals(bucket: str, line_id: str) -> StoredProposals:
    try:
        response = client("s3").get_object(Bucket=bucket, Key=proposals_key(line_id))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in {"NoSuchKey", "404"}:
            return StoredProposals(frame=None, etag=None)
        raise
    return StoredProposals(frame=_from_parquet(response["Body"].read()), etag=response["ETag"])


def write_proposals(bucket: str, line_id: str, frame: pd.DataFrame, *, etag: str | None) -> bool:
    """Replace the queue if it is still the version read (`etag`; None: still absent).

    False when another writer got there first: re-read, re-apply, retry.
    """
    condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
    try:
        client("s3").put_object(
            Bucket=bucket, Key=proposals_key(line_id), Body=_to_parquet(frame), ContentType=_PARQUET, **condition
        )
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        # IfMatch on an object deleted meanwhile answers NoSuchKey: also a lost race
        if code in _LOST_RACE or (etag is not None and code in {"NoSuchKey", "404"}):
            return False
        raise
    return True


def put_auto_labels(bucket: str, line_id: str, frame: pd.DataFrame) -> bool:
    """Store the line's auto labels; False when nothing needed writing: the stored object already
    holds these bytes, or there are none and none are stored (readers take a missing object as none).
    The packer runs every compaction round and its auto labels rarely change: a GET costs a
    twelfth of a PUT."""
    key = auto_labels_key(line_id)
    body = _to_parquet(frame)
    stored = s3.get_bytes_or_none(bucket, key)
    if stored == body or (stored is None and frame.empty):
        return False
    s3.put_bytes(bucket, key, body, content_type=_PARQUET)
    return True


def get_auto_labels(bucket: str, line_id: str) -> pd.DataFrame | None:
    body = s3.get_bytes_or_none(bucket, auto_labels_key(line_id))
    return None if body is None else _from_parquet(body)


def review_lines(bucket: str) -> list[str]:
    """Lines that have a review queue."""
    keys = s3.list_keys(bucket, f"{names.LABEL_REVIEW_PREFIX}/")
    return sorted({match.group(1) for match in map(_LINE_KEY.match, keys) if match})


def _to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, compression="zstd")
    return buffer.getvalue()


def _from_parquet(body: bytes) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(body)).to_pandas()
