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
The recipe passes the thing, work directory, line and use case as environment variables.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeloop.greengrass_components.ipc_main import run_until_sigterm
from edgeloop.greengrass_components.local_samples import local_sample_rows
from edgeloop.model_runtime.signing import parse_public_key
from edgeloop.schemas import ModelStatusReport, ModelUpdate, PeriodicStatus, load_use_case, names
from edgeloop.schemas.common import Identifier, SemVer, ThingName, validation_problems
from edgeloop.schemas.model import architecture_of_machine

from .agent import s3_download
from .service import ModelService, Sample
from .update_decoding import UpdateDecodeError, decode_model_update

log = logging.getLogger(__name__)

TICK_S = 0.5  # how often the main loop scores, applies pending updates and retries reports
CONFIG_SETTLE_S = 1.0  # a merge arrives as one event per changed key: read once they stop
IPC_TIMEOUT_S = 10.0
STATE_DIR_NAME = "model"


class RunnerSettings(BaseModel):
    """The component's environment (see the recipe's setEnv)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thing_name: ThingName
    work_dir: Path
    line_id: Identifier
    use_case: Identifier
    # Optional: the recipe's empty default means "accept unsigned payloads" / "skip the runtime check".
    model_signing_public_key: str | None = None
    runtime_version: SemVer | None = None
    status_interval_s: float = Field(default=names.DEFAULT_STATUS_INTERVAL_S, gt=0, allow_inf_nan=False)

    @field_validator("model_signing_public_key", mode="before")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is None or not str(value).strip():
            return None
        parse_public_key(str(value), field=names.MODEL_SIGNING_PUBLIC_KEY_CONFIG_KEY)
        return str(value).strip()

    @field_validator("runtime_version", mode="before")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value if value else None

    @field_validator("status_interval_s", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        return names.DEFAULT_STATUS_INTERVAL_S if value is None or not str(value).strip() else value

    @property
    def state_dir(self) -> Path:
        return self.work_dir / STATE_DIR_NAME


_SETTINGS_ENV = {
    "thing_name": names.THING_NAME_ENV,
    "work_dir": names.WORK_DIR_ENV,
    "line_id": names.LINE_ID_ENV,
    "use_case": names.USE_CASE_ENV,
}
_OPTIONAL_SETTINGS_ENV = {
    "model_signing_public_key": names.MODEL_SIGNING_PUBLIC_KEY_ENV,
    "runtime_version": names.RUNTIME_VERSION_ENV,
    "status_interval_s": names.STATUS_INTERVAL_S_ENV,
}


def settings_from_env(environ: Mapping[str, str] | None = None) -> RunnerSettings:
    environ = os.environ if environ is None else environ
    missing = [var for var in _SETTINGS_ENV.values() if not environ.get(var)]
    if missing:
        raise ValueError(f"environment variables {missing} are not set (the ModelRunner recipe's setEnv sets them)")
    fields = {field: environ[var] for field, var in _SETTINGS_ENV.items()}
    fields.update({field: environ.get(var) for field, var in _OPTIONAL_SETTINGS_ENV.items()})
    all_env = {**_SETTINGS_ENV, **_OPTIONAL_SETTINGS_ENV}
    try:
        return RunnerSettings(**fields)
    except ValidationError as exc:
        problems = validation_problems(exc, name_of=lambda field: all_env.get(field, field))
        raise ValueError(f"invalid ModelRunner environment: {problems}") from None


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
        )
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
        self.score_and_publish()
        self.models.outbox.retry()
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

    def score_and_publish(self) -> list[Sample]:
        with self._lock:
            newest = self._newest_sample_ms
        if newest is None:
            return []
        # Event time, not the wall clock: a window is due once samples past its end have arrived.
        predictions = self.models.score(newest)
        if predictions:
            self._publish_samples(predictions)
        return predictions

    # --- IPC publishes ------------------------------------------------------------------------------
    def _publish_samples(self, samples: list[Sample]) -> None:
        from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage

        message = PublishMessage(json_message=JsonMessage(message={"samples": [list(s) for s in samples]}))
        try:
            self.ipc.publish_to_topic_async(topic=names.LOCAL_PUBSUB_SAMPLES_TOPIC, publish_message=message).result(
                timeout=IPC_TIMEOUT_S
            )
        except Exception as exc:  # the prediction is lost, the next one is due a stride later
            self.failed_prediction_publishes += 1
            log.warning("prediction not handed to the gateway: %s: %s", type(exc).__name__, exc)
            return
        self.published_predictions += len(samples)

    def _publish_report(self, report: ModelStatusReport) -> None:
        self._publish_to_iot_core(report.model_dump_json().encode())

    def _publish_to_iot_core(self, payload: bytes) -> None:
        from awsiot.greengrasscoreipc.model import QOS

        future = self.ipc.publish_to_iot_core_async(
            topic_name=self.status_topic, qos=QOS.AT_LEAST_ONCE, payload=payload
        )
        try:
            future.result(timeout=IPC_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"PublishToIoTCore {self.status_topic}: no response within {IPC_TIMEOUT_S:.0f} s"
            ) from None
        except Exception as exc:  # IPC service errors carry their text in `.message`
            detail = getattr(exc, "message", None) or exc
            raise RuntimeError(f"PublishToIoTCore {self.status_topic} failed: {type(exc).__name__}: {detail}") from exc


def main() -> None:
    settings = settings_from_env()
    run_until_sigterm(lambda ipc: GreengrassModelRunner(settings, ipc))
