"""The local stand-in for AWS IoT topic rules: MQTT messages in, Lambda handler calls out.

For every route in `names.IOT_ROUTES` it subscribes (as the cloud identity) to the route's topic
filter and hands each message to the route's function as the `IotRuleEvent` the rule's SQL would
build. Handlers run one at a time, in arrival order, on a worker thread: never on the MQTT
client's event-loop thread, which must stay free to receive.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edgeloop.cloud.lambda_context import LocalLambdaContext
from edgeloop.local.mqtt import Mqtt5Connection, connect_mqtt5
from edgeloop.local.pki import IssuedCert
from edgeloop.schemas import names
from edgeloop.schemas.envelope import IotRuleEvent

log = logging.getLogger(__name__)

# What callers pass as a Lambda context when they invoke a handler directly (see the demo).
LambdaContext = LocalLambdaContext
Handler = Callable[[dict, object], object]
BRIDGE_CLIENT_ID = "edgeloop-iot-rule-bridge"
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class _Delivery:
    route: names.IotRoute
    event: IotRuleEvent


class IotRuleBridge:
    """Start with `.start()` or `with IotRuleBridge(...) as bridge:`; `.wait_idle()` before reading results."""

    def __init__(
        self,
        host: str,
        port: int,
        cloud_cert: IssuedCert,
        routes: Sequence[names.IotRoute] = names.IOT_ROUTES,
        handlers: Mapping[str, Handler] | None = None,
        client_id: str = BRIDGE_CLIENT_ID,
        timeout_s: float = 10.0,
    ) -> None:
        handlers = dict(handlers or {})
        missing = sorted({r.function for r in routes} - set(handlers))
        if missing:
            raise ValueError(f"handlers has no function for route function(s) {missing}; got {sorted(handlers)}")
        self.host = host
        self.port = port
        self.cloud_cert = cloud_cert
        self.routes = tuple(routes)
        self.handlers = handlers
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None
        self._queue: queue.Queue[_Delivery | None] = queue.Queue()
        self._pending = 0
        self._pending_changed = threading.Condition()
        self._worker: threading.Thread | None = None
        self._connection: Mqtt5Connection | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> IotRuleBridge:
        if self._worker is not None:
            raise RuntimeError("the bridge is already started")
        self._worker = threading.Thread(target=self._work, name="iot-rule-bridge", daemon=True)
        self._worker.start()
        try:
            self._connection = connect_mqtt5(
                self.host,
                self.port,
                self.cloud_cert,
                self.client_id,
                on_message=self._on_message,
                timeout_s=self.timeout_s,
                iot_core_limits=False,
            )
            for topic_filter in dict.fromkeys(r.topic_filter for r in self.routes):
                self._connection.subscribe(topic_filter)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Disconnect, then let the worker finish what was already received, in order."""
        if self._connection is not None:
            self._connection.stop()
            self._connection = None
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(STOP_TIMEOUT_S)
            if self._worker.is_alive():
                log.warning("the bridge worker was still busy after %.0f s", STOP_TIMEOUT_S)
            self._worker = None

    def __enter__(self) -> IotRuleBridge:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- messages ---------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Send to a gateway as the cloud identity (the local model delivery uses this)."""
        if self._connection is None:
            raise RuntimeError("the bridge is not started")
        self._connection.publish(topic, payload, qos=qos)

    def _on_message(self, topic: str, payload: bytes) -> None:
        # The rule's timestamp() is the broker's receive time; ours is the closest we have.
        received_at_ms = time.time_ns() // 1_000_000
        event = IotRuleEvent.from_message(topic, payload, received_at_ms=received_at_ms)
        for route in self.routes:
            if names.topic_matches(route.topic_filter, topic):
                with self._pending_changed:
                    self._pending += 1
                self._queue.put(_Delivery(route, event))

    def _work(self) -> None:
        while (delivery := self._queue.get()) is not None:
            try:
                self._invoke(delivery)
            finally:
                with self._pending_changed:
                    self._pending -= 1
                    self._pending_changed.notify_all()

    def _invoke(self, delivery: _Delivery) -> None:
        function = delivery.route.function
        context = LambdaContext(function_name=f"{names.PROJECT}-{function}")
        try:
            self.handlers[function](delivery.event.model_dump(mode="json"), context)
        except Exception as exc:  # a failing handler must not stop the bridge (IoT rules go on too)
            self.failed += 1
            self.last_error = f"{function} failed on {delivery.event.topic}: {exc!r}"
            log.exception("handler %s failed on a message from %s", function, delivery.event.topic)
        else:
            self.delivered += 1

    @property
    def pending(self) -> int:
        with self._pending_changed:
            return self._pending

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until every received message was handled; TimeoutError if that takes over `timeout` s."""
        with self._pending_changed:
            if not self._pending_changed.wait_for(lambda: self._pending == 0, timeout=timeout):
                raise TimeoutError(
                    f"the bridge still had {self._pending} message(s) to handle after {timeout:g} s "
                    f"(delivered {self.delivered}, failed {self.failed})"
                )
