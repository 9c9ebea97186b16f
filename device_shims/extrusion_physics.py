"""The simulated extrusion line's physics: its state and how one block of seconds advances it.

Melt output follows screw rpm, die temperature and the material; the coating's cross-section is
that output over the line speed; the cold gauge sees the cable extruded `cooling_length_m / speed`
ago, shrunk by a die-temperature-dependent factor (see extrusion.py for the whole picture). Every
lag and noise process is a first-order recurrence evaluated for a whole block at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .extrusion_config import Product, SimulatorConfig

EXTRUDED_OD = "extruded_od"  # keys of physics_block's hidden (unmeasured) values
MATERIAL = "material"
HISTORY_S = 900  # cooling-delay memory; longer than any transit time the speed range allows


@dataclass
class LineState:
    speed: float
    rpm: float
    temp_base: float  # die temperature following its setpoint (thermal lag)
    temp_noise: float
    flange: float
    material_ar: float
    material_step: float
    speed_ripple: float
    oval_hot: float
    oval_cold: float
    pressure_noise: float
    sp_speed: float
    sp_rpm: float
    sp_temp: float
    last_action_s: int
    last_cold_mean: float
    cold_source: np.ndarray  # per second: hot OD x (1 - shrink), what the cold gauge will see
    oval_source: np.ndarray
    stuck_values: dict[int, float] = field(default_factory=dict)


def steady_state(product: Product) -> LineState:
    """The line running `product` at its nominal settings, as if it had for a long time."""
    cold = product.cold_od_mm
    return LineState(
        speed=product.speed_m_min,
        rpm=product.screw_rpm,
        temp_base=product.temp_die_c,
        temp_noise=0.0,
        flange=product.temp_die_c - 12.0,
        material_ar=0.0,
        material_step=1.0,
        speed_ripple=0.0,
        oval_hot=0.004,
        oval_cold=0.0,
        pressure_noise=0.0,
        sp_speed=product.speed_m_min,
        sp_rpm=product.screw_rpm,
        sp_temp=product.temp_die_c,
        last_action_s=-(10**9),
        last_cold_mean=cold,
        cold_source=np.full(HISTORY_S, cold),
        oval_source=np.full(HISTORY_S, 0.004),
    )


def shrink(temp_die: np.ndarray | float) -> np.ndarray | float:
    """Hotter melt shrinks more on cooling."""
    return 0.04 + 0.0005 * (temp_die - 200.0)


@lru_cache(maxsize=32)
def _decay_matrix(a: float, n: int) -> np.ndarray:
    k = np.arange(n)
    exponent = k[:, None] - k[None, :]
    return np.where(exponent >= 0, a ** np.maximum(exponent, 0), 0.0)


def _recurrence(y0: float, a: float, drive: np.ndarray) -> np.ndarray:
    """y[k] = a * y[k-1] + drive[k], y[-1] = y0, for a whole block at once."""
    n = len(drive)
    return a ** np.arange(1, n + 1) * y0 + _decay_matrix(a, n) @ drive


def _lag(y0: float, tau_s: float, target: np.ndarray) -> np.ndarray:
    """First-order lag (time constant tau_s, 1 s steps) of y0 towards `target`."""
    a = math.exp(-1.0 / tau_s)
    return _recurrence(y0, a, (1.0 - a) * target)


def _ar1(rng: np.random.Generator, y0: float, tau_s: float, sigma: float, n: int) -> np.ndarray:
    """Mean-reverting noise with stationary standard deviation sigma."""
    a = math.exp(-1.0 / tau_s)
    return _recurrence(y0, a, rng.normal(0.0, sigma * math.sqrt(1.0 - a * a), n))


def physics_block(
    st: LineState,
    product: Product,
    cfg: SimulatorConfig,
    rng: np.random.Generator,
    setpoints: tuple[np.ndarray, np.ndarray, np.ndarray],
    seconds: np.ndarray,
    heater_phase: float,
) -> dict[str, np.ndarray]:
    """The true value of every metric for each of `seconds` (and the hidden EXTRUDED_OD, MATERIAL),
    driven towards `setpoints`; advances `st`."""
    sp_speed, sp_rpm, sp_temp = setpoints
    n = len(seconds)
    speed_lagged = _lag(st.speed, 8.0, sp_speed)
    ripple = _ar1(rng, st.speed_ripple, 30.0, 0.004, n)
    speed = speed_lagged * (1 + ripple)
    rpm = _lag(st.rpm, 4.0, sp_rpm)
    temp_base = _lag(st.temp_base, 240.0, sp_temp)
    temp_noise = _ar1(rng, st.temp_noise, 120.0, 0.4, n)
    heater = 0.8 * np.sin(2 * math.pi * seconds / 900.0 + heater_phase)
    temp_die = temp_base + heater + temp_noise
    flange = _lag(st.flange, 180.0, temp_die - 12.0)
    material_ar = _ar1(rng, st.material_ar, cfg.material_tau_s, cfg.material_sigma, n)
    material = st.material_step * np.exp(material_ar)
    hot_od, oval_hot, pressure = _die(st, product, rng, speed, rpm, temp_die, material)
    extruded_od = hot_od * (1 - shrink(temp_die))
    cold_od, oval_cold = _cooling(st, cfg, rng, speed, extruded_od, oval_hot)
    st.speed, st.rpm, st.temp_base, st.temp_noise = (
        float(speed_lagged[-1]),
        float(rpm[-1]),
        float(temp_base[-1]),
        float(temp_noise[-1]),
    )
    st.flange, st.material_ar, st.speed_ripple = float(flange[-1]), float(material_ar[-1]), float(ripple[-1])
    return {
        "speed": speed,
        "screw_rpm": rpm,
        "temp_die": temp_die,
        "temp_flange": flange,
        "pressure": pressure,
        "hot_od_x": hot_od * (1 + oval_hot / 2),
        "hot_od_y": hot_od * (1 - oval_hot / 2),
        "cold_od_x": cold_od * (1 + oval_cold / 2),
        "cold_od_y": cold_od * (1 - oval_cold / 2),
        "cold_od_average": cold_od,
        # hidden state, never measured: what the cold gauge will see of the cable extruded now, and the
        # material's melt output factor (the simulator's hidden-state recorder keeps them)
        EXTRUDED_OD: extruded_od,
        MATERIAL: material,
    }


def _die(st, product: Product, rng, speed, rpm, temp_die, material) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mass balance at the die: (hot OD, its ovality, melt pressure); coating area = melt volume rate / speed."""
    n = len(speed)
    hot_nominal = product.cold_od_mm / (1 - shrink(product.temp_die_c))
    area_nominal = math.pi / 4 * (hot_nominal**2 - product.wire_mm**2)
    output = (rpm / product.screw_rpm) * (1 - 0.003 * (temp_die - product.temp_die_c)) * material
    area = area_nominal * output * product.speed_m_min / speed
    hot_od = np.sqrt(product.wire_mm**2 + 4 / math.pi * area)
    oval_hot = 0.004 + _ar1(rng, st.oval_hot - 0.004, 300.0, 0.002, n)
    pressure_noise = _ar1(rng, st.pressure_noise, 20.0, 1.0, n)
    pressure = (
        product.pressure_bar
        * (rpm / product.screw_rpm) ** 0.8
        * material**1.5
        * np.exp(-0.012 * (temp_die - product.temp_die_c))
        + pressure_noise
    )
    st.oval_hot, st.pressure_noise = float(oval_hot[-1]), float(pressure_noise[-1])
    return hot_od, oval_hot, pressure


def _cooling(st: LineState, cfg: SimulatorConfig, rng, speed, cold_now, oval_hot) -> tuple[np.ndarray, np.ndarray]:
    """Cooling trough: the cold gauge sees the cable extruded `transit` seconds ago; (cold OD, its ovality)."""
    n = len(speed)
    cold_source = np.concatenate([st.cold_source, cold_now])
    oval_source = np.concatenate([st.oval_source, oval_hot])
    transit = np.clip(np.round(cfg.cooling_length_m / speed * 60).astype(np.int64), 1, HISTORY_S - 1)
    seen = HISTORY_S + np.arange(n) - transit
    cold_od = cold_source[seen]
    oval_cold = 0.5 * oval_source[seen] + _ar1(rng, st.oval_cold, 120.0, 0.0005, n)
    st.oval_cold = float(oval_cold[-1])
    st.cold_source, st.oval_source = cold_source[-HISTORY_S:], oval_source[-HISTORY_S:]
    return cold_od, oval_cold
