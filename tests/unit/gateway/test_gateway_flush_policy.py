"""The flush policy on a fake clock: a batch goes when full or when its oldest sample has waited
max_latency_s, never earlier; backlog drains at full rate; held data stays durable."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
from gateway_helpers import FakeClock, max_in_window
from pydantic import ValidationError

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.greengrass_components.gateway.flush_policy import FlushPolicy
from edgeloop.greengrass_components.gateway.publisher import Publisher
from edgeloop.greengrass_components.gateway.transport import PublishFailed
from edgeloop.schemas.telemetry import MAX_PAYLOAD_BYTES
from edgeloop.schemas.telemetry_codec import decode_batch

T0_MS = 1_760_000_000_000
TOPIC = "edgeloop/gw-1/telemetry"
METRICS = 10

pytestmark = pytest.mark.timeout(120)


class Broker:
    """Acknowledges every publish (unless offline) and records (clock time, seq_first, seq_last, bytes)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.published: list[tuple[float, int, int, int]] = []
        self.online = True

    @property
    def is_connected(self) -> bool:
        return self.online

    def connect(self, timeout_s: float) -> None:
        if not self.online:
            raise PublishFailed("offline")

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        if not self.online:
            raise PublishFailed("no PUBACK")
        batch = decode_batch(payload)
        self.published.append((self.clock(), batch.seq_first, batch.seq_last, len(payload)))

    def subscribe(self, topic_filter, callback, timeout_s) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        pass

    def seqs(self) -> list[int]:
        return [seq for _, first, last, _ in self.published for seq in range(first, last + 1)]


class OneHertzAdapter:
    """10 metrics once a second into the buffer; remembers when each seq was appended."""

    def __init__(self, buffer: SampleBuffer, clock: FakeClock) -> None:
        self.buffer = buffer
        self.clock = clock
        self.second = 0
        self.appended_at: dict[int, float] = {}

    def deliver(self) -> None:
        first = self.buffer.stats().next_seq
        time_ms = T0_MS + self.second * 1000
        # noisy values, so a batch's size grows with its samples as real sensor data does
        self.buffer.append([(f"m{m}", time_ms, 50 + 3.3 * math.sin(self.second * 7.1 + m)) for m in range(METRICS)])
        self.appended_at.update((first + i, self.clock()) for i in range(METRICS))
        self.second += 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def buffer(tmp_path: Path, clock: FakeClock):
    with SampleBuffer(tmp_path / "b.sqlite", thing_name="gw-1", line_id="line-1", clock=clock) as buf:
        yield buf


def ten_minutes_at_1_hz(
    buffer: SampleBuffer, clock: FakeClock, publisher: Publisher, broker: Broker
) -> OneHertzAdapter:
    """600 deliveries, one a second, with a publish_pending() after each (what Publisher.run does)."""
    adapter = OneHertzAdapter(buffer, clock)
    for _ in range(600):
        adapter.deliver()
        publisher.publish_pending()
        clock.sleep(1.0)
    return adapter


def waits(broker: Broker, adapter: OneHertzAdapter) -> list[float]:
    """Per message: how long its oldest sample had waited when it was sent."""
    return [sent - adapter.appended_at[first] for sent, first, _, _ in broker.published]


@pytest.mark.parametrize("live_window_s", [10.0, 0.0], ids=["live-lane", "backlog-only"])
def test_one_hertz_for_ten_minutes_makes_a_message_a_minute(buffer, clock, live_window_s):
    broker = Broker(clock)
    publisher = Publisher(buffer, broker, TOPIC, flush=FlushPolicy(), live_window_s=live_window_s, clock=clock)
    adapter = ten_minutes_at_1_hz(buffer, clock, publisher, broker)
    # every message waited for its oldest sample to reach the 60 s bound, and no longer than one step past it
    assert all(60.0 <= wait <= 61.0 for wait in waits(broker, adapter)), waits(broker, adapter)
    assert len(broker.published) == 9  # sent at t = 60, 121, ..., 548; the last 51 s are still held
    assert buffer.pending_samples() == 51 * METRICS
    publisher.publish_pending(flush=True)
    assert len(broker.published) == 10 and buffer.pending_samples() == 0
    assert broker.seqs() == list(range(600 * METRICS))
    assert publisher.stats().published_bytes == sum(size for *_, size in broker.published)


