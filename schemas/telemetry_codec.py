"""Telemetry on the wire: what a gateway publishes and the ingest function accepts.

Two wire formats, told apart by their first bytes (`decode_batch` reads both):

- format 1: zlib-compressed compact JSON of the TelemetryBatch (a zlib stream starts with 0x78).
- format 2 ("compact"): a binary, columnar encoding sized for draining a 14-day backlog within
  IoT Core's 512 KB/s per connection (about 1-2 bytes per sample for 1 Hz sensor data); its
  layout and codec are in telemetry_compact.

Decoding needs no numpy (the ingest Lambda's cold start); encoding format 2 uses numpy, lazily.
"""

from __future__ import annotations

import json
import zlib

from .bounded_json import check_json_shape as check_bounded_json_shape
from .telemetry import (
    COMPACT_FORMAT_VERSION,
    MAX_BATCH_SAMPLES,
    SUPPORTED_FORMAT_VERSIONS,
    TELEMETRY_FORMAT_VERSION,
    TELEMETRY_JSON,
    TelemetryBatch,
    TelemetryDecodeError,
)
from .telemetry_compact import (
    COMPACT_HEADER_BYTES,
    COMPACT_MAGIC,
    DEFAULT_COMPRESSION,
    Compression,
    decode_compact,
    encode_compact,
    inflate_one_stream,
)


def encode_batch(batch: TelemetryBatch, compression: Compression = DEFAULT_COMPRESSION) -> bytes:
    """Wire form of a batch in its format_version: 1 = zlib JSON, 2 = compact binary.

    compression applies to format 2 only.
    """
    if batch.format_version == COMPACT_FORMAT_VERSION:
        return encode_compact(batch, compression)
    return zlib.compress(batch.model_dump_json().encode(), level=6)


def decode_batch(payload: bytes) -> TelemetryBatch:
    """Either wire format back to the batch (format_version says which it was)."""
    # Strict: a string or a boolean is not a number on the wire ("1.5", true, "0" are refused).
    return TelemetryBatch.model_validate(decode_batch_document(payload), strict=True)


def wire_format_version(payload: bytes) -> int:
    """The format a payload claims: 2 (or a later one) by its magic, else 1 (zlib JSON)."""
    if payload[: len(COMPACT_MAGIC)] == COMPACT_MAGIC:
        if len(payload) < COMPACT_HEADER_BYTES:
            raise TelemetryDecodeError("header", payload, f"is shorter than the {COMPACT_HEADER_BYTES}-byte header")
        return payload[len(COMPACT_MAGIC)]
    return TELEMETRY_FORMAT_VERSION


def decode_batch_document(payload: bytes) -> dict:
    """Either wire format as the plain document TelemetryBatch validates (the v1 JSON shape).

    Raises TelemetryDecodeError (a ValueError naming field and value) when the payload cannot be
    read at all; what it says inside (a metric index out of range, a non-finite value) is left
    to validation, so a caller can refuse single samples.
    """
    version = wire_format_version(payload)
    if version == TELEMETRY_FORMAT_VERSION:
        document = decode_batch_json(payload)
    elif version == COMPACT_FORMAT_VERSION:
        document = decode_compact(payload)
    else:
        raise TelemetryDecodeError(
            "header.format_version", version, f"is not supported (supported: {list(SUPPORTED_FORMAT_VERSIONS)})"
        )
    _check_sample_count(document)
    return document


def _check_sample_count(document: dict) -> None:
    samples = document.get("samples")
    column = samples.get("metric_index") if isinstance(samples, dict) else None
    if isinstance(column, list) and len(column) > MAX_BATCH_SAMPLES:
        raise TelemetryDecodeError(
            "samples.metric_index", f"{len(column)} samples", f"exceeds {MAX_BATCH_SAMPLES} samples per batch"
        )


def decode_batch_json(payload: bytes) -> dict:
    """Format 1 only: undo the wire compression; raises ValueError with the reason when it is not a batch."""
    text = _inflate_json(payload)
    check_json_shape(text, "<payload>")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"payload is not JSON: {exc.msg} at {exc.pos}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"payload is a JSON {type(document).__name__}, not an object")
    return document


def _inflate_json(payload: bytes) -> bytes:
    """One zlib stream, inflated to at most MAX_DECODED_BODY_BYTES, with nothing after it."""
    try:
        return inflate_one_stream(zlib.decompressobj(), payload, "zlib", field="<payload>")
    except zlib.error as exc:
        raise ValueError(f"payload is not zlib-compressed: {exc}") from exc


def check_json_shape(text: bytes, field: str) -> None:
    """Format-1 JSON against telemetry's limits (TELEMETRY_JSON: MAX_JSON_STRINGS, MAX_JSON_ELEMENTS,
    MAX_JSON_CONTAINERS, MAX_JSON_DEPTH), on the bytes before parsing (schemas/bounded_json.py)."""
    check_bounded_json_shape(text, field, TELEMETRY_JSON)
