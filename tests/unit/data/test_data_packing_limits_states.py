"""Packer with limits that move within a run and machine states: labels are classed against the limits
in force at the label's time; packs in a non-productive state are left out and counted."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from test_data_packing import T0, T0_MS, TARGET, USE_CASE, curated, run

from edgeloop.cloud.packing.examples import assemble_examples
from edgeloop.greengrass_components.model_runner.runner import LiveScorer
from edgeloop.schemas import (
    ContextInterval,
    ContextKind,
    SpecLimits,
    UseCaseConfig,
    ViolationClass,
    feature_schema_hash,
    load_use_case,
)

LSL, IN_RANGE, USL = ViolationClass.LSL.value, ViolationClass.IN_RANGE.value, ViolationClass.USL.value
RUNNING_ONLY = USE_CASE.model_copy(update={"productive_states": ["running"]})
# tiny use case: a pack starting at s has window [s, s+10), label time s+15, label window [s+15, s+19)


def limits(interval_id: str, start_s: int, end_s: int, lower: float, upper: float) -> ContextInterval:
    return ContextInterval(
        kind=ContextKind.LIMITS,
        interval_id=interval_id,
        line_id="line-1",
        start=T0 + timedelta(seconds=start_s),
        end=T0 + timedelta(seconds=end_s),
        spec=SpecLimits(target_metric=TARGET, lower=lower, upper=upper),
    )


def state(value: str, start_s: int, end_s: int) -> ContextInterval:
    return ContextInterval(
        kind=ContextKind.STATE,
        interval_id=f"{value}-{start_s}",
        line_id="line-1",
        start=T0 + timedelta(seconds=start_s),
        end=T0 + timedelta(seconds=end_s),
        value=value,
    )


def starts_of(examples) -> list[float]:
    return [(ts - T0).total_seconds() for ts in examples["window_start"]]


def test_limits_that_move_mid_run_class_each_label_by_the_limits_at_its_time():
    # target 2.0 throughout; the run's limits [1, 3], then from 20 s [2.5, 3.5] (2.0 is below), then from
    # 35 s [0.5, 1.5] (2.0 is above)
    intervals = [run("r1", 0, 60), limits("up", 20, 35, 2.5, 3.5), limits("down", 35, 60, 0.5, 1.5)]
    examples = assemble_examples(curated(0, 60), intervals, USE_CASE).examples

    assert starts_of(examples) == [0, 5, 10, 15, 20, 25, 30, 35, 40]  # label times 15, 20, ..., 55
    assert list(examples["label_class"]) == [IN_RANGE, LSL, LSL, LSL, USL, USL, USL, USL, USL]
    np.testing.assert_array_equal(examples["spec_lower"], [1.0, 2.5, 2.5, 2.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(examples["spec_upper"], [3.0, 3.5, 3.5, 3.5, 1.5, 1.5, 1.5, 1.5, 1.5])


def test_a_run_without_limits_of_its_own_uses_its_limits_intervals_and_drops_packs_without_any():
    intervals = [run("r1", 0, 60, spec=False), limits("l1", 30, 60, 1.0, 3.0)]
    build = assemble_examples(curated(0, 60), intervals, USE_CASE)

    assert starts_of(build.examples) == [15, 20, 25, 30, 35, 40]  # label time >= 30 s
    assert (build.examples["label_class"] == IN_RANGE).all() and (build.examples["spec_lower"] == 1.0).all()
    assert build.stats.runs_without_spec == 0 and build.stats.dropped_no_spec == 3


def test_packs_in_a_non_productive_state_are_left_out_and_counted():
    # idle from 20 to 30 s with the target at 0 (it would be an LSL label); a pack is used only if the line
    # is productive from its start to its label window's end (s+19): starts 5..25 touch the idle spell
    idle_target = lambda k: 0.0 if 20 <= k < 30 else 2.0  # noqa: E731
    intervals = [run("r1", 0, 60), state("running", 0, 20), state("idle", 20, 30), state("running", 30, 60)]
    build = assemble_examples(curated(0, 60, target=idle_target), intervals, RUNNING_ONLY)

    assert starts_of(build.examples) == [0, 30, 35, 40]
    assert (build.examples["label_class"] == IN_RANGE).all()
    assert build.stats.excluded_non_productive == 5
    assert build.unlabeled.empty
    stats = build.stats  # every pack cut is counted once
    assert stats.packs_cut == (
        stats.dropped_label_outside_run + stats.excluded_non_productive + stats.dropped_no_spec
        + stats.dropped_label_too_sparse + stats.dropped_empty + stats.examples
    )  # fmt: skip

    # the same data where every state is productive (the default) keeps all 9 packs, idle labels included
    everything = assemble_examples(curated(0, 60, target=idle_target), intervals, USE_CASE)
    assert len(everything.examples) == 9 and (everything.examples["label_class"] == LSL).sum() == 2
    assert everything.stats.excluded_non_productive == 0


def test_no_state_interval_counts_as_productive_and_idle_packs_leave_the_review_queue_too():
    # states only from 30 s: idle; before that no state interval is active (productive). The target is
    # too sparse to label after 40 s, so those packs would be proposed for review, were they productive.
    sparse_late = lambda k: 2.0 if k < 40 else None  # noqa: E731
    intervals = [run("r1", 0, 60), state("idle", 30, 60)]
    build = assemble_examples(curated(0, 60, target=sparse_late), intervals, RUNNING_ONLY)

    assert starts_of(build.examples) == [0, 5, 10]  # s + 19 <= 30
    assert build.unlabeled.empty
    assert build.stats.excluded_non_productive == 6


@pytest.mark.parametrize("states", [[], ["running", "running"]])
def test_productive_states_is_a_non_empty_list_or_left_out(states):
    document = USE_CASE.model_dump() | {"productive_states": states}
    if not states:
        with pytest.raises(ValueError, match="productive_states"):
            UseCaseConfig.model_validate(document)
    else:
        assert UseCaseConfig.model_validate(document).is_productive_state("running")
    assert USE_CASE.is_productive_state("idle") and RUNNING_ONLY.is_productive_state(None)
    assert not RUNNING_ONLY.is_productive_state("idle")


# --- the gateway's counterpart: no scoring in a non-productive state ------------------------------


class _ConstantScorer:
    """Stands in for a loaded payload: the live scorer only needs these."""

    def __init__(self, use_case: UseCaseConfig) -> None:
        self.feature_schema_hash = feature_schema_hash(use_case.feature_names)
        self.model_id, self.version = "m", "1.0.0"

    def predict_one(self, features: np.ndarray) -> float:
        return 1.0


def _live_samples(use_case: UseCaseConfig, seconds: int, idle: range) -> list[tuple[str, int, float]]:
    """Every metric at 50 each second, but screw_rpm 0 during `idle`."""
    return [
        (metric, T0_MS + k * 1000, 0.0 if metric == "screw_rpm" and k in idle else 50.0)
        for k in range(seconds)
        for metric in use_case.metrics
    ]


def test_the_gateway_does_not_score_a_window_with_a_step_in_a_non_productive_state():
    base = load_use_case("extrusion")  # productive_states: [running]; 300 s windows every 30 s
    rules = [{"when": "screw_rpm < 1", "state": "idle"}, {"when": ["speed > 0", "screw_rpm >= 1"], "state": "running"}]
    gated = UseCaseConfig.model_validate(base.model_dump() | {"state_rules": rules})
    samples = _live_samples(gated, 1000, idle=range(400, 430))
    outcomes = {}
    for use_case in (gated, base):
        live = LiveScorer(use_case)
        live.swap(_ConstantScorer(use_case))
        live.add(samples[: 600 * len(use_case.metrics)])
        idle_window = live.maybe_score(T0_MS + 600_000)  # [300 s, 600 s) holds the idle spell
        live.add(samples[600 * len(use_case.metrics) :])
        later = live.maybe_score(T0_MS + 1_000_000)  # [690 s, 990 s): running again
        outcomes[use_case is gated] = (len(idle_window), len(later), dict(live.skipped))

    assert outcomes[True] == (0, 1, {"non_productive": 1, "non_productive:idle": 1})
    assert outcomes[False] == (1, 1, {}), "without state rules every window is scored"


@pytest.mark.parametrize(
    ("rules", "productive", "message"),
    [
        ([{"when": "rpm < 1", "state": "idle"}], ["running"], r"state_rules\[0\] \(state 'idle'\): metrics \['rpm'\]"),
        ([{"when": "screw_rpm ~ 1", "state": "idle"}], ["running"], r"when='screw_rpm ~ 1' is not"),
        ([{"when": "screw_rpm < 1", "state": "idle"}], None, r"productive_states is not set"),
    ],
)
def test_bad_state_rules_are_named(rules, productive, message):
    document = load_use_case("extrusion").model_dump() | {"state_rules": rules, "productive_states": productive}
    with pytest.raises(ValueError, match=message):
        UseCaseConfig.model_validate(document)


def test_a_new_model_is_judged_only_on_a_productive_window():
    from edgeloop.greengrass_components.model_runner.service import ModelService

    base = load_use_case("extrusion")
    rules = [{"when": "screw_rpm < 1", "state": "idle"}]
    gated = UseCaseConfig.model_validate(base.model_dump() | {"state_rules": rules})
    service = ModelService("gw-1", gated, lambda report: None, state_dir=None)
    service.live.add(_live_samples(gated, 400, idle=range(350, 400)))  # the newest window ends idle
    assert service.live.latest_window().complete and not service.ready_for_health_check()
    service.live.add(_live_samples(gated, 800, idle=range(0))[400 * len(gated.metrics) :])
    assert service.ready_for_health_check()
