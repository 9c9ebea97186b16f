"""Prediction messages and the line's context on the gateway: ModelService.predict, ContextStore."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.greengrass_components.model_runner.context_store import (
    ContextRefused,
    ContextStore,
    intervals_from_document,
)
from edgeloop.greengrass_components.model_runner.service import CONTEXT_FILE, ModelService
from edgeloop.model_runtime.linear_format import LinearModel
from edgeloop.model_runtime.model_format import write_payload
from edgeloop.model_runtime.scorer import load_payload
from edgeloop.schemas import ContextInterval, load_use_case
from edgeloop.schemas.bounded_json import MessageDecodeError
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.prediction import PredictionMessage, decode_prediction

USE_CASE = load_use_case("extrusion")
TARGET = USE_CASE.target_metric
START_MS = 1_767_225_600_000
START = datetime.fromtimestamp(START_MS / 1000, UTC)
THING = "gw-line-1"


def constant_scorer(level: float, margin: float = 0.0):
    """A scorer predicting `level` whatever the window holds, deciding at `margin`."""
    payload = write_payload(
        LinearModel(weights=np.zeros(len(USE_CASE.feature_names), dtype=np.float32), bias=level),
        model_id="extrusion-line-1",
        version="1.0.0",
        objective="reg:squarederror",
        base_score=0.0,
        features=USE_CASE.feature_names,
        decision_margin=margin,
    )
    return load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())


def interval(kind: str, interval_id: str, start_s: int, end_s: int, lower=None, upper=None, line="line-1"):
    spec = {"target_metric": TARGET, "lower": lower, "upper": upper} if lower is not None else None
    return ContextInterval.model_validate(
        {
            "kind": kind,
            "interval_id": interval_id,
            "line_id": line,
            "start": START + timedelta(seconds=start_s),
            "end": START + timedelta(seconds=end_s),
            "spec": spec,
        }
    )


class WallClock:
    """The gateway's clock: event time (the simulator's) plus a skew."""

    def __init__(self, skew_s: float = 0.0) -> None:
        self.now = START
        self.skew = timedelta(seconds=skew_s)

    def __call__(self) -> datetime:
        return self.now + self.skew


def service(tmp_path, level: float = 3.0, margin: float = 0.0, skew_s: float = 0.0, line_id="line-1"):
    clock = WallClock(skew_s)
    models = ModelService(
        THING, USE_CASE, lambda report: None, state_dir=tmp_path / "model", line_id=line_id, wall_clock=clock
    )
    models.live.swap(constant_scorer(level, margin))
    return models, clock


def predict_at(models: ModelService, clock: WallClock, seconds: int):
    """Feed the line up to START + seconds and score the window due then."""
    simulator = ExtrusionLineSimulator("line-1", seed=3, start_ms=START_MS)
    models.add(simulator.advance(seconds))
    clock.now = START + timedelta(seconds=seconds)
    return models.predict(START_MS + seconds * 1000)


def test_a_prediction_is_its_own_message_keyed_by_when_it_was_made(tmp_path):
    models, clock = service(tmp_path, level=3.0)
    scored = predict_at(models, clock, 610)
    message = scored.prediction
    made_ms = (START_MS + 610_000) // 30_000 * 30_000
    assert message.made_at == datetime.fromtimestamp(made_ms / 1000, UTC)
    assert message.horizon_s == USE_CASE.horizon_s and message.predicted_level == pytest.approx(3.0)
    assert message.predicted_for == message.made_at + timedelta(seconds=USE_CASE.horizon_s)
    assert (message.model.model_id, message.model.version, message.model.precision.value) == (
        "extrusion-line-1",
        "1.0.0",
        "fp32",
    )
    assert message.violation_class is None and message.spec is None, "no limits known: no class"
    # sent 10 s after the window closed: 290 s of the 300 s horizon left
    assert message.lead_time_s == pytest.approx(USE_CASE.horizon_s - 10)
    # the legacy sample (the demo's live accuracy joins on it) is still produced
    assert scored.samples == [(USE_CASE.prediction_metric, made_ms + USE_CASE.horizon_s * 1000, pytest.approx(3.0))]
    assert decode_prediction(message.model_dump_json().encode()) == message


def test_a_gateway_clock_two_minutes_fast_keeps_every_prediction(tmp_path):
    fast, fast_clock = service(tmp_path / "fast", skew_s=120)
    true, true_clock = service(tmp_path / "true")
    fast_message = predict_at(fast, fast_clock, 610).prediction
    true_message = predict_at(true, true_clock, 610).prediction
    assert fast_message is not None
    assert fast_message.sent_at - true_message.sent_at == timedelta(seconds=120)
    # keyed by made_at + horizon, never checked as a future sample: it decodes whatever the skew
    assert decode_prediction(fast_message.model_dump_json().encode()).made_at == true_message.made_at
    assert fast_message.lead_time_s == true_message.lead_time_s - 120


def test_margin_flags_a_level_inside_the_limits(tmp_path):
    models, clock = service(tmp_path, level=3.18, margin=0.2)
    models.add_context([interval("run", "run-1", 0, 3600, lower=2.9, upper=3.2)])
    message = predict_at(models, clock, 610).prediction
    assert message.spec.upper == 3.2 and message.run_id == "run-1"
    assert message.model.decision_margin == pytest.approx(0.2)
    assert message.violation_class.value == "usl_violation", "3.18 > 3.2 - 0.2 x 0.15 = 3.17"
    at_margin_zero, clock0 = service(tmp_path / "zero", level=3.18)
    at_margin_zero.add_context([interval("run", "run-1", 0, 3600, lower=2.9, upper=3.2)])
    assert predict_at(at_margin_zero, clock0, 610).prediction.violation_class.value == "in_range"


def test_a_limits_interval_overrides_the_runs_limits_while_active(tmp_path):
    store = ContextStore("line-1", TARGET, None)
    store.add(
        [
            interval("run", "run-1", 0, 3600, lower=2.9, upper=3.2),
            interval("limits", "tight", 600, 1200, lower=3.0, upper=3.1),
            interval("state", "running", 0, 3600),
        ]
    )
    assert store.limits_at(START + timedelta(seconds=599)).upper == 3.2
    assert store.limits_at(START + timedelta(seconds=600)).upper == 3.1
    assert store.limits_at(START + timedelta(seconds=1200)).upper == 3.2, "end is exclusive"
    assert store.limits_at(START + timedelta(seconds=3600)) is None
    assert store.run_at(START + timedelta(seconds=10)) == "run-1"


def test_resending_an_interval_replaces_it(tmp_path):
    store = ContextStore("line-1", TARGET, None)
    store.add([interval("run", "run-1", 0, 600, lower=2.9, upper=3.2)])
    store.add([interval("run", "run-1", 0, 7200, lower=2.9, upper=3.2)])  # the adapter extends the open run
    assert len(store) == 1 and store.limits_at(START + timedelta(seconds=3600)) is not None


def test_run_and_limits_survive_a_restart(tmp_path):
    models, clock = service(tmp_path)
    models.add_context([interval("run", "run-1", 0, 3600, lower=2.9, upper=3.2)])
    assert (tmp_path / "model" / CONTEXT_FILE).exists()
    restarted, clock = service(tmp_path)  # a new process on the same work dir
    message = predict_at(restarted, clock, 610).prediction
    assert message.spec.upper == 3.2 and message.run_id == "run-1"


def test_a_torn_context_file_starts_without_context(tmp_path):
    path = tmp_path / CONTEXT_FILE
    path.write_text('[{"kind": "run"')
    assert len(ContextStore("line-1", TARGET, path)) == 0


def test_another_lines_or_targets_intervals_are_refused(tmp_path):
    store = ContextStore("line-1", TARGET, None)
    with pytest.raises(ContextRefused, match="line_id='line-2'"):
        store.add([interval("run", "run-2", 0, 60, lower=1.0, upper=2.0, line="line-2")])
    foreign = ContextInterval.model_validate(
        {
            **interval("limits", "l", 0, 60, lower=1.0, upper=2.0).model_dump(),
            "spec": {"target_metric": "melt_temp", "lower": 1.0, "upper": 2.0},
        }
    )
    with pytest.raises(ContextRefused, match="spec.target_metric='melt_temp'"):
        store.add([foreign])
    assert len(store) == 0


def test_local_context_messages_are_bounded_and_named():
    one = json.loads(interval("run", "run-1", 0, 60, lower=1.0, upper=2.0).model_dump_json())
    assert [i.interval_id for i in intervals_from_document(one)] == ["run-1"]
    assert len(intervals_from_document([one, one])) == 2
    with pytest.raises(ContextRefused, match=r"<context>\[0\]: .*end"):
        intervals_from_document({**one, "end": one["start"]})
    with pytest.raises(MessageDecodeError, match="MAX_CONTEXT_JSON"):
        intervals_from_document([one] * 1000)


def test_no_line_no_message(tmp_path):
    models, clock = service(tmp_path, line_id=None)
    scored = predict_at(models, clock, 610)
    assert scored.prediction is None and len(scored.samples) == 1


def test_prediction_message_refuses_a_class_without_limits():
    with pytest.raises(ValueError, match="a class needs the limits"):
        PredictionMessage.model_validate(
            {
                "thing_name": THING,
                "line_id": "line-1",
                "model": {"model_id": "m", "version": "1.0.0", "precision": "fp32", "decision_margin": 0.0},
                "target_metric": TARGET,
                "made_at": START,
                "horizon_s": 300,
                "label_window_s": 30,
                "predicted_level": 3.0,
                "violation_class": "usl_violation",
                "sent_at": START,
                "lead_time_s": 300.0,
            }
        )
