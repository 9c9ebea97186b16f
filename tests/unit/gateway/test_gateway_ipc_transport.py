"""GreengrassIpcTransport through the SDK's real V2 client, with the nucleus connection faked.

`GreengrassCoreIPCClientV2(client=...)` accepts the V1 operation factory; the fake below implements
the two operations the transport uses, the way the eventstream RPC operations behave.
"""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import (
    QOS,
    BinaryMessage,
    IoTCoreMessage,
    JsonMessage,
    MQTTMessage,
    PublishToIoTCoreResponse,
    SubscribeToIoTCoreResponse,
    SubscribeToTopicResponse,
    SubscriptionResponseMessage,
    UnauthorizedError,
)
from ipc_fakes import FakeOperation, done

from edgeloop.greengrass_components.gateway.transport import (
    GreengrassIpcTransport,
    PublishFailed,
    SubscribeFailed,
    Transport,
)

pytestmark = pytest.mark.timeout(60)


class FakeNucleus:
    """Stands in for awsiot.greengrasscoreipc.client.GreengrassCoreIPCClient."""

    def __init__(self) -> None:
        self.publishes: list[FakeOperation] = []
        self.subscriptions: list[FakeOperation] = []
        self.publish_outcome = lambda: done(PublishToIoTCoreResponse())
        self.subscribe_outcome = lambda: done(SubscribeToIoTCoreResponse())

    def new_publish_to_iot_core(self) -> FakeOperation:
        operation = FakeOperation(lambda request: self.publish_outcome())
        self.publishes.append(operation)
        return operation

    def new_subscribe_to_iot_core(self, stream_handler) -> FakeOperation:
        operation = FakeOperation(lambda request: self.subscribe_outcome(), stream_handler)
        self.subscriptions.append(operation)
        return operation

    def deliver(self, topic: str, payload: bytes) -> None:
        for operation in self.subscriptions:
            operation.stream_handler.on_stream_event(
                IoTCoreMessage(message=MQTTMessage(topic_name=topic, payload=payload))
            )

    def close(self) -> concurrent.futures.Future:
        return done()


@pytest.fixture
def nucleus():
    return FakeNucleus()


@pytest.fixture
def transport(nucleus: FakeNucleus):
    ipc = GreengrassCoreIPCClientV2(client=nucleus)
    transport = GreengrassIpcTransport(ipc)
    transport.connect(timeout_s=1)
    yield transport
    transport.disconnect()
    ipc.close()


def test_satisfies_the_transport_protocol(transport):
    assert isinstance(transport, Transport)
    assert transport.is_connected


def test_publish_sends_qos1_to_iot_core(transport, nucleus: FakeNucleus):
    transport.publish("edgeloop/gw-1/telemetry", b"\x78\x9c payload", timeout_s=1)
    (operation,) = nucleus.publishes
    assert operation.request.topic_name == "edgeloop/gw-1/telemetry"
    assert operation.request.qos == QOS.AT_LEAST_ONCE
    assert operation.request.payload == b"\x78\x9c payload"


def test_ipc_error_becomes_publish_failed(transport, nucleus: FakeNucleus):
    nucleus.publish_outcome = lambda: done(error=UnauthorizedError(message="not allowed: edgeloop/other/x"))
    with pytest.raises(PublishFailed, match="UnauthorizedError.*not allowed"):
        transport.publish("edgeloop/other/x", b"x", timeout_s=1)


def test_publish_without_response_times_out(transport, nucleus: FakeNucleus):
    nucleus.publish_outcome = concurrent.futures.Future  # never completes
    with pytest.raises(PublishFailed, match="no response within 0.2 s"):
        transport.publish("edgeloop/gw-1/telemetry", b"x", timeout_s=0.2)


def test_publish_after_disconnect_fails_at_once(transport, nucleus: FakeNucleus):
    transport.disconnect()
    with pytest.raises(PublishFailed, match="disconnected"):
        transport.publish("edgeloop/gw-1/telemetry", b"x", timeout_s=1)
    assert nucleus.publishes == []


