"""Compaction: raw/ (by ingestion time, JSON) -> curated/ (by line and event date, Parquet).

Each curated partition `curated/line=<line>/event_date=YYYY-MM-DD/` holds one Parquet part,
sorted by (thing_name, metric, time_ms) and free of duplicate (thing_name, seq) rows (the layout,
its schema and its readers: cloud/datalake/curated.py).

Merge strategy (fine at demo scale, documented because it does not scale forever): for every
partition touched by new raw objects, read the partition's existing parts, union them with the
new rows, drop duplicates (the earliest ingested copy wins), write one new part, then delete the
old parts (curated.merge_partition, which `edgeloop backfill` uses too). Late data (the Mímir lines
send up to 14 days late) simply rewrites an older partition.

Lateness SLA: a row whose ingest_time_ms - time_ms exceeds the SLA (default 14 days,
names.DEFAULT_LATENESS_SLA_DAYS) does not reopen curated history; it goes to
`late/line=<line>/ingest_date=YYYY-MM-DD/` (same columns, same merge and de-duplication) and is
counted in `late_rows`, so nothing is dropped silently. Ingest already refuses such samples on
arrival, so this path catches what passed ingest under a looser SLA: the SLA was lowered between
landing and compaction (or ingest and compaction were configured with different values), or the
raw objects were landed before ingest enforced it. Compacting late does not by itself make a row
late: the delay is measured from the event time to the broker's receive time, not to compaction.
Copies of one (thing_name, seq) within a run are collapsed first, so the earliest copy decides
where it lands.
De-duplication does not cross the two stores: a copy re-sent after the SLA of a row already in
curated lands in late/ too.
A crash between the write and the delete leaves two overlapping parts; readers de-duplicate
(`curated.read_curated`) and the next merge of that partition repairs it.

Raw objects are RawBatch (one message, direct path) or RawBatchSet (one SQS batch, batched path)
objects; their keys say which (cloud/datalake/raw.py). A message landed in two sets (regrouped on
an SQS retry) is a duplicate (thing_name, seq) like any other.

Isolation: a raw object that cannot be read or converted (not gzip JSON, not a RawBatch, a value
outside its column's type, an event time pandas cannot date) is moved aside: a quarantine record
(cloud/datalake/quarantine.py, the same layout as ingest's) holds its bytes and the reasons, it is
listed in `quarantined_keys` and marked compacted, and the run goes on with every other object. One
poisoned device cannot stop another line's data reaching curated/.

Incremental runs: after its partitions are written, each processed raw key gets an empty marker
`_state/compacted/<raw key>`; a rerun skips marked keys. A crash before the markers only means
those raw objects are read again, which the de-duplication absorbs. A scheduled round (`now` given)
lists only the ingest hours not yet closed, after a checkpoint, and sweeps all of raw/ once a day
(checkpoint.py): its listing stays a few hours of objects however much the bucket holds. Runs must
not overlap (the stack gives the function a reserved concurrency of 1).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.curated import (
    dedupe_and_sort,
    empty_curated,
    late_partition_prefix,
    merge_partition,
    partition_prefix,
)
from edgeloop.cloud.datalake.quarantine import raw_quarantine_key, raw_quarantine_record
from edgeloop.cloud.datalake.raw import raw_batches
from edgeloop.schemas import QuarantineReason, names
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.raw_batch import RawBatch

from .checkpoint import list_round, marked_among, marker_key, write_checkpoint

DAY_MS = 86_400_000
DELAY_QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "max": 1.0}


@dataclass
class CompactionResult:
    raw_objects: int = 0
    rows_read: int = 0
    rows_written: int = 0
    duplicates_dropped: int = 0
    partitions: list[str] = field(default_factory=list)  # the curated prefixes rewritten
    skipped_keys: list[str] = field(default_factory=list)  # already compacted earlier
    late_rows: int = 0  # new rows beyond the lateness SLA, written under late/ instead of curated/
    late_partitions: list[str] = field(default_factory=list)  # the late/ prefixes rewritten
    # ingestion delay (ingest_time_ms - time_ms, seconds) over this run's rows: p50, p90, p99, max
    delay_quantiles_s: dict[str, float] = field(default_factory=dict)
    # raw objects that could not be converted: moved aside to these quarantine keys, run went on
    quarantined_keys: list[str] = field(default_factory=list)
    swept: bool = False  # this round listed all of raw/ (the day's first, checkpoint.py), not only open hours

    @property
    def line_ids(self) -> list[str]:
        return sorted({p.split("/")[1].removeprefix("line=") for p in self.partitions})


def compact(
    bucket: str,
    *,
    raw_keys: Iterable[str] | None = None,
    lateness_sla_days: int = names.DEFAULT_LATENESS_SLA_DAYS,
    now: datetime | None = None,
) -> CompactionResult:
    """Fold raw objects not yet compacted into curated/, or into late/ for rows ingested more than
    `lateness_sla_days` after their event time. Which objects: `raw_keys`; else, with `now` (the
    scheduled round), those of the hours still open after the checkpoint (all of raw/ on the day's
    first round), the checkpoint moving on afterwards; else all of raw/."""
    if isinstance(lateness_sla_days, bool) or not isinstance(lateness_sla_days, int) or lateness_sla_days <= 0:
        raise ValueError(f"lateness_sla_days={lateness_sla_days!r} must be a positive whole number of days")
    listing = None
    if raw_keys is None:
        listing = list_round(bucket, now)
        candidates, done = listing.candidates, listing.marked
    else:
        candidates = sorted(set(raw_keys))
    foreign = [k for k in candidates if not (k.startswith(f"{names.RAW_PREFIX}/") and k.endswith(".json.gz"))]
    if foreign:
        raise ValueError(f"raw_keys {foreign[:5]!r} are not raw objects ({names.RAW_PREFIX}/.../*.json.gz)")
    if listing is None:
        done = marked_among(bucket, candidates)
    result = CompactionResult(skipped_keys=[k for k in candidates if k in done], swept=bool(listing and listing.swept))
    pending = [k for k in candidates if k not in done]
    if pending:
        _compact_pending(bucket, pending, lateness_sla_days, result)
    if listing is not None and listing.next_checkpoint is not None:
        write_checkpoint(bucket, listing.next_checkpoint)
    return result


def _compact_pending(bucket: str, pending: list[str], lateness_sla_days: int, result: CompactionResult) -> None:

    read = _read_pending(bucket, pending, result)
    result.raw_objects = len(pending)
    result.rows_read = len(read)
    new_rows = dedupe_and_sort(read)
    result.duplicates_dropped = len(read) - len(new_rows)
    delay_ms = new_rows["ingest_time_ms"] - new_rows["time_ms"]
    result.delay_quantiles_s = delay_quantiles_s(delay_ms.to_numpy())
    is_late = delay_ms > lateness_sla_days * DAY_MS
    _compact_on_time(bucket, new_rows[~is_late], result)
    _compact_late(bucket, new_rows[is_late], result)

    for key in pending:
        s3.put_bytes(bucket, marker_key(key), b"")


# What a raw object that cannot be converted raises (pydantic's ValidationError and pandas'
# OutOfBoundsDatetime are ValueErrors; gzip.BadGzipFile an OSError). S3 errors are not caught here.
_UNCONVERTIBLE = (ValueError, OverflowError, EOFError, OSError, zlib.error)


def _read_pending(bucket: str, pending: list[str], result: CompactionResult) -> pd.DataFrame:
    """The rows of every pending raw object that converts; the others are moved aside to quarantine."""
    frames = []
    for key in pending:
        body = s3.get_bytes(bucket, key)
        try:
            rows = raw_rows(body, key)
            _utc_dates(rows["time_ms"])  # what partitioning will do: an undatable time fails here
            _utc_dates(rows["ingest_time_ms"])
        except _UNCONVERTIBLE as exc:
            result.quarantined_keys.append(_move_aside(bucket, key, body, exc))
            continue
        frames.append(rows)
    if not frames:
        return empty_curated()
    return pd.concat(frames, ignore_index=True)


def _move_aside(bucket: str, key: str, body: bytes, exc: Exception) -> str:
    at = datetime.now(UTC)
    errors = getattr(exc, "errors", None)
    if callable(errors):  # a ValidationError: one reason per field, like ingest's
        reasons = [QuarantineReason.of(_field_path(e["loc"]), e.get("input"), e["msg"]) for e in errors()[:20]]
    else:
        reasons = [QuarantineReason.of("<raw object>", key, f"cannot be compacted: {type(exc).__name__}: {exc}")]
    q_key = raw_quarantine_key(key, at)
    s3.put_bytes(bucket, q_key, raw_quarantine_record(key, body, at, reasons), content_type="application/json")
    return q_key


def _field_path(loc: tuple) -> str:
    """A validation error's location as ingest names fields: samples.values[3]."""
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return path or "<raw object>"


