"""Cutting the buffer's pending samples into encoded TelemetryBatch payloads under a size limit.

A batch is the start of a contiguous run of pending sequence numbers (acknowledging a live range
leaves a hole; a batch never spans one), holds at most GATEWAY_BATCH_SAMPLES samples of at most
MAX_BATCH_METRICS distinct metrics (what ingest accepts) and is
encoded in format 2. The encoded size per sample is learnt from every batch cut, so the first
encode of the next one usually fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeloop.schemas.telemetry import (
    COMPACT_FORMAT_VERSION,
    GATEWAY_BATCH_SAMPLES,
    MAX_BATCH_METRICS,
    ColumnarSamples,
    TelemetryBatch,
)
from edgeloop.schemas.telemetry_codec import encode_batch

from .sample_store import Row, SampleStore

# First guess of the encoded size of one sample (format 2 on 1 Hz sensor data: about 1 byte);
# refined from every encoded batch. Noisier data costs one re-encode of the first batch.
_INITIAL_BYTES_PER_SAMPLE = 1.5
# Aim a little under the limit so the first encode usually fits.
_FILL_SHARE = 0.92
# A cut that used under 1/_GROW_WHEN_ROOM of its aim is cut again larger, at most this often in all.
_GROW_WHEN_ROOM = 1.25
_GROW_ATTEMPTS = 3


@dataclass(frozen=True)
class PendingBatch:
    seq_first: int
    seq_last: int
    payload: bytes  # encode_batch(TelemetryBatch), <= the max_payload_bytes asked for
    n_samples: int
    # a limit (bytes, samples, metrics) ended the cut, not the end of the pending run: waiting
    # would not make this batch any larger
    full: bool = False


class BatchCutter:
    """Cuts the oldest samples of a pending span into one payload of at most max_payload_bytes."""

    def __init__(self, store: SampleStore, *, thing_name: str, line_id: str) -> None:
        self._store = store
        self.thing_name = thing_name
        self.line_id = line_id
        self._bytes_per_sample = _INITIAL_BYTES_PER_SAMPLE

    def cut(self, span: tuple[int, int], max_payload_bytes: int) -> PendingBatch:
        """The batch starting at span[0] (a pending seq), as many samples as fit, up to span[1]."""
        pending = span[1] - span[0] + 1
        n = int(max_payload_bytes * _FILL_SHARE / self._bytes_per_sample)
        n = max(1, min(pending, n, GATEWAY_BATCH_SAMPLES))
        for _ in range(_GROW_ATTEMPTS):
            batch = self._fitted(span[0], n, pending, max_payload_bytes)
            # a per-sample guess learnt on a small batch carries its header: cut larger if it left room
            room = max_payload_bytes * _FILL_SHARE / len(batch.payload)
            if not batch.full or batch.n_samples < n or room < _GROW_WHEN_ROOM or n >= GATEWAY_BATCH_SAMPLES:
                return batch
            n = min(pending, GATEWAY_BATCH_SAMPLES, int(n * room))
        return batch

    def _fitted(self, seq_first: int, n: int, pending: int, max_payload_bytes: int) -> PendingBatch:
        """Up to n rows from seq_first, shrunk until they encode within max_payload_bytes."""
        contiguous = self._contiguous_rows(seq_first, n)
        rows = within_metric_limit(contiguous)
        full = len(rows) < len(contiguous) or (len(contiguous) == n < pending)
        while True:
            payload = encode_rows(self.thing_name, self.line_id, rows)
            self._bytes_per_sample = max(0.5, len(payload) / len(rows))
            if len(payload) <= max_payload_bytes:
                return PendingBatch(rows[0][0], rows[-1][0], payload, len(rows), full)
            if len(rows) == 1:
                raise ValueError(
                    f"max_payload_bytes={max_payload_bytes} is too small for one sample "
                    f"(seq {rows[0][0]} encodes to {len(payload)} bytes)"
                )
            shrunk = int(len(rows) * max_payload_bytes / len(payload) * _FILL_SHARE)
            rows = rows[: max(1, min(shrunk, len(rows) - 1))]
            full = True

    def _contiguous_rows(self, seq_first: int, n: int) -> list[Row]:
        """Up to n pending rows from seq_first (a pending seq) on, stopping at the first hole."""
        # bounded by seq rather than LIMIT: a hole's seqs count against n, so fewer wasted rows past it
        rows = self._store.rows(seq_first, seq_first + n)
        start = rows[0][0]
        if rows[-1][0] - start == len(rows) - 1:
            return rows  # the usual case: no hole
        # seqs rise strictly, so the run ends before the first row whose seq outgrew its index
        low, high = 0, len(rows) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if rows[middle][0] - start == middle:
                low = middle
            else:
                high = middle - 1
        return rows[: low + 1]


def within_metric_limit(rows: list[Row]) -> list[Row]:
    """The longest prefix of rows naming at most MAX_BATCH_METRICS distinct metrics."""
    seen: set[str] = set()
    for index, row in enumerate(rows):
        seen.add(row[1])
        if len(seen) > MAX_BATCH_METRICS:
            return rows[:index]
    return rows


def encode_rows(thing_name: str, line_id: str, rows: list[Row]) -> bytes:
    """Contiguous rows (seq, metric, time_ms, value) as one format-2 TelemetryBatch payload."""
    metric_ids: dict[str, int] = {}
    metric_index = [metric_ids.setdefault(row[1], len(metric_ids)) for row in rows]
    samples = ColumnarSamples(
        metrics=list(metric_ids),
        metric_index=metric_index,
        time_ms=[row[2] for row in rows],
        values=[row[3] for row in rows],
    )
    batch = TelemetryBatch(
        format_version=COMPACT_FORMAT_VERSION,
        thing_name=thing_name,
        line_id=line_id,
        seq_first=rows[0][0],
        seq_last=rows[-1][0],
        samples=samples,
    )
    return encode_batch(batch)
