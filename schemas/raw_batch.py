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
from edgeloop.schemas.telemetry import ColumnarSamples

RAW_FORMAT_VERSION = 1


class RawBatch(Contract):
    format_version: Literal[1] = RAW_FORMAT_VERSION
    thing_name: ThingName
    line_id: Identifier
    seq_first: int = Field(ge=0, description="of the batch as sent (quarantined samples included)")
    seq_last: int = Field(ge=0)
    received_at_ms: int = Field(ge=0)
    samples: ColumnarSamples = Field(description="the landed samples only")
    seq: list[int] = Field(description="per landed sample: its sequence number")

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
