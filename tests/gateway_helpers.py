"""What the gateway and device-shim tests share: a clock moved by hand, a rate count and gateway configs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from edgeloop.greengrass_components.gateway.config import GatewayConfig


class FakeClock:
    """Call it for the time; sleep() moves the time on and records how long was waited."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """Most events in any closed window of window_s seconds (times ascending)."""
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] > window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def extrusion_gateway_config(
    buffer_path: Path, *, broker: Any = None, cert: Any = None, **fields: Any
) -> GatewayConfig:
    """An extrusion gateway buffering at buffer_path: MQTT with mutual TLS to `broker` (a MosquittoBroker:
    its device listener, where the client id is the certificate's CN) with
    `cert` (cert_path, key_path, ca_path) when given, else transport="greengrass". `fields` override."""
    identity = dict(
        thing_name="gw-1",
        site="site-1",
        line_id="line-1",
        use_case="extrusion",
        architecture="x86_64",
        runtime_version="1.0.0",
        buffer_path=buffer_path,
    )
    if broker is None:
        link = {"transport": "greengrass"}
    else:
        link = dict(
            broker_host=broker.host,
            broker_port=broker.device_port,
            cert_path=cert.cert_path,
            key_path=cert.key_path,
            ca_path=cert.ca_path,
        )
    return GatewayConfig(**{**identity, **link, **fields})


class Inbox:
    """The messages one MQTT client received, with bounded waits for what a test expects."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._changed = threading.Condition()

    def __call__(self, topic: str, payload: bytes) -> None:
        with self._changed:
            self.messages.append((topic, payload))
            self._changed.notify_all()

    def wait_for_count(self, n: int, timeout_s: float = 10.0) -> list[tuple[str, bytes]]:
        """The first messages once at least `n` arrived."""
        self._wait(lambda: len(self.messages) >= n, f"{n} messages", timeout_s)
        with self._changed:
            return list(self.messages)

    def wait_for(self, topic: str, payload: bytes, timeout_s: float = 10.0) -> None:
        self._wait(lambda: (topic, payload) in self.messages, f"{topic} {payload!r}", timeout_s)

    def topics(self) -> set[str]:
        with self._changed:
            return {t for t, _ in self.messages}

    def _wait(self, arrived, what: str, timeout_s: float) -> None:
        with self._changed:
            if not self._changed.wait_for(arrived, timeout=timeout_s):
                raise AssertionError(f"{what} not received in {timeout_s} s; got {len(self.messages)}: {self.messages}")
