"""decide_retraining, the one rule of when a line's pipeline runs again (pure: no AWS)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from edgeloop.cloud.pipeline_execution import DESCRIPTION_MAX, DISPLAY_NAME_MAX, TOKEN_MAX, TOKEN_MIN
from edgeloop.cloud.retraining import (
    LineRetraining,
    TriggerKind,
    decide_retraining,
    degraded_trigger,
)
from edgeloop.schemas.monitoring import MonitoringConfig

NOW = datetime(2026, 12, 6, 13, 20, tzinfo=UTC)
PIPELINE = "edgeloop-extrusion"
CONFIG = MonitoringConfig(retrain_every_days=7, retrain_cooldown_hours=24)
# botocore sagemaker service-2.json, PipelineExecutionName
DISPLAY_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}$")
DETAIL = {
    "line_id": "line-1",
    "model_id": "extrusion-line-1",
    "version": "1.0.3",
    "reason": "live RMSE 0.41 is 2.1x the registered 0.19",
    "windows": ["2026-12-06T10:00:00Z", "2026-12-06T11:00:00Z", "2026-12-06T12:00:00Z"],
}


def state(line_id: str, started: datetime, kind=TriggerKind.SCHEDULED, token="t" * 40, arn="arn:x") -> LineRetraining:
    return LineRetraining(line_id=line_id, started_at=started, trigger=kind, reason="r", token=token, execution_arn=arn)


def decide(**overrides):
    arguments = {"config": CONFIG, "now": NOW, "lines": [], "states": {}, "pipeline_name": PIPELINE}
    return {d.line_id: d for d in decide_retraining(**{**arguments, **overrides})}


def test_a_degraded_line_starts_with_its_finding_as_the_trigger():
    trigger = degraded_trigger(DETAIL, NOW)
    (decision,) = decide(degraded=[trigger]).values()
    assert decision.start and decision.trigger == trigger and decision.trigger.kind is TriggerKind.DEGRADED


def test_the_schedule_starts_lines_whose_last_start_is_retrain_every_days_old_and_never_started_ones():
    states = {"old": state("old", NOW - timedelta(days=7)), "fresh": state("fresh", NOW - timedelta(days=6))}
    decisions = decide(lines=["old", "fresh", "new"], states=states)
    assert {line: d.start for line, d in decisions.items()} == {"old": True, "fresh": False, "new": True}
    assert decisions["fresh"].why == f"next scheduled start at {(NOW + timedelta(days=1)).isoformat()}"
    assert decisions["old"].trigger.kind is TriggerKind.SCHEDULED


def test_no_schedule_when_retrain_every_days_is_none():
    config = MonitoringConfig(retrain_every_days=None)
    decisions = decide(config=config, lines=["a"], states={})
    assert not decisions["a"].start and decisions["a"].why == "scheduled retraining is off"
    assert decide(config=config, degraded=[degraded_trigger({**DETAIL, "line_id": "a"}, NOW)])["a"].start


def test_a_degraded_line_is_held_within_the_cool_down_and_while_an_execution_is_executing():
    trigger = degraded_trigger(DETAIL, NOW)
    held = decide(degraded=[trigger], states={"line-1": state("line-1", NOW - timedelta(hours=23))})["line-1"]
    assert not held.start and held.why.startswith("within the cool-down: last start")
    assert "retrain_cooldown_hours=24.0" in held.why
    free = decide(degraded=[trigger], states={"line-1": state("line-1", NOW - timedelta(hours=24))})["line-1"]
    assert free.start
    running = decide(degraded=[trigger], running={"line-1": "arn:running"})["line-1"]
    assert not running.start and running.why == "an execution of line line-1 is Executing: arn:running"


def test_a_trigger_that_already_started_its_execution_starts_nothing_again_but_may_finish_its_own_claim():
    trigger = degraded_trigger(DETAIL, NOW)
    token = trigger.token(PIPELINE)
    done = state("line-1", NOW, TriggerKind.DEGRADED, token=token, arn="arn:started")
    assert decide(degraded=[trigger], states={"line-1": done})["line-1"].why == (
        "already started by this degraded trigger: arn:started"
    )
    claimed = state("line-1", NOW, TriggerKind.DEGRADED, token=token, arn=None)
    assert decide(degraded=[trigger], states={"line-1": claimed})["line-1"].start


def test_the_token_is_the_same_for_a_redelivered_finding_and_differs_for_a_new_window_or_line():
    first = degraded_trigger(DETAIL, NOW).token(PIPELINE)
    assert degraded_trigger(DETAIL, NOW + timedelta(minutes=5)).token(PIPELINE) == first
    later = {**DETAIL, "windows": [*DETAIL["windows"], "2026-12-06T13:00:00Z"]}
    assert degraded_trigger(later, NOW).token(PIPELINE) != first
    assert degraded_trigger({**DETAIL, "line_id": "line-2"}, NOW).token(PIPELINE) != first
    assert TOKEN_MIN <= len(first) <= TOKEN_MAX


def test_lineage_names_fit_sagemaker_constraints():
    long_reason = "x" * 5000 + "\nsecond line"
    trigger = degraded_trigger({**DETAIL, "line_id": "l" + "_9" * 31, "reason": long_reason}, NOW)
    name = trigger.display_name()
    assert DISPLAY_NAME.match(name) and len(name) <= DISPLAY_NAME_MAX and "-degraded-20261206-132000" in name
    description = trigger.description()
    assert len(description) <= DESCRIPTION_MAX and "\n" not in description
    short = degraded_trigger(DETAIL, NOW).description()
    assert short == (
        "edgeloop retraining of line line-1: degraded at 2026-12-06T13:20:00+00:00 (live RMSE 0.41 is 2.1x the "
        "registered 0.19); model extrusion-line-1 1.0.3; windows 2026-12-06T10:00:00+00:00 .. 2026-12-06T12:00:00+00:00"
    )


@pytest.mark.parametrize("detail", [{}, {"line_id": ""}, "line-1", None])
def test_a_degraded_detail_without_a_line_is_refused_naming_it(detail):
    with pytest.raises(ValueError, match="line_id is missing"):
        degraded_trigger(detail, NOW)


def test_a_degraded_line_id_must_be_an_identifier():
    with pytest.raises(ValueError, match="line_id"):
        degraded_trigger({**DETAIL, "line_id": "Line 1"}, NOW)


def test_a_degraded_detail_is_held_to_live_accuracys_contract_naming_the_field():
    with pytest.raises(ValueError, match=r"degraded event of line 'line-1': version='v3': .*not MAJOR.MINOR.PATCH"):
        degraded_trigger({**DETAIL, "version": "v3"}, NOW)
    with pytest.raises(ValueError, match=r"windows=\[\]"):
        degraded_trigger({**DETAIL, "windows": []}, NOW)
