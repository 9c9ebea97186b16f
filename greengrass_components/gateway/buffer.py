"""Durable store-and-forward buffer: samples wait in SQLite until the broker acknowledges them.

Every accepted sample gets the next per-device sequence number. Sequence numbers are persisted with
the samples in the same transaction and never reused, so the cloud can drop re-sent duplicates by
(thing_name, seq).

Two lanes read the pending samples, both oldest-first within themselves: the live lane
(next_live_batch) holds what was appended within the last few seconds, the backlog lane
(next_batch) everything older. Acknowledging a live range (ack_range) leaves a hole above the
backlog, so pending samples form one or more contiguous runs; a batch never spans a hole.
Append times live in memory only: after a restart, everything buffered is backlog.

Beside this module: the SQLite tables and counters (sample_store), cutting and encoding batches
(batch_cutter), the append times (append_marks) and what makes a sample unstorable (samples).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from edgeloop.schemas.common import Identifier, ThingName
from edgeloop.schemas.telemetry import MAX_PAYLOAD_BYTES

from .append_marks import DEFAULT_LIVE_WINDOW_S, AppendMarks
from .batch_cutter import BatchCutter, PendingBatch
from .sample_store import FsyncPolicy, SampleStore, pending_of
from .samples import Sample, rejection

log = logging.getLogger(__name__)

# Below this the schema and counter pages alone would exceed the cap.
MIN_MAX_BYTES = 64 * 1024
# After a drop the live data shrinks to this share of the cap, so drops come in chunks, not per append.
_DROP_TARGET_SHARE = 0.9

_THING_NAME = TypeAdapter(ThingName)
_IDENTIFIER = TypeAdapter(Identifier)


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    rejected: dict[str, int] = field(default_factory=dict)
    dropped: int = 0  # oldest pending samples deleted by the disk cap during this append


@dataclass(frozen=True)
class BufferStats:
    accepted_total: int
    rejected_total: dict[str, int]
    dropped_total: int
    acked_total: int
    next_seq: int
    pending: int


def _validated(adapter: TypeAdapter, field_name: str, value: str) -> str:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise ValueError(f"{field_name}={value!r} is invalid: {exc.errors()[0]['msg']}") from None


class SampleBuffer:
    """A SQLite (WAL) queue of samples for one device, shared by a producer and a publisher thread.

    fsync_policy decides what survives what:
      - "normal" (default, SQLite `synchronous=NORMAL`): every committed append survives a crash or
        SIGKILL of the process, because the WAL is written before commit returns and the kernel
        keeps it. On power loss or an OS crash, appends committed since the last WAL checkpoint may
        be lost (the database itself stays consistent). No fsync per append: fast.
      - "full" (`synchronous=FULL`): the WAL is fsynced at every commit, so every committed append
        also survives power loss, at the cost of one fsync per append call.

    Sequence numbers are never reused, whatever the policy: the counter is committed with the samples.

    max_bytes caps the live database pages (samples plus bookkeeping); the WAL adds up to its
    checkpoint size (about 4 MB) on top. When an append exceeds the cap, the oldest pending samples
    are deleted, counted exactly in dropped_total (persisted) and reported in a WARNING line.
    """

    def __init__(
        self,
        path: Path,
        *,
        thing_name: str,
        line_id: str,
        max_bytes: int | None = None,
        fsync_policy: FsyncPolicy = "normal",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.thing_name = _validated(_THING_NAME, "thing_name", thing_name)
        self.line_id = _validated(_IDENTIFIER, "line_id", line_id)
        if fsync_policy not in ("normal", "full"):
            raise ValueError(f"fsync_policy={fsync_policy!r} must be 'normal' or 'full'")
        if max_bytes is not None and max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"max_bytes={max_bytes} is below the minimum of {MIN_MAX_BYTES} bytes")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.fsync_policy = fsync_policy
        self._lock = threading.Lock()
        self._inflight: PendingBatch | None = None  # backlog lane
        self._live_inflight: PendingBatch | None = None
        self._append_marks = AppendMarks(clock)
        self._store = SampleStore(self.path, thing_name=self.thing_name, fsync_policy=fsync_policy)
        self._cutter = BatchCutter(self._store, thing_name=self.thing_name, line_id=self.line_id)

    # --- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._store.close()

    def __enter__(self) -> SampleBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- producer side ---------------------------------------------------------------------------
    def append(self, samples: Sequence[Sample]) -> AppendResult:
        """Store the good samples of one call in one transaction; count the bad ones by reason."""
        rows = []
        rejected: dict[str, int] = {}
        first_bad: tuple[str, object] | None = None
        for sample in samples:
            reason = rejection(sample)
            if reason is None:
                metric, time_ms, value = sample
                rows.append((metric, time_ms, float(value)))
            else:
                rejected[reason] = rejected.get(reason, 0) + 1
                first_bad = first_bad or (reason, sample)
        store = self._store
        with self._lock, store.transaction():
            next_seq = store.counter("next_seq")
            store.insert(next_seq, rows)
            store.add_counter("next_seq", len(rows))
            store.add_counter("accepted_total", len(rows))
            if rows:  # if the commit fails the mark only starts the live lane a little early
                self._append_marks.mark(next_seq)
            for reason, count in rejected.items():
                store.add_counter(f"rejected:{reason}", count)
            dropped = self._enforce_cap()
        if first_bad is not None:
            reason, sample = first_bad
            log.warning(
                "%s: rejected %d of %d samples %s; first: sample=%r (%s)",
                self.thing_name,
                sum(rejected.values()),
                len(samples),
                rejected,
                sample,
                reason,
            )
        if dropped:
            log.warning(
                "%s: buffer over its cap of %d bytes: dropped the %d oldest pending samples",
                self.thing_name,
                self.max_bytes,
                dropped,
            )
        return AppendResult(accepted=len(rows), rejected=rejected, dropped=dropped)

    def _enforce_cap(self) -> int:
        """Inside the append transaction: delete the oldest samples until the cap holds."""
        if self.max_bytes is None:
            return 0
        store = self._store
        dropped = 0
        target = int(self.max_bytes * _DROP_TARGET_SHARE)
        used = store.used_bytes()
        while used > self.max_bytes:
            span = store.pending_range()
            if span is None:
                break  # nothing left to drop: the bookkeeping alone is over the cap
            pending = store.pending_count()
            per_sample = max(1.0, used / pending)
            n = min(pending, max(1, math.ceil((used - target) / per_sample)))
            dropped += store.delete_below(span[0] + n)
            used = store.used_bytes()
        if dropped:
            store.add_counter("dropped_total", dropped)
            self._inflight = self._live_inflight = None  # their oldest samples may be gone
        return dropped

    # --- publisher side --------------------------------------------------------------------------
    def next_batch(self, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> PendingBatch | None:
        """The oldest unacknowledged samples as one encoded TelemetryBatch of at most max_payload_bytes.

        The batch is the start of the oldest contiguous run of pending samples. Until it is
        acknowledged, repeated calls return the same sequence range (a re-send after a lost PUBACK),
        also when the live lane offered that range first.
        """
        with self._lock:
            inflight = self._inflight
            if inflight is not None and len(inflight.payload) <= max_payload_bytes:
                return inflight
            span = self._store.pending_range()
            if span is None:
                return None
            batch = self._cached_from(span[0], max_payload_bytes) or self._cutter.cut(span, max_payload_bytes)
            self._inflight = batch
            return batch

    def _cached_from(self, seq_first: int, max_payload_bytes: int) -> PendingBatch | None:
        """An already offered batch starting at seq_first: either lane re-sends it with the same bounds."""
        for batch in (self._inflight, self._live_inflight):
            if batch is not None and batch.seq_first == seq_first and len(batch.payload) <= max_payload_bytes:
                return batch
        return None

    def next_live_batch(
        self, max_payload_bytes: int = MAX_PAYLOAD_BYTES, *, window_s: float = DEFAULT_LIVE_WINDOW_S
    ) -> PendingBatch | None:
        """The oldest pending samples among those appended within the last window_s seconds, or None.

        Append times are kept in memory only: after a restart nothing is live until the next
        append. Like next_batch, it returns the same range again until that range is
        acknowledged, unless the range has aged out of the window (then the backlog lane owns it).
        """
        if window_s < 0 or not math.isfinite(window_s):
            raise ValueError(f"window_s={window_s!r} must be a finite number >= 0")
        with self._lock:
            live_from = self._append_marks.first_seq_within(window_s)
            inflight = self._live_inflight
            if inflight is not None and (live_from is None or inflight.seq_first < live_from):
                self._live_inflight = inflight = None
            if live_from is None:
                return None
            if inflight is not None and len(inflight.payload) <= max_payload_bytes:
                return inflight
            span = self._store.pending_range(from_seq=live_from)
            if span is None:
                return None
            batch = self._cached_from(span[0], max_payload_bytes) or self._cutter.cut(span, max_payload_bytes)
            self._live_inflight = batch
            return batch

    def release(self, batch: PendingBatch) -> None:
        """The publisher holds `batch` back and never offered it to the broker: forget the cut, so
        the next call cuts afresh and the batch can grow (a batch once offered keeps its bounds)."""
        with self._lock:
            if self._inflight is batch:
                self._inflight = None
            if self._live_inflight is batch:
                self._live_inflight = None

    def keep_append_times(self, seconds: float) -> None:
        """Remember append times at least this long (appended_at answers None beyond it)."""
        with self._lock:
            self._append_marks.keep_for(seconds)

    def appended_at(self, seq: int) -> float | None:
        """When `seq` was appended (the buffer's clock), or None: before a restart or longer ago than kept."""
        with self._lock:
            return self._append_marks.appended_at(seq)

    def ack(self, seq_last: int) -> None:
        """The broker acknowledged everything up to seq_last: forget it."""
        self._delete_acknowledged(None, seq_last)

    def ack_range(self, seq_first: int, seq_last: int) -> None:
        """The broker acknowledged the batch seq_first..seq_last: forget exactly those samples."""
        if seq_first > seq_last:
            raise ValueError(f"ack_range: seq_first={seq_first} is after seq_last={seq_last}")
        self._delete_acknowledged(seq_first, seq_last)

    def _delete_acknowledged(self, seq_first: int | None, seq_last: int) -> None:
        """Forget seq_first..seq_last (None: everything up to seq_last) and the cached batches it touches."""

        def overlaps(batch: PendingBatch | None) -> bool:
            return (
                batch is not None and batch.seq_first <= seq_last and (seq_first is None or seq_first <= batch.seq_last)
            )

        with self._lock, self._store.transaction():
            self._store.add_counter("acked_total", self._store.delete_range(seq_first, seq_last))
            # a cached batch that lost samples would re-send a range that no longer matches the table
            if overlaps(self._inflight):
                self._inflight = None
            if overlaps(self._live_inflight):
                self._live_inflight = None

    # --- observation -----------------------------------------------------------------------------
    def pending_samples(self) -> int:
        with self._lock:
            return self._store.pending_count()

    def stats(self) -> BufferStats:
        with self._lock:
            counters = self._store.counters()
        return BufferStats(
            accepted_total=counters.get("accepted_total", 0),
            rejected_total={
                name.split(":", 1)[1]: value for name, value in counters.items() if name.startswith("rejected:")
            },
            dropped_total=counters.get("dropped_total", 0),
            acked_total=counters.get("acked_total", 0),
            next_seq=counters.get("next_seq", 0),
            pending=pending_of(counters),
        )
