"""A simulated plastics-extrusion wire-coating line (Mímir, seed 000 section IV).

Physics, kept simple but causal so the loop has something real to learn:
- the screw delivers a melt volume per second proportional to its rpm, a die-temperature factor
  and a slowly drifting material factor (melt-flow variation, with occasional batch steps);
- the coating's cross-section is that volume over the line speed, so the hot outer diameter is
  sqrt(wire^2 + 4/pi * area); pressure rises with rpm and material viscosity;
- the cable then runs through a cooling trough (`cooling_length_m`): the cold gauge sees, now, the
  cable extruded `cooling_length_m / speed` ago (2.8-5.8 minutes over the products' speed bands),
  shrunk by a die-temperature-dependent factor. That delay makes cold-od-average predictable a few
  minutes ahead. The extrusion use case's 5-minute horizon reaches past it for most speeds: part of
  each label measures cable not yet extruded when its pack ends, which bounds what any model can do;
- operators change speed (with an imperfect rpm compensation) and correct the rpm when the cold
  gauge drifts out of tolerance, after waiting for their last correction to show up. The lag
  between cause and measurement makes real LSL/USL violations happen;
- a line makes one cable size; runs of 1.5-3 h change the insulation compound (other settings,
  same spec limits), separated by changeovers; each run carries its spec limits as context.

The state advances in blocks of `BLOCK_S` simulated seconds, vectorised with numpy. Output is
independent of how `advance` is chunked: the same seed and config always give the same samples.

This module holds the simulator (schedule, operators, sensors, context); the line's metrics,
products and settings are in extrusion_config, its physics in extrusion_physics. With
`record_hidden=True` it also keeps the unmeasured state per second (extrusion_hidden.py) for the oracle;
recording draws no random number, so the samples stay the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from edgeloop.schemas import ContextInterval, ContextKind, SpecLimits, load_use_case

from .extrusion_config import METRICS, TARGET_METRIC, FaultKind, Product, SimulatorConfig, default_products
from .extrusion_hidden import ExtrusionHidden, HiddenRecorder
from .extrusion_physics import physics_block, steady_state

MATERIAL_BAND = (0.8, 1.25)  # melt output factor of a material batch, relative to nominal
RPM_BAND = (0.5, 1.6)  # screw drive range, relative to the product's nominal rpm
BLOCK_S = 60  # simulation step for events and operator decisions; runs are whole blocks long
SHIFT_HOURS_UTC = ((6, "early"), (14, "late"), (22, "night"))

# Sensor noise (one standard deviation) and the decimals a real device would report.
SENSOR_NOISE = {
    "speed": 0.3,
    "screw_rpm": 0.1,
    "temp_die": 0.15,
    "temp_flange": 0.2,
    "pressure": 0.8,
    "hot_od_x": 0.006,
    "hot_od_y": 0.006,
    "cold_od_x": 0.002,
    "cold_od_y": 0.002,
    "cold_od_average": 0.0015,
}
DECIMALS = {"speed": 2, "screw_rpm": 2, "temp_die": 2, "temp_flange": 2, "pressure": 2}
OD_DECIMALS = 4


@dataclass(frozen=True)
class Segment:
    """A stretch of the schedule: a production run or a changeover, in whole blocks."""

    kind: str  # "run" | "changeover"
    start_s: int
    end_s: int
    product: int  # index into the simulator's products (for a changeover: the product it changes to)
    run_number: int  # runs are numbered from 1; a changeover carries the number of the run it leads to


class ExtrusionLineSimulator:
    """One extrusion line. `advance(seconds)` returns its sensor readings as (metric, time_ms, value)."""

    def __init__(
        self,
        line_id: str,
        *,
        seed: int,
        start_ms: int,
        config: SimulatorConfig | None = None,
        record_hidden: bool = False,
    ):
        self.line_id = line_id
        self.seed = seed
        self.start_ms = int(start_ms)
        self.config = config or SimulatorConfig()
        self.products = tuple(self.config.products or default_products(seed))
        use_case = load_use_case("extrusion")
        if tuple(use_case.metrics) != METRICS:
            raise ValueError(
                f"the extrusion use case's metrics {use_case.metrics} differ from the simulator's {METRICS}"
            )
        self.metrics = METRICS
        self._metric_names = np.array(METRICS, dtype=object)
        self._rng = np.random.default_rng([seed, 0])
        self._schedule_rng = np.random.default_rng([seed, 1])
        self._segments: list[Segment] = []
        self._state = steady_state(self.products[self._segment_at(0).product])
        self._simulated_s = 0  # seconds of state computed
        self._returned_ms = self.start_ms  # samples before this time were handed out
        self._heater_phase = float(self._rng.uniform(0, 2 * math.pi))
        self._ramp_from = (0.0, 0.0, 0.0)  # setpoints when the current changeover began
        self._pending = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))  # metric, time, value
        self.true_cold_od: list[np.ndarray] = []  # per-second truth, kept for tests and reports
        self._hidden = HiddenRecorder() if record_hidden else None  # for the oracle (extrusion_hidden)

    # --- public API -----------------------------------------------------------------------------
    @property
    def now_ms(self) -> int:
        """Simulated time up to which samples were returned (exclusive)."""
        return self._returned_ms

    def advance(self, seconds: int) -> list[tuple[str, int, float]]:
        """Readings of the next `seconds` of simulated time, ordered by time then metric."""
        metric_index, time_ms, values = self.advance_arrays(seconds)
        return list(zip(self._metric_names[metric_index].tolist(), time_ms.tolist(), values.tolist()))

    def advance_arrays(self, seconds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like `advance`, as arrays (metric index into METRICS, time_ms, value)."""
        if not isinstance(seconds, (int, np.integer)) or seconds < 0:
            raise ValueError(f"seconds={seconds!r} must be a non-negative whole number")
        until_ms = self._returned_ms + int(seconds) * 1000
        blocks = [self._pending]
        while self.start_ms + self._simulated_s * 1000 < until_ms:
            blocks.append(self._simulate_block())
        metric_index, time_ms, values = (np.concatenate(column) for column in zip(*blocks))
        cut = int(np.searchsorted(time_ms, until_ms, side="left"))
        self._pending = (metric_index[cut:], time_ms[cut:], values[cut:])
        self._returned_ms = until_ms
        return metric_index[:cut], time_ms[:cut], values[:cut]

    def hidden_record(self) -> ExtrusionHidden:
        """The hidden state of every second simulated so far (created with record_hidden=True)."""
        if self._hidden is None:
            raise ValueError(f"line {self.line_id}: the simulator was created without record_hidden=True")
        return self._hidden.record(self.start_ms, self.config, BLOCK_S)

    def segments(self) -> list[Segment]:
        """The schedule simulated so far (runs and changeovers)."""
        now_s = (self._returned_ms - self.start_ms) // 1000
        return [s for s in self._segments if s.start_s < now_s]

    def spec_of(self, segment: Segment) -> SpecLimits:
        product = self.products[segment.product]
        return SpecLimits(
            target_metric=TARGET_METRIC,
            lower=round(product.cold_od_mm - product.tolerance_mm, 6),
            upper=round(product.cold_od_mm + product.tolerance_mm, 6),
        )

    def context_intervals(self, until_ms: int | None = None) -> list[ContextInterval]:
        """Runs (with spec limits), line states and shifts from the start to `until_ms` (or now)."""
        until_ms = self._returned_ms if until_ms is None else min(int(until_ms), self._returned_ms)
        intervals = []
        for segment in self._segments:
            start_ms = self.start_ms + segment.start_s * 1000
            end_ms = min(self.start_ms + segment.end_s * 1000, until_ms)
            if start_ms >= end_ms:
                continue
            product = self.products[segment.product]
            if segment.kind == "run":
                intervals.append(
                    self._interval(
                        ContextKind.RUN,
                        f"run-{segment.run_number:04d}",
                        start_ms,
                        end_ms,
                        value=product.code,
                        spec=self.spec_of(segment),
                    )
                )
                state = "running"
            else:
                state = "changeover"
            intervals.append(
                self._interval(ContextKind.STATE, f"state-{segment.start_s}", start_ms, end_ms, value=state)
            )
        intervals.extend(self._shifts(until_ms))
        return intervals

    # --- schedule ---------------------------------------------------------------------------------
    def _segment_at(self, second: int) -> Segment:
        while not self._segments or self._segments[-1].end_s <= second:
            self._segments.append(self._next_segment())
        for segment in reversed(self._segments):
            if segment.start_s <= second:
                return segment
        raise AssertionError(f"no segment covers second {second}")  # the loop above guarantees one

    def _next_segment(self) -> Segment:
        rng = self._schedule_rng
        n_products = len(self.products)
        if not self._segments:
            return self._run_segment(0, int(rng.integers(n_products)), 1)
        last = self._segments[-1]
        if last.kind == "changeover":
            return self._run_segment(last.end_s, last.product, last.run_number)
        choices = [p for p in range(n_products) if p != last.product] or [last.product]
        product = int(rng.choice(choices))
        minutes = int(rng.integers(self.config.changeover_minutes[0], self.config.changeover_minutes[1] + 1))
        return Segment("changeover", last.end_s, last.end_s + minutes * 60, product, last.run_number + 1)

    def _run_segment(self, start_s: int, product: int, run_number: int) -> Segment:
        low, high = self.config.run_minutes
        minutes = int(self._schedule_rng.integers(low, high + 1))
        return Segment("run", start_s, start_s + minutes * 60, product, run_number)

    # --- blocks -----------------------------------------------------------------------------------
    def _simulate_block(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s0 = self._simulated_s
        segment = self._segment_at(s0)
        product = self.products[segment.product]
        seconds = s0 + np.arange(BLOCK_S)
        setpoints = self._setpoints(segment, product, seconds)
        truth = physics_block(self._state, product, self.config, self._rng, setpoints, seconds, self._heater_phase)
        self._simulated_s += BLOCK_S
        self.true_cold_od.append(truth["cold_od_average"])
        if self._hidden is not None:
            self._hidden.add(truth, setpoints, self._state.last_action_s)
        self._state.last_cold_mean = float(truth["cold_od_average"].mean())
        return self._measure(truth, s0)

    def _setpoints(self, segment: Segment, product: Product, seconds: np.ndarray):
        st = self._state
        s0 = int(seconds[0])
        if segment.kind == "changeover":
            # ramp from wherever the operators left the line to the next product's nominal settings
            if s0 == segment.start_s:
                self._ramp_from = (st.sp_speed, st.sp_rpm, st.sp_temp)
            frac = (seconds - segment.start_s + 1) / (segment.end_s - segment.start_s)
            targets = (product.speed_m_min, product.screw_rpm, product.temp_die_c)
            ramps = [start + (end - start) * frac for start, end in zip(self._ramp_from, targets)]
            st.sp_speed, st.sp_rpm, st.sp_temp = (float(r[-1]) for r in ramps)
            return ramps
        if s0 == segment.start_s and segment.run_number > 1:
            st.sp_speed, st.sp_rpm, st.sp_temp = product.speed_m_min, product.screw_rpm, product.temp_die_c
        self._process_events(product, s0)
        n = len(seconds)
        return np.full(n, st.sp_speed), np.full(n, st.sp_rpm), np.full(n, st.sp_temp)

    def _process_events(self, product: Product, s0: int) -> None:
        """Material batches, speed changes and operator corrections, decided once per block."""
        cfg, st, rng = self.config, self._state, self._rng
        draws = rng.random(4)
        if draws[0] < cfg.material_steps_per_hour * BLOCK_S / 3600:
            st.material_step *= math.exp(rng.choice([-1.0, 1.0]) * cfg.material_step * rng.uniform(0.5, 1.5))
            # a material batch stays within a plausible band; a free random walk runs away over weeks
            st.material_step = float(np.clip(st.material_step, *MATERIAL_BAND))
        if draws[1] < cfg.speed_changes_per_hour * BLOCK_S / 3600:
            change = rng.choice([-1.0, 1.0]) * rng.uniform(*cfg.speed_change)
            # keep speed inside a band the cooling trough handles (transit 2.8-5.8 minutes)
            new_speed = float(np.clip(st.sp_speed * (1 + change), 0.8 * product.speed_m_min, 1.2 * product.speed_m_min))
            factor = new_speed / st.sp_speed
            st.sp_speed = new_speed
            st.sp_rpm *= factor * (1 + rng.normal(0, cfg.rpm_compensation_error))
        error = st.last_cold_mean - product.cold_od_mm
        waited = s0 - st.last_action_s >= cfg.operator_wait_s
        if (
            waited
            and abs(error) > cfg.operator_threshold * product.tolerance_mm
            and draws[2] < cfg.operator_response_probability
        ):
            od, wire = product.cold_od_mm, product.wire_mm
            area_change = 2 * (error / od) * od**2 / (od**2 - wire**2)
            st.sp_rpm *= 1 - cfg.operator_gain * area_change * rng.uniform(0.6, 1.3)
            st.last_action_s = s0
        # the drive has a working range: corrections cannot take the screw below or above it
        st.sp_rpm = float(np.clip(st.sp_rpm, RPM_BAND[0] * product.screw_rpm, RPM_BAND[1] * product.screw_rpm))

    # --- sensors --------------------------------------------------------------------------------
    def _measure(self, truth: dict[str, np.ndarray], s0: int):
        """Sample each sensor at its own rate, add its noise, then apply configured faults."""
        block_start_ms, block_end_ms = s0 * 1000, (s0 + BLOCK_S) * 1000
        truth_t = np.arange(s0, s0 + BLOCK_S) * 1000.0
        measured: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for metric in METRICS:
            period = self.config.period_ms(metric)
            first = -(-block_start_ms // period)
            rel_ms = np.arange(first, -(-block_end_ms // period), dtype=np.int64) * period
            noise = self._rng.normal(0.0, SENSOR_NOISE[metric], len(rel_ms))
            values = np.interp(rel_ms, truth_t, truth[metric]) + noise
            measured[metric] = (rel_ms, values)
        avg_t, _ = measured["cold_od_average"]
        x_t, x_v = measured["cold_od_x"]
        y_t, y_v = measured["cold_od_y"]
        if np.array_equal(avg_t, x_t) and np.array_equal(avg_t, y_t):
            measured["cold_od_average"] = (avg_t, (x_v + y_v) / 2)  # the gauge reports the mean of its axes

        parts = []
        for index, metric in enumerate(METRICS):
            rel_ms, values = self._apply_faults(index, metric, *measured[metric])
            values = np.round(values, DECIMALS.get(metric, OD_DECIMALS))
            parts.append((np.full(len(rel_ms), index, dtype=np.int64), rel_ms + self.start_ms, values))
        metric_index = np.concatenate([p[0] for p in parts])
        time_ms = np.concatenate([p[1] for p in parts])
        values = np.concatenate([p[2] for p in parts])
        order = np.lexsort((metric_index, time_ms))
        return metric_index[order], time_ms[order], values[order]

    def _apply_faults(self, index: int, metric: str, rel_ms: np.ndarray, values: np.ndarray):
        values = values.copy()
        keep = np.ones(len(rel_ms), dtype=bool)
        spike_p = np.full(len(rel_ms), self.config.spike_probability)
        for fault_number, fault in enumerate(self.config.faults):
            if fault.metric != metric:
                continue
            inside = (rel_ms >= fault.start_s * 1000) & (rel_ms < (fault.start_s + fault.duration_s) * 1000)
            if not inside.any():
                continue
            if fault.kind is FaultKind.DROPOUT:
                keep &= ~inside
            elif fault.kind is FaultKind.STUCK:
                stuck = self._state.stuck_values.setdefault(fault_number, float(values[inside][0]))
                values[inside] = stuck
            else:
                spike_p = np.where(inside, np.maximum(spike_p, fault.spike_probability), spike_p)
        spikes = self._rng.random(len(rel_ms)) < spike_p
        if spikes.any():
            size = np.maximum(0.15 * np.abs(values[spikes]), 20 * SENSOR_NOISE[metric])
            values[spikes] += self._rng.choice([-1.0, 1.0], spikes.sum()) * size
        return rel_ms[keep], values[keep]

    # --- context --------------------------------------------------------------------------------
    def _interval(
        self, kind: ContextKind, suffix: str, start_ms: int, end_ms: int, *, value: str, spec: SpecLimits | None = None
    ) -> ContextInterval:
        return ContextInterval(
            kind=kind,
            interval_id=f"{self.line_id}-{suffix}",
            line_id=self.line_id,
            start=_utc(start_ms),
            end=_utc(end_ms),
            value=value,
            spec=spec,
        )

    def _shifts(self, until_ms: int) -> list[ContextInterval]:
        """Three 8-hour shifts a day starting 06:00, 14:00 and 22:00 UTC."""
        shifts = []
        hour_ms = 3_600_000
        day_start = self.start_ms // (24 * hour_ms) * (24 * hour_ms)
        boundary = day_start - 2 * hour_ms  # 22:00 the day before
        while boundary < until_ms:
            end = boundary + 8 * hour_ms
            start, stop = max(boundary, self.start_ms), min(end, until_ms)
            if start < stop:
                hour = (boundary // hour_ms) % 24
                name = dict(SHIFT_HOURS_UTC)[hour]
                shifts.append(self._interval(ContextKind.SHIFT, f"shift-{boundary // 1000}", start, stop, value=name))
            boundary = end
        return shifts


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
