"""The whole loop on one machine: simulated lines -> MQTT -> S3 -> training -> rollout -> scoring.

Every stage runs the project's real code: gateway processes with a durable buffer publish over
mutual TLS to mosquitto; the local bridge plays the IoT rules and calls the Lambda handlers;
moto_server plays S3, DynamoDB and the SageMaker model registry; training uses the pipeline's
step code; the orchestrator handler delivers a weight-only payload the gateways verify and score
with.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edgeloop.cloud.settings import temporary_environment
from edgeloop.demo.settings import DEMO_ARCHITECTURES, DEMO_RUNTIME_VERSION, DEMO_SITE, DemoSettings
from edgeloop.schemas import DeviceRecord, DeviceStatus, ModelMetrics, load_use_case, names

SIM_MARGIN_S = 15 * 60  # keeps every simulated (and predicted) timestamp in the past
LIVE_RESERVE_S = 4 * 3600  # simulated time the gateways may spend scoring while we train


class DemoFailed(RuntimeError):
    """A stage did not reach its goal in time; the message says which and why."""


@dataclass
class LineModel:
    line_id: str
    model_package_arn: str
    metrics: ModelMetrics
    n_examples: int
    approval_status: str = ""
    registry_metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoOutcome:
    samples_sent: int = 0
    samples_landed: int = 0
    samples_quarantined: int = 0
    handler_failures: int = 0
    live_points: dict[str, int] = field(default_factory=dict)  # per line: predictions with a measurement
    live_mae: dict[str, float] = field(default_factory=dict)  # per line: mean |predicted - measured|
    models: dict[str, LineModel] = field(default_factory=dict)
    fleet: list[DeviceRecord] = field(default_factory=list)
    model_version: str = ""
    report_path: Path | None = None
    # rollups and context slices after the last compaction
    rollup_rows: dict[str, int] = field(default_factory=dict)  # resolution -> rows over every line
    rollup_samples_1h: dict[str, int] = field(default_factory=dict)  # per line: sum of the 1h counts
    curated_samples: dict[str, int] = field(default_factory=dict)  # per line: curated rows
    late_samples: dict[str, int] = field(default_factory=dict)  # per line: rows beyond the lateness SLA
    context_slices: dict[str, int] = field(default_factory=dict)  # per line: 1-minute context slices
    # the query layer on the demo's data: per line, hourly die temperature (°C) rows and their mean
    role_query_rows: dict[str, int] = field(default_factory=dict)
    role_query_mean: dict[str, float] = field(default_factory=dict)

    @property
    def every_gateway_on_new_model(self) -> bool:
        return bool(self.fleet) and all(
            d.status is DeviceStatus.APPLIED and d.current_model_version == self.model_version for d in self.fleet
        )

    @property
    def ok(self) -> bool:
        return (
            self.samples_sent == self.samples_landed and self.handler_failures == 0 and self.every_gateway_on_new_model
        )


@dataclass
class GatewayProcess:
    thing_name: str
    line_id: str
    config_path: Path
    state_file: Path
    stop_file: Path
    context_file: Path

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}


def _wait_until(what: str, done: Callable[[], bool], timeout_s: float, poll_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        console=console,
    )


class DemoRun:
    """One demo run; each method is a stage of the loop."""

    def __init__(self, settings: DemoSettings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.use_case = load_use_case(settings.use_case)
        self.workdir = settings.workdir.resolve()
        self.outcome = DemoOutcome(model_version=settings.model_version)
        self.gateways: list[GatewayProcess] = []
        self.procs: list = []
        history_s = int(settings.history_hours * 3600)
        max_live_s = int(settings.live_minutes * 60) + LIVE_RESERVE_S
        now_s = int(time.time()) // 60 * 60
        self.sim_start_ms = (now_s - history_s - max_live_s - SIM_MARGIN_S) * 1000
        self.history_s = history_s
        self.max_live_s = max_live_s

    # --- stage 1: gateways publish their history over MQTT --------------------------------------
    def write_gateway_configs(self, runtime) -> None:
        from edgeloop.device_shims.simulated_gateway import SimulatedGatewayConfig
        from edgeloop.greengrass_components.gateway.config import GatewayConfig

        for i, line_id in enumerate(self.settings.line_ids()):
            thing = self.settings.thing_name(line_id)
            home = self.workdir / "gateways" / thing
            home.mkdir(parents=True, exist_ok=True)
            cert = runtime.certs[thing]
            offline = []
            if i == 1 and self.settings.offline_minutes > 0:
                # the second gateway loses its uplink a third of the way into its history
                offline = [(self.history_s // 3, int(self.settings.offline_minutes * 60))]
            gateway = GatewayConfig(
                thing_name=thing,
                site=DEMO_SITE,
                line_id=line_id,
                use_case=self.use_case.use_case,
                architecture=DEMO_ARCHITECTURES[i % len(DEMO_ARCHITECTURES)],
                runtime_version=DEMO_RUNTIME_VERSION,
                broker_host=runtime.broker.host,
                broker_port=runtime.broker.port,
                cert_path=cert.cert_path,
                key_path=cert.key_path,
                ca_path=cert.ca_path,
                buffer_path=home / "buffer.sqlite",
            )
            runtime.register_gateway(gateway)  # ingest checks each batch's line against the registry
            process = GatewayProcess(
                thing_name=thing,
                line_id=line_id,
                config_path=home / "config.json",
                state_file=home / "state.json",
                stop_file=home / "stop",
                context_file=home / "context.jsonl",
            )
            config = SimulatedGatewayConfig(
                gateway=gateway,
                seed=self.settings.seed + i,
                sim_start_ms=self.sim_start_ms,
                history_s=self.history_s,
                offline_windows=offline,
                live_speedup=self.settings.live_speedup,
                max_live_s=self.max_live_s,
                state_file=process.state_file,
                stop_file=process.stop_file,
                context_file=process.context_file,
                model_signing_public_key=self.signing_keys().public_key_b64,
            )
            process.config_path.write_text(config.model_dump_json(indent=2))
            self.gateways.append(process)

    def launch_gateways(self) -> None:
        from edgeloop.device_shims.fleet import launch_fleet

        self.procs = launch_fleet([g.config_path for g in self.gateways])

    def wait_for_history(self) -> None:
        per_line = self.history_s / self.use_case.sample_period_s * len(self.use_case.metrics)
        with _progress(self.console) as progress:
            tasks = {g.thing_name: progress.add_task(f"{g.thing_name} history", total=per_line) for g in self.gateways}

            def drained() -> bool:
                self._check_gateways_alive()
                for g in self.gateways:
                    state = g.state()
                    progress.update(tasks[g.thing_name], completed=state.get("published_samples", 0))
                return all(g.state().get("history_drained") for g in self.gateways)

            _wait_until("gateways to publish their history", drained, self.settings.timeout_s)

    def _check_gateways_alive(self) -> None:
        for g, proc in zip(self.gateways, self.procs):
            code = proc.poll()
            if code is not None and not g.stop_file.exists():
                raise DemoFailed(f"gateway {g.thing_name} exited with code {code}: {g.state().get('last_error', '')}")

    # --- stage 2: storage, context, rollups, labeled packs ----------------------------------------
    def publish_context(self, runtime) -> None:
        """Each gateway's context intervals, published on its context topic as that gateway.

        Its own certificate (the ACL confines it to edgeloop/<thing>/#), but a client id of its
        own, so the gateway process's session is not taken over. The bridge plays the IoT rule.
        """
        from edgeloop.local.mqtt import connect_mqtt5

        for g in self.gateways:
            lines = [line for line in g.context_file.read_text().splitlines() if line.strip()]
            cert = runtime.certs[g.thing_name]
            with connect_mqtt5(runtime.broker.host, runtime.broker.port, cert, f"{g.thing_name}-context") as mqtt:
                for payload in _json_list_payloads(lines, CONTEXT_PAYLOAD_BYTES):
                    mqtt.publish(names.context_topic(g.thing_name), payload)

    def compact_and_roll_up(self, log: TextIO) -> None:
        """Compaction, then the rollups of what it rewrote, handed over as its success destination would."""
        from edgeloop.functions.compaction.handler import lambda_handler as compaction
        from edgeloop.functions.rollups.handler import lambda_handler as rollups
        from edgeloop.local.bridge import LambdaContext

        compaction_context = LambdaContext(f"{names.PROJECT}-compaction")
        request = {"source": "edgeloop.demo", "detail-type": "Scheduled Event", "detail": {}}
        result = _logging_to(log, compaction)(request, compaction_context)
        _logging_to(log, rollups)(
            _success_destination_event(compaction_context, request, result), LambdaContext(f"{names.PROJECT}-rollups")
        )

    def build_examples(self) -> dict:
        from edgeloop.functions.metric_packer.logic import build_line_examples

        examples = {}
        for line_id in self.settings.line_ids():
            frame = build_line_examples(names.LOCAL_DATA_BUCKET, line_id, self.use_case)
            if frame.empty:
                raise DemoFailed(f"no labeled metric packs for {line_id}: is history_hours too short?")
            examples[line_id] = frame
        return examples

    # --- stage 3: train, export weight-only, register, approve -> orchestrator --------------------
    def signing_keys(self):
        """The demo's model-signing key pair (made once per work dir): export signs, gateways verify."""
        from edgeloop.model_runtime.signing import write_key_pair

        return write_key_pair(self.workdir / "model-signing")

    def train_register_approve(self, examples: Mapping) -> list[dict]:
        from edgeloop.model_runtime.signing import load_private_key
        from edgeloop.sagemaker_pipelines.steps.export import export_model
        from edgeloop.sagemaker_pipelines.steps.register import approve_model, register_model
        from edgeloop.sagemaker_pipelines.steps.train import train_lines

        templates = ", ".join(t.value for t in self.use_case.training.templates)
        with self.console.status(f"training {len(examples)} models (one per line; searching {templates})"):
            trained = train_lines(dict(examples), self.use_case, max_workers=2)
        events = []
        for line_id, model in trained.items():
            exported = export_model(
                model,
                model_id=f"{self.use_case.use_case}-{line_id}",
                version=self.settings.model_version,
                use_case=self.use_case.use_case,
                line_ids=[line_id],
                target=self.use_case.target_metric,
                signing_key=load_private_key(self.signing_keys().private_key_path),
            )
            arn = register_model(exported, model_bucket=names.LOCAL_MODEL_BUCKET)
            events.append(approve_model(arn))
            self.outcome.models[line_id] = _read_back_registration(line_id, arn, model.metrics, len(examples[line_id]))
        return events

    def roll_out(self, approval_events: list[dict], lambda_context, log: TextIO) -> None:
        from edgeloop.functions.orchestrator.handler import lambda_handler

        orchestrate = _logging_to(log, lambda_handler)
        for event in approval_events:
            orchestrate(event, lambda_context)
        total = len(self.gateways)
        with _progress(self.console) as progress:
            task = progress.add_task("rollout (gateways on the new model)", total=total)

            def applied() -> bool:
                self._check_gateways_alive()
                fleet = self.read_fleet()
                done = [
                    d
                    for d in fleet
                    if d.status is DeviceStatus.APPLIED and d.current_model_version == self.settings.model_version
                ]
                failed = [d for d in fleet if d.status in (DeviceStatus.REJECTED, DeviceStatus.ROLLED_BACK)]
                if failed:
                    raise DemoFailed(f"rollout failed on {[(d.thing_name, d.reason) for d in failed]}")
                progress.update(task, completed=len(done))
                return len(done) == total

            _wait_until("every gateway to report the new model", applied, self.settings.timeout_s)

    def wait_for_live_predictions(self) -> None:
        wanted = int(self.settings.live_minutes * 60 / self.use_case.example_stride_s)
        with _progress(self.console) as progress:
            tasks = {
                g.thing_name: progress.add_task(f"{g.thing_name} live predictions", total=wanted) for g in self.gateways
            }

            def enough() -> bool:
                self._check_gateways_alive()
                for g in self.gateways:
                    progress.update(tasks[g.thing_name], completed=min(wanted, g.state().get("predictions", 0)))
                return all(g.state().get("predictions", 0) >= wanted for g in self.gateways)

            _wait_until("live predictions", enough, self.settings.timeout_s)

    def stop_gateways(self) -> None:
        from edgeloop.device_shims.fleet import stop_fleet

        if self.procs:
            stop_fleet(self.procs, [g.stop_file for g in self.gateways], timeout=self.settings.timeout_s)

    # --- stage 4: read back what landed --------------------------------------------------------
    def read_fleet(self) -> list[DeviceRecord]:
        from edgeloop.cloud.fleet.devices import DeviceTable
        from edgeloop.cloud.fleet.queries import fleet_status

        return fleet_status(DeviceTable(names.LOCAL_DEVICE_TABLE))

    def count_samples(self) -> None:
        from edgeloop.functions.compaction.logic import read_curated

        landed = 0
        for line_id in self.settings.line_ids():
            curated = read_curated(names.LOCAL_DATA_BUCKET, line_id)
            landed += len(curated.drop_duplicates(["thing_name", "seq"]))
        self.outcome.samples_landed = landed
        self.outcome.samples_sent = sum(g.state().get("accepted_samples", 0) for g in self.gateways)
        self.outcome.samples_quarantined = _count_objects(names.LOCAL_DATA_BUCKET, names.QUARANTINE_PREFIX)

    def count_rollups_and_slices(self) -> None:
        from edgeloop.functions.compaction.logic import read_curated, read_late
        from edgeloop.functions.context.data_access import get_slices
        from edgeloop.functions.rollups.logic import LEVELS, MINUTE_MS, read_rollups

        rows = dict.fromkeys(LEVELS, 0)
        for line_id in self.settings.line_ids():
            for resolution in LEVELS:
                rollups = read_rollups(names.LOCAL_DATA_BUCKET, line_id, resolution)
                rows[resolution] += len(rollups)
                if resolution == "1h":
                    self.outcome.rollup_samples_1h[line_id] = int(rollups["count"].sum())
            self.outcome.curated_samples[line_id] = len(read_curated(names.LOCAL_DATA_BUCKET, line_id))
            self.outcome.late_samples[line_id] = len(read_late(names.LOCAL_DATA_BUCKET, line_id))
            slices = get_slices(names.LOCAL_DATA_BUCKET, line_id)
            spans = slices.column("slice_end_ms").to_numpy() - slices.column("slice_start_ms").to_numpy()
            self.outcome.context_slices[line_id] = int(spans.sum() // MINUTE_MS)
        self.outcome.rollup_rows = rows

    def query_die_temperature(self) -> None:
        """The named query `rollups_by_role` on DuckDB over a mirror of the bucket: the same SQL
        Athena runs in AWS (edgeloop.query)."""
        from edgeloop.query import DuckDbEngine

        lines = self.settings.line_ids()
        end_ms = int(time.time() * 1000) + 400 * 86_400_000  # every simulated hour, wherever it lies
        engine, _ = DuckDbEngine.from_bucket(names.LOCAL_DATA_BUCKET, self.workdir / "query-mirror")
        with engine:
            rows = engine.run(
                "rollups_by_role",
                use_case=self.settings.use_case,
                role="die_temperature",
                lines=lines,
                resolution="1h",
                start_ms=0,
                end_ms=end_ms,
            )
        for line_id, group in rows.groupby("line"):
            self.outcome.role_query_rows[line_id] = len(group)
            self.outcome.role_query_mean[line_id] = float(group["sum"].sum() / group["count"].sum())


def _read_back_registration(line_id: str, arn: str, metrics: ModelMetrics, n_examples: int) -> LineModel:
    """What the model registry holds after approval (the orchestrator relies on this metadata)."""
    from edgeloop.cloud.aws import client

    package = client("sagemaker").describe_model_package(ModelPackageName=arn)
    return LineModel(
        line_id=line_id,
        model_package_arn=arn,
        metrics=metrics,
        n_examples=n_examples,
        approval_status=package.get("ModelApprovalStatus", ""),
        registry_metadata=package.get("CustomerMetadataProperties", {}),
    )


CONTEXT_PAYLOAD_BYTES = 96 * 1024  # below IoT Core's 128 KB per message


def _json_list_payloads(json_documents: list[str], max_bytes: int) -> Iterator[bytes]:
    """JSON arrays of the given documents, each at most `max_bytes` (a lone larger one goes alone)."""
    batch: list[str] = []
    size = 2
    for document in json_documents:
        if batch and size + len(document) + 1 > max_bytes:
            yield f"[{','.join(batch)}]".encode()
            batch, size = [], 2
        batch.append(document)
        size += len(document) + 1
    if batch:
        yield f"[{','.join(batch)}]".encode()


def _success_destination_event(context, request: dict, response: dict) -> dict:
    """What Lambda hands an on-success destination function (the stack's response_only=False)."""
    from datetime import UTC, datetime

    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": context.aws_request_id,
            "functionArn": f"{context.invoked_function_arn}:$LATEST",
            "condition": "Success",
            "approximateInvokeCount": 1,
        },
        "requestPayload": request,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": response,
    }


