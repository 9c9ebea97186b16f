"""N simulated gateways against the local stack on a simulated clock, every billed call metered.

Each gateway is the real gateway code in this process: the extrusion simulator (10 metrics at
1 Hz) -> validation -> durable buffer -> Publisher with a flush policy -> MQTT5 with mTLS to the
local mosquitto. The clock is simulated: every simulated second each gateway appends that
second's samples and asks its publisher for what the policy says is due, so message counts follow
simulated time, not wall time. The IoT rules (the local bridge) invoke the real handlers, the
telemetry rule through its queue when the run is batched (the batches released at the end of each
simulated batching window) or once per message when it is not; the scheduled functions run on the
simulated clock as EventBridge would: compaction at the run's interval (the template's schedule,
edgeloop:compactionIntervalMinutes; rollups on its success, the metric packer per line whose curated
data changed: curated/ "Object Created" events), the wave controller every minute, live accuracy at its
schedule's interval (scoring_time: the round that scores the period's windows); each gateway's model runner sends its periodic
status every DEFAULT_STATUS_INTERVAL_S. Each gateway also runs the ModelRunner component's class on its
samples (cost_predictions.BenchRunner): a prediction every pack stride, batched to IoT Core under its
flush policy, through the predictions rule and queue to the landing function. Samples are stamped in
the recent past (the simulated period ends now), so ingest's lateness SLA and compaction see them as on time.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from edgeloop.cloud.aws import client
from edgeloop.cloud.settings import temporary_environment
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.greengrass_components.gateway.flush_policy import FlushPolicy
from edgeloop.greengrass_components.gateway.publisher import Publisher
from edgeloop.greengrass_components.gateway.validation import SampleValidator, append_validated
from edgeloop.local import functions
from edgeloop.local.bridge import IotRuleBridge
from edgeloop.local.runtime import LocalRuntime
from edgeloop.local.schedule import CuratedWatcher
from edgeloop.schemas import PeriodicStatus, Precision, load_use_case, names

from .cost_meter import AwsCallMeter, AwsUsage, CountingLog, CountingTransport, IotUsage, LambdaMeter, rule_units
from .cost_model import sqs_requests
from .cost_predictions import BenchRunner

USE_CASE = "extrusion"
WAVE_CONTROLLER_EVERY_S = 60  # cdk/constructs/fleet.py WAVE_CONTROLLER_SCHEDULE
# Powertools' level when the function sets none (the deployed functions set none); the local
# stack quiets it to WARNING, which would hide what CloudWatch is billed for.
DEPLOYED_LOG_LEVEL = "INFO"
SOURCE = "edgeloop.bench.cost"
BRIDGE_IDLE_TIMEOUT_S = 300.0
NEVER_BY_WALL_CLOCK_S = 1e9  # the simulated clock releases the batches (Released)
SQS_RECEIVE_MAX = 10  # messages per ReceiveMessage / DeleteMessageBatch
SCHEDULED_FUNCTIONS = ("compaction", "rollups", "metric_packer", "wave_controller", "live_accuracy")
METERED_FUNCTIONS = (*dict.fromkeys(route.function for route in names.IOT_ROUTES), *SCHEDULED_FUNCTIONS)


@dataclass(frozen=True)
class RunSpec:
    gateways: int
    simulated_s: int
    flush: FlushPolicy
    compaction_interval_s: int  # the stack's compaction schedule (cost_template.DeployedSettings)
    # (batch size, batching window s) of the SQS queue in front of ingest; None: the rule invokes
    # ingest once per message (the path before batched ingest)
    ingest_batching: tuple[int, int] | None = None
    prediction_flush_max_latency_s: float = names.DEFAULT_PREDICTION_FLUSH_MAX_LATENCY_S
    live_accuracy_interval_s: int | None = None  # its schedule (cost_template.DeployedSettings); None: not run
    landing_delay_minutes: float = 0.0  # its names.LANDING_DELAY_MINUTES_ENV, the template's


@dataclass
class FleetRun:
    spec: RunSpec
    iot: IotUsage
    rule_units: int
    sqs_requests: int
    meter: AwsCallMeter
    lambdas: LambdaMeter
    log: CountingLog
    stored_bytes: dict[str, int]  # data bucket top-level prefix -> bytes at the end
    stored_objects: dict[str, int]
    compaction_rounds: int
    wall_s: float
    prediction_iot: IotUsage = field(default_factory=IotUsage)  # the model runners' messages (also in `iot`)
    rule_units_by: dict[str, int] = field(default_factory=dict)  # function -> rule units routed to it
    sqs_requests_by: dict[str, int] = field(default_factory=dict)
    live_accuracy_rounds: int = 0
    live_accuracy_windows: int = 0  # (line, model version) windows the rounds scored


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SimGateway:
    def __init__(
        self,
        config: GatewayConfig,
        clock: SimClock,
        spec: RunSpec,
        usage: tuple[IotUsage, IotUsage],  # all messages, prediction messages
        *,
        seed: int,
        start_ms: int,
    ) -> None:
        iot, prediction_iot = usage
        self.config = config
        self.simulator = ExtrusionLineSimulator(config.line_id, seed=seed, start_ms=start_ms)
        self.validator = SampleValidator(load_use_case(config.use_case), source=config.thing_name)
        self.buffer = SampleBuffer(
            config.buffer_path, thing_name=config.thing_name, line_id=config.line_id, clock=clock
        )
        self.transport = CountingTransport(config.mqtt_transport(), iot)
        self.publisher = Publisher(
            self.buffer, self.transport, config.telemetry_topic, flush=spec.flush, clock=clock, sleep=clock.advance
        )
        predictions = CountingTransport(self.transport, prediction_iot)
        self.runner = BenchRunner(
            config.thing_name,
            config.line_id,
            config.use_case,
            config.buffer_path.with_suffix(".runner"),
            clock,
            lambda topic, payload: predictions.publish(topic, payload, 10.0),
            spec.prediction_flush_max_latency_s,
        )
        # the runner's live window fills before the period (a separate stretch of the line, at
        # connect): it predicts from the first simulated second on, as a gateway running a while does
        self.warmup = ExtrusionLineSimulator(
            config.line_id, seed=seed + 1000, start_ms=start_ms - self.runner.warmup_s * 1000
        )

    def connect(self) -> None:
        self.transport.connect(30.0)
        announcement = self.config.announcement([Precision.FP32])
        self.transport.publish(
            names.announce_topic(self.config.thing_name), announcement.model_dump_json().encode(), 10.0
        )
        for _ in range(self.runner.warmup_s):
            self.runner.second(self.warmup.advance(1))

    def second(self) -> None:
        samples = self.simulator.advance(1)
        append_validated(self.validator, self.buffer, samples)
        self.publisher.publish_pending()
        self.runner.second(samples)

    def send_status(self) -> None:
        status = PeriodicStatus(thing_name=self.config.thing_name, sent_at=datetime.now(UTC))
        self.transport.publish(
            names.model_status_topic(self.config.thing_name), status.model_dump_json().encode(), 10.0
        )

    def close(self) -> None:
        self.transport.disconnect()
        self.buffer.close()


def handler_of(function: str) -> Callable:
    module, _, attribute = names.FUNCTIONS[function].rpartition(".")
    return getattr(importlib.import_module(module), attribute)


@contextmanager
def logs_into(sink: CountingLog) -> Iterator[None]:
    """Point every logging stream handler on stdout (powertools binds sys.stdout when a Logger is
    made, at import) at `sink` for the block."""
    import sys

    moved = []
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
                moved.append((handler, handler.setStream(sink)))
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)


class Cloud:
    """The metered functions: bridge routes and scheduled rounds."""

    def __init__(self, lambdas: LambdaMeter, log: CountingLog) -> None:
        self.lambdas = lambdas
        self.log = log
        self.rule_units = 0
        self.sqs_requests = 0
        self.rule_units_by: Counter = Counter()
        self.sqs_requests_by: Counter = Counter()
        self.curated = CuratedWatcher()
        self.compaction_rounds = 0
        self.live_accuracy_rounds = 0
        self.live_accuracy_windows = 0

    def invoke(self, function: str, event: dict, context: object) -> object:
        return functions.logging_to(self.log, self.lambdas.wrap(function, handler_of(function)))(event, context)

    def route(self, function: str) -> Callable:
        def delivered(event: dict, context: object) -> object:
            records = event.get("Records")
            units_before, requests_before = self.rule_units, self.sqs_requests
            if records is None:
                self.rule_units += rule_units(event)  # one rule triggered, one action, in 5 KB units each
            else:  # through the queue: the rule's SendMessage per message, a receive and a delete per 10
                for record in records:
                    self.rule_units += rule_units(json.loads(record["body"]))
                    self.sqs_requests += sqs_requests(len(record["body"].encode()))
                self.sqs_requests += 2 * math.ceil(len(records) / SQS_RECEIVE_MAX)
            self.rule_units_by[function] += self.rule_units - units_before
            self.sqs_requests_by[function] += self.sqs_requests - requests_before
            return self.invoke(function, event, context)

        return delivered

    def compaction_round(self) -> None:
        context = functions.lambda_context("compaction")
        request = functions.scheduled_event(SOURCE)
        result = self.invoke("compaction", request, context)
        destination = functions.success_destination_event(context, request, result)
        self.invoke("rollups", destination, functions.lambda_context("rollups"))
        for line_id in self.curated.changed_lines():
            self.invoke("metric_packer", {"line_ids": [line_id]}, functions.lambda_context("metric_packer"))
        self.compaction_rounds += 1

    def wave_controller_round(self) -> None:
        self.invoke("wave_controller", functions.scheduled_event(SOURCE), functions.lambda_context("wave_controller"))

    def live_accuracy_round(self, at: datetime) -> None:
        event = functions.scheduled_event(SOURCE, at)
        summary = self.invoke("live_accuracy", event, functions.lambda_context("live_accuracy"))
        self.live_accuracy_rounds += 1
        self.live_accuracy_windows += summary["windows"]


def scoring_time(period_end_ms: int, landing_delay_minutes: float) -> datetime:
    """When a round scores the window holding `period_end_ms`'s predictions (windows of
    monitoring.window_minutes, due a label window and the landing delay after they end). A bench period
    is an hour: the round at its end would find none of its windows due; the stack's next round scores
    them, and a round bills per line by the windows and objects it reads, not by when it runs."""
    use_case = load_use_case(USE_CASE)
    lag_s = use_case.monitoring.window_minutes * 60 + use_case.label_window_s + landing_delay_minutes * 60
    return datetime.fromtimestamp(period_end_ms / 1000 + lag_s, UTC)


def run_fleet(
    spec: RunSpec, memory_mb: dict[str, int], workdir: Path, logging_env: Mapping[str, Mapping[str, str]] | None = None
) -> FleetRun:
    """`logging_env`: each function's powertools logging variables as deployed (sampling, level),
    set while its module is imported (powertools reads them when the Logger is made)."""
    started = time.perf_counter()
    things = [f"gw-cost-{i}" for i in range(spec.gateways)]
    clock, iot, prediction_iot, log = SimClock(), IotUsage(), IotUsage(), CountingLog()
    lambdas = LambdaMeter(memory_mb, log)
    cloud = Cloud(lambdas, log)
    environment = {
        names.USE_CASE_ENV: USE_CASE,
        "POWERTOOLS_LOG_LEVEL": DEPLOYED_LOG_LEVEL,
        names.LANDING_DELAY_MINUTES_ENV: f"{spec.landing_delay_minutes:g}",
    }
    with ExitStack() as stack:
        stack.enter_context(temporary_environment(environment))
        runtime = stack.enter_context(LocalRuntime(workdir / "runtime", things))
        meter = stack.enter_context(AwsCallMeter())
        handlers = {route.function: cloud.route(route.function) for route in names.IOT_ROUTES}
        for function in METERED_FUNCTIONS:  # imported before their loggers are re-pointed
            with temporary_environment(dict((logging_env or {}).get(function, {}))):
                handler_of(function)
        stack.enter_context(logs_into(log))
        bridge = _bridge(runtime, handlers, spec)
        stack.enter_context(bridge)
        # the simulated period ends a minute before now: every sample is in the past
        start_ms = (time.time_ns() // 1_000_000) - (spec.simulated_s + 60) * 1000
        gateways = _gateways(runtime, things, spec, clock, (iot, prediction_iot), workdir, start_ms)
        stack.callback(lambda: [g.close() for g in gateways])
        # Connecting (announcement, registration) happens once per connection, not per simulated
        # second: it is set-up here, and the meters start after it.
        released = Released(bridge, iot)
        released.wait_idle()
        released.restart_count()
        _start_metering(meter, lambdas, (iot, prediction_iot), cloud)
        _simulate(spec, clock, gateways, cloud, released, start_ms)
        released.wait_idle()
        if bridge.failed:
            raise RuntimeError(f"{bridge.failed} handler invocation(s) failed; last: {bridge.last_error}")
        stored_bytes, stored_objects = _stored(names.LOCAL_DATA_BUCKET)
    return FleetRun(
        spec,
        iot,
        cloud.rule_units,
        cloud.sqs_requests,
        meter,
        lambdas,
        log,
        stored_bytes,
        stored_objects,
        cloud.compaction_rounds,
        time.perf_counter() - started,
        prediction_iot,
        dict(cloud.rule_units_by),
        dict(cloud.sqs_requests_by),
        cloud.live_accuracy_rounds,
        cloud.live_accuracy_windows,
    )


def _start_metering(meter: AwsCallMeter, lambdas: LambdaMeter, usage: tuple[IotUsage, ...], cloud: Cloud) -> None:
    meter.usage = AwsUsage()
    lambdas.functions.clear()
    for iot in usage:
        iot.messages = iot.units = iot.payload_bytes = 0
    cloud.rule_units = cloud.sqs_requests = 0
    cloud.live_accuracy_rounds = cloud.live_accuracy_windows = 0
    cloud.rule_units_by.clear()
    cloud.sqs_requests_by.clear()


def _gateways(
    runtime, things, spec: RunSpec, clock: SimClock, usage: tuple[IotUsage, IotUsage], workdir: Path, start_ms: int
) -> list[SimGateway]:
    gateways = []
    for i, thing in enumerate(things):
        cert = runtime.certs[thing]
        config = GatewayConfig(
            thing_name=thing,
            site="plant-cost",
            line_id=f"line-{i + 1}",
            use_case=USE_CASE,
            architecture="aarch64",
            runtime_version="1.0.0",
            broker_host=runtime.broker.host,
            broker_port=runtime.broker.device_port,
            cert_path=cert.cert_path,
            key_path=cert.key_path,
            ca_path=cert.ca_path,
            buffer_path=workdir / f"{thing}.sqlite",
        )
        runtime.register_gateway(config)
        gateway = SimGateway(config, clock, spec, usage, seed=i + 1, start_ms=start_ms)
        gateway.connect()
        gateways.append(gateway)
    return gateways


def _bridge(runtime: LocalRuntime, handlers: dict, spec: RunSpec) -> IotRuleBridge:
    """The IoT rules; a batched route's queue hands batches over when the simulated window ends."""
    if spec.ingest_batching is None:
        routes = tuple(replace(route, batched=False) for route in names.IOT_ROUTES)
        return IotRuleBridge(runtime.broker.host, runtime.broker.port, runtime.cloud_cert, routes, handlers)
    batch_size, _ = spec.ingest_batching
    return IotRuleBridge(
        runtime.broker.host,
        runtime.broker.port,
        runtime.cloud_cert,
        handlers=handlers,
        batch_size=batch_size,
        batch_window_s=NEVER_BY_WALL_CLOCK_S,
    )


