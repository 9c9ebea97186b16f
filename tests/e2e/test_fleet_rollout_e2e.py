"""Issue 7 end to end: 21 gateways of mixed architecture and runtime, a good rollout and a bad one.

One LocalRuntime (moto_server + mosquitto with mutual TLS). The gateways' model runners live in
three host processes (one per architecture), each device with its own certificate, MQTT
connection, announcement, update agent and simulated line (fleet_e2e_helpers.py says why).
The local bridge plays the IoT rules (announce -> device_registry, model-status -> status_intake);
the orchestrator handler gets the registry's approval events; the wave controller's round is
called here to play its schedule.

Rollout 1 (1.0.0, good): every compatible gateway applies it; the two armv7l gateways with an older
runtime are excluded and `why_not` says why (architecture for the fp32 tier, runtime for the
quantized one). Rollout 2 (2.0.0, bad: trained on micrometres, correctly signed): the canary
wave's health checks refuse it, the wave passes its failure threshold, the rollout is rolled back,
no other gateway ever receives it, and statuses and histories say why.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fleet_e2e_helpers import (
    LINE_ID,
    SITE,
    USE_CASE,
    HostConfig,
    HostedDeviceConfig,
    read_host_state,
    simulator_examples,
)

from edgeloop.model_runtime.model_format import RUNTIME_VERSION
from edgeloop.schemas import (
    Architecture,
    DeploymentRecord,
    DeploymentState,
    DeviceEvent,
    DeviceRecord,
    DeviceStatus,
    Precision,
    names,
)

pytestmark = pytest.mark.timeout(180)

HELPERS = Path(__file__).with_name("fleet_e2e_helpers.py")
MODEL_ID = f"{USE_CASE}-{LINE_ID}"
GOOD, BAD = "1.0.0", "2.0.0"
WAIT_S = 60.0

# (architecture, runtime version, how many): 8 x86_64, 8 aarch64, 5 armv7l. The extrusion use case's
# models (change-mode labels, process features) need the current runtime on every tier
# (model_format.min_runtime_version), so older runtimes can run none of them.
FLEET_MIX = [
    (Architecture.X86_64, RUNTIME_VERSION, 8),
    (Architecture.AARCH64, RUNTIME_VERSION, 8),
    (Architecture.ARMV7L, RUNTIME_VERSION, 3),
    (Architecture.ARMV7L, "1.2.0", 1),
    (Architecture.ARMV7L, "1.1.0", 1),
]
SHORT_ARCH = {Architecture.X86_64: "x86", Architecture.AARCH64: "arm64", Architecture.ARMV7L: "armv7"}
# The hardware policy of these models: bit-exact fp32 for the 64-bit gateways, the quantized tier
# (payload format v2) for every architecture.
FP32_ARCHITECTURES = [Architecture.X86_64, Architecture.AARCH64]


def _fleet() -> list[tuple[str, Architecture, str]]:
    fleet = []
    for architecture, runtime, count in FLEET_MIX:
        for _ in range(count):
            number = sum(1 for _, a, _ in fleet if a is architecture) + 1
            fleet.append((f"gw-{SHORT_ARCH[architecture]}-{number:02d}", architecture, runtime))
    return fleet


FLEET = _fleet()
INCOMPATIBLE = {t for t, a, r in FLEET if a is Architecture.ARMV7L and r != RUNTIME_VERSION}
COMPATIBLE = sorted({t for t, _, _ in FLEET} - INCOMPATIBLE)


def _wait_until(what: str, done: Callable[[], bool], timeout_s: float = WAIT_S, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


# --- the scenario ------------------------------------------------------------------------------------


class Scenario:
    """The running loop: runtime, bridge, host processes; what each rollout left behind."""

    def __init__(self, workdir: Path, runtime, lock: threading.Lock) -> None:
        from edgeloop.cloud.fleet.deployments import DeploymentTable
        from edgeloop.cloud.fleet.devices import DeviceTable
        from edgeloop.model_runtime.signing import write_key_pair

        self.workdir = workdir
        self.runtime = runtime
        self.lock = lock  # one handler at a time, as the bridge's single worker does (moto CAS is not atomic)
        self.devices = DeviceTable(names.LOCAL_DEVICE_TABLE)
        self.deployments = DeploymentTable(names.LOCAL_DEPLOYMENT_TABLE)
        self.keys = write_key_pair(workdir / "model-signing")
        self.hosts: list[tuple[HostConfig, object]] = []
        self.bridge = None  # the IotRuleBridge, once started
        self.rollouts: dict[str, DeploymentRecord] = {}  # by model version
        self.fleet_after_good: dict[str, DeviceRecord] = {}
        self.fleet_after_bad: dict[str, DeviceRecord] = {}
        self.final_states: dict[str, dict] = {}  # what each device's host says about it at the end
        self.handler_failures: tuple[int, str | None] = (0, None)
        self.sim_start_ms = (int(time.time()) - 6 * 3600) * 1000

    # hosts -------------------------------------------------------------------------------------
    def launch_hosts(self) -> None:
        for architecture in SHORT_ARCH:
            devices = [
                HostedDeviceConfig(
                    thing_name=thing,
                    architecture=arch,
                    runtime_version=runtime,
                    seed=index,
                    cert_path=self.runtime.certs[thing].cert_path,
                    key_path=self.runtime.certs[thing].key_path,
                    ca_path=self.runtime.certs[thing].ca_path,
                    state_dir=self.workdir / "devices" / thing,
                )
                for index, (thing, arch, runtime) in enumerate(FLEET)
                if arch is architecture
            ]
            home = self.workdir / f"host-{architecture.value}"
            home.mkdir(parents=True)
            config = HostConfig(
                devices=devices,
                broker_host=self.runtime.broker.host,
                broker_port=self.runtime.broker.device_port,
                model_signing_public_key=self.keys.public_key_b64,
                sim_start_ms=self.sim_start_ms,
                state_file=home / "state.json",
                stop_file=home / "stop",
            )
            (home / "config.json").write_text(config.model_dump_json())
            with open(home / "host.log", "ab") as output:
                process = subprocess.Popen(
                    [sys.executable, str(HELPERS), str(home / "config.json")],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self.hosts.append((config, process))

    def stop_hosts(self) -> None:
        for config, _ in self.hosts:
            config.stop_file.touch()
        for _, process in self.hosts:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:  # a host that ignores its stop file is killed, by its own pid
                process.kill()
                process.wait()

    def check_hosts_alive(self) -> None:
        for config, process in self.hosts:
            if process.poll() is not None:
                error = read_host_state(config.state_file).get("error", "")
                log = (config.state_file.parent / "host.log").read_text()[-3000:]
                raise AssertionError(
                    f"host {config.state_file.parent.name} exited ({process.returncode}): {error}\n{log}"
                )

    def device_states(self) -> dict[str, dict]:
        states: dict[str, dict] = {}
        for config, _ in self.hosts:
            states.update(read_host_state(config.state_file).get("devices", {}))
        return states

    # models --------------------------------------------------------------------------------------
    def register_and_approve(self, version: str, *, label_scale: float) -> dict:
        """Train on simulated line data, export fp32 + quantized signed payloads, register, approve."""
        from edgeloop.local.approval import approve_model
        from edgeloop.model_runtime.signing import load_private_key
        from edgeloop.sagemaker_pipelines.steps.export import export_model
        from edgeloop.sagemaker_pipelines.steps.registration import register_model
        from edgeloop.sagemaker_pipelines.steps.train import train_line_model
        from edgeloop.schemas import ModelTemplate, load_use_case

        examples = simulator_examples(3.0, seed=100, start_ms=self.sim_start_ms, label_scale=label_scale)
        use_case = load_use_case(USE_CASE)
        # tree ensembles: the quantized tier (the armv7l gateways' payload) exists for trees only
        training = use_case.training.model_copy(update={"templates": [ModelTemplate.XGBOOST]})
        trained = train_line_model(
            examples, use_case.model_copy(update={"training": training}), seed=0, candidates_per_template=1
        )
        exported = export_model(
            trained,
            model_id=MODEL_ID,
            version=version,
            use_case=USE_CASE,
            line_ids=[LINE_ID],
            target="cold_od_average",
            precisions=(Precision.FP32, Precision.QUANTIZED),
            signing_key=load_private_key(self.keys.private_key_path),
        )
        tiers = [
            t.model_copy(update={"architectures": FP32_ARCHITECTURES}) if t.precision is Precision.FP32 else t
            for t in exported.manifest.tiers
        ]
        exported = type(exported)(
            manifest=exported.manifest.model_copy(update={"tiers": tiers}), payloads=exported.payloads
        )
        with self.lock:
            signing_key = load_private_key(self.keys.private_key_path)
            return approve_model(
                register_model(exported, model_bucket=names.LOCAL_MODEL_BUCKET, signing_key=signing_key)
            )

    def orchestrate(self, approval_event: dict):
        from edgeloop.functions.orchestrator.handler import lambda_handler
        from edgeloop.local.bridge import LambdaContext

        with self.lock:
            result = lambda_handler(approval_event, LambdaContext(f"{names.PROJECT}-orchestrator"))
        return DeploymentRecord.model_validate(result)

    def wave_controller_round(self):
        """What the scheduled wave controller does every minute."""
        from edgeloop.functions.wave_controller.logic import run_round
        from edgeloop.local.delivery import LocalDelivery
        from edgeloop.schemas import RolloutPolicy

        delivery = LocalDelivery.from_environment()
        try:
            with self.lock:
                return run_round(
                    devices=self.devices,
                    deployments=self.deployments,
                    delivery=delivery,
                    now=datetime.now(UTC),
                    policy=RolloutPolicy(offline_silence_s=3600, wave_timeout_s=600),
                )
        finally:
            delivery.close()

    def wait_for_rollout(self, deployment_id: str, states: tuple[DeploymentState, ...]):
        def finished() -> bool:
            self.check_hosts_alive()
            self.wave_controller_round()
            return self.deployments.get(deployment_id).state in states

        _wait_until(f"rollout {deployment_id} to reach {[s.value for s in states]}", finished)
        self.bridge.wait_idle(timeout=WAIT_S)
        return self.deployments.get(deployment_id)

    def wait_for_canaries_to_settle(self, rollout) -> None:
        """A canary the rollback reached before it reported still answers: rejected, then the restore."""

        def settled() -> bool:
            self.check_hosts_alive()
            canaries = self.devices.get_many(rollout.waves[0].targets).values()
            return all(
                d.status is DeviceStatus.REJECTED
                or (d.status is DeviceStatus.ROLLED_BACK and "; restored " in d.reason)
                for d in canaries
            )

        _wait_until("the canaries of the failed rollout to settle", settled)
        self.bridge.wait_idle(timeout=WAIT_S)


def _locked(lock: threading.Lock, handler: Callable) -> Callable:
    def invoke(event: dict, context: object) -> object:
        with lock:
            return handler(event, context)

    return invoke


def _clear_cached_settings() -> None:
    """Handlers cache their settings per warm container; other tests may have warmed them on other tables."""
    from edgeloop.functions.device_registry import handler as registry
    from edgeloop.functions.orchestrator import handler as orchestrator
    from edgeloop.functions.status_intake import handler as status_intake

    for module in (registry, orchestrator, status_intake):
        module._settings.cache_clear()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from edgeloop.functions.device_registry.handler import lambda_handler as register_device
    from edgeloop.functions.status_intake.handler import lambda_handler as status_intake
    from edgeloop.local.bridge import IotRuleBridge
    from edgeloop.local.runtime import LocalRuntime

    workdir = tmp_path_factory.mktemp("fleet-e2e")
    lock = threading.Lock()
    routes = [r for r in names.IOT_ROUTES if r.function in ("device_registry", "status_intake")]
    handlers = {"device_registry": _locked(lock, register_device), "status_intake": _locked(lock, status_intake)}
    with LocalRuntime(workdir / "runtime", [t for t, _, _ in FLEET]) as runtime:
        _clear_cached_settings()
        scene = Scenario(workdir, runtime, lock)
        bridge = IotRuleBridge(runtime.broker.host, runtime.broker.port, runtime.cloud_cert, routes, handlers)
        scene.bridge = bridge.start()
        try:
            scene.launch_hosts()
            # train while the hosts start: 2 cores, and the devices need a moment to announce
            good_event = scene.register_and_approve(GOOD, label_scale=1.0)
            bad_event = scene.register_and_approve(BAD, label_scale=1000.0)  # micrometres: the injected fault

            def all_announced() -> bool:
                scene.check_hosts_alive()
                return len(scene.devices.scan_all()) == len(FLEET)

            _wait_until("every gateway to announce itself", all_announced)
            scene.bridge.wait_idle(timeout=WAIT_S)

            planned = scene.orchestrate(good_event)
            scene.rollouts[GOOD] = scene.wait_for_rollout(planned.deployment_id, (DeploymentState.SUCCEEDED,))
            scene.fleet_after_good = {d.thing_name: d for d in scene.devices.scan_all()}

            planned = scene.orchestrate(bad_event)
            scene.rollouts[BAD] = scene.wait_for_rollout(
                planned.deployment_id, (DeploymentState.ROLLED_BACK, DeploymentState.SUCCEEDED)
            )
            scene.wait_for_canaries_to_settle(scene.rollouts[BAD])
            # a few more scheduled rounds: nothing may move any more, and nothing more is delivered
            for _ in range(2):
                scene.wave_controller_round()
                time.sleep(1.0)
            scene.bridge.wait_idle(timeout=WAIT_S)
            scene.check_hosts_alive()
            scene.final_states = scene.device_states()
            scene.fleet_after_bad = {d.thing_name: d for d in scene.devices.scan_all()}
            scene.handler_failures = (bridge.failed, bridge.last_error)
            yield scene
        finally:
            scene.stop_hosts()
            bridge.stop()
            _clear_cached_settings()


# --- rollout 1: the good model --------------------------------------------------------------------------


def test_the_fleet_is_mixed_and_every_gateway_registered(scenario):
    fleet = scenario.fleet_after_good
    assert len(fleet) == len(FLEET) >= 20
    assert {d.architecture for d in fleet.values()} == set(Architecture)
    assert {d.runtime_version for d in fleet.values()} == {"1.1.0", "1.2.0", RUNTIME_VERSION}
    assert {(d.site, d.line_id) for d in fleet.values()} == {(SITE, LINE_ID)}
    for thing, architecture, runtime in FLEET:  # as each gateway announced itself over MQTT
        assert (fleet[thing].architecture, fleet[thing].runtime_version) == (architecture, runtime)
    assert scenario.handler_failures == (0, None)


def test_the_good_model_reaches_every_compatible_gateway(scenario):
    rollout = scenario.rollouts[GOOD]
    assert rollout.state is DeploymentState.SUCCEEDED, rollout.reason
    assert sorted(rollout.targets) == COMPATIBLE
    assert [w.state for w in rollout.waves] == [DeploymentState.SUCCEEDED] * len(rollout.waves)
    # a canary wave, then the rest, per cohort: fp32 for the 64-bit gateways, quantized for armv7l
    assert [(w.precision, len(w.targets)) for w in rollout.waves] == [
        (Precision.FP32, 2),
        (Precision.FP32, 14),
        (Precision.QUANTIZED, 1),
        (Precision.QUANTIZED, 2),
    ]
    for thing in COMPATIBLE:
        device = scenario.fleet_after_good[thing]
        assert device.status is DeviceStatus.APPLIED, (thing, device.reason)
        assert (device.current_model_id, device.current_model_version) == (MODEL_ID, GOOD), thing
        assert device.deployment_id == rollout.deployment_id
    armv7_precisions = {scenario.final_states[t]["precision"] for t in COMPATIBLE if "armv7" in t}
    assert armv7_precisions == {Precision.QUANTIZED.value}  # what the devices themselves run


def test_incompatible_gateways_are_excluded_and_why_not_says_why(scenario):
    from edgeloop.cloud.fleet.queries import WhyNotCategory, why_not

    rollout = scenario.rollouts[GOOD]
    assert {e.thing_name for e in rollout.excluded} == INCOMPATIBLE
    report = why_not(scenario.devices, scenario.deployments, GOOD)
    assert set(report.on_version) == set(COMPATIBLE)
    explained = {d.thing_name: d for d in report.devices}
    assert set(explained) == INCOMPATIBLE
    for thing in INCOMPATIBLE:
        runtime = next(r for t, _, r in FLEET if t == thing)
        entry = explained[thing]
        assert entry.category is WhyNotCategory.INCOMPATIBLE
        assert "architecture armv7l not in fp32 tier [x86_64, aarch64]" in entry.reason, entry.reason
        assert f"runtime {runtime} < {RUNTIME_VERSION} of quantized tier" in entry.reason, entry.reason
        assert scenario.final_states[thing]["received"] == []  # never sent anything


def test_the_why_not_cli_lists_the_incompatible_gateways(scenario):
    import json

    from typer.testing import CliRunner

    from edgeloop.cli import app

    result = CliRunner().invoke(app, ["fleet", "why-not", GOOD, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    listed = {d["thing_name"]: (d["category"], d["reason"]) for d in report["devices"]}
    assert set(listed) == INCOMPATIBLE
    for category, reason in listed.values():
        assert category == "incompatible" and "architecture armv7l not in fp32 tier" in reason


# --- rollout 2: the bad model -------------------------------------------------------------------------


def _canaries(rollout) -> list[str]:
    return rollout.waves[0].targets


def _counted_canaries(rollout) -> list[str]:
    """Canaries whose refusal the wave counted: the rollout's reason names them."""
    return [t for t in _canaries(rollout) if f"{t} rejected: " in rollout.reason]


