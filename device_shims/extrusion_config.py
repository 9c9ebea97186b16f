"""What a simulated extrusion line is set up with: its metrics, the products it makes, sensor faults
and the simulator's tunables (SimulatorConfig). The simulator itself is in extrusion.py.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

METRICS = (
    "speed",
    "screw_rpm",
    "temp_die",
    "temp_flange",
    "pressure",
    "hot_od_x",
    "hot_od_y",
    "cold_od_x",
    "cold_od_y",
    "cold_od_average",
)
TARGET_METRIC = "cold_od_average"


class Product(BaseModel):
    """A cable the line makes: wire, nominal cold OD with its tolerance, and nominal settings."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(min_length=1)
    wire_mm: float = Field(gt=0)
    cold_od_mm: float = Field(gt=0)
    tolerance_mm: float = Field(gt=0, description="half-width of the spec band around cold_od_mm")
    speed_m_min: float = Field(gt=0)
    screw_rpm: float = Field(gt=0)
    temp_die_c: float = Field(gt=0)
    pressure_bar: float = Field(gt=0)

    @model_validator(mode="after")
    def _coating_fits(self) -> Product:
        if self.cold_od_mm - self.tolerance_mm <= self.wire_mm:
            raise ValueError(
                f"product {self.code}: cold_od_mm={self.cold_od_mm} - tolerance_mm={self.tolerance_mm} "
                f"must exceed wire_mm={self.wire_mm}"
            )
        return self


def _family(
    size: str,
    wire_mm: float,
    cold_od_mm: float,
    tolerance_mm: float,
    speed: float,
    rpm: float,
    temp: float,
    pressure: float,
) -> tuple[Product, ...]:
    """One cable size in three insulation compounds: same spec, different process settings."""
    compounds = (
        # (suffix, speed factor, rpm factor, die temperature offset, pressure factor)
        ("PVC-BLK", 1.00, 1.00, 0.0, 1.00),
        ("PVC-RED", 1.05, 1.04, 3.0, 0.95),
        ("LSZH", 0.88, 0.92, -8.0, 1.18),  # low-smoke zero-halogen: stiffer melt, run slower
    )
    return tuple(
        Product(
            code=f"{size}-{suffix}",
            wire_mm=wire_mm,
            cold_od_mm=cold_od_mm,
            tolerance_mm=tolerance_mm,
            speed_m_min=round(speed * fs, 1),
            screw_rpm=round(rpm * fr, 1),
            temp_die_c=temp + dt,
            pressure_bar=round(pressure * fp, 1),
        )
        for suffix, fs, fr, dt, fp in compounds
    )


# A line is tooled for one cable size; its runs change compound and colour (the common changeover).
DEFAULT_FAMILIES = (
    _family("CBL-25", wire_mm=1.60, cold_od_mm=2.90, tolerance_mm=0.040, speed=210, rpm=55, temp=205, pressure=190),
    _family("CBL-40", wire_mm=2.25, cold_od_mm=3.80, tolerance_mm=0.050, speed=180, rpm=62, temp=210, pressure=215),
    _family("CBL-60", wire_mm=2.76, cold_od_mm=4.90, tolerance_mm=0.060, speed=150, rpm=70, temp=215, pressure=240),
)


def default_products(seed: int) -> tuple[Product, ...]:
    """The product family of a line simulated with `seed` (lines with consecutive seeds differ)."""
    return DEFAULT_FAMILIES[seed % len(DEFAULT_FAMILIES)]


class FaultKind(StrEnum):
    STUCK = "stuck"  # the sensor repeats the value it had when the fault began
    SPIKES = "spikes"  # isolated wild readings
    DROPOUT = "dropout"  # no readings at all


class SensorFault(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: FaultKind
    metric: str
    start_s: int = Field(ge=0, description="offset from the simulation start")
    duration_s: int = Field(gt=0)
    spike_probability: float = Field(default=0.05, ge=0, le=1, description="per reading, for kind=spikes")


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    sample_period_s: dict[str, float] = Field(
        default_factory=dict, description="per metric; metrics not named here are sampled at 1 Hz"
    )
    products: list[Product] | None = Field(
        default=None, min_length=1, description="what the line makes; default: a size family chosen by the seed"
    )
    run_minutes: tuple[int, int] = (90, 180)
    changeover_minutes: tuple[int, int] = (8, 15)
    cooling_length_m: float = Field(default=700.0, gt=0, description="extruder to cold gauge")
    material_sigma: float = Field(default=0.015, ge=0, description="relative melt-flow wander")
    material_tau_s: float = Field(default=1200.0, gt=0)
    material_steps_per_hour: float = Field(default=1.0, ge=0, description="new material batches")
    material_step: float = Field(default=0.035, ge=0, description="typical relative size of a batch step")
    speed_changes_per_hour: float = Field(default=0.5, ge=0)
    speed_change: tuple[float, float] = (0.04, 0.10)
    rpm_compensation_error: float = Field(default=0.015, ge=0, description="relative, one sigma")
    operator_threshold: float = Field(default=0.6, gt=0, description="share of the tolerance that gets a reaction")
    operator_response_probability: float = Field(default=0.5, ge=0, le=1, description="per minute")
    operator_gain: float = Field(default=0.8, ge=0)
    operator_wait_s: int = Field(default=300, ge=0)
    spike_probability: float = Field(default=0.0, ge=0, le=1, description="per reading, every metric")
    faults: list[SensorFault] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_metrics(self) -> SimulatorConfig:
        for metric, period in self.sample_period_s.items():
            if metric not in METRICS:
                raise ValueError(f"sample_period_s names metric {metric!r}, not one of {list(METRICS)}")
            if not period > 0:
                raise ValueError(f"sample_period_s[{metric!r}]={period} must be positive")
        for i, fault in enumerate(self.faults):
            if fault.metric not in METRICS:
                raise ValueError(f"faults[{i}].metric={fault.metric!r} is not one of {list(METRICS)}")
        for name in ("run_minutes", "changeover_minutes", "speed_change"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name}=({low}, {high}) must satisfy 0 < low <= high")
        return self

    def period_ms(self, metric: str) -> int:
        return max(1, round(self.sample_period_s.get(metric, 1.0) * 1000))