def _rollups_line(outcome: DemoOutcome) -> str:
    rows = ", ".join(f"{resolution} {count:,}" for resolution, count in outcome.rollup_rows.items())
    slices = sum(outcome.context_slices.values())
    return f"[green]rollups[/] rows per resolution: {rows}  [green]context slices[/] {slices:,} one-minute slices"


def _role_query_line(outcome: DemoOutcome) -> str:
    means = ", ".join(
        f"{line} {outcome.role_query_mean[line]:.1f} °C over {rows} h" for line, rows in outcome.role_query_rows.items()
    )
    return f"[green]query layer[/] (DuckDB, rollups_by_role die_temperature at 1h): {means}"


def _count_objects(bucket: str, prefix: str) -> int:
    from edgeloop.cloud.aws import client

    pages = client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return sum(len(page.get("Contents", [])) for page in pages)


# redirect_stdout swaps the process-wide sys.stdout, so invocations take turns (one at a time,
# like a function with reserved concurrency 1; it also keeps moto's conditional writes honest).
_INVOCATION_LOCK = threading.Lock()


def _logging_to(log: TextIO, handler: Callable) -> Callable:
    def invoke(event: dict, context: object) -> object:
        with _INVOCATION_LOCK, redirect_stdout(log):
            return handler(event, context)

    return invoke


