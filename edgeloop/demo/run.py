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
from collections.abc import Mapping
from typing import TextIO

from rich.console import Console

from edgeloop.demo import readback
from edgeloop.demo.gateways import DemoGateways, SimulatedTime
from edgeloop.demo.outcome import DemoFailed, DemoOutcome, progress_bars, wait_until
from edgeloop.demo.settings import DemoSettings
from edgeloop.schemas import ContextInterval, DeviceStatus, load_use_case, names

SIM_MARGIN_S = 15 * 60  # keeps every simulated (and predicted) timestamp in the past
LIVE_RESERVE_S = 4 * 3600  # simulated time the gateways may spend scoring while we train


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
        from edgeloop.device_shims.context_publishing import context_payloads
        from edgeloop.local.mqtt import connect_mqtt5

        for g in self.gateways.processes:
            lines = [line for line in g.context_file.read_text().splitlines() if line.strip()]
            intervals = [ContextInterval.model_validate_json(line) for line in lines]
            cert = runtime.certs[g.thing_name]
            with connect_mqtt5(runtime.broker.host, runtime.broker.port, cert, f"{g.thing_name}-context") as mqtt:
                for payload in context_payloads(intervals):  # within what the context function accepts
                    mqtt.publish(names.context_topic(g.thing_name), payload)

    def compact_and_roll_up(self, log: TextIO) -> None:
        """Compaction, then the rollups of what it rewrote, handed over as its success destination would."""
        from edgeloop.local.functions import compact_and_roll_up

        compact_and_roll_up(log, source="edgeloop.demo")

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
        """The pipeline's decision per line: train on all but the newest whole run(s), judge the candidate
        on them beside persistence and the setpoint (the evaluate step), register and approve only if it
        passed the gate. Returns the approval events of the registered lines."""
        from edgeloop.demo.gate import decision_lines, evaluate_line, split_lines
        from edgeloop.sagemaker_pipelines.steps.train import train_lines

        try:
            splits = split_lines(examples, self.use_case)
        except ValueError as exc:
            raise DemoFailed(f"{exc} (is history_hours long enough for two runs per line?)") from exc
        templates = ", ".join(t.value for t in self.use_case.training.templates)
        with self.console.status(f"training {len(examples)} models (one per line; searching {templates})"):
            trained = train_lines({line: train for line, (train, _) in splits.items()}, self.use_case, max_workers=2)
        with self.console.status("evaluating each candidate against persistence and the setpoint (the gate)"):
            for line_id, model in trained.items():
                train, reference = splits[line_id]
                self.outcome.evaluations[line_id] = evaluate_line(model, train, reference, self.use_case, line_id)
        with self.console.status("the oracle per line: the model's learner given the simulator's hidden state"):
            for line_id, model in trained.items():
                self._add_oracle(line_id, model, splits[line_id], examples[line_id])
        events = [
            self._register(line_id, trained[line_id]) for line_id, e in self.outcome.evaluations.items() if e.passed
        ]
        for evaluation, line in zip(self.outcome.evaluations.values(), decision_lines(self.outcome.evaluations)):
            self.console.print(f"[{'green' if evaluation.passed else 'red'}]gate[/] {line}")
        return events

    def _add_oracle(self, line_id: str, model, split: tuple, examples) -> None:
        """The oracle's figures beside the line's evaluation, from a replay of the line's simulator."""
        from edgeloop.demo.oracle import check_replay, oracle_figures, replay_hidden

        evaluation = self.outcome.evaluations[line_id]
        simulation = self.gateways.simulation(line_id)
        if simulation is None:
            evaluation.oracle_missing = "no simulated gateway of this line to replay"
            return
        try:
            hidden = replay_hidden(simulation)
            check_replay(hidden, examples, self.use_case, line_id)
            precision = evaluation.report.candidate.violation_precision
            evaluation.oracle = oracle_figures(model, *split, hidden, self.use_case, precision)
        except ValueError as exc:
            raise DemoFailed(f"the oracle of {line_id}: {exc}") from exc

    def _register(self, line_id: str, model) -> dict:
        from edgeloop.local.approval import approve_model
        from edgeloop.model_runtime.signing import load_private_key
        from edgeloop.sagemaker_pipelines.steps.export import export_model
        from edgeloop.sagemaker_pipelines.steps.registration import register_model

        signing_key = load_private_key(self.signing_keys().private_key_path)
        exported = export_model(
            model,
            model_id=f"{self.use_case.use_case}-{line_id}",
            version=self.settings.model_version,
            use_case=self.use_case.use_case,
            line_ids=[line_id],
            target=self.use_case.target_metric,
            signing_key=signing_key,
        )
        evaluation = self.outcome.evaluations[line_id]
        # with the evaluation, registration checks the gate again and the registry's metadata carries the baselines
        arn = register_model(
            exported, model_bucket=names.LOCAL_MODEL_BUCKET, signing_key=signing_key, evaluation=evaluation.report
        )
        event = approve_model(arn)
        evaluation.registered = True
        # the per-class figures shown are the reference run(s)' (the data the gate decided on)
        candidate = evaluation.report.candidate
        self.outcome.models[line_id] = readback.read_back_registration(
            line_id, arn, candidate, evaluation.rows_train + evaluation.report.reference.rows
        )
        self.outcome.rolled_out_things.add(self.settings.thing_name(line_id))
        return event

    def roll_out(self, approval_events: list[dict], log: TextIO) -> None:
        from edgeloop.local.functions import orchestrate

        for event in approval_events:
            orchestrate(log, event)
        wanted = self.outcome.rolled_out_things
        with progress_bars(self.console) as progress:
            task = progress.add_task("rollout (gateways on the new model)", total=len(wanted))
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
        on_new = {
            d.thing_name for d in fleet if d.status is DeviceStatus.APPLIED and d.current_model_version == version
        }
        show(len(on_new & self.outcome.rolled_out_things))
        return self.outcome.rolled_out_things <= on_new  # a refused line's gateways are not rolled out to

    # --- stage 4: read back what landed --------------------------------------------------------
    def score_live_accuracy(self, log: TextIO) -> None:
        """The live-accuracy function's round now: the simulated live period lies hours back, so every
        window's measurements have landed (the last compaction ran just before)."""
        from edgeloop.local.functions import live_accuracy_round

        live_accuracy_round(log, source="edgeloop.demo")

    def read_back(self) -> None:
        line_ids = self.settings.line_ids()
        readback.count_samples(self.outcome, line_ids)
        self.outcome.samples_sent = self.gateways.accepted_samples()
        readback.count_rollups_and_slices(self.outcome, line_ids)
        self.console.print(self.outcome.rollups_line())
        readback.query_die_temperature(self.outcome, self.settings.use_case, line_ids, self.workdir / "query-mirror")
        self.console.print(self.outcome.role_query_line())
        readback.read_monitoring(self.outcome, line_ids)
        self.console.print(self.outcome.monitoring_line())
        self.outcome.fleet = readback.read_fleet()


