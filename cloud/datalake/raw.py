"""Raw objects: the batches ingest lands, and the recordings `edgeloop backfill` lands (with their
lineage; see the backfill section below).

Two layouts under raw/, told apart by the key (`raw_batches` reads either):
- raw/ingest_date=YYYY-MM-DD/hour=HH/thing=<name>/<seq_first>-<seq_last>.json.gz holds one RawBatch
  (schemas/raw_batch.py): one accepted MQTT message, as the direct path (IoT rule -> ingest) lands it;
- raw/ingest_date=YYYY-MM-DD/hour=HH/set=<digest>.json.gz holds one RawBatchSet: the accepted messages
  of one SQS batch (IoT rule -> SQS -> ingest), at most MAX_SET_SAMPLES samples.
Ingest writes each key once; compaction folds them into curated/, and the optional hot path copies
each new one into Timestream.

No numpy/pandas/pyarrow here: ingest and the hot path import this on their cold-start path.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeloop.schemas import TelemetryBatch, names
from edgeloop.schemas.common import IDENTIFIER_BODY
from edgeloop.schemas.raw_batch import RawBatch, RawBatchSet
from edgeloop.schemas.telemetry import MAX_BATCH_SAMPLES

RAW_KEY = re.compile(
    rf"^{names.RAW_PREFIX}/ingest_date=\d{{4}}-\d{{2}}-\d{{2}}/hour=\d{{2}}/"
    r"thing=(?P<thing>[a-zA-Z0-9:_-]{1,128})/(?P<seq_first>\d{20})-(?P<seq_last>\d{20})\.json\.gz$"
)


def raw_object_key(batch: TelemetryBatch | RawBatch, received_at: datetime) -> str:
    """Keyed by ingestion time and sequence range: a re-delivery within the hour hits the same key.

    Re-deliveries in a later hour land under another key; compaction drops them by (thing, seq).
    RAW_KEY matches every key this returns.
    """
    return (
        f"{names.RAW_PREFIX}/ingest_date={received_at:%Y-%m-%d}/hour={received_at:%H}/"
        f"thing={batch.thing_name}/{batch.seq_first:020d}-{batch.seq_last:020d}.json.gz"
    )


RAW_SET_KEY = re.compile(
    rf"^{names.RAW_PREFIX}/ingest_date=\d{{4}}-\d{{2}}-\d{{2}}/hour=\d{{2}}/set=(?P<digest>[0-9a-f]{{32}})\.json\.gz$"
)
# The samples one set object holds at most: what one message's raw object may hold, so compaction and
# the hot path read no larger object than before (a full SQS batch of gateway messages takes 1-2).
MAX_SET_SAMPLES = MAX_BATCH_SAMPLES


def raw_set_digest(batches: Sequence[RawBatch]) -> str:
    """What the set holds, as (thing, seq range) per batch in any order: an SQS batch retried whole
    maps to the same key (its conditional create then fails: a duplicate)."""
    members = sorted({(b.thing_name, b.seq_first, b.seq_last) for b in batches})
    return hashlib.sha256("\n".join(f"{t} {f} {last}" for t, f, last in members).encode()).hexdigest()[:32]


def raw_set_key(batches: Sequence[RawBatch]) -> str:
    """Keyed by the earliest receive time among the batches and their digest; RAW_SET_KEY matches it.

    Messages regrouped into another SQS batch land under another key; compaction drops them by (thing, seq).
    """
    if not batches:
        raise ValueError("batches is empty: a raw set holds at least one batch")
    received_at = datetime.fromtimestamp(min(b.received_at_ms for b in batches) / 1000, tz=UTC)
    return (
        f"{names.RAW_PREFIX}/ingest_date={received_at:%Y-%m-%d}/hour={received_at:%H}/"
        f"set={raw_set_digest(batches)}.json.gz"
    )


def raw_batches(key: str, body: bytes) -> list[RawBatch]:
    """The batches of the raw object at `key` (gzip JSON), whichever layout its key names."""
    if RAW_SET_KEY.match(key):
        return RawBatchSet.from_gzip_json(body).batches
    return [RawBatch.from_gzip_json(body)]


# --- backfill ------------------------------------------------------------------------------------
# `edgeloop backfill` (edgeloop/backfill/; its writes: backfill.py here) lands historical recordings.
# Its raw layer is the recording itself, as received, beside the lineage of the run that landed it:
#   raw_backfill/line=<line>/thing=<thing>/backfill=<id>/recording.<suffix>
#   raw_backfill/line=<line>/thing=<thing>/backfill=<id>/lineage.json   (BackfillLineage; written last)
# Not under raw/: the hot path copies every new raw/ object into Timestream (history does not belong
# there) and compaction folds raw/ JSON batches; backfill writes curated/ itself.
BACKFILL_KEY = re.compile(
    rf"^{names.BACKFILL_PREFIX}/line=(?P<line>{IDENTIFIER_BODY})/thing=(?P<thing>[a-zA-Z0-9:_-]{{1,128}})/"
    r"backfill=(?P<backfill_id>[0-9a-f]{16})/(?P<name>recording\.[a-z]+|lineage\.json)$"
)
LINEAGE_FILE = "lineage.json"
# A backfilled sample's sequence number is BACKFILL_SEQ_BASE + (time_ms << BACKFILL_SLOT_BITS) + slot(metric):
# the identity of a recorded reading is (thing, metric, event time), so landing a file again, an
# overlapping file or a corrected file stores each reading once (compaction and every curated reader
# drop repeated (thing_name, seq)). Gateways count from 0 and never reach 2**62: a backfilled row
# is recognisable by its seq alone, and cannot collide with a live one of the same thing.
BACKFILL_SEQ_BASE = 1 << 62
BACKFILL_SLOT_BITS = 20
BACKFILL_MAX_TIME_MS = (1 << 42) - 1  # 2109-05-15: keeps every backfilled seq inside int64


def backfill_slot(metric: str) -> int:
    """The metric's part of a backfilled seq: stable across runs, use cases and mappings."""
    return zlib.crc32(metric.encode()) & ((1 << BACKFILL_SLOT_BITS) - 1)


