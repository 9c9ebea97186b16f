"""Issue 17's acceptance on the local stack: a line drifts into a USL violation and the alert gets everywhere.

A real simulated gateway (device_shims/simulated_gateway.py: durable buffer, publisher, MQTT5 with
mutual TLS to a real mosquitto, the model runner's ModelService and alerter) runs in this process on
a simulated clock; moto_server plays S3, DynamoDB, SNS and SQS, the local bridge plays the IoT rules
(alerts -> functions/predictions, which lands them and notifies the SNS alert topic).

1. The gateway sends 40 simulated minutes of history, gets a model (an XGBoost regressor trained on
   another stretch of the same line, delivered as the local delivery does: a ModelUpdate on its
   model-update topic) and persists it.
2. Restarted (resuming where its buffer stands, the model restored), it scores 35 simulated minutes
   live. In them a material batch with more melt output reaches the die: the hot OD rises at once,
   the cold gauge sees it minutes later (the cooling trough), beyond the upper spec limit.
3. The gateway raises a USL alert before the measured cold OD crosses the limit; the alert is on its
   local pub/sub topic, on the cloud topic (mosquitto), landed in S3, and in an SQS queue subscribed
   to the SNS alert topic; `edgeloop monitor --line line-1` shows it with its lead time; the clear
   follows with the same alert_id.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from fleet_e2e_helpers import simulator_config, simulator_examples
from typer.testing import CliRunner

from edgeloop.cloud.aws import client
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.simulated_gateway import SimulatedGateway, SimulatedGatewayConfig
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.local.stack import LocalStack
from edgeloop.model_runtime.model_format import RUNTIME_VERSION
from edgeloop.sagemaker_pipelines.steps.export import payload_from_booster
from edgeloop.schemas import ModelUpdate, Precision, feature_schema_hash, load_use_case, names
from edgeloop.schemas.model import architecture_of_machine
from edgeloop.schemas.prediction import AlertEvent, AlertEventKind, decode_alert
from edgeloop.schemas.training import ViolationClass

pytestmark = pytest.mark.timeout(180)

THING, LINE, SITE = "gw-drift-1", "line-1", "plant-a"
USE_CASE = load_use_case("extrusion")
SEED = 0  # this line's material batch steps up ~45 simulated minutes in (checked below, not assumed)
HISTORY_S, LIVE_S = 40 * 60, 35 * 60
# one product in one endless run; no speed changes: the drift is the material's
SIMULATION = simulator_config().model_copy(update={"speed_changes_per_hour": 0.0})
MODEL_ID, VERSION = "extrusion-line-1", "1.0.0"
WAIT_S = 60.0


def _wait(what: str, done, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def _model_update() -> ModelUpdate:
    """A model of cold OD 5 minutes ahead, trained on 3 simulated hours of the same line (another seed),
    its payload in the model bucket, announced as the rollout would."""
    examples = simulator_examples(3.0, seed=3, start_ms=0)
    features = USE_CASE.feature_names
    params = {"objective": "reg:squarederror", "max_depth": 3, "eta": 0.3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(examples[features].to_numpy(), label=examples["label"]), 60)
    payload = payload_from_booster(booster, model_id=MODEL_ID, version=VERSION, features=features)
    key = f"{names.MODELS_PREFIX}/{MODEL_ID}/{VERSION}/fp32.npz"
    client("s3").put_object(Bucket=names.LOCAL_MODEL_BUCKET, Key=key, Body=payload)
    return ModelUpdate(
        deployment_id="e2e-drift",
        model_id=MODEL_ID,
        version=VERSION,
        precision=Precision.FP32,
        payload_uri=f"s3://{names.LOCAL_MODEL_BUCKET}/{key}",
        sha256=hashlib.sha256(payload).hexdigest(),
        features=features,
        feature_schema_hash=feature_schema_hash(features),
        payload_bytes=len(payload),
    )


def _alert_queue(topic_arn: str) -> str:
    """An SQS queue subscribed to the SNS alert topic, with the queue policy AWS needs for it."""
    sqs = client("sqs")
    url = sqs.create_queue(QueueName="e2e-alert-notices")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True)
    return url


def _gateway_config(stack: LocalStack, home: Path) -> SimulatedGatewayConfig:
    runtime = stack.runtime
    cert = runtime.certs[THING]
    gateway = GatewayConfig(
        thing_name=THING,
        site=SITE,
        line_id=LINE,
        use_case=USE_CASE.use_case,
        architecture=architecture_of_machine(),
        runtime_version=RUNTIME_VERSION,
        broker_host=runtime.broker.host,
        broker_port=runtime.broker.device_port,
        cert_path=cert.cert_path,
        key_path=cert.key_path,
        ca_path=cert.ca_path,
        buffer_path=home / "buffer.sqlite",
    )
    runtime.register_gateway(gateway)
    # all of it in the past, and so long ago that live accuracy's hourly windows have all landed
    sim_start_ms = (int(time.time()) // 60 * 60 - HISTORY_S - LIVE_S - 3 * 3600) * 1000
    return SimulatedGatewayConfig(
        gateway=gateway,
        seed=SEED,
        sim_start_ms=sim_start_ms,
        history_s=HISTORY_S,
        max_live_s=0,
        live_speedup=300.0,
        state_file=home / "state.json",
        stop_file=home / "stop",
        context_file=home / "context.jsonl",
        simulator=SIMULATION,
        prediction_flush_s=120,
    )


def _run(gateway: SimulatedGateway) -> threading.Thread:
    thread = threading.Thread(target=gateway.run, name=f"{THING}-run", daemon=True)
    thread.start()
    return thread


def _stop(gateway: SimulatedGateway, thread: threading.Thread) -> None:
    gateway.stop_requested.set()
    thread.join(WAIT_S)
    assert not thread.is_alive() and gateway.phase == "stopped", (gateway.phase, gateway.last_error)


def _measured_crossing_ms(config: SimulatedGatewayConfig, upper: float) -> tuple[int, float]:
    """The first live reading of the cold gauge above `upper` (the same seed replays the same line), and
    the highest reading before the live period's first one (the line starts in range)."""
    simulator = ExtrusionLineSimulator(LINE, seed=SEED, start_ms=config.sim_start_ms, config=SIMULATION)
    readings = [(t, v) for m, t, v in simulator.advance(HISTORY_S + LIVE_S) if m == USE_CASE.target_metric]
    times, values = np.array([t for t, _ in readings]), np.array([v for _, v in readings])
    live = times >= config.sim_start_ms + HISTORY_S * 1000
    over = np.nonzero(live & (values > upper))[0]
    assert len(over), f"the line never crossed {upper} mm in the live period: max {values[live].max():.4f}"
    first_live = int(np.argmax(live))
    return int(times[over[0]]), float(values[first_live : over[0]].max())


