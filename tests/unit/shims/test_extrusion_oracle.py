"""The simulators' hidden-state records and the oracle built on them (edgeloop/oracle.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_training
from benchmarks.training_data import HIDDEN_FILE, START_MS, USE_CASE, ensure_examples
from edgeloop.cloud.packing.labels import predictable
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_hidden import EXTRUDED, LAST_ACTION_S, SPEED
from edgeloop.device_shims.pipe_extrusion import PipeExtrusionSimulator
from edgeloop.device_shims.pipe_extrusion_physics import (
    HIDDEN_LOT,
    HIDDEN_PRESSURE,
    HIDDEN_REGRIND_DOSED,
    HIDDEN_RPM,
    HIDDEN_TURNS,
)
from edgeloop.oracle import DEFAULT_PARAMS, fit_oracle, limits_by_horizon
from edgeloop.sagemaker_pipelines.steps.baselines import PERSISTENCE, score_baselines, score_predictions
from edgeloop.sagemaker_pipelines.steps.train import time_split
from edgeloop.schemas import load_use_case

SEED = 7


def test_recording_the_hidden_state_changes_no_sample():
    plain = ExtrusionLineSimulator("l", seed=SEED, start_ms=START_MS)
    recorded = ExtrusionLineSimulator("l", seed=SEED, start_ms=START_MS, record_hidden=True)
    for seconds in (1, 59, 3600, 1234):  # chunks that cut blocks anywhere
        for a, b in zip(plain.advance_arrays(seconds), recorded.advance_arrays(seconds), strict=True):
            np.testing.assert_array_equal(a, b)
    hidden = recorded.hidden_record()
    assert len(hidden) == len(np.concatenate(recorded.true_cold_od)) >= 1 + 59 + 3600 + 1234
    with pytest.raises(ValueError, match="record_hidden=True"):
        plain.hidden_record()


def test_hidden_features_at_a_pack_end_follow_the_record():
    simulator = ExtrusionLineSimulator("l", seed=SEED, start_ms=START_MS, record_hidden=True)
    simulator.advance(3 * 3600)
    hidden = simulator.hidden_record()
    ends_s = np.array([1800, 4321, 7200])
    features = hidden.features(START_MS + ends_s * 1000, np.full(3, 3.75), np.full(3, 3.85), 300, 30)
    extruded, speed = hidden.columns[EXTRUDED].astype(float), hidden.columns[SPEED].astype(float)
    truth = np.concatenate(simulator.true_cold_od)
    for row, end in enumerate(ends_s):
        last = end - 1  # the pack's newest second
        transit = int(np.clip(round(700.0 / speed[last] * 60), 1, 899))
        window = [extruded[u - transit] if u - transit <= last else extruded[last] for u in range(end + 300, end + 330)]
        assert features["hidden__forecast"][row] == pytest.approx(np.mean(window), abs=1e-9)
        assert features["hidden__extruded_now"][row] == pytest.approx(extruded[last])
        known = np.mean([u - transit <= last for u in range(end + 300, end + 330)])
        assert features["hidden__forecast_known_share"][row] == pytest.approx(known)
        assert features["hidden__operator_chances"][row] == _operator_chances(hidden, end, transit)
    labels = hidden.true_label(START_MS + ends_s * 1000, 300, 30)
    expected = [truth[end + 300 : end + 330].mean() for end in ends_s]
    np.testing.assert_allclose(labels, expected, rtol=1e-6)  # the record keeps float32


def _operator_chances(hidden, end: int, transit: int) -> int:
    """Block starts at which the operators' rule calls for a correction that still reaches the label."""
    extruded, last = hidden.columns[EXTRUDED].astype(float), end - 1
    last_action = hidden.columns[LAST_ACTION_S][last]
    chances = 0
    for start in range(-(-end // 60) * 60, end + 330 - transit + 1, 60):
        seen = [extruded[u - transit] if u - transit <= last else extruded[last] for u in range(start - 60, start, 5)]
        off = abs(np.mean(seen) - 3.8) / 0.05  # in tolerances (half the band 3.75-3.85)
        chances += start - last_action >= 300 and off > 0.6
    return chances


def test_the_pipe_recording_carries_what_is_on_its_way_to_the_die():
    recording = PipeExtrusionSimulator(seed=3).record(START_MS, 4 * 3600)
    hidden = recording.hidden
    assert hidden is not None and len(hidden) == len(recording.time_ms)
    c = hidden.columns
    last = np.array([3000, 5000])  # steps of 2 s
    ahead = np.array([[300.0, 330.0], [300.0, 330.0]])
    regrind, lot, known = hidden.blend_at_die(last, ahead)
    for i, step in enumerate(last):
        for j, seconds in enumerate(ahead[i]):
            origin = c[HIDDEN_TURNS][step] + c[HIDDEN_RPM][step] / 60 * seconds - hidden.transport_revolutions
            source = int(np.argmax(c[HIDDEN_TURNS] >= origin)) if origin <= c[HIDDEN_TURNS][step] else step
            assert known[i, j] == (origin <= c[HIDDEN_TURNS][step])
            assert regrind[i, j] == c[HIDDEN_REGRIND_DOSED][source] and lot[i, j] == c[HIDDEN_LOT][source]
    end_ms = recording.time_ms[last] + 2000
    label = hidden.true_label(end_ms, 300, 60)
    np.testing.assert_allclose(label, [c[HIDDEN_PRESSURE][s + 151 : s + 181].mean() for s in last])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One simulated day as bench-training caches it: examples and the hidden record."""
    return ensure_examples(1, seed=SEED, root=tmp_path_factory.mktemp("bench-data"))


@pytest.fixture(scope="module")
def stretch(tiny):
    config = load_use_case(USE_CASE)
    split = time_split(predictable(tiny.examples(), config), config)
    return split, tiny.hidden(), config


def test_the_oracle_beats_persistence_on_a_short_stretch(stretch):
    split, hidden, config = stretch
    oracle = fit_oracle(split.train, hidden, config)
    levels = oracle.predict(split.test)
    scored = score_predictions(levels, split.test, n_train=len(split.train), horizon_s=config.horizon_s,
                               margin=oracle.margin)  # fmt: skip
    persistence = score_baselines(split.test, config)[PERSISTENCE]
    assert scored.rmse < 0.8 * persistence.rmse
    assert scored.violation_f1 > persistence.violation_f1
    assert 0 <= oracle.margin < 1 and oracle.feature_names[: len(config.feature_names)] == config.feature_names
    assert any(name.startswith("hidden__") for name in oracle.feature_names)


def test_the_limit_by_horizon_uses_the_true_target(stretch):
    split, hidden, config = stretch
    small = {**DEFAULT_PARAMS, "n_estimators": 40}
    limits = limits_by_horizon(split.train, split.test, hidden, config, (60, 300), params=small)
    assert [limit.horizon_s for limit in limits] == [60, 300]
    assert all(0 < limit.violation_share < 0.5 for limit in limits)
    shorter, longer = (limit.recall_at_goal_precision for limit in limits)
    assert shorter is not None and (longer is None or shorter >= longer)  # nearer is easier


def test_window_ends_outside_the_record_are_refused_by_name():
    simulator = ExtrusionLineSimulator("l", seed=SEED, start_ms=START_MS, record_hidden=True)
    simulator.advance(600)
    hidden = simulator.hidden_record()
    with pytest.raises(ValueError, match="window_end .* outside the hidden record"):
        hidden.features(np.array([START_MS + 10_000_000]), np.ones(1), np.ones(1) * 2, 300, 30)
    assert isinstance(hidden.features(np.array([START_MS + 400_000]), np.ones(1), np.ones(1) * 2, 60, 30), pd.DataFrame)


# --- bench-training's oracle figures (benchmarks/training_oracle.py): every name written ---------------

ORACLE = (
    "rmse_ratio_vs_persistence",
    "f1_violation",
    "f1_violation_persistence",
    "precision_violation",
    "recall_violation",
    "decision_margin",
    "recall_violation_oracle",
    "precision_violation_oracle",
    "recall_violation_oracle_at_goal_precision",
    "recall_violation_at_goal_precision",
    "recall_ratio_vs_oracle",
    "recall_ratio_vs_oracle_at_goal_precision",
    "recall_goal_met",
    "lead_time_median_s",
    "decision_margin_oracle",
    "rmse_oracle_tuned",
    "precision_violation_oracle_tuned",
    "recall_violation_oracle_tuned",
)


def _check(results: dict, prefix: str, horizons: tuple[int, ...]) -> None:
    names = {f"{prefix}{name}" for name in ORACLE}
    names |= {f"{prefix}recall_violation_oracle_at_goal_precision_h{h}s" for h in horizons}
    assert names <= set(results), sorted(names - set(results))
    for name in names:
        value, unit = results[name]
        assert isinstance(value, float) and unit, name
        if ("recall" in name or "precision" in name) and "ratio" not in name:
            assert math.isnan(value) or 0 <= value <= 1, (name, value)
    recall, oracle = results[f"{prefix}recall_violation"][0], results[f"{prefix}recall_violation_oracle"][0]
    if oracle > 0:
        assert results[f"{prefix}recall_ratio_vs_oracle"][0] == pytest.approx(recall / oracle)
    assert results[f"{prefix}recall_goal_met"][0] in (0.0, 1.0)


def test_the_extrusion_bench_writes_every_oracle_figure(tiny):
    assert (tiny.path.parent / HIDDEN_FILE).exists()
    config = load_use_case(USE_CASE)
    results = bench_training.benchmark(tiny.examples(), config, 12, hidden=tiny.hidden(), horizons_s=(60, 300))
    _check(results, "quality.", (60, 300))
    # the oracle sees what the model sees and more
    assert results["quality.rmse_oracle_tuned"][0] < results["quality.rmse_persistence"][0]


def test_the_second_line_writes_every_oracle_figure(monkeypatch):
    generated = bench_training.pipe_examples

    def one_draw_per_template(days):  # the names are the subject here, not the search: keep it short
        examples, config = generated(days)
        training = config.training.model_copy(update={"candidates_per_template": 1})
        return examples, config.model_copy(update={"training": training})

    monkeypatch.setattr(bench_training, "pipe_examples", one_draw_per_template)
    results = bench_training.second_line(1, horizons_s=())  # the horizons' names: the extrusion test above
    _check(results, "quality2.", ())