def _bridge_handlers(log: TextIO) -> dict[str, Callable]:
    from edgeloop.functions.context.handler import lambda_handler as context_intake
    from edgeloop.functions.device_registry.handler import lambda_handler as register_device
    from edgeloop.functions.ingest.handler import lambda_handler as ingest
    from edgeloop.functions.status_intake.handler import lambda_handler as status_intake

    handlers = {
        "ingest": ingest,
        "device_registry": register_device,
        "status_intake": status_intake,
        "context": context_intake,
    }
    return {name: _logging_to(log, handler) for name, handler in handlers.items()}


# The handlers run in this process. Like in Lambda their EMF metrics go to a log (CloudWatch's
# stand-in is lambda.log in the work dir) and only their warnings reach the console.
QUIET_LAMBDA_ENV = {"POWERTOOLS_LOG_LEVEL": "WARNING"}


def run_demo(settings: DemoSettings, console: Console | None = None) -> DemoOutcome:
    # an explicit file keeps the console on the terminal while handler output is redirected
    console = console or Console(file=sys.stdout)
    with temporary_environment(QUIET_LAMBDA_ENV), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        return _run_demo(settings, console)


def _run_demo(settings: DemoSettings, console: Console) -> DemoOutcome:
    from edgeloop.demo.report import write_report
    from edgeloop.local.bridge import IotRuleBridge, LambdaContext
    from edgeloop.local.runtime import LocalRuntime

    demo = DemoRun(settings, console)
    shutil.rmtree(demo.workdir, ignore_errors=True)
    demo.workdir.mkdir(parents=True)
    things = [settings.thing_name(line) for line in settings.line_ids()]
    with ExitStack() as stack:
        runtime = stack.enter_context(LocalRuntime(demo.workdir / "runtime", things))
        console.print(
            f"[green]local AWS[/] moto_server {runtime.moto.endpoint_url}  "
            f"[green]MQTT[/] mosquitto mTLS {runtime.broker.host}:{runtime.broker.port}"
        )
        lambda_log = stack.enter_context((demo.workdir / "lambda.log").open("a"))
        handlers = _bridge_handlers(lambda_log)
        bridge = IotRuleBridge(runtime.broker.host, runtime.broker.port, runtime.cloud_cert, handlers=handlers)
        bridge.start()
        try:
            demo.write_gateway_configs(runtime)
            demo.launch_gateways()
            try:
                demo.wait_for_history()
                demo.publish_context(runtime)
                bridge.wait_idle(timeout=settings.timeout_s)
                with console.status("compacting raw data into curated Parquet, rolling up; building metric packs"):
                    demo.compact_and_roll_up(lambda_log)
                    examples = demo.build_examples()
                events = demo.train_register_approve(examples)
                demo.roll_out(events, LambdaContext("edgeloop-orchestrator"), lambda_log)
                demo.wait_for_live_predictions()
            finally:
                demo.stop_gateways()
            demo.publish_context(runtime)  # the live period's runs too, so the report can draw their limits
            bridge.wait_idle(timeout=settings.timeout_s)
        finally:
            bridge.stop()
        demo.outcome.handler_failures = bridge.failed
        if bridge.failed:
            console.print(f"[red]{bridge.failed} handler invocations failed[/]; last: {bridge.last_error}")
        demo.compact_and_roll_up(lambda_log)
        demo.count_samples()
        demo.count_rollups_and_slices()
        console.print(_rollups_line(demo.outcome))
        demo.query_die_temperature()
        console.print(_role_query_line(demo.outcome))
        demo.outcome.fleet = demo.read_fleet()
        demo.outcome.report_path = write_report(demo, settings.report_path)
    return demo.outcome
