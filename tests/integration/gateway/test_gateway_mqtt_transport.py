"""Mqtt5Transport and Publisher against a real mosquitto with mutual TLS (edgeloop.local)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
from gateway_helpers import Inbox

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.publisher import Publisher
from edgeloop.greengrass_components.gateway.transport import (
    ConnectFailed,
    Mqtt5Transport,
    PublishFailed,
    SubscribeFailed,
)
from edgeloop.local.mosquitto import CLOUD_IDENTITY, MosquittoBroker
from edgeloop.local.pki import CertificateAuthority
from edgeloop.local.ports import free_port
from edgeloop.schemas import names
from edgeloop.schemas.telemetry_codec import decode_batch

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

THING = "gw-itest-1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create(root / "ca", "edgeloop-itest-ca")
    return {
        "ca": ca,
        "gateway": ca.issue(THING, root / "certs"),
        "cloud": ca.issue(CLOUD_IDENTITY, root / "certs"),
        "stranger": CertificateAuthority.create(root / "other-ca", "other-ca").issue(THING, root / "stranger"),
    }


@pytest.fixture
def broker(pki, tmp_path: Path):
    # a fixed port, so a restarted broker is found where the clients left it
    with MosquittoBroker(tmp_path / "broker", pki["ca"], port=free_port()) as started:
        yield started


def transport_for(broker: MosquittoBroker, cert, client_id: str) -> Mqtt5Transport:
    return Mqtt5Transport(
        broker.host,
        broker.port,
        cert.cert_path,
        cert.key_path,
        cert.ca_path,
        client_id,
        min_reconnect_delay_ms=100,
        max_reconnect_delay_ms=1000,
    )


@pytest.fixture
def cloud(broker, pki):
    transport = transport_for(broker, pki["cloud"], "cloud-itest")
    transport.connect(timeout_s=10)
    yield transport
    transport.disconnect()


@pytest.fixture
def gateway(broker, pki):
    transport = transport_for(broker, pki["gateway"], THING)
    yield transport
    transport.disconnect()


def test_publish_returns_after_puback_and_reaches_a_subscriber(cloud, gateway):
    inbox = Inbox()
    cloud.subscribe(f"{names.TOPIC_ROOT}/+/telemetry", inbox, timeout_s=5)
    gateway.connect(timeout_s=10)
    assert gateway.is_connected
    gateway.publish(names.telemetry_topic(THING), b"\x00\x01 binary", timeout_s=5)
    assert inbox.wait_for_count(1) == [(names.telemetry_topic(THING), b"\x00\x01 binary")]


def test_publish_outside_its_own_topics_is_refused(cloud, gateway):
    gateway.connect(timeout_s=10)
    with pytest.raises(PublishFailed, match="refused"):
        gateway.publish(names.telemetry_topic("someone-else"), b"x", timeout_s=5)


def test_gateway_receives_on_its_subscription(cloud, gateway):
    gateway.connect(timeout_s=10)
    inbox = Inbox()
    gateway.subscribe(names.model_update_topic(THING), inbox, timeout_s=5)
    cloud.publish(names.model_update_topic(THING), b'{"version":"1.0.1"}', timeout_s=5)
    assert inbox.wait_for_count(1) == [(names.model_update_topic(THING), b'{"version":"1.0.1"}')]


def test_invalid_topic_filter_is_refused(gateway):
    # (mosquitto 2.0 grants subscriptions regardless of the ACL and filters at delivery instead)
    gateway.connect(timeout_s=10)
    with pytest.raises(SubscribeFailed, match="edgeloop/#/x"):
        gateway.subscribe("edgeloop/#/x", lambda t, p: None, timeout_s=5)


def test_certificate_from_another_ca_fails_within_the_timeout(broker, pki):
    stranger = transport_for(broker, pki["stranger"], THING)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectFailed):
            stranger.connect(timeout_s=3)
        assert time.monotonic() - started < 5
        assert not stranger.is_connected
        with pytest.raises(PublishFailed, match="not connected"):
            stranger.publish(names.telemetry_topic(THING), b"x", timeout_s=1)
    finally:
        stranger.disconnect(timeout_s=2)


def test_publisher_drains_buffer_survives_a_broker_restart(broker, cloud, gateway, tmp_path: Path):
    inbox = Inbox()
    cloud.subscribe(f"{names.TOPIC_ROOT}/+/telemetry", inbox, timeout_s=5)
    buffer = SampleBuffer(tmp_path / "buffer.sqlite", thing_name=THING, line_id="line-1")
    publisher = Publisher(buffer, gateway, names.telemetry_topic(THING), min_backoff_s=0.05, max_backoff_s=0.5)
    buffer.append([(f"m{i % 5}", 1_760_000_000_000 + i, float(i % 977)) for i in range(40_000)])
    try:
        with running(publisher):
            _wait(lambda: buffer.pending_samples() == 0, 30, "the first drain")
        # a broker stopped between PUBACK and delivery would drop messages the test means to keep
        _wait(lambda: _received_seqs(inbox) >= set(range(40_000)), 10, "the cloud to receive the first drain")

        broker.stop()  # the uplink goes away: publishes fail at once, data stays buffered
        _wait(lambda: not gateway.is_connected, 10, "the gateway to notice")
        buffer.append([("m0", 1_760_000_100_000 + i, float(i)) for i in range(5_000)])
        started = time.monotonic()
        assert publisher.publish_pending() == 0
        assert time.monotonic() - started < 1
        assert buffer.pending_samples() == 5_000 and publisher.publish_failures >= 1

        broker.start()  # same port; both SDK clients reconnect with their backoff
        _wait(lambda: cloud.is_connected, 20, "the cloud client to reconnect")
        cloud.subscribe(f"{names.TOPIC_ROOT}/+/telemetry", inbox, timeout_s=5)  # SUBACK before the drain
        with running(publisher):
            _wait(lambda: buffer.pending_samples() == 0, 30, "the drain after the restart")
    finally:
        buffer.close()

    # the buffer empties on the broker's PUBACK, which can precede delivery to the subscriber
    expected = set(range(45_000))
    _wait(lambda: _received_seqs(inbox) >= expected, 10, "the cloud to receive the last batches")
    # everything sent before the outage and everything buffered during it arrived (duplicates allowed)
    assert _received_seqs(inbox) == expected
    assert publisher.max_publishes_in_1s <= 100


@contextlib.contextmanager
def running(publisher: Publisher):
    stop = threading.Event()
    worker = threading.Thread(target=publisher.run, args=(stop,), kwargs={"idle_sleep_s": 0.02})
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=10)
        assert not worker.is_alive()


def _received_seqs(inbox: Inbox) -> set[int]:
    seqs: set[int] = set()
    for _topic, payload in list(inbox.messages):
        batch = decode_batch(payload)
        assert batch.thing_name == THING and len(payload) <= 128 * 1024
        seqs.update(range(batch.seq_first, batch.seq_last + 1))
    return seqs


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
