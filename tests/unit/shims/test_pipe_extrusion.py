"""The simulated pipe-extrusion line (the second example line) and its committed example files:
determinism, the recorder's shape (2 s rows, outages, empty cells, German columns),
idle periods, setpoint changes within runs, the melt transport delay that makes the melt pressure
predictable minutes ahead, and the example's mapping and use case."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from edgeloop.device_shims import pipe_extrusion as pipe
from edgeloop.device_shims.pipe_extrusion_config import (
    COLUMNS,
    DEFAULT_PRODUCTS,
    PRODUCT_COLUMN,
    SETPOINT_COLUMN,
    SIGNALS,
    TARGET_COLUMN,
    TIME_COLUMN,
    TIME_FORMAT,
    TIMEZONE,
    PipeSimulatorConfig,
)
from edgeloop.device_shims.pipe_extrusion_physics import MIXING_TAU_S, PRESSURE_TAU_S
from edgeloop.device_shims.recording_context import recording_context
from edgeloop.device_shims.replay_mapping import ReplayMapping, resolve_metric
from edgeloop.schemas import ContextKind, UseCaseConfig
from edgeloop.schemas.use_case import load_use_case_file

START_MS = pipe.local_start_ms("2026-03-02 06:00")
EXAMPLE = pipe.EXAMPLE_DIR
REGRIND, CURRENT = "Regeneratanteil", "Motorstrom"


@pytest.fixture(scope="module")
def two_days() -> pipe.PipeRecording:
    return pipe.PipeExtrusionSimulator(seed=3).record(START_MS, 2 * 86400)


@pytest.fixture(scope="module")
def two_days_rows(two_days) -> pd.DataFrame:
    return two_days.rows()


def _filled(recording: pipe.PipeRecording, column: str) -> np.ndarray:
    return pd.Series(recording.values[column]).interpolate(limit_direction="both").to_numpy()


def _stretches(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def test_same_seed_same_recording_another_seed_another():
    a = pipe.PipeExtrusionSimulator(seed=11).record(START_MS, 4 * 3600)
    b = pipe.PipeExtrusionSimulator(seed=11).record(START_MS, 4 * 3600)
    c = pipe.PipeExtrusionSimulator(seed=12).record(START_MS, 4 * 3600)
    assert a.rows().equals(b.rows())
    assert a.segments == b.segments and a.setpoint_changes_ms == b.setpoint_changes_ms
    assert not a.rows().equals(c.rows())


def test_rows_every_2_s_but_for_the_recorder_outages(two_days, two_days_rows):
    rows = two_days_rows
    assert tuple(rows.columns) == COLUMNS
    stamps = pd.to_datetime(rows[TIME_COLUMN], format=TIME_FORMAT).dt.tz_localize(TIMEZONE)
    steps = stamps.diff().dt.total_seconds().to_numpy()[1:]
    gaps = steps[steps != 2]
    assert len(gaps) == 2, f"gaps_per_day=1: two outages in two days, steps other than 2 s: {gaps}"
    assert np.all((gaps >= 150) & (gaps <= 402)), gaps
    assert len(rows) == two_days.recorded.sum() and len(two_days.recorded) == 2 * 86400 // 2


def test_sensor_dropouts_leave_empty_cells_and_recipe_columns_stay_full(two_days_rows):
    rows = two_days_rows
    assert (rows[SETPOINT_COLUMN] != "").all() and (rows[PRODUCT_COLUMN] != "").all()
    for column, per_day in PipeSimulatorConfig().dropouts_per_day.items():
        long_ones = [s for s in _stretches(rows[column].to_numpy() == "") if s[1] - s[0] >= 10]
        assert len(long_ones) >= per_day, (column, long_ones)
    isolated = sum((rows[s.column] == "").sum() for s in SIGNALS if s.column not in ("Massetemperatur", REGRIND))
    assert isolated > 0, "isolated empty cells in the other sensor columns"


def test_idle_periods_motor_off_values_stop_or_drift(two_days):
    state, product = two_days.state, two_days.product
    rpm = two_days.values["Schneckendrehzahl"]
    pressure = _filled(two_days, TARGET_COLUMN)
    idle = _stretches(state == pipe.IDLE)
    within_runs = [(a, b) for a, b in idle if a > 0 and b < len(state) and product[a - 1] == product[b]]
    assert within_runs, "motor-off stoppages within runs"
    assert len(idle) > len(within_runs), "and die changes between runs"
    for a, b in idle:
        settled = slice(a + 45, b)  # the drive and the haul-off stop within 90 s
        assert np.nanmax(rpm[settled]) == 0.0 and np.nanmax(two_days.values[CURRENT][settled]) == 0.0
        assert np.nanmax(two_days.values["Abzugsgeschwindigkeit"][settled]) == 0.0
        assert np.all(pressure[a + 90 : b] < 0.6 * pressure[a - 1]), "the melt pressure relaxes"
        regrind = two_days.values[REGRIND][settled]
        assert np.nanmax(regrind) == np.nanmin(regrind), "the blender's reading freezes"
    melt = _filled(two_days, "Massetemperatur")
    for a, b in within_runs:  # no shear heating: the melt cools towards the barrel zones
        assert melt[b - 1] < melt[a] - 4, (a, b, melt[a], melt[b - 1])
    running = state == pipe.RUNNING
    assert np.nanmin(rpm[running & np.roll(running, 60) & np.roll(running, -60)]) > 10


def test_setpoint_moves_within_runs_and_the_pressure_follows(two_days):
    setpoint, product = two_days.values[SETPOINT_COLUMN], two_days.product
    moves = np.flatnonzero(np.diff(setpoint)) + 1
    within = [i for i in moves if product[i] == product[i - 1]]
    assert len(within) >= 3
    allowed = {p.code: set(p.pressure_setpoints_bar) for p in DEFAULT_PRODUCTS}
    for i in within:
        assert {setpoint[i - 1], setpoint[i]} <= allowed[product[i]], (product[i], setpoint[i - 1], setpoint[i])
    assert set(two_days.setpoint_changes_ms) == {int(two_days.time_ms[i]) for i in within}
    running = two_days.state == pipe.RUNNING
    deviation = _filled(two_days, TARGET_COLUMN)[running] - setpoint[running]
    band = PipeSimulatorConfig().spec_band_bar
    assert abs(np.median(deviation)) < 2.0
    assert np.mean(deviation > band) > 0.01 and np.mean(deviation < -band) > 0.01, "violations on both sides"
    assert np.mean(np.abs(deviation) > band) < 0.2


def _lagged_correlation(recording: pipe.PipeRecording, span: int, max_lag: int) -> np.ndarray:
    """Correlation of `span`-step changes of the regrind share with those of the melt pressure `lag` steps later."""
    regrind, pressure = _filled(recording, REGRIND), _filled(recording, TARGET_COLUMN)
    running = recording.state == pipe.RUNNING
    d_regrind, d_pressure = regrind[span:] - regrind[:-span], pressure[span:] - pressure[:-span]
    ok = running[span:] & running[:-span]
    out = []
    for lag in range(max_lag):
        x, y = d_regrind[: len(d_regrind) - lag], d_pressure[lag:]
        both = ok[: len(ok) - lag] & ok[lag:]
        out.append(np.corrcoef(x[both], y[both])[0, 1])
    return np.array(out)


def test_pressure_answers_the_blender_after_the_melt_transport_delay():
    # one pipe, no operator corrections: the screw speed, hence the transport delay, stays put
    config = PipeSimulatorConfig(
        products=(DEFAULT_PRODUCTS[0],),
        setpoint_changes_per_hour=0,
        stoppages_per_hour=0,
        zone_changes_per_hour=0,
        operator_threshold_bar=1e9,
    )
    recording = pipe.PipeExtrusionSimulator(seed=2, config=config).record(START_MS, 86400)
    running = recording.state == pipe.RUNNING
    rpm = np.nanmedian(recording.values["Schneckendrehzahl"][running])
    transport_s = config.transport_revolutions * 60 / rpm  # screw turns from the blender to the die
    designed_s = transport_s + MIXING_TAU_S + PRESSURE_TAU_S  # the step's centre, after the lags
    assert np.nanmedian(recording.transport_delay_s[running]) == pytest.approx(transport_s, abs=15)
    corr = _lagged_correlation(recording, span=60, max_lag=400)
    peak_s = int(np.argmin(corr)) * 2
    assert abs(peak_s - designed_s) <= 40, (peak_s, designed_s)
    assert corr.min() < -0.3, "more regrind, lower die pressure"
    assert abs(corr[0]) < 0.1 and abs(corr[75]) < 0.1, "nothing at the die within 150 s of the blender"


def test_default_line_pressure_trails_the_blender_by_minutes(two_days):
    corr = _lagged_correlation(two_days, span=60, max_lag=400)
    running = two_days.state == pipe.RUNNING
    low, high = np.nanpercentile(two_days.transport_delay_s[running], [10, 90])
    assert low >= 240 and high <= 600, (low, high)
    assert low <= int(np.argmin(corr)) * 2 <= high + 60
    assert corr.min() < -0.15 and abs(corr[0]) < 0.1


def _pack_forecasts(recording: pipe.PipeRecording, with_regrind: bool) -> tuple[float, float]:
    """Held-out RMSE of a least-squares forecast from a 5-minute pack, and of persistence, 5 minutes ahead."""
    window, horizon, label = 150, 150, 30  # steps of 2 s: the example use case's windows
    pressure, setpoint = _filled(recording, TARGET_COLUMN), recording.values[SETPOINT_COLUMN]
    regrind, current = _filled(recording, REGRIND), _filled(recording, CURRENT)
    not_running = np.concatenate([[0], np.cumsum(recording.state != pipe.RUNNING)])
    ends = np.arange(window, len(pressure) - horizon - label, 30)
    ends = ends[not_running[ends + horizon + label] == not_running[ends - window]]

    def mean(x, start, stop):
        return np.array([x[e + start : e + stop].mean() for e in ends])

    last = mean(pressure, -15, 0)
    target = mean(pressure, horizon, horizon + label)
    features = [setpoint[ends - 1] - last, mean(current, -15, 0) - mean(current, -window, -window + 15)]
    if with_regrind:
        features.append(last * (mean(regrind, -15, 0) - mean(regrind, -window, -window + 15)) / 100)
    x = np.column_stack([*features, np.ones(len(ends))])
    half = len(ends) // 2
    coef, *_ = np.linalg.lstsq(x[:half], (target - last)[:half], rcond=None)
    model = np.sqrt(np.mean((last[half:] + x[half:] @ coef - target[half:]) ** 2))
    persistence = np.sqrt(np.mean((last[half:] - target[half:]) ** 2))
    return model, persistence


def test_melt_pressure_is_predictable_5_minutes_ahead(two_days):
    model, persistence = _pack_forecasts(two_days, with_regrind=True)
    without_blender, _ = _pack_forecasts(two_days, with_regrind=False)
    assert model < 0.9 * persistence, (model, persistence)
    assert model < 0.96 * without_blender, "the blender's regrind share is a leading signal"


def test_days_of_data_in_seconds():
    started = time.perf_counter()
    recording = pipe.PipeExtrusionSimulator(seed=1).record(START_MS, 3 * 86400)
    elapsed = time.perf_counter() - started
    assert len(recording.time_ms) == 3 * 86400 // 2
    assert elapsed < 6.0, f"3 days took {elapsed:.1f} s"


def test_committed_example_is_what_the_generator_writes(tmp_path):
    written = pipe.write_example(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in EXAMPLE.iterdir()), "make examples"
    for path in written:
        committed = EXAMPLE / path.name
        if path.suffix != ".csv":
            assert committed.read_text() == path.read_text(), f"{committed} differs: make examples"
            continue
        new, old = (pd.read_csv(p, dtype=str, keep_default_na=False) for p in (path, committed))
        assert list(old.columns) == list(new.columns) and len(old) == len(new), committed
        assert old[[TIME_COLUMN, PRODUCT_COLUMN]].equals(new[[TIME_COLUMN, PRODUCT_COLUMN]]), committed
        for signal in SIGNALS:
            assert ((old[signal.column] == "") == (new[signal.column] == "")).all(), (committed, signal.column)
            a, b = (pd.to_numeric(f[signal.column]).to_numpy() for f in (old, new))
            # the same numbers, up to a last-digit rounding flip of a platform's libm
            assert np.nanmax(np.abs(a - b)) <= 1.01 * 10**-signal.decimals, (committed, signal.column)
    total = sum(p.stat().st_size for p in EXAMPLE.iterdir())
    assert total < 2_000_000, f"the committed example is {total} bytes"


def test_example_mapping_and_use_case_validate_and_fit_the_files():
    mapping = ReplayMapping.from_file(EXAMPLE / pipe.MAPPING_FILE)
    use_case = load_use_case_file(EXAMPLE / pipe.USE_CASE_FILE)
    assert use_case == UseCaseConfig.from_file(EXAMPLE / pipe.USE_CASE_FILE)
    assert use_case.target_metric == "melt_pressure" and use_case.horizon_s == 300
    assert use_case.sample_period_s == PipeSimulatorConfig().sample_period_s
    assert use_case.productive_states == [pipe.RUNNING]
    metrics = [resolve_metric(entry, use_case, "rohrlinie-2", f"columns.{c}") for c, entry in mapping.columns.items()]
    assert sorted(metrics) == sorted(use_case.metrics), "every column feeds a metric, every metric has a column"
    assert mapping.columns[TARGET_COLUMN].metric == use_case.target_metric
    header = set(pd.read_csv(next(EXAMPLE.glob("*.csv")), nrows=0).columns)
    assert {mapping.timestamp.column, *mapping.columns, *mapping.context.columns()} <= header
    assert mapping.context.limits.setpoint == SETPOINT_COLUMN
    assert mapping.context.limits.band == PipeSimulatorConfig().spec_band_bar
    # the gateway's live state: the mapping's state rules, on the metrics the columns feed
    from_columns = [
        ([(mapping.columns[c.column].metric, c.op, c.value) for c in rule.when], rule.state)
        for rule in mapping.context.states.rules
    ]
    assert [(rule.conditions(), rule.state) for rule in use_case.state_rules] == from_columns
    assert {rule.state for rule in use_case.state_rules} == {pipe.IDLE, pipe.CHANGEOVER}


def test_example_context_runs_limits_and_states():
    mapping = ReplayMapping.from_file(EXAMPLE / pipe.MAPPING_FILE)
    use_case = load_use_case_file(EXAMPLE / pipe.USE_CASE_FILE)
    files = sorted(EXAMPLE.glob("*.csv"))
    intervals = recording_context(files, mapping, "rohrlinie-2", use_case)
    runs = [i for i in intervals if i.kind is ContextKind.RUN]
    products = {p.code for p in DEFAULT_PRODUCTS}
    assert {r.value for r in runs} <= products and len({r.value for r in runs}) >= 2
    states = {i.value for i in intervals if i.kind is ContextKind.STATE}
    assert states == {pipe.RUNNING, pipe.IDLE, pipe.CHANGEOVER}
    limits = [i for i in intervals if i.kind is ContextKind.LIMITS]
    widths = {round(i.spec.upper - i.spec.lower, 6) for i in limits}
    assert widths == {2 * PipeSimulatorConfig().spec_band_bar}
    centres = [(i.spec.upper + i.spec.lower) / 2 for i in limits]
    within_run_moves = sum(1 for a, b in zip(centres, centres[1:]) if a != b)
    assert within_run_moves > len(runs), "the setpoint moves within runs"


def test_config_errors_name_the_field():
    with pytest.raises(ValidationError, match=r"dropouts_per_day names \['Drehzahl'\]"):
        PipeSimulatorConfig(dropouts_per_day={"Drehzahl": 1.0})
    with pytest.raises(ValidationError, match=r"run_minutes=\(90, 30\)"):
        PipeSimulatorConfig(run_minutes=(90, 30))
    with pytest.raises(ValueError, match=r"seconds=1 is shorter than one sample period"):
        pipe.PipeExtrusionSimulator(seed=1).record(START_MS, 1)


def test_command_writes_one_file_per_run(tmp_path: Path, capsys):
    assert pipe.main(["--out", str(tmp_path), "--seed", "26", "--hours", "5", "--split", "run"]) == 0
    csvs = sorted(tmp_path.glob("rohrlinie2_*.csv"))
    assert len(csvs) >= 2 and (tmp_path / pipe.MAPPING_FILE).exists() and (tmp_path / pipe.USE_CASE_FILE).exists()
    for path in csvs:
        products = pd.read_csv(path, dtype=str, keep_default_na=False)[PRODUCT_COLUMN].unique()
        assert len(products) == 1 and path.stem.endswith(products[0]), (path.name, products)
    assert capsys.readouterr().out.split() == [str(p) for p in csvs] + [
        str(tmp_path / pipe.MAPPING_FILE),
        str(tmp_path / pipe.USE_CASE_FILE),
    ]
    assert pipe.main(["--out", str(tmp_path), "--start", "2026-03-02T06:00+01:00"]) == 2
    assert "give local wall-clock time" in capsys.readouterr().err
