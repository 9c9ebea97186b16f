"""The whole loop on one machine: simulated lines -> MQTT -> S3 -> training -> rollout -> scoring.

Every stage runs the project's real code: gateway processes with a durable buffer publish over
mutual TLS to mosquitto; the local bridge plays the IoT rules and calls the Lambda handlers;
moto_server plays S3, DynamoDB and the SageMaker model registry; training uses the pipeline's
step code; the orchestrator handler delivers a weight-only payload the gateways verify and score
with.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import TextIO

from rich.console import Console

from edgeloop.cloud.settings import temporary_environment
from edgeloop.demo import readback
from edgeloop.demo.gateways import DemoGateways, SimulatedTime
from edgeloop.demo.invocations import QUIET_LAMBDA_ENV, bridge_handlers, logging_to, success_destination_event
from edgeloop.demo.outcome import DemoFailed, DemoOutcome, progress_bars, wait_until
from edgeloop.demo.settings import DemoSettings
from edgeloop.schemas import DeviceStatus, load_use_case, names

SIM_MARGIN_S = 15 * 60  # keeps every simulated (and predicted) timestamp in the past
LIVE_RESERVE_S = 4 * 3600  # simulated time the gateways may spend scoring while we train
CONTEXT_PAYLOAD_BYTES = 96 * 1024  # below IoT Core's 128 KB per message


class DemoRun:
    """One demo run; each method is a stage of the loop."""

    def __init__(self, settings: DemoSettings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.use_case = load_use_case(settings.use_case)
        self.workdir = settings.workdir.resolve()
        self.outcome = DemoOutcome(model_version=settings.model_version)
        history_s = int(settings.history_hours * 3600)
        max_live_s = int(settings.live_minutes * 60) + LIVE_RESERVE_S
        now_s = int(time.time()) // 60 * 60
        clock = SimulatedTime((now_s - history_s - max_live_s - SIM_MARGIN_S) * 1000, history_s, max_live_s)
        self.gateways = DemoGateways(settings, self.use_case, console, clock)

    # --- stage 1: gateways publish their history over MQTT --------------------------------------
    def start_gateways(self, runtime) -> None:
        self.gateways.write_configs(runtime, self.workdir / "gateways", self.signing_keys().public_key_b64)
        self.gateways.launch()

    # --- stage 2: storage, context, rollups, labeled packs ----------------------------------------
    def publish_context(self, runtime) -> None:
        """Each gateway's context intervals, published on its context topic as that gateway.

        Its own certificate (the ACL confines it to edgeloop/<thing>/#), but a client id of its
        own, so the gateway process's session is not taken over. The bridge plays the IoT rule.
        """
        from edgeloop.local.mqtt import connect_mqtt5

        for g in self.gateways.processes:
            lines = [line for line in g.context_file.read_text().splitlines() if line.strip()]
            cert = runtime.certs[g.thing_name]
            with connect_mqtt5(runtime.broker.host, runtime.broker.port, cert, f"{g.thing_name}-context") as mqtt:
                for payload in json_list_payloads(lines, CONTEXT_PAYLOAD_BYTES):
                    mqtt.publish(names.context_topic(g.thing_name), payload)

    def compact_and_roll_up(self, log: TextIO) -> None:
        """Compaction, then the rollups of what it rewrote, handed over as its success destination would."""
        from edgeloop.functions.compaction.handler import lambda_handler as compaction
        from edgeloop.functions.rollups.handler import lambda_handler as rollups
        from edgeloop.local.bridge import LambdaContext

        compaction_context = LambdaContext(f"{names.PROJECT}-compaction")
        request = {"source": "edgeloop.demo", "detail-type": "Scheduled Event", "detail": {}}
        result = logging_to(log, compaction)(request, compaction_context)
        logging_to(log, rollups)(
            success_destination_event(compaction_context, request, result), LambdaContext(f"{names.PROJECT}-rollups")
        )

    def build_examples(self) -> dict:
        from edgeloop.cloud.packing.examples import build_line_examples

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
        from edgeloop.local.approval import approve_model
        from edgeloop.model_runtime.signing import load_private_key
        from edgeloop.sagemaker_pipelines.steps.export import export_model
        from edgeloop.sagemaker_pipelines.steps.registration import register_model
        from edgeloop.sagemaker_pipelines.steps.train import train_lines

        templates = ", ".join(t.value for t in self.use_case.training.templates)
        with self.console.status(f"training {len(examples)} models (one per line; searching {templates})"):
            trained = train_lines(dict(examples), self.use_case, max_workers=2)
        signing_key = load_private_key(self.signing_keys().private_key_path)
        events = []
        for line_id, model in trained.items():
            exported = export_model(
                model,
                model_id=f"{self.use_case.use_case}-{line_id}",
                version=self.settings.model_version,
                use_case=self.use_case.use_case,
                line_ids=[line_id],
                target=self.use_case.target_metric,
                signing_key=signing_key,
            )
            arn = register_model(exported, model_bucket=names.LOCAL_MODEL_BUCKET, signing_key=signing_key)
            events.append(approve_model(arn))
            line_model = readback.read_back_registration(line_id, arn, model.metrics, len(examples[line_id]))
            self.outcome.models[line_id] = line_model
        return events

    def roll_out(self, approval_events: list[dict], lambda_context, log: TextIO) -> None:
        from edgeloop.functions.orchestrator.handler import lambda_handler

        orchestrate = logging_to(log, lambda_handler)
        for event in approval_events:
            orchestrate(event, lambda_context)
        with progress_bars(self.console) as progress:
            task = progress.add_task("rollout (gateways on the new model)", total=len(self.gateways.processes))
            wait_until(
                "every gateway to report the new model",
                lambda: self._rollout_done(lambda done: progress.update(task, completed=done)),
                self.settings.timeout_s,
            )

    def _rollout_done(self, show) -> bool:
        self.gateways.check_alive()
        fleet = readback.read_fleet()
        failed = [d for d in fleet if d.status in (DeviceStatus.REJECTED, DeviceStatus.ROLLED_BACK)]
        if failed:
            raise DemoFailed(f"rollout failed on {[(d.thing_name, d.reason) for d in failed]}")
        version = self.settings.model_version
        done = sum(1 for d in fleet if d.status is DeviceStatus.APPLIED and d.current_model_version == version)
        show(done)
        return done == len(self.gateways.processes)

    # --- stage 4: read back what landed --------------------------------------------------------
    def read_back(self) -> None:
        line_ids = self.settings.line_ids()
        readback.count_samples(self.outcome, line_ids)
        self.outcome.samples_sent = self.gateways.accepted_samples()
        readback.count_rollups_and_slices(self.outcome, line_ids)
        self.console.print(self.outcome.rollups_line())
        readback.query_die_temperature(self.outcome, self.settings.use_case, line_ids, self.workdir / "query-mirror")
        self.console.print(self.outcome.role_query_line())
        self.outcome.fleet = readback.read_fleet()


def json_list_payloads(json_documents: list[str], max_bytes: int) -> Iterator[bytes]:
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


def run_demo(settings: DemoSettings, console: Console | None = None) -> DemoOutcome:
    # an explicit file keeps the console on the terminal while handler output is redirected
    console = console or Console(file=sys.stdout)
    environment = {**QUIET_LAMBDA_ENV, **settings.rollout_policy.environment()}
    with temporary_environment(environment), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        return _run_demo(settings, console)


def _run_demo(settings: DemoSettings, console: Console) -> DemoOutcome:
    from edgeloop.demo.report import write_report
    from edgeloop.local.bridge import IotRuleBridge
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
        bridge = IotRuleBridge(
            runtime.broker.host, runtime.broker.port, runtime.cloud_cert, handlers=bridge_handlers(lambda_log)
        )
        bridge.start()
        try:
            _close_the_loop(demo, runtime, bridge, lambda_log)
        finally:
            bridge.stop()
        demo.outcome.handler_failures = bridge.failed
        if bridge.failed:
            console.print(f"[red]{bridge.failed} handler invocations failed[/]; last: {bridge.last_error}")
        demo.compact_and_roll_up(lambda_log)
        demo.read_back()
        demo.outcome.report_path = write_report(demo.outcome, demo.use_case, settings.line_ids(), settings.report_path)
    return demo.outcome


def _close_the_loop(demo: DemoRun, runtime, bridge, lambda_log: TextIO) -> None:
    """History over MQTT -> storage -> training -> rollout -> live scoring, then the last context."""
    from edgeloop.local.bridge import LambdaContext

    timeout_s = demo.settings.timeout_s
    demo.start_gateways(runtime)
    try:
        demo.gateways.wait_for_history()
        demo.publish_context(runtime)
        bridge.wait_idle(timeout=timeout_s)
        with demo.console.status("compacting raw data into curated Parquet, rolling up; building metric packs"):
            demo.compact_and_roll_up(lambda_log)
            examples = demo.build_examples()
        events = demo.train_register_approve(examples)
        demo.roll_out(events, LambdaContext(f"{names.PROJECT}-orchestrator"), lambda_log)
        demo.gateways.wait_for_live_predictions()
    finally:
        demo.gateways.stop()
    demo.publish_context(runtime)  # the live period's runs too, so the report can draw their limits
    bridge.wait_idle(timeout=timeout_s)
