"""A simulated pipe-extrusion line (Rohrlinie 2): the second example line, shaped unlike the cable line.

Where the cable line (extrusion.py) streams 1 Hz samples with English keys through the simulated
gateway, this one writes what a plant's recorder exports: CSV files, one row every 2 s, German
column names, local wall-clock timestamps, the product in a text column, empty cells and a recorder
outage. edgeloop reads them through a mapping file (device_shims/examples/pipe_extrusion/), with
no code of its own for this line.

The line (pipe_extrusion_physics.py, pipe_extrusion_plan.py, settings in pipe_extrusion_config.py):
a single-screw extruder makes 110 mm PE pipe in three recipes (screw speeds 40-48 rpm,
melt-pressure setpoints 180-215 bar). The blender doses a regrind share (0-30 %, switched 1.5 times
an hour; the `Regeneratanteil` column); the melt reaches the die 300 screw turns later (about 6
minutes) and regrind lowers the die pressure (-0.4 % per %): `Massedruck` follows the blender's
column minutes later, which makes it predictable 5 minutes ahead. Barrel zones act through a
7-minute thermal lag. The recipe's setpoint (`Sollwert_Massedruck`, e.g. 180 <-> 200 bar) moves
within runs; operators correct the screw speed late and imperfectly, so the pressure leaves the
setpoint +- 8 bar band for about 11 % of running time. Runs of 2-4 h (`Produkt`), motor-off
stoppages, and changeovers (tooling change with the motor off, then purging with the haul-off
stopped): over a week 86 % running, 9-10 % idle, 4-5 % purging.

Recorder: every `sample_period_s`; outages of 150-400 s (rows missing; one a day, at least one per
recording, placed at random); stretches of empty cells (melt temperature four times a day, regrind
share and drive current once a day, 20-180 s each) and isolated empty cells (0.05 %). Vectorised
with numpy: a week in about 2 s. The same seed and arguments give the same files.

    python -m edgeloop.device_shims.pipe_extrusion --out DIR [--seed N] [--start "2026-03-02 20:00"]
        [--hours H | --days D] [--split day|run]

writes the CSV files, mapping.yaml and use_case.yaml (`make examples` regenerates the committed
example in device_shims/examples/pipe_extrusion/).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from .pipe_extrusion_config import (
    CHANGEOVER,
    COLUMNS,
    FILE_PREFIX,
    IDLE,
    LINE_ID,
    PRODUCT_COLUMN,
    RUNNING,
    SENSOR_COLUMNS,
    SETPOINT_COLUMN,
    SIGNAL_BY_COLUMN,
    SIGNALS,
    STATE_RULES,
    TARGET_COLUMN,
    TIME_COLUMN,
    TIME_FORMAT,
    TIMEZONE,
    USE_CASE,
    PipeProduct,
    PipeSimulatorConfig,
)
from .pipe_extrusion_hidden import PipeHidden
from .pipe_extrusion_physics import simulate
from .pipe_extrusion_plan import Plan, Segment

MODE_STATE = np.array([RUNNING, IDLE, CHANGEOVER], dtype=object)  # by physics mode MOTOR_ON, MOTOR_OFF, PURGE
DEFAULT_SEED = 26
DEFAULT_START = "2026-03-02 20:00"  # local time (TIMEZONE): before the spring DST switch
DEFAULT_HOURS = 8.0
EXAMPLE_DIR = Path(__file__).resolve().parent / "examples" / USE_CASE
MAPPING_FILE = "mapping.yaml"
USE_CASE_FILE = "use_case.yaml"


@dataclass(frozen=True)
class PipeRecording:
    """What the recorder saw, at every step of the recording (rows of the outage included, marked)."""

    start_ms: int
    period_s: int
    time_ms: np.ndarray  # int64, every step
    recorded: np.ndarray  # bool: False during recorder outages (those rows are not written)
    values: dict[str, np.ndarray]  # numeric column -> values as written (NaN = empty cell)
    product: np.ndarray  # the product column (text)
    state: np.ndarray  # the line's true state: running / idle / changeover
    transport_delay_s: np.ndarray  # truth: how long ago the melt now at the die passed the blender (NaN: unknown)
    segments: tuple[Segment, ...]
    setpoint_changes_ms: tuple[int, ...]  # times the recipe moved the melt-pressure setpoint within a run
    hidden: PipeHidden | None = None  # what no column records, for the oracle (pipe_extrusion_hidden.py)

    def rows(self) -> pd.DataFrame:
        """The recorded rows with the file's columns, cells as the CSV holds them (text; "" = empty)."""
        keep = self.recorded
        cells = {TIME_COLUMN: _local_text(self.time_ms[keep]), PRODUCT_COLUMN: self.product[keep]}
        for signal in SIGNALS:
            cells[signal.column] = _format(self.values[signal.column][keep], signal.decimals)
        return pd.DataFrame(cells, columns=list(COLUMNS))


