"""Metric packer -> labeler -> feature extractor on small synthetic lines with known answers."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from tiny_use_case import TARGET, TINY_USE_CASE

from edgeloop.cloud.datalake.context import (
    context_key,
    get_context_intervals,
    put_context_intervals,
    upsert_context_intervals,
)
from edgeloop.cloud.datalake.packs import get_examples
from edgeloop.cloud.line_directory import StaticLineDirectory
from edgeloop.cloud.packing.examples import META_COLUMNS, assemble_examples, build_examples, build_line_examples
from edgeloop.cloud.packing.labels import classify, label_packs
from edgeloop.functions.compaction.logic import compact
from edgeloop.functions.ingest.data_access import S3IngestStore
from edgeloop.functions.ingest.logic import ingest_event
from edgeloop.functions.metric_packer.logic import lines_from_event
from edgeloop.schemas import (
    ColumnarSamples,
    ContextInterval,
    ContextKind,
    IotRuleEvent,
    SpecLimits,
    TelemetryBatch,
    ViolationClass,
    encode_batch,
    load_use_case,
    names,
)

BUCKET = "edgeloop-packing-test"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
USE_CASE = TINY_USE_CASE


def run(run_id: str, start_s: int, end_s: int, *, lower=1.0, upper=3.0, line="line-1", spec=True) -> ContextInterval:
    return ContextInterval(
        kind=ContextKind.RUN,
        interval_id=run_id,
        line_id=line,
        start=T0 + timedelta(seconds=start_s),
        end=T0 + timedelta(seconds=end_s),
        value="cable-a",
        spec=SpecLimits(target_metric=TARGET, lower=lower, upper=upper) if spec else None,
    )


def curated(
    start_s: int, end_s: int, *, speed=lambda k: float(k), temp=lambda k: 200.0, target=lambda k: 2.0, line="line-1"
):
    """One sample per second per metric for k in [start_s, end_s), as curated rows."""
    rows = []
    for k in range(start_s, end_s):
        for metric, fn in (("speed", speed), ("temp_die", temp), (TARGET, target)):
            value = fn(k)
            if value is not None:
                rows.append(
                    {
                        "thing_name": "gw-1",
                        "line_id": line,
                        "metric": metric,
                        "time_ms": T0_MS + k * 1000,
                        "value": value,
                    }
                )
    frame = pd.DataFrame(rows)
    frame["seq"] = np.arange(len(frame))
    frame["ingest_time_ms"] = T0_MS
    return frame


def test_constant_target_inside_a_run_gives_that_label_and_known_features():
    build = assemble_examples(curated(0, 60), [run("r1", 0, 60)], USE_CASE)
    examples = build.examples

    # packs start every 5 s while fully inside (0..50); the label window [end+5, end+9) must end
    # by 60 s, which keeps starts 0..40
    starts = [(ts - T0).total_seconds() for ts in examples["window_start"]]
    assert starts == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    assert build.stats.packs_cut == 11 and build.stats.dropped_label_outside_run == 2
    assert (examples["window_end"] - examples["window_start"] == pd.Timedelta(seconds=10)).all()
    assert (examples["label"] == 2.0).all()
    assert (examples["label_class"] == ViolationClass.IN_RANGE.value).all()
    s = np.array(starts)
    np.testing.assert_allclose(examples["speed__mean"], s + 4.5)
    np.testing.assert_allclose(examples["speed__min"], s)
    np.testing.assert_allclose(examples["speed__max"], s + 9)
    np.testing.assert_allclose(examples["speed__last"], s + 9)
    np.testing.assert_allclose(examples["speed__slope"], 1.0)
    np.testing.assert_allclose(examples["temp_die__std"], 0.0)
    assert (examples["run_id"] == "r1").all() and (examples["line_id"] == "line-1").all()


def test_label_is_mean_of_raw_target_samples_in_the_label_window():
    examples = build_examples(
        curated(0, 40, target=lambda k: float(k)), [run("r1", 0, 40, lower=0, upper=100)], USE_CASE
    )
    # pack [0, 10) -> label window [15, 19): mean of 15, 16, 17, 18
    first = examples.iloc[0]
    assert first["label"] == pytest.approx(16.5)
    np.testing.assert_allclose(examples["label"], [(s + 15) + 1.5 for s in (0, 5, 10, 15, 20)])


def test_output_columns_and_dtypes_are_the_training_contract():
    examples = build_examples(curated(0, 30), [run("r1", 0, 30)], USE_CASE)
    assert list(examples.columns) == [*META_COLUMNS, *USE_CASE.feature_names]
    assert str(examples["window_start"].dtype) == "datetime64[ns, UTC]"
    assert str(examples["window_end"].dtype) == "datetime64[ns, UTC]"
    assert (examples["label_source"] == "measured").all()
    assert examples[USE_CASE.feature_names].dtypes.map(lambda d: d == np.float64).all()
    assert examples["label"].dtype == np.float64 and examples["spec_lower"].dtype == np.float64
    assert {type(v) for v in examples["label_class"]} == {str}


def test_no_runs_give_an_empty_table_with_the_same_columns():
    examples = build_examples(curated(0, 30), [], USE_CASE)
    assert examples.empty and list(examples.columns) == [*META_COLUMNS, *USE_CASE.feature_names]
    assert str(examples["window_start"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (0.99, ViolationClass.LSL),
        (1.0, ViolationClass.IN_RANGE),  # on the lower limit: in tolerance
        (3.0, ViolationClass.IN_RANGE),  # on the upper limit: in tolerance
        (3.01, ViolationClass.USL),
    ],
)
def test_spec_class_boundaries(target, expected):
    examples = build_examples(
        curated(0, 30, target=lambda k: target), [run("r1", 0, 30, lower=1.0, upper=3.0)], USE_CASE
    )
    assert len(examples) > 0
    assert set(examples["label_class"]) == {expected.value}
    assert (examples["spec_lower"] == 1.0).all() and (examples["spec_upper"] == 3.0).all()


def test_classify_is_vectorised_over_labels():
    spec = SpecLimits(target_metric=TARGET, lower=1.0, upper=3.0)
    assert list(classify(np.array([0.5, 1.0, 2.0, 3.0, 3.5]), spec)) == [
        "lsl_violation",
        "in_range",
        "in_range",
        "in_range",
        "usl_violation",
    ]


def test_packs_never_cross_a_run_boundary_and_runs_do_not_leak_into_each_other():
    data = curated(0, 80, speed=lambda k: 1.0 if k < 32 else 1000.0, target=lambda k: 2.0 if k < 32 else 5.0)
    runs = [run("r1", 0, 32), run("r2", 32, 80, lower=4.0, upper=6.0)]
    build = assemble_examples(data, runs, USE_CASE)
    examples = build.examples

    by_run = {run_id: frame for run_id, frame in examples.groupby("run_id")}
    r1, r2 = by_run["r1"], by_run["r2"]
    # r1 (32 s): packs at 0..20 fit; labels must end by 32 s -> starts 0, 5, 10
    assert [(t - T0).total_seconds() for t in r1["window_start"]] == [0, 5, 10]
    assert (r1["window_end"] <= T0 + timedelta(seconds=32)).all()
    assert (r1["speed__max"] == 1.0).all() and (r1["label"] == 2.0).all()
    # r2 starts at 32 s on its own grid; labels come from r2's target only
    assert (r2["window_start"] >= T0 + timedelta(seconds=32)).all()
    assert (r2["window_end"] + pd.Timedelta(seconds=9) <= T0 + timedelta(seconds=80)).all()
    assert (r2["speed__min"] == 1000.0).all() and (r2["label"] == 5.0).all()
    assert set(r2["label_class"]) == {"in_range"} and set(r1["label_class"]) == {"in_range"}


def test_a_run_too_short_for_a_pack_yields_nothing():
    build = assemble_examples(curated(0, 20), [run("short", 0, 9)], USE_CASE)
    assert build.examples.empty and build.stats.packs_cut == 0


def test_sparse_label_window_drops_the_pack_and_counts_it():
    # pack [0,10) labels from [15,19); keep only 2 of its 4 target samples (exactly half: kept),
    # pack [5,15) labels from [20,24); keep only 1 (dropped)
    keep_target = {15, 17, 20} | set(range(25, 40))
    data = curated(0, 40, target=lambda k: 2.0 if k in keep_target or k < 15 else None)
    build = assemble_examples(data, [run("r1", 0, 40)], USE_CASE)

    starts = [(t - T0).total_seconds() for t in build.examples["window_start"]]
    assert 0 in starts and 5 not in starts
    assert build.stats.dropped_label_too_sparse == 1


def test_label_packs_counts_drop_reasons():
    times = np.array([15_000, 16_000, 17_000, 18_000])
    labels = label_packs(
        np.array([10_000, 20_000, 30_000]), times, np.array([1.0, 2.0, 3.0, 4.0]), run_end_ms=35_000, use_case=USE_CASE
    )
    assert labels.keep.tolist() == [True, False, False]
    assert labels.value[0] == pytest.approx(2.5) and np.isnan(labels.value[1:]).all()
    assert (labels.outside_run, labels.too_sparse) == (1, 1)


def test_stale_metric_becomes_nan_after_five_periods():
    # temp_die is only sampled at 0 s: the grid forward-fills it for 5 periods, then NaN
    data = curated(0, 40, temp=lambda k: 200.0 if k == 0 else None)
    examples = build_examples(data, [run("r1", 0, 40)], USE_CASE)
    first, second, third = examples.iloc[0], examples.iloc[1], examples.iloc[2]
    assert first["temp_die__mean"] == 200.0 and first["temp_die__last"] == 200.0
    assert second["temp_die__last"] == 200.0  # pack [5,15): step 5 is exactly 5 periods old, still fresh
    assert np.isnan(third["temp_die__mean"])  # pack [10,20): nothing fresh
    assert not np.isnan(third["speed__mean"])


def test_predictions_other_lines_and_specless_runs_are_ignored():
    data = pd.concat(
        [
            curated(0, 30),
            curated(0, 30, speed=lambda k: 999.0, line="line-2"),
            curated(0, 30).assign(metric=f"{TARGET}__predicted", value=-5.0),
        ],
        ignore_index=True,
    )
    state = ContextInterval(
        kind=ContextKind.STATE, interval_id="s", line_id="line-1", start=T0, end=T0 + timedelta(seconds=30)
    )
    build = assemble_examples(data, [run("r1", 0, 30), run("nospec", 0, 30, spec=False), state], USE_CASE)

    assert set(build.examples["run_id"]) == {"r1"} and build.stats.runs_without_spec == 1
    assert (build.examples["speed__max"] < 999).all() and (build.examples["label"] == 2.0).all()


def test_spec_for_another_target_is_refused():
    bad = ContextInterval(
        kind=ContextKind.RUN,
        interval_id="r-x",
        line_id="line-1",
        start=T0,
        end=T0 + timedelta(seconds=30),
        spec=SpecLimits(target_metric="speed", lower=0, upper=1),
    )
    with pytest.raises(ValueError, match="r-x.*target_metric='speed'"):
        build_examples(curated(0, 30), [bad], USE_CASE)


def test_window_not_a_whole_number_of_periods_is_refused():
    odd = USE_CASE.model_copy(update={"sample_period_s": 3})
    with pytest.raises(ValueError, match="pack_window_s=10s"):
        build_examples(curated(0, 30), [run("r1", 0, 30)], odd)


def test_lines_from_event_shapes():
    key = "curated/line=line-7/event_date=2026-01-01/part-abc.parquet"
    assert lines_from_event({"Records": [{"s3": {"object": {"key": key}}}]}) == ["line-7"]
    assert lines_from_event({"detail": {"object": {"key": key}}}) == ["line-7"]
    assert lines_from_event({"partitions": ["curated/line=line-8/event_date=2026-01-01/"], "line_ids": ["a"]}) == [
        "a",
        "line-8",
    ]
    assert lines_from_event({"detail": {"object": {"key": "raw/ingest_date=x/y"}}}) == []
    with pytest.raises(ValueError, match="Bad Line"):
        lines_from_event({"line_id": "Bad Line"})


# --- with S3 -------------------------------------------------------------------------------------


def test_context_intervals_round_trip_as_jsonl(s3):
    intervals = [run("r2", 30, 60), run("r1", 0, 30)]
    key = put_context_intervals(BUCKET, "line-1", intervals)

    assert key == "context/line=line-1/intervals.jsonl"
    lines = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines()
    assert [json.loads(line)["interval_id"] for line in lines] == ["r1", "r2"]
    assert get_context_intervals(BUCKET, "line-1") == [run("r1", 0, 30), run("r2", 30, 60)]
    assert get_context_intervals(BUCKET, "line-9") == []

    upsert_context_intervals(BUCKET, "line-1", [run("r2", 30, 70), run("r3", 70, 90)])
    assert [(i.interval_id, i.end) for i in get_context_intervals(BUCKET, "line-1")] == [
        ("r1", T0 + timedelta(seconds=30)),
        ("r2", T0 + timedelta(seconds=70)),
        ("r3", T0 + timedelta(seconds=90)),
    ]


def test_context_for_another_line_is_refused(s3):
    with pytest.raises(ValueError, match="line_id='line-2'.*'line-1'"):
        put_context_intervals(BUCKET, "line-1", [run("r1", 0, 30, line="line-2")])


def test_malformed_context_line_names_the_line_number(s3):
    body = run("r1", 0, 30).model_dump_json() + "\n" + '{"kind": "run"}\n'
    s3.put_object(Bucket=BUCKET, Key=context_key("line-1"), Body=body.encode())
    with pytest.raises(ValueError, match="line 2 is not a ContextInterval"):
        get_context_intervals(BUCKET, "line-1")


def _land_line(seconds: int, *, target: float = 2.0) -> None:
    """Ingest one second-rate batch per 100 s through the real ingest path, then compact."""
    use_case = load_use_case("extrusion")
    seq = 0
    for start in range(0, seconds, 100):
        ks = range(start, min(start + 100, seconds))
        metric_index = [m for _ in ks for m in (0, 1, 2)]
        times = [T0_MS + k * 1000 for k in ks for _ in (0, 1, 2)]
        values = [v for k in ks for v in (float(k), 200.0, target)]
        batch = TelemetryBatch(
            thing_name="gw-1",
            line_id="line-1",
            seq_first=seq,
            seq_last=seq + len(times) - 1,
            samples=ColumnarSamples(
                metrics=["speed", "temp_die", TARGET], metric_index=metric_index, time_ms=times, values=values
            ),
        )
        seq += len(times)
        event = IotRuleEvent.from_message(names.telemetry_topic("gw-1"), encode_batch(batch), times[-1] + 500)
        lines = StaticLineDirectory({"gw-1": "line-1"})
        result = ingest_event(event, use_case=use_case, store=S3IngestStore(BUCKET), lines=lines)
        assert result.landed_samples == len(times)
    compact(BUCKET)


def test_build_line_examples_reads_curated_and_context_and_writes_packs(s3):
    _land_line(60)
    put_context_intervals(BUCKET, "line-1", [run("r1", 0, 60)])

    examples = build_line_examples(BUCKET, "line-1", USE_CASE)

    assert len(examples) == 9 and (examples["label"] == 2.0).all()
    body = s3.get_object(Bucket=BUCKET, Key="packs/line=line-1/examples.parquet")["Body"].read()
    stored = pq.read_table(io.BytesIO(body)).to_pandas()
    pd.testing.assert_frame_equal(stored, examples, check_dtype=False)
    assert str(get_examples(BUCKET, "line-1")["window_start"].dtype) == "datetime64[ns, UTC]"


def test_metric_packer_handler_rebuilds_lines_of_new_curated_partitions(s3, monkeypatch):
    from edgeloop.functions.metric_packer import handler

    monkeypatch.setenv(names.USE_CASE_ENV, "extrusion")  # no default use case: the function's environment names it
    handler._settings.cache_clear()
    _land_line(1200)  # the extrusion use case: 300 s packs, 300 s horizon, 30 s labels, 30 s stride
    put_context_intervals(BUCKET, "line-1", [run("r1", 0, 1200, lower=1.0, upper=3.0)])
    event = {
        "detail-type": "Object Created",
        "detail": {"object": {"key": "curated/line=line-1/event_date=2026-01-01/part-x.parquet"}},
    }

    result = handler.lambda_handler(event, None)

    # packs start every 30 s while start + 300 + 300 + 30 <= 1200 -> starts 0..570
    assert result["examples_per_line"] == {"line-1": 20}
    examples = get_examples(BUCKET, "line-1")
    assert len(examples) == 20 and (examples["label"] == 2.0).all()
    assert np.isnan(examples["pressure__mean"]).all()  # never sent -> NaN features, not dropped
