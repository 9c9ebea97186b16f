"""Telemetry on the wire: what a gateway publishes and the ingest function accepts."""

from __future__ import annotations

import json
import math
import zlib
from typing import Literal

from pydantic import Field, model_validator

from .common import Contract, Identifier, ThingName

TELEMETRY_FORMAT_VERSION = 1
MAX_PAYLOAD_BYTES = 128 * 1024  # AWS IoT Core's per-message limit


class ColumnarSamples(Contract):
    """Samples as parallel columns; metric names are stored once and referenced by index."""

    metrics: list[str] = Field(min_length=1, description="metric names, referenced by metric_index")
    metric_index: list[int] = Field(description="per sample: index into metrics")
    time_ms: list[int] = Field(description="per sample: event time, ms since the Unix epoch (UTC)")
    values: list[float] = Field(description="per sample: the measured value")

    @model_validator(mode="after")
    def _columns_agree(self) -> "ColumnarSamples":
        n = len(self.metric_index)
        if len(self.time_ms) != n or len(self.values) != n:
            raise ValueError(
                f"columns differ in length: metric_index={n}, time_ms={len(self.time_ms)}, "
                f"values={len(self.values)}"
            )
        for i, idx in enumerate(self.metric_index):
            if not 0 <= idx < len(self.metrics):
                raise ValueError(f"metric_index[{i}]={idx} is outside metrics (0..{len(self.metrics) - 1})")
        for i, value in enumerate(self.values):
            if not math.isfinite(value):
                raise ValueError(f"values[{i}]={value} is not finite")
        return self

    def __len__(self) -> int:
        return len(self.metric_index)


class TelemetryBatch(Contract):
    """One MQTT message from a gateway: a contiguous run of its sample sequence numbers.

    Sample i of the batch has sequence number seq_first + i; the cloud drops duplicates by
    (thing_name, sequence number), so a batch re-sent after a lost PUBACK lands once.
    """

    format_version: Literal[1] = TELEMETRY_FORMAT_VERSION
    thing_name: ThingName
    line_id: Identifier
    seq_first: int = Field(ge=0)
    seq_last: int = Field(ge=0)
    samples: ColumnarSamples

    @model_validator(mode="after")
    def _sequence_matches_samples(self) -> "TelemetryBatch":
        expected = self.seq_last - self.seq_first + 1
        if expected != len(self.samples):
            raise ValueError(
                f"sequence range {self.seq_first}..{self.seq_last} covers {expected} samples "
                f"but the batch holds {len(self.samples)}"
            )
        return self


def encode_batch(batch: TelemetryBatch) -> bytes:
    """Wire form of a batch: zlib-compressed compact JSON."""
    return zlib.compress(batch.model_dump_json().encode(), level=6)


def decode_batch_json(payload: bytes) -> dict:
    """Undo the wire compression; raises ValueError with the reason when it is not a batch."""
    try:
        text = zlib.decompress(payload)
    except zlib.error as exc:
        raise ValueError(f"payload is not zlib-compressed: {exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"payload is not JSON: {exc.msg} at {exc.pos}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"payload is a JSON {type(document).__name__}, not an object")
    return document


def decode_batch(payload: bytes) -> TelemetryBatch:
    return TelemetryBatch.model_validate(decode_batch_json(payload))
