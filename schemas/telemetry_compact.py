"""Telemetry wire format 2 ("compact"): a binary, columnar encoding of a TelemetryBatch.

Header, uncompressed: MAGIC (b"ELTB"), version u8 (= 2), compression u8
(0 none, 1 zlib, 2 xz). Body (compressed as a whole); uvarint = LEB128, zigzag maps signed to
unsigned (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...):

    thing_name, line_id        uvarint byte length + UTF-8
    seq_first, n_samples       uvarint each; seq_last = seq_first + n_samples - 1
    n_metrics, metrics         uvarint, then per metric: uvarint byte length + UTF-8
    metric_index               n_samples uvarints, in sequence order
    per metric, in dictionary order, its c samples in sequence order:
      time_ms                  zigzag t[0]; if c > 1 zigzag (t[1] - t[0]); then the c - 2
                               delta-of-deltas (t[i] - t[i-1]) - (t[i-1] - t[i-2]), zigzag each
      value mode               u8: 0 = decimal, 1 = xor
        decimal: uvarint d, then c zigzag deltas of m (m[-1] = 0); value = m / 10**d, chosen only
                 when every value of the metric round-trips bit-exactly that way with |m| <= 2**53
        xor:     per value, the float64 bits XOR the previous value's bits (the first: XOR 0) as
                 a control byte (leading zero bytes << 4 | trailing zero bytes) + the bytes between

Sample order is the metric_index column: the k-th sample of a metric in it is the k-th of that
metric's run. Values are lossless for every float64 (decimal mode only where exact; -0.0 and
values with no short decimal form go through xor). Times must lie within +-2**61 ms.

Decoding is pure Python (the ingest Lambda's cold start); encoding uses numpy, imported lazily.
"""

from __future__ import annotations

import itertools
import lzma
import struct
import zlib
from enum import IntEnum
from typing import TYPE_CHECKING

from .telemetry import (
    COMPACT_FORMAT_VERSION,
    MAX_BATCH_METRICS,
    MAX_BATCH_SAMPLES,
    MAX_DECODED_BODY_BYTES,
    TelemetryBatch,
    TelemetryDecodeError,
)

if TYPE_CHECKING:
    import numpy as np

COMPACT_MAGIC = b"ELTB"
COMPACT_HEADER_BYTES = len(COMPACT_MAGIC) + 2
MAX_DECIMALS = 15  # 10**15 is exact in float64, and the scaled integers stay <= 2**53
MAX_ABS_TIME_MS = 2**61  # keeps every delta-of-delta inside int64
_MAX_EXACT_INT = 2**53


class Compression(IntEnum):
    NONE = 0
    ZLIB = 1
    XZ = 2


class ValueMode(IntEnum):
    DECIMAL = 0
    XOR = 1


# Measured on 110k samples of the extrusion simulator (x86, one core): zlib-9 gives 1.03 bytes per
# sample in 7.5 ms, xz preset 6 0.94 in 74 ms. Ten times the CPU for 9 % fewer bytes would make a
# small ARM gateway CPU-bound below the 512 KB/s link rate, so zlib is the default.
DEFAULT_COMPRESSION = Compression.ZLIB


# --- encoding (numpy) ----------------------------------------------------------------------------


def encode_compact(batch: TelemetryBatch, compression: Compression = DEFAULT_COMPRESSION) -> bytes:
    """Format 2 of any batch (whatever its format_version field says)."""
    import numpy as np

    samples = batch.samples
    metric_index = np.asarray(samples.metric_index, dtype=np.int64)
    time_ms = _times_array(samples.time_ms)
    values = np.asarray(samples.values, dtype=np.float64)
    parts = [
        _text_bytes(batch.thing_name),
        _text_bytes(batch.line_id),
        _uvarint_bytes(batch.seq_first),
        _uvarint_bytes(len(metric_index)),
        _uvarint_bytes(len(samples.metrics)),
        *(_text_bytes(name) for name in samples.metrics),
        _uvarints(metric_index.astype(np.uint64)),
    ]
    # A stable sort keeps each metric's samples in sequence order.
    order = np.argsort(metric_index, kind="stable")
    bounds = np.searchsorted(metric_index[order], np.arange(len(samples.metrics) + 1))
    for k in range(len(samples.metrics)):
        run = order[bounds[k] : bounds[k + 1]]
        parts.append(_encode_times(time_ms[run]))
        parts.append(_encode_values(values[run]))
    body = b"".join(parts)
    header = COMPACT_MAGIC + bytes([COMPACT_FORMAT_VERSION, int(compression)])
    return header + _compress(body, Compression(compression))


def _compress(body: bytes, compression: Compression) -> bytes:
    if compression is Compression.ZLIB:
        return zlib.compress(body, level=9)
    if compression is Compression.XZ:
        return lzma.compress(body, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, preset=6)
    return body


