"""The raw object ingest writes and compaction reads: one accepted batch, as landed.

It is the gateway's TelemetryBatch plus the broker's receive time, holding only the samples that
passed validation (bad samples go to quarantine), so each landed sample carries its own sequence
number in `seq` rather than relying on `seq_first + i`.
"""

from __future__ import annotations

import gzip
from typing import Literal

from pydantic import Field, model_validator

from edgeloop.schemas.common import Contract, Identifier, ThingName
from edgeloop.schemas.telemetry import INT64_MAX, ColumnarSamples, SequenceNumber

RAW_FORMAT_VERSION = 1
RAW_SET_FORMAT_VERSION = 2
MAX_SET_BATCHES = 10_000  # SQS's largest batch for a Lambda event source mapping (standard queue)


class RawBatch(Contract):
    format_version: Literal[1] = RAW_FORMAT_VERSION
    thing_name: ThingName
    line_id: Identifier
    seq_first: SequenceNumber = Field(description="of the batch as sent (quarantined samples included)")
    seq_last: SequenceNumber
    received_at_ms: int = Field(ge=0, le=INT64_MAX)
    samples: ColumnarSamples = Field(description="the landed samples only")
    # Sequence numbers fit Parquet int64 (the curated `seq` column): ingest checks it on arrival.
    seq: list[SequenceNumber] = Field(description="per landed sample: its sequence number")

    @model_validator(mode="after")
    def _one_seq_per_sample(self) -> RawBatch:
        if len(self.seq) != len(self.samples):
            raise ValueError(f"seq holds {len(self.seq)} numbers for {len(self.samples)} samples")
        return self

    def to_gzip_json(self) -> bytes:
        # mtime=0 keeps the bytes identical for identical batches (idempotent re-deliveries).
        return gzip.compress(self.model_dump_json().encode(), compresslevel=6, mtime=0)

    @classmethod
    def from_gzip_json(cls, body: bytes) -> RawBatch:
        return cls.model_validate_json(gzip.decompress(body))


class RawBatchSet(Contract):
    """Several landed batches in one raw object: what the batched ingest path (SQS) writes per
    invocation, so a thousand messages cost one S3 PUT (and one GET in compaction), not a thousand.

    Its key (cloud/datalake/raw.py raw_set_key) tells readers which of the two formats an object holds.
    """

    format_version: Literal[2] = RAW_SET_FORMAT_VERSION
    batches: list[RawBatch] = Field(min_length=1, max_length=MAX_SET_BATCHES)

    def to_gzip_json(self) -> bytes:
        return gzip.compress(self.model_dump_json().encode(), compresslevel=6, mtime=0)

    @classmethod
    def from_gzip_json(cls, body: bytes) -> RawBatchSet:
        return cls.model_validate_json(gzip.decompress(body))
