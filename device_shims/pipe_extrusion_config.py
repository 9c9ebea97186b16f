"""What the simulated pipe-extrusion line (pipe_extrusion.py) is set up with: the columns its
recorder writes (German names, as a plant's export would have them), the pipes it makes and the
simulator's tunables. Nothing outside the simulator and its example depends on these names.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

TIME_COLUMN = "Zeitstempel"
PRODUCT_COLUMN = "Produkt"
TIME_FORMAT = "%d.%m.%Y %H:%M:%S"  # local wall-clock time, as the plant's recorder writes it
TIMEZONE = "Europe/Berlin"
LINE_ID = "rohrlinie-2"
RUNNING, IDLE, CHANGEOVER = "running", "idle", "changeover"  # machine states
USE_CASE = "pipe_extrusion"
FILE_PREFIX = "rohrlinie2"
ZONES = 4


@dataclass(frozen=True)
class Signal:
    """One numeric column of the recording and the use-case metric it becomes."""

    column: str
    metric: str
    role: str
    unit: str
    decimals: int
    noise: float  # sensor noise, one standard deviation, in `unit`


SIGNALS = (
    Signal("Schneckendrehzahl", "screw_speed", "screw_speed", "rpm", 1, 0.05),
    Signal("Motorstrom", "motor_current", "drive_current", "A", 1, 0.6),
    *(
        Signal(f"Zone{z}_Temperatur", f"zone{z}_temp", f"barrel_zone{z}_temperature", "degC", 1, 0.15)
        for z in range(1, ZONES + 1)
    ),
    Signal("Massetemperatur", "melt_temp", "melt_temperature", "degC", 1, 0.2),
    Signal("Massedruck", "melt_pressure", "melt_pressure", "bar", 1, 0.5),
    Signal("Sollwert_Massedruck", "melt_pressure_setpoint", "melt_pressure_setpoint", "bar", 0, 0.0),
    Signal("Regeneratanteil", "regrind_share", "regrind_share", "%", 1, 0.3),
    Signal("Abzugsgeschwindigkeit", "haul_off_speed", "line_speed", "m/min", 2, 0.01),
)
COLUMNS = (TIME_COLUMN, PRODUCT_COLUMN, *(s.column for s in SIGNALS))
SIGNAL_BY_COLUMN = {s.column: s for s in SIGNALS}
TARGET_COLUMN = "Massedruck"
SETPOINT_COLUMN = "Sollwert_Massedruck"
# Columns a recorder can lose readings of (the setpoint comes from the recipe, not a sensor).
SENSOR_COLUMNS = tuple(s.column for s in SIGNALS if s.column != SETPOINT_COLUMN)
# Machine states from the recorder's columns, for the mapping's context block and the gateway's
# live state (use case state_rules): (column, op, value, state, why); no rule holds: running.
STATE_RULES = (
    ("Schneckendrehzahl", "<", 1.0, IDLE, "motor off: stoppage or tooling change"),
    ("Abzugsgeschwindigkeit", "<", 0.2, CHANGEOVER, "screw turning, haul-off stopped: purging"),
)


class PipeProduct(BaseModel):
    """A pipe the line makes and its recipe: screw speed for the first setpoint, the melt-pressure
    setpoints the recipe allows, barrel zone setpoints, haul-off speed and the drive current."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(min_length=1, pattern=r"^[^,\"\n]+$")
    screw_rpm: float = Field(gt=0, description="screw speed giving pressure_setpoints_bar[0] at nominal conditions")
    pressure_setpoints_bar: tuple[float, ...] = Field(min_length=1)
    zone_setpoints_c: tuple[float, float, float, float]
    haul_off_m_min: float = Field(gt=0)
    motor_current_a: float = Field(gt=0)


# The line is tooled for 110 mm pipe; its runs change wall thickness (SDR) and compound.
DEFAULT_PRODUCTS = (
    PipeProduct(
        code="PE100-110x6.6-SDR17",
        screw_rpm=42.0,
        pressure_setpoints_bar=(180.0, 200.0),
        zone_setpoints_c=(185.0, 200.0, 210.0, 215.0),
        haul_off_m_min=3.4,
        motor_current_a=95.0,
    ),
    PipeProduct(
        code="PE100-110x10-SDR11",
        screw_rpm=48.0,
        pressure_setpoints_bar=(195.0, 215.0),
        zone_setpoints_c=(185.0, 200.0, 212.0, 218.0),
        haul_off_m_min=2.6,
        motor_current_a=110.0,
    ),
    PipeProduct(
        code="PE100RC-110x6.6-SDR17",
        screw_rpm=40.0,
        pressure_setpoints_bar=(185.0, 200.0),
        zone_setpoints_c=(190.0, 205.0, 215.0, 220.0),
        haul_off_m_min=3.2,
        motor_current_a=100.0,
    ),
)


