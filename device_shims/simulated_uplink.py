"""A Transport whose network the simulated gateway can cut, to stage outages on a live broker."""

from __future__ import annotations

import logging
import threading

from edgeloop.greengrass_components.gateway.transport import (
    ConnectFailed,
    MessageCallback,
    PublishFailed,
    Transport,
    TransportError,
)

log = logging.getLogger("edgeloop.simulated_gateway")

# Wall seconds a publish may take; going offline waits as long for those under way.
PUBLISH_TIMEOUT_S = 10.0


class SimulatedUplink:
    """A Transport whose network can be cut: offline, connect and publish fail as on a dead link.

    Subscriptions are remembered and made again after every reconnect.
    """

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self._online = True
        self._subscriptions: dict[str, MessageCallback] = {}
        self._resubscribe = False
        self._lock = threading.RLock()
        self._in_flight = 0
        self._publishes = threading.Condition()
        self.delivered = 0  # publishes acknowledged by the broker

    @property
    def online(self) -> bool:
        return self._online

    @property
    def is_connected(self) -> bool:
        return self._online and self._inner.is_connected

    def connect(self, timeout_s: float) -> None:
        with self._lock:
            if not self._online:
                raise ConnectFailed("uplink down (simulated outage)")
            self._inner.connect(timeout_s)
            if self._resubscribe:
                for topic_filter, callback in self._subscriptions.items():
                    self._inner.subscribe(topic_filter, callback, timeout_s)
                self._resubscribe = False

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        with self._publishes:
            if not self._online:
                raise PublishFailed("uplink down (simulated outage)")
            self._in_flight += 1
        try:
            self._inner.publish(topic, payload, timeout_s)
            with self._publishes:
                self.delivered += 1
        finally:
            with self._publishes:
                self._in_flight -= 1
                self._publishes.notify_all()

    def subscribe(self, topic_filter: str, callback: MessageCallback, timeout_s: float) -> None:
        with self._lock:
            self._subscriptions[topic_filter] = callback
            self._inner.subscribe(topic_filter, callback, timeout_s)

    def go_offline(self) -> None:
        with self._lock:
            if not self._online:
                return
            with self._publishes:
                self._online = False
            self._inner.disconnect()
            self._resubscribe = True  # disconnect() forgets the transport's subscriptions
            with self._publishes:  # publishes begun before the cut end (acknowledged or failed) first
                self._publishes.wait_for(lambda: self._in_flight == 0, timeout=PUBLISH_TIMEOUT_S)
        log.info("uplink down (simulated outage)")

    def go_online(self, timeout_s: float) -> None:
        with self._lock:
            if self._online:
                return
            self._online = True
        log.info("uplink restored")
        try:
            self.connect(timeout_s)
        except TransportError as exc:  # the publisher keeps retrying with backoff
            log.warning("reconnect after the outage failed: %s", exc)

    def disconnect(self) -> None:
        self._inner.disconnect()