def _times_array(time_ms: list[int]) -> np.ndarray:
    import numpy as np

    if time_ms and (min(time_ms) <= -MAX_ABS_TIME_MS or max(time_ms) >= MAX_ABS_TIME_MS):
        bad = next(t for t in time_ms if not -MAX_ABS_TIME_MS < t < MAX_ABS_TIME_MS)
        raise ValueError(f"samples.time_ms={bad} is outside +-2**61 ms, which format 2 cannot encode")
    return np.asarray(time_ms, dtype=np.int64)


def _encode_times(times: np.ndarray) -> bytes:
    import numpy as np

    if len(times) == 0:
        return b""
    deltas = np.diff(times)
    stream = np.concatenate([times[:1], deltas[:1], np.diff(deltas)])
    return _uvarints(_zigzag(stream))


def _encode_values(values: np.ndarray) -> bytes:
    if len(values) == 0:
        return b""  # a metric without samples in this batch: nothing, not even a mode byte
    decimals = _exact_decimals(values)
    if decimals is None:
        return bytes([ValueMode.XOR]) + _xor_bytes(values)
    import numpy as np

    scaled = np.rint(values * 10.0**decimals).astype(np.int64)
    deltas = np.diff(scaled, prepend=np.int64(0))
    return bytes([ValueMode.DECIMAL]) + _uvarint_bytes(decimals) + _uvarints(_zigzag(deltas))