def test_today_immediate_policy_sends_every_delivery(buffer, clock):
    broker = Broker(clock)
    publisher = Publisher(buffer, broker, TOPIC, flush=FlushPolicy.immediate(), clock=clock)
    adapter = ten_minutes_at_1_hz(buffer, clock, publisher, broker)
    assert len(broker.published) == 600
    assert all(wait == 0.0 for wait in waits(broker, adapter))
    # a Publisher built without a policy behaves the same (tools and benches that predate the policy)
    assert Publisher(buffer, broker, TOPIC).flush == FlushPolicy.immediate()


def test_size_limited_policy_sends_full_batches_before_the_latency(buffer, clock):
    broker = Broker(clock)
    target = 2_048
    policy = FlushPolicy(max_latency_s=3_600, target_batch_bytes=target)
    publisher = Publisher(buffer, broker, TOPIC, flush=policy, clock=clock)
    ten_minutes_at_1_hz(buffer, clock, publisher, broker)
    sizes = [size for *_, size in broker.published]
    # every message sent was full (at the target, never past it), long before the latency was due;
    # what is left is less than one batch
    assert len(sizes) >= 10 and all(0.75 * target <= size <= target for size in sizes), sizes
    assert broker.published[0][0] < 1000.0 + 300
    assert len(buffer.next_batch(MAX_PAYLOAD_BYTES).payload) < target


def test_holding_does_not_recut_the_batch_every_poll(buffer, clock):
    """Publisher.run polls every idle_sleep_s; while it holds a batch it only counts the pending samples."""
    broker = Broker(clock)
    publisher = Publisher(buffer, broker, TOPIC, flush=FlushPolicy(), clock=clock, sleep=clock.sleep)
    cuts = [0]
    cut = buffer._cutter.cut

    def counted(*args, **kwargs):
        cuts[0] += 1
        return cut(*args, **kwargs)

    buffer._cutter.cut = counted
    adapter = OneHertzAdapter(buffer, clock)
    stop = threading.Event()
    publisher._sleep = lambda seconds: advance(seconds)

    def advance(seconds: float) -> None:
        before = clock()
        clock.sleep(seconds)
        if math.floor(clock()) > math.floor(before):
            adapter.deliver()
        if clock() >= 1000.0 + 300:
            stop.set()

    adapter.deliver()
    publisher.run(stop, idle_sleep_s=0.05)
    assert len(broker.published) == 5  # 300 s of data: four due batches, then the rest on stop
    assert all(wait <= 60.0 + 0.05 + 1e-6 for wait in waits(broker, adapter)[:-1])
    assert cuts[0] <= 4 * len(broker.published), cuts[0]  # about 6,000 polls; cuts only when a batch is due
    assert buffer.pending_samples() == 0


def test_stop_flushes_what_is_pending_when_connected_and_keeps_it_when_not(tmp_path, clock):
    for online in (True, False):
        broker = Broker(clock)
        broker.online = online
        with SampleBuffer(tmp_path / f"{online}.sqlite", thing_name="gw-1", line_id="line-1", clock=clock) as buffer:
            OneHertzAdapter(buffer, clock).deliver()
            publisher = Publisher(buffer, broker, TOPIC, flush=FlushPolicy(), clock=clock, sleep=clock.sleep)
            stop = threading.Event()
            stop.set()
            publisher.run(stop)
            assert buffer.pending_samples() == (0 if online else METRICS)
            assert len(broker.published) == (1 if online else 0)


