"""The ModelRunner Greengrass component through the SDK's real V2 IPC client, with the nucleus faked.

The fake nucleus implements the operations the component uses the way the Greengrass nucleus
answers them (GetConfiguration on a map key returns the map; a merge fires one configuration
event per changed key). Payloads are real: a small XGBoost booster exported with the pipeline's
export step, served from moto's S3.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import os
import signal
import threading

import boto3
import pytest
import xgboost as xgb
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import (
    QOS,
    BinaryMessage,
    ConfigurationUpdateEvent,
    ConfigurationUpdateEvents,
    GetConfigurationResponse,
    JsonMessage,
    PublishToIoTCoreResponse,
    PublishToTopicResponse,
    ReceiveMode,
    ReportedLifecycleState,
    ResourceNotFoundError,
    ServiceError,
    SubscribeToConfigurationUpdateResponse,
    SubscribeToTopicResponse,
    SubscriptionResponseMessage,
    UpdateStateResponse,
)
from ipc_fakes import FakeOperation, done
from moto import mock_aws
from simulated_line_data import live_window_booster

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.greengrass_components.model_runner.component import (
    GreengrassModelRunner,
    RunnerSettings,
    samples_from_event,
    settings_from_env,
    update_from_configuration,
)
from edgeloop.sagemaker_pipelines.steps.artifacts import payload_key
from edgeloop.sagemaker_pipelines.steps.export import payload_from_booster
from edgeloop.schemas import (
    AlertEvent,
    DeviceStatus,
    IotRuleEvent,
    ModelStatusReport,
    ModelUpdate,
    PeriodicStatus,
    Precision,
    PredictionBatch,
    PredictionMessage,
    feature_schema_hash,
    load_use_case,
    names,
)
from edgeloop.schemas.prediction import decode_prediction_batch

pytestmark = pytest.mark.timeout(60)

USE_CASE = load_use_case("extrusion")
THING = "gw-line-1"
START_MS = 1_767_225_600_000
MODEL_ID = "extrusion-line-1"
BUCKET = names.LOCAL_MODEL_BUCKET
COMPONENT = names.MODEL_RUNNER_COMPONENT
USE_CASE_HASH = feature_schema_hash(USE_CASE.feature_names)


# --- the fake nucleus ----------------------------------------------------------------------------


class FakeNucleus:
    """Stands in for awsiot.greengrasscoreipc.client.GreengrassCoreIPCClient."""

    def __init__(self, configuration: dict | None = None) -> None:
        self.configuration = configuration if configuration is not None else {names.MODEL_UPDATE_CONFIG_KEY: {}}
        self.operations: dict[str, list[FakeOperation]] = {}
        self.iot_core_outcome = lambda: done(PublishToIoTCoreResponse())

    def _new(self, kind: str, respond, stream_handler=None) -> FakeOperation:
        operation = FakeOperation(respond, stream_handler)
        self.operations.setdefault(kind, []).append(operation)
        return operation

    def requests(self, kind: str) -> list:
        return [op.request for op in self.operations.get(kind, [])]

    # operations the component calls
    def new_subscribe_to_topic(self, stream_handler) -> FakeOperation:
        return self._new("subscribe_to_topic", lambda r: done(SubscribeToTopicResponse()), stream_handler)

    def new_subscribe_to_configuration_update(self, stream_handler) -> FakeOperation:
        return self._new(
            "subscribe_to_configuration_update",
            lambda r: done(SubscribeToConfigurationUpdateResponse()),
            stream_handler,
        )

    def new_get_configuration(self) -> FakeOperation:
        return self._new("get_configuration", self._get_configuration)

    def new_publish_to_iot_core(self) -> FakeOperation:
        return self._new("publish_to_iot_core", lambda r: self.iot_core_outcome())

    def new_publish_to_topic(self) -> FakeOperation:
        return self._new("publish_to_topic", lambda r: done(PublishToTopicResponse()))

    def new_update_state(self) -> FakeOperation:
        return self._new("update_state", lambda r: done(UpdateStateResponse()))

    def close(self) -> concurrent.futures.Future:
        return done()

    def _get_configuration(self, request) -> concurrent.futures.Future:
        node = self.configuration
        for key in request.key_path or []:
            if not isinstance(node, dict) or key not in node:
                return done(error=ResourceNotFoundError(message="Key not found"))
            node = node[key]
        # the nucleus answers a map with the map itself and a leaf with {key: value}
        value = node if isinstance(node, dict) else {request.key_path[-1]: node}
        return done(GetConfigurationResponse(component_name=COMPONENT, value=value))

    # what the rest of the device does
    def merge_model_update(self, document: dict) -> None:
        """A deployment's configuration merge: new values, then one event per changed key."""
        current = self.configuration.setdefault(names.MODEL_UPDATE_CONFIG_KEY, {})
        changed = [key for key, value in document.items() if current.get(key) != value]
        current.update(document)
        for operation in self.operations.get("subscribe_to_configuration_update", []):
            for key in changed:
                operation.stream_handler.on_stream_event(
                    ConfigurationUpdateEvents(
                        configuration_update_event=ConfigurationUpdateEvent(
                            component_name=COMPONENT, key_path=[names.MODEL_UPDATE_CONFIG_KEY, key]
                        )
                    )
                )

    def publish_local(
        self, message: SubscriptionResponseMessage, topic: str = names.LOCAL_PUBSUB_SAMPLES_TOPIC
    ) -> None:
        for operation in self.operations.get("subscribe_to_topic", []):
            if operation.request.topic == topic:
                operation.stream_handler.on_stream_event(message)

    def publish_samples(self, samples) -> None:
        rows = json.loads(json.dumps([list(s) for s in samples]))  # as it crosses the IPC socket
        self.publish_local(SubscriptionResponseMessage(json_message=JsonMessage(message={"samples": rows})))

    def iot_core_documents(self, topic: str) -> list[dict]:
        return [json.loads(r.payload) for r in self.requests("publish_to_iot_core") if r.topic_name == topic]

    def status_reports(self) -> list[ModelStatusReport]:
        """The update outcomes published to IoT Core (the periodic statuses left out)."""
        documents = self.iot_core_documents(names.model_status_topic(THING))
        return [ModelStatusReport.model_validate(d) for d in documents if d.get("kind") != "periodic"]

    def periodic_statuses(self) -> list[PeriodicStatus]:
        documents = self.iot_core_documents(names.model_status_topic(THING))
        return [PeriodicStatus.model_validate(d) for d in documents if d.get("kind") == "periodic"]

    def prediction_batches(self) -> list[PredictionBatch]:
        topic = names.prediction_topic(THING)  # compressed: the landing's decoder reads them
        return [
            decode_prediction_batch(r.payload) for r in self.requests("publish_to_iot_core") if r.topic_name == topic
        ]

    def cloud_predictions(self) -> list[PredictionMessage]:
        return [p for batch in self.prediction_batches() for p in batch.predictions]

    def local_publishes(self) -> list[tuple[str, dict]]:
        return [(r.topic, r.publish_message.json_message.message) for r in self.requests("publish_to_topic")]