class PipeExtrusionSimulator:
    """`record(start_ms, seconds)` simulates the line and returns what its recorder wrote."""

    def __init__(self, *, seed: int, config: PipeSimulatorConfig | None = None):
        self.seed = int(seed)
        self.config = config or PipeSimulatorConfig()
        self.products: tuple[PipeProduct, ...] = tuple(self.config.products)

    def record(self, start_ms: int, seconds: float) -> PipeRecording:
        cfg = self.config
        dt = cfg.sample_period_s
        n = int(seconds // dt)
        if n < 1:
            raise ValueError(f"seconds={seconds} is shorter than one sample period ({dt} s)")
        t = np.arange(n, dtype=np.int64) * dt
        plan = Plan(self.seed, cfg, t)
        physics = simulate(cfg, self.products, plan, t, np.random.default_rng([self.seed, 2]))
        recorded, values = _recorder(cfg, physics, t, np.random.default_rng([self.seed, 3]))
        return PipeRecording(
            start_ms=int(start_ms),
            period_s=dt,
            time_ms=int(start_ms) + t * 1000,
            recorded=recorded,
            values=values,
            product=np.array([p.code for p in self.products], dtype=object)[plan.product],
            state=MODE_STATE[plan.mode],
            transport_delay_s=physics["transport_delay_s"],
            segments=tuple(s for s in plan.segments if s.start_s < n * dt),
            setpoint_changes_ms=tuple(int(start_ms) + int(s) * 1000 for s in plan.setpoint_changes_s),
            hidden=PipeHidden.from_physics(physics, int(start_ms), cfg),
        )


def _recorder(cfg: PipeSimulatorConfig, physics: dict, t: np.ndarray, rng: np.random.Generator):
    """Rows the recorder wrote, and the cells it left empty."""
    n, dt = len(t), cfg.sample_period_s
    days = n * dt / 86400

    def stretches(rate_per_day: float, bounds: tuple[int, int]) -> list[tuple[int, int]]:
        if rate_per_day <= 0:
            return []
        count = max(1, round(rate_per_day * days))
        out = []
        for _ in range(count):
            length = int(rng.integers(bounds[0], bounds[1] + 1)) // dt
            begin = int(rng.integers(int(0.05 * n), max(int(0.05 * n) + 1, int(0.95 * n) - length)))
            out.append((begin, min(begin + length, n)))
        return out

    recorded = np.ones(n, dtype=bool)
    for begin, end in stretches(cfg.gaps_per_day, cfg.gap_s):
        recorded[begin:end] = False
    values = {}
    for signal in SIGNALS:
        value = np.round(physics[signal.column], signal.decimals)
        if signal.column in SENSOR_COLUMNS:
            empty = rng.random(n) < cfg.empty_cell_probability
            for begin, end in stretches(cfg.dropouts_per_day.get(signal.column, 0.0), cfg.dropout_s):
                empty[begin:end] = True
            value[empty] = np.nan
        values[signal.column] = value
    return recorded, values


def _local_seconds(time_ms: np.ndarray) -> np.ndarray:
    """Seconds since 1970-01-01 00:00 on the recorder's local wall clock."""
    local = pd.to_datetime(time_ms, unit="ms", utc=True).tz_convert(TIMEZONE).tz_localize(None)
    return local.to_numpy().astype("datetime64[s]").astype(np.int64)


@lru_cache(maxsize=1)
def _clock_texts() -> np.ndarray:
    return np.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)], dtype=object)