def _exact_decimals(values: np.ndarray) -> int | None:
    """The fewest decimals d at which every value is exactly m / 10**d with |m| <= 2**53, or None."""
    import numpy as np

    if len(values) == 0:
        return 0
    bits = values.view(np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        for decimals in range(MAX_DECIMALS + 1):
            scale = 10.0**decimals
            scaled = np.rint(values * scale)
            if not np.all(np.abs(scaled) <= _MAX_EXACT_INT):
                return None  # more decimals only make the integers bigger
            # What the decoder computes, compared bit for bit: -0.0 becomes the integer 0 and so 0.0.
            decoded = scaled.astype(np.int64).astype(np.float64) / scale
            if np.array_equal(decoded.view(np.int64), bits):
                return decimals
    return None


def _xor_bytes(values: np.ndarray) -> bytes:
    """Byte-aligned Gorilla: per value a control byte, then the non-zero middle bytes of the XOR."""
    import numpy as np

    bits = values.view(np.uint64)
    xor = bits ^ np.concatenate([np.zeros(1, np.uint64), bits[:-1]])
    big_endian = xor.astype(">u8").view(np.uint8).reshape(-1, 8)
    nonzero = big_endian != 0
    any_nonzero = nonzero.any(axis=1)
    leading = np.where(any_nonzero, nonzero.argmax(axis=1), 8)
    trailing = np.where(any_nonzero, nonzero[:, ::-1].argmax(axis=1), 0)
    control = (leading << 4 | trailing).astype(np.uint8)
    table = np.concatenate([control[:, None], big_endian], axis=1)
    column = np.arange(9)
    keep = (column == 0) | ((column >= leading[:, None] + 1) & (column < 9 - trailing[:, None]))
    return table[keep].tobytes()


def _zigzag(signed: np.ndarray) -> np.ndarray:
    import numpy as np

    signed = signed.astype(np.int64)
    return ((signed << 1) ^ (signed >> 63)).view(np.uint64)


def _uvarints(unsigned: np.ndarray) -> bytes:
    """LEB128 of every element, vectorised: one row of up to 10 bytes per value, then masked."""
    import numpy as np

    if len(unsigned) == 0:
        return b""
    unsigned = unsigned.astype(np.uint64)
    n_bytes = np.ones(len(unsigned), dtype=np.int64)
    for k in range(1, 10):
        n_bytes += unsigned >= np.uint64(1 << (7 * k))
    width = int(n_bytes.max())
    column = np.arange(width)
    table = np.empty((len(unsigned), width), dtype=np.uint8)
    for k in range(width):
        table[:, k] = (unsigned >> np.uint64(7 * k)) & np.uint64(0x7F)
    table |= np.where(column < n_bytes[:, None] - 1, 0x80, 0).astype(np.uint8)
    return table[column < n_bytes[:, None]].tobytes()


def _uvarint_bytes(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"uvarint of {value}: must be non-negative")
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _text_bytes(text: str) -> bytes:
    raw = text.encode()
    return _uvarint_bytes(len(raw)) + raw


# --- decoding (pure Python) ----------------------------------------------------------------------


class _Reader:
    """Cursor over a decoded body; every read names the field it is reading for the error."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def uvarint(self, field: str) -> int:
        return self.uvarints(1, field)[0]

    def uvarints(self, count: int, field: str) -> list[int]:
        body, pos, out = self.body, self.pos, []
        append = out.append
        try:
            for _ in range(count):
                byte = body[pos]
                pos += 1
                if byte < 0x80:
                    append(byte)
                    continue
                result, shift, start = byte & 0x7F, 7, pos - 1
                while True:
                    byte = body[pos]
                    pos += 1
                    result |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        break
                    shift += 7
                    if shift > 63:
                        raise TelemetryDecodeError(
                            f"{field}[{len(out)}]", f"varint at byte {start}", "is longer than 10 bytes"
                        )
                append(result)
        except IndexError:
            raise TelemetryDecodeError(
                f"{field}[{len(out)}]", f"body of {len(body)} bytes", "ends before this field"
            ) from None
        self.pos = pos
        return out

    def byte(self, field: str) -> int:
        if self.pos >= len(self.body):
            raise TelemetryDecodeError(field, f"body of {len(self.body)} bytes", "ends before this field")
        self.pos += 1
        return self.body[self.pos - 1]

    def raw(self, size: int, field: str) -> bytes:
        if self.pos + size > len(self.body):
            raise TelemetryDecodeError(
                field, f"{size} bytes at {self.pos}", f"run past the end of the {len(self.body)}-byte body"
            )
        self.pos += size
        return self.body[self.pos - size : self.pos]

    def text(self, field: str) -> str:
        raw = self.raw(self.uvarint(f"{field}.length"), field)
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise TelemetryDecodeError(field, raw, f"is not UTF-8: {exc.reason}") from None

    def remaining(self) -> int:
        return len(self.body) - self.pos


def decode_compact(payload: bytes) -> dict:
    """Format 2 payload bytes as the plain document TelemetryBatch validates; TelemetryDecodeError if unreadable."""
    body = _decompress(payload)
    reader = _Reader(body)
    thing_name = reader.text("thing_name")
    line_id = reader.text("line_id")
    seq_first = reader.uvarint("seq_first")
    n_samples = reader.uvarint("n_samples")
    if n_samples > MAX_BATCH_SAMPLES:
        raise TelemetryDecodeError("n_samples", n_samples, f"exceeds {MAX_BATCH_SAMPLES} samples per batch")
    # Each sample takes at least 3 more body bytes (its index, time and value): a bound on what to allocate.
    if 3 * n_samples > reader.remaining():
        raise TelemetryDecodeError(
            "n_samples", n_samples, f"needs over {3 * n_samples} bytes, {reader.remaining()} are left in the body"
        )
    n_metrics = reader.uvarint("n_metrics")
    if n_metrics > MAX_BATCH_METRICS:
        raise TelemetryDecodeError("n_metrics", n_metrics, f"exceeds {MAX_BATCH_METRICS} metrics per batch")
    if n_metrics > reader.remaining():
        raise TelemetryDecodeError("n_metrics", n_metrics, f"exceeds the {reader.remaining()} bytes left in the body")
    metrics = [reader.text(f"metrics[{k}]") for k in range(n_metrics)]
    metric_index = reader.uvarints(n_samples, "samples.metric_index")
    counts = [0] * n_metrics
    for i, k in enumerate(metric_index):
        if k >= n_metrics:
            raise TelemetryDecodeError(f"samples.metric_index[{i}]", k, f"is outside metrics (0..{n_metrics - 1})")
        counts[k] += 1
    times, values = [], []
    for k, count in enumerate(counts):
        times.append(_decode_times(reader, count, f"metrics[{k}].time_ms"))
        values.append(_decode_values(reader, count, f"metrics[{k}].values"))
    if reader.remaining():
        raise TelemetryDecodeError("body", f"{reader.remaining()} bytes", "left over after the last metric")
    time_ms, value_column = _interleave(metric_index, times, values)
    return {
        "format_version": COMPACT_FORMAT_VERSION,
        "thing_name": thing_name,
        "line_id": line_id,
        "seq_first": seq_first,
        "seq_last": seq_first + n_samples - 1,
        "samples": {"metrics": metrics, "metric_index": metric_index, "time_ms": time_ms, "values": value_column},
    }


def _decompress(payload: bytes) -> bytes:
    code = payload[len(COMPACT_MAGIC) + 1]
    data = payload[COMPACT_HEADER_BYTES:]
    try:
        compression = Compression(code)
    except ValueError:
        raise TelemetryDecodeError(
            "header.compression", code, f"is not one of {[int(c) for c in Compression]} (none, zlib, xz)"
        ) from None
    try:
        if compression is Compression.NONE:
            body = data
        elif compression is Compression.ZLIB:
            body = inflate_one_stream(zlib.decompressobj(), data, "zlib")
        else:
            body = inflate_one_stream(lzma.LZMADecompressor(format=lzma.FORMAT_XZ), data, "xz")
    except (zlib.error, lzma.LZMAError) as exc:
        raise TelemetryDecodeError(
            "body", f"{len(data)} bytes", f"does not decompress as {compression.name}: {exc}"
        ) from None
    if len(body) > MAX_DECODED_BODY_BYTES:
        raise TelemetryDecodeError("body", f"over {MAX_DECODED_BODY_BYTES} bytes", "decompresses beyond the limit")
    return body


def inflate_one_stream(inflater, data: bytes, kind: str, field: str = "body") -> bytes:
    """One compressed stream, inflated to at most MAX_DECODED_BODY_BYTES (a small payload may inflate
    to gigabytes), and nothing after it (a second stream or trailing data is refused)."""
    body = inflater.decompress(data, MAX_DECODED_BODY_BYTES + 1)
    if len(body) > MAX_DECODED_BODY_BYTES:
        raise TelemetryDecodeError(
            field,
            f"{len(data)} {kind} bytes",
            f"inflate beyond {MAX_DECODED_BODY_BYTES} bytes, the limit (MAX_DECODED_BODY_BYTES)",
        )
    if not inflater.eof:
        raise TelemetryDecodeError(field, f"{len(data)} {kind} bytes", f"is truncated: the {kind} stream does not end")
    if inflater.unused_data:
        raise TelemetryDecodeError(
            field,
            inflater.unused_data[:32],
            f"{len(inflater.unused_data)} bytes follow the {kind} stream (a second stream or trailing data)",
        )
    return body


def _unzigzag(unsigned: list[int]) -> list[int]:
    return [(u >> 1) ^ -(u & 1) for u in unsigned]


def _decode_times(reader: _Reader, count: int, field: str) -> list[int]:
    if count == 0:
        return []
    stream = _unzigzag(reader.uvarints(count, field))
    if count == 1:
        return stream
    deltas = itertools.accumulate(stream[1:])  # first delta, then delta-of-deltas
    return list(itertools.accumulate(deltas, initial=stream[0]))


def _decode_values(reader: _Reader, count: int, field: str) -> list[float]:
    if count == 0:
        return []
    mode = reader.byte(f"{field}.mode")
    if mode == ValueMode.DECIMAL:
        decimals = reader.uvarint(f"{field}.decimals")
        if decimals > MAX_DECIMALS:
            raise TelemetryDecodeError(f"{field}.decimals", decimals, f"exceeds {MAX_DECIMALS}")
        scaled = list(itertools.accumulate(_unzigzag(reader.uvarints(count, field))))
        for i, m in enumerate(scaled):
            if abs(m) > _MAX_EXACT_INT:
                raise TelemetryDecodeError(f"{field}[{i}]", m, "exceeds 2**53 as a scaled integer")
        # int / float: the int converts exactly (<= 2**53) and the division rounds once, as numpy's does.
        scale = float(10**decimals)
        return [m / scale for m in scaled]
    if mode == ValueMode.XOR:
        return _decode_xor(reader, count, field)
    raise TelemetryDecodeError(f"{field}.mode", mode, f"is not one of {[int(m) for m in ValueMode]} (decimal, xor)")


def _decode_xor(reader: _Reader, count: int, field: str) -> list[float]:
    body, pos, previous = reader.body, reader.pos, 0
    words = []
    for i in range(count):
        if pos >= len(body):
            raise TelemetryDecodeError(f"{field}[{i}]", f"body of {len(body)} bytes", "ends before this field")
        control = body[pos]
        leading, trailing = control >> 4, control & 0x0F
        width = 8 - leading - trailing
        if width < 0 or (width == 0 and leading != 8):
            raise TelemetryDecodeError(f"{field}[{i}].control", control, "is not a valid xor control byte")
        if pos + 1 + width > len(body):
            raise TelemetryDecodeError(f"{field}[{i}]", f"body of {len(body)} bytes", "ends before this field")
        middle = int.from_bytes(body[pos + 1 : pos + 1 + width], "big")
        previous ^= middle << (8 * trailing)
        words.append(previous)
        pos += 1 + width
    reader.pos = pos
    return list(struct.unpack(f"<{count}d", struct.pack(f"<{count}Q", *words)))


def _interleave(metric_index: list[int], times: list[list[int]], values: list[list[float]]):
    """Back to sequence order: the k-th occurrence of a metric in metric_index is its k-th sample."""
    time_iters = [iter(column) for column in times]
    value_iters = [iter(column) for column in values]
    time_ms = [next(time_iters[k]) for k in metric_index]
    value_column = [next(value_iters[k]) for k in metric_index]
    return time_ms, value_column
