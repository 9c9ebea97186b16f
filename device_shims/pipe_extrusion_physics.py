"""The simulated pipe line's physics (pipe_extrusion.py): from the plan's step signals (what the
schedule and the operators ask of the line, pipe_extrusion_plan.py) to the true signals plus sensor
noise, at every step of `sample_period_s` (2 s), vectorised over the whole recording.

- A single-screw extruder makes 110 mm PE pipe. The blender doses virgin PE with a regrind share
  (the `Regeneratanteil` column is what the blender doses NOW; with the line stopped its reading
  freezes).
- The melt reaches the die after `transport_revolutions` (300) screw turns (hopper, feed throat,
  screw): 7.1 minutes at 42 rpm, 6 minutes at 50 rpm (over running time: median 5.9 minutes, 90 %
  between 4.5 and 7.8), longer while the screw stands still: the melt does not move then. The
  blend smears out on the way (40 s lag). Regrind flows easier: -0.4 % die pressure per % regrind,
  so a switch from 10 to 30 % shows up at the die as about -8 % melt pressure (-14 bar at 180 bar)
  some 6 minutes after the blender column moved. That transport delay is what makes `Massedruck`
  predictable 5 minutes ahead.
- Four barrel zones follow their setpoints with a 7-minute thermal lag, plus heater cycling and
  noise; the melt temperature follows the weighted zones plus shear heating (12 degC at nominal
  speed, ~sqrt(rpm)) with a 3-minute lag; each degC of melt lowers the pressure by 1.2 %.
- Melt pressure = P_ref x (rpm / rpm_ref)^0.6 x exp(-0.012 dT_melt) x (1 - 0.004 regrind) x material
  lot factor (+-1.2 %, 40-minute wander, travelling with the melt) x screen clogging (+0.8 % per
  running hour, reset at each tooling change), with a 10 s lag, 1 bar of 20 s process noise and
  0.5 bar of sensor noise. With the motor off the pressure relaxes towards 3 bar over minutes.
- The drive ramps with a 15 s lag and switches off below 2 rpm; its current follows the screw
  torque: rpm^0.75 and the viscosity of the melt half-way down the screw (it sees a regrind switch
  about half-way to the die).
- The haul-off pulls the pipe at a speed proportional to the screw speed (20 s lag, off below
  0.1 m/min) and stands still while the line purges or stops.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Protocol

import numpy as np

from .pipe_extrusion_config import SETPOINT_COLUMN, SIGNAL_BY_COLUMN, ZONES, PipeProduct, PipeSimulatorConfig

MOTOR_ON, MOTOR_OFF, PURGE = 0, 1, 2  # what the plan asks of the line at each step
ZONE_WEIGHTS = np.array([0.1, 0.2, 0.3, 0.4])  # how much each barrel zone heats the melt
SHEAR_RISE_C = 12.0  # melt above the weighted zones at nominal screw speed
DRIVE_TAU_S = 15.0
DRIVE_MIN_RPM = 2.0
HAUL_OFF_TAU_S = 20.0
HAUL_OFF_MIN_M_MIN = 0.1
ZONE_TAU_S = 420.0
MELT_TAU_S = 180.0
PRESSURE_TAU_S = 10.0
MIXING_TAU_S = 40.0  # the blend smears out on its way down the screw
TORQUE_POINT = 0.5  # share of the transport revolutions from the blender to where the torque is made
RESIDUAL_TAU_S = 240.0  # melt pressure relaxing with the motor off
RESIDUAL_FLOOR_BAR = 3.0
HEATER_AMPLITUDE_C = 0.5
HEATER_PERIODS_S = (150.0, 170.0, 190.0, 210.0)
LAG_BLOCK = 256
# simulate()'s hidden (unrecorded) columns: regrind dosed now and at the die, cumulative screw turns, the
# material lot factor at the blender and at the die, true rpm and melt temperature, the noise-free melt
# pressure the die would settle to, and the true melt pressure (before sensor noise)
HIDDEN_REGRIND_DOSED, HIDDEN_REGRIND_DIE, HIDDEN_TURNS, HIDDEN_LOT, HIDDEN_LOT_DIE = (
    "hidden_regrind_dosed",
    "hidden_regrind_die",
    "hidden_turns",
    "hidden_lot",
    "hidden_lot_die",
)
HIDDEN_RPM, HIDDEN_MELT, HIDDEN_PRESSURE_MODEL, HIDDEN_PRESSURE = (
    "hidden_rpm",
    "hidden_melt",
    "hidden_pressure_model",
    "hidden_pressure",
)
HIDDEN_COLUMNS = (
    HIDDEN_REGRIND_DOSED,
    HIDDEN_REGRIND_DIE,
    HIDDEN_TURNS,
    HIDDEN_LOT,
    HIDDEN_LOT_DIE,
    HIDDEN_RPM,
    HIDDEN_MELT,
    HIDDEN_PRESSURE_MODEL,
    HIDDEN_PRESSURE,
)


class LinePlan(Protocol):
    """Per step: the product (index), the mode (MOTOR_ON/OFF, PURGE) and the setpoints (plan module)."""

    product: np.ndarray
    mode: np.ndarray
    setpoint: np.ndarray
    rpm_cmd: np.ndarray
    zone_sp: np.ndarray
    regrind: np.ndarray
    clog_hours: np.ndarray


# --- first-order dynamics over long arrays ----------------------------------------------------
@lru_cache(maxsize=64)
def _decay(a: float) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(LAG_BLOCK)
    exponent = k[:, None] - k[None, :]
    matrix = np.where(exponent >= 0, a ** np.maximum(exponent, 0), 0.0)
    return matrix, a ** np.arange(1, LAG_BLOCK + 1)


def _recurrence(y0: float, a: float, drive: np.ndarray) -> np.ndarray:
    """y[k] = a * y[k-1] + drive[k] with y[-1] = y0, in blocks of LAG_BLOCK steps."""
    matrix, powers = _decay(a)
    out = np.empty(len(drive))
    y = float(y0)
    for start in range(0, len(drive), LAG_BLOCK):
        block = drive[start : start + LAG_BLOCK]
        n = len(block)
        out[start : start + n] = powers[:n] * y + matrix[:n, :n] @ block
        y = out[start + n - 1]
    return out


def lag(target: np.ndarray, tau_s: float, dt: float) -> np.ndarray:
    """First-order lag (time constant tau_s) of `target`, starting settled at its first value."""
    a = math.exp(-dt / tau_s)
    return _recurrence(target[0], a, (1.0 - a) * target)


def ar1(rng: np.random.Generator, sigma: float, tau_s: float, dt: float, n: int) -> np.ndarray:
    """Mean-reverting noise with stationary standard deviation sigma, started in its stationary state."""
    a = math.exp(-dt / tau_s)
    return _recurrence(rng.normal(0.0, sigma), a, rng.normal(0.0, sigma * math.sqrt(1.0 - a * a), n))


# --- the line -------------------------------------------------------------------------------------
def simulate(
    config: PipeSimulatorConfig,
    products: tuple[PipeProduct, ...],
    plan: LinePlan,
    t: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Each numeric column's value at every step (sensor noise included, not yet rounded), the
    true transport delay (`transport_delay_s`: how long ago the melt at the die passed the blender)
    and the hidden state (HIDDEN_COLUMNS)."""
    dt, n = float(config.sample_period_s), len(t)
    ref = {
        name: np.array([getattr(p, name) for p in products])[plan.product]
        for name in ("screw_rpm", "zone_setpoints_c", "motor_current_a", "haul_off_m_min")
    }
    p_ref = np.array([p.pressure_setpoints_bar[0] for p in products])[plan.product]
    rpm = lag(plan.rpm_cmd, DRIVE_TAU_S, dt)
    rpm[rpm < DRIVE_MIN_RPM] = 0.0  # below its minimum speed the drive switches off
    die, mid, delay = _transport(config, rpm, t)
    regrind_die = lag(plan.regrind[die], MIXING_TAU_S, dt)
    regrind_mid = lag(plan.regrind[mid], MIXING_TAU_S, dt)
    lot = np.exp(ar1(rng, config.material_sigma, config.material_tau_s, dt, n))
    zones = _zones(plan.zone_sp, t, dt, rng)
    barrel, barrel_ref = zones @ ZONE_WEIGHTS, ref["zone_setpoints_c"] @ ZONE_WEIGHTS
    melt = lag(barrel + SHEAR_RISE_C * np.sqrt(rpm / ref["screw_rpm"]), MELT_TAU_S, dt)
    pressure_raw = (
        p_ref
        * (rpm / ref["screw_rpm"]) ** config.pressure_exponent
        * np.exp(-config.viscosity_per_c * (melt - barrel_ref - SHEAR_RISE_C))
        * (1 - config.viscosity_per_regrind_pct * regrind_die)
        * lot[die]
        * (1 + config.screen_clogging_per_h * plan.clog_hours)
    )
    pressure = _residual_pressure(lag(pressure_raw, PRESSURE_TAU_S, dt), plan.rpm_cmd, t, dt)
    pressure = pressure + ar1(rng, 1.0, 20.0, dt, n)
    running = rpm > 0
    torque = (
        (1 - 0.7 * config.viscosity_per_regrind_pct * regrind_mid) * lot[mid] * np.exp(-0.008 * (barrel - barrel_ref))
    )
    current = np.where(running, ref["motor_current_a"] * (rpm / ref["screw_rpm"]) ** 0.75 * torque, 0.0)
    haul = lag(
        np.where(plan.mode == MOTOR_ON, ref["haul_off_m_min"] * plan.rpm_cmd / ref["screw_rpm"], 0.0),
        HAUL_OFF_TAU_S,
        dt,
    )
    haul[haul < HAUL_OFF_MIN_M_MIN] = 0.0  # the puller stops below its minimum speed
    # the blender reports the share it doses; with the line stopped its reading freezes
    dosing = plan.regrind + rng.normal(0, SIGNAL_BY_COLUMN["Regeneratanteil"].noise, n)
    dosing = np.clip(dosing[np.maximum.accumulate(np.where(running, np.arange(n), 0))], 0, 100)
    true = {"rpm": rpm, "current": current, "melt": melt, "pressure": pressure, "haul": haul, "zones": zones}
    out = _sensed(true, running, rng)
    out[SETPOINT_COLUMN] = plan.setpoint.copy()
    out["Regeneratanteil"] = dosing
    out["transport_delay_s"] = delay
    # hidden state, never recorded (pipe_extrusion_hidden.py): the blend on its way to the die and the truth
    blend = (plan.regrind.astype(float), regrind_die, lot, lot[die])
    out.update(_hidden(blend, screw_turns(rpm, dt), rpm, melt, pressure_raw, pressure))
    return out


