"""Simulated gateway processes against real mosquitto (mutual TLS) and moto_server.

Each gateway runs as its own OS process, exactly as the demo launches it; a subscriber holding the
cloud certificate counts what actually crossed the broker.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gateway_helpers import extrusion_gateway_config

from edgeloop.cloud.aws import client
from edgeloop.device_shims.fleet import gateway_log_path, launch_fleet, stop_fleet
from edgeloop.device_shims.simulated_gateway import SimulatedGatewayConfig
from edgeloop.local.mqtt import connect_mqtt5
from edgeloop.local.runtime import LocalRuntime
from edgeloop.model_runtime.linear_format import LinearModel
from edgeloop.model_runtime.model_format import write_payload
from edgeloop.schemas import (
    ContextInterval,
    DeviceAnnouncement,
    DeviceStatus,
    ModelStatusReport,
    ModelUpdate,
    Precision,
    decode_batch,
    feature_schema_hash,
    load_use_case,
    names,
)

USE_CASE = load_use_case("extrusion")
HISTORY_THING = "gw-history"
LIVE_THING = "gw-live"
SIGTERM_THING = "gw-sigterm"
WAIT_S = 90.0


class CloudInbox:
    """Everything the cloud identity receives under edgeloop/#, telemetry decoded to sequence numbers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seqs: dict[str, list[int]] = {}
        self.metrics: dict[str, set[str]] = {}
        self.other: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        thing = names.thing_from_topic(topic)
        with self.lock:
            if topic == names.telemetry_topic(thing):
                batch = decode_batch(payload)
                self.seqs.setdefault(thing, []).extend(range(batch.seq_first, batch.seq_last + 1))
                self.metrics.setdefault(thing, set()).update(batch.samples.metrics)
            else:
                self.other.append((topic, payload))

    def messages(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.other if t == topic]

    def sequence_numbers(self, thing: str, expected: int, timeout_s: float = 10) -> set[int]:
        """The distinct sequence numbers received from `thing`, once `expected` arrived or the time ran out."""
        deadline = time.monotonic() + timeout_s
        while len(set(self.seqs.get(thing, []))) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        with self.lock:
            return set(self.seqs.get(thing, []))


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    with LocalRuntime(tmp_path_factory.mktemp("runtime"), [HISTORY_THING, LIVE_THING, SIGTERM_THING]) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def inbox(runtime):
    inbox = CloudInbox()
    connection = connect_mqtt5(
        runtime.broker.host,
        runtime.broker.port,
        runtime.cloud_cert,
        "test-cloud-sim",
        on_message=inbox,
        iot_core_limits=False,
    )
    connection.subscribe(f"{names.TOPIC_ROOT}/#")
    yield inbox
    connection.stop()


def write_config(runtime, home: Path, thing: str, line_id: str, **fields) -> SimulatedGatewayConfig:
    gateway = extrusion_gateway_config(
        home / "buffer.sqlite",
        broker=runtime.broker,
        cert=runtime.certs[thing],
        thing_name=thing,
        site="plant-a",
        line_id=line_id,
        runtime_version="1.2.0",
    )
    now_s = int(time.time()) // 60 * 60
    config = SimulatedGatewayConfig(
        gateway=gateway,
        seed=11,
        sim_start_ms=(now_s - 6 * 3600) * 1000,
        state_file=home / "state.json",
        stop_file=home / "stop",
        context_file=home / "context.jsonl",
        **fields,
    )
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.json").write_text(config.model_dump_json(indent=2))
    return config


