"""When replay hands things to the broker: a recording's samples released on its own timeline, the
wait for the buffer to drain, and the context messages, one at a time and each acknowledged.

Time is injected (`clock`, `sleep`, `stop`) so the tests run the timeline without waiting for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.transport import Transport, TransportError

CONTEXT_PUBLISHES_PER_S = 20.0  # well below IoT Core's 100 publishes/s per connection
CONTEXT_PUBLISH_TIMEOUT_S = 10.0

Sample = tuple[str, Any, Any]
Row = tuple[int | None, list[Sample]]  # (time_ms or None when it did not parse, the row's samples)
Clock = Callable[[], float]
Sleep = Callable[[float], None]


def paced_chunks(
    rows: Iterable[Row], speed: float, clock: Clock, sleep: Sleep, max_samples: int
) -> Iterator[list[Sample]]:
    """Group rows into chunks of at most ~max_samples; with speed > 0, release each row no earlier than
    start + (its time - the first time) / speed on `clock`. Rows out of time order (or without a time)
    go with the rows around them: their due time has passed."""
    pending: list[Sample] = []
    first_ms: int | None = None
    start = clock()
    for time_ms, samples in rows:
        if speed > 0 and time_ms is not None:
            if first_ms is None:
                first_ms = time_ms
            due = start + (time_ms - first_ms) / 1000.0 / speed
            if due > clock():
                if pending:
                    yield pending
                    pending = []
                wait = due - clock()
                if wait > 0:
                    sleep(wait)
        pending.extend(samples)
        if len(pending) >= max_samples:
            yield pending
            pending = []
    if pending:
        yield pending


def wait_for_drain(buffer: SampleBuffer, timeout_s: float, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout_s
    while buffer.pending_samples() and time.monotonic() < deadline and not stop.is_set():
        stop.wait(0.05)


def publish_context(
    transport: Transport,
    topic: str,
    messages: Iterable[tuple[int, bytes]],
    deadline: float,
    stop: threading.Event,
    sleep: Sleep,
) -> tuple[int, str]:
    """Each (intervals in it, payload) of `messages` on `topic`, acknowledged before the next, at most
    CONTEXT_PUBLISHES_PER_S; a failed publish is retried with backoff until `deadline`
    (time.monotonic()) or `stop`. Returns (intervals published, the transport error that stopped
    the publishing; "" when every message went out)."""
    published = attempt = 0
    for n, (count, payload) in enumerate(messages):
        if n:
            sleep(1.0 / CONTEXT_PUBLISHES_PER_S)
        while True:
            try:
                if not transport.is_connected:
                    transport.connect(CONTEXT_PUBLISH_TIMEOUT_S)
                transport.publish(topic, payload, CONTEXT_PUBLISH_TIMEOUT_S)
                published += count
                attempt = 0
                break
            except TransportError as exc:
                if stop.is_set() or time.monotonic() >= deadline:
                    return published, str(exc)
                stop.wait(min(2.0, 0.1 * 2**attempt, max(0.0, deadline - time.monotonic())))
                attempt += 1
    return published, ""
