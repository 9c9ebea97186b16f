"""Helpers of the fleet rollout e2e: light gateway hosts, training data from the line simulator.

A real gateway process (device_shims/simulated_gateway.py) also buffers and publishes telemetry;
21 of them would not fit 2 cores beside moto_server, mosquitto and the handlers. A rollout needs
only the model-runner half of a gateway, so a *host* process runs several devices, each with:
its own MQTT5 connection with mutual TLS (its own certificate, client id = thing name, so the
broker's ACL confines it to its own topics), its own announcement, its own ModelService (update
agent with signature/compatibility/feature-schema checks and the live health check) and its own
extrusion-line simulator feeding live data.

    python tests/e2e/fleet_e2e_helpers.py HOST_CONFIG.json

The host writes a JSON state file (per device: the updates received, the active model, reports)
about every 0.5 s and stops on its stop file or when its parent exits.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import SimulatorConfig, default_products
from edgeloop.greengrass_components.model_runner.runner import LiveScorer
from edgeloop.greengrass_components.model_runner.service import ModelService
from edgeloop.schemas import (
    Architecture,
    DeviceAnnouncement,
    ModelStatusReport,
    ModelUpdate,
    Precision,
    load_use_case,
    names,
)
from edgeloop.schemas.common import semver_key
from edgeloop.schemas.training import ViolationClass

log = logging.getLogger("fleet_e2e_host")

USE_CASE = "extrusion"
SITE = "plant-a"
LINE_ID = "line-1"
PRODUCT_SEED = 1  # every device's line makes the same cable (CBL-40), so one model fits them all
STATE_INTERVAL_S = 0.5
LIVE_TICK_S = 1.0
SIM_SECONDS_PER_TICK = 5  # slow live time: the health check judges a steady run, not a changeover
CONNECT_TIMEOUT_S = 20.0
PUBLISH_TIMEOUT_S = 10.0


def simulator_config() -> SimulatorConfig:
    """One product, one endless run: live data without changeovers, so health checks are deterministic."""
    return SimulatorConfig(products=[default_products(PRODUCT_SEED)[0]], run_minutes=(100_000, 100_000))


def precisions_for(runtime_version: str) -> list[Precision]:
    """What a gateway runtime can load: fp16 leaves since 1.1.0, quantized (format v2) since 1.2.0."""
    key = semver_key(runtime_version)
    supported = [Precision.FP32]
    if key >= semver_key("1.1.0"):
        supported.append(Precision.FP16_LEAVES)
    if key >= semver_key("1.2.0"):
        supported.append(Precision.QUANTIZED)
    return supported


class HostedDeviceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thing_name: str
    architecture: Architecture
    runtime_version: str
    seed: int
    cert_path: Path
    key_path: Path
    ca_path: Path
    state_dir: Path


class HostConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: list[HostedDeviceConfig] = Field(min_length=1)
    broker_host: str
    broker_port: int
    model_signing_public_key: str
    sim_start_ms: int
    state_file: Path
    stop_file: Path


# --- training data from the simulator ------------------------------------------------------------------


def simulator_examples(hours: float, *, seed: int, start_ms: int, label_scale: float = 1.0) -> pd.DataFrame:
    """Labeled packs shaped like packs/line=<id>/examples.parquet, from the simulator, featurized by the
    live scorer's own code (so the model sees on the gateway what it saw in training).

    The label is the mean cold OD over [end + horizon, end + horizon + label window), times
    `label_scale` (a scale of 1000 is the injected fault: a model trained on micrometres)."""
    use_case = load_use_case(USE_CASE)
    simulator = ExtrusionLineSimulator(LINE_ID, seed=seed, start_ms=start_ms, config=simulator_config())
    live = LiveScorer(use_case)
    stride_s = use_case.example_stride_s
    n_strides = int(hours * 3600 // stride_s)
    target_index = list(use_case.metrics).index(use_case.target_metric)
    rows, target_times, target_values = [], [], []
    for _ in range(n_strides):
        metric_index, time_ms, values = simulator.advance_arrays(stride_s)
        live.add_arrays(metric_index, time_ms, values)
        is_target = metric_index == target_index
        target_times.append(time_ms[is_target])
        target_values.append(values[is_target])
        window = live.window(simulator.now_ms)
        if window.complete:
            rows.append((simulator.now_ms, window.features))
    times, values = np.concatenate(target_times), np.concatenate(target_values)
    horizon_ms, label_ms = use_case.horizon_s * 1000, use_case.label_window_s * 1000
    records = []
    for end_ms, features in rows:
        in_label = (times >= end_ms + horizon_ms) & (times < end_ms + horizon_ms + label_ms)
        if in_label.sum() == 0:
            continue
        records.append((end_ms, float(values[in_label].mean()) * label_scale, features))
    product = simulator.products[0]
    lower, upper = (
        (product.cold_od_mm - product.tolerance_mm) * label_scale,
        (product.cold_od_mm + product.tolerance_mm) * label_scale,
    )
    ends = pd.to_datetime([r[0] for r in records], unit="ms", utc=True)
    labels = np.array([r[1] for r in records])
    frame = pd.DataFrame(
        {
            "line_id": LINE_ID,
            "run_id": "run-1",
            "window_start": ends - pd.Timedelta(seconds=use_case.pack_window_s),
            "window_end": ends,
            "label": labels,
            "label_class": np.where(
                labels < lower,
                ViolationClass.LSL.value,
                np.where(labels > upper, ViolationClass.USL.value, ViolationClass.IN_RANGE.value),
            ),
            "label_source": "measured",
            "spec_lower": lower,
            "spec_upper": upper,
        }
    )
    features = pd.DataFrame(np.array([r[2] for r in records]), columns=use_case.feature_names)
    return pd.concat([frame, features], axis=1)


# --- the host process ----------------------------------------------------------------------------------


class HostedDevice:
    """One gateway's model runner: its own MQTT identity, simulator and update agent."""

    def __init__(self, device: HostedDeviceConfig, host: HostConfig, updates: queue.Queue) -> None:
        self.config = device
        self.host = host
        self.use_case = load_use_case(USE_CASE)
        self.simulator = ExtrusionLineSimulator(
            LINE_ID, seed=device.seed, start_ms=host.sim_start_ms, config=simulator_config()
        )
        self.service = ModelService(
            device.thing_name,
            self.use_case,
            self._send_report,
            state_dir=device.state_dir,
            report_retry_s=1.0,
            public_key=host.model_signing_public_key,
            architecture=device.architecture,
            runtime_version=device.runtime_version,
        )
        self._updates = updates
        self.connection = None
        self.received: list[dict] = []  # every ModelUpdate that reached the device, in order
        self.reports: list[dict] = []

    def warm_up(self) -> None:
        """A full live window of history, so the first update has something to be health-checked on."""
        seconds = self.service.live.retention_ms // 1000 + self.use_case.example_stride_s
        self.service.add(self.simulator.advance(seconds))

    def connect_and_announce(self) -> None:
        from edgeloop.local.mqtt import connect_mqtt5
        from edgeloop.local.pki import IssuedCert

        thing = self.config.thing_name
        cert = IssuedCert(self.config.cert_path, self.config.key_path, self.config.ca_path, thing)
        self.connection = connect_mqtt5(
            self.host.broker_host,
            self.host.broker_port,
            cert,
            thing,
            on_message=lambda topic, payload: self._updates.put((self, payload)),
            timeout_s=CONNECT_TIMEOUT_S,
        )
        self.connection.subscribe(names.model_update_topic(thing), timeout_s=PUBLISH_TIMEOUT_S)
        announcement = DeviceAnnouncement(
            thing_name=thing,
            site=SITE,
            line_id=LINE_ID,
            use_case=USE_CASE,
            architecture=self.config.architecture,
            runtime_version=self.config.runtime_version,
            supported_precisions=precisions_for(self.config.runtime_version),
            current_model_version=self.service.current.version if self.service.current else None,
            sent_at=datetime.now(UTC),
        )
        self.connection.publish(
            names.announce_topic(thing), announcement.model_dump_json().encode(), timeout_s=PUBLISH_TIMEOUT_S
        )

    def tick(self) -> None:
        self.service.add(self.simulator.advance(SIM_SECONDS_PER_TICK))
        self.service.score(self.simulator.now_ms)
        self.service.outbox.retry()

    def apply(self, payload: bytes) -> None:
        update = ModelUpdate.model_validate_json(payload)
        self.received.append(
            {"deployment_id": update.deployment_id, "version": update.version, "precision": update.precision.value}
        )
        self.service.apply(update)

    def _send_report(self, report: ModelStatusReport) -> None:
        self.connection.publish(
            names.model_status_topic(self.config.thing_name),
            report.model_dump_json().encode(),
            timeout_s=PUBLISH_TIMEOUT_S,
        )
        self.reports.append({"version": report.version, "status": report.status.value, "reason": report.reason})

    def state(self) -> dict:
        current = self.service.current
        return {
            "connected": self.connection is not None,
            "model_version": current.version if current else None,
            "precision": current.precision if current else None,
            "received": self.received,
            "reports": self.reports,
            "predictions": self.service.live.predictions,
        }

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.stop()


