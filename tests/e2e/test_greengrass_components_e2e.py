"""The Greengrass components from their built zips, under a fake nucleus, against the cloud functions.

Both components of two gateways run as processes of their own, each with PYTHONPATH set to its
unzipped artifact only (as the recipes' run scripts do), never the source tree, and with the
SDK's real GreengrassCoreIPCClientV2 over a fake nucleus (greengrass_e2e_device.py). This test
plays the rest of the device and AWS on a simulated clock, one minute per round: sensor samples
on local pub/sub, the IoT rules (IoT Core publishes -> registry / status intake; a lifecycle
"connected" event when a nucleus connects), the scheduled wave controller, and Greengrass: the
real GreengrassDelivery runs against moto's IoT registry, and each CreateDeployment it makes is
carried out by merging its configuration update into the members' model runners. moto_server
serves S3, DynamoDB, IoT and the model registry to this process and to the model runners (their
payload downloads).

Gateway 1 is there before the model is approved and gets it from the rollout; gateway 2 is
installed after the approval and gets it by enrollment, with a history that says so. Both score,
and for 30 simulated minutes their periodic statuses keep last_seen fresh and nobody is OFFLINE.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from fleet_e2e_helpers import simulator_config
from greengrass_e2e_model import VERSION, register_approved_model

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.greengrass_components.build import build_components
from edgeloop.model_runtime.model_format import RUNTIME_VERSION
from edgeloop.schemas import DeviceEvent, DeviceStatus, IotRuleEvent, names
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.model import architecture_of_machine
from edgeloop.schemas.prediction import decode_alert, decode_prediction_payload

pytestmark = pytest.mark.timeout(240)

DEVICE_SCRIPT = Path(__file__).resolve().parent / "greengrass_e2e_device.py"
FIRST, LATE = "gw-gg-1", "gw-gg-2"
VERSIONS = {"gateway": "0.1.0", "model_runner": "0.1.0"}
APPROVE_AT, LATE_JOINS_AT, LIVE_MINUTES = 8, 10, 30
STEP_S = 60


def _build_and_unzip(workdir: Path) -> dict[str, Path]:
    """Each component's artifact, built by build.py and unzipped as the nucleus does."""
    unzipped = {}
    for artifact in build_components(workdir / "build"):
        if artifact.suffix != ".zip":
            continue
        target = workdir / "artifacts" / artifact.stem
        with zipfile.ZipFile(artifact) as archive:
            archive.extractall(target)
        unzipped[artifact.stem] = target
    return {
        "gateway": unzipped[names.GATEWAY_COMPONENT],
        "model_runner": unzipped[names.MODEL_RUNNER_COMPONENT],
    }