def test_a_crash_while_holding_loses_nothing_and_the_restart_sends_at_once(tmp_path, clock):
    path = tmp_path / "b.sqlite"
    broker = Broker(clock)
    buffer = SampleBuffer(path, thing_name="gw-1", line_id="line-1", clock=clock)
    publisher = Publisher(buffer, broker, TOPIC, flush=FlushPolicy(), clock=clock)
    adapter = OneHertzAdapter(buffer, clock)
    for _ in range(30):
        adapter.deliver()
        publisher.publish_pending()
        clock.sleep(1.0)
    assert broker.published == [] and buffer.pending_samples() == 30 * METRICS
    buffer._store.close()  # the process dies: no flush, no ack
    with SampleBuffer(path, thing_name="gw-1", line_id="line-1", clock=clock) as restarted:
        assert restarted.pending_samples() == 30 * METRICS
        # append times died with the process: how long the data waited is unknown, so it is due
        Publisher(restarted, broker, TOPIC, flush=FlushPolicy(), clock=clock).publish_pending()
        assert restarted.pending_samples() == 0
    assert broker.seqs() == list(range(30 * METRICS))


def test_backlog_after_an_outage_drains_at_full_rate_and_holds_only_young_data(buffer, clock):
    broker = Broker(clock)
    policy = FlushPolicy(max_latency_s=60, target_batch_bytes=1_024)
    publisher = Publisher(buffer, broker, TOPIC, flush=policy, max_publishes_per_s=10, clock=clock, sleep=clock.sleep)
    adapter = OneHertzAdapter(buffer, clock)
    broker.online = False
    for second in range(1_800):  # a 30-minute outage; Publisher.run would retry after its backoff
        adapter.deliver()
        if second % 30 == 0:
            publisher.publish_pending()
        clock.sleep(1.0)
    failures = publisher.publish_failures
    broker.online = True
    reconnected = clock()
    publisher.publish_pending()
    assert failures > 0 and len(broker.published) > 10
    sent = set(broker.seqs())
    # in one call: everything appended 60 s or more before reconnecting went out (within the quota);
    # what stays is younger than the latency bound
    assert all(seq in sent for seq, at in adapter.appended_at.items() if reconnected - at >= 60)
    assert all(reconnected - adapter.appended_at[seq] < 60 for seq in set(adapter.appended_at) - sent)
    assert max_in_window([sent_at for sent_at, *_ in broker.published]) <= 10
    assert len(sent) == len(broker.seqs())  # nothing twice


def test_a_batch_offered_without_puback_is_resent_with_the_same_bounds(buffer, clock):
    broker = Broker(clock)
    publisher = Publisher(buffer, broker, TOPIC, flush=FlushPolicy(max_latency_s=5), clock=clock, sleep=clock.sleep)
    adapter = OneHertzAdapter(buffer, clock)
    for _ in range(6):
        adapter.deliver()
        clock.sleep(1.0)
    broker.online = False
    publisher.publish_pending()  # due: offered, no PUBACK
    broker.online = True
    adapter.deliver()  # more data arrives: the re-send still carries exactly the offered range
    publisher.publish_pending()
    assert broker.published[0][1:3] == (0, 6 * METRICS - 1)


def test_policy_and_config_refuse_bad_values_naming_the_field(tmp_path):
    with pytest.raises(ValidationError, match="max_latency_s"):
        FlushPolicy(max_latency_s=-1)
    with pytest.raises(ValidationError, match="target_batch_bytes"):
        FlushPolicy(target_batch_bytes=MAX_PAYLOAD_BYTES + 1)
    with pytest.raises(ValidationError, match="flush.max_latency_s"):
        GatewayConfig(
            thing_name="gw-1",
            site="s",
            line_id="line-1",
            use_case="extrusion",
            architecture="x86_64",
            runtime_version="1.0.0",
            transport="greengrass",
            buffer_path=tmp_path / "b.sqlite",
            flush={"max_latency_s": "soon"},
        )
