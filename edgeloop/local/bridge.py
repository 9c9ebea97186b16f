"""The local stand-in for AWS IoT topic rules: MQTT messages in, Lambda handler calls out.

For every route in `names.IOT_ROUTES` it subscribes (as the cloud identity) to the route's topic
filter and hands each message to the route's function as the `IotRuleEvent` the rule's SQL would
build; a batched route's messages (telemetry) are gathered and handed over as SQS events, as the
stack's queue and event source mapping do (edgeloop/local/queue_batches.py). Handlers run one at a
time on a worker thread, non-batched ones in arrival order: never on the MQTT client's event-loop
thread, which must stay free to receive.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from edgeloop.cloud.lambda_context import LocalLambdaContext
from edgeloop.local.mqtt import Mqtt5Connection, connect_mqtt5
from edgeloop.local.pki import IssuedCert
from edgeloop.local.queue_batches import BATCH_SIZE, BATCH_WINDOW_S, DeliveryCount, QueuedMessage, deliver_batch
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


@dataclass
class _Held:
    since: float  # time.monotonic() of the first message
    messages: list[QueuedMessage] = field(default_factory=list)


_TICK = object()  # the worker woke up to send a batch whose window ended
_RELEASE = object()  # release_batches(): every gathered batch is due now


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
        batch_size: int = BATCH_SIZE,
        batch_window_s: float = BATCH_WINDOW_S,
    ) -> None:
        """`batch_size`, `batch_window_s`: when a batched route's gathered messages go to its function."""
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
        if batch_size < 1 or batch_window_s < 0:
            raise ValueError(f"batch_size={batch_size} must be >= 1 and batch_window_s={batch_window_s} >= 0")
        self.batch_size = batch_size
        self.batch_window_s = batch_window_s
        self.batches = DeliveryCount()  # SQS-style invocations of batched routes
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None
        self._queue: queue.Queue[object] = queue.Queue()  # _Delivery, _TICK, _RELEASE or None (stop)
        self._pending = 0
        self._pending_changed = threading.Condition()
        self._worker: threading.Thread | None = None
        self._connection: Mqtt5Connection | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> IotRuleBridge:
        self.start_worker()
        try:
            self._connection = connect_mqtt5(
                self.host,
                self.port,
                self.cloud_cert,
                self.client_id,
                on_message=self.on_message,
                timeout_s=self.timeout_s,
                iot_core_limits=False,
            )
            for topic_filter in dict.fromkeys(r.topic_filter for r in self.routes):
                self._connection.subscribe(topic_filter)
        except Exception:
            self.stop()
            raise
        return self

    def start_worker(self) -> None:
        """The thread that invokes the handlers (start() starts it; tests feed it with on_message)."""
        if self._worker is not None:
            raise RuntimeError("the bridge is already started")
        self._worker = threading.Thread(target=self._work, name="iot-rule-bridge", daemon=True)
        self._worker.start()

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

    def on_message(self, topic: str, payload: bytes) -> None:
        # The rule's timestamp() is the broker's receive time; ours is the closest we have.
        received_at_ms = time.time_ns() // 1_000_000
        event = IotRuleEvent.from_message(topic, payload, received_at_ms=received_at_ms)
        for route in self.routes:
            if names.topic_matches(route.topic_filter, topic):
                with self._pending_changed:
                    self._pending += 1
                self._queue.put(_Delivery(route, event))

    def _work(self) -> None:
        held: dict[str, _Held] = {}  # batched route function -> its gathered messages
        while True:
            try:
                delivery = self._queue.get(timeout=self._next_batch_in(held))
            except queue.Empty:
                delivery = _TICK
            if delivery is None:  # stop: what was received is handled first
                for function in list(held):
                    self._invoke_batch(function, held.pop(function).messages)
                return
            if isinstance(delivery, _Delivery) and delivery.route.batched:
                gathered = held.setdefault(delivery.route.function, _Held(time.monotonic()))
                gathered.messages.append(QueuedMessage(delivery.event))
            elif isinstance(delivery, _Delivery):
                self._handled(1, lambda d=delivery: self._invoke(d))
            due = list(held) if delivery is _RELEASE else [f for f, h in held.items() if self._batch_due(h)]
            for function in due:
                self._invoke_batch(function, held.pop(function).messages)

    def _next_batch_in(self, held: dict[str, _Held]) -> float | None:
        if not held:
            return None
        oldest = min(h.since for h in held.values())
        return max(0.0, oldest + self.batch_window_s - time.monotonic())

    def _batch_due(self, held: _Held) -> bool:
        return len(held.messages) >= self.batch_size or time.monotonic() - held.since >= self.batch_window_s

    def _handled(self, count: int, work: Callable[[], None]) -> None:
        try:
            work()
        finally:
            with self._pending_changed:
                self._pending -= count
                self._pending_changed.notify_all()

    def _invoke_batch(self, function: str, messages: list[QueuedMessage]) -> None:
        """Invoke with SQS events until every message is handled or has used up its receives."""
        context = LambdaContext(function_name=f"{names.PROJECT}-{function}")

        def invoke(event: dict) -> object:
            return self.handlers[function](event, context)

        def deliver() -> None:
            remaining, dead_before = messages, self.batches.dead_lettered
            while remaining:
                remaining = deliver_batch(remaining, invoke, self.batches)
            dead = self.batches.dead_lettered - dead_before
            self.delivered += len(messages) - dead
            if dead:  # a failing handler must not stop the bridge (SQS moves them to the DLQ)
                self.failed += dead
                self.last_error = f"{function}: {dead} message(s) dead-lettered: {self.batches.last_error}"
                log.error("%s", self.last_error)

        self._handled(len(messages), deliver)

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

    def release_batches(self) -> None:
        """Hand every gathered batch to its function now, whatever its size and age (a benchmark on
        a simulated clock calls this at the end of each simulated batching window)."""
        self._queue.put(_RELEASE)

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