def run_demo(settings: DemoSettings, console: Console | None = None) -> DemoOutcome:
    # an explicit file keeps the console on the terminal while handler output is redirected
    console = console or Console(file=sys.stdout)
    return _run_demo(settings, console)


def _run_demo(settings: DemoSettings, console: Console) -> DemoOutcome:
    from edgeloop.demo.report import write_report
    from edgeloop.local.stack import LocalStack

    demo = DemoRun(settings, console)
    shutil.rmtree(demo.workdir, ignore_errors=True)
    demo.workdir.mkdir(parents=True)
    things = [settings.thing_name(line) for line in settings.line_ids()]
    # The stack `edgeloop local up` runs, without its schedule: the demo calls compaction and the
    # orchestrator itself, at the moments its stages need them.
    environment = {names.USE_CASE_ENV: demo.use_case.use_case, **settings.rollout_policy.environment()}
    with LocalStack(demo.workdir, things, schedule=None, environment=environment) as stack:
        runtime, bridge = stack.runtime, stack.bridge
        console.print(
            f"[green]local AWS[/] moto_server {runtime.moto.endpoint_url}  "
            f"[green]MQTT[/] mosquitto mTLS {runtime.broker.host}:{runtime.broker.port}"
        )
        try:
            _close_the_loop(demo, runtime, bridge, stack.lambda_log)
        finally:
            bridge.stop()
        demo.outcome.handler_failures = bridge.failed
        if bridge.failed:
            console.print(f"[red]{bridge.failed} handler invocations failed[/]; last: {bridge.last_error}")
        demo.compact_and_roll_up(stack.lambda_log)
        demo.score_live_accuracy(stack.lambda_log)
        demo.read_back()
        demo.outcome.report_path = write_report(demo.outcome, demo.use_case, settings.line_ids(), settings.report_path)
    return demo.outcome


def _close_the_loop(demo: DemoRun, runtime, bridge, lambda_log: TextIO) -> None:
    """History over MQTT -> storage -> training -> rollout -> live scoring, then the last context."""
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
        if events:  # a line whose model did not beat persistence ships nothing; none passed: no rollout
            demo.roll_out(events, lambda_log)
            demo.gateways.wait_for_live_predictions(demo.outcome.rolled_out_things)
        else:
            demo.console.print("[red]no line's model passed the gate: nothing is rolled out[/]")
    finally:
        demo.gateways.stop()
    demo.publish_context(runtime)  # the live period's runs too, so the report can draw their limits
    bridge.wait_idle(timeout=timeout_s)
