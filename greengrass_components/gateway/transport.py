"""One publish/subscribe interface, two adapters: direct MQTT5 (mutual TLS) and Greengrass IPC.

Both return from publish() only once the message is acknowledged and raise PublishFailed otherwise,
so the caller acks its durable buffer only for delivered data. Neither relies on an in-memory
offline queue: when the link is down, publish fails at once and the data stays in the buffer.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edgeloop.schemas import names

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes], None]


class TransportError(Exception):
    """Base of every transport failure."""


class ConnectFailed(TransportError):
    pass


class PublishFailed(TransportError):
    pass


class SubscribeFailed(TransportError):
    pass


@runtime_checkable
class Transport(Protocol):
    def connect(self, timeout_s: float) -> None: ...

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None: ...

    def subscribe(self, topic_filter: str, callback: MessageCallback, timeout_s: float) -> None: ...

    @property
    def is_connected(self) -> bool: ...

    def disconnect(self) -> None: ...


class _Subscriptions:
    """Topic filter -> callback, with callbacks run in order on one worker thread.

    The worker keeps slow callbacks (a model download, say) off the SDK's event-loop thread,
    which must stay free to process PUBACKs.
    """

    def __init__(self, name: str) -> None:
        self._callbacks: dict[str, MessageCallback] = {}
        self._lock = threading.Lock()
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def add(self, topic_filter: str, callback: MessageCallback) -> None:
        with self._lock:
            self._callbacks[topic_filter] = callback

    def filters(self) -> list[str]:
        with self._lock:
            return list(self._callbacks)

    def dispatch(self, topic: str, payload: bytes) -> None:
        with self._lock:
            matching = [cb for f, cb in self._callbacks.items() if names.topic_matches(f, topic)]
        for callback in matching:
            try:
                self._worker.submit(self._run, callback, topic, payload)
            except RuntimeError:
                return  # shut down: the transport is closing

    @staticmethod
    def _run(callback: MessageCallback, topic: str, payload: bytes) -> None:
        try:
            callback(topic, payload)
        except Exception:
            log.exception("message callback for topic %s failed", topic)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


class Mqtt5Transport:
    """awsiotsdk MQTT5 client with mutual TLS, QoS 1, jittered exponential reconnect backoff.

    Once connect() has started the client, the SDK keeps reconnecting on its own with full-jitter
    backoff between min_reconnect_delay_ms and max_reconnect_delay_ms; connect() called again just
    waits for that. Every wait has a timeout: a TLS failure may not fire any callback for 20+ s.
    """

    def __init__(
        self,
        host: str,
        port: int,
        cert_path: Path | str,
        key_path: Path | str,
        ca_path: Path | str,
        client_id: str,
        *,
        keep_alive_s: int = 60,
        min_reconnect_delay_ms: int = 500,
        max_reconnect_delay_ms: int = 30_000,
        ack_timeout_s: int = 30,
    ) -> None:
        for name, path in (("cert_path", cert_path), ("key_path", key_path), ("ca_path", ca_path)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{name}={str(path)!r} is not a file")
        self.host = host
        self.port = port
        self.client_id = client_id
        self._paths = (str(cert_path), str(key_path), str(ca_path))
        self._options = dict(
            keep_alive_interval_sec=keep_alive_s,
            min_reconnect_delay_ms=min_reconnect_delay_ms,
            max_reconnect_delay_ms=max_reconnect_delay_ms,
            ack_timeout_sec=ack_timeout_s,
        )
        self._client: Any = None
        self._running = False  # start() called and no stop() since
        self._state = threading.Condition()
        self._connected = False
        self._failures = 0
        self._last_error = ""
        self._stopped = threading.Event()
        self._subscriptions = _Subscriptions(f"mqtt-{client_id}")

    def _build_client(self) -> Any:
        from awscrt import mqtt5
        from awsiot import mqtt5_client_builder

        cert, key, ca = self._paths
        return mqtt5_client_builder.mtls_from_path(
            endpoint=self.host,
            port=self.port,  # explicit: the default 443 + ALPN is IoT Core only
            cert_filepath=cert,
            pri_key_filepath=key,
            ca_filepath=ca,
            client_id=self.client_id,
            enable_metrics_collection=False,
            retry_jitter_mode=mqtt5.ExponentialBackoffJitterMode.FULL,
            # Fail queued work on disconnect: the durable buffer, not the SDK's memory, holds the data.
            offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
            on_publish_received=self._on_publish_received,
            on_lifecycle_connection_success=self._on_connection_success,
            on_lifecycle_connection_failure=self._on_connection_failure,
            on_lifecycle_disconnection=self._on_disconnection,
            on_lifecycle_stopped=self._on_stopped,
            **self._options,
        )

    # --- SDK callbacks (event-loop thread: keep them short) --------------------------------------
    def _on_connection_success(self, data: Any) -> None:
        with self._state:
            self._connected = True
            self._state.notify_all()
        if not getattr(data.connack_packet, "session_present", False):
            self._resubscribe()

    def _on_connection_failure(self, data: Any) -> None:
        with self._state:
            self._connected = False
            self._failures += 1
            self._last_error = _error_text(data.exception)
            self._state.notify_all()

    def _on_disconnection(self, data: Any) -> None:
        with self._state:
            self._connected = False
            self._last_error = _error_text(getattr(data, "exception", None))
            self._state.notify_all()

    def _on_stopped(self, data: Any) -> None:
        with self._state:
            self._connected = False
            self._state.notify_all()
        self._stopped.set()

    def _on_publish_received(self, data: Any) -> None:
        packet = data.publish_packet
        self._subscriptions.dispatch(packet.topic, bytes(packet.payload or b""))

    # --- Transport -------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, timeout_s: float) -> None:
        """Start the client (once) and wait for a CONNACK; raises ConnectFailed on failure or timeout."""
        with self._state:
            if self._connected:
                return
            failures_before = self._failures
        if self._client is None:
            self._client = self._build_client()
        if not self._running:
            self._stopped.clear()
            self._client.start()
            self._running = True
        with self._state:
            done = self._state.wait_for(lambda: self._connected or self._failures > failures_before, timeout_s)
            if self._connected:
                return
            reason = self._last_error if done else f"no CONNACK within {timeout_s:.1f} s"
        raise ConnectFailed(f"MQTT connect to {self.host}:{self.port} as {self.client_id!r} failed: {reason}")

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        from awscrt import mqtt5

        if not self._connected or self._client is None:
            raise PublishFailed(f"not connected to {self.host}:{self.port}")
        packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE)
        try:
            completion = self._client.publish(packet).result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise PublishFailed(f"no PUBACK for {topic} within {timeout_s:.1f} s") from None
        except Exception as exc:
            raise PublishFailed(f"publish to {topic} failed: {_error_text(exc)}") from exc
        puback = completion.puback
        if puback is None or puback.reason_code is None or int(puback.reason_code) >= 0x80:
            code = getattr(puback, "reason_code", None)
            raise PublishFailed(f"publish to {topic} refused: PUBACK reason {code!r}")

    def subscribe(self, topic_filter: str, callback: MessageCallback, timeout_s: float) -> None:
        if not self._connected or self._client is None:
            raise SubscribeFailed(f"not connected to {self.host}:{self.port}")
        self._subscriptions.add(topic_filter, callback)
        try:
            suback = self._send_subscribe([topic_filter]).result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise SubscribeFailed(f"no SUBACK for {topic_filter} within {timeout_s:.1f} s") from None
        except Exception as exc:
            raise SubscribeFailed(f"subscribe to {topic_filter} failed: {_error_text(exc)}") from exc
        codes = [int(code) for code in suback.reason_codes or []]
        if not codes or any(code >= 0x80 for code in codes):
            raise SubscribeFailed(f"subscribe to {topic_filter} refused: SUBACK reason codes {codes}")

    def _send_subscribe(self, topic_filters: list[str]) -> concurrent.futures.Future:
        from awscrt import mqtt5

        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=f, qos=mqtt5.QoS.AT_LEAST_ONCE) for f in topic_filters]
        )
        return self._client.subscribe(packet)

    def _resubscribe(self) -> None:
        """A clean session forgot our subscriptions: send them again (without blocking the event loop)."""
        filters = self._subscriptions.filters()
        if filters:
            future = self._send_subscribe(filters)
            future.add_done_callback(
                lambda f: f.exception() and log.warning("re-subscribe to %s failed: %s", filters, f.exception())
            )

    def disconnect(self, timeout_s: float = 5.0) -> None:
        """Stop the client (no more reconnects) and wait for it to stop, at most timeout_s."""
        if self._client is not None and self._running:
            self._running = False
            self._client.stop()
            if not self._stopped.wait(timeout_s):
                log.warning("MQTT client %s did not stop within %.1f s", self.client_id, timeout_s)
        with self._state:
            self._connected = False
        self._subscriptions.close()
        self._subscriptions = _Subscriptions(f"mqtt-{self.client_id}")  # usable again after a reconnect


def _error_text(error: object) -> str:
    if error is None:
        return "connection closed"
    name = getattr(error, "name", None)
    return f"{name}: {error}" if name else str(error) or type(error).__name__


def _ipc_error_text(error: Exception) -> str:
    # IPC service errors (UnauthorizedError, ServiceError, ...) carry their text in `.message`.
    return f"{type(error).__name__}: {getattr(error, 'message', None) or error}"


class GreengrassIpcTransport:
    """Publishes and subscribes to AWS IoT Core through the Greengrass nucleus (IPC mqttproxy).

    ipc_client is an `awsiot.greengrasscoreipc.clientv2.GreengrassCoreIPCClientV2`. The nucleus owns
    the IoT Core connection; publish() returns when the nucleus acknowledges the QoS 1 publish and
    raises PublishFailed on any IPC error or timeout. The caller owns (and closes) ipc_client.
    """

    def __init__(self, ipc_client: Any) -> None:
        self._ipc = ipc_client
        self._connected = False
        self._operations: list[Any] = []

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, timeout_s: float) -> None:
        # The V2 client connects to the nucleus when it is constructed; nothing to wait for here.
        self._connected = True

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        from awsiot.greengrasscoreipc.model import QOS

        if not self._connected:
            raise PublishFailed("Greengrass IPC transport is disconnected")
        try:
            future = self._ipc.publish_to_iot_core_async(topic_name=topic, qos=QOS.AT_LEAST_ONCE, payload=payload)
            future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise PublishFailed(f"PublishToIoTCore {topic}: no response within {timeout_s:.1f} s") from None
        except Exception as exc:
            raise PublishFailed(f"PublishToIoTCore {topic} failed: {_ipc_error_text(exc)}") from exc

    def subscribe(self, topic_filter: str, callback: MessageCallback, timeout_s: float) -> None:
        from awsiot.greengrasscoreipc.model import QOS

        if not self._connected:
            raise SubscribeFailed("Greengrass IPC transport is disconnected")

        def on_event(event: Any) -> None:
            message = event.message
            try:
                callback(message.topic_name, bytes(message.payload or b""))
            except Exception:
                log.exception("message callback for topic %s failed", message.topic_name)

        def on_error(error: Exception) -> bool:
            log.warning("SubscribeToIoTCore %s stream error: %s", topic_filter, error)
            return False  # keep the stream open

        try:
            future, operation = self._ipc.subscribe_to_iot_core_async(
                topic_name=topic_filter, qos=QOS.AT_LEAST_ONCE, on_stream_event=on_event, on_stream_error=on_error
            )
            future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise SubscribeFailed(f"SubscribeToIoTCore {topic_filter}: no response within {timeout_s:.1f} s") from None
        except Exception as exc:
            raise SubscribeFailed(f"SubscribeToIoTCore {topic_filter} failed: {_ipc_error_text(exc)}") from exc
        self._operations.append(operation)

    def disconnect(self) -> None:
        self._connected = False
        operations, self._operations = self._operations, []
        for operation in operations:
            try:
                operation.close()
            except Exception as exc:  # closing a stream the nucleus already closed
                log.debug("closing IPC stream: %s", exc)
