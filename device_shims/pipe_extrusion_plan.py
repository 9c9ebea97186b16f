"""The simulated pipe line's schedule and its operators (pipe_extrusion.py), as step signals over
the recording's time axis: what the physics (pipe_extrusion_physics.py) is asked to do.

Schedule: runs of 2-4 h of one pipe, motor-off stoppages within runs (4-15 min, 0.2 per hour) and
changeovers: the motor stops for the tooling change (10-20 min; 2 minutes in, the operator loads the
next pipe's recipe: product, setpoint and zone setpoints switch), then the screw purges at half
speed with the haul-off stopped (6-12 min). Within a run the recipe's melt-pressure setpoint moves
between the recipe's values (e.g. 180 <-> 200 bar, 0.4 per hour), the blender switches the regrind
share (0-30 %, 1.5 per hour) and operators tweak zone 2-4 setpoints (4-8 degC, 0.25 per hour).

Operators: 20-90 s after a setpoint change they set the screw speed the recipe table gives for it;
after a regrind or zone change has reached the die, or on a routine look every 30 minutes, they
correct the screw speed (2-8 minutes late, with a 1.5 % error) when the pressure they expect
deviates from the setpoint by more than 4 bar. Their expectation is the physics without the
material lot and the noise, so corrections are imperfect and late: the pressure leaves setpoint
± 8 bar for about 11 % of running time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .pipe_extrusion_config import ZONES, PipeProduct, PipeSimulatorConfig
from .pipe_extrusion_physics import MOTOR_OFF, MOTOR_ON, PURGE, SHEAR_RISE_C, ZONE_WEIGHTS

PURGE_SPEED = 0.5  # share of the next product's screw speed while purging
RECIPE_LOAD_S = 120  # into a tooling change, the product column switches to the next pipe
ZONE_OFFSET_LIMIT_C = 10.0
ZONE_SETTLED_S = 900  # the operators expect a zone change to have reached the melt after this
RPM_BAND = (0.6, 1.5)  # the drive's range, relative to the product's screw_rpm


@dataclass(frozen=True)
class Segment:
    """A stretch of the schedule: a run of one product, a tooling change (motor off) or a purge."""

    kind: str  # "run" | "die_change" | "purge"
    start_s: int
    end_s: int
    product: int  # index into config.products; a changeover's next product (from RECIPE_LOAD_S in)


def steps(times: Sequence[float], values: Sequence[float], t: np.ndarray | float, initial: float) -> np.ndarray:
    """A piecewise-constant signal: `initial`, then values[i] from times[i] on (times sorted)."""
    table = np.concatenate([[initial], np.asarray(values, dtype=float)])
    return table[np.searchsorted(np.asarray(times, dtype=float), t, side="right")]


@dataclass
class RunEvents:
    """What happens to one run: setpoint moves, stoppages, regrind switches, zone tweaks."""

    segment: Segment
    product: PipeProduct
    setpoint_times: np.ndarray
    setpoint_values: list[float]
    setpoint_initial: float
    stops: list[tuple[float, float]]
    regrind_times: np.ndarray
    regrind_values: list[float]
    regrind_initial: float
    zone_times: np.ndarray
    zone_offsets: np.ndarray  # (len(zone_times), ZONES): every zone's offset from its recipe value
    clog_start_h: float

    def setpoint_at(self, time: np.ndarray | float) -> np.ndarray:
        return steps(self.setpoint_times, self.setpoint_values, time, self.setpoint_initial)

    def regrind_at(self, time: np.ndarray | float) -> np.ndarray:
        return steps(self.regrind_times, self.regrind_values, time, self.regrind_initial)

    def zone_offsets_at(self, time: np.ndarray | float) -> np.ndarray:
        table = np.vstack([np.zeros((1, ZONES)), self.zone_offsets])
        return table[np.searchsorted(self.zone_times, time, side="right")]

    def expected_pressure(self, config: PipeSimulatorConfig, rpm: float, time: float) -> float:
        """What the operators expect the pressure to settle at: the physics, minus lot and noise."""
        product = self.product
        transit = config.transport_revolutions * 60 / rpm
        melt_shift = float(self.zone_offsets_at(time - ZONE_SETTLED_S) @ ZONE_WEIGHTS)
        melt_shift += SHEAR_RISE_C * (math.sqrt(rpm / product.screw_rpm) - 1)
        return (
            product.pressure_setpoints_bar[0]
            * (rpm / product.screw_rpm) ** config.pressure_exponent
            * math.exp(-config.viscosity_per_c * melt_shift)
            * (1 - config.viscosity_per_regrind_pct * float(self.regrind_at(time - transit)))
            * (1 + config.screen_clogging_per_h * (self.clog_start_h + (time - self.segment.start_s) / 3600))
        )

    def speed_for(self, config: PipeSimulatorConfig, target: float, time: float) -> float:
        rpm = self.product.screw_rpm
        for _ in range(4):  # fixed point: shear heating depends weakly on the speed
            rpm *= (target / self.expected_pressure(config, rpm, time)) ** (1 / config.pressure_exponent)
        return rpm


class Plan:
    """Per step of `t`: product, mode (physics MOTOR_ON / MOTOR_OFF / PURGE) and setpoints."""

    def __init__(self, seed: int, config: PipeSimulatorConfig, t: np.ndarray):
        self.config, self.products = config, tuple(config.products)
        self.rng = np.random.default_rng([seed, 1])
        self.segments = self._segments(int(t[-1]) + config.sample_period_s)
        n = len(t)
        self.product = np.zeros(n, dtype=np.int64)
        self.mode = np.zeros(n, dtype=np.int64)
        self.setpoint = np.zeros(n)
        self.rpm_cmd = np.zeros(n)
        self.zone_sp = np.zeros((n, ZONES))
        self.regrind = np.zeros(n)
        self.clog_hours = np.zeros(n)
        self.setpoint_changes_s: list[int] = []
        for index, segment in enumerate(self.segments):
            inside = (t >= segment.start_s) & (t < segment.end_s)
            self.product[inside] = segment.product
            if segment.kind == "run":
                events = self._run_events(segment, first=index == 0)
                self._fill_run(events, self._corrections(events), t, inside)
            else:
                self._fill_changeover(segment, t, inside)

    # schedule
    def _minutes(self, bounds: tuple[int, int]) -> int:
        return int(self.rng.integers(bounds[0], bounds[1] + 1)) * 60

    def _segments(self, total_s: int) -> list[Segment]:
        segments, start = [], 0
        product = int(self.rng.integers(len(self.products)))
        while start < total_s:
            end = start + self._minutes(self.config.run_minutes)
            segments.append(Segment("run", start, end, product))
            others = [p for p in range(len(self.products)) if p != product] or [product]
            product = int(self.rng.choice(others))
            die_end = end + self._minutes(self.config.die_change_minutes)
            segments.append(Segment("die_change", end, die_end, product))
            start = die_end + self._minutes(self.config.purge_minutes)
            segments.append(Segment("purge", die_end, start, product))
        return segments

    def _events(self, rate_per_hour: float, start: float, end: float) -> np.ndarray:
        """Poisson event times in [start, end), on whole steps."""
        if end <= start:
            return np.zeros(0)
        count = self.rng.poisson(rate_per_hour * (end - start) / 3600)
        dt = self.config.sample_period_s
        return np.sort(np.round(self.rng.uniform(start, end, count) / dt) * dt)

    def _others(self, values: Sequence, current) -> object:
        return self.rng.choice([v for v in values if v != current] or [current])

    def _run_events(self, seg: Segment, *, first: bool) -> RunEvents:
        cfg, rng, product = self.config, self.rng, self.products[seg.product]
        a, b = seg.start_s, seg.end_s
        setpoints = product.pressure_setpoints_bar
        sp_times = self._events(cfg.setpoint_changes_per_hour, a + 900, b - 600)
        sp_index = int(rng.integers(len(setpoints))) if first else 0  # a run starts at the recipe's first
        sp_initial, sp_values = setpoints[sp_index], []
        for _ in sp_times:
            sp_index = int(self._others(range(len(setpoints)), sp_index))
            sp_values.append(setpoints[sp_index])
        stops: list[tuple[float, float]] = []
        for begin in self._events(cfg.stoppages_per_hour, a + 600, b - 1200):
            if not stops or begin >= stops[-1][1] + 600:
                stops.append((begin, min(begin + self._minutes(cfg.stoppage_minutes), b - 300)))
        rg_times = self._events(cfg.regrind_changes_per_hour, a, b)
        rg_initial = float(rng.choice(cfg.regrind_levels_pct))
        rg_values, level = [], rg_initial
        for _ in rg_times:
            level = float(self._others(cfg.regrind_levels_pct, level))
            rg_values.append(level)
        zone_times = self._events(cfg.zone_changes_per_hour, a + 600, b)
        offsets, zone_rows = np.zeros(ZONES), []
        for _ in zone_times:
            zone = int(rng.integers(1, ZONES))
            step = rng.choice([-1.0, 1.0]) * rng.uniform(*cfg.zone_change_c)
            offsets[zone] = np.clip(offsets[zone] + step, -ZONE_OFFSET_LIMIT_C, ZONE_OFFSET_LIMIT_C)
            zone_rows.append(offsets.copy())
        return RunEvents(
            segment=seg,
            product=product,
            setpoint_times=sp_times,
            setpoint_values=sp_values,
            setpoint_initial=sp_initial,
            stops=stops,
            regrind_times=rg_times,
            regrind_values=rg_values,
            regrind_initial=rg_initial,
            zone_times=zone_times,
            zone_offsets=np.array(zone_rows).reshape(-1, ZONES),
            clog_start_h=float(rng.uniform(0, 3)) if first else 0.0,
        )

    def _corrections(self, events: RunEvents) -> tuple[list[float], list[float]]:
        """The operators' screw-speed settings over the run: (times, rpm)."""
        cfg, rng, product = self.config, self.rng, events.product
        a, b = events.segment.start_s, events.segment.end_s
        react = cfg.operator_reaction_s
        candidates = [(float(a), True)]  # (time, forced)
        candidates += [(float(s) + rng.uniform(20, 90), True) for s in events.setpoint_times]
        transit = cfg.transport_revolutions * 60 / product.screw_rpm  # the operators' rule of thumb
        candidates += [(float(r) + transit + rng.uniform(*react), False) for r in events.regrind_times]
        candidates += [(float(z) + ZONE_SETTLED_S + rng.uniform(*react), False) for z in events.zone_times]
        check = cfg.operator_check_minutes * 60
        candidates += [(a + k * check, False) for k in range(1, int((b - a) // check) + 1)]
        times, speeds, rpm = [], [], product.screw_rpm
        for time, forced in sorted(candidates):
            if time >= b:
                continue
            target = float(events.setpoint_at(time))
            expected = events.expected_pressure(cfg, rpm, time)
            if not forced and abs(expected - target) <= cfg.operator_threshold_bar:
                continue
            rpm = events.speed_for(cfg, target, time) * (1 + cfg.operator_error * rng.normal())
            rpm = float(np.clip(rpm, RPM_BAND[0] * product.screw_rpm, RPM_BAND[1] * product.screw_rpm))
            times.append(time)
            speeds.append(rpm)
        return times, speeds

    def _fill_run(self, events: RunEvents, speeds: tuple[list[float], list[float]], t, inside) -> None:
        tr = t[inside]
        self.setpoint[inside] = events.setpoint_at(tr)
        self.regrind[inside] = events.regrind_at(tr)
        stopped = np.zeros(len(tr), dtype=bool)
        for begin, end in events.stops:
            stopped |= (tr >= begin) & (tr < end)
        self.mode[inside] = np.where(stopped, MOTOR_OFF, MOTOR_ON)
        self.rpm_cmd[inside] = np.where(stopped, 0.0, steps(*speeds, tr, speeds[1][0]))
        self.zone_sp[inside] = np.asarray(events.product.zone_setpoints_c) + events.zone_offsets_at(tr)
        self.clog_hours[inside] = events.clog_start_h + (tr - events.segment.start_s) / 3600
        self.setpoint_changes_s.extend(int(s) for s in events.setpoint_times if s <= t[-1])

    def _fill_changeover(self, segment: Segment, t: np.ndarray, inside: np.ndarray) -> None:
        product = self.products[segment.product]
        self.mode[inside] = MOTOR_OFF if segment.kind == "die_change" else PURGE
        self.setpoint[inside] = product.pressure_setpoints_bar[0]
        self.zone_sp[inside] = product.zone_setpoints_c
        if segment.kind == "purge":
            self.rpm_cmd[inside] = PURGE_SPEED * product.screw_rpm
            self.clog_hours[inside] = (t[inside] - segment.start_s) / 3600
            return
        # the operator loads the next recipe once the line has stopped
        before = int(np.searchsorted(t, segment.start_s)) - 1
        loading = inside & (t < segment.start_s + RECIPE_LOAD_S)
        if before >= 0:
            self.product[loading] = self.product[before]
            self.setpoint[loading] = self.setpoint[before]
            self.zone_sp[loading] = self.zone_sp[before]