def _late_canaries(rollout) -> list[str]:
    """Canaries still busy when the first refusal already passed the threshold (1 of 2 is 50% > 20%)."""
    return [t for t in _canaries(rollout) if t not in _counted_canaries(rollout)]


def test_the_bad_model_fails_its_canary_wave_and_the_rollout_is_rolled_back(scenario):
    rollout = scenario.rollouts[BAD]
    assert rollout.state is DeploymentState.ROLLED_BACK, rollout.reason
    assert [w.state for w in rollout.waves] == [DeploymentState.FAILED] + [DeploymentState.PLANNED] * (
        len(rollout.waves) - 1
    )
    assert len(_canaries(rollout)) == 2 and rollout.waves[0].precision is Precision.FP32
    counted = _counted_canaries(rollout)
    assert counted, rollout.reason
    share = f"{len(counted)}/2 failed ({len(counted) / 2:.0%} > threshold 20%)"
    assert rollout.reason.startswith(f"rollout {rollout.deployment_id} failed at wave 0 (fp32): {share}: ")
    for thing in counted:
        assert f"{thing} rejected: health check: prediction" in rollout.reason


def test_counted_canaries_refused_it_on_their_health_check_and_still_run_the_good_model(scenario):
    rollout = scenario.rollouts[BAD]
    for thing in _counted_canaries(rollout):
        device = scenario.fleet_after_bad[thing]
        assert device.status is DeviceStatus.REJECTED, thing
        assert device.deployment_id == rollout.deployment_id
        assert "health check: prediction" in device.reason and "is implausible next to recent" in device.reason
        assert (device.current_model_id, device.current_model_version) == (MODEL_ID, GOOD)
        state = scenario.final_states[thing]
        # the payload passed size, sha256 and signature checks; only the live health check refused it
        assert [u["version"] for u in state["received"]] == [GOOD, BAD]
        assert state["model_version"] == GOOD
        assert [r["status"] for r in state["reports"]] == ["applied", "rejected"]


