"""One Greengrass component, imported from its built zip, under a fake nucleus: the device half of
test_greengrass_components_e2e.py.

    PYTHONPATH=<unzipped component artifact> python greengrass_e2e_device.py gateway|model_runner CONFIG.json

The component runs with the SDK's real `GreengrassCoreIPCClientV2` over an injected fake nucleus
(tests/ipc_fakes.py). The test drives it over stdin/stdout, one JSON command per line, one JSON
answer per line: `start`, `samples` (local pub/sub messages from sensors or the other component),
`merge` (a deployment's configuration merge, model runner only), `step` (one round of the main
loop at a simulated clock), `stop`. Every answer carries what the component published since the
last one: to IoT Core (topic, base64 payload) and to local pub/sub. Logs go to stderr.
"""

from __future__ import annotations

import base64
import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: ipc_fakes (no edgeloop imports)
# The test venv has edgeloop installed in editable mode (a meta path finder that maps it to the source
# tree); a gateway's venv has no edgeloop at all. Without that finder, a module missing from the zip
# fails to import here as it would on the gateway.
sys.meta_path[:] = [finder for finder in sys.meta_path if "__editable__" not in getattr(finder, "__module__", "")]

from ipc_fakes import FakeOperation, done  # noqa: E402

GATEWAY = "gateway"
MODEL_RUNNER = "model_runner"


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeNucleus:
    """The operations both components use, answered the way the nucleus answers them."""

    def __init__(self, component_name: str, configuration: dict) -> None:
        from awsiot.greengrasscoreipc import model

        self.model = model
        self.component_name = component_name
        self.configuration = configuration
        self.streams: dict[str, list[FakeOperation]] = {}
        self.iot: list[list[str]] = []
        self.local: list[list] = []

    def _new(self, kind: str, respond, stream_handler=None) -> FakeOperation:
        operation = FakeOperation(respond, stream_handler)
        self.streams.setdefault(kind, []).append(operation)
        return operation

    def new_subscribe_to_topic(self, stream_handler) -> FakeOperation:
        return self._new("topic", lambda r: done(self.model.SubscribeToTopicResponse()), stream_handler)

    def new_subscribe_to_configuration_update(self, stream_handler) -> FakeOperation:
        return self._new("config", lambda r: done(self.model.SubscribeToConfigurationUpdateResponse()), stream_handler)

    def new_get_configuration(self) -> FakeOperation:
        return self._new("get_configuration", self._get_configuration)

    def new_publish_to_iot_core(self) -> FakeOperation:
        def respond(request):
            self.iot.append([request.topic_name, base64.b64encode(bytes(request.payload)).decode()])
            return done(self.model.PublishToIoTCoreResponse())

        return self._new("publish_to_iot_core", respond)

    def new_publish_to_topic(self) -> FakeOperation:
        def respond(request):
            self.local.append([request.topic, request.publish_message.json_message.message])
            return done(self.model.PublishToTopicResponse())

        return self._new("publish_to_topic", respond)

    def new_update_state(self) -> FakeOperation:
        return self._new("update_state", lambda r: done(self.model.UpdateStateResponse()))

    def close(self):
        return done()

    def _get_configuration(self, request):
        node = self.configuration
        for key in request.key_path or []:
            if not isinstance(node, dict) or key not in node:
                return done(error=self.model.ResourceNotFoundError(message="Key not found"))
            node = node[key]
        value = node if isinstance(node, dict) else {request.key_path[-1]: node}
        return done(self.model.GetConfigurationResponse(component_name=self.component_name, value=value))

    def publish_local(self, message: dict) -> None:
        """A sensor adapter's samples: to the subscribers of the samples topic only (not the context one)."""
        from edgeloop.schemas import names

        event = self.model.SubscriptionResponseMessage(json_message=self.model.JsonMessage(message=message))
        for operation in self.streams.get("topic", []):
            if operation.request.topic == names.LOCAL_PUBSUB_SAMPLES_TOPIC:
                operation.stream_handler.on_stream_event(event)

    def merge(self, key: str, document: dict) -> None:
        """A deployment's configuration merge: the new value, then one event per changed key."""
        current = self.configuration.setdefault(key, {})
        changed = [k for k, v in document.items() if current.get(k) != v]
        current.update(document)
        for operation in self.streams.get("config", []):
            for changed_key in changed:
                operation.stream_handler.on_stream_event(
                    self.model.ConfigurationUpdateEvents(
                        configuration_update_event=self.model.ConfigurationUpdateEvent(
                            component_name=self.component_name, key_path=[key, changed_key]
                        )
                    )
                )

    def drain(self) -> dict:
        published, self.iot, local, self.local = self.iot, [], self.local, []
        return {"iot": published, "local": local}


def where_edgeloop_comes_from() -> dict:
    import edgeloop

    try:
        import edgeloop.functions  # noqa: F401 - the source tree has it, no component zip does

        source_tree_reachable = True
    except ImportError:
        source_tree_reachable = False
    return {"edgeloop": str(Path(edgeloop.__file__).resolve()), "source_tree_reachable": source_tree_reachable}


def build(kind: str, config: dict, nucleus: FakeNucleus, clock: SimulatedClock):
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    ipc = GreengrassCoreIPCClientV2(client=nucleus, executor=None)  # stream callbacks inline: deterministic
    if kind == MODEL_RUNNER:
        from edgeloop.greengrass_components.model_runner.component import GreengrassModelRunner, RunnerSettings

        settings = RunnerSettings(**config["settings"])
        return GreengrassModelRunner(settings, ipc, config_settle_s=0.5, clock=clock), ipc
    from edgeloop.greengrass_components.gateway.component import GreengrassGateway
    from edgeloop.greengrass_components.gateway.config import GatewayConfig

    return GreengrassGateway(GatewayConfig(**config["gateway"]), ipc), ipc


def state(kind: str, component) -> dict:
    if kind == MODEL_RUNNER:
        current = component.models.current
        return {
            "model_version": current.version if current else None,
            "deployment_id": current.deployment_id if current else None,
            "published_predictions": component.published_predictions,
            "periodic_statuses_sent": component.periodic_statuses_sent,
        }
    stats = component.publisher.stats()
    return {"published_batches": stats.published_batches, "published_samples": stats.published_samples}


def handle(kind: str, command: dict, component, nucleus: FakeNucleus, clock: SimulatedClock) -> None:
    op = command["op"]
    if op == "start":
        component.start()
    elif op == "samples":
        for message in command["messages"]:
            nucleus.publish_local(message)
    elif op == "merge":
        nucleus.merge(command["key"], command["document"])
    elif op == "step":
        clock.now = command["clock"]
        if kind == MODEL_RUNNER:
            component.step()
        else:
            component.publisher.publish_pending()
    elif op != "stop":
        raise ValueError(f"unknown op {op!r}")


def main(argv: list[str]) -> int:
    kind, config = argv[0], json.loads(Path(argv[1]).read_text())
    answers = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the answer channel
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    nucleus = FakeNucleus(config["component_name"], config.get("configuration", {}))
    clock = SimulatedClock()
    component, ipc = build(kind, config, nucleus, clock)
    answers.write(json.dumps({"ready": True, **where_edgeloop_comes_from()}) + "\n")
    answers.flush()
    for line in sys.stdin:
        command = json.loads(line)
        try:
            handle(kind, command, component, nucleus, clock)
            answer = {"ok": True, **nucleus.drain(), "state": state(kind, component)}
        except Exception as exc:  # reported to the test, which fails with it
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
        if command["op"] == "stop":
            component.close()
            ipc.close()
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
