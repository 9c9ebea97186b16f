"""Telemetry from a gateway: the batch a gateway publishes and the ingest function accepts.

A TelemetryBatch is a contiguous run of one gateway's sample sequence numbers, its samples as
parallel columns. This module holds the contract, its format versions, and the limits and error
every wire decoder shares. The wire codecs: telemetry_codec (which format a payload is, format 1 =
zlib JSON, and the entry points encode_batch / decode_batch) and telemetry_compact (format 2, the
binary columnar encoding gateways publish).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from .bounded_json import MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES  # re-exported: the gateway sizes batches by it
from .bounded_json import JsonLimits, MessageDecodeError
from .common import Contract, Identifier, ThingName

TELEMETRY_FORMAT_VERSION = 1  # zlib JSON: the default of TelemetryBatch.format_version
COMPACT_FORMAT_VERSION = 2  # the binary columnar encoding gateways publish
SUPPORTED_FORMAT_VERSIONS = (TELEMETRY_FORMAT_VERSION, COMPACT_FORMAT_VERSION)
# MAX_PAYLOAD_BYTES (AWS IoT Core's per-message limit) is defined with every device message's limits
# in schemas/bounded_json.py and re-exported here.
# A batch may not declare more samples than this: twice what a gateway cuts (GATEWAY_BATCH_SAMPLES).
GATEWAY_BATCH_SAMPLES = 200_000
MAX_BATCH_SAMPLES = 2 * GATEWAY_BATCH_SAMPLES
# Metric names per batch: a use case accepts a few dozen; each declared name costs the decoder a
# list and a string (4 M declared names in 3.9 KB of zlib once took 1.19 GB).
MAX_BATCH_METRICS = 1024
# A decoded body may not exceed this. A valid format-2 body of MAX_BATCH_SAMPLES samples takes at
# most ~21 bytes a sample (index <= 2, time <= 10, xor value <= 9): 8.4 MB; format-1 JSON of real
# batches takes ~25-45 bytes a sample, so 16 MiB carries a full gateway batch (GATEWAY_BATCH_SAMPLES)
# in either. Both decoders also bound what the body can claim (counts, JSON elements and nesting
# below), so memory stays a small multiple of this, far inside the ingest Lambda's 512 MB.
MAX_DECODED_BODY_BYTES = 16 * 1024 * 1024
# Format-1 JSON is checked against these before it is parsed (Python's json recurses per level:
# 445 bytes of [[[... raised RecursionError; every element and string is a Python object). The
# batch document holds 6 arrays and objects, nested 3 deep ({"samples": {"values": [...]}}); its
# strings are its keys, thing, line and metric names; its elements the 4 sample columns and names.
MAX_JSON_CONTAINERS = 16
MAX_JSON_DEPTH = 8
MAX_JSON_STRINGS = MAX_BATCH_METRICS + 64
MAX_JSON_ELEMENTS = 4 * MAX_BATCH_SAMPLES + MAX_BATCH_METRICS + 64
# The same, as the shared bounded-JSON checker (schemas/bounded_json.py) takes them: a refusal names
# MAX_JSON_DEPTH, MAX_JSON_CONTAINERS, ... (no string-length limit: metric names are validated).
TELEMETRY_JSON = JsonLimits(
    name="MAX_JSON",
    max_bytes=MAX_DECODED_BODY_BYTES,
    max_depth=MAX_JSON_DEPTH,
    max_containers=MAX_JSON_CONTAINERS,
    max_strings=MAX_JSON_STRINGS,
    max_elements=MAX_JSON_ELEMENTS,
)
# A raw object (schemas/raw_batch.py: a landed batch as ingest wrote it, gzip JSON) read back by the
# hot path: the batch's columns plus `seq`, ~70 bytes a sample, so a full batch is ~28 MB of JSON.
# Bounded before pydantic parses it (64 MiB of one float column once took 1.2 GB and 16 s).
RAW_BATCH_JSON = JsonLimits(
    name="MAX_RAW_JSON",
    max_bytes=64 * 1024 * 1024,
    max_depth=3,
    max_containers=16,
    max_strings=MAX_JSON_STRINGS + 16,
    max_elements=5 * MAX_BATCH_SAMPLES + MAX_BATCH_METRICS + 64,
)
# Integers the data lake stores as Parquet int64 (seq, time_ms, received_at_ms): checked at ingest,
# so compaction never meets one it cannot convert.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
StoredInt = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
SequenceNumber = Annotated[int, Field(ge=0, le=INT64_MAX)]


class ColumnarSamples(Contract):
    """Samples as parallel columns; metric names are stored once and referenced by index."""

    metrics: list[str] = Field(
        min_length=1, max_length=MAX_BATCH_METRICS, description="metric names, referenced by metric_index"
    )
    metric_index: list[int] = Field(max_length=MAX_BATCH_SAMPLES, description="per sample: index into metrics")
    time_ms: list[StoredInt] = Field(
        max_length=MAX_BATCH_SAMPLES, description="per sample: event time, ms since the Unix epoch (UTC)"
    )
    values: list[float] = Field(max_length=MAX_BATCH_SAMPLES, description="per sample: the measured value")

    @model_validator(mode="after")
    def _columns_agree(self) -> ColumnarSamples:
        n = len(self.metric_index)
        if len(self.time_ms) != n or len(self.values) != n:
            raise ValueError(
                f"columns differ in length: metric_index={n}, time_ms={len(self.time_ms)}, values={len(self.values)}"
            )
        # Whole-column checks in C first (batches hold ~100k samples); the loops only name the culprit.
        if n and not 0 <= min(self.metric_index) <= max(self.metric_index) < len(self.metrics):
            for i, idx in enumerate(self.metric_index):
                if not 0 <= idx < len(self.metrics):
                    raise ValueError(f"metric_index[{i}]={idx} is outside metrics (0..{len(self.metrics) - 1})")
        # A NaN or infinity makes the sum non-finite; a finite sum proves every value finite.
        if not math.isfinite(sum(self.values)):
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
    format_version chooses the wire encoding (`encode_batch`); decoding sets it to what was read.
    """

    format_version: Literal[1, 2] = TELEMETRY_FORMAT_VERSION
    thing_name: ThingName
    line_id: Identifier
    seq_first: SequenceNumber
    seq_last: SequenceNumber
    samples: ColumnarSamples

    @model_validator(mode="after")
    def _sequence_matches_samples(self) -> TelemetryBatch:
        expected = self.seq_last - self.seq_first + 1
        if expected != len(self.samples):
            raise ValueError(
                f"sequence range {self.seq_first}..{self.seq_last} covers {expected} samples "
                f"but the batch holds {len(self.samples)}"
            )
        return self


# A payload is not a valid batch: `field` and `value` say where and what (for quarantine). The one
# error of every device message decoder (schemas/bounded_json.py).
TelemetryDecodeError = MessageDecodeError