def test_a_canary_the_rollback_reached_first_is_restored_and_ends_rolled_back(scenario):
    """The rollback restores rollout 1's model on every device it reached that had not reported."""
    rollout = scenario.rollouts[BAD]
    for thing in _late_canaries(rollout):
        device = scenario.fleet_after_bad[thing]
        assert device.status is DeviceStatus.ROLLED_BACK, (thing, device.reason)
        assert device.reason == f"{rollout.reason}; restored {MODEL_ID} {GOOD}"
        assert (device.current_model_version, device.desired_model_version) == (GOOD, GOOD)
        state = scenario.final_states[thing]
        restore = {"deployment_id": rollout.deployment_id, "version": GOOD, "precision": "fp32"}
        assert state["received"][1:] == [
            {"deployment_id": rollout.deployment_id, "version": BAD, "precision": "fp32"},
            restore,
        ]
        assert [(r["version"], r["status"]) for r in state["reports"]] == [
            (GOOD, "applied"),
            (BAD, "rejected"),
            (GOOD, "applied"),
        ]
        assert state["model_version"] == GOOD


def test_no_other_gateway_ever_received_the_bad_model(scenario):
    rollout = scenario.rollouts[BAD]
    canaries = set(_canaries(rollout))
    for thing, state in scenario.final_states.items():
        versions = [u["version"] for u in state["received"]]
        if thing in canaries:
            continue
        assert BAD not in versions, thing
        if thing in COMPATIBLE:
            assert versions == [GOOD] and state["model_version"] == GOOD, thing