def test_a_drift_into_usl_raises_an_alert_ahead_of_the_gauge_that_reaches_every_subscriber(tmp_path):
    with LocalStack(tmp_path / "stack", [THING], environment={names.USE_CASE_ENV: USE_CASE.use_case}) as stack:
        from edgeloop.local.mqtt import connect_mqtt5

        queue_url = _alert_queue(stack.runtime.resources.alert_topic_arn)
        cloud_alerts: list[AlertEvent] = []
        runtime = stack.runtime
        watcher = connect_mqtt5(
            runtime.broker.host,
            runtime.broker.port,
            runtime.cloud_cert,
            "e2e-alert-watcher",
            on_message=lambda topic, payload: cloud_alerts.append(decode_alert(payload)),
        )
        watcher.subscribe(names.alert_topic(THING))
        config = _gateway_config(stack, tmp_path / THING)

        # 1. history, then the model, persisted by the gateway's update agent
        first = SimulatedGateway(config)
        thread = _run(first)
        _wait("the history to drain", lambda: first.phase == "idle" or first.phase == "failed")
        assert first.phase == "idle", first.last_error
        stack.bridge.publish(names.model_update_topic(THING), _model_update().model_dump_json().encode())
        _wait("the model to be applied", lambda: first.agent.current is not None)
        _stop(first, thread)

        # 2. restarted: live with the restored model
        live = SimulatedGateway(config.model_copy(update={"max_live_s": LIVE_S}))
        local_alerts: list[dict] = []
        live.messages.local.subscribe(names.LOCAL_PUBSUB_ALERTS_TOPIC, lambda topic, doc: local_alerts.append(doc))
        thread = _run(live)
        _wait("the live period", lambda: live.phase in ("idle", "failed"))
        assert live.phase == "idle", live.last_error
        assert live.agent.current.version == VERSION
        _stop(live, thread)
        stack.bridge.release_batches()
        stack.bridge.wait_idle(timeout=WAIT_S)
        watcher.stop()
        _score_live_accuracy(stack, live)

        # 3. the alert: raised ahead of the gauge, cleared after, everywhere
        alerts = [AlertEvent.model_validate(doc) for doc in local_alerts]
        raises = [a for a in alerts if a.event is AlertEventKind.RAISE and a.violation_class is ViolationClass.USL]
        assert raises, f"no USL alert raised; local alert events: {[(a.event, a.violation_class) for a in alerts]}"
        raised = raises[0]
        crossing_ms, before = _measured_crossing_ms(config, raised.spec.upper)
        assert before <= raised.spec.upper  # the line drifted into the violation from in range
        assert raised.sent_at.timestamp() * 1000 < crossing_ms, (raised.sent_at, crossing_ms)
        assert raised.lead_time_s > 0 and raised.model.version == VERSION
        clears = [a for a in alerts if a.event is AlertEventKind.CLEAR and a.alert_id == raised.alert_id]
        assert clears and clears[0].at > raised.at, "the clear did not follow"
        expected = [(a.alert_id, a.event) for a in alerts]
        assert [(a.alert_id, a.event) for a in cloud_alerts] == expected  # the cloud topic, in order
        assert live.messages.state()["messages_pending"] == 0
        assert stack.bridge.failed == 0, stack.bridge.last_error

        landed = _landed_lines(f"{names.ALERTS_PREFIX}/line={LINE}/")
        assert sorted((a["alert_id"], a["event"]) for a in landed) == sorted((i, e.value) for i, e in expected)
        # every prediction made went out (in batches on the simulated clock) and landed once, one per line
        made = live.messages.state()
        assert made["prediction_batches"] < made["prediction_messages"] == LIVE_S // USE_CASE.example_stride_s
        predictions = _landed_lines(f"{names.PREDICTIONS_PREFIX}/line={LINE}/")
        assert (
            len(predictions)
            == made["prediction_messages"]
            == live.messages.local.published[names.LOCAL_PUBSUB_PREDICTIONS_TOPIC]
        )
        notices = _receive(queue_url)
        told = [(n["MessageAttributes"]["event"]["Value"], n["MessageAttributes"]["line_id"]["Value"]) for n in notices]
        assert told == [("raise", LINE), ("clear", LINE)], [n["Message"][:200] for n in notices]
        assert all(raised.alert_id in n["Message"] for n in notices)

        result = CliRunner().invoke(_app(), ["monitor", "--line", LINE])
        assert result.exit_code == 0, result.output
        assert raised.alert_id in result.output and f"{raised.lead_time_s:.0f} s" in result.output, result.output
        assert f"{MODEL_ID} {VERSION}" in result.output, result.output  # its live accuracy


