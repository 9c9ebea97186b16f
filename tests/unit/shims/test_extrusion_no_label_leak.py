"""The simulator must not leak the label: cold OD 5 minutes ahead is not a function of the past.

If the future target were fixed by the readings up to the end of a pack (say the simulator drew a
whole run's cold OD ahead of time, or the label were a deterministic map of today's inputs), the
quality benchmark would measure a leak, not a model. The test forks one simulated line at a time t:
N simulators with the same seed are advanced to t and give bit-identical readings and context; then
every fork but the first gets a fresh stream for the random events after t (material wander and
batch steps, speed changes, operator corrections, sensor noise). The simulator draws every one of
those from one generator (`_rng`; the schedule has its own, left alone), so replacing that
generator at a block boundary is exactly "the same past, a different future" - there is no public
hook for it, hence the private attribute.

The label window [t + 300 s, t + 330 s) sees cable extruded 2.8-5.8 minutes (the cooling transit)
before, i.e. mostly after t: its true cold OD must then differ between forks, by more than sensor noise, while a
fork given the original stream reproduces the original exactly (so the difference comes from the
future's randomness alone).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from edgeloop.device_shims.extrusion import BLOCK_S, SENSOR_NOISE, ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import METRICS
from edgeloop.schemas import ContextKind, load_use_case

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEED = 7
FORKS = 8


def _fork_time_s() -> int:
    """A block boundary inside a run, with the label window (and more) still inside that run."""
    use_case = load_use_case("extrusion")
    needed_s = use_case.horizon_s + use_case.label_window_s + BLOCK_S
    probe = ExtrusionLineSimulator("line-1", seed=SEED, start_ms=START_MS)
    probe.advance(6 * 3600)
    for segment in probe.segments():
        if segment.kind == "run" and segment.start_s >= 3600 and segment.end_s - segment.start_s >= 2 * needed_s:
            return segment.start_s + 30 * 60  # runs are whole blocks; 30 min in is a block boundary too
    raise AssertionError("no run long enough in the first 6 simulated hours")


def _forked_futures(fork_s: int) -> tuple[list[tuple], list[np.ndarray], list[list]]:
    """Per fork: readings up to fork_s, true cold OD per second after fork_s, context up to fork_s."""
    past, future_truth, context = [], [], []
    for fork in range(FORKS):
        simulator = ExtrusionLineSimulator("line-1", seed=SEED, start_ms=START_MS)
        past.append(simulator.advance_arrays(fork_s))
        context.append(simulator.context_intervals())
        if fork:  # fork 0 keeps the original future
            simulator._rng = np.random.default_rng([SEED, 1000 + fork])
        seconds_before = len(simulator.true_cold_od) * BLOCK_S
        simulator.advance(load_use_case("extrusion").horizon_s + 2 * BLOCK_S)
        future_truth.append(np.concatenate(simulator.true_cold_od)[seconds_before:])
    return past, future_truth, context


@pytest.fixture(scope="module")
def forks():
    fork_s = _fork_time_s()
    return fork_s, *_forked_futures(fork_s)


def test_the_forks_share_every_reading_and_interval_up_to_the_fork(forks):
    fork_s, past, _, context = forks
    metric_index, time_ms, values = past[0]
    assert time_ms.max() < START_MS + fork_s * 1000
    assert len(time_ms) == fork_s * len(METRICS)
    for other in past[1:]:
        for ours, theirs in zip(past[0], other):
            np.testing.assert_array_equal(ours, theirs)
    assert all(c == context[0] for c in context[1:])
    fork_end = datetime.fromtimestamp((START_MS + fork_s * 1000) / 1000, tz=UTC)
    assert any(i.kind is ContextKind.RUN and i.end == fork_end for i in context[0]), "the fork lies inside a run"


def test_cold_od_five_minutes_ahead_differs_between_forks(forks):
    _, _, future_truth, _ = forks
    use_case = load_use_case("extrusion")
    window = slice(use_case.horizon_s, use_case.horizon_s + use_case.label_window_s)
    labels = np.array([truth[window].mean() for truth in future_truth])
    # distinct futures: every pair of forks disagrees on the label
    assert len(np.unique(labels)) == FORKS, labels
    # and not by a rounding hair: the spread exceeds a cold-gauge reading's noise
    assert labels.std() > SENSOR_NOISE["cold_od_average"], labels


def test_the_original_stream_reproduces_the_original_future(forks):
    fork_s, _, future_truth, _ = forks
    again = ExtrusionLineSimulator("line-1", seed=SEED, start_ms=START_MS)
    again.advance(fork_s)
    before = len(again.true_cold_od) * BLOCK_S
    again.advance(load_use_case("extrusion").horizon_s + 2 * BLOCK_S)
    np.testing.assert_array_equal(np.concatenate(again.true_cold_od)[before:], future_truth[0])


def test_the_uncertainty_comes_from_cable_extruded_after_the_fork(forks):
    """Why the label is open at t: right after t the cold gauge still sees cable extruded before t,
    so the forks nearly agree there (only the speed ripple moves which second of it is seen); 5
    minutes on it sees cable extruded after t, and they part by an order of magnitude more."""
    _, _, future_truth, _ = forks
    use_case = load_use_case("extrusion")
    width = use_case.label_window_s
    now = np.array([truth[:width].mean() for truth in future_truth])
    ahead = np.array([truth[use_case.horizon_s : use_case.horizon_s + width].mean() for truth in future_truth])
    assert now.std() * 10 < ahead.std(), (now, ahead)