def backfill_seq(time_ms: int, metric: str) -> int:
    """The sequence number backfill gives the reading of `metric` at `time_ms` (vectorised in backfill.py)."""
    if not 0 <= time_ms <= BACKFILL_MAX_TIME_MS:
        raise ValueError(f"time_ms={time_ms} is outside 0..{BACKFILL_MAX_TIME_MS}: no backfill seq")
    return BACKFILL_SEQ_BASE + (time_ms << BACKFILL_SLOT_BITS) + backfill_slot(metric)


def backfill_prefix(line_id: str, thing_name: str, backfill_id: str) -> str:
    return f"{names.BACKFILL_PREFIX}/line={line_id}/thing={thing_name}/backfill={backfill_id}/"


def backfill_recording_key(line_id: str, thing_name: str, backfill_id: str, suffix: str) -> str:
    """Where a backfilled recording is kept as received; BACKFILL_KEY matches it."""
    return f"{backfill_prefix(line_id, thing_name, backfill_id)}recording{suffix.lower()}"


def backfill_lineage_key(line_id: str, thing_name: str, backfill_id: str) -> str:
    return f"{backfill_prefix(line_id, thing_name, backfill_id)}{LINEAGE_FILE}"


class BackfillLineage(BaseModel):
    """What one backfill of one recording did; stored last, so its presence means the run completed.

    Curated rows of the run carry ingest_time_ms = received_at_ms and a seq >= BACKFILL_SEQ_BASE.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["backfill"] = "backfill"
    backfill_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    line_id: str
    thing_name: str
    use_case: str
    source_file: str = Field(description="the recording's path as given on the command line")
    source_sha256: str
    source_bytes: int
    recording_key: str = Field(description="the recording as received, in the data bucket")
    mapping_file: str
    mapping_sha256: str
    received_at_ms: int = Field(description="the run's time: every row it landed has this ingest_time_ms")
    lateness_sla: Literal["not applied (backfill)"] = "not applied (backfill)"
    rows: int
    samples: int = Field(description="non-empty cells of mapped columns (wide) or rows (long)")
    landed: int = Field(description="rows new to curated/")
    already_stored: int = Field(description="valid readings curated/ already held (same thing, metric, time)")
    quarantined: int
    quarantine_keys: list[str]
    partitions: list[str]
    context_intervals: dict[str, int] = Field(description="intervals stored through the context path, per kind")
    code_version: str
