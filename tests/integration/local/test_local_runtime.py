"""The embedded runtime against the real servers: moto_server over HTTP and mosquitto with mutual TLS."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest
from awscrt import mqtt5
from gateway_helpers import Inbox

from edgeloop.cloud.aws import client
from edgeloop.local.aws import create_local_resources
from edgeloop.local.bridge import IotRuleBridge
from edgeloop.local.mosquitto import CLOUD_IDENTITY
from edgeloop.local.mqtt import MqttConnectError, MqttPublishError, connect_mqtt5
from edgeloop.local.pki import CertificateAuthority
from edgeloop.local.runtime import LocalRuntime
from edgeloop.schemas import IotRuleEvent, names

GATEWAY_A = "gw-a"
GATEWAY_B = "gw-b"
WAIT_S = 10.0
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _wait_until(condition, timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    with LocalRuntime(tmp_path_factory.mktemp("runtime"), [GATEWAY_A, GATEWAY_B]) as runtime:
        yield runtime


@pytest.fixture
def cloud(runtime):
    inbox = Inbox()
    connection = connect_mqtt5(
        runtime.broker.host, runtime.broker.port, runtime.cloud_cert, "test-cloud", on_message=inbox
    )
    connection.subscribe(f"{names.TOPIC_ROOT}/#")
    yield connection, inbox
    connection.stop()


def _gateway(runtime, thing: str):
    inbox = Inbox()
    connection = connect_mqtt5(runtime.broker.host, runtime.broker.port, runtime.certs[thing], thing, on_message=inbox)
    return connection, inbox


# --- AWS ------------------------------------------------------------------------------------------
def test_environment_points_every_client_at_moto_server(runtime):
    assert os.environ["AWS_ENDPOINT_URL"] == runtime.moto.endpoint_url
    assert os.environ[names.DATA_BUCKET_ENV] == names.LOCAL_DATA_BUCKET
    assert os.environ[names.DELIVERY_ENV] == "local"
    assert os.environ[names.LOCAL_BROKER_PORT_ENV] == str(runtime.broker.port)
    assert runtime.env["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_buckets_exist_over_plain_http(runtime):
    for bucket in (names.LOCAL_DATA_BUCKET, names.LOCAL_MODEL_BUCKET):
        request = urllib.request.Request(f"{runtime.moto.endpoint_url}/{bucket}", method="HEAD")
        with NO_PROXY.open(request, timeout=5) as response:
            assert response.status == 200
    missing = urllib.request.Request(f"{runtime.moto.endpoint_url}/no-such-bucket", method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as refused:
        NO_PROXY.open(missing, timeout=5)
    assert refused.value.code == 404


@pytest.mark.parametrize(
    ("table", "keys"),
    [(names.LOCAL_DEVICE_TABLE, names.DEVICE_TABLE_KEYS), (names.LOCAL_DEPLOYMENT_TABLE, names.DEPLOYMENT_TABLE_KEYS)],
)
def test_tables_follow_the_shared_key_schemas(runtime, table, keys):
    description = client("dynamodb").describe_table(TableName=table)["Table"]
    assert description["TableStatus"] == "ACTIVE"
    assert description["KeySchema"][0] == {"AttributeName": keys.partition_key, "KeyType": "HASH"}
    assert len(description["KeySchema"]) == (2 if keys.sort_key else 1)
    indexes = {
        index["IndexName"]: [k["AttributeName"] for k in index["KeySchema"]]
        for index in description.get("GlobalSecondaryIndexes", [])
    }
    assert indexes == {name: [pk, sk] if sk else [pk] for name, pk, sk in keys.indexes}
    assert {a["AttributeType"] for a in description["AttributeDefinitions"]} == {"S"}


def test_creating_resources_again_changes_nothing(runtime):
    client("s3").put_object(Bucket=names.LOCAL_DATA_BUCKET, Key="keep/me", Body=b"1")
    client("dynamodb").put_item(TableName=names.LOCAL_DEVICE_TABLE, Item={"thing_name": {"S": "keep-me"}})
    create_local_resources()
    assert client("s3").get_object(Bucket=names.LOCAL_DATA_BUCKET, Key="keep/me")["Body"].read() == b"1"
    item = client("dynamodb").get_item(TableName=names.LOCAL_DEVICE_TABLE, Key={"thing_name": {"S": "keep-me"}})
    assert "Item" in item


# --- MQTT -----------------------------------------------------------------------------------------
def test_a_certificate_from_another_ca_is_refused(runtime, tmp_path):
    rogue_ca = CertificateAuthority.create(tmp_path / "rogue", "edgeloop-local-ca")
    # Same CN as a real gateway, and it trusts the real broker: only the broker's check can refuse it.
    impostor = dataclasses.replace(rogue_ca.issue(GATEWAY_A, tmp_path / "rogue"), ca_path=runtime.ca.cert_path)
    started = time.monotonic()
    with pytest.raises(MqttConnectError, match="could not connect"):
        connect_mqtt5(runtime.broker.host, runtime.broker.port, impostor, "impostor", timeout_s=WAIT_S)
    assert time.monotonic() - started < WAIT_S
    # the client can see the refusal before mosquitto has written its log line
    _wait_until(lambda: "certificate verify failed" in runtime.broker.log_path.read_text(), what="log line")


def test_a_gateway_publishes_and_subscribes_on_its_own_topics(runtime, cloud):
    cloud_connection, cloud_inbox = cloud
    gateway, inbox = _gateway(runtime, GATEWAY_A)
    try:
        gateway.subscribe(f"{names.TOPIC_ROOT}/{GATEWAY_A}/#")
        gateway.publish(names.telemetry_topic(GATEWAY_A), b"own telemetry")
        cloud_inbox.wait_for(names.telemetry_topic(GATEWAY_A), b"own telemetry")
        inbox.wait_for(names.telemetry_topic(GATEWAY_A), b"own telemetry")
        cloud_connection.publish(names.model_update_topic(GATEWAY_A), b"update for a")
        inbox.wait_for(names.model_update_topic(GATEWAY_A), b"update for a")
    finally:
        gateway.stop()


def test_a_gateway_cannot_publish_on_another_gateways_topic(runtime, cloud):
    _, cloud_inbox = cloud
    gateway, _ = _gateway(runtime, GATEWAY_A)
    try:
        # mosquitto 2.0.11 answers a denied MQTT5 QoS1 publish with PUBACK "not authorized" and drops it.
        with pytest.raises(MqttPublishError) as refused:
            gateway.publish(names.telemetry_topic(GATEWAY_B), b"forged")
        assert refused.value.reason_code is mqtt5.PubackReasonCode.NOT_AUTHORIZED
        # The broker handles one connection's packets in order: once this marker is through,
        # the forged message would have been delivered too.
        gateway.publish(names.telemetry_topic(GATEWAY_A), b"marker")
        cloud_inbox.wait_for(names.telemetry_topic(GATEWAY_A), b"marker")
        assert names.telemetry_topic(GATEWAY_B) not in cloud_inbox.topics()
    finally:
        gateway.stop()


def test_a_gateway_cannot_read_another_gateways_topics(runtime, cloud):
    _, cloud_inbox = cloud
    snooper, snooper_inbox = _gateway(runtime, GATEWAY_A)
    victim, _ = _gateway(runtime, GATEWAY_B)
    try:
        snooper.subscribe(f"{names.TOPIC_ROOT}/{GATEWAY_A}/#")
        # mosquitto 2.0.11 grants the SUBACK but checks read access on every delivery.
        snooper.subscribe(f"{names.TOPIC_ROOT}/{GATEWAY_B}/#")
        victim.publish(names.telemetry_topic(GATEWAY_B), b"b's secret")
        cloud_inbox.wait_for(names.telemetry_topic(GATEWAY_B), b"b's secret")  # it was published
        snooper.publish(names.telemetry_topic(GATEWAY_A), b"marker")
        snooper_inbox.wait_for(names.telemetry_topic(GATEWAY_A), b"marker")
        assert snooper_inbox.topics() == {names.telemetry_topic(GATEWAY_A)}
    finally:
        snooper.stop()
        victim.stop()


# --- the bridge -----------------------------------------------------------------------------------
class RecordingHandler:
    def __init__(self, fail_on: bytes | None = None) -> None:
        self.calls: list[tuple[dict, object]] = []
        self.fail_on = fail_on

    def __call__(self, event: dict, context: object) -> dict:
        self.calls.append((event, context))
        if self.fail_on is not None and IotRuleEvent.model_validate(event).payload == self.fail_on:
            raise RuntimeError("handler blew up")
        return {"ok": True}


def test_the_bridge_turns_messages_into_iot_rule_events(runtime):
    handlers = {
        "ingest": RecordingHandler(fail_on=b"poison"),
        "device_registry": RecordingHandler(),
        "status_intake": RecordingHandler(),
        "context": RecordingHandler(),
        "predictions": RecordingHandler(),
    }
    gateway, gateway_inbox = _gateway(runtime, GATEWAY_A)
    # Every route direct (one IotRuleEvent per message): the batched telemetry path's SQS events are
    # tested in tests/unit/local/test_local_queue_batches.py and test_local_ingest_registry.py.
    direct = [dataclasses.replace(route, batched=False) for route in names.IOT_ROUTES]
    bridge = IotRuleBridge(runtime.broker.host, runtime.broker.port, runtime.cloud_cert, direct, handlers)
    with bridge:
        before_ms = time.time_ns() // 1_000_000
        gateway.publish(names.telemetry_topic(GATEWAY_A), b"\x00\x01binary batch")
        gateway.publish(names.telemetry_topic(GATEWAY_A), b"poison")
        gateway.publish(names.announce_topic(GATEWAY_A), json.dumps({"thing_name": GATEWAY_A}).encode())
        gateway.publish(names.telemetry_topic(GATEWAY_A), b"after the failure")
        gateway.publish(names.prediction_topic(GATEWAY_A), b'{"prediction": 1}')
        gateway.publish(names.alert_topic(GATEWAY_A), b'{"alert": 1}')
        _wait_until(lambda: bridge.delivered + bridge.failed == 6, what="six handler calls")
        bridge.wait_idle(timeout=WAIT_S)

        ingest_events = [IotRuleEvent.model_validate(e) for e, _ in handlers["ingest"].calls]
        assert [e.payload for e in ingest_events] == [b"\x00\x01binary batch", b"poison", b"after the failure"]
        first, context = handlers["ingest"].calls[0]
        assert first["topic"] == names.telemetry_topic(GATEWAY_A)
        assert base64.b64decode(first["payload_b64"]) == b"\x00\x01binary batch"
        assert before_ms <= first["received_at_ms"] <= time.time_ns() // 1_000_000
        assert context.function_name == "edgeloop-ingest" and context.aws_request_id
        announce, _ = handlers["device_registry"].calls[0]
        assert json.loads(base64.b64decode(announce["payload_b64"])) == {"thing_name": GATEWAY_A}
        assert handlers["status_intake"].calls == []
        landed = sorted(e["topic"] for e, _ in handlers["predictions"].calls)  # both routes, one function
        assert landed == sorted([names.alert_topic(GATEWAY_A), names.prediction_topic(GATEWAY_A)])
        assert (bridge.delivered, bridge.failed) == (5, 1)
        assert "handler blew up" in bridge.last_error

        gateway.subscribe(f"{names.TOPIC_ROOT}/{GATEWAY_A}/#")
        bridge.publish(names.model_update_topic(GATEWAY_A), b"new weights")
        gateway_inbox.wait_for(names.model_update_topic(GATEWAY_A), b"new weights")
    gateway.stop()


def test_the_bridge_refuses_routes_without_a_handler(runtime):
    with pytest.raises(ValueError, match="status_intake"):
        IotRuleBridge(
            runtime.broker.host,
            runtime.broker.port,
            runtime.cloud_cert,
            handlers={"ingest": RecordingHandler(), "device_registry": RecordingHandler()},
        )


def test_the_cloud_identity_is_reserved(tmp_path):
    with pytest.raises(ValueError, match=CLOUD_IDENTITY):
        LocalRuntime(tmp_path, [GATEWAY_A, CLOUD_IDENTITY])


# --- clean-up -------------------------------------------------------------------------------------
def test_processes_are_gone_and_the_environment_restored_after_exit(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://outer.invalid")
    monkeypatch.setenv("AWS_PROFILE", "someone")
    with LocalRuntime(tmp_path, [GATEWAY_A]) as runtime:
        pids = runtime.pids
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        assert "AWS_PROFILE" not in os.environ
    assert not any(_alive(pid) for pid in pids)
    assert os.environ["AWS_ENDPOINT_URL"] == "http://outer.invalid"
    assert os.environ["AWS_PROFILE"] == "someone"
    assert names.LOCAL_BROKER_PORT_ENV not in os.environ or os.environ[names.LOCAL_BROKER_PORT_ENV] != str(
        runtime.broker.port
    )


def test_an_interrupted_process_leaves_no_server_running(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from edgeloop.local.runtime import LocalRuntime
        with LocalRuntime(Path({str(tmp_path)!r}), ["gw-a"]) as runtime:
            print(*runtime.pids, flush=True)
            time.sleep(120)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in process.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    _wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=5, what="servers gone")
    assert process.returncode != 0  # the KeyboardInterrupt still ends the program
