"""The simulated extrusion line: deterministic, physically causal, fast enough for the demo."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import METRICS, FaultKind, SensorFault, SimulatorConfig
from edgeloop.schemas import ContextKind, load_use_case

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _arrays(samples):
    metric = np.array([m for m, _, _ in samples])
    time_ms = np.array([t for _, t, _ in samples], dtype=np.int64)
    value = np.array([v for _, _, v in samples])
    return metric, time_ms, value


def test_metrics_are_exactly_the_use_case_metrics_at_1_hz():
    sim = ExtrusionLineSimulator("line-1", seed=1, start_ms=START_MS)
    samples = sim.advance(120)
    assert tuple(load_use_case("extrusion").metrics) == METRICS
    metric, time_ms, value = _arrays(samples)
    assert set(metric) == set(METRICS)
    assert len(samples) == 120 * len(METRICS)
    assert time_ms.min() == START_MS and time_ms.max() == START_MS + 119_000
    assert np.all(np.diff(time_ms) >= 0), "samples are ordered by time"
    assert np.isfinite(value).all()
    assert sim.now_ms == START_MS + 120_000


def test_same_seed_same_samples_whatever_the_chunking():
    whole = ExtrusionLineSimulator("line-1", seed=5, start_ms=START_MS).advance(1800)
    chunked_sim = ExtrusionLineSimulator("line-1", seed=5, start_ms=START_MS)
    chunked = []
    for seconds in (1, 59, 37, 600, 3, 1100):
        chunked += chunked_sim.advance(seconds)
    assert chunked == whole
    other = ExtrusionLineSimulator("line-1", seed=6, start_ms=START_MS).advance(1800)
    assert other != whole


def _run_violation_share(seed: int) -> tuple[float, int, int]:
    sim = ExtrusionLineSimulator("line-1", seed=seed, start_ms=START_MS)
    metric_index, time_ms, value = sim.advance_arrays(8 * 3600)
    cold = metric_index == METRICS.index("cold_od_average")
    below = above = total = 0
    for run in (i for i in sim.context_intervals() if i.kind is ContextKind.RUN):
        start, end = run.start.timestamp() * 1000, run.end.timestamp() * 1000
        inside = cold & (time_ms >= start) & (time_ms < end)
        below += int((value[inside] < run.spec.lower).sum())
        above += int((value[inside] > run.spec.upper).sum())
        total += int(inside.sum())
    return (below + above) / total, below, above


def test_real_spec_violations_happen_on_both_sides():
    shares, lsl, usl = [], 0, 0
    for seed in (1, 2, 3):
        share, below, above = _run_violation_share(seed)
        shares.append(share)
        lsl, usl = lsl + below, usl + above
    assert 0.03 < np.mean(shares) < 0.2, shares
    assert lsl > 0 and usl > 0


def test_cold_od_lags_hot_od_by_the_cooling_transit():
    sim = ExtrusionLineSimulator("line-1", seed=3, start_ms=START_MS)
    metric, time_ms, value = _arrays(sim.advance(3 * 3600))
    run = next(i for i in sim.context_intervals() if i.kind is ContextKind.RUN)
    end_s = int((run.end.timestamp() * 1000 - START_MS) // 1000)
    hot = (value[metric == "hot_od_x"] + value[metric == "hot_od_y"])[:end_s] / 2
    cold = value[metric == "cold_od_average"][:end_s]
    hot, cold = (hot - hot.mean()) / hot.std(), (cold - cold.mean()) / cold.std()
    lags = np.arange(0, 600, 5)
    correlation = [np.corrcoef(hot[: len(hot) - lag], cold[lag:])[0, 1] for lag in lags]
    best = int(lags[int(np.argmax(correlation))])
    assert 150 <= best <= 320, f"cold OD follows hot OD after {best} s"
    assert max(correlation) > 0.8
    assert correlation[0] < max(correlation) - 0.1, "without the delay the two agree much less"


def test_context_covers_the_simulated_time_with_runs_states_and_shifts():
    sim = ExtrusionLineSimulator("line-2", seed=4, start_ms=START_MS)
    sim.advance_arrays(10 * 3600)
    intervals = sim.context_intervals()
    runs = sorted((i for i in intervals if i.kind is ContextKind.RUN), key=lambda i: i.start)
    states = sorted((i for i in intervals if i.kind is ContextKind.STATE), key=lambda i: i.start)
    shifts = sorted((i for i in intervals if i.kind is ContextKind.SHIFT), key=lambda i: i.start)
    assert len(runs) >= 3
    assert all(r.spec and r.spec.target_metric == "cold_od_average" and r.line_id == "line-2" for r in runs)
    # states tile the whole span without overlap: running, changeover, running, ...
    assert states[0].start.timestamp() * 1000 == START_MS
    assert states[-1].end.timestamp() * 1000 == START_MS + 10 * 3600 * 1000
    assert all(a.end == b.start for a, b in zip(states, states[1:]))
    assert {s.value for s in states} == {"running", "changeover"}
    assert [s.value for s in shifts][:2] == ["night", "early"]  # 00:00 is in the night shift
    ids = [i.interval_id for i in intervals]
    assert len(ids) == len(set(ids))
    truncated = sim.context_intervals(until_ms=START_MS + 3600 * 1000)
    assert max(i.end.timestamp() for i in truncated) * 1000 == START_MS + 3600 * 1000
    assert truncated[0].interval_id == intervals[0].interval_id, "ids are stable across calls"


def test_per_sensor_rates():
    config = SimulatorConfig(sample_period_s={"pressure": 0.5, "temp_flange": 5})
    metric, time_ms, _ = _arrays(
        ExtrusionLineSimulator("line-1", seed=1, start_ms=START_MS, config=config).advance(100)
    )
    assert (metric == "pressure").sum() == 200
    assert (metric == "temp_flange").sum() == 20
    assert (metric == "speed").sum() == 100
    assert set(np.diff(time_ms[metric == "temp_flange"])) == {5000}


def test_faults_stuck_dropout_spikes():
    faults = [
        SensorFault(kind=FaultKind.STUCK, metric="temp_die", start_s=100, duration_s=300),
        SensorFault(kind=FaultKind.DROPOUT, metric="pressure", start_s=200, duration_s=60),
        SensorFault(kind=FaultKind.SPIKES, metric="hot_od_x", start_s=0, duration_s=600, spike_probability=0.2),
    ]
    config = SimulatorConfig(faults=faults)
    metric, time_ms, value = _arrays(
        ExtrusionLineSimulator("line-1", seed=2, start_ms=START_MS, config=config).advance(600)
    )
    offset_s = (time_ms - START_MS) / 1000
    stuck = value[(metric == "temp_die") & (offset_s >= 100) & (offset_s < 400)]
    assert len(stuck) == 300 and len(set(stuck)) == 1, "stuck across block boundaries, one value"
    assert len(set(value[(metric == "temp_die") & (offset_s >= 400)])) > 30
    pressure_times = offset_s[metric == "pressure"]
    assert len(pressure_times) == 540 and not ((pressure_times >= 200) & (pressure_times < 260)).any()
    hot = value[metric == "hot_od_x"]
    outliers = np.abs(hot - np.median(hot)) > 0.3
    assert 60 < outliers.sum() < 180


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="wind_speed"):
        SimulatorConfig(sample_period_s={"wind_speed": 1.0})
    with pytest.raises(ValueError, match="faults"):
        SimulatorConfig(faults=[SensorFault(kind=FaultKind.STUCK, metric="nope", start_s=0, duration_s=1)])
    with pytest.raises(ValueError, match="seconds"):
        ExtrusionLineSimulator("line-1", seed=1, start_ms=START_MS).advance(-1)


def test_three_lines_times_eight_hours_in_a_few_seconds():
    started = time.perf_counter()
    total = 0
    for line in range(3):
        sim = ExtrusionLineSimulator(f"line-{line + 1}", seed=line, start_ms=START_MS)
        for _ in range(8 * 60):
            total += len(sim.advance(60))
    elapsed = time.perf_counter() - started
    assert total == 3 * 8 * 3600 * len(METRICS)
    assert elapsed < 8.0, f"{elapsed:.1f} s"
