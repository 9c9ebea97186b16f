"""Drains the durable buffer to the broker within IoT Core's per-connection limits.

Live data (appended within the last live_window_s, plus the flush policy's max latency) goes
first, so after an outage current readings keep flowing; the backlog drains oldest-first in
whatever budget is left. The flush policy (flush_policy.py) holds a partial batch back until it is
full or its oldest sample has waited the policy's max latency; held samples stay in the buffer. A
batch is acknowledged in the buffer only after the transport returned (PUBACK received); any
failure stops the drain and leaves the data buffered for the next attempt.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edgeloop.schemas.telemetry import MAX_PAYLOAD_BYTES

from .append_marks import DEFAULT_LIVE_WINDOW_S
from .batch_cutter import PendingBatch
from .buffer import SampleBuffer
from .flush_policy import FlushPolicy
from .transport import Transport, TransportError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]

_WINDOW_S = 1.0
_EPSILON = 1e-9
# On stop, what is pending is sent for at most this long (Greengrass kills a component that
# does not exit soon after SIGTERM).
SHUTDOWN_FLUSH_S = 5.0
# One INFO line summarising the publishes at most this often; every batch has its DEBUG line.
SUMMARY_INTERVAL_S = 300.0


class TokenBucket:
    """Tokens refill at `rate` per second up to `capacity`; take() succeeds when enough are there.

    In any closed interval of T seconds at most capacity + rate * T tokens can be taken.
    """

    def __init__(self, rate: float, capacity: float, clock: Clock) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"token bucket needs rate > 0 and capacity > 0, got rate={rate}, capacity={capacity}")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` tokens are available (0 when they are now)."""
        if amount > self.capacity:
            raise ValueError(f"asked for {amount} tokens, more than the capacity of {self.capacity}")
        self._refill()
        deficit = amount - self._tokens
        # A rounding-sized deficit counts as none: waiting 1e-17 s would not move a float clock.
        return 0.0 if deficit <= _EPSILON * amount else deficit / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self._tokens -= amount


@dataclass(frozen=True)
class PublisherStats:
    published_batches: int
    published_samples: int
    publish_failures: int
    connect_failures: int
    max_payload_bytes_observed: int
    max_publishes_in_1s: int
    max_bytes_in_1s: int
    published_live_batches: int = 0  # of published_batches, those from the live lane
    published_live_samples: int = 0
    published_bytes: int = 0


class _SlidingWindow:
    """Publishes and bytes within the last second, to report the peak actually reached."""

    def __init__(self) -> None:
        self._events: deque[tuple[float, int]] = deque()
        self._bytes = 0

    def add(self, now: float, size: int) -> tuple[int, int]:
        self._events.append((now, size))
        self._bytes += size
        while self._events and self._events[0][0] <= now - _WINDOW_S:
            self._bytes -= self._events.popleft()[1]
        return len(self._events), self._bytes


def _check_limits(max_publishes_per_s: int, max_bytes_per_s: int, max_payload_bytes: int, live_window_s: float) -> None:
    if max_publishes_per_s < 2:
        raise ValueError(f"max_publishes_per_s={max_publishes_per_s} must be at least 2")
    if max_bytes_per_s <= max_payload_bytes:
        raise ValueError(f"max_bytes_per_s={max_bytes_per_s} must exceed max_payload_bytes={max_payload_bytes}")
    if not 0 <= live_window_s < float("inf"):
        raise ValueError(f"live_window_s={live_window_s!r} must be a finite number >= 0")


class _Hold:
    """Why nothing is sent now: the earliest held batch is due at due_at, or once the pending
    samples reach recut_at_pending (an estimate of when a batch fills); until then no re-cut."""

    def __init__(self, due_at: float, recut_at_pending: int) -> None:
        self.due_at = due_at
        self.recut_at_pending = recut_at_pending


