"""A small blocking wrapper around awsiotsdk's MQTT5 client, for the cloud side and tests.

It connects with mutual TLS exactly as a client of AWS IoT Core would; every blocking call has a
timeout because a TLS failure may not fire any callback for 20+ seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout

from awscrt import mqtt5
from awsiot import mqtt5_client_builder

from edgeloop.local.pki import IssuedCert

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes], None]
# A broker answers these when it accepted the publish (no subscriber is not a failure).
_ACCEPTED_PUBACKS = (mqtt5.PubackReasonCode.SUCCESS, mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS)
STOP_AFTER_FAILURE_S = 2.0  # a client stuck in a TLS handshake may take long to report stopped


class MqttError(RuntimeError):
    """An MQTT operation failed or timed out; the message names the operation and the reason."""


class MqttConnectError(MqttError):
    pass


class MqttPublishError(MqttError):
    def __init__(self, message: str, reason_code: mqtt5.PubackReasonCode | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class MqttSubscribeError(MqttError):
    def __init__(self, message: str, reason_codes: tuple = ()) -> None:
        super().__init__(message)
        self.reason_codes = reason_codes


class Mqtt5Connection:
    """A started, connected MQTT5 client; build one with `connect_mqtt5`."""

    def __init__(self, client_id: str, timeout_s: float) -> None:
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.client: mqtt5.Client | None = None
        self._connected = threading.Event()
        self._attempt_done = threading.Event()  # first connect attempt succeeded or failed
        self._stopped = threading.Event()
        self._failure: str | None = None

    # --- lifecycle callbacks (awscrt's event-loop thread) ---------------------------------------
    def _on_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        self._failure = None
        self._connected.set()
        self._attempt_done.set()

    def _on_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        reason = data.connack_packet.reason_code.name if data.connack_packet else None
        self._failure = f"{data.exception}" + (f" (CONNACK {reason})" if reason else "")
        self._attempt_done.set()

    def _on_disconnect(self, data: mqtt5.LifecycleDisconnectData) -> None:
        self._connected.clear()

    def _on_stopped(self, data: mqtt5.LifecycleStoppedData) -> None:
        self._stopped.set()

    def _wait_connected(self, host: str, port: int) -> None:
        # Fail on the first refused attempt rather than let the client retry in the background.
        self._attempt_done.wait(self.timeout_s)
        if self._connected.is_set():
            return
        failure = self._failure
        self.stop(timeout_s=STOP_AFTER_FAILURE_S)
        if failure:
            raise MqttConnectError(f"client {self.client_id!r} could not connect to {host}:{port}: {failure}")
        raise MqttConnectError(
            f"client {self.client_id!r} got no answer from {host}:{port} within {self.timeout_s:g} s"
        )

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes, qos: int = 1, timeout_s: float | None = None) -> None:
        """Publish and, for QoS 1, wait for the PUBACK; raise MqttPublishError unless the broker accepted it."""
        if not isinstance(payload, (bytes, bytearray)):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        packet = mqtt5.PublishPacket(topic=topic, payload=bytes(payload), qos=mqtt5.QoS(qos))
        completion = self._result(self._client().publish(packet), f"publish to {topic!r}", timeout_s)
        puback = completion.puback
        if puback is not None and puback.reason_code not in _ACCEPTED_PUBACKS:
            raise MqttPublishError(
                f"publish to {topic!r} was refused: {puback.reason_code.name} {puback.reason_string or ''}".strip(),
                reason_code=puback.reason_code,
            )

    def subscribe(self, topic_filter: str, qos: int = 1, timeout_s: float | None = None) -> None:
        """Subscribe and wait for the SUBACK; raise MqttSubscribeError if the broker refused."""
        subscription = mqtt5.Subscription(topic_filter=topic_filter, qos=mqtt5.QoS(qos))
        packet = mqtt5.SubscribePacket(subscriptions=[subscription])
        suback = self._result(self._client().subscribe(packet), f"subscribe to {topic_filter!r}", timeout_s)
        codes = tuple(suback.reason_codes)
        if any(code.value >= 0x80 for code in codes):
            raise MqttSubscribeError(
                f"subscribe to {topic_filter!r} was refused: {', '.join(c.name for c in codes)}", reason_codes=codes
            )

    def stop(self, timeout_s: float | None = None) -> None:
        """Disconnect and stop the client; waits (bounded) for the stopped event."""
        if self.client is None:
            return
        client, self.client = self.client, None
        client.stop()
        if not self._stopped.wait(self.timeout_s if timeout_s is None else timeout_s):
            log.warning("MQTT client %s did not report stopped in time", self.client_id)

    def _client(self) -> mqtt5.Client:
        if self.client is None:
            raise MqttError(f"client {self.client_id!r} is stopped")
        return self.client

    def _result(self, future, what: str, timeout_s: float | None):
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            return future.result(timeout=timeout)
        except FutureTimeout as exc:
            raise MqttError(f"{what} by {self.client_id!r} got no answer within {timeout:g} s") from exc
        except Exception as exc:  # awscrt raises its own error types for failed operations
            raise MqttError(f"{what} by {self.client_id!r} failed: {exc}") from exc

    def __enter__(self) -> Mqtt5Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def connect_mqtt5(
    host: str,
    port: int,
    cert: IssuedCert,
    client_id: str,
    on_message: MessageCallback | None = None,
    timeout_s: float = 10.0,
    iot_core_limits: bool = True,
) -> Mqtt5Connection:
    """Connect with mutual TLS and return once CONNACK arrived.

    Raises MqttConnectError on the first failed attempt (TLS refused, CONNACK refused) or when
    nothing happened within `timeout_s`.

    `on_message(topic, payload)` runs on awscrt's event-loop thread: keep it short.
    `iot_core_limits` keeps the SDK's IoT Core flow control (100 publishes/s per connection).
    """
    connection = Mqtt5Connection(client_id, timeout_s)

    def deliver(data: mqtt5.PublishReceivedData) -> None:
        packet = data.publish_packet
        try:
            on_message(packet.topic, bytes(packet.payload or b""))
        except Exception:  # an exception here would be swallowed by awscrt; make it visible
            log.exception("on_message failed for a message on %s", packet.topic)

    flow_control = (
        mqtt5.ExtendedValidationAndFlowControlOptions.AWS_IOT_CORE_DEFAULTS
        if iot_core_limits
        else mqtt5.ExtendedValidationAndFlowControlOptions.NONE
    )
    connection.client = mqtt5_client_builder.mtls_from_path(
        endpoint=host,
        port=port,
        cert_filepath=str(cert.cert_path),
        pri_key_filepath=str(cert.key_path),
        ca_filepath=str(cert.ca_path),
        client_id=client_id,
        session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
        extended_validation_and_flow_control_options=flow_control,
        enable_metrics_collection=False,
        on_publish_received=deliver if on_message else None,
        on_lifecycle_connection_success=connection._on_success,
        on_lifecycle_connection_failure=connection._on_failure,
        on_lifecycle_disconnection=connection._on_disconnect,
        on_lifecycle_stopped=connection._on_stopped,
    )
    connection.client.start()
    connection._wait_connected(host, port)
    return connection