def _hidden(blend: tuple, turns, rpm, melt, pressure_model, pressure) -> dict[str, np.ndarray]:
    """simulate()'s HIDDEN_COLUMNS; blend = (regrind dosed, regrind at the die, lot factor, lot at the die)."""
    regrind_dosed, regrind_die, lot, lot_die = blend
    return {
        HIDDEN_REGRIND_DOSED: regrind_dosed,
        HIDDEN_REGRIND_DIE: regrind_die,
        HIDDEN_TURNS: turns,
        HIDDEN_LOT: lot,
        HIDDEN_LOT_DIE: lot_die,
        HIDDEN_RPM: rpm,
        HIDDEN_MELT: melt,
        HIDDEN_PRESSURE_MODEL: pressure_model,
        HIDDEN_PRESSURE: pressure,
    }


def screw_turns(rpm: np.ndarray, dt: float) -> np.ndarray:
    """Screw revolutions from the recording's start to the end of each step."""
    return np.cumsum(rpm / 60 * dt)


def _transport(config: PipeSimulatorConfig, rpm: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, ...]:
    """Step indices of when the melt now at the die (and half-way down the screw) passed the
    blender, and the die's delay in seconds (NaN where that was before the recording)."""
    n = len(t)
    turns = screw_turns(rpm, config.sample_period_s)

    def origin(revolutions: float) -> tuple[np.ndarray, np.ndarray]:
        index = np.searchsorted(turns, turns - revolutions, side="left")
        return np.clip(index, 0, n - 1), turns - revolutions >= 0

    die, known = origin(config.transport_revolutions)
    mid, _ = origin(TORQUE_POINT * config.transport_revolutions)
    delay = np.full(n, np.nan)
    delay[known] = (t[known] - t[die][known]).astype(float)
    return die, mid, delay


