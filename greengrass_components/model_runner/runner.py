"""Live scoring on the gateway: a rolling window of recent samples, scored every example stride.

The window is aligned onto the use case's grid with the same `align_to_grid` (max gap 5 periods)
and featurised with the same `pack_features` as the cloud's metric packer, so the model sees
features computed one way only. A window with a gap is not scored; the reason is counted.

Predictions are always levels: a change-mode payload (use case `label.mode: change`) predicts future
minus now, and its Scorer adds the window's current value (the target's `last` feature) back itself
(model_runtime/label_mode.py), so nothing here depends on the mode.

Machine states: when the use case has `state_rules`, each step of the window gets the state of the
first rule whose conditions hold on it (none: no state, which is productive). A window with a step in
a state outside `productive_states` is not scored (counted as "non_productive:<state>"), as the cloud's
metric packer leaves such packs out of training.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.model_runtime.alignment import MAX_GAP_PERIODS, align_to_grid
from edgeloop.model_runtime.features import pack_features, steps_per_pack
from edgeloop.model_runtime.scorer import Scorer
from edgeloop.schemas import UseCaseConfig, feature_schema_hash

log = logging.getLogger(__name__)

# Reasons a due window was not scored (keys of LiveScorer.skipped; gaps add ":<metric>", non-productive
# windows ":<state>").
SKIP_NO_MODEL = "no_model"
SKIP_GAP = "gap"
SKIP_NON_FINITE = "non_finite"
SKIP_SCORER_ERROR = "scorer_error"
SKIP_NON_PRODUCTIVE = "non_productive"
# the ops of schemas.use_case.STATE_CONDITION
_OPERATORS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class LiveWindow:
    """One aligned pack of the live data and what the scorer needs from it."""

    window_end_ms: int
    grid: np.ndarray  # float64 (n_steps, n_metrics), NaN where a metric had no fresh sample
    features: np.ndarray  # float32 (n_features,) in use_case.feature_names order
    gap_metrics: tuple[str, ...]  # metrics whose missing share exceeds the allowed one
    non_productive_states: tuple[str, ...] = ()  # states outside use_case.productive_states seen in the window

    @property
    def complete(self) -> bool:
        return not self.gap_metrics

    @property
    def productive(self) -> bool:
        return not self.non_productive_states


@dataclass(frozen=True)
class LivePrediction:
    """One scored window: the level predicted for [window_end + horizon, + label_window), and by whom."""

    window_end_ms: int
    level: float
    scorer: Scorer

    def sample(self, use_case: UseCaseConfig) -> tuple[str, int, float]:
        """The `<target>__predicted` telemetry sample, stamped with the time it predicts: what the
        curated table's live accuracy (the demo's predicted vs measured) joins on."""
        return (use_case.prediction_metric, self.window_end_ms + use_case.horizon_s * 1000, self.level)


class _Ring:
    """Recent (time_ms, value) of one metric, oldest first, trimmed to a retention span."""

    def __init__(self) -> None:
        self.times = np.zeros(0, dtype=np.int64)
        self.values = np.zeros(0, dtype=np.float64)

    def extend(self, times: np.ndarray, values: np.ndarray, keep_after_ms: int) -> None:
        times = np.concatenate([self.times, times])
        values = np.concatenate([self.values, values])
        if len(times) > 1 and np.any(np.diff(times) < 0):  # late or out-of-order readings
            order = np.argsort(times, kind="stable")
            times, values = times[order], values[order]
        start = int(np.searchsorted(times, keep_after_ms, side="left"))
        self.times, self.values = times[start:], values[start:]


class LiveScorer:
    """Keeps the live window and scores it with the active model (swappable from another thread)."""

    def __init__(self, use_case: UseCaseConfig, *, max_missing_fraction: float = 0.0) -> None:
        if not 0.0 <= max_missing_fraction < 1.0:
            raise ValueError(f"max_missing_fraction={max_missing_fraction} must be in [0, 1)")
        self.use_case = use_case
        self.max_missing_fraction = max_missing_fraction
        self.expected_schema_hash = feature_schema_hash(use_case.feature_names)
        self.period_ms = round(use_case.sample_period_s * 1000)
        self.n_steps = steps_per_pack(use_case)
        self.window_ms = self.n_steps * self.period_ms
        self.stride_ms = use_case.example_stride_s * 1000
        # enough to align a window ending up to one stride before the newest sample, gap allowance included
        self.retention_ms = self.window_ms + self.stride_ms + MAX_GAP_PERIODS * self.period_ms
        self._metric_index = {metric: i for i, metric in enumerate(use_case.metrics)}
        self._state_rules = [
            (rule.state, [(self._metric_index[m], _OPERATORS[op], value) for m, op, value in rule.conditions()])
            for rule in use_case.state_rules
        ]
        self._rings = [_Ring() for _ in use_case.metrics]
        self._newest_ms: int | None = None
        self._lock = threading.RLock()
        self._scorer: Scorer | None = None
        self._previous: Scorer | None = None
        self._last_window_end: int | None = None
        self.skipped: Counter[str] = Counter()
        self.predictions = 0
        self.consecutive_failures = 0  # non-finite outputs or scorer errors since the last success
        self.last_latency_ms = 0.0

    # --- the active model -----------------------------------------------------------------------
    @property
    def active(self) -> Scorer | None:
        return self._scorer

    @property
    def previous(self) -> Scorer | None:
        return self._previous

    def swap(self, scorer: Scorer) -> Scorer | None:
        """Make `scorer` active; the one it replaces is kept for `rollback` and returned."""
        if scorer.feature_schema_hash != self.expected_schema_hash:
            raise ValueError(
                f"scorer {scorer.model_id} {scorer.version} has feature_schema_hash={scorer.feature_schema_hash}; "
                f"this use case's features hash to {self.expected_schema_hash}"
            )
        with self._lock:
            previous, self._previous, self._scorer = self._scorer, self._scorer, scorer
            self.consecutive_failures = 0
        return previous

    def rollback(self) -> Scorer | None:
        """Reinstate the scorer active before the last swap; returns it (None: nothing to go back to)."""
        with self._lock:
            if self._previous is None:
                return None
            self._scorer, self._previous = self._previous, None
            self.consecutive_failures = 0
            return self._scorer

    # --- data -------------------------------------------------------------------------------------
    def add(self, samples: Sequence[tuple[str, int, float]]) -> int:
        """Take readings of the use case's metrics (others, e.g. predictions, are ignored); returns how many."""
        rows = [(self._metric_index[m], t, v) for m, t, v in samples if m in self._metric_index]
        if not rows:
            return 0
        metric_index, times, values = (np.asarray(column) for column in zip(*rows))
        return self.add_arrays(metric_index.astype(np.int64), times.astype(np.int64), values.astype(np.float64))

    def add_arrays(self, metric_index: np.ndarray, time_ms: np.ndarray, values: np.ndarray) -> int:
        """Like `add`, with metric_index into use_case.metrics."""
        if len(time_ms) == 0:
            return 0
        with self._lock:
            newest = int(time_ms.max())
            self._newest_ms = newest if self._newest_ms is None else max(self._newest_ms, newest)
            keep_after = self._newest_ms - self.retention_ms
            for index in np.unique(metric_index):
                selected = metric_index == index
                self._rings[int(index)].extend(time_ms[selected], values[selected], keep_after)
        return len(time_ms)

    def recent_target_values(self) -> np.ndarray:
        with self._lock:
            return self._rings[self._metric_index[self.use_case.target_metric]].values.copy()

    def window(self, window_end_ms: int) -> LiveWindow:
        """The pack [window_end_ms - pack_window_s, window_end_ms) aligned onto the grid."""
        start_ms = window_end_ms - self.window_ms
        with self._lock:
            metric_index = np.concatenate(
                [np.full(len(ring.times), i, dtype=np.int64) for i, ring in enumerate(self._rings)]
            )
            times = np.concatenate([ring.times for ring in self._rings])
            values = np.concatenate([ring.values for ring in self._rings])
        grid = align_to_grid(
            times,
            metric_index,
            values,
            n_metrics=len(self.use_case.metrics),
            start_ms=start_ms,
            n_steps=self.n_steps,
            period_ms=self.period_ms,
            max_gap_ms=MAX_GAP_PERIODS * self.period_ms,
        )
        missing = np.isnan(grid).mean(axis=0)
        gaps = tuple(m for m, share in zip(self.use_case.metrics, missing) if share > self.max_missing_fraction)
        features = pack_features(grid, self.use_case)
        return LiveWindow(window_end_ms, grid, features, gaps, self.non_productive_states(grid))

    def non_productive_states(self, grid: np.ndarray) -> tuple[str, ...]:
        """States outside use_case.productive_states that some step of `grid` is in, by the use case's
        state_rules: per step the first rule whose conditions all hold (a missing value holds none)."""
        undecided = np.ones(len(grid), dtype=bool)
        found = []
        for state, conditions in self._state_rules:
            holds = undecided.copy()
            for index, compare, value in conditions:
                column = grid[:, index]
                with np.errstate(invalid="ignore"):
                    holds &= ~np.isnan(column) & compare(column, value)
            if holds.any() and not self.use_case.is_productive_state(state) and state not in found:
                found.append(state)
            undecided &= ~holds
        return tuple(found)

    def latest_window(self) -> LiveWindow | None:
        """The pack ending just after the newest reading (None before any reading arrived)."""
        with self._lock:
            newest = self._newest_ms
        if newest is None:
            return None
        return self.window((newest // self.period_ms + 1) * self.period_ms)

    # --- scoring ----------------------------------------------------------------------------------
    def maybe_score(self, now_ms: int) -> list[tuple[str, int, float]]:
        """`maybe_predict` as telemetry samples: [(prediction_metric, window_end + horizon, level)], or []."""
        prediction = self.maybe_predict(now_ms)
        return [prediction.sample(self.use_case)] if prediction is not None else []

    def maybe_predict(self, now_ms: int) -> LivePrediction | None:
        """Score the newest stride-aligned window ending at or before now_ms, once per window.

        None when nothing is due or the window cannot be scored (see `skipped` for why).
        """
        window_end = now_ms // self.stride_ms * self.stride_ms
        with self._lock:
            if self._last_window_end is not None and window_end <= self._last_window_end:
                return None
            self._last_window_end = window_end
            scorer = self._scorer
        if scorer is None:
            self.skipped[SKIP_NO_MODEL] += 1
            return None
        live = self.window(window_end)
        if not live.productive:
            self.skipped[SKIP_NON_PRODUCTIVE] += 1
            for state in live.non_productive_states:
                self.skipped[f"{SKIP_NON_PRODUCTIVE}:{state}"] += 1
            return None
        if not live.complete:
            self.skipped[SKIP_GAP] += 1
            for metric in live.gap_metrics:
                self.skipped[f"{SKIP_GAP}:{metric}"] += 1
            return None
        started = time.perf_counter()
        try:
            value = scorer.predict_one(live.features)
        except Exception as exc:  # a broken model must not stop the gateway; the agent may roll back
            log.warning("scorer %r failed on window ending %d: %s", scorer, window_end, exc)
            self._failed(SKIP_SCORER_ERROR)
            return None
        self.last_latency_ms = (time.perf_counter() - started) * 1000
        if not np.isfinite(value):
            self._failed(SKIP_NON_FINITE)
            return None
        self.predictions += 1
        self.consecutive_failures = 0
        return LivePrediction(window_end, float(value), scorer)

    def _failed(self, reason: str) -> None:
        self.skipped[reason] += 1
        self.consecutive_failures += 1
