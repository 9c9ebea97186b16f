"""The gateway process of the chaos test: a deterministic sample stream through the real gateway path.

    python gateway_chaos_child.py CONFIG.json

SampleBuffer + Publisher + Mqtt5Transport, as a gateway without Greengrass runs them. Sample i of
the stream (see `stream_sample`) gets sequence number i, so a restart on the same buffer file
resumes the stream at the buffer's persisted accepted_total and the test can check every received
sample's content against its sequence number.

Appends `rate_per_s` samples per second in small transactions while the publisher drains the
buffer. On SIGTERM it flushes: stops appending, lets the publisher empty the buffer (bounded by
`flush_timeout_s`) and exits 0 when nothing is pending, 3 otherwise. The test SIGKILLs it at any
moment, including during that flush.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import zlib
from pathlib import Path

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.publisher import Publisher
from edgeloop.greengrass_components.gateway.transport import Mqtt5Transport
from edgeloop.schemas import names

STREAM_T0_MS = 1_760_000_000_000
STREAM_METRICS = 5
TICK_S = 0.02
MAX_SAMPLES_PER_APPEND = 200

log = logging.getLogger("gateway_chaos_child")


def stream_sample(i: int) -> tuple[str, int, float]:
    """Sample i of the stream: 5 metrics at 10 Hz; the value is i plus a hashed fraction k/256 (exact in float64).

    The fraction keeps the data from compressing to nothing, so batches stay a few hundred samples.
    """
    fraction = zlib.crc32(i.to_bytes(8, "little")) % 256 / 256
    return (f"m{i % STREAM_METRICS}", STREAM_T0_MS + (i // STREAM_METRICS) * 100, float(i) + fraction)


def run(config: dict) -> int:
    buffer = SampleBuffer(Path(config["buffer_path"]), thing_name=config["thing_name"], line_id="line-chaos")
    transport = Mqtt5Transport(
        config["host"],
        config["port"],
        config["cert_path"],
        config["key_path"],
        config["ca_path"],
        client_id=config["thing_name"],
        min_reconnect_delay_ms=200,
        max_reconnect_delay_ms=1_000,
    )
    publisher = Publisher(
        buffer,
        transport,
        names.telemetry_topic(config["thing_name"]),
        max_publishes_per_s=config["max_publishes_per_s"],
        max_payload_bytes=config["max_payload_bytes"],
        publish_timeout_s=5.0,
        connect_timeout_s=5.0,
        min_backoff_s=0.1,
        max_backoff_s=1.0,
        live_window_s=config["live_window_s"],
    )
    flush = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: flush.set())
    stop = threading.Event()
    publishing = threading.Thread(target=publisher.run, args=(stop,), name="publisher", daemon=True)
    publishing.start()

    next_index = buffer.stats().accepted_total  # every sample is valid: stream index == seq
    log.info("started at seq %d, %d pending", next_index, buffer.pending_samples())
    started = time.monotonic()
    appended = 0
    while not flush.is_set():
        due = int(config["rate_per_s"] * (time.monotonic() - started)) - appended
        n = min(due, MAX_SAMPLES_PER_APPEND)
        if n > 0:
            buffer.append([stream_sample(next_index + k) for k in range(n)])
            next_index += n
            appended += n
        flush.wait(TICK_S)

    log.info("flushing: %d pending, appended up to seq %d", buffer.pending_samples(), next_index - 1)
    deadline = time.monotonic() + config["flush_timeout_s"]
    while buffer.pending_samples() and time.monotonic() < deadline:
        time.sleep(0.02)
    pending = buffer.pending_samples()
    stop.set()
    publishing.join(timeout=5)
    transport.disconnect(timeout_s=2)
    buffer.close()
    log.info("flushed: %d pending, %d published", pending, publisher.published_samples)
    return 0 if pending == 0 else 3


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    code = run(json.loads(Path(argv[1]).read_text()))
    logging.shutdown()
    # skip interpreter teardown: the SDK's native threads can stall it, and everything is closed
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