def _zones(zone_sp: np.ndarray, t: np.ndarray, dt: float, rng: np.random.Generator) -> np.ndarray:
    zones = np.empty(zone_sp.shape)
    for z in range(ZONES):
        phase = rng.uniform(0, 2 * math.pi)
        zones[:, z] = (
            lag(zone_sp[:, z], ZONE_TAU_S, dt)
            + HEATER_AMPLITUDE_C * np.sin(2 * math.pi * t / HEATER_PERIODS_S[z] + phase)
            + ar1(rng, 0.25, 60.0, dt, len(t))
        )
    return zones


def _residual_pressure(pressure: np.ndarray, rpm_cmd: np.ndarray, t: np.ndarray, dt: float) -> np.ndarray:
    """With the motor off the melt keeps some pressure, relaxing over minutes towards a floor."""
    off = rpm_cmd <= 0
    edges = np.flatnonzero(np.diff(np.concatenate([[False], off, [False]]).astype(np.int8)))
    out = pressure.copy()
    tail = int(3 * RESIDUAL_TAU_S / dt)
    for begin, end in zip(edges[::2], edges[1::2]):
        stop = min(end + tail, len(t))
        elapsed = (t[begin:stop] - t[begin]).astype(float)
        start_value = max(pressure[begin], RESIDUAL_FLOOR_BAR)
        relax = RESIDUAL_FLOOR_BAR + (start_value - RESIDUAL_FLOOR_BAR) * np.exp(-elapsed / RESIDUAL_TAU_S)
        out[begin:stop] = np.maximum(out[begin:stop], relax)
    return out


def _sensed(true: dict[str, np.ndarray], running: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sensor noise on the true values; a stopped drive and haul-off read exactly 0."""
    n = len(running)

    def sensed(column: str, value: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        noise = rng.normal(0, SIGNAL_BY_COLUMN[column].noise, n)
        return value + (noise if where is None else np.where(where, noise, 0.0))

    out = {
        "Schneckendrehzahl": sensed("Schneckendrehzahl", true["rpm"], running).clip(0),
        "Motorstrom": sensed("Motorstrom", true["current"], running).clip(0),
        "Massetemperatur": sensed("Massetemperatur", true["melt"]),
        "Massedruck": sensed("Massedruck", true["pressure"]).clip(0),
        "Abzugsgeschwindigkeit": sensed("Abzugsgeschwindigkeit", true["haul"], true["haul"] > 0).clip(0),
    }
    for z in range(ZONES):
        column = f"Zone{z + 1}_Temperatur"
        out[column] = sensed(column, true["zones"][:, z])
    return out
