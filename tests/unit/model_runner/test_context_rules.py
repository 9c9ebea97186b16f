"""Context from live signals on the gateway: the use case's live_context rules (context_rules.py)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import numpy as np
import pytest
from pydantic import ValidationError

from edgeloop.greengrass_components.model_runner import component
from edgeloop.greengrass_components.model_runner.context_rules import ContextRules, live_interval_id
from edgeloop.greengrass_components.model_runner.service import ModelService, Outbox
from edgeloop.greengrass_components.model_runner.settings import RunnerSettings
from edgeloop.model_runtime.linear_format import LinearModel
from edgeloop.model_runtime.model_format import write_payload
from edgeloop.model_runtime.scorer import load_payload
from edgeloop.schemas import ContextInterval, ContextKind, load_use_case, names
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.live_context import LiveContextConfig
from edgeloop.schemas.use_case import UseCaseConfig

BASE = load_use_case("extrusion")
TARGET = BASE.target_metric
LINE = "line-1"
START_MS = 1_767_225_600_000
STEP_MS = 1000
RUN_METRIC, SETPOINT = "speed", "pressure"  # any two metrics that are not the target


def rules(stored=(), **config) -> ContextRules:
    block = {"limits": {"setpoint": SETPOINT, "band": 0.1}, **config}
    return ContextRules(LiveContextConfig.model_validate(block), LINE, TARGET, stored)


def stream(metric: str, values, start_s: int = 0) -> list[tuple[str, int, float]]:
    """One sample a second from START + start_s."""
    return [(metric, START_MS + (start_s + n) * STEP_MS, float(v)) for n, v in enumerate(values)]


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(START_MS / 1000 + seconds, UTC)


def final(intervals: list[ContextInterval], kind: ContextKind) -> list[ContextInterval]:
    """The last version of each interval of `kind` (a later one replaces it, as in the stores), by start."""
    latest = {i.interval_id: i for i in intervals if i.kind is kind}
    return sorted(latest.values(), key=lambda i: i.start)


def test_a_setpoint_step_opens_new_limits_at_the_step():
    live = rules(hold_samples=3)
    live.observe(stream(SETPOINT, [3.0] * 60 + [3.2] * 60))
    limits = final(live.take(), ContextKind.LIMITS)
    assert [(i.spec.lower, i.spec.upper) for i in limits] == [pytest.approx((2.9, 3.1)), pytest.approx((3.1, 3.3))]
    assert limits[0].start == at(0) and limits[0].end == at(60), "closed at the first sample of the new setpoint"
    assert limits[1].start == at(60), "the new limits start at the step, not when the hold confirmed it"
    assert limits[1].end == at(62 + 900), "open: a lease past the sample that confirmed it"
    assert limits[1].value == "setpoint 3.2 ± 0.1" and limits[1].spec.target_metric == TARGET


def test_a_noisy_setpoint_does_not_flap():
    noisy = [3.0 if n % 5 else 3.2 for n in range(300)]  # a one-sample blip every 5 s
    held = rules(hold_samples=3)
    held.observe(stream(SETPOINT, noisy))
    assert len(final(held.take(), ContextKind.LIMITS)) == 1
    unheld = rules()
    unheld.observe(stream(SETPOINT, noisy))
    assert len(final(unheld.take(), ContextKind.LIMITS)) > 100, "without a hold every blip cuts the limits"
    by_time = rules(hold_s=10)
    by_time.observe(stream(SETPOINT, [3.0] * 30 + [3.2] * 5 + [3.0] * 30 + [3.2] * 30))
    limits = final(by_time.take(), ContextKind.LIMITS)
    assert [i.start for i in limits] == [at(0), at(65)], "a 5 s excursion is not a change; 30 s is"
    jitter = rules(limits={"setpoint": SETPOINT, "band": 0.1, "tolerance": 0.01})
    jitter.observe(stream(SETPOINT, [3.0 + 0.004 * (-1) ** n for n in range(300)]))
    assert len(final(jitter.take(), ContextKind.LIMITS)) == 1


def test_a_run_change_closes_the_run_and_cuts_the_limits():
    live = rules(runs={"metric": RUN_METRIC}, hold_samples=2)
    samples = stream(RUN_METRIC, [7] * 100 + [8] * 100) + stream(SETPOINT, [3.0] * 200)
    live.observe(samples)
    made = live.take()
    runs = final(made, ContextKind.RUN)
    assert [(i.value, i.start, i.end) for i in runs] == [("7", at(0), at(100)), ("8", at(100), at(101 + 900))]
    assert runs[1].interval_id == live_interval_id(ContextKind.RUN, LINE, START_MS + 100_000, "8")
    assert runs[1].spec is None
    limits = final(made, ContextKind.LIMITS)
    assert [(i.start, i.end) for i in limits] == [(at(0), at(100)), (at(100), at(101 + 900))]
    assert limits[0].spec == limits[1].spec


def test_an_open_interval_is_sent_again_only_when_its_lease_runs_low():
    live = rules(lease_s=600)
    sent = []
    for minute in range(60):
        live.observe(stream(SETPOINT, [3.0] * 60, start_s=minute * 60))
        sent += live.take()
    assert len({i.interval_id for i in sent}) == 1
    assert 10 <= len(sent) <= 14, "about one message per half lease (300 s) over an hour, not one per sample"
    assert sent[-1].end >= at(3599 + 300)


def test_a_restart_continues_the_current_run_and_limits():
    first = rules(runs={"metric": RUN_METRIC})
    first.observe(stream(RUN_METRIC, [7] * 100) + stream(SETPOINT, [3.0] * 100))
    stored = first.take()
    again = rules(iter(stored), runs={"metric": RUN_METRIC})  # the store's intervals after a restart
    again.observe(stream(SETPOINT, [3.0] * 50, start_s=130))  # the setpoint's message comes first
    again.observe(stream(RUN_METRIC, [7] * 50, start_s=130))
    made = stored + again.take()
    runs = final(made, ContextKind.RUN)
    assert len(runs) == 1 and runs[0].start == at(0) and runs[0].end >= at(179), "the same run goes on"
    assert len(final(made, ContextKind.LIMITS)) == 1
    other = rules(stored, runs={"metric": RUN_METRIC})
    other.observe(stream(RUN_METRIC, [9] * 10, start_s=130))
    runs = final(stored + other.take(), ContextKind.RUN)
    assert [(i.value, i.start, i.end) for i in runs] == [("7", at(0), at(130)), ("9", at(130), at(130 + 900))]


def test_limit_metrics_and_fixed_limits():
    pair = rules(limits={"metrics": {"lower": "temp_die", "upper": "temp_flange"}})
    pair.observe(stream("temp_die", [2.9] * 20) + stream("temp_flange", [3.1] * 10 + [3.2] * 10))
    limits = final(pair.take(), ContextKind.LIMITS)
    assert [(i.spec.lower, i.spec.upper, i.start) for i in limits] == [(2.9, 3.1, at(0)), (2.9, 3.2, at(10))]
    crossed = rules(limits={"metrics": {"lower": "temp_die", "upper": "temp_flange"}})
    crossed.observe(stream("temp_die", [3.5] * 5) + stream("temp_flange", [3.1] * 5))
    assert crossed.take() == [] and crossed.refused_limits > 0, "lower above upper is no limits interval"
    fixed = rules(limits={"fixed": [2.8, 3.2]}, runs={"metric": RUN_METRIC})
    fixed.observe(stream(RUN_METRIC, [1] * 10 + [2] * 10))
    limits = final(fixed.take(), ContextKind.LIMITS)
    assert [(i.spec.lower, i.start) for i in limits] == [(2.8, at(0)), (2.8, at(10))], "one per run"
    relative = rules(limits={"setpoint": SETPOINT, "relative_band": 0.05})
    relative.observe(stream(SETPOINT, [4.0] * 3))
    (only,) = final(relative.take(), ContextKind.LIMITS)
    assert (only.spec.lower, only.spec.upper, only.value) == (
        pytest.approx(3.8),
        pytest.approx(4.2),
        "setpoint 4 ± 5 %",
    )


def constant_scorer(level: float):
    payload = write_payload(
        LinearModel(weights=np.zeros(len(BASE.feature_names), dtype=np.float32), bias=level),
        model_id="extrusion-line-1",
        version="1.0.0",
        objective="reg:squarederror",
        base_score=0.0,
        features=BASE.feature_names,
    )
    return load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())


def with_live_context(block: dict) -> UseCaseConfig:
    return UseCaseConfig.model_validate({**BASE.model_dump(mode="json"), "live_context": block})


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"limits": {"setpoint": "od_sp", "band": 0.1}}, "live_context.limits.setpoint='od_sp' is not among metrics"),
        ({"runs": {"metric": "product"}}, "live_context.runs.metric='product' is not among metrics"),
        ({"runs": {"metric": TARGET}}, f"live_context.runs.metric={TARGET!r} is the target metric"),
        ({"limits": {"band": 0.1}}, "band=0.1 needs a centre: setpoint: <metric> + band"),
        ({"limits": {"setpoint": SETPOINT}}, f"setpoint={SETPOINT!r} needs exactly one of band"),
        ({"limits": {"setpoint": SETPOINT, "band": 0.1, "relative_band": 0.1}}, "needs exactly one of band"),
        ({"limits": {"fixed": [2.8, 3.2], "band": 0.1}}, "band=0.1: fixed limits take no band"),
        ({"limits": {"fixed": [3.2, 2.8]}}, "fixed=[3.2, 2.8]: lower must be below upper"),
        ({"limits": {"fixed": [2.8, 3.2], "setpoint": SETPOINT}}, "give one of fixed, setpoint, metrics"),
        ({"limits": {}}, "give one of fixed: [lower, upper], setpoint: <metric> + band"),
        ({}, "live_context needs runs"),
        ({"limits": {"fixed": [2.8, 3.2]}, "hold_samples": 0}, "hold_samples"),
        (
            {"limits": {"metrics": {"lower": "od_min", "upper": "temp_die"}}},
            "live_context.limits.metrics.lower='od_min' is not among metrics",
        ),
    ],
)
def test_a_live_context_block_is_refused_naming_field_and_value(block, message):
    with pytest.raises(ValidationError) as raised:
        with_live_context(block)
    assert message in str(raised.value)


def test_the_model_service_classifies_against_live_limits_and_keeps_them_across_a_restart(tmp_path):
    use_case = with_live_context({"runs": {"metric": RUN_METRIC}, "limits": {"setpoint": SETPOINT, "band": 0.1}})

    def start() -> ModelService:
        models = ModelService("gw-1", use_case, lambda report: None, state_dir=tmp_path, line_id=LINE)
        models.live.swap(constant_scorer(3.15))
        return models

    models = start()
    for metric, values in [(RUN_METRIC, [7] * 700), (SETPOINT, [3.0] * 700)]:
        models.add(stream(metric, values))
    models.add(
        [(m, START_MS + n * STEP_MS, 1.0) for n in range(700) for m in BASE.metrics if m not in (RUN_METRIC, SETPOINT)]
    )
    message = models.predict(START_MS + 699 * STEP_MS).prediction
    assert (message.spec.lower, message.spec.upper) == (pytest.approx(2.9), pytest.approx(3.1))
    assert message.violation_class.value == "usl_violation"
    run_id = live_interval_id(ContextKind.RUN, LINE, START_MS, "7")
    assert message.run_id == run_id
    forwarded = models.take_live_context()
    assert {i.kind for i in forwarded} == {ContextKind.RUN, ContextKind.LIMITS}
    assert models.take_live_context() == [], "each interval version is handed over once"
    restarted = start()
    assert restarted.context.run_at(at(650)) == run_id, "persisted in the context store"
    restarted.add(stream(RUN_METRIC, [7] * 5, start_s=1400))  # down 700 s, less than the lease
    (run,) = [i for i in restarted.take_live_context() if i.kind is ContextKind.RUN]
    assert (run.interval_id, run.start, run.end) == (run_id, at(0), at(1404 + 900)), "the same run goes on"


def test_the_greengrass_component_forwards_the_rules_intervals_to_the_context_intake(tmp_path, monkeypatch):
    use_case = with_live_context({"runs": {"metric": RUN_METRIC}})
    monkeypatch.setattr(component, "load_use_case", lambda name: use_case)
    settings = RunnerSettings(thing_name="gw-1", work_dir=tmp_path, line_id=LINE, use_case=use_case.use_case)
    runner = component.GreengrassModelRunner(settings, ipc_client=None)
    sent: list[tuple[str, bytes]] = []
    runner.messages = Outbox(sent.append)
    runner.models.add(stream(RUN_METRIC, [7] * 10 + [8] * 10))
    assert runner.take_context() == 0, "no adapter interval: the rules' are kept by the service"
    runner.messages.flush()
    ((topic, payload),) = sent
    assert topic == names.context_topic("gw-1")
    intervals = [ContextInterval.model_validate(d) for d in json.loads(payload)]
    assert [(i.value, i.start) for i in final(intervals, ContextKind.RUN)] == [("7", at(0)), ("8", at(10))]
    assert runner.models.context.run_at(at(15)) == intervals[-1].interval_id