def state(config: SimulatedGatewayConfig) -> dict:
    try:
        return json.loads(config.state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_for(what: str, condition, proc, config, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(
                f"gateway exited ({proc.returncode}) waiting for {what}: {gateway_log_path(config.state_file.parent / 'config.json').read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s; state {state(config)}")
        time.sleep(0.1)


def test_history_with_an_outage_lands_every_sample_once(runtime, inbox, tmp_path):
    config = write_config(
        runtime,
        tmp_path / HISTORY_THING,
        HISTORY_THING,
        "line-1",
        history_s=20 * 60,
        offline_windows=[(5 * 60, 5 * 60)],
        max_live_s=0,
    )
    [proc] = launch_fleet([config.state_file.parent / "config.json"])
    try:
        wait_for("history drained", lambda: state(config).get("history_drained"), proc, config)
    finally:
        codes = stop_fleet([proc], [config.stop_file], timeout=60)
    assert codes == [0], gateway_log_path(config.state_file.parent / "config.json").read_text()[-3000:]
    final = state(config)
    assert final["phase"] == "stopped" and final["last_error"] == ""
    assert final["accepted_samples"] == 20 * 60 * len(USE_CASE.metrics)
    assert final["pending"] == 0 and final["published_samples"] == final["accepted_samples"]

    [outage] = final["outages"]
    assert (outage["start_offset_s"], outage["end_offset_s"]) == (300, 600)
    # nothing left the gateway while the link was down: the backlog holds the whole outage's samples
    assert outage["publishes_during_outage"] == 0
    assert outage["pending_at_reconnect"] >= 300 * len(USE_CASE.metrics)

    assert inbox.sequence_numbers(HISTORY_THING, final["accepted_samples"]) == set(range(final["accepted_samples"]))
    assert inbox.metrics[HISTORY_THING] == set(USE_CASE.metrics)

    [announce] = inbox.messages(names.announce_topic(HISTORY_THING))
    announcement = DeviceAnnouncement.model_validate_json(announce)
    assert (announcement.line_id, announcement.supported_precisions) == ("line-1", [Precision.FP32])
    intervals = [ContextInterval.model_validate_json(line) for line in config.context_file.read_text().splitlines()]
    assert any(i.kind == "run" and i.spec is not None for i in intervals)
    broker_log = runtime.broker.log_path.read_text()
    assert broker_log.count(f"as {HISTORY_THING}") >= 2, "the gateway reconnected after its outage"


def _upload_model(version: str) -> ModelUpdate:
    """A linear payload predicting the window's last cold OD, in the local model bucket."""
    weights = np.zeros(len(USE_CASE.feature_names), dtype=np.float32)
    weights[USE_CASE.feature_names.index("cold_od_average__last")] = 1.0
    data = write_payload(
        LinearModel(weights=weights, bias=0.0),
        model_id="extrusion-line-2",
        version=version,
        objective="reg:squarederror",
        base_score=0.0,
        features=USE_CASE.feature_names,
    )
    key = f"{names.MODELS_PREFIX}/extrusion-line-2/{version}/fp32.npz"
    client("s3").put_object(Bucket=names.LOCAL_MODEL_BUCKET, Key=key, Body=data)
    return ModelUpdate(
        deployment_id=f"dep-{version}",
        model_id="extrusion-line-2",
        version=version,
        precision=Precision.FP32,
        payload_uri=f"s3://{names.LOCAL_MODEL_BUCKET}/{key}",
        sha256=hashlib.sha256(data).hexdigest(),
        features=USE_CASE.feature_names,
        feature_schema_hash=feature_schema_hash(USE_CASE.feature_names),
    )


def test_live_phase_applies_an_update_and_publishes_predictions(runtime, inbox, tmp_path):
    config = write_config(
        runtime,
        tmp_path / LIVE_THING,
        LIVE_THING,
        "line-2",
        history_s=10 * 60,
        live_speedup=60,
        max_live_s=3600,
    )
    [proc] = launch_fleet([config.state_file.parent / "config.json"])
    try:
        wait_for("history drained", lambda: state(config).get("history_drained"), proc, config)
        update = _upload_model("1.0.0")
        cloud = connect_mqtt5(runtime.broker.host, runtime.broker.port, runtime.cloud_cert, "test-cloud-delivery")
        try:
            cloud.publish(names.model_update_topic(LIVE_THING), update.model_dump_json().encode())
            cloud.publish(names.model_update_topic(LIVE_THING), b"{not an update")
        finally:
            cloud.stop()
        wait_for("model applied", lambda: state(config).get("model_version") == "1.0.0", proc, config)
        wait_for("predictions", lambda: state(config).get("predictions", 0) >= 3, proc, config)
    finally:
        codes = stop_fleet([proc], [config.stop_file], timeout=60)
    assert codes == [0]
    final = state(config)
    assert final["pending"] == 0 and final["phase"] == "stopped"
    assert "invalid model update" in final["last_error"]

    assert inbox.sequence_numbers(LIVE_THING, final["accepted_samples"]) == set(range(final["accepted_samples"]))
    assert USE_CASE.prediction_metric in inbox.metrics[LIVE_THING]
    reports = [ModelStatusReport.model_validate_json(p) for p in inbox.messages(names.model_status_topic(LIVE_THING))]
    assert [(r.deployment_id, r.status) for r in reports] == [("dep-1.0.0", DeviceStatus.APPLIED)]
    assert (config.model_state_dir / "active-model.json").exists(), "a restart would serve the same model"


def test_sigterm_stops_cleanly_and_drains(runtime, inbox, tmp_path):
    config = write_config(runtime, tmp_path / SIGTERM_THING, SIGTERM_THING, "line-3", history_s=5 * 60, max_live_s=600)
    [proc] = launch_fleet([config.state_file.parent / "config.json"])
    try:
        wait_for("live phase", lambda: state(config).get("phase") == "live", proc, config)
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    finally:
        stop_fleet([proc], [], timeout=5)
    final = state(config)
    assert final["phase"] == "stopped" and final["pending"] == 0
    assert final["accepted_samples"] >= 5 * 60 * len(USE_CASE.metrics)


def test_invalid_config_names_the_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "gateway": {},
                "seed": 1,
                "sim_start_ms": 0,
                "history_s": 60,
                "offline_windows": [[10, 0]],
                "state_file": "s",
                "stop_file": "x",
                "context_file": "c",
            }
        )
    )
    with pytest.raises(ValueError, match="gateway.thing_name"):
        SimulatedGatewayConfig.from_file(path)
    document = json.loads(path.read_text())
    gateway = extrusion_gateway_config(tmp_path / "b.sqlite", thing_name="gw-x", site="plant-a")
    document["gateway"] = json.loads(gateway.model_dump_json())
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"offline_windows\[0\]=\(10, 0\)"):
        SimulatedGatewayConfig.from_file(path)