class Host:
    def __init__(self, config: HostConfig) -> None:
        self.config = config
        self.updates: queue.Queue = queue.Queue()
        self.devices = [HostedDevice(d, config, self.updates) for d in config.devices]
        self.parent_pid = os.getppid()
        self.error = ""

    def run(self) -> int:
        try:
            for device in self.devices:
                device.warm_up()
                device.connect_and_announce()
            self._loop()
            return 0
        except Exception as exc:  # recorded for the test, which reports it
            log.exception("host failed")
            self.error = f"{type(exc).__name__}: {exc}"
            return 1
        finally:
            self._write_state()
            for device in self.devices:
                device.stop()

    def _loop(self) -> None:
        next_tick = next_state = time.monotonic()
        while not self._should_stop():
            try:
                device, payload = self.updates.get(timeout=0.1)
                device.apply(payload)
            except queue.Empty:
                pass
            now = time.monotonic()
            if now >= next_tick:
                for device in self.devices:
                    device.tick()
                next_tick = now + LIVE_TICK_S
            if now >= next_state:
                self._write_state()
                next_state = now + STATE_INTERVAL_S

    def _should_stop(self) -> bool:
        return self.config.stop_file.exists() or os.getppid() != self.parent_pid

    def _write_state(self) -> None:
        state = {"error": self.error, "devices": {d.config.thing_name: d.state() for d in self.devices}}
        tmp = self.config.state_file.with_name(f".{self.config.state_file.name}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.config.state_file)


def read_host_state(state_file: Path) -> dict:
    try:
        return json.loads(Path(state_file).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python fleet_e2e_helpers.py HOST_CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = HostConfig.model_validate_json(Path(argv[0]).read_text())
    return Host(config).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
