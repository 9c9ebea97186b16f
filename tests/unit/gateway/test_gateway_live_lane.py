"""The live lane: after an outage, fresh samples go out first while the backlog drains oldest-first."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from gateway_helpers import FakeClock, max_in_window

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.publisher import Publisher
from edgeloop.greengrass_components.gateway.transport import PublishFailed
from edgeloop.schemas.telemetry_codec import decode_batch

T0 = 1_760_000_000_000
TOPIC = "edgeloop/gw-1/telemetry"
LIVE_WINDOW_S = 10.0

pytestmark = pytest.mark.timeout(60)


class RecordingTransport:
    """Acknowledges every publish at once and records (clock time, decoded batch)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.published: list[tuple[float, int, int, int]] = []  # (time, seq_first, seq_last, payload bytes)
        self.fail = False

    @property
    def is_connected(self) -> bool:
        return True

    def connect(self, timeout_s: float) -> None:
        pass

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        if self.fail:
            raise PublishFailed("no PUBACK")
        batch = decode_batch(payload)
        self.published.append((self.clock(), batch.seq_first, batch.seq_last, len(payload)))

    def subscribe(self, topic_filter, callback, timeout_s) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        pass


def samples(n: int, start: int = 0) -> list[tuple[str, int, float]]:
    return [(f"m{(start + i) % 10}", T0 + (start + i) * 100, 50.0 + math.sin(start + i) * 3.3) for i in range(n)]


def seqs_of(batch) -> list[int]:
    return list(range(batch.seq_first, batch.seq_last + 1))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def buffer(tmp_path: Path, clock: FakeClock):
    with SampleBuffer(tmp_path / "b.sqlite", thing_name="gw-1", line_id="line-1", clock=clock) as buf:
        yield buf


# --- buffer: range acknowledgement and the two lanes ----------------------------------------------


def test_ack_range_deletes_exactly_that_range(buffer: SampleBuffer):
    buffer.append(samples(100))
    buffer.ack_range(40, 59)
    stats = buffer.stats()
    assert stats.acked_total == 20 and stats.pending == 80 == buffer.pending_samples()
    first = buffer.next_batch()
    assert (first.seq_first, first.seq_last) == (0, 39)  # a batch stops at the hole
    assert decode_batch(first.payload).seq_last == 39
    buffer.ack_range(first.seq_first, first.seq_last)
    second = buffer.next_batch()
    assert (second.seq_first, second.seq_last) == (60, 99)
    buffer.ack_range(60, 99)
    assert buffer.next_batch() is None and buffer.stats().acked_total == 100


def test_ack_range_of_already_acked_seqs_counts_nothing_twice(buffer: SampleBuffer):
    buffer.append(samples(10))
    buffer.ack_range(0, 4)
    buffer.ack_range(0, 4)  # a duplicate PUBACK path, say
    buffer.ack(2)  # the old prefix ack still works, and only counts rows it deleted
    assert buffer.stats().acked_total == 5 and buffer.pending_samples() == 5


def test_ack_up_to_seq_last_still_works_across_holes(buffer: SampleBuffer):
    buffer.append(samples(100))
    buffer.ack_range(10, 19)
    buffer.ack(49)
    assert buffer.pending_samples() == 50
    assert buffer.next_batch().seq_first == 50


def test_bad_ack_range_and_window_are_refused(buffer: SampleBuffer):
    with pytest.raises(ValueError, match="seq_first=9 is after seq_last=3"):
        buffer.ack_range(9, 3)
    with pytest.raises(ValueError, match="window_s=-1"):
        buffer.next_live_batch(window_s=-1)


def test_live_lane_holds_only_what_was_appended_within_the_window(buffer: SampleBuffer, clock: FakeClock):
    buffer.append(samples(500))  # appended before the outage ended: backlog once the window passes
    clock.sleep(LIVE_WINDOW_S + 5)
    assert buffer.next_live_batch(window_s=LIVE_WINDOW_S) is None
    buffer.append(samples(30, start=500))
    clock.sleep(1)
    buffer.append(samples(20, start=530))
    live = buffer.next_live_batch(window_s=LIVE_WINDOW_S)
    assert (live.seq_first, live.seq_last) == (500, 549)  # the newest contiguous range, oldest-first within
    buffer.ack_range(live.seq_first, live.seq_last)
    assert buffer.next_live_batch(window_s=LIVE_WINDOW_S) is None
    backlog = buffer.next_batch()
    assert (backlog.seq_first, backlog.seq_last) == (0, 499)  # up to the hole the live lane left
    clock.sleep(LIVE_WINDOW_S)
    buffer.append(samples(5, start=550))
    live = buffer.next_live_batch(window_s=LIVE_WINDOW_S)
    assert seqs_of(live) == list(range(550, 555))
    buffer.ack_range(live.seq_first, live.seq_last)
    assert buffer.next_batch() == backlog  # a live ack leaves the backlog's in-flight batch alone


