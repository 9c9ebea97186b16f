"""What a simulated gateway says about the future, and what tells it the line's runs.

- `LocalPubSub`: the gateway's local pub/sub (Greengrass IPC's stand-in): PLC/HMI adapters in the
  gateway's process subscribe to names.LOCAL_PUBSUB_PREDICTIONS_TOPIC / LOCAL_PUBSUB_ALERTS_TOPIC.
- `MesAdapter`: the MES's part. It hands the model runner the line's runs (with their spec limits)
  and states up to now, an open one with its planned end (the MES knows the plan), so a prediction
  made inside a run is always classified against that run's limits.
- `MessagePublisher`: a scoring round's PredictionMessage and AlertEvents, on the local pub/sub at
  once and to the broker through an ordered outbox, as the Greengrass model runner sends them
  (model_runner/component.py): predictions in PredictionBatches on names.prediction_topic under the
  prediction flush policy (prediction_batches.py, on the simulated clock, so message counts follow
  simulated time), each alert at once on names.alert_topic after the predictions held before it; an
  alert's clear never overtakes its raise, and what the broker cannot take now waits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from edgeloop.greengrass_components.gateway.transport import Transport
from edgeloop.greengrass_components.model_runner.component import MAX_PENDING_MESSAGES  # the runner's bound
from edgeloop.greengrass_components.model_runner.context_rules import context_payload
from edgeloop.greengrass_components.model_runner.prediction_batches import PredictionBatcher, prediction_flush_policy
from edgeloop.greengrass_components.model_runner.service import Outbox, Scored
from edgeloop.schemas import ContextInterval, ContextKind, names
from edgeloop.schemas.prediction import AlertEvent, PredictionBatch

from .extrusion import ExtrusionLineSimulator
from .simulated_uplink import PUBLISH_TIMEOUT_S

log = logging.getLogger(__name__)

MAX_ALERTS_KEPT = 1000  # alert events remembered for the state file and tests (a few per run at most)
LocalHandler = Callable[[str, dict], None]


class LocalPubSub:
    """Topic -> subscribers in this process; each gets the message's JSON document."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[LocalHandler]] = {}
        self._lock = threading.Lock()
        self.published: dict[str, int] = {}

    def subscribe(self, topic: str, handler: LocalHandler) -> None:
        with self._lock:
            self._handlers.setdefault(topic, []).append(handler)

    def publish(self, topic: str, document: dict) -> None:
        with self._lock:
            handlers = list(self._handlers.get(topic, ()))
            self.published[topic] = self.published.get(topic, 0) + 1
        for handler in handlers:
            try:
                handler(topic, document)
            except Exception:  # an adapter's failure must not stop the gateway
                log.exception("local subscriber of %s failed", topic)


class MesAdapter:
    """Tells the model runner the simulated line's runs and states; `tell()` before each scoring round."""

    def __init__(self, simulator: ExtrusionLineSimulator, add_context: Callable[[Sequence[ContextInterval]], int]):
        self.simulator = simulator
        self.add_context = add_context
        self._sent: dict[tuple[str, str], ContextInterval] = {}

    def intervals(self) -> list[ContextInterval]:
        """The runs and states simulated so far, each ending where the schedule plans it to end."""
        simulator = self.simulator
        planned_end_s = {}
        for segment in simulator.segments():
            if segment.kind == "run":
                planned_end_s[f"run-{segment.run_number:04d}"] = segment.end_s
            planned_end_s[f"state-{segment.start_s}"] = segment.end_s
        intervals = []
        for interval in simulator.context_intervals():
            if interval.kind not in (ContextKind.RUN, ContextKind.STATE):
                continue
            end_s = planned_end_s.get(interval.interval_id.removeprefix(f"{simulator.line_id}-"))
            if end_s is not None:
                end = datetime.fromtimestamp(simulator.start_ms / 1000 + end_s, UTC)
                interval = interval.model_copy(update={"end": max(interval.end, end)})
            intervals.append(interval)
        return intervals

    def tell(self) -> int:
        """Send what is new or changed since the last call; returns how many intervals were sent."""
        changed = []
        for interval in self.intervals():
            key = (interval.kind.value, interval.interval_id)
            if self._sent.get(key) != interval:
                changed.append(interval)
                self._sent[key] = interval
        if changed:
            self.add_context(changed)
        return len(changed)


