"""GatewayConfig: the JSON file the demo and the fleet launcher write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeloop.greengrass_components.gateway.config import GatewayConfig

VALID = {
    "thing_name": "gw-1",
    "site": "site-1",
    "line_id": "line-1",
    "use_case": "extrusion",
    "architecture": "armv7l",
    "runtime_version": "1.2.0",
    "broker_host": "127.0.0.1",
    "broker_port": 8883,
    "cert_path": "/certs/gw-1.crt",
    "key_path": "/certs/gw-1.key",
    "ca_path": "/certs/ca.crt",
    "buffer_path": "/data/buffer.sqlite",
}


def test_round_trip_through_a_file(tmp_path: Path):
    config = GatewayConfig.model_validate(VALID)
    loaded = GatewayConfig.from_file(config.to_file(tmp_path / "gw.json"))
    assert loaded == config
    assert loaded.telemetry_topic == "edgeloop/gw-1/telemetry"
    assert loaded.buffer_max_bytes is None and loaded.transport == "mqtt"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("runtime_version", "1.2", "runtime_version='1.2'"),
        ("architecture", "mips", "architecture='mips'"),
        ("broker_port", 70000, "broker_port=70000"),
        ("buffer_max_bytes", 10, "buffer_max_bytes=10"),
        ("thing_name", "gw 1", "thing_name='gw 1'"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, field: str, value, message: str):
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(VALID | {field: value}))
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        GatewayConfig.from_file(path)


def test_mqtt_transport_needs_broker_and_certificates(tmp_path: Path):
    path = tmp_path / "gw.json"
    path.write_text(json.dumps({k: v for k, v in VALID.items() if k not in ("broker_host", "ca_path")}))
    with pytest.raises(ValueError, match="needs broker_host, ca_path"):
        GatewayConfig.from_file(path)
    greengrass = {k: v for k, v in VALID.items() if not k.startswith(("broker", "cert", "key", "ca"))}
    assert GatewayConfig.model_validate(greengrass | {"transport": "greengrass"}).broker_host is None


def test_not_json_is_reported_with_the_path(tmp_path: Path):
    path = tmp_path / "gw.json"
    path.write_text("{broken")
    with pytest.raises(ValueError, match="gw.json: not JSON"):
        GatewayConfig.from_file(path)
