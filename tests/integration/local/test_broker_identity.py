"""A gateway cannot take another gateway's client id on the local broker (issue 14, item 9).

IoT Core's policy lets a connection use only its own thing's client id. On mosquitto the gateways'
listener replaces the client id a client sends by its certificate's CN, so an impostor holding
gw-2's certificate who asks for gw-1's client id is connected as gw-2: gw-1 stays connected, keeps
its subscriptions, and the impostor receives none of gw-1's messages.
"""

from __future__ import annotations

import time

import pytest
from gateway_helpers import Inbox

from edgeloop.local.mosquitto import CLOUD_IDENTITY, MosquittoBroker
from edgeloop.local.mqtt import connect_mqtt5
from edgeloop.local.pki import CertificateAuthority
from edgeloop.schemas import names

VICTIM = "gw-1"
IMPOSTOR = "gw-2"
SETTLE_S = 1.0  # a kicked client reconnects within this (awscrt retries at once)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("broker")
    ca = CertificateAuthority.create(workdir / "ca", "edgeloop-local-ca")
    with MosquittoBroker(workdir / "mosquitto", ca) as broker:
        broker.certs = {name: ca.issue(name, workdir / "certs") for name in (VICTIM, IMPOSTOR, CLOUD_IDENTITY)}
        yield broker


def test_the_gateway_listener_is_a_second_port(broker):
    assert broker.device_port and broker.device_port != broker.port
    assert "use_username_as_clientid true" in broker.config_path.read_text()


def test_another_gateways_certificate_cannot_take_a_gateways_client_id(broker):
    victim_inbox, impostor_inbox = Inbox(), Inbox()
    port = broker.device_port
    victim = connect_mqtt5(broker.host, port, broker.certs[VICTIM], VICTIM, on_message=victim_inbox)
    impostor = None
    cloud = connect_mqtt5(broker.host, broker.port, broker.certs[CLOUD_IDENTITY], "test-cloud-identity")
    try:
        victim.subscribe(f"{names.TOPIC_ROOT}/{VICTIM}/#")
        impostor = connect_mqtt5(broker.host, port, broker.certs[IMPOSTOR], VICTIM, on_message=impostor_inbox)
        impostor.subscribe(f"{names.TOPIC_ROOT}/{VICTIM}/#")
        time.sleep(SETTLE_S)
        cloud.publish(names.model_update_topic(VICTIM), b"for gw-1 only")
        # A kicked victim would have reconnected with a clean session and lost its subscription.
        victim_inbox.wait_for(names.model_update_topic(VICTIM), b"for gw-1 only")
        assert victim.is_connected
        assert f"Client {VICTIM} already connected" not in broker.log_path.read_text()
        assert impostor_inbox.messages == []
    finally:
        for connection in (impostor, victim, cloud):
            if connection is not None:
                connection.stop()
