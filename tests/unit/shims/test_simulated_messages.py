"""The simulated gateway's messages: the MES adapter's runs with their planned ends, predictions batched
on the simulated clock, alerts at once after the predictions that decided them, and nothing lost while
the broker refuses."""

from __future__ import annotations

from datetime import timedelta

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import SimulatorConfig
from edgeloop.device_shims.simulated_messages import MesAdapter, MessagePublisher
from edgeloop.greengrass_components.model_runner.service import Scored
from edgeloop.schemas import ContextKind, names
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.context import SpecLimits
from edgeloop.schemas.prediction import (
    AlertEvent,
    AlertEventKind,
    ModelIdentity,
    PredictionMessage,
    decode_alert,
    decode_prediction_batch,
)
from edgeloop.schemas.training import ViolationClass

THING = "gw-line-1"
START_MS = 1_772_400_000_000
MODEL = ModelIdentity(model_id="m", version="1.0.0", precision="fp32", decision_margin=0.0)
SPEC = SpecLimits(target_metric="cold_od_average", lower=3.75, upper=3.85)


class Broker:
    """The uplink: records what it took, refuses while `down`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.down = False

    def publish(self, topic: str, payload: bytes, timeout: float) -> None:
        if self.down:
            raise TimeoutError("broker unreachable")
        self.sent.append((topic, payload))


def simulator() -> ExtrusionLineSimulator:
    return ExtrusionLineSimulator("line-1", seed=3, start_ms=START_MS, config=SimulatorConfig(run_minutes=(30, 30)))


def prediction(sim: ExtrusionLineSimulator) -> PredictionMessage:
    from datetime import datetime

    made_at = datetime.fromtimestamp(sim.now_ms / 1000, UTC)
    return PredictionMessage(
        thing_name=THING,
        line_id="line-1",
        model=MODEL,
        target_metric="cold_od_average",
        made_at=made_at,
        horizon_s=300,
        label_window_s=30,
        predicted_level=3.86,
        violation_class=ViolationClass.USL,
        spec=SPEC,
        sent_at=made_at,
        lead_time_s=300.0,
    )


def raise_for(p: PredictionMessage) -> AlertEvent:
    return AlertEvent(
        thing_name=THING,
        line_id="line-1",
        alert_id="a-1",
        event=AlertEventKind.RAISE,
        violation_class=ViolationClass.USL,
        raised_at=p.made_at,
        at=p.made_at,
        predicted_for=p.predicted_for,
        lead_time_s=270.0,
        consecutive=2,
        predicted_level=p.predicted_level,
        spec=SPEC,
        model=MODEL,
        sent_at=p.sent_at,
    )


def test_the_mes_adapter_tells_each_run_with_its_planned_end_and_then_only_what_changed():
    sim, told = simulator(), []
    mes = MesAdapter(sim, lambda intervals: told.append(list(intervals)) or len(intervals))
    sim.advance(600)
    assert mes.tell() == 2  # the first run and its "running" state
    run = next(i for i in told[0] if i.kind is ContextKind.RUN)
    assert run.end - run.start == timedelta(minutes=30)  # planned, not cut at "now" (10 minutes in)
    assert run.spec is not None and all(i.kind in (ContextKind.RUN, ContextKind.STATE) for i in told[0])
    sim.advance(60)
    assert mes.tell() == 0 and len(told) == 1  # nothing new: nothing sent
    sim.advance(2700)  # past the run and its changeover (8-15 minutes): the next run has begun
    assert mes.tell() >= 3  # the changeover's state, the second run and its state
    assert {i.interval_id for i in told[-1]} >= {"line-1-run-0002"}


def test_predictions_go_in_batches_on_the_simulated_clock_and_an_alert_goes_at_once_after_them():
    sim, broker = simulator(), Broker()
    publisher = MessagePublisher(THING, broker, sim, flush_max_latency_s=120)
    local: list[tuple[str, dict]] = []
    for topic in (names.LOCAL_PUBSUB_PREDICTIONS_TOPIC, names.LOCAL_PUBSUB_ALERTS_TOPIC):
        publisher.local.subscribe(topic, lambda t, doc: local.append((t, doc)))
    for _ in range(3):  # 90 simulated seconds: under the flush latency, all held
        sim.advance(30)
        publisher.publish(Scored([], prediction(sim)))
    assert broker.sent == [] and len(local) == 3
    sim.advance(30)
    p = prediction(sim)
    publisher.publish(Scored([], p, [raise_for(p)]))
    topics = [topic for topic, _ in broker.sent]
    assert topics == [names.prediction_topic(THING), names.alert_topic(THING)]
    batch = decode_prediction_batch(broker.sent[0][1])
    assert len(batch.predictions) == 4 and batch.predictions[-1] == p  # the one that decided the alert first
    assert decode_alert(broker.sent[1][1]).alert_id == "a-1"
    assert [t for t, _ in local][-2:] == [names.LOCAL_PUBSUB_PREDICTIONS_TOPIC, names.LOCAL_PUBSUB_ALERTS_TOPIC]
    for _ in range(5):  # its oldest prediction waited 120 simulated seconds: the held batch is due
        sim.advance(30)
        publisher.publish(Scored([], prediction(sim)))
    assert len(broker.sent) == 3 and publisher.state()["prediction_batches"] == 2


def test_what_the_broker_refuses_waits_in_order_and_a_stop_sends_the_held_predictions():
    sim, broker = simulator(), Broker()
    publisher = MessagePublisher(THING, broker, sim, flush_max_latency_s=300)
    broker.down = True
    sim.advance(30)
    p = prediction(sim)
    publisher.publish(Scored([], p, [raise_for(p)]))
    assert broker.sent == [] and publisher.pending == 2  # the batch of one, then the alert
    broker.down = False
    sim.advance(30)
    publisher.publish(Scored([], prediction(sim)))  # held (not due)
    assert publisher.flush() == 3
    assert [topic for topic, _ in broker.sent] == [
        names.prediction_topic(THING),
        names.alert_topic(THING),
        names.prediction_topic(THING),
    ]
    assert publisher.state()["messages_pending"] == 0 and publisher.state()["alerts"][0]["alert_id"] == "a-1"
