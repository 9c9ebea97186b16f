"""One simulated gateway process: an extrusion line feeding the real gateway code.

    python -m edgeloop.device_shims.simulated_gateway CONFIG.json

The process runs the gateway's own durable buffer, publisher and MQTT transport, the model
runner's live scorer and update agent, and an ExtrusionLineSimulator in place of the sensors:
1. connect, announce itself, subscribe to its model-update topic;
2. history: simulate `history_s` as fast as possible into the buffer while the publisher drains it;
   during an offline window (simulated time) the uplink is cut and the buffer grows, then the
   backlog drains oldest-first;
3. once the history is simulated and the buffer is empty: state `history_drained: true`;
4. live: simulate at `live_speedup`, score with the active model, publish predictions as samples and
   as PredictionMessages with their AlertEvents (simulated_messages.py), apply model updates and report;
5. on the stop file, SIGTERM or the parent's exit: drain (bounded), write the final state, exit 0.

A restart resumes the simulation where the buffer stands (sim_position.py): sequence numbers and
simulated time continue, no reading is produced twice.

The publisher follows the gateway's flush policy (GatewayConfig.flush: a partial batch waits up to
its max latency); the end of the history and a stop send the held tail at once.

Messages are stamped on the simulated clock: a lead time is in simulated seconds whatever the speed-up.
The state file (JSON, replaced atomically about every 0.5 s) is how the demo watches progress.
The outages are staged by SimulatedUplink (simulated_uplink.py), a transport whose link can be cut.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import SimulatorConfig
from edgeloop.greengrass_components.gateway.config import GatewayConfig, validated
from edgeloop.greengrass_components.gateway.publisher import Publisher
from edgeloop.greengrass_components.gateway.transport import ConnectFailed, Transport, TransportError
from edgeloop.greengrass_components.gateway.validation import SampleValidator, append_validated, merge_counts
from edgeloop.greengrass_components.model_runner.service import ModelService
from edgeloop.schemas import ModelStatusReport, ModelUpdate, Precision, load_use_case, names

from .sim_position import PositionJournal
from .simulated_messages import MesAdapter, MessagePublisher
from .simulated_uplink import PUBLISH_TIMEOUT_S, SimulatedUplink

log = logging.getLogger("edgeloop.simulated_gateway")

STATE_INTERVAL_S = 0.5
LIVE_TICK_S = 0.1
CONTEXT_INTERVAL_S = 2.0  # wall seconds between context-file rewrites in the live phase
REPORT_RETRY_S = 1.0
SUPPORTED_PRECISIONS = [Precision.FP32]


class SimulatedGatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gateway: GatewayConfig
    seed: int
    sim_start_ms: int = Field(ge=0)
    history_s: int = Field(ge=0, description="simulated seconds sent as fast as possible")
    offline_windows: list[tuple[int, int]] = Field(
        default_factory=list, description="(start offset, duration) in simulated seconds from sim_start_ms"
    )
    live_speedup: float = Field(default=60.0, gt=0, description="simulated seconds per wall-clock second")
    max_live_s: int = Field(default=3600, ge=0, description="simulated seconds of live phase, then idle")
    state_file: Path
    stop_file: Path
    context_file: Path
    model_dir: Path | None = Field(default=None, description="persisted model; default: beside the state file")
    position_file: Path | None = Field(
        default=None, description="where the simulation stands, for restarts; default: beside the state file"
    )
    model_signing_public_key: str | None = None  # the runner's Ed25519 key (base64): updates must be signed with it
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    chunk_s: int = Field(default=60, gt=0, description="simulated seconds per history step")
    drain_timeout_s: float = Field(default=60.0, ge=0, description="wall seconds to drain the buffer on stop")
    connect_timeout_s: float = Field(default=30.0, gt=0)
    # simulated seconds a prediction may wait for its batch (the runner's predictionFlushMaxLatencySeconds)
    prediction_flush_s: float = Field(default=names.DEFAULT_PREDICTION_FLUSH_MAX_LATENCY_S, ge=0, le=24 * 3600)

    @model_validator(mode="after")
    def _windows_valid(self) -> SimulatedGatewayConfig:
        for i, (start, duration) in enumerate(self.offline_windows):
            if start < 0 or duration <= 0:
                raise ValueError(f"offline_windows[{i}]=({start}, {duration}) needs start >= 0 and duration > 0")
        return self

    @property
    def model_state_dir(self) -> Path:
        return self.model_dir or self.state_file.parent / "model"

    @property
    def position_path(self) -> Path:
        return self.position_file or self.state_file.parent / "sim_position.json"

    def offline_at(self, offset_s: int) -> bool:
        return any(start <= offset_s < start + duration for start, duration in self.offline_windows)

    @classmethod
    def from_file(cls, path: str | Path) -> SimulatedGatewayConfig:
        path = Path(path)
        return validated(path, "simulated gateway config", lambda: cls.model_validate_json(path.read_text()))


class SimulatedGateway:
    def __init__(self, config: SimulatedGatewayConfig, *, transport: Transport | None = None) -> None:
        gw = config.gateway
        if transport is None and gw.transport != "mqtt":
            raise ValueError(f"gateway.transport={gw.transport!r}: the simulated gateway talks MQTT only ('mqtt')")
        self.config = config
        self.use_case = load_use_case(gw.use_case)
        self.simulator = ExtrusionLineSimulator(
            gw.line_id, seed=config.seed, start_ms=config.sim_start_ms, config=config.simulator
        )
        self.buffer = gw.open_buffer()
        self.position = PositionJournal(
            config.position_path, seed=config.seed, sim_start_ms=config.sim_start_ms, line_id=gw.line_id
        )
        self.resumed_s = 0  # simulated seconds already in the buffer when this process started
        inner = transport or gw.mqtt_transport()
        self.validator = SampleValidator(self.use_case, source=gw.thing_name)
        self.uplink = SimulatedUplink(inner)
        self.publisher = Publisher(self.buffer, self.uplink, gw.telemetry_topic, max_backoff_s=2.0, flush=gw.flush)
        self.models = ModelService(
            gw.thing_name,
            self.use_case,
            self._send_report,
            state_dir=config.model_state_dir,
            report_retry_s=REPORT_RETRY_S,
            public_key=config.model_signing_public_key,
            architecture=gw.architecture,
            runtime_version=gw.runtime_version,
            line_id=gw.line_id,  # another line's signed model is refused, as on a Greengrass gateway
            wall_clock=lambda: datetime.fromtimestamp(self.simulator.now_ms / 1000, UTC),
        )
        self.mes = MesAdapter(self.simulator, self.models.add_context)
        self.messages = MessagePublisher(gw.thing_name, self.uplink, self.simulator, config.prediction_flush_s)
        self.live = self.models.live
        self.agent = self.models.agent
        self.stop_requested = threading.Event()
        self._threads_stop = threading.Event()
        self._updates: queue.Queue[bytes] = queue.Queue()
        self._parent_pid = os.getppid()
        self.phase = "starting"
        self.history_drained = False
        self.outages: list[dict[str, int]] = []  # simulated outages and the backlog they left
        self.last_error = ""
        self._threads: list[threading.Thread] = []

    # --- lifecycle --------------------------------------------------------------------------------
    def run(self) -> int:
        exit_code = 0
        # a stop file left by the previous process's stop asked *that* process to stop, not this one
        self.config.stop_file.unlink(missing_ok=True)
        try:
            self.agent.restore()
            self._start_thread("state", self._state_loop)
            self._connect_and_announce()
            self._start_thread("publisher", lambda: self.publisher.run(self._threads_stop))
            self._start_thread("updates", self._update_loop)
            self._history()
            self._wait_for_history_drain()
            self._live()
            self._idle()
        except Exception as exc:  # recorded for the demo, which reports it
            log.exception("gateway failed")
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.phase = "failed"
            exit_code = 1
        finally:
            self._shutdown(failed=exit_code != 0)
        return exit_code

    def should_stop(self) -> bool:
        if self.stop_requested.is_set():
            return True
        if self.config.stop_file.exists():
            log.info("stop file %s found", self.config.stop_file)
            self.stop_requested.set()
        elif os.getppid() != self._parent_pid:
            log.warning("parent process exited: stopping")  # don't outlive the demo that started us
            self.stop_requested.set()
        return self.stop_requested.is_set()

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"{self.config.gateway.thing_name}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _connect_and_announce(self) -> None:
        self.phase = "connecting"
        gw = self.config.gateway
        deadline = time.monotonic() + self.config.connect_timeout_s
        while True:
            try:
                self.uplink.connect(min(10.0, self.config.connect_timeout_s))
                break
            except TransportError as exc:
                self.last_error = str(exc)
                if time.monotonic() > deadline or self.should_stop():
                    raise ConnectFailed(
                        f"could not connect within {self.config.connect_timeout_s:.0f} s: {exc}"
                    ) from exc
                time.sleep(0.5)
        self.uplink.subscribe(names.model_update_topic(gw.thing_name), self._on_update_message, PUBLISH_TIMEOUT_S)
        announcement = gw.announcement(SUPPORTED_PRECISIONS, self.agent.current.version if self.agent.current else None)
        self.uplink.publish(
            names.announce_topic(gw.thing_name), announcement.model_dump_json().encode(), PUBLISH_TIMEOUT_S
        )
        log.info("connected and announced as %s", gw.thing_name)

    # --- phases -----------------------------------------------------------------------------------
    def _fast_forward(self, until_s: int) -> None:
        """Simulate [0, until_s) again without appending (a previous process did), warming the scorer."""
        warm_from_s = until_s - (self.live.retention_ms // 1000) - self.config.chunk_s
        offset = 0
        while offset < until_s:
            seconds = min(self.config.chunk_s, until_s - offset)
            samples = self.simulator.advance(seconds)
            if offset >= warm_from_s:
                self.live.add(samples)
            offset += seconds
        log.info("resumed after %d simulated seconds already in the buffer", until_s)

    def _history(self) -> None:
        self.phase = "history"
        cfg = self.config
        self.resumed_s = self.position.resume_s(self.buffer.stats().next_seq)
        self._fast_forward(self.resumed_s)
        # the live scorer needs only the last window of history
        warm_from_s = cfg.history_s - (self.live.retention_ms // 1000) - cfg.chunk_s
        offset = self.resumed_s
        while offset < cfg.history_s and not self.should_stop():
            if cfg.offline_at(offset):
                if self.uplink.online:
                    self.uplink.go_offline()
                    self.outages.append({"start_offset_s": offset, "delivered_at_start": self.uplink.delivered})
            else:
                self._end_outage(offset)
            seconds = min(cfg.chunk_s, cfg.history_s - offset)
            samples = self.simulator.advance(seconds)
            if offset >= warm_from_s:
                self.live.add(samples)
            self._append(samples, seconds)
            offset += seconds
        self._end_outage(offset)
        self._write_context()

    def _end_outage(self, offset: int) -> None:
        """Back online; records how much the buffer held when the link came back (nothing left meanwhile)."""
        if not self.uplink.online:
            outage = self.outages[-1]
            outage.update(
                end_offset_s=offset,
                pending_at_reconnect=self.buffer.pending_samples(),
                publishes_during_outage=self.uplink.delivered - outage.pop("delivered_at_start"),
            )
        self.uplink.go_online(self.config.connect_timeout_s)

    def _wait_for_history_drain(self) -> None:
        self.phase = "draining_history"
        self.publisher.request_flush()  # the history's last partial batch need not wait for the policy
        while not self.should_stop():
            if self.buffer.pending_samples() == 0:
                self.history_drained = True
                log.info("history drained")
                return
            time.sleep(0.1)

    def _live(self) -> None:
        self.phase = "live"
        cfg = self.config
        stride_s = self.use_case.example_stride_s
        started = time.monotonic()
        resumed = simulated = max(0, self.resumed_s - cfg.history_s)
        last_context = started
        while simulated < cfg.max_live_s and not self.should_stop():
            due = min(cfg.max_live_s, resumed + int(cfg.live_speedup * (time.monotonic() - started)))
            while simulated < due and not self.should_stop():
                # at most one stride per step, so every stride boundary gets scored
                step = min(due - simulated, stride_s)
                samples = self.simulator.advance(step)
                self.live.add(samples)
                self.mes.tell()
                scored = self.models.predict(self.simulator.now_ms)
                self._append(samples + scored.samples, step)
                self.messages.publish(scored)
                self.messages.forward_context(self.models.take_live_context())
                simulated += step
            if time.monotonic() - last_context > CONTEXT_INTERVAL_S:
                self._write_context()
                last_context = time.monotonic()
            self.messages.retry()
            self.stop_requested.wait(LIVE_TICK_S)
        self._write_context()

    def _idle(self) -> None:
        self.phase = "idle"
        while not self.should_stop():
            self.stop_requested.wait(0.2)

    def _shutdown(self, failed: bool) -> None:
        if not failed:
            self.phase = "stopping"
        try:
            if failed:
                return  # nothing trustworthy to drain to; the finally block records the state
            self.uplink.go_online(self.config.connect_timeout_s)
            self.publisher.request_flush()
            deadline = time.monotonic() + self.config.drain_timeout_s
            while self.buffer.pending_samples() > 0 and time.monotonic() < deadline and self.publisher_alive():
                time.sleep(0.1)
            pending = self.buffer.pending_samples()
            if pending and not failed:
                self.last_error = (
                    f"stopped with {pending} samples still buffered (drain timeout {self.config.drain_timeout_s} s)"
                )
            self.models.outbox.flush()
            self.messages.flush()
            self._write_context()
        except Exception as exc:
            log.exception("shutdown problem")
            self.last_error = self.last_error or f"{type(exc).__name__}: {exc}"
        finally:
            self._threads_stop.set()
            for thread in self._threads:
                thread.join(timeout=15)
            if not failed:
                self.phase = "stopped"
            self._write_state()
            try:
                self.uplink.disconnect()
            finally:
                self.buffer.close()

    def publisher_alive(self) -> bool:
        return any(t.name.endswith("-publisher") and t.is_alive() for t in self._threads)

    # --- data ---------------------------------------------------------------------------------------
    def _append(self, samples: Sequence[tuple[str, int, float]], seconds: int) -> None:
        """Append the readings of the last `seconds` simulated, journalling the position first."""
        after_s = (self.simulator.now_ms - self.config.sim_start_ms) // 1000
        self.position.record(after_s - seconds, after_s, self.buffer.stats().next_seq)
        result = append_validated(self.validator, self.buffer, samples)
        if result.rejected:
            self.last_error = f"rejected samples: {result.rejected}"

    # --- model updates ------------------------------------------------------------------------------
    def _on_update_message(self, topic: str, payload: bytes) -> None:
        self._updates.put(payload)

    def _update_loop(self) -> None:
        while not self._threads_stop.is_set():
            try:
                payload = self._updates.get(timeout=REPORT_RETRY_S)
            except queue.Empty:
                self.models.outbox.retry()
                continue
            try:
                update = ModelUpdate.model_validate_json(payload)
            except ValidationError as exc:
                self.last_error = (
                    f"invalid model update on {names.model_update_topic(self.config.gateway.thing_name)}: {exc}"
                )
                log.error(self.last_error)
                continue
            self.models.apply(update)

    def _send_report(self, report: ModelStatusReport) -> None:
        topic = names.model_status_topic(self.config.gateway.thing_name)
        self.uplink.publish(topic, report.model_dump_json().encode(), PUBLISH_TIMEOUT_S)

    # --- state and context files ----------------------------------------------------------------------
    def state(self) -> dict:
        stats = self.buffer.stats()
        current = self.agent.current
        return {
            "thing_name": self.config.gateway.thing_name,
            "pid": os.getpid(),
            "phase": self.phase,
            "online": self.uplink.online,
            "accepted_samples": stats.accepted_total,
            "rejected": sum(stats.rejected_total.values()) + sum(self.validator.rejected_total.values()),
            "rejected_by_reason": merge_counts(stats.rejected_total, self.validator.rejected_total),
            "dropped": stats.dropped_total,
            "pending": stats.pending,
            "published_samples": self.publisher.published_samples,
            "publish_failures": self.publisher.publish_failures,
            "acked_seq": stats.next_seq - stats.pending - 1,
            "history_drained": self.history_drained,
            "outages": self.outages,
            "model_id": current.model_id if current else None,
            "model_version": current.version if current else None,
            "predictions": self.live.predictions,
            **self.messages.state(),
            "scoring_skipped": dict(self.live.skipped),
            "sim_time_ms": self.simulator.now_ms,
            "last_error": self.last_error,
            "publisher_last_error": self.publisher.last_error,
            "updated_at": datetime.now(UTC).isoformat(),
        }

    def _write_state(self) -> None:
        _write_atomic(self.config.state_file, json.dumps(self.state(), indent=2))

    def _state_loop(self) -> None:
        while not self._threads_stop.is_set():
            try:
                self._write_state()
            except Exception:  # e.g. the buffer closing under us; the final write follows
                log.debug("state write skipped", exc_info=True)
            self._threads_stop.wait(STATE_INTERVAL_S)

    def _write_context(self) -> None:
        intervals = self.simulator.context_intervals()
        _write_atomic(self.config.context_file, "".join(i.model_dump_json() + "\n" for i in intervals))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m edgeloop.device_shims.simulated_gateway CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = SimulatedGatewayConfig.from_file(argv[0])
    gateway = SimulatedGateway(config)
    signal.signal(signal.SIGTERM, lambda signum, frame: gateway.stop_requested.set())
    return gateway.run()


if __name__ == "__main__":
    sys.exit(main())
