"""The durable buffer: sequence numbers, size-cut batches, acks, rejects, disk cap, crash safety."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.samples import (
    MAX_METRIC_CHARS,
    REJECT_BAD_METRIC,
    REJECT_BAD_TIME,
    REJECT_MALFORMED,
    REJECT_NON_FINITE,
    REJECT_NON_NUMERIC,
)
from edgeloop.schemas.telemetry import MAX_PAYLOAD_BYTES
from edgeloop.schemas.telemetry_codec import decode_batch

T0 = 1_760_000_000_000


def samples(n: int, start: int = 0, metrics: int = 12) -> list[tuple[str, int, float]]:
    return [(f"metric_{i % metrics}", T0 + (start + i) * 100, 50.0 + math.sin(start + i) * 3.3) for i in range(n)]


@pytest.fixture
def buffer(tmp_path: Path):
    with SampleBuffer(tmp_path / "buffer.sqlite", thing_name="gw-1", line_id="line-1") as buf:
        yield buf


def test_sequence_numbers_are_monotonic_and_survive_reopen(tmp_path: Path):
    path = tmp_path / "buffer.sqlite"
    with SampleBuffer(path, thing_name="gw-1", line_id="line-1") as buf:
        buf.append(samples(10))
        batch = buf.next_batch()
        buf.ack(batch.seq_last)  # everything acked: no row left to derive the next seq from
        assert buf.stats().next_seq == 10
    with SampleBuffer(path, thing_name="gw-1", line_id="line-1") as buf:
        buf.append(samples(5, start=10))
        batch = buf.next_batch()
        assert (batch.seq_first, batch.seq_last) == (10, 14)
        assert buf.stats().next_seq == 15


def test_reopening_with_another_thing_name_is_refused(tmp_path: Path):
    path = tmp_path / "buffer.sqlite"
    SampleBuffer(path, thing_name="gw-1", line_id="line-1").close()
    with pytest.raises(ValueError, match="gw-1"):
        SampleBuffer(path, thing_name="gw-2", line_id="line-1")


def test_bad_identity_is_refused_naming_the_field(tmp_path: Path):
    with pytest.raises(ValueError, match="thing_name='bad name'"):
        SampleBuffer(tmp_path / "b.sqlite", thing_name="bad name", line_id="line-1")
    with pytest.raises(ValueError, match="fsync_policy"):
        SampleBuffer(tmp_path / "b.sqlite", thing_name="gw", line_id="line-1", fsync_policy="sometimes")


def test_batches_are_contiguous_within_the_payload_limit_and_decode_back(buffer: SampleBuffer):
    sent = samples(60_000)
    buffer.append(sent)
    received = []
    expected_first = 0
    while (batch := buffer.next_batch()) is not None:
        assert len(batch.payload) <= MAX_PAYLOAD_BYTES
        assert batch.seq_first == expected_first
        decoded = decode_batch(batch.payload)
        assert (decoded.seq_first, decoded.seq_last) == (batch.seq_first, batch.seq_last)
        assert len(decoded.samples) == batch.n_samples == batch.seq_last - batch.seq_first + 1
        cols = decoded.samples
        received += [(cols.metrics[m], t, v) for m, t, v in zip(cols.metric_index, cols.time_ms, cols.values)]
        buffer.ack(batch.seq_last)
        expected_first = batch.seq_last + 1
    assert received == sent
    assert buffer.pending_samples() == 0


def test_batches_are_cut_by_size_for_a_small_limit(buffer: SampleBuffer):
    buffer.append(samples(5_000))
    sizes = []
    while (batch := buffer.next_batch(max_payload_bytes=4_000)) is not None:
        assert len(batch.payload) <= 4_000
        sizes.append(len(batch.payload))
        buffer.ack(batch.seq_last)
    assert len(sizes) > 5
    assert max(sizes) > 2_000  # cut near the limit, not into crumbs


def test_incompressible_samples_shrink_the_estimate(buffer: SampleBuffer):
    import random

    rng = random.Random(1)
    buffer.append([(f"m{rng.getrandbits(64):x}", rng.getrandbits(40), rng.random()) for _ in range(30_000)])
    batch = buffer.next_batch()
    assert len(batch.payload) <= MAX_PAYLOAD_BYTES
    assert batch.n_samples < 30_000


def test_next_batch_before_ack_returns_the_same_range(buffer: SampleBuffer):
    buffer.append(samples(100))
    first = buffer.next_batch()
    buffer.append(samples(100, start=100))  # new data must not change the in-flight range
    again = buffer.next_batch()
    assert (again.seq_first, again.seq_last) == (first.seq_first, first.seq_last)
    assert again.payload == first.payload
    buffer.ack(first.seq_last)
    after = buffer.next_batch()
    assert after.seq_first == first.seq_last + 1


def test_ack_deletes_up_to_and_including_seq_last(buffer: SampleBuffer):
    buffer.append(samples(100))
    buffer.ack(39)
    assert buffer.pending_samples() == 60
    batch = buffer.next_batch()
    assert batch.seq_first == 40
    stats = buffer.stats()
    assert stats.acked_total == 40 and stats.pending == 60


def test_bad_samples_are_counted_and_good_ones_kept(buffer: SampleBuffer, caplog):
    good = samples(3)
    bad = [
        ("temp", T0, float("nan")),
        ("temp", T0, float("inf")),
        ("temp", T0, "12.5"),
        ("temp", T0, True),
        ("", T0, 1.0),
        ("x" * (MAX_METRIC_CHARS + 1), T0, 1.0),
        ("temp", -5, 1.0),
        ("temp", 1.5, 1.0),
        ("temp", T0),
    ]
    with caplog.at_level(logging.WARNING):
        result = buffer.append([good[0], *bad, good[1], good[2]])
    assert result.accepted == 3
    assert result.rejected == {
        REJECT_NON_FINITE: 2,
        REJECT_NON_NUMERIC: 2,
        REJECT_BAD_METRIC: 2,
        REJECT_BAD_TIME: 2,
        REJECT_MALFORMED: 1,
    }
    assert "rejected 9 of 12" in caplog.text
    batch = decode_batch(buffer.next_batch().payload)
    cols = batch.samples
    assert [(cols.metrics[m], t, v) for m, t, v in zip(cols.metric_index, cols.time_ms, cols.values)] == good
    assert (batch.seq_first, batch.seq_last) == (0, 2)  # rejected samples take no sequence number
    assert buffer.stats().rejected_total[REJECT_NON_FINITE] == 2


def test_rejected_counts_persist(tmp_path: Path):
    path = tmp_path / "b.sqlite"
    with SampleBuffer(path, thing_name="gw-1", line_id="line-1") as buf:
        buf.append([("a", T0, float("nan"))])
    with SampleBuffer(path, thing_name="gw-1", line_id="line-1") as buf:
        buf.append([("a", T0, float("nan")), ("a", T0, 1.0)])
        stats = buf.stats()
    assert stats.rejected_total == {REJECT_NON_FINITE: 2}
    assert stats.accepted_total == 1


def test_disk_cap_drops_the_oldest_with_an_exact_count(tmp_path: Path, caplog):
    cap = 256 * 1024
    path = tmp_path / "b.sqlite"
    total = 0
    dropped_reported = 0
    with caplog.at_level(logging.WARNING):
        with SampleBuffer(path, thing_name="gw-1", line_id="line-1", max_bytes=cap) as buf:
            for k in range(30):
                result = buf.append(samples(1_000, start=k * 1_000))
                total += 1_000
                dropped_reported += result.dropped
                assert buf._store.used_bytes() <= cap
            stats = buf.stats()
    assert dropped_reported > 0
    assert stats.dropped_total == dropped_reported
    # exact: every accepted sample is either still pending or counted as dropped
    assert stats.pending + stats.dropped_total == total
    logged = sum(
        int(r.getMessage().split("dropped the ")[1].split()[0])
        for r in caplog.records
        if r.levelno == logging.WARNING and "dropped the" in r.getMessage()
    )
    assert logged == stats.dropped_total
    with SampleBuffer(path, thing_name="gw-1", line_id="line-1", max_bytes=cap) as buf:
        batch = buf.next_batch()
        assert batch.seq_first == stats.dropped_total  # the oldest went, the newest stayed
        assert buf.stats().dropped_total == stats.dropped_total  # persisted
        assert buf.stats().next_seq == total


def test_cap_drop_invalidates_an_in_flight_batch(tmp_path: Path):
    with SampleBuffer(tmp_path / "b.sqlite", thing_name="gw-1", line_id="line-1", max_bytes=128 * 1024) as buf:
        buf.append(samples(500))
        first = buf.next_batch()
        while buf.stats().dropped_total == 0:
            buf.append(samples(1_000))
        again = buf.next_batch()
        assert again.seq_first == buf.stats().dropped_total > first.seq_first


def test_too_small_cap_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="max_bytes=1000"):
        SampleBuffer(tmp_path / "b.sqlite", thing_name="gw-1", line_id="line-1", max_bytes=1000)


def test_concurrent_producer_and_publisher_lose_nothing(buffer: SampleBuffer):
    import threading

    n_chunks, chunk = 50, 200
    done = threading.Event()
    received: list[int] = []

    def produce():
        for k in range(n_chunks):
            buffer.append(samples(chunk, start=k * chunk))
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    while not (done.is_set() and buffer.pending_samples() == 0):
        batch = buffer.next_batch(max_payload_bytes=8_000)
        if batch is None:
            time.sleep(0.001)
            continue
        received += range(batch.seq_first, batch.seq_last + 1)
        buffer.ack(batch.seq_last)
    producer.join()
    assert received == list(range(n_chunks * chunk))


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edgeloop.greengrass_components.gateway.buffer import SampleBuffer

    buf = SampleBuffer(Path(sys.argv[1]), thing_name="gw-1", line_id="line-1", fsync_policy=sys.argv[2])
    k = 0
    while True:
        buf.append([("m", 1_760_000_000_000 + k * 1000 + i, float(k)) for i in range(500)])
        # written only after append() returned, i.e. after COMMIT
        print(k, flush=True)
        k += 1
    """
)