def _compact_on_time(bucket: str, rows: pd.DataFrame, result: CompactionResult) -> None:
    event_dates = _utc_dates(rows["time_ms"])
    for (line_id, event_date), group in rows.groupby([rows["line_id"], event_dates], sort=True):
        written, dropped = merge_partition(bucket, partition_prefix(line_id, event_date), group)
        result.rows_written += written
        result.duplicates_dropped += dropped
        result.partitions.append(partition_prefix(line_id, event_date))


def _compact_late(bucket: str, rows: pd.DataFrame, result: CompactionResult) -> None:
    # Partitioned by ingestion date: late rows are audited by when they arrived, and a rerun of
    # old event dates never has to touch them.
    ingest_dates = _utc_dates(rows["ingest_time_ms"])
    for (line_id, ingest_date), group in rows.groupby([rows["line_id"], ingest_dates], sort=True):
        _, dropped = merge_partition(bucket, late_partition_prefix(line_id, ingest_date), group)
        result.late_rows += len(group) - dropped
        result.duplicates_dropped += dropped
        result.late_partitions.append(late_partition_prefix(line_id, ingest_date))


def delay_quantiles_s(delay_ms: np.ndarray) -> dict[str, float]:
    """p50, p90, p99 and max of ingestion delays given in ms, in seconds; empty without delays."""
    if len(delay_ms) == 0:
        return {}
    seconds = np.asarray(delay_ms, dtype=np.float64) / 1000.0
    return {name: float(np.quantile(seconds, q)) for name, q in DELAY_QUANTILES.items()}


def _utc_dates(times_ms: pd.Series) -> pd.Series:
    return pd.to_datetime(times_ms, unit="ms", utc=True).dt.strftime("%Y-%m-%d")


def raw_rows(body: bytes, key: str = "") -> pd.DataFrame:
    """One raw object as curated rows: a RawBatch, or a RawBatchSet when `key` names one (raw.raw_batches)."""
    frames = [_batch_rows(batch) for batch in raw_batches(key, body)]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _batch_rows(batch: RawBatch) -> pd.DataFrame:
    samples = batch.samples
    n = len(samples)
    metric_names = np.asarray(samples.metrics, dtype=object)
    return pd.DataFrame(
        {
            "thing_name": np.full(n, batch.thing_name, dtype=object),
            "line_id": np.full(n, batch.line_id, dtype=object),
            "metric": metric_names[np.asarray(samples.metric_index, dtype=np.int64)],
            "time_ms": np.asarray(samples.time_ms, dtype=np.int64),
            "value": np.asarray(samples.values, dtype=np.float64),
            "seq": np.asarray(batch.seq, dtype=np.int64),
            "ingest_time_ms": np.full(n, batch.received_at_ms, dtype=np.int64),
        }
    )
