"""The publisher: rate limits, ack only after PUBACK, oldest first, reconnect loop."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from pathlib import Path

import pytest
from gateway_helpers import FakeClock, max_in_window

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.publisher import Publisher, TokenBucket
from edgeloop.greengrass_components.gateway.transport import ConnectFailed, PublishFailed, Transport
from edgeloop.schemas.telemetry_codec import decode_batch

T0 = 1_760_000_000_000
TOPIC = "edgeloop/gw-1/telemetry"

pytestmark = pytest.mark.timeout(60)


class FakeTransport:
    """In-memory broker link: records what was published and when; can fail on demand."""

    def __init__(self, clock: FakeClock | None = None, latency_s: float = 0.0) -> None:
        self.clock = clock
        self.latency_s = latency_s
        self.connected = True
        self.published: list[tuple[float, str, bytes]] = []
        self.fail_after: int | None = None  # fail every publish after this many successes
        self.connect_calls = 0
        self.connect_failures_left = 0

    @property
    def is_connected(self) -> bool:
        return self.connected

    def connect(self, timeout_s: float) -> None:
        self.connect_calls += 1
        if self.connect_failures_left:
            self.connect_failures_left -= 1
            raise ConnectFailed("broker unreachable")
        self.connected = True

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        if self.clock is not None:
            self.clock.sleep(self.latency_s)
        if not self.connected or (self.fail_after is not None and len(self.published) >= self.fail_after):
            raise PublishFailed("no PUBACK")
        now = self.clock() if self.clock is not None else time.monotonic()
        self.published.append((now, topic, payload))

    def subscribe(self, topic_filter, callback, timeout_s) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        self.connected = False


def fill(buffer: SampleBuffer, n: int) -> None:
    buffer.append([(f"m{i % 12}", T0 + i * 100, 50 + math.sin(i) * 3.3) for i in range(n)])


@pytest.fixture
def buffer(tmp_path: Path):
    with SampleBuffer(tmp_path / "b.sqlite", thing_name="gw-1", line_id="line-1") as buf:
        yield buf


def test_fake_transport_satisfies_the_protocol():
    assert isinstance(FakeTransport(), Transport)


def test_publish_rate_limit_holds_in_every_one_second_window(buffer: SampleBuffer):
    clock = FakeClock()
    transport = FakeTransport(clock)
    fill(buffer, 16_000)  # wire format 2 fits about 230 of these samples in 2000 bytes
    publisher = Publisher(
        buffer, transport, TOPIC, max_publishes_per_s=10, max_payload_bytes=2_000, clock=clock, sleep=clock.sleep
    )
    published = publisher.publish_pending()
    assert published == 16_000 and buffer.pending_samples() == 0
    times = [t for t, _, _ in transport.published]
    assert len(times) > 40
    assert max_in_window(times) <= 10
    assert publisher.max_publishes_in_1s <= 10
    assert publisher.max_publishes_in_1s >= 9  # the limiter paces near the limit, not far below it
    assert publisher.max_payload_bytes_observed <= 2_000


def test_byte_rate_limit_holds_in_every_one_second_window(buffer: SampleBuffer):
    clock = FakeClock()
    transport = FakeTransport(clock)
    fill(buffer, 40_000)
    publisher = Publisher(
        buffer,
        transport,
        TOPIC,
        max_publishes_per_s=100,
        max_bytes_per_s=30_000,
        max_payload_bytes=10_000,
        clock=clock,
        sleep=clock.sleep,
    )
    publisher.publish_pending()
    events = [(t, len(p)) for t, _, p in transport.published]
    window: deque[tuple[float, int]] = deque()
    in_window = 0
    for t, size in events:
        window.append((t, size))
        in_window += size
        while window[0][0] < t - 1.0:
            in_window -= window.popleft()[1]
        assert in_window <= 30_000
    assert publisher.max_bytes_in_1s <= 30_000
    elapsed = events[-1][0] - events[0][0]
    assert sum(s for _, s in events) / elapsed > 15_000  # and it does not crawl


def test_rate_limit_with_real_time_on_small_numbers(buffer: SampleBuffer):
    transport = FakeTransport()
    fill(buffer, 2_000)  # more than 2.5 s at 5 publishes/s can take
    publisher = Publisher(buffer, transport, TOPIC, max_publishes_per_s=5, max_payload_bytes=1_200)
    started = time.monotonic()
    publisher.publish_pending(deadline_s=started + 2.5)
    times = [t for t, _, _ in transport.published]
    assert len(times) >= 8
    assert max_in_window(times) <= 5


def test_failure_keeps_data_and_stops(buffer: SampleBuffer):
    transport = FakeTransport()
    transport.fail_after = 2
    fill(buffer, 2_000)
    publisher = Publisher(buffer, transport, TOPIC, max_payload_bytes=2_000, max_publishes_per_s=1000)
    acked = publisher.publish_pending()
    assert len(transport.published) == 2
    assert publisher.publish_failures == 1
    assert acked == sum(decode_batch(p).seq_last - decode_batch(p).seq_first + 1 for _, _, p in transport.published)
    assert buffer.pending_samples() == 2_000 - acked
    transport.fail_after = None
    publisher.publish_pending()
    seqs = []
    for _, _, payload in transport.published:
        batch = decode_batch(payload)
        seqs += range(batch.seq_first, batch.seq_last + 1)
    assert seqs == list(range(2_000))  # nothing lost, nothing skipped, oldest first


def test_batch_is_resent_whole_after_a_failed_publish(buffer: SampleBuffer):
    transport = FakeTransport()
    fill(buffer, 500)
    publisher = Publisher(buffer, transport, TOPIC, max_payload_bytes=2_000)
    transport.fail_after = 0
    publisher.publish_pending()
    attempted = buffer.next_batch(2_000)
    transport.fail_after = None
    publisher.publish_pending()
    first = decode_batch(transport.published[0][2])
    assert (first.seq_first, first.seq_last) == (attempted.seq_first, attempted.seq_last)


def test_disconnected_transport_fails_fast_and_keeps_data(buffer: SampleBuffer):
    transport = FakeTransport()
    transport.connected = False
    fill(buffer, 100)
    publisher = Publisher(buffer, transport, TOPIC)
    assert publisher.publish_pending() == 0
    assert buffer.pending_samples() == 100


def test_deadline_stops_before_the_buffer_is_empty(buffer: SampleBuffer):
    clock = FakeClock()
    transport = FakeTransport(clock)
    fill(buffer, 5_000)
    publisher = Publisher(
        buffer, transport, TOPIC, max_publishes_per_s=10, max_payload_bytes=1_500, clock=clock, sleep=clock.sleep
    )
    publisher.publish_pending(deadline_s=clock() + 2.0)
    assert 0 < buffer.pending_samples() < 5_000
    assert transport.published[-1][0] <= 1002.0 + 1e-9


def test_stop_event_ends_the_drain(buffer: SampleBuffer):
    transport = FakeTransport()
    fill(buffer, 5_000)
    publisher = Publisher(buffer, transport, TOPIC, max_publishes_per_s=5, max_payload_bytes=1_500)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    publisher.publish_pending(stop=stop)
    assert time.monotonic() - started < 1.5
    assert buffer.pending_samples() > 0


def test_run_reconnects_with_backoff_then_drains(buffer: SampleBuffer):
    transport = FakeTransport()
    transport.connected = False
    transport.connect_failures_left = 3
    fill(buffer, 1_000)
    publisher = Publisher(buffer, transport, TOPIC, min_backoff_s=0.01, max_backoff_s=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,), kwargs={"idle_sleep_s": 0.01})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while buffer.pending_samples() and time.monotonic() < deadline:
            time.sleep(0.01)
        fill(buffer, 10)  # new data while idle is picked up too
        while buffer.pending_samples() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert buffer.pending_samples() == 0
    assert transport.connect_calls == 4
    assert publisher.connect_failures == 3
    assert publisher.published_samples == 1_010


def test_backoff_is_jittered_and_capped():
    publisher = Publisher.__new__(Publisher)
    publisher.min_backoff_s, publisher.max_backoff_s = 0.5, 4.0
    draws = [publisher.backoff_s(attempt) for attempt in range(10) for _ in range(20)]
    assert all(0 <= d <= 4.0 for d in draws)
    assert len(set(draws)) > 100
    assert max(publisher.backoff_s(0) for _ in range(200)) <= 0.5


def test_token_bucket_bounds_takes_per_window():
    clock = FakeClock()
    bucket = TokenBucket(rate=9, capacity=1, clock=clock)
    times = []
    while clock() < 1005:
        wait = bucket.wait_s(1)
        if wait:
            clock.sleep(wait)
            continue
        bucket.take(1)
        times.append(clock())
    assert max_in_window(times) <= 10
    with pytest.raises(ValueError, match="capacity"):
        bucket.wait_s(2)


def test_bad_limits_are_refused(buffer: SampleBuffer):
    with pytest.raises(ValueError, match="max_bytes_per_s=1000"):
        Publisher(buffer, FakeTransport(), TOPIC, max_bytes_per_s=1000)
