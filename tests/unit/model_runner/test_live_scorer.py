"""LiveScorer: the gateway's rolling window, aligned and featurised like the cloud's packs."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest
from linear_payloads import last_cold_od_payload

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import FaultKind, SensorFault, SimulatorConfig
from edgeloop.greengrass_components.model_runner.runner import LiveScorer
from edgeloop.model_runtime.scorer import load_payload
from edgeloop.schemas import load_use_case

USE_CASE = load_use_case("extrusion")
START_MS = 1_767_225_600_000


def linear_scorer(version: str = "1.0.0", bias: float = 0.0, features: list[str] | None = None, weight: float = 1.0):
    """A scorer predicting weight * (last cold OD of the window) + bias."""
    payload = last_cold_od_payload(version, bias=bias, weight=weight, features=features)
    return load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())


def fed_scorer(seconds: int = 600, config: SimulatorConfig | None = None) -> tuple[LiveScorer, list]:
    live = LiveScorer(USE_CASE)
    samples = ExtrusionLineSimulator("line-1", seed=3, start_ms=START_MS, config=config).advance(seconds)
    live.add(samples)
    return live, samples


def test_no_model_no_prediction_and_a_counted_reason():
    live, _ = fed_scorer()
    assert live.maybe_score(START_MS + 600_000) == []
    assert live.skipped["no_model"] == 1


def test_scores_the_stride_aligned_window_once():
    live, samples = fed_scorer(610)
    live.swap(linear_scorer())
    now = START_MS + 610_000
    window_end = now // 30_000 * 30_000
    predictions = live.maybe_score(now)
    last_cold = [v for m, t, v in samples if m == "cold_od_average" and t < window_end][-1]
    assert predictions == [("cold_od_average__predicted", window_end + 300_000, pytest.approx(last_cold, abs=1e-6))]
    assert live.maybe_score(now + 1000) == [], "the same window is not scored twice"
    live.add(ExtrusionLineSimulator("line-1", seed=3, start_ms=START_MS).advance(640)[6100:])
    assert len(live.maybe_score(START_MS + 640_000)) == 1
    assert live.predictions == 2


def test_features_equal_the_cloud_pack_features():
    from edgeloop.model_runtime.alignment import align_to_grid
    from edgeloop.model_runtime.features import pack_features

    live, samples = fed_scorer(900)
    end = START_MS + 900_000
    index = {m: i for i, m in enumerate(USE_CASE.metrics)}
    grid = align_to_grid(
        [t for _, t, _ in samples],
        [index[m] for m, _, _ in samples],
        [v for _, _, v in samples],
        n_metrics=len(index),
        start_ms=end - 300_000,
        n_steps=300,
        period_ms=1000,
        max_gap_ms=5000,
    )
    np.testing.assert_array_equal(live.window(end).features, pack_features(grid, USE_CASE))


def test_a_gap_skips_the_window():
    dropout = SensorFault(kind=FaultKind.DROPOUT, metric="pressure", start_s=400, duration_s=20)
    live, _ = fed_scorer(600, SimulatorConfig(faults=[dropout]))
    live.swap(linear_scorer())
    assert live.maybe_score(START_MS + 600_000) == []
    assert live.skipped["gap"] == 1 and live.skipped["gap:pressure"] == 1
    tolerant = LiveScorer(USE_CASE, max_missing_fraction=0.1)
    tolerant.add(
        ExtrusionLineSimulator("line-1", seed=3, start_ms=START_MS, config=SimulatorConfig(faults=[dropout])).advance(
            600
        )
    )
    tolerant.swap(linear_scorer())
    assert len(tolerant.maybe_score(START_MS + 600_000)) == 1


def test_window_before_enough_data_is_a_gap():
    live, _ = fed_scorer(100)
    live.swap(linear_scorer())
    assert live.maybe_score(START_MS + 90_000) == []
    assert live.skipped["gap"] == 1


def test_predictions_and_unknown_metrics_are_not_window_inputs():
    live = LiveScorer(USE_CASE)
    assert live.add([("cold_od_average__predicted", START_MS, 1.0), ("humidity", START_MS, 2.0)]) == 0
    assert live.latest_window() is None


def test_ring_keeps_only_the_retention_span():
    live, _ = fed_scorer(1800)
    ring_times = live._rings[0].times
    assert ring_times.max() - ring_times.min() <= live.retention_ms


def test_swap_refuses_other_features_and_rollback_restores():
    live = LiveScorer(USE_CASE)
    wrong = linear_scorer(features=[*USE_CASE.feature_names[:-1], "humidity__mean"])
    with pytest.raises(ValueError, match="feature_schema_hash"):
        live.swap(wrong)
    first, second = linear_scorer("1.0.0"), linear_scorer("1.1.0")
    assert live.swap(first) is None
    assert live.swap(second) is first
    assert live.rollback() is first and live.active is first
    assert live.rollback() is None


def test_swapping_while_scoring_from_another_thread():
    live = LiveScorer(USE_CASE)
    sim = ExtrusionLineSimulator("line-1", seed=3, start_ms=START_MS)
    live.add(sim.advance(900))
    models = [linear_scorer("1.0.0", weight=1.0), linear_scorer("2.0.0", weight=2.0)]
    live.swap(models[0])
    stop = threading.Event()

    def swapper():
        i = 0
        while not stop.is_set():
            live.swap(models[i % 2])
            i += 1
            time.sleep(0.0001)  # a busy loop would hold the GIL and starve the scoring thread

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        values = []
        for _ in range(90):
            live.add(sim.advance(30))
            values += [p[2] for p in live.maybe_score(sim.now_ms)]
    finally:
        stop.set()
        thread.join()
    assert len(values) == 90
    cold = np.median(live.recent_target_values())
    assert all(abs(v - cold) < 0.5 or abs(v - 2 * cold) < 1.0 for v in values)