class Released:
    """The bridge, with its batches released on the simulated clock once every message sent has
    reached it (a message still in flight would otherwise slip into the next window)."""

    def __init__(self, bridge: IotRuleBridge, iot: IotUsage) -> None:
        self.bridge = bridge
        self.iot = iot
        self.sent_before = 0  # messages sent before the meters were reset

    def restart_count(self) -> None:
        self.sent_before += self.iot.messages

    def release(self) -> None:
        sent = self.sent_before + self.iot.messages
        deadline = time.monotonic() + BRIDGE_IDLE_TIMEOUT_S
        while self.bridge.delivered + self.bridge.failed + self.bridge.pending < sent:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sent} messages sent, the bridge saw fewer in {BRIDGE_IDLE_TIMEOUT_S} s")
            time.sleep(0.001)
        self.bridge.release_batches()

    def wait_idle(self) -> None:
        self.release()
        self.bridge.wait_idle(BRIDGE_IDLE_TIMEOUT_S)


def _simulate(
    spec: RunSpec, clock: SimClock, gateways: list[SimGateway], cloud: Cloud, bridge: Released, start_ms: int
) -> None:
    window_s = spec.ingest_batching[1] if spec.ingest_batching else 0
    for second in range(1, spec.simulated_s + 1):
        for gateway in gateways:
            gateway.second()
        clock.advance(1)
        if second % names.DEFAULT_STATUS_INTERVAL_S == 0:
            for gateway in gateways:
                gateway.send_status()
        if window_s and second % window_s == 0:
            bridge.release()
        if second % WAVE_CONTROLLER_EVERY_S == 0:
            cloud.wave_controller_round()
        if second % spec.compaction_interval_s == 0:
            bridge.wait_idle()  # what was sent until now has landed, as in AWS
            cloud.compaction_round()
        if spec.live_accuracy_interval_s and second % spec.live_accuracy_interval_s == 0:
            bridge.wait_idle()
            cloud.live_accuracy_round(scoring_time(start_ms + second * 1000, spec.landing_delay_minutes))


def _stored(bucket: str) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes and objects per top-level prefix (not metered: no function is running)."""
    size: dict[str, int] = {}
    count: dict[str, int] = {}
    for page in client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            prefix = item["Key"].split("/", 1)[0]
            size[prefix] = size.get(prefix, 0) + item["Size"]
            count[prefix] = count.get(prefix, 0) + 1
    return size, count