def _range(low: float, high: float, name: str) -> None:
    if not 0 <= low <= high:
        raise ValueError(f"{name}=({low}, {high}) must satisfy 0 <= low <= high")


class PipeSimulatorConfig(BaseModel):
    """The pipe line's schedule, physics and recorder. Times in seconds unless named otherwise."""

    model_config = ConfigDict(frozen=True)

    sample_period_s: int = Field(default=2, ge=1, le=10, description="the recorder's (and simulation's) step")
    products: tuple[PipeProduct, ...] = Field(default=DEFAULT_PRODUCTS, min_length=1)
    # schedule
    run_minutes: tuple[int, int] = (120, 240)
    die_change_minutes: tuple[int, int] = (10, 20)  # motor off: tooling changed for the next pipe
    purge_minutes: tuple[int, int] = (6, 12)  # screw turning at half speed, haul-off stopped
    stoppages_per_hour: float = Field(default=0.2, ge=0, description="motor-off stops within a run")
    stoppage_minutes: tuple[int, int] = (4, 15)
    setpoint_changes_per_hour: float = Field(default=0.4, ge=0)
    regrind_changes_per_hour: float = Field(default=1.5, ge=0, description="the blender switches regrind share")
    regrind_levels_pct: tuple[float, ...] = (0.0, 10.0, 15.0, 20.0, 25.0, 30.0)
    zone_changes_per_hour: float = Field(default=0.25, ge=0, description="operator tweaks of zone 2-4 setpoints")
    zone_change_c: tuple[float, float] = (4.0, 8.0)
    # physics
    transport_revolutions: float = Field(
        default=300.0, gt=0, description="screw turns from the blender to the die: hopper, feed throat, screw"
    )
    pressure_exponent: float = Field(default=0.6, gt=0, le=1, description="die pressure ~ throughput ** exponent")
    viscosity_per_c: float = Field(default=0.012, ge=0, description="relative pressure drop per degC of melt")
    viscosity_per_regrind_pct: float = Field(default=0.004, ge=0, description="regrind flows easier")
    material_sigma: float = Field(default=0.012, ge=0, description="relative lot-to-lot viscosity wander")
    material_tau_s: float = Field(default=2400.0, gt=0)
    screen_clogging_per_h: float = Field(default=0.008, ge=0, description="relative pressure rise per running hour")
    # operators
    operator_reaction_s: tuple[float, float] = (120.0, 480.0)
    operator_error: float = Field(default=0.015, ge=0, description="relative screw-speed error of a correction")
    operator_threshold_bar: float = Field(default=4.0, ge=0, description="smaller expected deviations are left")
    operator_check_minutes: float = Field(default=30.0, gt=0, description="routine look at the pressure")
    # quality
    spec_band_bar: float = Field(default=8.0, gt=0, description="spec limits: setpoint ± this band")
    # recorder
    gaps_per_day: float = Field(
        default=1.0, ge=0, description="recorder outages (rows missing), at least one per recording"
    )
    gap_s: tuple[int, int] = (150, 400)
    dropouts_per_day: dict[str, float] = Field(
        default_factory=lambda: {"Massetemperatur": 4.0, "Regeneratanteil": 1.0, "Motorstrom": 1.0},
        description="sensor column -> stretches of empty cells per day (at least one per recording when > 0)",
    )
    dropout_s: tuple[int, int] = (20, 180)
    empty_cell_probability: float = Field(default=0.0005, ge=0, le=0.1, description="per sensor cell")

    @model_validator(mode="after")
    def _consistent(self) -> PipeSimulatorConfig:
        for name in (
            "run_minutes",
            "die_change_minutes",
            "purge_minutes",
            "stoppage_minutes",
            "zone_change_c",
            "operator_reaction_s",
            "gap_s",
            "dropout_s",
        ):
            _range(*getattr(self, name), name)
        if self.run_minutes[0] < 60:
            raise ValueError(f"run_minutes={self.run_minutes}: runs must last at least 60 minutes")
        if len(self.regrind_levels_pct) < 2 or not all(0 <= v < 60 for v in self.regrind_levels_pct):
            raise ValueError(f"regrind_levels_pct={self.regrind_levels_pct}: at least two levels in [0, 60)")
        unknown = sorted(set(self.dropouts_per_day) - set(SENSOR_COLUMNS))
        if unknown:
            raise ValueError(f"dropouts_per_day names {unknown}, not sensor columns {list(SENSOR_COLUMNS)}")
        codes = [p.code for p in self.products]
        if len(set(codes)) != len(codes):
            raise ValueError(f"products repeat a code: {codes}")
        return self