def test_live_batch_is_offered_again_until_acked(buffer: SampleBuffer, clock: FakeClock):
    buffer.append(samples(100))
    first = buffer.next_live_batch(window_s=LIVE_WINDOW_S)
    buffer.append(samples(100, start=100))  # new data must not change the in-flight range
    again = buffer.next_live_batch(window_s=LIVE_WINDOW_S)
    assert again == first
    # the backlog lane, asked for the same start, re-sends the same bounds (not a second cut)
    assert buffer.next_batch() == first
    buffer.ack_range(first.seq_first, first.seq_last)
    assert buffer.next_live_batch(window_s=LIVE_WINDOW_S).seq_first == first.seq_last + 1


def test_live_data_that_ages_out_is_drained_by_the_backlog_across_holes(buffer: SampleBuffer, clock: FakeClock):
    buffer.append(samples(300))
    clock.sleep(LIVE_WINDOW_S + 1)
    for k in range(3):  # live data published in windows, each leaving a hole above older backlog
        buffer.append(samples(50, start=300 + 100 * k))
        live = buffer.next_live_batch(window_s=LIVE_WINDOW_S)
        buffer.ack_range(live.seq_first, live.seq_last)
        buffer.append(samples(50, start=350 + 100 * k))  # not published: link went down again
        clock.sleep(LIVE_WINDOW_S + 1)
    assert buffer.next_live_batch(window_s=LIVE_WINDOW_S) is None
    drained = []
    while (batch := buffer.next_batch()) is not None:
        decoded = decode_batch(batch.payload)
        assert len(decoded.samples) == batch.seq_last - batch.seq_first + 1
        drained.append((batch.seq_first, batch.seq_last))
        buffer.ack_range(batch.seq_first, batch.seq_last)
    covered = [seq for first, last in drained for seq in range(first, last + 1)]
    expected = list(range(300)) + [seq for k in range(3) for seq in range(350 + 100 * k, 400 + 100 * k)]
    assert covered == expected  # oldest-first, every batch contiguous, nothing twice
    assert buffer.pending_samples() == 0