class Publisher:
    """Publishes a SampleBuffer's batches on one topic through a Transport.

    Rate limits: the publish bucket holds 1 token and refills at max_publishes_per_s - 1, the byte
    bucket holds max_payload_bytes and refills at max_bytes_per_s - max_payload_bytes, so any 1 s
    window holds at most max_publishes_per_s publishes and max_bytes_per_s payload bytes (IoT Core
    drops what exceeds 100 publishes/s and 512 KB/s per connection).

    Both lanes share those limits: each publish takes the live lane's next batch if it has one,
    else the backlog's oldest. live_window_s=0 turns the live lane off (everything oldest-first).

    flush decides when a partial batch goes (default FlushPolicy.immediate(): at once; the gateway
    passes its configured policy). Batches are cut to flush.target_batch_bytes.

    clock and sleep are injectable so tests can run on a fake clock; the buffer's clock must be
    the same (the policy compares the buffer's append times with this clock).
    """

    def __init__(
        self,
        buffer: SampleBuffer,
        transport: Transport,
        topic: str,
        *,
        max_publishes_per_s: int = 100,
        max_bytes_per_s: int = 512 * 1024,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        publish_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        live_window_s: float = DEFAULT_LIVE_WINDOW_S,
        flush: FlushPolicy | None = None,
        shutdown_flush_s: float = SHUTDOWN_FLUSH_S,
        clock: Clock = time.monotonic,
        sleep: Sleep | None = None,
    ) -> None:
        _check_limits(max_publishes_per_s, max_bytes_per_s, max_payload_bytes, live_window_s)
        self.buffer = buffer
        self.transport = transport
        self.topic = topic
        self.flush = flush or FlushPolicy.immediate()
        # batches are cut to the policy's target: a batch cut to it is full and goes at once
        self.max_payload_bytes = min(max_payload_bytes, self.flush.target_batch_bytes)
        self.publish_timeout_s = publish_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.live_window_s = live_window_s
        self.shutdown_flush_s = shutdown_flush_s
        # held data is still current: the live lane covers it for as long as the policy holds it
        self._live_lane_s = live_window_s + self.flush.max_latency_s if live_window_s > 0 else 0.0
        buffer.keep_append_times(max(self._live_lane_s, self.flush.max_latency_s))
        self._clock = clock
        self._sleep = sleep
        self._publish_bucket = TokenBucket(max_publishes_per_s - 1, 1, clock)
        self._byte_bucket = TokenBucket(max_bytes_per_s - max_payload_bytes, max_payload_bytes, clock)
        self._window = _SlidingWindow()
        self._failures_in_a_row = 0
        self._offered: tuple[int, int] | None = None  # a range sent without PUBACK: re-sent as is
        self._hold: _Hold | None = None
        self._flush_requested = threading.Event()
        self._summary = _Summary(clock())
        self.published_batches = 0
        self.published_samples = 0
        self.published_bytes = 0
        self.published_live_batches = 0
        self.published_live_samples = 0
        self.publish_failures = 0
        self.connect_failures = 0
        self.max_payload_bytes_observed = 0
        self.max_publishes_in_1s = 0
        self.max_bytes_in_1s = 0
        self.last_error = ""

    def stats(self) -> PublisherStats:
        return PublisherStats(
            published_batches=self.published_batches,
            published_samples=self.published_samples,
            publish_failures=self.publish_failures,
            connect_failures=self.connect_failures,
            max_payload_bytes_observed=self.max_payload_bytes_observed,
            max_publishes_in_1s=self.max_publishes_in_1s,
            max_bytes_in_1s=self.max_bytes_in_1s,
            published_live_batches=self.published_live_batches,
            published_live_samples=self.published_live_samples,
            published_bytes=self.published_bytes,
        )

    def _wait(self, seconds: float, stop: threading.Event | None) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        elif stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)

    def request_flush(self) -> None:
        """Send everything pending without waiting for the policy, until the buffer is empty once
        (thread-safe: e.g. before a planned stop, or at the end of a replayed history)."""
        self._flush_requested.set()

    def publish_pending(
        self, deadline_s: float | None = None, stop: threading.Event | None = None, *, flush: bool = False
    ) -> int:
        """Publish the batches the flush policy says are due, live lane first; returns the samples acknowledged.

        flush=True (or a request_flush() before) sends everything pending, due or not.
        deadline_s is an absolute time on the publisher's clock (time.monotonic() by default): no
        publish starts after it. Returns early when `stop` is set or a publish fails (data stays
        buffered; publish_failures and last_error say why).
        """
        acked = 0
        while stop is None or not stop.is_set():
            batch, live = self._next_batch(flush or self._flush_requested.is_set())
            if batch is None:
                break
            size = len(batch.payload)
            wait = max(self._publish_bucket.wait_s(1), self._byte_bucket.wait_s(size))
            if wait > 0:
                if deadline_s is not None and self._clock() + wait > deadline_s:
                    break
                self._wait(wait, stop)
                continue  # re-check stop and the buckets
            if deadline_s is not None and self._clock() > deadline_s:
                break
            self._publish_bucket.take(1)
            self._byte_bucket.take(size)
            try:
                self.transport.publish(self.topic, batch.payload, self.publish_timeout_s)
            except TransportError as exc:
                self.publish_failures += 1
                self._failures_in_a_row += 1
                self._offered = (batch.seq_first, batch.seq_last)
                self.last_error = str(exc)
                log.warning("publish of seq %d..%d failed: %s", batch.seq_first, batch.seq_last, exc)
                break
            # exactly this range: a live batch sits above backlog that is still pending
            self.buffer.ack_range(batch.seq_first, batch.seq_last)
            self._failures_in_a_row = 0
            self._offered = None
            acked += batch.n_samples
            self._record(batch, live)
        if self._flush_requested.is_set() and self.buffer.pending_samples() == 0:
            self._flush_requested.clear()
        return acked

    def _next_batch(self, flush: bool) -> tuple[PendingBatch | None, bool]:
        """The live lane's next due batch if it has one, else the backlog's oldest due one; and
        whether it is live. None when nothing is pending or the policy holds everything back."""
        hold = self._hold
        if hold is not None and not flush:
            if self._clock() < hold.due_at and self.buffer.pending_samples() < hold.recut_at_pending:
                return None, False
        self._hold = None
        held: list[PendingBatch] = []
        for live in (True, False) if self._live_lane_s > 0 else (False,):
            batch = self._cut(live)
            if batch is None:
                continue
            if flush or self._is_due(batch):
                for other in held:
                    self.buffer.release(other)
                return batch, live
            held.append(batch)
        if held:
            self._hold_back(held)
        return None, False

    def _cut(self, live: bool) -> PendingBatch | None:
        if live:
            return self.buffer.next_live_batch(self.max_payload_bytes, window_s=self._live_lane_s)
        return self.buffer.next_batch(self.max_payload_bytes)

    def _is_due(self, batch: PendingBatch) -> bool:
        if batch.full or (batch.seq_first, batch.seq_last) == self._offered:
            return True
        return self._clock() >= self.flush.due_at(self.buffer.appended_at(batch.seq_first))

    def _hold_back(self, held: list[PendingBatch]) -> None:
        """Forget the held cuts (they may grow) and note when to look again."""
        due_at = min(self.flush.due_at(self.buffer.appended_at(batch.seq_first)) for batch in held)
        largest = max(held, key=lambda batch: batch.n_samples)
        bytes_per_sample = len(largest.payload) / largest.n_samples
        room = max(1, int((self.max_payload_bytes - len(largest.payload)) / bytes_per_sample))
        self._hold = _Hold(due_at, self.buffer.pending_samples() + room)
        for batch in held:
            self.buffer.release(batch)

    def _record(self, batch: PendingBatch, live: bool) -> None:
        size = len(batch.payload)
        self.published_batches += 1
        self.published_samples += batch.n_samples
        self.published_bytes += size
        if live:
            self.published_live_batches += 1
            self.published_live_samples += batch.n_samples
        now = self._clock()
        self.max_payload_bytes_observed = max(self.max_payload_bytes_observed, size)
        publishes, payload_bytes = self._window.add(now, size)
        self.max_publishes_in_1s = max(self.max_publishes_in_1s, publishes)
        self.max_bytes_in_1s = max(self.max_bytes_in_1s, payload_bytes)
        log.debug(
            "published seq %d..%d: %d samples, %d bytes (%s)",
            batch.seq_first,
            batch.seq_last,
            batch.n_samples,
            size,
            "live" if live else "backlog",
        )
        self._summary.add(batch.n_samples, size)
        if now - self._summary.since >= SUMMARY_INTERVAL_S:
            log.info("%s; %d pending", self._summary.line(now), self.buffer.pending_samples())
            self._summary = _Summary(now)

    def backoff_s(self, attempt: int) -> float:
        """Full-jitter exponential backoff: uniform in [0, min(max, min * 2**attempt)]."""
        ceiling = min(self.max_backoff_s, self.min_backoff_s * 2 ** min(attempt, 30))
        return random.uniform(0, ceiling)

    def run(self, stop: threading.Event, idle_sleep_s: float = 0.05) -> None:
        """Background loop: publish while connected, reconnect with jittered backoff while not.

        idle_sleep_s is how often an idle or holding publisher looks at the buffer again. When
        `stop` is set, what is pending is sent for at most shutdown_flush_s if connected."""
        connect_attempts = 0
        while not stop.is_set():
            if not self.transport.is_connected:
                try:
                    self.transport.connect(self.connect_timeout_s)
                    connect_attempts = 0
                    log.info("connected; %d samples pending", self.buffer.pending_samples())
                except TransportError as exc:
                    self.connect_failures += 1
                    self.last_error = str(exc)
                    log.warning("connect failed (attempt %d): %s", connect_attempts + 1, exc)
                    self._wait(self.backoff_s(connect_attempts), stop)
                    connect_attempts += 1
                continue
            self.publish_pending(stop=stop)
            if self._failures_in_a_row:
                self._wait(self.backoff_s(self._failures_in_a_row - 1), stop)
            elif self._hold is not None or self.buffer.pending_samples() == 0:
                self._wait(idle_sleep_s, stop)
        self._flush_on_stop()

    def _flush_on_stop(self) -> None:
        if self.shutdown_flush_s <= 0 or not self.transport.is_connected or self.buffer.pending_samples() == 0:
            return
        acked = self.publish_pending(deadline_s=self._clock() + self.shutdown_flush_s, flush=True)
        log.info("stopping: flushed %d samples, %d still buffered", acked, self.buffer.pending_samples())


class _Summary:
    """Publishes since `since`, for the periodic INFO line."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.batches = 0
        self.samples = 0
        self.bytes = 0

    def add(self, samples: int, size: int) -> None:
        self.batches += 1
        self.samples += samples
        self.bytes += size

    def line(self, now: float) -> str:
        return (
            f"published {self.batches} batches, {self.samples} samples, {self.bytes} bytes "
            f"in the last {now - self.since:.0f} s"
        )