# --- a real payload in moto's S3 -----------------------------------------------------------------


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    return live_window_booster(ExtrusionLineSimulator("line-1", seed=11, start_ms=START_MS))


@pytest.fixture(scope="module")
def payload(booster) -> bytes:
    return payload_from_booster(booster, model_id=MODEL_ID, version="1.0.0", features=USE_CASE.feature_names)


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name=os.environ["AWS_DEFAULT_REGION"])
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": os.environ["AWS_DEFAULT_REGION"]}
        )
        yield client


def publish_model(
    s3, data: bytes, *, version: str = "1.0.0", sha256: str | None = None, deployment_id: str = "dep-1"
) -> dict:
    """Upload `data` and return the ModelUpdate document a rollout merges into the configuration."""
    key = payload_key(MODEL_ID, version, Precision.FP32)
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    update = ModelUpdate(
        deployment_id=deployment_id,
        model_id=MODEL_ID,
        version=version,
        precision=Precision.FP32,
        payload_uri=f"s3://{BUCKET}/{key}",
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        features=USE_CASE.feature_names,
        feature_schema_hash=USE_CASE_HASH,
    )
    return update.model_dump(mode="json")


# --- the component -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def nucleus() -> FakeNucleus:
    return FakeNucleus()


@pytest.fixture
def settings(tmp_path) -> RunnerSettings:
    return RunnerSettings(thing_name=THING, work_dir=tmp_path / "work", line_id="line-1", use_case="extrusion")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_runner(settings, nucleus, clock, **kwargs):
    ipc = GreengrassCoreIPCClientV2(client=nucleus, executor=None)  # stream callbacks inline: deterministic
    runner = GreengrassModelRunner(settings, ipc, config_settle_s=0.5, clock=clock, **kwargs)
    return runner, ipc