def test_subscribe_delivers_messages_to_the_callback(transport, nucleus: FakeNucleus):
    received: list[tuple[str, bytes]] = []
    arrived = threading.Event()

    def on_message(topic: str, payload: bytes) -> None:
        received.append((topic, payload))
        arrived.set()

    transport.subscribe("edgeloop/gw-1/model-update", on_message, timeout_s=1)
    (operation,) = nucleus.subscriptions
    assert operation.request.topic_name == "edgeloop/gw-1/model-update"
    assert operation.request.qos == QOS.AT_LEAST_ONCE
    nucleus.deliver("edgeloop/gw-1/model-update", b'{"version": "1.2.0"}')
    assert arrived.wait(5)  # the V2 client runs stream callbacks on its executor
    assert received == [("edgeloop/gw-1/model-update", b'{"version": "1.2.0"}')]


def test_refused_subscription_raises(transport, nucleus: FakeNucleus):
    nucleus.subscribe_outcome = lambda: done(error=UnauthorizedError(message="denied"))
    with pytest.raises(SubscribeFailed, match="denied"):
        transport.subscribe("edgeloop/gw-2/#", lambda t, p: None, timeout_s=1)


def test_disconnect_closes_the_streams(transport, nucleus: FakeNucleus):
    transport.subscribe("edgeloop/gw-1/a", lambda t, p: None, timeout_s=1)
    transport.subscribe("edgeloop/gw-1/b", lambda t, p: None, timeout_s=1)
    transport.disconnect()
    assert all(op.closed for op in nucleus.subscriptions)
    assert not transport.is_connected


# --- the Greengrass component on top of the transport -----------------------------------------


class FakeNucleusWithPubSub(FakeNucleus):
    def __init__(self) -> None:
        super().__init__()
        self.local_subscriptions: list[FakeOperation] = []

    def new_subscribe_to_topic(self, stream_handler) -> FakeOperation:
        operation = FakeOperation(lambda request: done(SubscribeToTopicResponse()), stream_handler)
        self.local_subscriptions.append(operation)
        return operation

    def deliver_local(self, event) -> None:
        for operation in self.local_subscriptions:
            operation.stream_handler.on_stream_event(event)


def test_component_buffers_local_samples_and_publishes_telemetry(tmp_path):
    from edgeloop.greengrass_components.gateway.component import GreengrassGateway, parse_args
    from edgeloop.greengrass_components.gateway.flush_policy import FlushPolicy
    from edgeloop.schemas import DeviceAnnouncement, names
    from edgeloop.schemas.telemetry_codec import decode_batch

    nucleus = FakeNucleusWithPubSub()
    ipc = GreengrassCoreIPCClientV2(client=nucleus, executor=None)  # callbacks inline: deterministic
    config = parse_args(
        [
            "--thing-name",
            "gw-1",
            "--site",
            "site-1",
            "--line-id",
            "line-1",
            "--use-case",
            "extrusion",
            "--runtime-version",
            "1.0.0",
            "--buffer-path",
            str(tmp_path / "b.sqlite"),
            "--architecture",
            "aarch64",
        ]
    )
    gateway = GreengrassGateway(config, ipc)
    try:
        gateway.start()
        (local,) = nucleus.local_subscriptions
        assert local.request.topic == names.LOCAL_PUBSUB_SAMPLES_TOPIC
        announce = nucleus.publishes[0].request
        assert announce.topic_name == names.announce_topic("gw-1")
        assert DeviceAnnouncement.model_validate_json(announce.payload).architecture == "aarch64"

        good = [["temp_die", 1_760_000_000_000, 181.5], ["speed", 1_760_000_000_100, 12.0]]
        nucleus.deliver_local(SubscriptionResponseMessage(json_message=JsonMessage(message={"samples": good})))
        nucleus.deliver_local(
            SubscriptionResponseMessage(
                binary_message=BinaryMessage(message=b'{"samples": [["temp_die", 1760000000200, "NaN?"]]}')
            )
        )
        nucleus.deliver_local(SubscriptionResponseMessage(binary_message=BinaryMessage(message=b"not json")))
        assert gateway.buffer.stats().accepted_total == 2
        assert gateway.buffer.stats().rejected_total == {"non_numeric": 1}

        assert gateway.publisher.flush == FlushPolicy()  # the component's default: partial batches wait
        assert gateway.publisher.publish_pending() == 0
        assert gateway.publisher.publish_pending(flush=True) == 2
        telemetry = nucleus.publishes[-1].request
        assert telemetry.topic_name == names.telemetry_topic("gw-1")
        batch = decode_batch(telemetry.payload)
        assert (batch.thing_name, batch.line_id, batch.seq_first, batch.seq_last) == ("gw-1", "line-1", 0, 1)
    finally:
        gateway.close()
        ipc.close()
    assert local.closed