def _local_text(time_ms: np.ndarray) -> np.ndarray:
    """TIME_FORMAT of each time (whole seconds), fast: one date text per day, a table for the clock."""
    seconds = _local_seconds(time_ms)
    days, day_index = np.unique(seconds // 86400, return_inverse=True)
    dates = np.array([(np.datetime64(int(d), "D").item()).strftime(TIME_FORMAT.split(" ")[0]) for d in days])
    return dates.astype(object)[day_index] + " " + _clock_texts()[seconds % 86400]


def _format(values: np.ndarray, decimals: int) -> list[str]:
    spec = f"{{:.{decimals}f}}"
    return ["" if v != v else spec.format(v) for v in values.tolist()]


# --- files ---------------------------------------------------------------------------------------
def local_start_ms(start: str) -> int:
    """Epoch ms of a local wall-clock time ("2026-03-02 20:00") in the recorder's time zone."""
    naive = datetime.fromisoformat(start)
    if naive.tzinfo is not None:
        raise ValueError(f"start={start!r}: give local wall-clock time without an offset (zone {TIMEZONE})")
    return int(naive.replace(tzinfo=ZoneInfo(TIMEZONE)).timestamp() * 1000)


def write_csv_files(recording: PipeRecording, out_dir: Path, split: str = "day") -> list[Path]:
    """The recorded rows as CSV files: one per local calendar day (`day`) or per product run (`run`)."""
    if split not in ("day", "run"):
        raise ValueError(f"split={split!r} is neither 'day' nor 'run'")
    rows = recording.rows()
    out_dir.mkdir(parents=True, exist_ok=True)
    local = _local_seconds(recording.time_ms[recording.recorded]).astype("datetime64[s]")
    if split == "day":
        keys = np.datetime_as_string(local, unit="D")
    else:
        product = recording.product[recording.recorded]
        run = np.concatenate([[0], np.cumsum(product[1:] != product[:-1])])
        first = np.concatenate([[0], np.flatnonzero(np.diff(run)) + 1])
        names = [f"{local[i].item():%Y%m%d-%H%M}_{product[i]}" for i in first]
        keys = np.asarray(names, dtype=object)[run]
    paths = []
    for key in dict.fromkeys(keys.tolist()):
        path = out_dir / f"{FILE_PREFIX}_{key}.csv"
        rows[keys == key].to_csv(path, index=False, lineterminator="\n")
        paths.append(path)
    return paths


def mapping_text(config: PipeSimulatorConfig) -> str:
    columns = "\n".join(f"  {s.column}: {s.metric}" for s in SIGNALS)
    rules = "\n".join(
        f'      - {{when: "{column} {op} {value:g}", state: {state}}}  # {why}'
        for column, op, value, state, why in STATE_RULES
    )
    return f"""\
# Mapping of Rohrlinie 2's recorder export (generated by device_shims/pipe_extrusion.py, `make examples`).
# The recorder writes one row every 2 s in local time, German column names, the pipe in production in
# `{PRODUCT_COLUMN}`, the recipe's melt-pressure setpoint in `{SETPOINT_COLUMN}`; empty cells are lost readings.
layout: wide
timestamp:
  column: {TIME_COLUMN}
  format: "{TIME_FORMAT}"
  timezone: {TIMEZONE}
# file column -> metric key of the use case ({USE_CASE}: use_case.yaml)
columns:
{columns}
speed: 0
# line_id: {LINE_ID}   # optional: the recording's line (default: the gateway's, or backfill's --line)
context:
  # a new run each time the product changes (at a changeover the recipe loads the next pipe)
  runs: {{column: {PRODUCT_COLUMN}}}
  # spec limits of {TARGET_COLUMN}: the setpoint in force +- {config.spec_band_bar:g} bar
  limits: {{setpoint: {SETPOINT_COLUMN}, band: {config.spec_band_bar:g}}}
  states:
    default: {RUNNING}
    rules:
{rules}
"""


def use_case_text(config: PipeSimulatorConfig) -> str:
    metrics = "\n".join(f"  - {s.metric}" for s in SIGNALS)
    rules = "\n".join(
        f'  - {{when: "{SIGNAL_BY_COLUMN[column].metric} {op} {value:g}", state: {state}}}'
        for column, op, value, state, _why in STATE_RULES
    )
    taxonomy = "\n".join(f"  {s.metric}: {{role: {s.role}, unit: {s.unit!r}}}" for s in SIGNALS)
    return f"""\
# Predictive quality on a pipe-extrusion line (generated by device_shims/pipe_extrusion.py, `make examples`):
# predict the melt pressure 5 minutes ahead from a 5-minute window of the line's metrics. The melt
# reaches the die about 6 minutes after the blender doses it: the regrind share is a leading signal.
use_case: {USE_CASE}
description: Predict the melt pressure 5 minutes ahead and flag deviations beyond the setpoint +- {config.spec_band_bar:g} bar.
metrics:
{metrics}
target_metric: melt_pressure
sample_period_s: {config.sample_period_s}
pack_window_s: 300
horizon_s: 300
label_window_s: 60
example_stride_s: 60
feature_stats: [mean, std, min, max, last, slope]
# What a process engineer adds (schemas/feature_config.py): the time since the recipe last moved the
# setpoint, and the regrind share on its way to the die: it passes the blender {config.transport_revolutions:g} screw
# turns (screw speed in rpm: turns per 60 s) before the die, longer than the horizon, so the share the
# die sees in the label window is already in the pack (at_label); the change still under way
# (transit_change) only fits in the pack at high screw speeds (else NaN). On 14 simulated days they move
# the RMSE by no more than the noise (4.74 -> 4.71-4.74 bar); windows, EWMs and changes did no better.
features:
  steps:
    - {{metric: melt_pressure_setpoint, min_step: 0.5}}
  transport:
    - {{upstream: regrind_share, rate_metric: screw_speed, distance: {config.transport_revolutions:g}, rate_period_s: 60}}
model_families: [xgboost, linear]
precisions: [fp32]
# packs overlapping idle (motor off) or changeover (purging) are left out of training and scoring;
# the gateway tells the state from the same rules as the mapping's context block
productive_states: [{RUNNING}]
state_rules:
{rules}
training:
  templates: [lasso, xgboost]
  candidates_per_template: 8
  cv_folds: 3
taxonomy:
{taxonomy}
"""


def write_example(
    out_dir: Path | str = EXAMPLE_DIR,
    *,
    seed: int = DEFAULT_SEED,
    start: str = DEFAULT_START,
    hours: float = DEFAULT_HOURS,
    split: str = "day",
    config: PipeSimulatorConfig | None = None,
) -> list[Path]:
    """CSV files of `hours` of Rohrlinie 2 from local time `start`, with mapping.yaml and use_case.yaml.

    Earlier `FILE_PREFIX_*.csv` files in `out_dir` are removed first (a shorter recording leaves none behind)."""
    out_dir = Path(out_dir)
    if not hours > 0:
        raise ValueError(f"hours={hours} must be positive")
    simulator = PipeExtrusionSimulator(seed=seed, config=config)
    recording = simulator.record(local_start_ms(start), hours * 3600)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{FILE_PREFIX}_*.csv"):
        old.unlink()
    paths = write_csv_files(recording, out_dir, split)
    for name, text in (
        (MAPPING_FILE, mapping_text(simulator.config)),
        (USE_CASE_FILE, use_case_text(simulator.config)),
    ):
        path = out_dir / name
        path.write_text(text)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgeloop.device_shims.pipe_extrusion",
        description="Write a simulated pipe-extrusion recording (CSV, German columns) with its mapping and use case.",
    )
    parser.add_argument("--out", type=Path, default=EXAMPLE_DIR, help=f"directory (default {EXAMPLE_DIR})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--start", default=DEFAULT_START, help=f"local time in {TIMEZONE} (default %(default)s)")
    parser.add_argument("--hours", type=float, default=DEFAULT_HOURS)
    parser.add_argument("--days", type=float, help="instead of --hours")
    parser.add_argument("--split", choices=("day", "run"), default="day", help="one CSV per local day or per run")
    args = parser.parse_args(argv)
    hours = args.days * 24 if args.days is not None else args.hours
    try:
        paths = write_example(args.out, seed=args.seed, start=args.start, hours=hours, split=args.split)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
