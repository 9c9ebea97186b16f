"""The model runner's prediction traffic in the cost bench: the real publishing path, measured.

Each simulated gateway runs the ModelRunner component's own class (GreengrassModelRunner) with a
stand-in for the Greengrass IPC client: PublishToIoTCore goes out on the gateway's MQTT connection
(counted like telemetry: 5 KB units of payload + topic), PublishToTopic (the local adapters' copy)
is only counted. The runner serves a constant linear model (weight-only payload, numpy scoring as on
a gateway), scores the gateway's own samples every pack stride and batches its predictions under
its flush policy (prediction_batches.py), so the messages, their sizes and the landing's work are
what a deployed gateway causes. Its periodic status is left to the fleet's gateways (one per
DEFAULT_STATUS_INTERVAL_S already).

`flush_comparison` runs the same runner without a cloud, one simulated day per max latency, for
the messages and 5 KB units a gateway sends per month at each (the default's choice).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.greengrass_components.model_runner.component import GreengrassModelRunner
from edgeloop.greengrass_components.model_runner.settings import RunnerSettings
from edgeloop.model_runtime.linear_format import LinearModel
from edgeloop.model_runtime.model_format import write_payload
from edgeloop.model_runtime.scorer import load_payload
from edgeloop.schemas import ContextInterval, load_use_case, names
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.prediction import MAX_BATCH_PREDICTIONS

from . import cost_model

NO_STATUS_S = 1e12  # the fleet's gateways send the periodic status (cost_fleet.SimGateway.send_status)
LEVEL = 3.05  # the constant prediction: inside SPEC, so no alert
SPEC = (2.9, 3.2)
RUN_DAYS = 30  # the bench run's interval reaches this far either side of now (every sample's time)
COMPARED_LATENCIES_S = (0, 60, 300, 900, 1800)
COMPARISON_S = 6 * 3600


def _done() -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(None)
    return future


class IpcStandIn:
    """The IPC calls GreengrassModelRunner makes once started: PublishToIoTCore to `publish`,
    PublishToTopic counted."""

    def __init__(self, publish: Callable[[str, bytes], None]) -> None:
        self._publish = publish
        self.local_publishes: Counter[str] = Counter()

    def publish_to_iot_core_async(self, *, topic_name: str, qos: Any, payload: bytes) -> concurrent.futures.Future:
        self._publish(topic_name, payload)
        return _done()

    def publish_to_topic_async(self, *, topic: str, publish_message: Any) -> concurrent.futures.Future:
        self.local_publishes[topic] += 1
        return _done()


def constant_model(use_case_name: str, level: float = LEVEL) -> Any:
    use_case = load_use_case(use_case_name)
    payload = write_payload(
        LinearModel(weights=np.zeros(len(use_case.feature_names), dtype=np.float32), bias=level),
        model_id=f"{use_case_name}-bench",
        version="1.0.0",
        objective="reg:squarederror",
        base_score=0.0,
        features=use_case.feature_names,
    )
    return load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())


def bench_run(line_id: str, target_metric: str) -> ContextInterval:
    now = datetime.now(UTC)
    return ContextInterval.model_validate(
        {
            "kind": "run",
            "interval_id": f"{line_id}-bench-run",
            "line_id": line_id,
            "start": now - timedelta(days=RUN_DAYS),
            "end": now + timedelta(days=RUN_DAYS),
            "value": "cable-bench",
            "spec": {"target_metric": target_metric, "lower": SPEC[0], "upper": SPEC[1]},
        }
    )


def sample_event(samples: Iterable[tuple[str, int, float]]) -> Any:
    """A SubscribeToTopic event on names.LOCAL_PUBSUB_SAMPLES_TOPIC, as the nucleus delivers it."""
    from awsiot.greengrasscoreipc.model import JsonMessage, SubscriptionResponseMessage  # noqa: PLC0415

    return SubscriptionResponseMessage(json_message=JsonMessage(message={"samples": [list(s) for s in samples]}))


class BenchRunner:
    """One gateway's model runner: samples in (`second`), batched predictions out through `publish`."""

    def __init__(
        self,
        thing: str,
        line_id: str,
        use_case: str,
        work_dir: Path,
        clock: Callable[[], float],
        publish: Callable[[str, bytes], None],
        max_latency_s: float = names.DEFAULT_PREDICTION_FLUSH_MAX_LATENCY_S,
    ) -> None:
        settings = RunnerSettings(
            thing_name=thing,
            work_dir=work_dir,
            line_id=line_id,
            use_case=use_case,
            status_interval_s=NO_STATUS_S,
            prediction_flush_max_latency_s=max_latency_s,
        )
        self.ipc = IpcStandIn(publish)
        self.runner = GreengrassModelRunner(settings, self.ipc, clock=clock)
        self.runner.models.live.swap(constant_model(use_case))
        # a run with spec limits, as an MES adapter keeps one: each prediction carries them and its class
        self.runner.models.add_context([bench_run(line_id, self.runner.use_case.target_metric)])

    @property
    def window_s(self) -> int:
        return math.ceil(self.runner.models.live.window_ms / 1000)

    @property
    def warmup_s(self) -> int:
        """The live window, then half a batch's span of held predictions: a gateway that has run a
        while holds half a batch on average, so a run of any length sends batches at the steady rate
        (from an empty batcher an hour would send one 30-minute batch where two are due)."""
        stride_s = self.runner.use_case.example_stride_s
        latency_s = self.runner.predictions.flush.max_latency_s
        span_s = min(latency_s + stride_s, MAX_BATCH_PREDICTIONS * stride_s)
        return self.window_s + int(span_s // 2)

    def second(self, samples: list[tuple[str, int, float]]) -> None:
        self.runner.on_samples(sample_event(samples))
        self.runner.step()

    def close(self) -> None:
        self.runner.close()  # a stop sends the held predictions


@dataclass(frozen=True)
class FlushFigures:
    max_latency_s: float
    messages_per_month: float
    units_per_month: float
    bytes_per_message: float
    predictions_per_month: float


def flush_comparison(workdir: Path, use_case: str = "extrusion") -> list[FlushFigures]:
    """Per gateway-month at each max latency: messages and 5 KB units on the predictions topic."""
    return [_one_latency(workdir / f"latency-{latency}", use_case, latency) for latency in COMPARED_LATENCIES_S]


def _one_latency(workdir: Path, use_case: str, latency_s: float) -> FlushFigures:
    sent: list[tuple[str, int]] = []
    clock = _Clock()
    topic = names.prediction_topic("gw-compare")
    runner = BenchRunner(
        "gw-compare", "line-1", use_case, workdir, clock, lambda t, p: sent.append((t, len(p))), latency_s
    )
    simulator = ExtrusionLineSimulator("line-1", seed=1, start_ms=1_767_225_600_000)
    for _ in range(runner.warmup_s):  # the live window fills, half a batch is held: nothing counted
        runner.second(simulator.advance(1))
        clock.now += 1
    sent.clear()
    local_before = runner.ipc.local_publishes[names.LOCAL_PUBSUB_PREDICTIONS_TOPIC]
    for _ in range(COMPARISON_S):
        runner.second(simulator.advance(1))
        clock.now += 1
    batches = [size for t, size in sent if t == topic]
    scale = cost_model.MONTH_S / COMPARISON_S
    units = sum(cost_model.iot_units(size + len(topic.encode())) for size in batches)
    return FlushFigures(
        latency_s,
        len(batches) * scale,
        units * scale,
        sum(batches) / max(len(batches), 1),
        (runner.ipc.local_publishes[names.LOCAL_PUBSUB_PREDICTIONS_TOPIC] - local_before) * scale,
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
