"""What a year of stored data adds to the bench's counts (benchmarks/cost_usage.py) follows what the
code does now: compaction lists the open hours after its checkpoint and sweeps everything once a day
(functions/compaction/checkpoint.py), the metric packer reads only what changed
(cloud/packing/incremental.py); and the compaction interval comes from the template's schedule."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import cost_runs
import pytest

from benchmarks import bench_cost, cost_meter, cost_model, cost_usage
from benchmarks.cost_fleet import FleetRun
from benchmarks.cost_template import scheduled_every_s
from edgeloop.schemas import names

DAY_S = 86_400
SWEEPS = cost_model.MONTH_S / DAY_S  # the first round of each UTC day
BATCH_WINDOWS_PER_DAY = 1440  # batched ingest: one raw object per 60 s window


def _listing(raw_objects: int, interval_s: int) -> float:
    run = cost_runs.fleet_run(Counter(), raw_objects=raw_objects, compaction_interval_s=interval_s)
    return cost_usage.compaction_listing_per_month(run, cost_runs.settings(interval_s), days=1)


def test_only_the_daily_sweep_lists_beyond_one_page_when_the_open_hours_fit_one():
    # 3 open hours of 1,440 raw objects and their markers a day: 360 keys, the run's own pages
    stored = BATCH_WINDOWS_PER_DAY * (cost_runs.RAW_EXPIRY_DAYS + cost_runs.MARKER_EXPIRY_DAYS)
    expected = SWEEPS * (stored / 1000 - 2)
    assert _listing(BATCH_WINDOWS_PER_DAY, 15 * 60) == pytest.approx(expected)
    assert _listing(BATCH_WINDOWS_PER_DAY, 60 * 60) == pytest.approx(expected)


def test_regular_rounds_list_the_open_hours_so_their_pages_follow_the_interval():
    open_pages = 20_000 * cost_usage.OPEN_HOURS / 24 / 1000 - 2  # 10,000 raw objects a day + markers
    quarter_hourly, hourly = _listing(10_000, 15 * 60), _listing(10_000, 60 * 60)
    rounds_15, rounds_60 = cost_model.MONTH_S / (15 * 60), cost_model.MONTH_S / 3600
    assert quarter_hourly - hourly == pytest.approx((rounds_15 - rounds_60) * open_pages)


def test_a_daily_interval_makes_every_round_a_sweep():
    stored = 10_000 * (cost_runs.RAW_EXPIRY_DAYS + cost_runs.MARKER_EXPIRY_DAYS)
    assert _listing(10_000, DAY_S) == pytest.approx(SWEEPS * (stored / 1000 - 2))


def test_the_packer_reads_do_not_grow_with_the_curated_history_and_the_rollups_reads_do():
    requests = Counter(
        {
            ("metric_packer", "s3", "GetObject", names.CURATED_PREFIX): 100,
            ("rollups", "s3", "GetObject", names.CURATED_PREFIX): 10,
        }
    )
    figures = cost_usage.figures(cost_runs.fleet_run(requests, raw_objects=0), cost_runs.settings())
    assert set(figures.growth) == {"compaction_listing", "rollup_reads", cost_usage.LIVE_ACCURACY_GROWTH}
    assert figures.growth[cost_usage.LIVE_ACCURACY_GROWTH][1] == 0  # no live accuracy round ran
    rollup_reads_per_gateway_month = 10 * cost_model.MONTH_S / DAY_S / 2
    growth = rollup_reads_per_gateway_month * (cost_usage.DAYS_PER_MONTH / 2 - 1)
    assert figures.growth["rollup_reads"] == ("s3.get_and_other", pytest.approx(growth))
    assert figures.usage.standing["s3.get_and_other"] == pytest.approx(growth * 2)  # 2 gateways; no packer term


def _live_accuracy_run(requests: Counter, rounds: int) -> FleetRun:
    run = cost_runs.fleet_run(requests, simulated_s=rounds * 3600, raw_objects=0)
    run.lambdas.functions["live_accuracy"] = cost_meter.FunctionUsage(requests=rounds, gb_seconds=2.0, log_bytes=700)
    run.log.metrics |= {
        ("edgeloop", (("service", "live_accuracy"),), "DegradedLines"),
        ("edgeloop", (("service", "ingest"),), "Messages"),
    }
    run.stored_bytes[names.MONITORING_PREFIX] = 2**20
    return replace(
        run, spec=replace(run.spec, live_accuracy_interval_s=3600), live_accuracy_rounds=rounds, live_accuracy_windows=2
    )


@pytest.mark.parametrize("rounds", [1, 3])
def test_live_accuracy_reads_grow_to_half_a_day_of_objects_per_round(rounds):
    requests = Counter(
        {
            ("live_accuracy", "s3", "GetObject", names.PREDICTIONS_PREFIX): 4,
            ("live_accuracy", "s3", "GetObject", names.CURATED_PREFIX): 6,
            ("live_accuracy", "s3", "GetObject", names.MONITORING_PREFIX): 100,  # state: read once per round
        }
    )
    run = _live_accuracy_run(requests, rounds)
    figures = cost_usage.figures(run, cost_runs.settings())
    per_gateway_month = 10 * cost_model.MONTH_S / run.spec.simulated_s / 2
    run_hours = (rounds + 1) / 2  # a run from an empty bucket: round k reads k hours of objects
    growth = per_gateway_month * (cost_usage.LIVE_ACCURACY_DAY_HOURS / run_hours - 1)
    assert figures.growth[cost_usage.LIVE_ACCURACY_GROWTH] == ("s3.get_and_other", pytest.approx(growth))
    own_reads = 110 * cost_model.MONTH_S / run.spec.simulated_s
    assert figures.live_accuracy["s3.get_and_other"] == pytest.approx(own_reads + growth * 2)  # 2 gateways
    assert figures.live_accuracy["lambda.request"] == pytest.approx(cost_model.MONTH_S / 3600)
    assert figures.live_accuracy["cloudwatch.custom_metric_month"] == 1  # its own metrics only
    assert figures.live_accuracy["s3.storage_gb_month"] > 0  # monitoring/ kept


def _rule(expression: str, target: str = "CompactionFunction") -> dict:
    target_arn = {"Fn::GetAtt": [target, "Arn"]}
    return {
        "Type": "AWS::Events::Rule",
        "Properties": {"ScheduleExpression": expression, "Targets": [{"Arn": target_arn}]},
    }


@pytest.mark.parametrize(
    ("expression", "seconds"), [("rate(15 minutes)", 900), ("rate(1 hour)", 3600), ("rate(2 days)", 172_800)]
)
def test_the_compaction_interval_is_read_from_the_schedule_rule(expression, seconds):
    resources = {"Rule": _rule(expression), "Other": _rule("rate(1 minute)", "WaveFunction")}
    keys = {"CompactionFunction": "compaction", "WaveFunction": "wave_controller"}
    assert scheduled_every_s(resources, keys, "compaction", Path("t.json")) == seconds


def test_a_schedule_that_is_not_one_rate_fails_naming_the_template():
    keys = {"CompactionFunction": "compaction"}
    with pytest.raises(ValueError, match=r"t\.json: compaction's ScheduleExpression 'cron\(0 \* \* \* \? \*\)'"):
        scheduled_every_s({"Rule": _rule("cron(0 * * * ? *)")}, keys, "compaction", Path("t.json"))
    with pytest.raises(ValueError, match=r"t\.json: expected one scheduled AWS::Events::Rule targeting compaction"):
        scheduled_every_s({}, keys, "compaction", Path("t.json"))


@pytest.mark.parametrize(
    ("simulated_s", "interval_s", "whole"),
    [(1800, 900, 1800), (2000, 900, 2700), (1800, 3600, 3600), (900, 3600, 3600)],
)
def test_each_bench_run_lasts_whole_compaction_intervals(simulated_s, interval_s, whole):
    assert bench_cost.whole_rounds(simulated_s, interval_s) == whole


def test_the_bench_synthesizes_with_the_interval_from_its_environment(monkeypatch):
    monkeypatch.delenv(bench_cost.COMPACTION_INTERVAL_ENV, raising=False)
    assert bench_cost.stack_context() == {}
    monkeypatch.setenv(bench_cost.COMPACTION_INTERVAL_ENV, "15")
    assert bench_cost.stack_context() == {"edgeloop:compactionIntervalMinutes": "15"}
