"""Durable store-and-forward buffer: samples wait in SQLite until the broker acknowledges them.

Every accepted sample gets the next per-device sequence number. Sequence numbers are persisted with
the samples in the same transaction and never reused, so the cloud can drop re-sent duplicates by
(thing_name, seq).

Two lanes read the pending samples, both oldest-first within themselves: the live lane
(next_live_batch) holds what was appended within the last few seconds, the backlog lane
(next_batch) everything older. Acknowledging a live range (ack_range) leaves a hole above the
backlog, so pending samples form one or more contiguous runs; a batch never spans a hole.
Append times live in memory only: after a restart, everything buffered is backlog.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from edgeloop.schemas.common import Identifier, ThingName
from edgeloop.schemas.telemetry import (
    COMPACT_FORMAT_VERSION,
    GATEWAY_BATCH_SAMPLES,
    MAX_PAYLOAD_BYTES,
    ColumnarSamples,
    TelemetryBatch,
    encode_batch,
)

log = logging.getLogger(__name__)

FsyncPolicy = Literal["normal", "full"]

# Rejection reasons (keys of AppendResult.rejected and BufferStats.rejected_total).
REJECT_MALFORMED = "malformed"  # not a (metric, time_ms, value) triple
REJECT_BAD_METRIC = "bad_metric"  # metric name not a string, empty, or longer than MAX_METRIC_CHARS
REJECT_BAD_TIME = "bad_time"  # time_ms not a non-negative integer
REJECT_NON_NUMERIC = "non_numeric"  # value not an int or float
REJECT_NON_FINITE = "non_finite"  # NaN or +-inf

# Bounds one sample's encoded size, so a single sample always fits a 128 KB payload.
MAX_METRIC_CHARS = 256
# Below this the schema and counter pages alone would exceed the cap.
MIN_MAX_BYTES = 64 * 1024
# After a drop the live data shrinks to this share of the cap, so drops come in chunks, not per append.
_DROP_TARGET_SHARE = 0.9
# First guess of the encoded size of one sample (format 2 on 1 Hz sensor data: about 1 byte);
# refined from every encoded batch. Noisier data costs one re-encode of the first batch.
_INITIAL_BYTES_PER_SAMPLE = 1.5
# Aim a little under the limit so the first encode usually fits.
_FILL_SHARE = 0.92
# Data appended within this many seconds is live: it goes out before the backlog.
DEFAULT_LIVE_WINDOW_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY,
    metric TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS identity (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_THING_NAME = TypeAdapter(ThingName)
_IDENTIFIER = TypeAdapter(Identifier)


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    rejected: dict[str, int] = field(default_factory=dict)
    dropped: int = 0  # oldest pending samples deleted by the disk cap during this append


@dataclass(frozen=True)
class PendingBatch:
    seq_first: int
    seq_last: int
    payload: bytes  # encode_batch(TelemetryBatch), <= the max_payload_bytes asked for
    n_samples: int


@dataclass(frozen=True)
class BufferStats:
    accepted_total: int
    rejected_total: dict[str, int]
    dropped_total: int
    acked_total: int
    next_seq: int
    pending: int


def _rejection(sample: object) -> str | None:
    """Why a sample cannot be stored, or None when it is fine."""
    if not isinstance(sample, (tuple, list)) or len(sample) != 3:
        return REJECT_MALFORMED
    metric, time_ms, value = sample
    if not isinstance(metric, str) or not metric or len(metric) > MAX_METRIC_CHARS:
        return REJECT_BAD_METRIC
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms < 0:
        return REJECT_BAD_TIME
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return REJECT_NON_NUMERIC
    if not math.isfinite(value):
        return REJECT_NON_FINITE
    return None


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
        self._clock = clock
        # (clock time, first seq) of each append call, oldest first, kept for the widest live window asked
        self._append_marks: deque[tuple[float, int]] = deque()
        self._marks_kept_s = DEFAULT_LIVE_WINDOW_S
        self._inflight_limit = 0
        self._bytes_per_sample = _INITIAL_BYTES_PER_SAMPLE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE) below.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            self._setup()
        except Exception:
            self._db.close()
            raise

    # --- lifecycle -------------------------------------------------------------------------------
    def _setup(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"{self.path}: SQLite refused WAL mode (journal_mode={mode})")
        self._db.execute(f"PRAGMA synchronous={self.fsync_policy.upper()}")
        self._db.execute("PRAGMA journal_size_limit=8388608")  # truncate the WAL back to 8 MB after checkpoints
        self._db.executescript(_SCHEMA)
        with self._transaction():
            row = self._db.execute("SELECT value FROM identity WHERE name = 'thing_name'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO identity VALUES ('thing_name', ?)", (self.thing_name,))
            elif row[0] != self.thing_name:
                raise ValueError(
                    f"buffer {self.path} holds the sequence of thing_name={row[0]!r}, not {self.thing_name!r}"
                )
        self._page_size = self._db.execute("PRAGMA page_size").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SampleBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- small helpers ---------------------------------------------------------------------------
    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _transaction(self) -> _Tx:
        return SampleBuffer._Tx(self._db)

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def _add_counter(self, name: str, amount: int) -> None:
        if amount:
            self._db.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, amount),
            )

    def _pending_range(self) -> tuple[int, int] | None:
        # Two subqueries: SQLite answers a lone min() or max() from the B-tree, but both in one
        # SELECT scan the whole table (0.5 s at 12 M pending samples).
        first, last = self._db.execute(
            "SELECT (SELECT min(seq) FROM samples), (SELECT max(seq) FROM samples)"
        ).fetchone()
        return None if first is None else (first, last)

    def _pending_count(self) -> int:
        # Exact and O(1): every insert and delete moves one of these persisted counters with it.
        counters = dict(
            self._db.execute(
                "SELECT name, value FROM counters WHERE name IN ('accepted_total', 'acked_total', 'dropped_total')"
            ).fetchall()
        )
        return counters.get("accepted_total", 0) - counters.get("acked_total", 0) - counters.get("dropped_total", 0)

    def _used_bytes(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self._page_size

    # --- producer side ---------------------------------------------------------------------------
    def append(self, samples: Sequence[tuple[str, int, float]]) -> AppendResult:
        """Store the good samples of one call in one transaction; count the bad ones by reason."""
        rows = []
        rejected: dict[str, int] = {}
        first_bad: tuple[str, object] | None = None
        for sample in samples:
            reason = _rejection(sample)
            if reason is None:
                metric, time_ms, value = sample
                rows.append((metric, time_ms, float(value)))
            else:
                rejected[reason] = rejected.get(reason, 0) + 1
                first_bad = first_bad or (reason, sample)
        with self._lock, self._transaction():
            next_seq = self._counter("next_seq")
            self._db.executemany(
                "INSERT INTO samples (seq, metric, time_ms, value) VALUES (?, ?, ?, ?)",
                ((next_seq + i, *row) for i, row in enumerate(rows)),
            )
            self._add_counter("next_seq", len(rows))
            self._add_counter("accepted_total", len(rows))
            if rows:  # if the commit fails the mark only starts the live lane a little early
                self._mark_append(next_seq)
            for reason, count in rejected.items():
                self._add_counter(f"rejected:{reason}", count)
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
        dropped = 0
        target = int(self.max_bytes * _DROP_TARGET_SHARE)
        used = self._used_bytes()
        while used > self.max_bytes:
            span = self._pending_range()
            if span is None:
                break  # nothing left to drop: the bookkeeping alone is over the cap
            pending = self._pending_count()
            per_sample = max(1.0, used / pending)
            n = min(pending, max(1, math.ceil((used - target) / per_sample)))
            cursor = self._db.execute("DELETE FROM samples WHERE seq < ?", (span[0] + n,))
            dropped += cursor.rowcount
            used = self._used_bytes()
        if dropped:
            self._add_counter("dropped_total", dropped)
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
            span = self._pending_range()
            if span is None:
                return None
            batch = self._cached_from(span[0], max_payload_bytes) or self._encode_oldest(span, max_payload_bytes)
            self._inflight = batch
            return batch

    def _cached_from(self, seq_first: int, max_payload_bytes: int) -> PendingBatch | None:
        """An already offered batch starting at seq_first: either lane re-sends it with the same bounds."""
        for batch in (self._inflight, self._live_inflight):
            if batch is not None and batch.seq_first == seq_first and len(batch.payload) <= max_payload_bytes:
                return batch
        return None

    def _encode_oldest(self, span: tuple[int, int], max_payload_bytes: int) -> PendingBatch:
        pending = span[1] - span[0] + 1
        n = int(max_payload_bytes * _FILL_SHARE / self._bytes_per_sample)
        n = max(1, min(pending, n, GATEWAY_BATCH_SAMPLES))
        rows = self._contiguous_rows(span[0], n)
        while True:
            payload = self._encode(rows)
            self._bytes_per_sample = max(0.5, len(payload) / len(rows))
            if len(payload) <= max_payload_bytes:
                return PendingBatch(rows[0][0], rows[-1][0], payload, len(rows))
            if len(rows) == 1:
                raise ValueError(
                    f"max_payload_bytes={max_payload_bytes} is too small for one sample "
                    f"(seq {rows[0][0]} encodes to {len(payload)} bytes)"
                )
            shrunk = int(len(rows) * max_payload_bytes / len(payload) * _FILL_SHARE)
            rows = rows[: max(1, min(shrunk, len(rows) - 1))]

    def _contiguous_rows(self, seq_first: int, n: int) -> list[tuple[int, str, int, float]]:
        """Up to n pending rows from seq_first (a pending seq) on, stopping at the first hole."""
        # bounded by seq rather than LIMIT: a hole's seqs count against n, so fewer wasted rows past it
        rows = self._db.execute(
            "SELECT seq, metric, time_ms, value FROM samples WHERE seq >= ? AND seq < ? ORDER BY seq",
            (seq_first, seq_first + n),
        ).fetchall()
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

    def _encode(self, rows: list[tuple[int, str, int, float]]) -> bytes:
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
            thing_name=self.thing_name,
            line_id=self.line_id,
            seq_first=rows[0][0],
            seq_last=rows[-1][0],
            samples=samples,
        )
        return encode_batch(batch)

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
            live_from = self._live_first_seq(window_s)
            inflight = self._live_inflight
            if inflight is not None and (live_from is None or inflight.seq_first < live_from):
                self._live_inflight = inflight = None
            if live_from is None:
                return None
            if inflight is not None and len(inflight.payload) <= max_payload_bytes:
                return inflight
            first, last = self._db.execute(
                "SELECT min(seq), max(seq) FROM samples WHERE seq >= ?", (live_from,)
            ).fetchone()
            if first is None:
                return None
            batch = self._cached_from(first, max_payload_bytes) or self._encode_oldest((first, last), max_payload_bytes)
            self._live_inflight = batch
            return batch

    def _mark_append(self, seq_first: int) -> None:
        now = self._clock()
        marks = self._append_marks
        marks.append((now, seq_first))
        while marks[0][0] < now - self._marks_kept_s:  # bounded memory even if nobody asks for live data
            marks.popleft()

    def _live_first_seq(self, window_s: float) -> int | None:
        """The first seq appended within the last window_s seconds, or None when nothing was."""
        self._marks_kept_s = max(self._marks_kept_s, window_s)
        horizon = self._clock() - window_s
        for appended_at, seq_first in self._append_marks:
            if appended_at >= horizon:
                return seq_first
        return None

    def ack(self, seq_last: int) -> None:
        """The broker acknowledged everything up to seq_last: forget it."""
        self._delete_acknowledged("seq <= ?", (seq_last,), lambda batch: batch.seq_first <= seq_last)

    def ack_range(self, seq_first: int, seq_last: int) -> None:
        """The broker acknowledged the batch seq_first..seq_last: forget exactly those samples."""
        if seq_first > seq_last:
            raise ValueError(f"ack_range: seq_first={seq_first} is after seq_last={seq_last}")
        self._delete_acknowledged(
            "seq BETWEEN ? AND ?",
            (seq_first, seq_last),
            lambda batch: batch.seq_first <= seq_last and seq_first <= batch.seq_last,
        )

    def _delete_acknowledged(
        self, where: str, params: tuple[int, ...], overlaps: Callable[[PendingBatch], bool]
    ) -> None:
        with self._lock, self._transaction():
            cursor = self._db.execute(f"DELETE FROM samples WHERE {where}", params)
            self._add_counter("acked_total", cursor.rowcount)
            # a cached batch that lost samples would re-send a range that no longer matches the table
            if self._inflight is not None and overlaps(self._inflight):
                self._inflight = None
            if self._live_inflight is not None and overlaps(self._live_inflight):
                self._live_inflight = None

    # --- observation -----------------------------------------------------------------------------
    def pending_samples(self) -> int:
        with self._lock:
            return self._pending_count()

    def stats(self) -> BufferStats:
        with self._lock:
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return BufferStats(
            accepted_total=counters.get("accepted_total", 0),
            rejected_total={
                name.split(":", 1)[1]: value for name, value in counters.items() if name.startswith("rejected:")
            },
            dropped_total=counters.get("dropped_total", 0),
            acked_total=counters.get("acked_total", 0),
            next_seq=counters.get("next_seq", 0),
            pending=counters.get("accepted_total", 0)
            - counters.get("acked_total", 0)
            - counters.get("dropped_total", 0),
        )