def test_every_device_the_rollout_marked_is_released_on_the_good_model_with_the_rollout_named(scenario):
    rollout = scenario.rollouts[BAD]
    for thing in set(rollout.targets) - set(_canaries(rollout)):
        device = scenario.fleet_after_bad[thing]
        assert device.status is DeviceStatus.APPLIED, thing
        assert device.current_model_version == GOOD and device.desired_model_version == GOOD, thing
        assert device.deployment_id == rollout.deployment_id
        assert device.reason == rollout.reason, thing  # names the rollout, the wave and the canaries' failures
    for thing in INCOMPATIBLE:
        device = scenario.fleet_after_bad[thing]
        assert device.status is DeviceStatus.REGISTERED and device.current_model_version is None


def test_device_history_shows_the_sequence(scenario):
    from edgeloop.cloud.fleet.queries import device_history

    good, bad = scenario.rollouts[GOOD], scenario.rollouts[BAD]
    canary = _counted_canaries(bad)[0]
    oldest_first = list(reversed(device_history(scenario.devices, canary)))
    steps = [(e.event, e.status, e.deployment_id) for e in oldest_first]
    assert steps == [
        (DeviceEvent.REGISTERED, DeviceStatus.REGISTERED, None),
        (DeviceEvent.PENDING, DeviceStatus.PENDING, good.deployment_id),
        (DeviceEvent.APPLIED, DeviceStatus.APPLIED, good.deployment_id),
        (DeviceEvent.PENDING, DeviceStatus.PENDING, bad.deployment_id),
        (DeviceEvent.REJECTED, DeviceStatus.REJECTED, bad.deployment_id),
    ], steps
    assert "health check" in oldest_first[-1].reason
    assert oldest_first[-1].model_version == GOOD

    for late in _late_canaries(bad):
        history = list(reversed(device_history(scenario.devices, late)))
        assert [(e.status, e.deployment_id) for e in history[-5:]] == [
            (DeviceStatus.PENDING, bad.deployment_id),
            (DeviceStatus.ROLLED_BACK, bad.deployment_id),  # the rollback marks it, restoring 1.0.0
            (DeviceStatus.REJECTED, bad.deployment_id),  # its own health check, late
            (DeviceStatus.APPLIED, bad.deployment_id),  # the restored model confirmed
            (DeviceStatus.ROLLED_BACK, bad.deployment_id),
        ]
        assert history[-4].reason == f"{bad.reason}; restoring {MODEL_ID} {GOOD}"
        assert history[-1].reason == f"{bad.reason}; restored {MODEL_ID} {GOOD}"

    bystander = next(t for t in bad.targets if t not in _canaries(bad))
    history = list(reversed(device_history(scenario.devices, bystander)))
    assert [e.status for e in history] == [
        DeviceStatus.REGISTERED,
        DeviceStatus.PENDING,
        DeviceStatus.APPLIED,
        DeviceStatus.PENDING,
        DeviceStatus.APPLIED,
    ]
    released = history[-1]
    assert released.deployment_id == bad.deployment_id and released.reason == bad.reason
    assert released.model_version == GOOD


def test_why_not_explains_every_device_not_on_the_bad_version(scenario):
    from edgeloop.cloud.fleet.queries import WhyNotCategory, why_not

    bad = scenario.rollouts[BAD]
    report = why_not(scenario.devices, scenario.deployments, BAD)
    assert report.on_version == []
    categories = {d.thing_name: d.category for d in report.devices}
    assert len(categories) == len(FLEET)
    expected = {t: WhyNotCategory.ROLLOUT_STOPPED for t in bad.targets}
    expected.update({t: WhyNotCategory.REJECTED for t in _counted_canaries(bad)})
    expected.update({t: WhyNotCategory.ROLLED_BACK for t in _late_canaries(bad)})
    expected.update({t: WhyNotCategory.INCOMPATIBLE for t in INCOMPATIBLE})
    assert categories == expected
    stopped = next(d for d in report.devices if d.category is WhyNotCategory.ROLLOUT_STOPPED)
    assert stopped.reason.startswith(f"rollout {bad.deployment_id} rolled_back: ")
