"""The com.edgeloop.ModelRunner Greengrass component: live samples in, predictions and model status out.

- Samples: sensor adapters publish `{"samples": [[metric, time_ms, value], ...]}` on the local pub/sub
  topic names.LOCAL_PUBSUB_SAMPLES_TOPIC, which the Gateway component buffers; this process listens
  on the same topic and scores the live window. Predictions go back on that topic, so the Gateway
  buffers and uploads them like any sample. The runner subscribes with RECEIVE_MESSAGES_FROM_OTHERS
  and so never reads its own predictions back.
- Model updates: a rollout merges a ModelUpdate into this component's configuration under
  names.MODEL_UPDATE_CONFIG_KEY. The runner reads it at start and on every configuration change,
  applies it (download, verify, health-check, swap) once the live window is full, and publishes the
  ModelStatusReport to IoT Core on names.model_status_topic(thing).
- Liveness: every `status_interval_s` (recipe configuration statusIntervalSeconds, default
  names.DEFAULT_STATUS_INTERVAL_S) a PeriodicStatus naming the model in use goes the same way; the
  cloud refreshes the device's last_seen from it, so a running gateway is never marked offline.
- Predictions: each also goes out as a PredictionMessage (schemas/prediction.py, keyed by made_at +
  horizon), classified against the spec limits in force: at once on names.LOCAL_PUBSUB_PREDICTIONS_TOPIC,
  batched to IoT Core on names.prediction_topic(thing) (prediction_batches.py). Violation AlertEvents
  (alerts.py) go at once to names.alert_topic(thing) and names.LOCAL_PUBSUB_ALERTS_TOPIC (PLC/HMI), the
  held predictions just before them: the cloud gets what decided an alert, which never waits.
  What IoT Core cannot take now waits in an outbox (in order; past MAX_PENDING_MESSAGES the oldest go).
- Context: MES/PLC adapters publish ContextIntervals (run, limits, state) on
  names.LOCAL_PUBSUB_CONTEXT_TOPIC; the runner keeps them in its work directory (context_store.py)
  and forwards them to the cloud's context intake on names.context_topic(thing) (same outbox).
The recipe passes the thing, work directory, line, use case and alert counts as environment variables.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from edgeloop.greengrass_components.ipc_main import run_until_sigterm
from edgeloop.greengrass_components.local_samples import local_sample_rows
from edgeloop.schemas import ModelStatusReport, ModelUpdate, PeriodicStatus, load_use_case, names
from edgeloop.schemas.context import ContextInterval
from edgeloop.schemas.model import architecture_of_machine
from edgeloop.schemas.prediction import PredictionBatch

from .agent import s3_download
from .context_rules import context_payload
from .context_store import intervals_from_event
from .prediction_batches import prediction_batcher
from .service import ModelService, Outbox, Sample, Scored
from .settings import RunnerSettings, settings_from_env
from .update_decoding import UpdateDecodeError, decode_model_update

log = logging.getLogger(__name__)

TICK_S = 0.5  # how often the main loop scores, applies pending updates and retries reports
CONFIG_SETTLE_S = 1.0  # a merge arrives as one event per changed key: read once they stop
IPC_TIMEOUT_S = 10.0
# Messages IoT Core refused (the nucleus spools while offline): a day of predictions even unbatched.
MAX_PENDING_MESSAGES = 2880


def update_from_configuration(value: Mapping[str, Any] | None) -> ModelUpdate | None:
    """The ModelUpdate held under modelUpdate; None for the recipe's empty default `{}`.

    GetConfiguration on a key that holds a map returns the map itself; on a leaf it returns
    {key: value}, which is not a ModelUpdate and is refused like any malformed one.
    Decoded by update_decoding.decode_model_update: bounded (size, depth, counts) before anything is
    built from it, strictly typed; a refusal is an UpdateDecodeError (a ValueError) naming field,
    value and reason.
    """
    if not value:
        return None
    try:
        return decode_model_update(value)
    except UpdateDecodeError as exc:
        raise UpdateDecodeError(
            f"{names.MODEL_UPDATE_CONFIG_KEY}.{exc.field}"
            if exc.field != "<update>"
            else names.MODEL_UPDATE_CONFIG_KEY,
            exc.value,
            exc.reason,
        ) from None


def samples_from_event(event: Any) -> tuple[list[Sample], int]:
    """The readings of one SubscribeToTopic event and how many rows were malformed.

    Rows are [metric, time_ms, value]; a malformed row is skipped, not the whole message (the
    Gateway buffer judges the same rows on its side and counts its own rejections).
    """
    samples: list[Sample] = []
    malformed = 0
    for row in local_sample_rows(event):
        sample = _sample(row)
        if sample is None:
            malformed += 1
        else:
            samples.append(sample)
    return samples, malformed


def _sample(row: Any) -> Sample | None:
    if not isinstance(row, (list, tuple)) or len(row) != 3:
        return None
    metric, time_ms, value = row
    if not isinstance(metric, str) or isinstance(time_ms, bool) or not isinstance(time_ms, int):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return metric, time_ms, float(value)


def _same_update(a: ModelUpdate | None, b: ModelUpdate | None) -> bool:
    return a is not None and b is not None and a.model_dump() == b.model_dump()


class GreengrassModelRunner:
    """Drives a ModelService over Greengrass IPC; `step()` does one round of the main loop's work.

    ipc_client is an `awsiot.greengrasscoreipc.clientv2.GreengrassCoreIPCClientV2`; the caller owns
    (and closes) it. Stream callbacks only record what arrived; IPC calls that block (publishes,
    configuration reads, the model download) happen in step(), on the caller's thread.
    """

    def __init__(
        self,
        settings: RunnerSettings,
        ipc_client: Any,
        *,
        download: Callable[[str], bytes] = s3_download,
        config_settle_s: float = CONFIG_SETTLE_S,
        warmup_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.ipc = ipc_client
        self.use_case = load_use_case(settings.use_case)
        self.status_topic = names.model_status_topic(settings.thing_name)
        self.models = ModelService(
            settings.thing_name,
            self.use_case,
            self._publish_report,
            state_dir=settings.state_dir,
            download=download,
            clock=clock,
            public_key=settings.model_signing_public_key,
            architecture=architecture_of_machine(),
            runtime_version=settings.runtime_version,
            line_id=settings.line_id,
            alert_raise_after=settings.alert_raise_after,
            alert_clear_after=settings.alert_clear_after,
        )
        # (topic, payload) for IoT Core, in the order decided: an alert's clear never overtakes its raise
        self.messages: Outbox[tuple[str, bytes]] = Outbox(
            lambda message: self._publish_to_iot_core(message[1], message[0]),
            clock=clock,
            describe=lambda message: f"message to {message[0]}",
            max_pending=MAX_PENDING_MESSAGES,
        )
        self.predictions = prediction_batcher(settings.prediction_flush_max_latency_s, settings.state_dir, clock)
        self._context: list[ContextInterval] = []  # received on the IPC thread, kept by step()
        self.config_settle_s = config_settle_s
        # An update that arrives before a full window of live data waits for one, up to twice its length.
        self.warmup_timeout_s = (
            warmup_timeout_s if warmup_timeout_s is not None else 2 * self.models.live.window_ms / 1000
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._newest_sample_ms: int | None = None
        self._config_changed_at: float | None = None
        self._metrics = frozenset(self.use_case.metrics)
        # Main-thread state (start/step): the update waiting for live data, and the last one handled.
        self._pending: tuple[ModelUpdate, float] | None = None  # (update, since)
        self._last_handled: ModelUpdate | None = None
        self._streams: list[Any] = []
        self.malformed_samples = 0
        self.published_predictions = 0
        self.failed_prediction_publishes = 0
        self.refused_context_messages = 0
        # clock() of the last periodic status; the first is due an interval after the start, which the
        # Gateway's announcement and the broker's connect event cover.
        self._status_sent_at = clock()
        self.periodic_statuses_sent = 0

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Restore the last verified model, subscribe, read the configuration, tell the nucleus we run."""
        from awsiot.greengrasscoreipc.model import ReceiveMode, ReportedLifecycleState

        restored = self.models.restore()
        log.info(
            "thing %s line %s use case %s: serving %s",
            self.settings.thing_name,
            self.settings.line_id,
            self.settings.use_case,
            f"{restored.model_id} {restored.version}" if restored else "no model yet",
        )
        _, samples_stream = self.ipc.subscribe_to_topic(
            topic=names.LOCAL_PUBSUB_SAMPLES_TOPIC,
            receive_mode=ReceiveMode.RECEIVE_MESSAGES_FROM_OTHERS,
            on_stream_event=self.on_samples,
            on_stream_error=self._on_stream_error,
        )
        self._streams.append(samples_stream)
        _, context_stream = self.ipc.subscribe_to_topic(
            topic=names.LOCAL_PUBSUB_CONTEXT_TOPIC,
            on_stream_event=self.on_context,
            on_stream_error=self._on_stream_error,
        )
        self._streams.append(context_stream)
        _, config_stream = self.ipc.subscribe_to_configuration_update(
            key_path=[names.MODEL_UPDATE_CONFIG_KEY],
            on_stream_event=self.on_configuration_update,
            on_stream_error=self._on_stream_error,
        )
        self._streams.append(config_stream)
        self.read_configuration()  # after subscribing: a merge landing in between is not missed
        self.ipc.update_state(state=ReportedLifecycleState.RUNNING)

    def run(self, stop: threading.Event, tick_s: float = TICK_S) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # one bad round (an IPC hiccup) must not end the component
                log.exception("model runner step failed")
            stop.wait(tick_s)

    def close(self) -> None:
        self.models.outbox.retry()  # a last try for reports decided before the stop (unless one just failed)
        self._queue_predictions(self.predictions.drain())  # a stop sends what is held
        self.messages.retry()
        streams, self._streams = self._streams, []
        for stream in streams:
            try:
                stream.close()
            except Exception as exc:  # closing a stream the nucleus already closed
                log.debug("closing IPC stream: %s", exc)

    # --- stream callbacks (IPC threads: record and return) ---------------------------------------
    def on_samples(self, event: Any) -> None:
        try:
            samples, malformed = samples_from_event(event)
        except (ValueError, json.JSONDecodeError) as exc:
            log.warning("dropped a local message on %s: %s", names.LOCAL_PUBSUB_SAMPLES_TOPIC, exc)
            return
        if malformed:
            with self._lock:
                self.malformed_samples += malformed
        if self.models.add(samples):
            newest = max(t for m, t, _ in samples if m in self._metrics)
            with self._lock:
                self._newest_sample_ms = max(newest, self._newest_sample_ms or newest)

    def on_context(self, event: Any) -> None:
        """A local context message: a ContextInterval or a list of them (bounded, then validated)."""
        try:
            intervals = intervals_from_event(event)
        except ValueError as exc:  # MessageDecodeError, ContextRefused
            with self._lock:
                self.refused_context_messages += 1
            log.warning("dropped a local context message: %s", exc)
            return
        with self._lock:
            self._context.extend(intervals)

    def on_configuration_update(self, event: Any) -> None:
        changed = getattr(event.configuration_update_event, "key_path", None)
        log.debug("configuration changed at %s", changed)
        with self._lock:
            self._config_changed_at = self._clock()

    @staticmethod
    def _on_stream_error(error: Exception) -> bool:
        log.warning("IPC stream error: %s", error)
        return False  # keep the stream open

    # --- the main loop's work ---------------------------------------------------------------------
    def step(self) -> None:
        now = self._clock()
        with self._lock:
            settled = self._config_changed_at is not None and now - self._config_changed_at >= self.config_settle_s
            if settled:
                self._config_changed_at = None
        if settled:
            try:
                self.read_configuration()
            except Exception:
                with self._lock:  # read again next round rather than miss the update
                    self._config_changed_at = self._config_changed_at or now
                raise
        self.apply_pending(now)
        self.take_context()
        self.score_and_publish()
        self._queue_predictions(self.predictions.due(now))
        self.models.outbox.retry()
        self.messages.retry()
        self.maybe_send_status(now)

    def maybe_send_status(self, now: float) -> PeriodicStatus | None:
        """The periodic status, when status_interval_s has passed since the last one (or the start)."""
        if now - self._status_sent_at < self.settings.status_interval_s:
            return None
        self._status_sent_at = now  # a failed one is not retried before the next interval: it is a heartbeat
        status = self.models.periodic_status()
        try:
            self._publish_to_iot_core(status.model_dump_json(exclude_none=True).encode())
        except (TimeoutError, RuntimeError) as exc:
            log.warning("periodic status not sent: %s", exc)
            return None
        self.periodic_statuses_sent += 1
        return status

    def read_configuration(self) -> None:
        """Queue the configured ModelUpdate unless it is the one already handled or active."""
        from awsiot.greengrasscoreipc.model import ResourceNotFoundError

        try:
            response = self.ipc.get_configuration_async(key_path=[names.MODEL_UPDATE_CONFIG_KEY]).result(
                timeout=IPC_TIMEOUT_S
            )
            update = update_from_configuration(response.value)
        except ResourceNotFoundError:
            return  # no modelUpdate key at all: nothing delivered yet
        except ValueError as exc:
            log.error("%s", exc)
            return
        if update is None or self._already_handled(update):
            return
        self._pending = (update, self._clock())
        log.info("model update %s %s (deployment %s) received", update.model_id, update.version, update.deployment_id)

    def _already_handled(self, update: ModelUpdate) -> bool:
        pending = self._pending[0] if self._pending else None
        if _same_update(update, self._last_handled) or _same_update(update, pending):
            return True
        # A new deployment of the active model still gets its (cheap, "already active") report.
        current = self.models.current
        return current is not None and (current.deployment_id, current.model_id, current.version, current.sha256) == (
            update.deployment_id,
            update.model_id,
            update.version,
            update.sha256,
        )

    def apply_pending(self, now: float) -> ModelStatusReport | None:
        """Apply the queued update once the live window can judge it (or the wait is over)."""
        if self._pending is None:
            return None
        update, since = self._pending
        if not self.models.ready_for_health_check() and now - since < self.warmup_timeout_s:
            return None
        self._pending = None
        self._last_handled = update
        return self.models.apply(update)

    def take_context(self) -> int:
        """Keep the context intervals received since the last round and forward them to the cloud's
        context intake (names.context_topic); returns how many were kept."""
        with self._lock:
            intervals, self._context = self._context, []
        if derived := self.models.take_live_context():  # the use case's live_context rules' intervals, kept already
            self.messages.put((names.context_topic(self.settings.thing_name), context_payload(derived)))
        if not intervals:
            return 0
        try:
            kept = self.models.add_context(intervals)
        except ValueError as exc:  # another line's or target's: the adapter is misconfigured
            self.refused_context_messages += 1
            log.warning("context refused: %s", exc)
            return 0
        document = [interval.model_dump(mode="json") for interval in intervals]
        self.messages.put((names.context_topic(self.settings.thing_name), json.dumps(document).encode()))
        return kept

    def score_and_publish(self) -> list[Sample]:
        with self._lock:
            newest = self._newest_sample_ms
        if newest is None:
            return []
        # Event time, not the wall clock: a window is due once samples past its end have arrived.
        scored = self.models.predict(newest)
        if scored.samples:
            self._publish_samples(scored.samples)
        self._publish_messages(scored)
        return scored.samples

    def _publish_messages(self, scored: Scored) -> None:
        """Locally at once; to IoT Core through the outbox: the prediction batched, alerts at once."""
        if scored.prediction is not None:
            self._publish_local(names.LOCAL_PUBSUB_PREDICTIONS_TOPIC, scored.prediction.model_dump(mode="json"))
            self.predictions.add(scored.prediction)
        if scored.alerts:
            self._queue_predictions(self.predictions.drain())
        for alert in scored.alerts:
            self._publish_local(names.LOCAL_PUBSUB_ALERTS_TOPIC, alert.model_dump(mode="json"))
            self.messages.put((names.alert_topic(self.settings.thing_name), alert.model_dump_json().encode()))
            log.warning(
                "alert %s %s %s: level %.4g, lead time %s s",
                alert.alert_id,
                alert.event.value,
                alert.violation_class.value,
                alert.predicted_level,
                alert.lead_time_s,
            )
        if scored.alerts:
            self.messages.flush()

    def _queue_predictions(self, batches: list[PredictionBatch]) -> None:
        for batch in batches:
            self.messages.put((names.prediction_topic(self.settings.thing_name), batch.to_payload()))
        if batches:
            self.messages.flush()

    # --- IPC publishes ------------------------------------------------------------------------------
    def _publish_samples(self, samples: list[Sample]) -> None:
        if self._publish_local(names.LOCAL_PUBSUB_SAMPLES_TOPIC, {"samples": [list(s) for s in samples]}):
            self.published_predictions += len(samples)

    def _publish_local(self, topic: str, document: dict) -> bool:
        from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage

        message = PublishMessage(json_message=JsonMessage(message=document))
        try:
            self.ipc.publish_to_topic_async(topic=topic, publish_message=message).result(timeout=IPC_TIMEOUT_S)
        except Exception as exc:  # lost locally; IoT Core still gets predictions and alerts (outbox)
            self.failed_prediction_publishes += 1
            log.warning("local publish on %s failed: %s: %s", topic, type(exc).__name__, exc)
            return False
        return True

    def _publish_report(self, report: ModelStatusReport) -> None:
        self._publish_to_iot_core(report.model_dump_json().encode())

    def _publish_to_iot_core(self, payload: bytes, topic: str | None = None) -> None:
        from awsiot.greengrasscoreipc.model import QOS

        topic = topic or self.status_topic
        future = self.ipc.publish_to_iot_core_async(topic_name=topic, qos=QOS.AT_LEAST_ONCE, payload=payload)
        try:
            future.result(timeout=IPC_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"PublishToIoTCore {topic}: no response within {IPC_TIMEOUT_S:.0f} s") from None
        except Exception as exc:  # IPC service errors carry their text in `.message`
            detail = getattr(exc, "message", None) or exc
            raise RuntimeError(f"PublishToIoTCore {topic} failed: {type(exc).__name__}: {detail}") from exc


def main() -> None:
    settings = settings_from_env()
    run_until_sigterm(lambda ipc: GreengrassModelRunner(settings, ipc))
