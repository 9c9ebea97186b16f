"""Metric packs from 1-minute rollups + context slices equal packs computed from the raw samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloop.cloud.datalake.context import quantize, sub_intervals, to_ms
from edgeloop.cloud.datalake.rollups import rollup_samples
from edgeloop.cloud.packing.rollup_packs import build_line_packs, metric_packs, pack_columns
from edgeloop.schemas import ContextInterval, SpecLimits, load_use_case

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
LINE = "line-1"
MINUTE = 60_000
SPEC = SpecLimits(target_metric="cold_od_average", lower=4.9, upper=5.1)


def run(interval_id: str, start_min: float, end_min: float, line: str = LINE) -> ContextInterval:
    return ContextInterval(
        kind="run",
        interval_id=interval_id,
        line_id=line,
        start=T0 + timedelta(minutes=start_min),
        end=T0 + timedelta(minutes=end_min),
        value=f"product-{interval_id}",
        spec=SPEC,
    )


def slices_of(*intervals: ContextInterval) -> pd.DataFrame:
    return quantize(sub_intervals(intervals, LINE), "1m")


def samples(rng: np.random.Generator, metrics: list[str], minutes: int, per_minute: int = 6) -> pd.DataFrame:
    n = minutes * per_minute
    frames = []
    for metric in metrics:
        times = to_ms(T0) + np.sort(rng.choice(minutes * MINUTE, size=n, replace=False))
        values = 1e4 + rng.normal(size=n)  # a large mean: std from sum2 would cancel, m2 must not
        frames.append(pd.DataFrame({"metric": metric, "time_ms": times, "value": values}))
    return pd.concat(frames, ignore_index=True)


def brute_force(raw: pd.DataFrame, start_ms: int, end_ms: int, metric: str) -> tuple[int, float, float, float, float]:
    times, values = _by_metric(raw, metric)
    window = values[np.searchsorted(times, start_ms) : np.searchsorted(times, end_ms)]
    if window.size == 0:
        return 0, np.nan, np.nan, np.nan, np.nan
    return window.size, window.mean(), window.std(), window.min(), window.max()


def _by_metric(raw: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    rows = raw[raw.metric == metric].sort_values("time_ms")
    return rows.time_ms.to_numpy(), rows.value.to_numpy()


def assert_packs_match_samples(packs: pd.DataFrame, raw: pd.DataFrame, metrics: list[str]) -> None:
    for _, pack in packs.iterrows():
        for metric in metrics:
            expected = brute_force(raw, pack.window_start_ms, pack.window_end_ms, metric)
            actual = tuple(pack[f"{metric}__{stat}"] for stat in ("count", "mean", "std", "min", "max"))
            assert actual[0] == expected[0], (metric, pack.window_start_ms)
            np.testing.assert_allclose(actual[1:], expected[1:], rtol=1e-9, atol=1e-9, equal_nan=True)


def test_packs_equal_the_statistics_of_their_samples():
    rng = np.random.default_rng(7)
    metrics = ["pressure", "temp_die"]
    raw = samples(rng, metrics, minutes=60)
    packs = metric_packs(rollup_samples(raw, "1m"), slices_of(run("r1", 0, 60)))
    assert list(packs.window_start_ms) == [to_ms(T0) + i * 5 * MINUTE for i in range(12)]
    assert (packs.window_end_ms - packs.window_start_ms == 5 * MINUTE).all()
    assert_packs_match_samples(packs, raw, metrics)
    assert (packs.run_id == "r1").all() and (packs.spec_upper == 5.1).all()


def test_no_pack_straddles_a_context_change_and_packs_sit_on_the_epoch_grid():
    rng = np.random.default_rng(8)
    raw = samples(rng, ["pressure"], minutes=30)
    # r1 ends at minute 12: the window 10..15 has two runs; r2 starting at 12 owns 15..20 onward.
    packs = metric_packs(rollup_samples(raw, "1m"), slices_of(run("r1", 0, 12), run("r2", 12, 30)))
    starts = (packs.window_start_ms - to_ms(T0)) // MINUTE
    assert list(starts) == [0, 5, 15, 20, 25]
    assert list(packs.run_id) == ["r1", "r1", "r2", "r2", "r2"]
    assert (packs.window_start_ms % (5 * MINUTE) == 0).all()


def test_a_stride_gives_overlapping_windows_and_a_gap_in_context_has_none():
    rng = np.random.default_rng(9)
    raw = samples(rng, ["pressure"], minutes=40)
    packs = metric_packs(rollup_samples(raw, "1m"), slices_of(run("r1", 0, 10), run("r2", 20, 40)), stride_minutes=1)
    starts = list((packs.window_start_ms - to_ms(T0)) // MINUTE)
    assert starts == [*range(0, 6), *range(20, 36)]
    assert_packs_match_samples(packs, raw, ["pressure"])


def test_minutes_without_samples_are_allowed_and_windows_without_any_are_dropped():
    rng = np.random.default_rng(10)
    raw = samples(rng, ["pressure", "speed"], minutes=20)
    raw = raw[~((raw.metric == "speed") & (raw.time_ms >= to_ms(T0) + 5 * MINUTE))]  # speed stops at minute 5
    raw = raw[~(raw.time_ms.between(to_ms(T0) + 10 * MINUTE, to_ms(T0) + 15 * MINUTE - 1))]  # silence 10..15
    packs = metric_packs(rollup_samples(raw, "1m"), slices_of(run("r1", 0, 20)))
    assert list((packs.window_start_ms - to_ms(T0)) // MINUTE) == [0, 5, 15]
    assert list(packs.speed__count[1:]) == [0, 0] and packs.speed__mean[1:].isna().all()
    assert_packs_match_samples(packs, raw, ["pressure", "speed"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.integers(1, 89), max_size=6, unique=True),
    window=st.integers(1, 12),
    stride=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_any_runs_windows_and_strides_match_brute_force(cuts, window, stride, seed):
    rng = np.random.default_rng(seed)
    raw = samples(rng, ["a", "b"], minutes=90, per_minute=3)
    edges = [0, *sorted(cuts), 90]
    runs = [run(f"r{i}", lo, hi) for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]
    packs = metric_packs(rollup_samples(raw, "1m"), slices_of(*runs), window_minutes=window, stride_minutes=stride)
    for _, pack in packs.iterrows():
        start_min = (pack.window_start_ms - to_ms(T0)) // MINUTE
        assert (pack.window_start_ms // MINUTE) % stride == 0
        owners = [
            r.interval_id for r in runs if to_ms(r.start) <= pack.window_start_ms and pack.window_end_ms <= to_ms(r.end)
        ]
        assert owners == [pack.run_id], start_min
    assert_packs_match_samples(packs, raw, ["a", "b"])
    expected = sum(
        1
        for r in runs
        for s in range(90)
        if (to_ms(T0) // MINUTE + s) % stride == 0
        and to_ms(r.start) <= to_ms(T0) + s * MINUTE
        and to_ms(T0) + (s + window) * MINUTE <= to_ms(r.end)
        and raw.time_ms.between(to_ms(T0) + s * MINUTE, to_ms(T0) + (s + window) * MINUTE - 1).any()
    )  # windows inside one run that hold at least one sample
    assert len(packs) == expected


def test_no_slices_or_no_rollups_give_an_empty_frame_with_the_columns():
    rng = np.random.default_rng(11)
    rollups = rollup_samples(samples(rng, ["pressure"], minutes=10), "1m")
    empty = metric_packs(rollups, slices_of())
    assert len(empty) == 0 and pack_columns(["pressure"])[0] in empty.columns
    assert len(metric_packs(rollups.iloc[:0], slices_of(run("r1", 0, 10)))) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window_minutes": 0}, "window_minutes=0"),
        ({"stride_minutes": 1.5}, "stride_minutes=1.5"),
        ({"key": "role"}, "rollups lack columns ['role']"),
    ],
)
def test_bad_arguments_name_the_field_and_value(change, message):
    rollups = rollup_samples(samples(np.random.default_rng(1), ["p"], minutes=10), "1m")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        metric_packs(rollups, slices_of(run("r1", 0, 10)), **change)


def test_rollups_off_the_minute_grid_or_repeated_are_refused():
    rollups = rollup_samples(samples(np.random.default_rng(2), ["p"], minutes=10), "1m")
    slices = slices_of(run("r1", 0, 10))
    shifted = rollups.assign(bucket_start_ms=rollups.bucket_start_ms + 1)
    with pytest.raises(ValueError, match=f"bucket_start_ms={rollups.bucket_start_ms[0] + 1}"):
        metric_packs(shifted, slices)
    with pytest.raises(ValueError, match="appears twice"):
        metric_packs(pd.concat([rollups, rollups.iloc[:1]]), slices)


def test_build_line_packs_reads_days_lazily_and_packs_roles_in_their_units():
    use_case = load_use_case("extrusion")
    rng = np.random.default_rng(3)
    raw = samples(rng, ["temp_die", "pressure"], minutes=120)
    raw["value"] = np.where(raw.metric == "temp_die", 400.0, 1000.0) + rng.normal(size=len(raw))
    day_tables = [pa.Table.from_pandas(part, preserve_index=False) for _, part in raw.groupby(raw.time_ms // 3_600_000)]
    consumed = []

    def lazily():
        for table in day_tables:
            consumed.append(table.num_rows)
            yield table

    result = build_line_packs(lazily(), [run("r1", 0, 120, "line-us-1")], line_id="line-us-1", use_case=use_case)
    assert result.samples == len(raw) == sum(consumed)
    assert len(result.packs) == 24 and set(result.levels) == {"1m", "5m", "1h", "1d"}
    # line-us-1 sends °F and psi; its roles come out in °C and bar.
    fahrenheit = raw[raw.metric == "temp_die"].value
    first = result.packs.iloc[0]
    in_window = raw[(raw.metric == "temp_die") & (raw.time_ms < first.window_end_ms)].value
    assert first["die_temperature__mean"] == pytest.approx((in_window.mean() - 32) * 5 / 9, rel=1e-9)
    assert result.packs["die_temperature__max"].max() == pytest.approx((fahrenheit.max() - 32) * 5 / 9, rel=1e-9)
    assert result.packs["melt_pressure__mean"].iloc[0] == pytest.approx(1000 * 0.0689475729, rel=1e-3)