@pytest.fixture
def runner(settings, nucleus, clock):
    runner, ipc = make_runner(settings, nucleus, clock)
    runner.start()
    yield runner
    runner.close()
    ipc.close()


def feed(nucleus: FakeNucleus, simulator: ExtrusionLineSimulator, seconds: int, chunk_s: int = 60) -> None:
    for _ in range(seconds // chunk_s):
        nucleus.publish_samples(simulator.advance(chunk_s))


def settle(runner: GreengrassModelRunner, clock: Clock) -> None:
    """Let the configuration events settle and run one round of the main loop."""
    clock.now += 1.0
    runner.step()


@pytest.fixture
def line() -> ExtrusionLineSimulator:
    return ExtrusionLineSimulator("line-1", seed=2, start_ms=START_MS)


# --- start -----------------------------------------------------------------------------------------


def test_start_subscribes_reads_configuration_and_reports_running(runner, nucleus):
    samples, context = nucleus.requests("subscribe_to_topic")
    assert samples.topic == names.LOCAL_PUBSUB_SAMPLES_TOPIC
    assert context.topic == names.LOCAL_PUBSUB_CONTEXT_TOPIC
    assert samples.receive_mode == ReceiveMode.RECEIVE_MESSAGES_FROM_OTHERS  # not our own predictions
    (config,) = nucleus.requests("subscribe_to_configuration_update")
    assert config.key_path == [names.MODEL_UPDATE_CONFIG_KEY]
    assert [r.key_path for r in nucleus.requests("get_configuration")] == [[names.MODEL_UPDATE_CONFIG_KEY]]
    assert [r.state for r in nucleus.requests("update_state")] == [ReportedLifecycleState.RUNNING]
    assert nucleus.status_reports() == [] and runner.models.live.active is None


def test_close_closes_the_streams(settings, nucleus, clock):
    runner, ipc = make_runner(settings, nucleus, clock)
    runner.start()
    runner.close()
    ipc.close()
    streams = nucleus.operations["subscribe_to_topic"] + nucleus.operations["subscribe_to_configuration_update"]
    assert streams and all(op.closed for op in streams)


# --- model updates ---------------------------------------------------------------------------------


def test_configuration_update_applies_the_model_and_reports_it(runner, nucleus, clock, line, s3, payload, settings):
    feed(nucleus, line, 600)
    nucleus.merge_model_update(publish_model(s3, payload))
    runner.step()
    assert nucleus.status_reports() == [], "events still arriving: the configuration is read once they settle"

    settle(runner, clock)
    (report,) = nucleus.status_reports()
    (request,) = nucleus.requests("publish_to_iot_core")
    assert request.topic_name == names.model_status_topic(THING) and request.qos == QOS.AT_LEAST_ONCE
    assert report.status is DeviceStatus.APPLIED, report.reason
    assert (report.thing_name, report.deployment_id, report.version) == (THING, "dep-1", "1.0.0")
    assert "health check passed" in report.reason
    assert runner.models.live.active.version == "1.0.0"
    assert (settings.state_dir / "active-model.npz").read_bytes() == payload

    nucleus.merge_model_update({})  # an unrelated configuration change: the same update, not handled again
    settle(runner, clock)
    assert len(nucleus.status_reports()) == 1


def test_tampered_payload_is_rejected_and_reported(runner, nucleus, clock, line, s3, payload):
    feed(nucleus, line, 600)
    tampered = bytearray(payload)
    tampered[len(tampered) // 2] ^= 0xFF
    nucleus.merge_model_update(publish_model(s3, bytes(tampered), sha256=hashlib.sha256(payload).hexdigest()))
    settle(runner, clock)
    (report,) = nucleus.status_reports()
    assert report.status is DeviceStatus.REJECTED
    assert "sha256 mismatch" in report.reason
    assert runner.models.live.active is None


def test_update_waits_for_a_full_live_window(runner, nucleus, clock, line, s3, payload):
    nucleus.merge_model_update(publish_model(s3, payload))
    settle(runner, clock)
    feed(nucleus, line, 120)
    runner.step()
    assert nucleus.status_reports() == [], "no health check on two minutes of a five-minute window"
    feed(nucleus, line, 240)
    runner.step()
    (report,) = nucleus.status_reports()
    assert report.status is DeviceStatus.APPLIED, report.reason


def test_update_without_live_data_is_refused_after_the_wait(runner, nucleus, clock, s3, payload):
    nucleus.merge_model_update(publish_model(s3, payload))
    settle(runner, clock)
    clock.now += runner.warmup_timeout_s
    runner.step()
    (report,) = nucleus.status_reports()
    assert report.status is DeviceStatus.REJECTED and "no live data" in report.reason


def test_restart_serves_the_persisted_model_without_asking_again(settings, nucleus, clock, line, s3, payload):
    first, ipc = make_runner(settings, nucleus, clock)
    first.start()
    feed(nucleus, line, 600)
    nucleus.merge_model_update(publish_model(s3, payload))
    settle(first, clock)
    first.close()
    ipc.close()
    assert len(nucleus.status_reports()) == 1

    downloads = []
    restarted_nucleus = FakeNucleus(configuration=nucleus.configuration)
    second, ipc = make_runner(settings, restarted_nucleus, clock, download=downloads.append)
    second.start()
    settle(second, clock)
    assert second.models.live.active.version == "1.0.0"
    assert downloads == [] and restarted_nucleus.status_reports() == []
    second.close()
    ipc.close()


def test_a_periodic_status_names_the_model_in_use_once_per_interval(settings, nucleus, clock, line, s3, payload):
    runner, ipc = make_runner(settings.model_copy(update={"status_interval_s": 120.0}), nucleus, clock)
    runner.start()
    settle(runner, clock)
    assert nucleus.periodic_statuses() == []  # the first is due an interval after the start
    clock.now += 120
    runner.step()
    runner.step()  # within the interval: nothing more
    feed(nucleus, line, 600)
    nucleus.merge_model_update(publish_model(s3, payload))
    settle(runner, clock)
    clock.now += 120
    runner.step()
    first, second = nucleus.periodic_statuses()
    assert (first.thing_name, first.version, first.model_id) == (THING, None, None)
    assert (second.version, second.model_id, second.deployment_id) == ("1.0.0", MODEL_ID, "dep-1")
    assert len(nucleus.status_reports()) == 1  # the update's own report, apart from the statuses
    runner.close()
    ipc.close()


def test_the_status_interval_comes_from_the_environment_with_a_default(tmp_path):
    environ = {
        names.THING_NAME_ENV: THING,
        names.WORK_DIR_ENV: str(tmp_path),
        names.LINE_ID_ENV: "line-1",
        names.USE_CASE_ENV: "extrusion",
    }
    assert settings_from_env(environ).status_interval_s == names.DEFAULT_STATUS_INTERVAL_S
    assert settings_from_env({**environ, names.STATUS_INTERVAL_S_ENV: ""}).status_interval_s == 300
    assert settings_from_env({**environ, names.STATUS_INTERVAL_S_ENV: "60"}).status_interval_s == 60
    with pytest.raises(ValueError, match=names.STATUS_INTERVAL_S_ENV):
        settings_from_env({**environ, names.STATUS_INTERVAL_S_ENV: "0"})


def test_redelivery_of_the_active_model_in_a_new_deployment_is_reported(runner, nucleus, clock, line, s3, payload):
    feed(nucleus, line, 600)
    nucleus.merge_model_update(publish_model(s3, payload))
    settle(runner, clock)
    nucleus.merge_model_update({"deployment_id": "dep-2"})
    settle(runner, clock)
    first, second = nucleus.status_reports()
    assert (second.deployment_id, second.status, second.reason) == ("dep-2", DeviceStatus.APPLIED, "already active")


def test_report_that_cannot_be_sent_is_retried(runner, nucleus, clock, line, s3, payload):
    feed(nucleus, line, 600)
    nucleus.iot_core_outcome = lambda: done(error=ServiceError(message="spooler full"))
    nucleus.merge_model_update(publish_model(s3, payload))
    settle(runner, clock)
    assert runner.models.outbox.pending == 1
    nucleus.iot_core_outcome = lambda: done(PublishToIoTCoreResponse())
    clock.now += 10
    runner.step()
    assert runner.models.outbox.pending == 0
    assert [r.status for r in nucleus.status_reports()] == [DeviceStatus.APPLIED, DeviceStatus.APPLIED]  # 1 failed try


def test_failed_configuration_read_is_retried(runner, nucleus, clock, line, s3, payload):
    feed(nucleus, line, 600)
    working = nucleus._get_configuration
    nucleus._get_configuration = lambda request: done(error=ServiceError(message="nucleus busy"))
    nucleus.merge_model_update(publish_model(s3, payload))
    with pytest.raises(ServiceError):
        settle(runner, clock)
    nucleus._get_configuration = working
    settle(runner, clock)
    (report,) = nucleus.status_reports()
    assert report.status is DeviceStatus.APPLIED, report.reason


def test_malformed_configuration_is_not_applied(runner, nucleus, clock, caplog):
    nucleus.merge_model_update({"deployment_id": "dep-x", "version": "one"})
    settle(runner, clock)
    assert nucleus.status_reports() == []
    assert "modelUpdate.model_id='<missing>' is not a ModelUpdate" in caplog.text and "version='one'" in caplog.text


def test_update_from_configuration():
    assert update_from_configuration({}) is None and update_from_configuration(None) is None
    with pytest.raises(ValueError, match=r"sha256=.*'nope'"):
        update_from_configuration({**publish_model_document(), "sha256": "nope"})
    assert update_from_configuration(publish_model_document()).deployment_id == "dep-1"


def publish_model_document() -> dict:
    return ModelUpdate(
        deployment_id="dep-1",
        model_id=MODEL_ID,
        version="1.0.0",
        precision=Precision.FP32,
        payload_uri=f"s3://{BUCKET}/x.npz",
        sha256="a" * 64,
        features=USE_CASE.feature_names,
        feature_schema_hash=USE_CASE_HASH,
    ).model_dump(mode="json")


# --- scoring -----------------------------------------------------------------------------------------


def test_samples_in_predictions_out(runner, nucleus, clock, line, s3, payload, booster):
    feed(nucleus, line, 600)
    nucleus.merge_model_update(publish_model(s3, payload))
    settle(runner, clock)
    assert runner.models.live.active is not None
    before, counted_before = len(nucleus.local_publishes()), runner.published_predictions

    for _ in range(3):  # three strides of live data, one prediction each
        feed(nucleus, line, 30, chunk_s=30)
        runner.step()
    publishes = [(t, m) for t, m in nucleus.local_publishes()[before:] if t == names.LOCAL_PUBSUB_SAMPLES_TOPIC]
    assert len(publishes) == 3 and runner.published_predictions - counted_before == 3
    metric = USE_CASE.prediction_metric
    for topic, message in publishes:
        assert topic == names.LOCAL_PUBSUB_SAMPLES_TOPIC
        ((name, time_ms, value),) = message["samples"]
        window_end = time_ms - USE_CASE.horizon_s * 1000
        assert name == metric and window_end % (USE_CASE.example_stride_s * 1000) == 0
        # the value XGBoost itself gives for that live window
        expected = booster.inplace_predict(runner.models.live.window(window_end).features[None, :])[0]
        assert value == pytest.approx(float(expected), abs=0)
    assert [m["samples"][0][1] for _, m in publishes] == sorted(m["samples"][0][1] for _, m in publishes)


def context_message(lower: float, upper: float, line_id: str = "line-1") -> SubscriptionResponseMessage:
    """A run interval covering the test's whole day, as an MES adapter would publish it."""
    interval = {
        "kind": "run",
        "interval_id": "run-7",
        "line_id": line_id,
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-02T00:00:00Z",
        "value": "cable-A",
        "spec": {"target_metric": USE_CASE.target_metric, "lower": lower, "upper": upper},
    }
    return SubscriptionResponseMessage(json_message=JsonMessage(message=interval))


def serve_model(runner, nucleus, clock, line, s3, payload) -> None:
    feed(nucleus, line, 600)
    nucleus.merge_model_update(publish_model(s3, payload))
    settle(runner, clock)
    assert runner.models.live.active is not None


def test_predictions_go_out_as_messages_classified_against_the_local_limits(runner, nucleus, clock, line, s3, payload):
    serve_model(runner, nucleus, clock, line, s3, payload)
    nucleus.publish_local(context_message(1.0, 2.0), topic=names.LOCAL_PUBSUB_CONTEXT_TOPIC)
    for _ in range(3):
        feed(nucleus, line, 30, chunk_s=30)
        runner.step()
    # the raise sent the held predictions just before it: the cloud has every one, local adapters too
    cloud = nucleus.cloud_predictions()
    local = [m for t, m in nucleus.local_publishes() if t == names.LOCAL_PUBSUB_PREDICTIONS_TOPIC]
    assert len(cloud) >= names.DEFAULT_ALERT_RAISE_AFTER
    assert [PredictionMessage.model_validate(m) for m in local][: len(cloud)] == cloud
    assert len(local) - len(cloud) == runner.predictions.held, "those after the raise wait for their batch"
    topics = [r.topic_name for r in nucleus.requests("publish_to_iot_core")]
    assert topics.index(names.alert_topic(THING)) > topics.index(names.prediction_topic(THING)), "batch first"
    last = cloud[-1]
    assert (last.model.deployment_id, last.model.version, last.run_id) == ("dep-1", "1.0.0", "run-7")
    assert last.spec.upper == 2.0 and last.violation_class.value == "usl_violation"
    # the context is forwarded to the cloud's context intake as received
    (forwarded, *_) = nucleus.iot_core_documents(names.context_topic(THING))
    assert [i["interval_id"] for i in forwarded] == ["run-7"] and forwarded[0]["spec"]["upper"] == 2.0
    from edgeloop.functions.context.logic import parse_context_message

    rule_event = IotRuleEvent.from_message(names.context_topic(THING), json.dumps(forwarded).encode(), 0)
    assert [i.interval_id for i in parse_context_message(rule_event).intervals] == ["run-7"], "the cloud takes it"
    # debounced: raised once, after DEFAULT_ALERT_RAISE_AFTER predictions in the violation class
    (raised,) = [AlertEvent.model_validate(d) for d in nucleus.iot_core_documents(names.alert_topic(THING))]
    assert raised.event.value == "raise" and raised.consecutive == names.DEFAULT_ALERT_RAISE_AFTER
    local_alerts = [m for t, m in nucleus.local_publishes() if t == names.LOCAL_PUBSUB_ALERTS_TOPIC]
    assert [AlertEvent.model_validate(m) for m in local_alerts] == [raised]

    nucleus.publish_local(context_message(1.0, 9.0), topic=names.LOCAL_PUBSUB_CONTEXT_TOPIC)  # limits widened
    for _ in range(names.DEFAULT_ALERT_CLEAR_AFTER):
        feed(nucleus, line, 30, chunk_s=30)
        runner.step()
    events = [AlertEvent.model_validate(d) for d in nucleus.iot_core_documents(names.alert_topic(THING))]
    assert [e.event.value for e in events] == ["raise", "clear"] and events[1].alert_id == raised.alert_id


def stride(runner, nucleus, clock, line) -> None:
    """One pack stride of live data on the simulated clock, and the main loop's round."""
    feed(nucleus, line, 30, chunk_s=30)
    clock.now += 30
    runner.step()


def test_predictions_go_to_iot_core_in_batches_and_a_stop_sends_the_held_ones(
    settings, nucleus, clock, line, s3, payload
):
    latency_s = 300  # a batch every 11 strides (the default's would take 60)
    runner, ipc = make_runner(settings.model_copy(update={"prediction_flush_max_latency_s": latency_s}), nucleus, clock)
    runner.start()
    serve_model(runner, nucleus, clock, line, s3, payload)
    for _ in range(25):
        stride(runner, nucleus, clock, line)
    assert runner.predictions.held > 0
    runner.close()  # the stop sends what is held
    ipc.close()
    local = [
        PredictionMessage.model_validate(m)
        for t, m in nucleus.local_publishes()
        if t == names.LOCAL_PUBSUB_PREDICTIONS_TOPIC
    ]
    per_batch = latency_s // USE_CASE.example_stride_s + 1  # the flush rule's k
    batches = nucleus.prediction_batches()
    assert len(local) >= 25 and len(batches) == math.ceil(len(local) / per_batch)
    assert nucleus.cloud_predictions() == local, "every prediction, once, in order"
    assert runner.predictions.held == 0 and runner.messages.pending == 0


def test_held_predictions_survive_a_crash_and_go_out_after_the_restart(settings, nucleus, clock, line, s3, payload):
    first, ipc = make_runner(settings, nucleus, clock)
    first.start()
    serve_model(first, nucleus, clock, line, s3, payload)
    for _ in range(3):
        stride(first, nucleus, clock, line)
    held = [PredictionMessage.model_validate(m) for t, m in nucleus.local_publishes() if t.endswith("/predictions")]
    assert first.predictions.held == len(held) >= 3 and nucleus.prediction_batches() == []
    ipc.close()  # the process dies: no close(), nothing drained
    fresh = FakeNucleus()
    second, ipc = make_runner(settings, fresh, clock)
    second.start()
    second.step()  # no new sample yet: the restored batch is due at once
    assert fresh.cloud_predictions() == held
    second.close()
    ipc.close()


def test_an_alert_goes_at_once_after_the_held_predictions(settings, nucleus, clock, line, s3, payload):
    slow = settings.model_copy(update={"prediction_flush_max_latency_s": 3600.0})  # nothing due for an hour
    runner, ipc = make_runner(slow, nucleus, clock)
    runner.start()
    serve_model(runner, nucleus, clock, line, s3, payload)
    nucleus.publish_local(context_message(1.0, 2.0), topic=names.LOCAL_PUBSUB_CONTEXT_TOPIC)  # every level violates
    local_alerts: list = []
    while not local_alerts:
        stride(runner, nucleus, clock, line)
        local_alerts = [m for t, m in nucleus.local_publishes() if t == names.LOCAL_PUBSUB_ALERTS_TOPIC]
    (sent,) = nucleus.iot_core_documents(names.alert_topic(THING))
    assert sent == local_alerts[0], "sent on the round that raised it, not an hour later"
    local = [m for t, m in nucleus.local_publishes() if t == names.LOCAL_PUBSUB_PREDICTIONS_TOPIC]
    assert [p.model_dump(mode="json") for p in nucleus.cloud_predictions()] == local, "what decided it went first"
    topics = [r.topic_name for r in nucleus.requests("publish_to_iot_core")]
    assert topics[-2:] == [names.prediction_topic(THING), names.alert_topic(THING)]
    runner.close()
    ipc.close()


def test_messages_iot_core_refused_wait_in_order(settings, nucleus, clock, line, s3, payload):
    at_once = settings.model_copy(update={"prediction_flush_max_latency_s": 0.0})  # a batch per prediction
    runner, ipc = make_runner(at_once, nucleus, clock)
    runner.start()
    serve_model(runner, nucleus, clock, line, s3, payload)
    nucleus.iot_core_outcome = lambda: done(error=ServiceError(message="spooler full"))
    for _ in range(2):
        feed(nucleus, line, 30, chunk_s=30)
        runner.step()
    assert runner.messages.pending == 2
    nucleus.iot_core_outcome = lambda: done(PublishToIoTCoreResponse())
    clock.now += runner.messages.retry_after_s
    runner.step()
    attempts = [batch.predictions[0].made_at for batch in nucleus.prediction_batches()]
    assert len(set(attempts)) == 3 and attempts == sorted(attempts), "every batch, in order, retried"
    assert runner.messages.pending == 0 and runner.messages.dropped == 0
    runner.close()
    ipc.close()


def test_the_run_and_limits_survive_a_restart(settings, nucleus, clock, line, s3, payload):
    first, ipc = make_runner(settings, nucleus, clock)
    first.start()
    nucleus.publish_local(context_message(1.0, 2.0), topic=names.LOCAL_PUBSUB_CONTEXT_TOPIC)
    first.step()
    first.close()
    ipc.close()
    fresh = FakeNucleus()
    second, ipc = make_runner(settings, fresh, clock)
    second.start()
    serve_model(second, fresh, clock, line, s3, payload)
    feed(fresh, line, 30, chunk_s=30)
    second.step()
    second.close()  # a stop sends the held predictions
    ipc.close()
    (message, *_) = fresh.cloud_predictions()
    assert message.run_id == "run-7" and message.spec.upper == 2.0


def test_bad_or_foreign_context_is_refused_and_counted(runner, nucleus):
    nucleus.publish_local(
        SubscriptionResponseMessage(binary_message=BinaryMessage(message=b"[" * 500)),
        topic=names.LOCAL_PUBSUB_CONTEXT_TOPIC,
    )
    nucleus.publish_local(context_message(2.0, 1.0), topic=names.LOCAL_PUBSUB_CONTEXT_TOPIC)  # lower > upper
    assert runner.refused_context_messages == 2
    nucleus.publish_local(context_message(1.0, 2.0, line_id="line-9"), topic=names.LOCAL_PUBSUB_CONTEXT_TOPIC)
    runner.step()
    assert runner.refused_context_messages == 3 and len(runner.models.context) == 0


def test_no_model_no_predictions(runner, nucleus, line):
    feed(nucleus, line, 600)
    runner.step()
    assert nucleus.local_publishes() == []
    assert runner.models.live.skipped["no_model"] >= 1


def test_bad_local_messages_are_dropped_row_by_row(runner, nucleus):
    nucleus.publish_local(SubscriptionResponseMessage(binary_message=BinaryMessage(message=b"not json")))
    nucleus.publish_local(SubscriptionResponseMessage(json_message=JsonMessage(message={"rows": []})))
    rows = [["speed", START_MS, 150.0], ["speed", START_MS + 1000, "fast"], ["speed", "later", 1.0], ["speed"]]
    nucleus.publish_local(SubscriptionResponseMessage(json_message=JsonMessage(message={"samples": rows})))
    assert runner.malformed_samples == 3
    assert runner.models.live.latest_window() is not None  # the good row went in


def test_samples_from_binary_event():
    event = SubscriptionResponseMessage(
        binary_message=BinaryMessage(message=b'{"samples": [["temp_die", 1767225600000, 215.5], ["x", 1, NaN]]}')
    )
    assert samples_from_event(event) == ([("temp_die", 1767225600000, 215.5)], 1)


# --- environment and entry point ----------------------------------------------------------------------


def test_settings_from_env_name_the_variable(tmp_path):
    env = {
        names.THING_NAME_ENV: THING,
        names.WORK_DIR_ENV: str(tmp_path),
        names.LINE_ID_ENV: "line-1",
        names.USE_CASE_ENV: "extrusion",
    }
    settings = settings_from_env(env)
    assert settings.state_dir == tmp_path / "model"
    with pytest.raises(ValueError, match=names.LINE_ID_ENV):
        settings_from_env({k: v for k, v in env.items() if k != names.LINE_ID_ENV})
    with pytest.raises(ValueError, match=rf"{names.LINE_ID_ENV}='Line 1'"):
        settings_from_env({**env, names.LINE_ID_ENV: "Line 1"})


def test_main_runs_until_sigterm(tmp_path, monkeypatch):
    import awsiot.greengrasscoreipc.clientv2 as clientv2

    from edgeloop.greengrass_components.model_runner import component

    nucleus = FakeNucleus()
    monkeypatch.setattr(
        clientv2, "GreengrassCoreIPCClientV2", lambda: GreengrassCoreIPCClientV2(client=nucleus, executor=None)
    )
    for var, value in {
        names.THING_NAME_ENV: THING,
        names.WORK_DIR_ENV: str(tmp_path),
        names.LINE_ID_ENV: "line-1",
        names.USE_CASE_ENV: "extrusion",
    }.items():
        monkeypatch.setenv(var, value)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a stray SIGTERM must not end pytest
    terminate = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    try:
        terminate.start()
        component.main()  # returns only once SIGTERM stopped the loop
    finally:
        terminate.cancel()
        signal.signal(signal.SIGTERM, previous)
    assert [r.state for r in nucleus.requests("update_state")] == [ReportedLifecycleState.RUNNING]
    assert all(op.closed for op in nucleus.operations["subscribe_to_topic"])
