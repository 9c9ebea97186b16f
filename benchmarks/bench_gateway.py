"""Gateway store-and-forward after a 14-day outage: buffer insert rate and backlog drain through a real broker.

One extrusion line (10 metrics at 1 Hz, `device_shims/extrusion.py`) is offline for 14 days: its
~12.1 M samples go into the SQLite buffer in one-minute appends (what the simulated gateway does).
Then the link comes back: the real Publisher + Mqtt5Transport drain the backlog through mosquitto
with mutual TLS (`edgeloop.local`), within IoT Core's per-connection limits (100 publishes/s,
128 KB per message, 512 KB/s). A cloud subscriber in its own process fully decodes every message
and counts unique sequence numbers; the drain time ends when the last missing one arrives.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import METRICS
from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.publisher import Publisher
from edgeloop.greengrass_components.gateway.transport import Mqtt5Transport
from edgeloop.local.mosquitto import CLOUD_IDENTITY, MosquittoBroker
from edgeloop.local.pki import CertificateAuthority, IssuedCert
from edgeloop.schemas import names
from edgeloop.schemas.telemetry import MAX_PAYLOAD_BYTES, ColumnarSamples, TelemetryBatch
from edgeloop.schemas.telemetry_codec import decode_batch, encode_batch

THING, LINE = "gw-bench-1", "line-1"
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
OUTAGE_S = 14 * 24 * 3600
# A seed whose line stays physical for 14 days (seed 7's operator loop drives the rpm negative on day 6).
SEED = 1
CHUNK_S = 60  # one simulated minute per append: 600 samples
LIVE_CHUNK_SAMPLES = 10  # one second of the line, for the small-append figure
MAX_PUBLISHES_PER_S, MAX_BYTES_PER_S = 100, 512 * 1024
DRAIN_TIMEOUT_S = 300.0


def _rows(names_array: np.ndarray, arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[tuple[str, int, float]]:
    metric_index, time_ms, values = arrays
    return list(zip(names_array[metric_index].tolist(), time_ms.tolist(), values.tolist(), strict=True))


def _fill_buffer(buffer: SampleBuffer, simulator: ExtrusionLineSimulator) -> tuple[int, float]:
    """Append the whole outage in one-minute chunks; returns (samples, seconds spent inside append)."""
    names_array = np.array(METRICS, dtype=object)
    total, in_append = 0, 0.0
    for _ in range(OUTAGE_S // CHUNK_S):
        rows = _rows(names_array, simulator.advance_arrays(CHUNK_S))
        started = time.perf_counter()
        result = buffer.append(rows)
        in_append += time.perf_counter() - started
        if result.accepted != len(rows):
            raise AssertionError(f"the buffer refused simulator samples: {result}")
        total += result.accepted
    return total, in_append


def _small_append_rate(workdir: Path) -> float:
    """Samples/s when every append carries one second of the line (10 samples)."""
    simulator = ExtrusionLineSimulator(LINE, seed=11, start_ms=START_MS)
    rows = _rows(np.array(METRICS, dtype=object), simulator.advance_arrays(3 * 3600))
    with SampleBuffer(workdir / "small.sqlite", thing_name=THING, line_id=LINE) as buffer:
        started = time.perf_counter()
        for i in range(0, len(rows), LIVE_CHUNK_SAMPLES):
            buffer.append(rows[i : i + LIVE_CHUNK_SAMPLES])
        return len(rows) / (time.perf_counter() - started)


def _format1_bytes_per_sample(simulator_seed: int = 12, n: int = 100_000) -> float:
    """The old zlib-JSON wire format on the same kind of data, for comparison."""
    simulator = ExtrusionLineSimulator(LINE, seed=simulator_seed, start_ms=START_MS)
    metric_index, time_ms, values = (a[:n] for a in simulator.advance_arrays(n // len(METRICS) + 60))
    batch = TelemetryBatch(
        format_version=1,
        thing_name=THING,
        line_id=LINE,
        seq_first=0,
        seq_last=len(values) - 1,
        samples=ColumnarSamples(
            metrics=list(METRICS), metric_index=metric_index.tolist(), time_ms=time_ms.tolist(), values=values.tolist()
        ),
    )
    return len(encode_batch(batch)) / len(values)


# --- the cloud side, in its own process (its decoding must not share the gateway's GIL) -----------


def _cloud_subscriber(host: str, port: int, cert: IssuedCert, expected: int, conn) -> None:
    seen = np.zeros(expected, dtype=bool)
    state = {
        "unique": 0,
        "duplicates": 0,
        "messages": 0,
        "payload_bytes": 0,
        "samples_in_messages": 0,
        "max_payload_bytes": 0,
        "decode_errors": 0,
        "last_new_at": None,
        "first_at": None,
        "foreign": 0,
    }
    receipts: list[tuple[float, int]] = []
    done = threading.Event()
    lock = threading.Lock()

    def on_message(topic: str, payload: bytes) -> None:
        now = time.monotonic()
        try:
            batch = decode_batch(payload)
        except ValueError:
            with lock:
                state["decode_errors"] += 1
            return
        with lock:
            receipts.append((now, len(payload)))
            state["first_at"] = state["first_at"] or now
            state["messages"] += 1
            state["payload_bytes"] += len(payload)
            state["max_payload_bytes"] = max(state["max_payload_bytes"], len(payload))
            state["samples_in_messages"] += len(batch.samples)
            if batch.thing_name != THING or batch.seq_last >= expected:
                state["foreign"] += 1
                return
            span = seen[batch.seq_first : batch.seq_last + 1]
            new = int(len(span) - np.count_nonzero(span))
            span[:] = True
            state["unique"] += new
            state["duplicates"] += len(span) - new
            if new:
                state["last_new_at"] = now
            if state["unique"] == expected:
                done.set()

    transport = Mqtt5Transport(host, port, cert.cert_path, cert.key_path, cert.ca_path, "bench-cloud")
    transport.connect(timeout_s=15)
    transport.subscribe(f"{names.TOPIC_ROOT}/+/telemetry", on_message, timeout_s=10)
    conn.send("ready")
    while not done.is_set() and not conn.poll(0.1):
        pass
    if not done.is_set():
        conn.recv()  # the parent's "stop": report what arrived
    transport.disconnect()
    with lock:
        state["max_messages_in_1s"], state["max_bytes_in_1s"] = _peak_1s(receipts)
        conn.send(dict(state))


def _peak_1s(receipts: list[tuple[float, int]]) -> tuple[int, int]:
    best_count, best_bytes, start, in_window = 0, 0, 0, 0
    for end, (t, size) in enumerate(receipts):
        in_window += size
        while t - receipts[start][0] >= 1.0:
            in_window -= receipts[start][1]
            start += 1
        best_count, best_bytes = max(best_count, end - start + 1), max(best_bytes, in_window)
    return best_count, best_bytes


# --- the drain ------------------------------------------------------------------------------------


def _wait_ready(conn, process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not conn.poll(0.2):
        if not process.is_alive():
            raise RuntimeError(f"the cloud subscriber exited with code {process.exitcode} before subscribing")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cloud subscriber did not subscribe within {timeout_s:.0f} s")
    conn.recv()


def _drain(buffer: SampleBuffer, workdir: Path, expected: int) -> tuple[dict, float, Publisher]:
    ca = CertificateAuthority.create(workdir / "ca", "edgeloop-bench-ca")
    gateway_cert = ca.issue(THING, workdir / "certs")
    cloud_cert = ca.issue(CLOUD_IDENTITY, workdir / "certs")
    with MosquittoBroker(workdir / "broker", ca) as broker:
        parent_end, child_end = multiprocessing.get_context("spawn").Pipe()
        cloud = multiprocessing.get_context("spawn").Process(
            target=_cloud_subscriber, args=(broker.host, broker.port, cloud_cert, expected, child_end), daemon=True
        )
        cloud.start()
        try:
            _wait_ready(parent_end, cloud, timeout_s=60)
            gateway = Mqtt5Transport(
                broker.host, broker.port, gateway_cert.cert_path, gateway_cert.key_path, gateway_cert.ca_path, THING
            )
            gateway.connect(timeout_s=15)  # the link is back: the drain starts now
            publisher = Publisher(
                buffer,
                gateway,
                names.telemetry_topic(THING),
                max_publishes_per_s=MAX_PUBLISHES_PER_S,
                max_bytes_per_s=MAX_BYTES_PER_S,
                max_payload_bytes=MAX_PAYLOAD_BYTES,
            )
            stop = threading.Event()
            worker = threading.Thread(target=publisher.run, args=(stop,), daemon=True)
            started = time.monotonic()
            worker.start()
            report = parent_end.recv() if parent_end.poll(DRAIN_TIMEOUT_S) else None
            if report is None:
                parent_end.send("stop")
                report = parent_end.recv() if parent_end.poll(30) else {}
            stop.set()
            worker.join(timeout=30)
            gateway.disconnect()
        finally:
            cloud.join(timeout=30)
            if cloud.is_alive():
                cloud.terminate()
    return report, started, publisher


def run() -> dict[str, tuple[float, str]]:
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-gateway-") as tmp:
        workdir = Path(tmp)
        simulator = ExtrusionLineSimulator(LINE, seed=SEED, start_ms=START_MS)
        with SampleBuffer(workdir / "buffer.sqlite", thing_name=THING, line_id=LINE) as buffer:
            accepted, in_append = _fill_buffer(buffer, simulator)
            report, started, publisher = _drain(buffer, workdir, accepted)
            pending_after = buffer.pending_samples()
        small_rate = _small_append_rate(workdir)
    unique = report.get("unique", 0)
    last_new_at = report.get("last_new_at")
    drain_s = (last_new_at - started) if last_new_at is not None and unique == accepted else float("inf")
    stats = publisher.stats()
    return {
        "gateway.backlog_samples": (float(accepted), "samples"),
        "gateway.buffer_insert_samples_per_s": (accepted / in_append, "samples/s"),
        "gateway.buffer_insert_1s_chunks_samples_per_s": (small_rate, "samples/s"),
        "gateway.backlog_drain_14d_s": (drain_s, "s"),
        "gateway.drain_samples_per_s": (unique / drain_s if drain_s else 0.0, "samples/s"),
        "gateway.lost_samples": (float(accepted - unique), "samples"),
        "gateway.duplicate_samples_received": (float(report.get("duplicates", 0)), "samples"),
        "gateway.pending_after_drain": (float(pending_after), "samples"),
        "gateway.decode_errors": (float(report.get("decode_errors", 0)), "messages"),
        "gateway.published_batches": (float(stats.published_batches), "messages"),
        "gateway.max_publishes_per_s": (float(stats.max_publishes_in_1s), "publishes/s"),
        "gateway.max_bytes_per_s": (float(stats.max_bytes_in_1s), "bytes/s"),
        "gateway.received_max_messages_per_s": (float(report.get("max_messages_in_1s", 0)), "messages/s"),
        "gateway.max_payload_bytes": (
            float(max(stats.max_payload_bytes_observed, report.get("max_payload_bytes", 0))),
            "bytes",
        ),
        "gateway.wire_bytes_per_sample": (
            report.get("payload_bytes", 0) / max(1, report.get("samples_in_messages", 0)),
            "bytes/sample",
        ),
        "gateway.format1_wire_bytes_per_sample": (_format1_bytes_per_sample(), "bytes/sample"),
    }
