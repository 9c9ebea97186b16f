"""A restarted simulated gateway resumes where its durable buffer stands (issue 14, item 10).

Before, a restart simulated its history again from the start: the same readings landed a second
time under new sequence numbers, which de-duplication by sequence number cannot see.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from gateway_helpers import extrusion_gateway_config
from test_replay import FakeTransport

from edgeloop.device_shims.sim_position import PositionJournal
from edgeloop.device_shims.simulated_gateway import SimulatedGateway, SimulatedGatewayConfig
from edgeloop.schemas import load_use_case, names
from edgeloop.schemas.telemetry_codec import decode_batch

USE_CASE = load_use_case("extrusion")
START_MS = 1_700_000_000_000
HISTORY_S = 600
CHUNK_S = 60
LIVE_S = 120
WAIT_S = 60.0


def config(tmp_path: Path, **changes) -> SimulatedGatewayConfig:
    fields = dict(
        gateway=extrusion_gateway_config(tmp_path / "buffer.db", thing_name="gw-restart"),
        seed=5,
        sim_start_ms=START_MS,
        history_s=HISTORY_S,
        chunk_s=CHUNK_S,
        live_speedup=100_000.0,
        max_live_s=LIVE_S,
        state_file=tmp_path / "state.json",
        stop_file=tmp_path / "stop",
        context_file=tmp_path / "context.jsonl",
        drain_timeout_s=WAIT_S,
    )
    return SimulatedGatewayConfig(**{**fields, **changes})


def run_until(gateway: SimulatedGateway, stop_when) -> None:
    """gateway.run() in this thread; a watcher asks it to stop once `stop_when(gateway)` holds."""

    def watch() -> None:
        deadline = time.monotonic() + WAIT_S
        while not (stop_when(gateway) or gateway.stop_requested.is_set()) and time.monotonic() < deadline:
            time.sleep(0.02)
        gateway.stop_requested.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert gateway.run() == 0, gateway.last_error
    watcher.join()


def stop_after_chunks(gateway: SimulatedGateway, chunks: int) -> None:
    """Ask the gateway to stop right after its `chunks`-th append (mid-history)."""
    append, count = gateway._append, [0]

    def counted(*args):
        append(*args)
        count[0] += 1
        if count[0] == chunks:
            gateway.stop_requested.set()

    gateway._append = counted


def telemetry(transport: FakeTransport) -> dict[int, tuple[str, int]]:
    """Sequence number -> (metric, time_ms) of every telemetry sample published."""
    out: dict[int, tuple[str, int]] = {}
    for topic, payload in transport.published:
        if topic != names.telemetry_topic("gw-restart"):
            continue
        batch = decode_batch(payload)
        s = batch.samples
        assert batch.seq_last - batch.seq_first + 1 == len(s.time_ms)
        for offset, (i, t) in enumerate(zip(s.metric_index, s.time_ms, strict=True)):
            out[batch.seq_first + offset] = (s.metrics[i], int(t))
    return out


def test_a_restart_continues_the_sequence_and_the_simulated_time(tmp_path):
    first_link, second_link = FakeTransport(), FakeTransport()
    first = SimulatedGateway(config(tmp_path), transport=first_link)
    stop_after_chunks(first, 3)
    run_until(first, lambda g: False)
    first_samples = telemetry(first_link)
    assert first_samples and max(t for _, t in first_samples.values()) < START_MS + HISTORY_S * 1000

    second = SimulatedGateway(config(tmp_path), transport=second_link)
    run_until(second, lambda g: g.phase == "idle")
    second_samples = telemetry(second_link)

    # sequence numbers continue where the first process stopped
    assert min(second_samples) == max(first_samples) + 1
    samples = {**first_samples, **second_samples}
    assert sorted(samples) == list(range(len(samples)))
    # no reading twice, and every simulated second from the start to the end of the live phase
    assert len(set(samples.values())) == len(samples)
    seconds = {(t - START_MS) // 1000 for _, t in samples.values()}
    assert seconds == set(range(HISTORY_S + LIVE_S))
    assert second.simulator.now_ms == START_MS + (HISTORY_S + LIVE_S) * 1000
    assert json.loads(config(tmp_path).state_file.read_text())["sim_time_ms"] == second.simulator.now_ms


def test_a_restart_after_the_live_phase_simulates_nothing_again(tmp_path):
    first_link, second_link = FakeTransport(), FakeTransport()
    run_until(SimulatedGateway(config(tmp_path), transport=first_link), lambda g: g.phase == "idle")
    assert telemetry(first_link)
    run_until(SimulatedGateway(config(tmp_path), transport=second_link), lambda g: g.phase == "idle")
    assert telemetry(second_link) == {}


def test_another_simulation_in_the_same_buffer_starts_from_its_own_beginning(tmp_path):
    run_until(SimulatedGateway(config(tmp_path), transport=FakeTransport()), lambda g: g.phase == "idle")
    link = FakeTransport()
    moved = START_MS + 86_400_000
    run_until(SimulatedGateway(config(tmp_path, sim_start_ms=moved), transport=link), lambda g: g.phase == "idle")
    assert min(t for _, t in telemetry(link).values()) == moved


def test_the_buffer_decides_whether_the_journalled_append_committed(tmp_path):
    journal = PositionJournal(tmp_path / "position.json", seed=5, sim_start_ms=START_MS, line_id="line-1")
    assert journal.resume_s(next_seq=0) == 0  # nothing simulated yet
    journal.record(60, 120, seq_before=600)
    assert journal.resume_s(next_seq=600) == 60  # killed before the append committed: simulate it again
    assert journal.resume_s(next_seq=1200) == 120  # the append committed: go on after it
    other = PositionJournal(tmp_path / "position.json", seed=6, sim_start_ms=START_MS, line_id="line-1")
    assert other.resume_s(next_seq=1200) == 0
    (tmp_path / "position.json").write_text("{not json")
    with pytest.raises(ValueError, match="position.json"):
        journal.resume_s(next_seq=1200)