def _score_live_accuracy(stack: LocalStack, gateway: SimulatedGateway) -> None:
    """What the local schedule does after the live period: the line's runs to the cloud's context intake
    (as the demo publishes them), compaction, then a live-accuracy round; its figures are checked here."""
    from edgeloop.device_shims.context_publishing import context_payloads
    from edgeloop.functions.live_accuracy.store import read_line_monitoring
    from edgeloop.local import functions
    from edgeloop.local.mqtt import connect_mqtt5

    runtime = stack.runtime
    with connect_mqtt5(runtime.broker.host, runtime.broker.port, runtime.certs[THING], f"{THING}-mes") as mqtt:
        for payload in context_payloads(gateway.simulator.context_intervals()):
            mqtt.publish(names.context_topic(THING), payload)
    stack.bridge.wait_idle(timeout=WAIT_S)
    functions.compact_and_roll_up(stack.lambda_log, source="e2e")
    functions.live_accuracy_round(stack.lambda_log, source="e2e")
    _, reports = read_line_monitoring(names.LOCAL_DATA_BUCKET, LINE)
    windows = [w for report in reports for w in report.models if w.joined]
    assert windows, f"live accuracy joined nothing: {reports}"
    assert sum(w.joined for w in windows) >= 0.8 * LIVE_S / USE_CASE.example_stride_s
    for window in windows:
        assert (window.model_id, window.version) == (MODEL_ID, VERSION)
        assert window.model.rmse < window.persistence.rmse, window  # it foresaw the drift persistence cannot


def _landed_lines(prefix: str) -> list[dict]:
    """The JSON lines landed under `prefix` in the data bucket."""
    from edgeloop.cloud import s3
    from edgeloop.cloud.datalake.landed_jsonl import landed_lines

    keys = s3.list_keys(names.LOCAL_DATA_BUCKET, prefix)
    return [json.loads(line) for key in keys for line in landed_lines(key, s3.get_bytes(names.LOCAL_DATA_BUCKET, key))]


def _receive(queue_url: str) -> list[dict]:
    """The SNS notices (the SNS envelope of each SQS message) that reach the queue within a few seconds."""
    sqs, notices = client("sqs"), []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages")
        for message in messages or []:
            notices.append(json.loads(message["Body"]))
        if len(notices) >= 2 and not messages:
            break
    return notices


def _app():
    from edgeloop.cli import app

    return app
