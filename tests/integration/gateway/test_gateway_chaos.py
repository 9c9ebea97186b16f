"""Chaos: a gateway process SIGKILLed 20+ times and the broker restarted 5 times lose nothing.

The gateway (gateway_chaos_child.py: SampleBuffer + Publisher + Mqtt5Transport, appending a
deterministic stream whose sample i must get sequence number i) runs as its own process against a
real mosquitto with mutual TLS; a cloud subscriber records every telemetry message. A seeded
schedule, in one thread:
  - kills the gateway at a random moment after it started (while it appends and publishes), some
    of them a random instant after a SIGTERM, i.e. in the middle of its flush, and restarts it at
    once on the same buffer file;
  - stops the broker for 1-2.5 s while the gateway keeps appending, then starts it on the same port.
Finally the gateway is told to flush and exit; every sample its buffer accepted (its persisted
accepted_total) must have reached the subscriber, and after de-duplication by sequence number
exactly once, with the content the stream defines for that number.

Why the broker restarts are choreographed: with `persistence false`, mosquitto's PUBACK means only
"queued in my memory for the subscribers", whereas AWS IoT Core acknowledges what its rules engine
will process. So a stop could drop messages the gateway rightly deleted, and a subscriber that
reconnects after the gateway would miss what was published in between. The test therefore
  1. pauses the gateway (SIGSTOP) and waits until the subscriber holds every sample the gateway
     has deleted from its buffer (a sample deleted but never delivered fails here, as a loss);
  2. stops the subscriber and the broker, resumes the gateway for the outage (its publishes and
     reconnects fail; its buffer grows; its SDK backs off);
  3. pauses the gateway again, starts the broker, connects and subscribes the subscriber
     (SUBACK received), and only then resumes the gateway, which reconnects on its own backoff.
SIGSTOP/SIGCONT cost the gateway nothing but time; it never learns it was paused.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.local.mosquitto import CLOUD_IDENTITY, MosquittoBroker
from edgeloop.local.mqtt import Mqtt5Connection, connect_mqtt5
from edgeloop.local.pki import CertificateAuthority, IssuedCert
from edgeloop.local.ports import free_port
from edgeloop.schemas import names
from edgeloop.schemas.telemetry_codec import decode_batch

sys.path.insert(0, str(Path(__file__).parent))
from gateway_chaos_child import stream_sample  # noqa: E402

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

SEED = 20261123
THING = "gw-chaos"
CHILD = Path(__file__).with_name("gateway_chaos_child.py")
MIN_KILLS = 20
KILL_ACTIONS = 24  # some land after a flush already ended; the loop tops up to MIN_KILLS
BROKER_RESTARTS = 5
FLUSH_KILL_SHARE = 0.3  # kills that follow a SIGTERM, landing inside the flush
RUN_BEFORE_ACTION_S = (0.4, 1.4)  # the gateway runs this long (uniform) after it started
OUTAGE_S = (1.0, 2.5)
CHILD_SETTINGS = {
    "rate_per_s": 1_500,
    "max_publishes_per_s": 15,  # about 3x the append rate: backlogs drain within seconds
    "max_payload_bytes": 1_024,  # a few hundred samples per batch: many publishes, many kill targets
    "live_window_s": 2.0,
    "flush_timeout_s": 45.0,
}
STARTED_MARK = "started at seq"
CATCH_UP_TIMEOUT_S = 20.0


class TelemetryInbox:
    """What the cloud subscriber received; decoded lazily, off the SDK's event-loop thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._payloads: list[bytes] = []
        self._decoded = 0
        self.copies: collections.Counter[int] = collections.Counter()
        self.batches = 0

    def __call__(self, topic: str, payload: bytes) -> None:
        assert topic == names.telemetry_topic(THING), topic
        with self._lock:
            self._payloads.append(payload)

    def received(self) -> collections.Counter[int]:
        """seq -> copies received; checks each new sample against the stream as it decodes it."""
        with self._lock:
            new, self._decoded = self._payloads[self._decoded :], len(self._payloads)
        for payload in new:
            assert len(payload) <= CHILD_SETTINGS["max_payload_bytes"]
            batch = decode_batch(payload)
            assert batch.thing_name == THING
            cols = batch.samples
            for offset, (index, time_ms, value) in enumerate(
                zip(cols.metric_index, cols.time_ms, cols.values, strict=True)
            ):
                seq = batch.seq_first + offset
                assert (cols.metrics[index], time_ms, value) == stream_sample(seq), f"seq {seq} carries wrong data"
                self.copies[seq] += 1
            self.batches += 1
        return self.copies


