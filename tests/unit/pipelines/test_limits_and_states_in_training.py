"""Dataset -> train -> evaluate on a line with idle spells and limits that move: idle packs stay out of
the training and reference data and of the violation metrics, and their count reaches evaluation.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.context import put_context_intervals
from edgeloop.cloud.datalake.curated import curated_parquet_bytes, partition_prefix
from edgeloop.sagemaker_pipelines.steps import evaluate as evaluate_step
from edgeloop.sagemaker_pipelines.steps.dataset import build_dataset, write_dataset
from edgeloop.sagemaker_pipelines.steps.train import save_trained, train_line_model
from edgeloop.schemas import ContextInterval, ContextKind, SpecLimits, ViolationClass, load_use_case

MODEL_BUCKET = "edgeloop-models-states-test"
DATA_BUCKET = "edgeloop-data-states-test"
LINE = "line-1"
T0 = datetime(2026, 3, 1, 6, tzinfo=UTC)
HOURS = 4
IDLE = [(3600, 4200), (13200, 13500)]  # seconds from T0; the second lies in the reference period
TIGHT = (7200, 9000, 9.9, 10.1)  # a limits interval: [start, end) seconds, lower, upper
RUN_SPEC = (9.8, 10.2)
RUN_STARTS = (6000, 10800)  # seconds from T0: runs r2 and r3 start


def _interval(kind: ContextKind, interval_id: str, start_s: int, end_s: int, **fields) -> ContextInterval:
    return ContextInterval(
        kind=kind,
        interval_id=interval_id,
        line_id=LINE,
        start=T0 + timedelta(seconds=start_s),
        end=T0 + timedelta(seconds=end_s),
        **fields,
    )


def put_line(config) -> None:
    """1 Hz metrics for HOURS: the target drifts inside the run's limits while running and drops to 0 when idle."""
    rng = np.random.default_rng(5)
    seconds = np.arange(HOURS * 3600)
    idle = np.zeros(len(seconds), dtype=bool)
    for start, end in IDLE:
        idle[start:end] = True
    drift = 0.08 * np.sin(2 * np.pi * seconds / 1800)
    columns = {metric: 1.0 + drift + rng.normal(scale=0.01, size=len(seconds)) for metric in config.metrics}
    columns["temp_die"] = 200 + 20 * drift + rng.normal(scale=0.1, size=len(seconds))
    columns[config.target_metric] = np.where(idle, 0.0, 10 + drift + rng.normal(scale=0.005, size=len(seconds)))
    frames = [
        pd.DataFrame({"metric": metric, "time_ms": int(T0.timestamp() * 1000) + seconds * 1000, "value": values})
        for metric, values in columns.items()
    ]
    rows = pd.concat(frames, ignore_index=True).assign(thing_name="gw-1", line_id=LINE)
    rows["seq"] = np.arange(len(rows), dtype=np.int64)
    rows["ingest_time_ms"] = rows["time_ms"] + 2_000
    body = curated_parquet_bytes(pa.Table.from_pandas(rows, preserve_index=False))
    s3.put_bytes(DATA_BUCKET, f"{partition_prefix(LINE, T0.date().isoformat())}part-0.parquet", body)

    target = config.target_metric
    end_s = HOURS * 3600
    run_spec = SpecLimits(target_metric=target, lower=RUN_SPEC[0], upper=RUN_SPEC[1])
    # three runs: the reference is the newest whole run (r3, which holds the second idle spell); cross-validation
    # needs at least two runs to train on
    bounds = (("r1", 0, RUN_STARTS[0]), ("r2", *RUN_STARTS), ("r3", RUN_STARTS[1], end_s))
    intervals = [_interval(ContextKind.RUN, r, a, b, value="cable-a", spec=run_spec) for r, a, b in bounds]
    start = 0
    for idle_start, idle_end in IDLE:
        intervals.append(_interval(ContextKind.STATE, f"running-{start}", start, idle_start, value="running"))
        intervals.append(_interval(ContextKind.STATE, f"idle-{idle_start}", idle_start, idle_end, value="idle"))
        start = idle_end
    intervals.append(_interval(ContextKind.STATE, f"running-{start}", start, end_s, value="running"))
    lower, upper = TIGHT[2:]
    tight = SpecLimits(target_metric=target, lower=lower, upper=upper)
    intervals.append(_interval(ContextKind.LIMITS, "tight", TIGHT[0], TIGHT[1], spec=tight))
    put_context_intervals(DATA_BUCKET, LINE, intervals)


def _seconds(stamps: pd.Series) -> np.ndarray:
    return ((stamps - pd.Timestamp(T0)) // pd.Timedelta(seconds=1)).to_numpy()


def test_idle_packs_stay_out_of_training_and_evaluation_and_are_counted(registry, tmp_path):
    config = load_use_case("extrusion")  # productive_states: [running]
    config = config.model_copy(
        update={"training": config.training.model_copy(update={"candidates_per_template": 1, "cv_folds": 2})}
    )
    boto3.client("s3").create_bucket(Bucket=DATA_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    put_line(config)

    dataset = build_dataset(data_bucket=DATA_BUCKET, line_id=LINE, use_case=config, start=None, end=None)

    used = pd.concat([dataset.train, dataset.reference], ignore_index=True)
    # no used pack touches an idle spell between its start and its label's end
    span_s = config.pack_window_s + config.horizon_s + config.label_window_s
    start_s = _seconds(used["window_start"])
    for idle_start, idle_end in IDLE:
        assert not ((start_s < idle_end) & (start_s + span_s > idle_start)).any()
    # packs start every 30 s: a 600 s spell leaves out (600 + 630) / 30 - 1 = 40, a 300 s one 30
    assert dataset.info.packs_excluded_non_productive == 40 + 30
    assert (used["label_class"] == ViolationClass.IN_RANGE.value).all()
    # the limits interval classes the labels whose time (window_end + horizon) falls inside it
    label_s = _seconds(used["window_end"]) + config.horizon_s
    tight = (label_s >= TIGHT[0]) & (label_s < TIGHT[1])
    assert tight.sum() == (TIGHT[1] - TIGHT[0]) // config.example_stride_s
    assert (used.loc[tight, "spec_lower"] == TIGHT[2]).all() and (used.loc[~tight, "spec_lower"] == RUN_SPEC[0]).all()
    assert _seconds(dataset.reference["window_start"]).max() > IDLE[1][1]  # the reference spans the second spell
    assert dataset.info.reference_runs == ["r3"] and set(dataset.train["run_id"]) == {"r1", "r2"}

    trained = train_line_model(dataset.train, config)
    save_trained(trained, tmp_path / "model" / LINE)
    write_dataset(dataset, tmp_path / "data")
    evaluate_step.main(
        ["--model", str(tmp_path / "model"), "--reference", str(tmp_path / "data" / "reference"),
         "--dataset", str(tmp_path / "data" / "dataset"), "--use-case", "extrusion",
         "--model-bucket", MODEL_BUCKET, "--output", str(tmp_path / "out")]
    )  # fmt: skip

    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert report["packs_excluded_non_productive"] == 70
    assert report["reference"]["rows"] == dataset.info.rows_reference
    # the idle labels (target 0) would be LSL violations; left out, the reference has none to recall
    assert report["candidate"]["violation_recall"] is None
    assert "no violations in the reference data" in report["reason"]