@pytest.mark.parametrize("fsync_policy", ["normal", "full"])
def test_sigkill_mid_append_loses_no_committed_sample(tmp_path: Path, fsync_policy: str):
    path = tmp_path / "b.sqlite"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), fsync_policy], stdout=subprocess.PIPE, text=True)
    committed = -1
    try:
        deadline = time.monotonic() + 30
        while committed < 20 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            committed = int(line)
        os.kill(child.pid, signal.SIGKILL)  # lands at an arbitrary point, typically inside an append
    finally:
        child.kill()
        child.wait()
    # lines still in the pipe were printed after their commit too
    committed = max([committed, *map(int, child.stdout.read().split())])
    assert committed >= 20, "the child never got going"
    with SampleBuffer(path, thing_name="gw-1", line_id="line-1") as buf:
        stats = buf.stats()
        # every append whose commit was reported is there, whole; a torn append is all or nothing
        assert stats.pending >= (committed + 1) * 500
        assert stats.pending % 500 == 0
        assert stats.next_seq == stats.pending == stats.accepted_total
        seen = []
        while (batch := buf.next_batch()) is not None:
            seen += decode_batch(batch.payload).samples.values
            buf.ack(batch.seq_last)
        assert seen[: (committed + 1) * 500] == [float(k) for k in range(committed + 1) for _ in range(500)]
        buf.append(samples(1))
        assert buf.stats().next_seq == stats.next_seq + 1  # numbering resumes, no reuse


def test_a_batch_names_no_more_metrics_than_ingest_accepts(buffer: SampleBuffer):
    from edgeloop.schemas.telemetry import MAX_BATCH_METRICS
    from edgeloop.schemas.telemetry_codec import decode_batch

    buffer.append([(f"metric-{i}", 1_700_000_000_000 + i, float(i)) for i in range(MAX_BATCH_METRICS + 500)])
    batch = buffer.next_batch()
    assert batch.n_samples == MAX_BATCH_METRICS
    assert len(decode_batch(batch.payload).samples.metrics) == MAX_BATCH_METRICS