class GatewayProcess:
    """The child gateway: started on the same config (and buffer) every time."""

    def __init__(self, config_path: Path, log_dir: Path) -> None:
        self.config_path = config_path
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.log_dir / f"gateway-{self.starts:02d}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(CHILD), str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_started(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while STARTED_MARK not in self.log_path.read_text(errors="replace"):
            assert self.process.poll() is None, f"gateway exited early: {self.log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"gateway did not start within {timeout_s} s"
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def kill(self) -> bool:
        """SIGKILL; True when that is what ended it (not a clean exit just before)."""
        self.signal(signal.SIGKILL)
        return self.process.wait(timeout=10) == -signal.SIGKILL

    def stop_for_good(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class Chaos:
    def __init__(self, tmp_path: Path) -> None:
        self.rng = random.Random(SEED)
        ca = CertificateAuthority.create(tmp_path / "ca", "edgeloop-chaos-ca")
        self.cloud_cert: IssuedCert = ca.issue(CLOUD_IDENTITY, tmp_path / "certs")
        gateway_cert = ca.issue(THING, tmp_path / "certs")
        self.broker = MosquittoBroker(tmp_path / "broker", ca, port=free_port())  # fixed port across restarts
        self.buffer_path = tmp_path / "gateway" / "buffer.sqlite"
        config = {
            "thing_name": THING,
            "buffer_path": str(self.buffer_path),
            "host": self.broker.host,
            "port": self.broker.port,
            "cert_path": str(gateway_cert.cert_path),
            "key_path": str(gateway_cert.key_path),
            "ca_path": str(gateway_cert.ca_path),
            **CHILD_SETTINGS,
        }
        config_path = tmp_path / "gateway.json"
        config_path.write_text(json.dumps(config))
        self.gateway = GatewayProcess(config_path, tmp_path)
        self.inbox = TelemetryInbox()
        self.subscriber: Mqtt5Connection | None = None
        self.kills = 0
        self.kills_mid_flush = 0
        self.kills_with_pending = 0
        self.broker_restarts = 0

    # --- the cloud side ----------------------------------------------------------------------------
    def connect_subscriber(self) -> None:
        self.subscriber = connect_mqtt5(
            self.broker.host,
            self.broker.port,
            self.cloud_cert,
            "cloud-chaos",
            on_message=self.inbox,
            timeout_s=10,
            iot_core_limits=False,
        )
        self.subscriber.subscribe(names.telemetry_topic(THING), qos=1, timeout_s=10)  # returns after SUBACK

    def buffer_state(self) -> tuple[int, set[int]]:
        """(next_seq, pending seqs) as committed in the gateway's buffer file."""
        with contextlib.closing(sqlite3.connect(self.buffer_path, timeout=30)) as db:
            db.execute("BEGIN")  # one snapshot for both reads
            row = db.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
            pending = {seq for (seq,) in db.execute("SELECT seq FROM samples")}
            db.execute("COMMIT")
        return (row[0] if row else 0), pending

    def wait_until_delivered(self, seqs: set[int], what: str) -> None:
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while missing := seqs - self.inbox.received().keys():
            assert time.monotonic() < deadline, (
                f"{what}: {len(missing)} samples left the gateway's buffer but never reached the subscriber, "
                f"e.g. seqs {sorted(missing)[:10]}"
            )
            time.sleep(0.05)

    # --- the actions --------------------------------------------------------------------------------
    def restart_gateway(self) -> None:
        self.gateway.start()
        self.gateway.wait_started()

    def kill_gateway(self) -> None:
        mid_flush = self.rng.random() < FLUSH_KILL_SHARE
        if mid_flush:
            self.gateway.signal(signal.SIGTERM)
            time.sleep(self.rng.uniform(0.0, 0.1))
        if self.gateway.kill():
            self.kills += 1
            self.kills_mid_flush += mid_flush
            self.kills_with_pending += bool(self.buffer_state()[1])
        self.restart_gateway()

    def restart_broker(self) -> None:
        self.gateway.signal(signal.SIGSTOP)
        next_seq, pending = self.buffer_state()
        self.wait_until_delivered(set(range(next_seq)) - pending, "before a broker stop")
        self.subscriber.stop()
        self.broker.stop()
        self.gateway.signal(signal.SIGCONT)
        time.sleep(self.rng.uniform(*OUTAGE_S))  # the gateway appends on, its publishes fail
        self.gateway.signal(signal.SIGSTOP)
        self.broker.start()
        self.connect_subscriber()  # subscribed before the gateway can publish again
        self.gateway.signal(signal.SIGCONT)
        self.broker_restarts += 1

    def run(self) -> None:
        actions = ["kill"] * KILL_ACTIONS + ["broker"] * BROKER_RESTARTS
        self.rng.shuffle(actions)
        self.restart_gateway()
        for action in actions:
            time.sleep(self.rng.uniform(*RUN_BEFORE_ACTION_S))
            if action == "kill":
                self.kill_gateway()
            else:
                self.restart_broker()
        while self.kills < MIN_KILLS:
            time.sleep(self.rng.uniform(*RUN_BEFORE_ACTION_S))
            self.kill_gateway()
        time.sleep(1.0)

    def final_flush(self) -> int:
        """SIGTERM the last gateway and wait for its clean exit; returns its exit code."""
        self.gateway.signal(signal.SIGTERM)
        return self.gateway.process.wait(timeout=CHILD_SETTINGS["flush_timeout_s"] + 15)

    def close(self) -> None:
        self.gateway.stop_for_good()
        if self.subscriber is not None:
            self.subscriber.stop()
        self.broker.stop()


def test_sigkills_and_broker_restarts_lose_and_duplicate_nothing_after_dedup(tmp_path: Path):
    chaos = Chaos(tmp_path)
    started = time.monotonic()
    try:
        chaos.broker.start()
        chaos.connect_subscriber()
        chaos.run()
        exit_code = chaos.final_flush()
        assert exit_code == 0, f"final flush failed: {chaos.gateway.log_path.read_text()[-3000:]}"
        with SampleBuffer(chaos.buffer_path, thing_name=THING, line_id="line-chaos") as buffer:
            stats = buffer.stats()
        accepted = stats.accepted_total
        assert stats.pending == 0 and stats.acked_total == accepted and stats.dropped_total == 0
        chaos.wait_until_delivered(set(range(accepted)), "after the final flush")
        copies = chaos.inbox.received()
    finally:
        chaos.close()
    elapsed = time.monotonic() - started

    print(
        f"\nchaos: {accepted} samples accepted over {chaos.gateway.starts} gateway runs, "
        f"{chaos.kills} SIGKILLs ({chaos.kills_mid_flush} mid-flush, {chaos.kills_with_pending} with data pending), "
        f"{chaos.broker_restarts} broker restarts, {chaos.inbox.batches} batches received, "
        f"{sum(copies.values()) - len(copies)} duplicate samples, {elapsed:.1f} s"
    )
    assert chaos.kills >= MIN_KILLS and chaos.kills_mid_flush >= 1
    assert chaos.broker_restarts == BROKER_RESTARTS
    assert accepted > 10_000  # the stream really ran
    # every accepted sample arrived; after de-duplication by sequence number, exactly once
    assert set(copies) == set(range(accepted))
    assert len(copies) == accepted
