"""Replay of the example recording through a real mosquitto with mutual TLS (edgeloop.local).

The replay runs as its own process (`python -m edgeloop.device_shims.replay`), as a user would run
it; a cloud subscriber counts every row's samples.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from gateway_helpers import extrusion_gateway_config

from edgeloop.greengrass_components.gateway.transport import Mqtt5Transport
from edgeloop.local.mosquitto import CLOUD_IDENTITY, MosquittoBroker
from edgeloop.local.pki import CertificateAuthority
from edgeloop.schemas import names
from edgeloop.schemas.telemetry_codec import decode_batch

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

THING = "gw-replay-itest"
EXAMPLES = Path(__file__).resolve().parents[3] / "device_shims" / "examples"
MAPPED_COLUMNS = ("line_speed_mpm", "screw_rpm", "die_temp_c", "melt_pressure_bar", "cold_od_avg_mm")


class TelemetryInbox:
    def __init__(self) -> None:
        self.samples: dict[int, tuple[str, int, float]] = {}  # seq -> sample: duplicates land once
        self.received = 0
        self._changed = threading.Condition()

    def __call__(self, topic: str, payload: bytes) -> None:
        batch = decode_batch(payload)
        assert batch.thing_name == THING and topic == names.telemetry_topic(THING)
        s = batch.samples
        with self._changed:
            for offset, (i, t, v) in enumerate(zip(s.metric_index, s.time_ms, s.values, strict=True)):
                self.samples[batch.seq_first + offset] = (s.metrics[i], t, v)
                self.received += 1
            self._changed.notify_all()

    def wait_for(self, n: int, timeout_s: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: len(self.samples) >= n, timeout_s)
            return len(self.samples)


@pytest.fixture
def broker_and_certs(tmp_path: Path):
    ca = CertificateAuthority.create(tmp_path / "ca", "edgeloop-replay-ca")
    gateway = ca.issue(THING, tmp_path / "certs")
    cloud = ca.issue(CLOUD_IDENTITY, tmp_path / "certs")
    with MosquittoBroker(tmp_path / "broker", ca) as broker:
        yield broker, gateway, cloud


def test_replayed_recording_reaches_a_cloud_subscriber_row_by_row(tmp_path, broker_and_certs):
    broker, gateway_cert, cloud_cert = broker_and_certs
    cloud = Mqtt5Transport(
        broker.host, broker.port, cloud_cert.cert_path, cloud_cert.key_path, cloud_cert.ca_path, "cloud-replay-itest"
    )
    inbox = TelemetryInbox()
    cloud.connect(timeout_s=10)
    try:
        cloud.subscribe(f"{names.TOPIC_ROOT}/+/telemetry", inbox, timeout_s=5)
        config = extrusion_gateway_config(
            tmp_path / "gateway" / "buffer.db", broker=broker, cert=gateway_cert, thing_name=THING
        ).to_file(tmp_path / "gateway.json")
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgeloop.device_shims.replay",
                "--mapping",
                str(EXAMPLES / "extrusion_recording.mapping.yaml"),
                "--gateway-config",
                str(config),
                "--drain-timeout",
                "30",
                "--shift-to-now",  # the recording is older than ingest's lateness SLA
                str(EXAMPLES / "extrusion_recording.csv"),
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        report = json.loads(completed.stdout)

        recording = pd.read_csv(EXAMPLES / "extrusion_recording.csv", dtype=str, keep_default_na=False)
        expected = int((recording[list(MAPPED_COLUMNS)] != "").to_numpy().sum())
        assert expected == 150
        assert (report["rows"], report["accepted"], report["rejected"], report["pending"]) == (
            len(recording),
            expected,
            {},
            0,
        )
        assert inbox.wait_for(expected, timeout_s=15) == expected
    finally:
        cloud.disconnect()
    assert sorted(inbox.samples) == list(range(expected))  # one contiguous sequence, nothing missing
    per_row: dict[int, int] = {}
    for _, time_ms, _ in inbox.samples.values():
        per_row[time_ms] = per_row.get(time_ms, 0) + 1
    assert len(per_row) == len(recording) and set(per_row.values()) == {len(MAPPED_COLUMNS)}
    assert {metric for metric, _, _ in inbox.samples.values()} == {
        "speed",
        "screw_rpm",
        "temp_die",
        "pressure",
        "cold_od_average",
    }