class Component:
    """One component process; `send` returns its answer (what it published, its state)."""

    def __init__(self, kind: str, thing: str, artifact: Path, workdir: Path, env: dict[str, str]) -> None:
        self.kind, self.thing = kind, thing
        config = {"component_name": names.MODEL_RUNNER_COMPONENT if kind == "model_runner" else names.GATEWAY_COMPONENT}
        if kind == "model_runner":
            config["configuration"] = {names.MODEL_UPDATE_CONFIG_KEY: {}}
            config["settings"] = {
                "thing_name": thing,
                "work_dir": str(workdir / thing / "runner"),
                "line_id": "line-1",
                "use_case": "extrusion",
                "runtime_version": RUNTIME_VERSION,
                "prediction_flush_max_latency_s": 0,  # each prediction's batch goes on the step that made it
            }
        else:
            config["gateway"] = {
                "thing_name": thing,
                "site": "plant-a",
                "line_id": "line-1",
                "use_case": "extrusion",
                "architecture": architecture_of_machine(),
                "runtime_version": RUNTIME_VERSION,
                "transport": "greengrass",
                "buffer_path": str(workdir / thing / "buffer.sqlite"),
                "flush": {"max_latency_s": 0},  # the "step" op publishes what was delivered at once
            }
        config_path = workdir / f"{thing}-{kind}.json"
        config_path.write_text(json.dumps(config))
        self.stderr = (workdir / f"{thing}-{kind}.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(DEVICE_SCRIPT), kind, str(config_path)],
            cwd=workdir,  # not the repository: nothing but PYTHONPATH may provide edgeloop
            env={**env, "PYTHONPATH": str(artifact)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.origin = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.thing} {self.kind} exited: see {self.stderr.name}")
        return json.loads(line)

    def send(self, op: str, **fields) -> dict:
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if not answer["ok"]:
            raise RuntimeError(f"{self.thing} {self.kind} failed on {op}: {answer['error']}\n{answer['trace']}")
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("stop")
                self.process.wait(timeout=10)
            except Exception:  # noqa: BLE001 - a process that does not stop is killed
                self.process.kill()
        self.stderr.close()


class FakeGreengrass:
    """greengrassv2 (absent from moto): CreateDeployment is recorded; the test carries it out."""

    def __init__(self) -> None:
        self.deployments: list[dict] = []

    def create_deployment(self, **request) -> dict:
        from botocore.session import get_session
        from botocore.validate import validate_parameters

        # What AWS would refuse must fail here too: the request is checked against botocore's model.
        model = get_session().get_service_model("greengrassv2").operation_model("CreateDeployment")
        validate_parameters(request, model.input_shape)
        self.deployments.append(request)
        return {"deploymentId": f"gg-{len(self.deployments)}"}


class World:
    """AWS and the rest of the devices, on a simulated clock of one minute per round."""

    def __init__(self, workdir: Path, artifacts: dict[str, Path], env: dict[str, str]) -> None:
        from datetime import datetime

        from edgeloop.cloud.fleet.delivery import GreengrassDelivery
        from edgeloop.cloud.fleet.deployments import DeploymentTable
        from edgeloop.cloud.fleet.devices import DeviceTable
        from edgeloop.functions.device_registry.handler import lambda_handler as registry
        from edgeloop.functions.status_intake.handler import lambda_handler as status_intake

        self.workdir, self.artifacts, self.env = workdir, artifacts, env
        self.start = datetime.now(UTC).replace(second=0, microsecond=0)
        self.minute = 0
        self.registry, self.status_intake = registry, status_intake
        self.devices_table = DeviceTable(names.LOCAL_DEVICE_TABLE)
        self.deployments_table = DeploymentTable(names.LOCAL_DEPLOYMENT_TABLE)
        self.greengrass = FakeGreengrass()
        self.delivery = GreengrassDelivery(
            self.greengrass,
            gateway_component_version=VERSIONS["gateway"],
            model_runner_component_version=VERSIONS["model_runner"],
            iot_client=boto3.client("iot"),
        )
        self.carried_out = 0
        self.components: dict[str, dict[str, Component]] = {}
        self.simulators: dict[str, ExtrusionLineSimulator] = {}
        self.installed_at: dict[str, int] = {}
        self.telemetry = {FIRST: 0, LATE: 0}
        self.periodic = {FIRST: 0, LATE: 0}
        self.predictions: dict[str, list] = {FIRST: [], LATE: []}  # PredictionMessages sent to IoT Core
        self.alerts: dict[str, list] = {FIRST: [], LATE: []}
        self.registrations: dict[str, dict] = {}
        self.offline: list[tuple[int, str]] = []
        self.staleness_s: dict[str, list[float]] = {FIRST: [], LATE: []}
        self.models: dict[str, list] = {FIRST: [], LATE: []}

    @property
    def now(self):
        return self.start + timedelta(minutes=self.minute)

    def _event(self, topic: str, payload: bytes) -> dict:
        return IotRuleEvent.from_message(topic, payload, int(self.now.timestamp() * 1000)).model_dump()

    def install(self, thing: str, seed: int) -> None:
        """A new core device: its thing, both components started, its nucleus connected."""
        boto3.client("iot").create_thing(thingName=thing)
        start_ms = int(self.now.timestamp() * 1000)
        # One product on every line (fleet_e2e_helpers): the model trained on it is plausible on all.
        self.simulators[thing] = ExtrusionLineSimulator(
            "line-1", seed=seed, start_ms=start_ms, config=simulator_config()
        )
        self.installed_at[thing] = self.minute
        self.components[thing] = {
            kind: Component(kind, thing, self.artifacts[kind], self.workdir, self.env)
            for kind in ("model_runner", "gateway")
        }
        for component in self.components[thing].values():
            self.route(thing, component.send("start"))
        connected = {
            "clientId": thing,
            "timestamp": int(self.now.timestamp() * 1000),
            "eventType": "connected",
            "sessionIdentifier": f"session-{thing}",
            "principalIdentifier": "cert-id",
            "versionNumber": 1,
        }
        topic = names.presence_topic("connected", thing)
        self.registry(self._event(topic, json.dumps(connected).encode()), None)

    def route(self, thing: str, answer: dict) -> None:
        """Play the IoT rules for what a component published, and local pub/sub between its components."""
        for topic, payload_b64 in answer["iot"]:
            payload = base64.b64decode(payload_b64)
            if topic == names.announce_topic(thing):
                self.registrations[thing] = self.registry(self._event(topic, payload), None)
            elif topic == names.model_status_topic(thing):
                if json.loads(payload).get("kind") == "periodic":
                    self.periodic[thing] += 1
                self.status_intake(self._event(topic, payload), None)
            elif topic == names.telemetry_topic(thing):
                self.telemetry[thing] += 1
            elif topic == names.prediction_topic(thing):
                self.predictions[thing].extend(decode_prediction_payload(payload).predictions)
            elif topic == names.alert_topic(thing):
                self.alerts[thing].append(decode_alert(payload))
            else:
                raise AssertionError(f"{thing} published on {topic!r}")
        predictions = [message for topic, message in answer["local"] if topic == names.LOCAL_PUBSUB_SAMPLES_TOPIC]
        if predictions:
            self.route(thing, self.components[thing]["gateway"].send("samples", messages=predictions))
        self.carry_out_deployments()

    def carry_out_deployments(self) -> None:
        """What Greengrass does with a CreateDeployment: each member of the target group gets the merge."""
        iot = boto3.client("iot")
        while self.carried_out < len(self.greengrass.deployments):
            request = self.greengrass.deployments[self.carried_out]
            self.carried_out += 1
            group = request["targetArn"].split(":thinggroup/", 1)[1]
            components = request["components"]
            assert components[names.GATEWAY_COMPONENT] == {"componentVersion": VERSIONS["gateway"]}
            merge = json.loads(components[names.MODEL_RUNNER_COMPONENT]["configurationUpdate"]["merge"])
            for member in iot.list_things_in_thing_group(thingGroupName=group)["things"]:
                runner = self.components[member]["model_runner"]
                key = names.MODEL_UPDATE_CONFIG_KEY
                self.route(member, runner.send("merge", key=key, document=merge[key]))

    def approve(self) -> str:
        from edgeloop.functions.orchestrator.logic import start_rollout

        arn = register_approved_model(self.now)
        event = {
            "detail-type": names.MODEL_PACKAGE_STATE_CHANGE,
            "source": names.MODEL_PACKAGE_EVENT_SOURCE,
            "detail": {"ModelPackageArn": arn, "ModelApprovalStatus": "Approved"},
        }
        start_rollout(
            event,
            devices=self.devices_table,
            deployments=self.deployments_table,
            delivery=self.delivery,
            model_bucket=names.LOCAL_MODEL_BUCKET,
            now=self.now,
        )
        self.carry_out_deployments()
        return arn

    def tick(self) -> None:
        """One simulated minute: a minute of samples, a round of each component, the wave controller."""
        from edgeloop.functions.wave_controller.logic import run_round
        from edgeloop.schemas import RolloutPolicy

        self.minute += 1
        for thing, components in self.components.items():
            message = {"samples": [list(s) for s in self.simulators[thing].advance(STEP_S)]}
            for component in components.values():
                self.route(thing, component.send("samples", messages=[message]))
            clock = (self.minute - self.installed_at[thing]) * float(STEP_S)
            for component in components.values():
                answer = component.send("step", clock=clock)
                self.route(thing, answer)
                if component.kind == "model_runner":
                    self.models[thing].append(answer["state"])
        result = run_round(
            devices=self.devices_table,
            deployments=self.deployments_table,
            delivery=self.delivery,
            now=self.now,
            policy=RolloutPolicy(),
        )
        self.offline += [(self.minute, thing) for thing in result.marked_offline]
        for thing in self.components:
            record = self.devices_table.get(thing)
            self.staleness_s[thing].append((self.now - record.last_seen).total_seconds())

    def stop(self) -> None:
        for components in self.components.values():
            for component in components.values():
                component.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    from edgeloop.cloud.aws import reset_clients
    from edgeloop.cloud.fleet import rollout_context
    from edgeloop.local.aws import create_local_resources
    from edgeloop.local.ports import LOOPBACK, free_port

    workdir = tmp_path_factory.mktemp("greengrass-e2e")
    port = free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    endpoint = f"http://{LOOPBACK}:{port}"
    environment = {
        "AWS_ENDPOINT_URL": endpoint,
        names.DEVICE_TABLE_ENV: names.LOCAL_DEVICE_TABLE,
        names.DEPLOYMENT_TABLE_ENV: names.LOCAL_DEPLOYMENT_TABLE,
        names.MODEL_BUCKET_ENV: names.LOCAL_MODEL_BUCKET,
        names.DELIVERY_ENV: "greengrass",
        names.GATEWAY_COMPONENT_VERSION_ENV: VERSIONS["gateway"],
        names.MODEL_RUNNER_COMPONENT_VERSION_ENV: VERSIONS["model_runner"],
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in environment.items():
            patch.setenv(variable, value)
        reset_clients()
        create_local_resources()
        world = World(workdir, _build_and_unzip(workdir), {**os.environ})
        patch.setattr(rollout_context, "delivery_from_settings", lambda settings: world.delivery)
        try:
            _play(world)
            yield world
        finally:
            world.stop()
            reset_clients()
            server.stop()


def _play(world: World) -> None:
    world.install(FIRST, seed=3)
    while world.minute < APPROVE_AT:
        world.tick()
    world.arn = world.approve()
    while world.minute < LATE_JOINS_AT:
        world.tick()
    world.install(LATE, seed=5)
    while world.minute < LATE_JOINS_AT + LIVE_MINUTES:
        world.tick()


def test_the_components_run_from_their_zips_not_from_the_source_tree(world):
    for thing, components in world.components.items():
        for kind, component in components.items():
            origin = component.origin
            assert origin["edgeloop"].startswith(str(world.artifacts[kind])), (thing, kind, origin)
            assert origin["source_tree_reachable"] is False


def test_the_gateway_present_at_approval_gets_the_model_from_the_rollout(world):
    from edgeloop.cloud.fleet.planning import deployment_id_for

    record = world.devices_table.get(FIRST)
    assert (record.status, record.current_model_version) == (DeviceStatus.APPLIED, VERSION), record.reason
    assert record.deployment_id == deployment_id_for(world.arn)
    assert world.models[FIRST][-1]["model_version"] == VERSION


def test_a_gateway_added_after_approval_is_enrolled_with_a_history_saying_why(world):
    registration = world.registrations[LATE]
    assert registration["created"] and registration["enrollment"].startswith("enrollment: ")
    record = world.devices_table.get(LATE)
    assert (record.status, record.current_model_version) == (DeviceStatus.APPLIED, VERSION), record.reason
    assert record.deployment_id == registration["enrollment_deployment_id"]
    history = world.devices_table.history(LATE)
    events = [entry.event for entry in reversed(history)]
    assert events[:3] == [DeviceEvent.REGISTERED, DeviceEvent.ENROLLED, DeviceEvent.APPLIED]
    (enrolled,) = [entry for entry in history if entry.event is DeviceEvent.ENROLLED]
    assert "enrollment" in enrolled.reason and VERSION in enrolled.reason and world.arn in enrolled.reason
    assert world.models[LATE][-1]["model_version"] == VERSION
    assert world.deployments_table.get(record.deployment_id).state.value == "succeeded"


def test_both_gateways_score_and_upload(world):
    for thing in (FIRST, LATE):
        assert world.models[thing][-1]["published_predictions"] > 0
        assert world.telemetry[thing] > 0
        # each prediction also goes out as its own message, from the model the rollout installed
        messages = world.predictions[thing]
        assert len(messages) == world.models[thing][-1]["published_predictions"], thing
        assert {(m.model.version, m.line_id) for m in messages[-3:]} == {
            (world.models[thing][-1]["model_version"], "line-1")
        }


def test_last_seen_stays_fresh_for_30_simulated_minutes_and_nobody_goes_offline(world):
    assert world.offline == []
    interval = names.DEFAULT_STATUS_INTERVAL_S
    for thing in (FIRST, LATE):
        last_30 = world.staleness_s[thing][-LIVE_MINUTES:]
        assert len(last_30) == LIVE_MINUTES and max(last_30) <= interval + STEP_S, (thing, last_30)
        assert world.periodic[thing] >= LIVE_MINUTES * 60 // interval - 1
        assert DeviceEvent.OFFLINE not in {entry.event for entry in world.devices_table.history(thing)}
        record = world.devices_table.get(thing)
        assert record.connection is not None and record.connection.connected
