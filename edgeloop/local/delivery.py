"""The embedded runtime's model delivery: the ModelUpdate over MQTT instead of a Greengrass deployment.

moto has no greengrassv2, so locally the rollout functions publish the same document the
Greengrass deployment would merge into the model runner's configuration on each device's
model-update topic, as the cloud identity. Importing edgeloop.local registers it as
`EDGELOOP_DELIVERY=local` (see edgeloop.cloud.fleet.delivery.register_delivery).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import Field, FilePath

from edgeloop.cloud.fleet.delivery import check_same_deployment, register_delivery
from edgeloop.cloud.settings import EnvSettings
from edgeloop.local.pki import IssuedCert
from edgeloop.schemas import ModelUpdate, RolloutWave, names


class LocalDelivery:
    """Publishes the ModelUpdate JSON on each target's model-update topic (the embedded runtime)."""

    def __init__(self, publish: Callable[[str, bytes], None], close: Callable[[], None] | None = None) -> None:
        self._publish = publish
        self._close = close

    def deliver(self, deployment_id: str, wave: RolloutWave, update: ModelUpdate) -> None:
        check_same_deployment(deployment_id, update)
        payload = update.model_dump_json().encode()
        for thing in wave.targets:
            self._publish(names.model_update_topic(thing), payload)

    def close(self) -> None:
        if self._close is not None:
            self._close()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> LocalDelivery:
        """Connect (on first delivery) to the local broker with the cloud identity from the env."""
        broker = LocalBrokerSettings.from_env(environ)
        connection = _LazyBrokerConnection(broker)
        return cls(connection.publish, connection.stop)


class LocalBrokerSettings(EnvSettings):
    host: str = Field(validation_alias=names.LOCAL_BROKER_HOST_ENV, min_length=1)
    port: int = Field(validation_alias=names.LOCAL_BROKER_PORT_ENV, gt=0, lt=65536)
    cert_path: FilePath = Field(validation_alias=names.LOCAL_CLOUD_CERT_ENV)
    key_path: FilePath = Field(validation_alias=names.LOCAL_CLOUD_KEY_ENV)
    ca_path: FilePath = Field(validation_alias=names.LOCAL_CA_ENV)


class _LazyBrokerConnection:
    """Status intake may advance a rollout on every report but delivers rarely: connect on demand."""

    def __init__(self, broker: LocalBrokerSettings) -> None:
        self.broker = broker
        self._connection: Any = None

    def publish(self, topic: str, payload: bytes) -> None:
        if self._connection is None:
            self._connection = self._connect()
        self._connection.publish(topic, payload, qos=1)

    def stop(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.stop()

    def _connect(self) -> Any:
        from edgeloop.local.mqtt import connect_mqtt5  # awsiotsdk loads when a rollout first delivers

        common_name = certificate_common_name(self.broker.cert_path)
        cert = IssuedCert(
            cert_path=self.broker.cert_path,
            key_path=self.broker.key_path,
            ca_path=self.broker.ca_path,
            common_name=common_name,
        )
        client_id = f"{common_name}-delivery-{uuid.uuid4().hex[:8]}"
        return connect_mqtt5(self.broker.host, self.broker.port, cert, client_id)


def certificate_common_name(cert_path) -> str:
    certificate = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not common_names:
        raise ValueError(f"certificate {cert_path} has no common name")
    return str(common_names[0].value)


register_delivery("local", LocalDelivery.from_environment)