class MessagePublisher:
    """A scoring round's messages: local pub/sub at once, the broker through the outbox."""

    def __init__(
        self,
        thing_name: str,
        uplink: Transport,
        simulator: ExtrusionLineSimulator,
        flush_max_latency_s: float = names.DEFAULT_PREDICTION_FLUSH_MAX_LATENCY_S,
        *,
        local: LocalPubSub | None = None,
    ) -> None:
        """The prediction flush policy runs on the simulator's clock; `.local` is the gateway's local pub/sub."""
        self.thing_name = thing_name
        self.local = local or LocalPubSub()
        clock = lambda: simulator.now_ms / 1000  # noqa: E731
        self.predictions = PredictionBatcher(prediction_flush_policy(flush_max_latency_s), clock)
        self.outbox: Outbox[tuple[str, bytes]] = Outbox(
            lambda message: uplink.publish(message[0], message[1], PUBLISH_TIMEOUT_S),
            describe=lambda message: f"message to {message[0]}",
            max_pending=MAX_PENDING_MESSAGES,
        )
        self.alerts: list[AlertEvent] = []
        self.prediction_messages = 0  # predictions made (each on the local pub/sub)
        self.prediction_batches = 0  # messages they went to the broker in

    @property
    def pending(self) -> int:
        return self.outbox.pending

    def publish(self, scored: Scored) -> None:
        """One scoring round's messages; then whatever prediction batch is due."""
        if scored.prediction is not None:
            self.local.publish(names.LOCAL_PUBSUB_PREDICTIONS_TOPIC, scored.prediction.model_dump(mode="json"))
            self.predictions.add(scored.prediction)
            self.prediction_messages += 1
        if scored.alerts:  # the cloud gets the predictions that decided an alert before it
            self._queue(self.predictions.drain())
        for alert in scored.alerts:
            self.local.publish(names.LOCAL_PUBSUB_ALERTS_TOPIC, alert.model_dump(mode="json"))
            self.outbox.put((names.alert_topic(self.thing_name), alert.model_dump_json().encode()))
            log.info("alert %s %s, lead time %s s", alert.alert_id, alert.event.value, alert.lead_time_s)
        self.alerts = (self.alerts + list(scored.alerts))[-MAX_ALERTS_KEPT:]
        if self._queue(self.predictions.due()) or scored.alerts:
            self.outbox.flush()

    def _queue(self, batches: list[PredictionBatch]) -> int:
        for batch in batches:
            self.outbox.put((names.prediction_topic(self.thing_name), batch.to_payload()))
            self.prediction_batches += 1
        return len(batches)

    def forward_context(self, intervals: Sequence[ContextInterval]) -> None:
        """Context the model runner derived from live signals (the use case's live_context rules), to the
        cloud's context intake as the Greengrass runner forwards it."""
        if intervals:
            self.outbox.put((names.context_topic(self.thing_name), context_payload(intervals)))

    def state(self) -> dict:
        """What the gateway's state file shows of its messages."""
        return {
            "prediction_messages": self.prediction_messages,
            "prediction_batches": self.prediction_batches,
            "messages_pending": self.outbox.pending,
            "alerts": [alert.model_dump(mode="json") for alert in self.alerts[-50:]],
        }

    def retry(self) -> int:
        return self.outbox.retry()

    def flush(self) -> int:
        """Everything: the held predictions too (a stop)."""
        self._queue(self.predictions.drain())
        return self.outbox.flush()
