"""The local loop's ingest checks lines against moto's IoT registry, as ingest in AWS does.

A gateway publishes over mutual TLS to mosquitto, the bridge hands the message to the real ingest
handler, which asks moto_server's IoT registry for the gateway's line: a gateway the runtime
registered lands its batch, an unregistered one is quarantined naming line_id.
"""

from __future__ import annotations

import time

import pytest

from edgeloop.cloud.aws import client
from edgeloop.cloud.datalake.raw import raw_batches
from edgeloop.functions.ingest import handler as ingest_handler
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.local.bridge import IotRuleBridge
from edgeloop.local.mqtt import connect_mqtt5
from edgeloop.local.runtime import LocalRuntime
from edgeloop.schemas import ColumnarSamples, QuarantineRecord, TelemetryBatch, encode_batch, names

REGISTERED = "gw-registered"
UNREGISTERED = "gw-unregistered"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    with LocalRuntime(tmp_path_factory.mktemp("runtime"), [REGISTERED, UNREGISTERED]) as runtime:
        yield runtime


def gateway_config(runtime, thing: str) -> GatewayConfig:
    cert = runtime.certs[thing]
    return GatewayConfig(
        thing_name=thing,
        site="plant-a",
        line_id="line-1",
        use_case="extrusion",
        architecture="x86_64",
        runtime_version="1.2.0",
        broker_host=runtime.broker.host,
        broker_port=runtime.broker.device_port,
        cert_path=cert.cert_path,
        key_path=cert.key_path,
        ca_path=cert.ca_path,
        buffer_path=runtime.workdir / f"{thing}.sqlite",
    )


def telemetry(thing: str) -> bytes:
    now_ms = time.time_ns() // 1_000_000
    batch = TelemetryBatch(
        format_version=2,
        thing_name=thing,
        line_id="line-1",
        seq_first=0,
        seq_last=3,
        samples=ColumnarSamples(
            metrics=["speed"],
            metric_index=[0] * 4,
            time_ms=[now_ms - 4000 + 1000 * i for i in range(4)],
            values=[1.0, 2.0, 3.0, 4.0],
        ),
    )
    return encode_batch(batch)


def keys(prefix: str) -> list[str]:
    listing = client("s3").list_objects_v2(Bucket=names.LOCAL_DATA_BUCKET, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_registered_gateway_lands_and_unregistered_one_is_quarantined(runtime, monkeypatch):
    monkeypatch.setenv(names.USE_CASE_ENV, "extrusion")  # the functions have no default use case
    runtime.register_gateway(gateway_config(runtime, REGISTERED))
    ingest_handler._settings.cache_clear()  # and its line directory: no answers cached from another moto_server
    # Only ingest matters here; the other routes get handlers that accept anything.
    handlers = {route.function: (lambda event, context: {}) for route in names.IOT_ROUTES}
    handlers["ingest"] = ingest_handler.lambda_handler
    with IotRuleBridge(runtime.broker.host, runtime.broker.port, runtime.cloud_cert, handlers=handlers) as bridge:
        for thing in (REGISTERED, UNREGISTERED):
            connection = connect_mqtt5(runtime.broker.host, runtime.broker.port, runtime.certs[thing], thing)
            connection.publish(names.telemetry_topic(thing), telemetry(thing))
            connection.stop()
        deadline = time.monotonic() + WAIT_S
        while bridge.delivered + bridge.failed < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        bridge.wait_idle(timeout=WAIT_S)
        assert (bridge.delivered, bridge.failed) == (2, 0), bridge.last_error

    (raw_key,) = keys(f"{names.RAW_PREFIX}/")  # telemetry is a batched route: one object for the batch
    raw_body = client("s3").get_object(Bucket=names.LOCAL_DATA_BUCKET, Key=raw_key)["Body"].read()
    assert [batch.thing_name for batch in raw_batches(raw_key, raw_body)] == [REGISTERED]
    (quarantine_key,) = keys(f"{names.QUARANTINE_PREFIX}/")
    body = client("s3").get_object(Bucket=names.LOCAL_DATA_BUCKET, Key=quarantine_key)["Body"].read()
    record = QuarantineRecord.model_validate_json(body)
    assert record.source == names.telemetry_topic(UNREGISTERED)
    assert [(r.field, r.value) for r in record.reasons] == [("line_id", "'line-1'")]
    assert f"no line for thing {UNREGISTERED!r}" in record.reasons[0].error
    ingest_handler._settings.cache_clear()


def test_registering_needs_a_certificate_from_the_runtime(runtime):
    config = gateway_config(runtime, REGISTERED).model_copy(update={"thing_name": "gw-stranger"})
    with pytest.raises(ValueError, match="thing_name='gw-stranger' has no certificate"):
        runtime.register_gateway(config)