def test_nothing_is_live_after_a_restart(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "b.sqlite"
    with SampleBuffer(path, thing_name="gw-1", line_id="line-1", clock=clock) as buf:
        buf.append(samples(100))
        assert buf.next_live_batch(window_s=LIVE_WINDOW_S) is not None
    with SampleBuffer(path, thing_name="gw-1", line_id="line-1", clock=clock) as buf:
        assert buf.next_live_batch(window_s=LIVE_WINDOW_S) is None
        assert buf.next_batch().seq_first == 0
        buf.append(samples(5, start=100))
        assert seqs_of(buf.next_live_batch(window_s=LIVE_WINDOW_S)) == list(range(100, 105))


def test_append_times_stay_bounded_when_nobody_asks_for_live_data(buffer: SampleBuffer, clock: FakeClock):
    for k in range(2_000):
        buffer.append(samples(1, start=k))
        clock.sleep(0.1)
    assert len(buffer._append_marks) <= LIVE_WINDOW_S / 0.1 + 2


def test_disk_cap_drop_invalidates_the_live_batch(tmp_path: Path, clock: FakeClock):
    with SampleBuffer(
        tmp_path / "b.sqlite", thing_name="gw-1", line_id="line-1", max_bytes=128 * 1024, clock=clock
    ) as buf:
        buf.append(samples(500))
        first = buf.next_live_batch(window_s=LIVE_WINDOW_S)
        while buf.stats().dropped_total == 0:
            buf.append(samples(1_000))
        again = buf.next_live_batch(window_s=LIVE_WINDOW_S)
        assert again.seq_first == buf.stats().dropped_total > first.seq_first


# --- publisher: live first, backlog in the remaining budget ---------------------------------------


def run_outage_then_live(
    tmp_path: Path, live_window_s: float, backlog_batches: int = 200, live_seconds: int = 40, live_per_s: int = 10
) -> dict:
    """A backlog of about backlog_batches batches left by an outage, then live_seconds of live data at
    live_per_s, on a fake clock. At 10 publishes/s the backlog takes 25-30 s to drain, whatever
    the wire encoding's bytes per sample.

    Returns what was published, the append time of every live seq and the publisher.
    """
    clock = FakeClock()
    transport = RecordingTransport(clock)
    with SampleBuffer(
        tmp_path / f"b-{live_window_s}.sqlite", thing_name="gw-1", line_id="line-1", clock=clock
    ) as buffer:
        # the outage's data, appended well over a window ago; sized in batches of the current encoding
        buffer.append(samples(5_000))
        backlog = max(5_000, buffer.next_batch(2_000).n_samples * backlog_batches)
        buffer.append(samples(backlog - 5_000, start=5_000))
        clock.sleep(600)
        publisher = Publisher(
            buffer,
            transport,
            TOPIC,
            max_publishes_per_s=10,
            max_payload_bytes=2_000,
            live_window_s=live_window_s,
            clock=clock,
            sleep=clock.sleep,
        )
        appended_at: dict[int, float] = {}
        second = 0
        while second < live_seconds or buffer.pending_samples():
            step_end = clock() + 1.0
            if second < live_seconds:
                first_seq = buffer.stats().next_seq
                buffer.append(samples(live_per_s, start=backlog + second * live_per_s))
                appended_at.update((first_seq + i, clock()) for i in range(live_per_s))
            publisher.publish_pending(deadline_s=step_end)
            clock.now = max(clock.now, step_end)
            second += 1
            assert second < 1_000, "the buffer never drained"
        total = buffer.stats().accepted_total
    return {
        "published": transport.published,
        "appended_at": appended_at,
        "publisher": publisher,
        "backlog": backlog,
        "total": total,
    }


def publish_time_by_seq(published) -> dict[int, float]:
    return {seq: t for t, first, last, _ in published for seq in range(first, last + 1)}


def test_live_samples_flow_during_a_backlog_drain(tmp_path: Path):
    run = run_outage_then_live(tmp_path, live_window_s=LIVE_WINDOW_S)
    published, appended_at, backlog = run["published"], run["appended_at"], run["backlog"]
    sent_at = publish_time_by_seq(published)

    # every seq went out exactly once (no failures here, so no re-sends either)
    all_seqs = [seq for _, first, last, _ in published for seq in range(first, last + 1)]
    assert sorted(all_seqs) == list(range(run["total"])) and len(all_seqs) == run["total"]

    # the backlog drained for longer than the live window, so live data really had to overtake it
    backlog_done_at = max(sent_at[seq] for seq in range(backlog))
    live_started_at = min(appended_at.values())
    assert backlog_done_at - live_started_at > 2 * LIVE_WINDOW_S

    # live samples went out within the live window of being appended, during the backlog drain too
    latencies = [sent_at[seq] - t for seq, t in appended_at.items()]
    assert max(latencies) <= 1.0
    assert sum(1 for seq in appended_at if sent_at[seq] < backlog_done_at) >= 20 * 10

    # the backlog drained oldest-first in contiguous batches
    backlog_batches = [(first, last) for _, first, last, _ in published if first < backlog]
    assert [first for first, _ in backlog_batches] == sorted(first for first, _ in backlog_batches)
    assert all(b[0] == a[1] + 1 for a, b in zip(backlog_batches, backlog_batches[1:], strict=False))
    assert all(last < backlog for _, last in backlog_batches)  # no batch mixes backlog and live data

    # and both lanes together kept to the limits
    times = [t for t, _, _, _ in published]
    assert max_in_window(times) <= 10
    assert run["publisher"].max_publishes_in_1s <= 10
    assert max(size for *_, size in published) <= 2_000
    stats = run["publisher"].stats()
    assert stats.published_live_samples == len(appended_at)
    assert stats.published_samples == run["total"]


def test_without_the_live_lane_live_samples_wait_for_the_backlog(tmp_path: Path):
    # the control: the same outage with the live lane off leaves live data behind the backlog
    run = run_outage_then_live(tmp_path, live_window_s=0)
    sent_at = publish_time_by_seq(run["published"])
    latencies = [sent_at[seq] - t for seq, t in run["appended_at"].items()]
    assert max(latencies) > 2 * LIVE_WINDOW_S
    assert run["publisher"].stats().published_live_batches == 0
    firsts = [first for _, first, _, _ in run["published"]]
    assert firsts == sorted(firsts)  # strictly oldest-first


def test_a_failed_live_publish_is_resent_with_the_same_bounds(tmp_path: Path, clock: FakeClock):
    transport = RecordingTransport(clock)
    with SampleBuffer(tmp_path / "b.sqlite", thing_name="gw-1", line_id="line-1", clock=clock) as buffer:
        buffer.append(samples(5_000))
        clock.sleep(60)
        buffer.append(samples(100, start=5_000))
        publisher = Publisher(buffer, transport, TOPIC, max_payload_bytes=2_000, clock=clock, sleep=clock.sleep)
        attempted = buffer.next_live_batch(2_000, window_s=LIVE_WINDOW_S)
        transport.fail = True
        assert publisher.publish_pending() == 0
        transport.fail = False
        publisher.publish_pending()
    _, first, last, _ = transport.published[0]
    assert (first, last) == (attempted.seq_first, attempted.seq_last) == (5_000, 5_099)
    assert sorted(s for _, f, la, _ in transport.published for s in range(f, la + 1)) == list(range(5_100))


def test_bad_live_window_is_refused(buffer: SampleBuffer, clock: FakeClock):
    with pytest.raises(ValueError, match="live_window_s=-2"):
        Publisher(buffer, RecordingTransport(clock), TOPIC, live_window_s=-2)
