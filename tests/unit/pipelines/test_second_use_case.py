"""Use-case neutrality: injection molding runs through the same packer, labeler, features, training,
export and review queue as extrusion, and no module of the data path names an extrusion metric."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from moto import mock_aws

from edgeloop.cloud.datalake.context import put_context_intervals
from edgeloop.cloud.datalake.curated import CURATED_SCHEMA, curated_parquet_bytes, partition_prefix
from edgeloop.cloud.packing.examples import assemble_examples
from edgeloop.cloud.packing.label_review import labeled_from_review, proposals
from edgeloop.sagemaker_pipelines.steps.export import export_model
from edgeloop.sagemaker_pipelines.steps.train import train_line_model
from edgeloop.schemas import ContextInterval, ContextKind, SpecLimits, load_use_case, names
from edgeloop.schemas.model import ModelTemplate, Precision, feature_schema_hash
from edgeloop.schemas.training import ProposalStatus
from edgeloop.schemas.use_case import TrainingConfig

REPO = Path(__file__).resolve().parents[3]
USE_CASE = load_use_case("injection_molding")
LINE = "press-1"
T0 = datetime(2026, 4, 1, 6, tzinfo=UTC)
RUN_S = 5400  # two 90-minute runs of different parts
SPECS = {"run-a": (49.8, 50.2), "run-b": (49.85, 50.25)}
BUCKET = "edgeloop-second-use-case"


def molding_samples(seconds: int, *, seed: int = 0, weight_gap: range | None = None) -> pd.DataFrame:
    """Curated rows of one press on the use case's grid: process drift shows in the melt temperature,
    pressures and cushion now, and in the part weight 7 minutes later (cooling and handling)."""
    rng = np.random.default_rng(seed)
    period = USE_CASE.sample_period_s
    t = np.arange(0, seconds, period)

    def drift(at: np.ndarray) -> np.ndarray:
        return 0.6 * np.sin(2 * np.pi * at / 2400 + 1.0) + 0.4 * np.sin(2 * np.pi * at / 900 + 2.0)

    d, noise = drift(t), lambda scale: rng.normal(scale=scale, size=len(t))
    columns = {
        "melt_temp_f": 430 + 18 * d + noise(0.5),
        "mold_temp": 40 + 2 * d + noise(0.1),
        "injection_pressure": 900 + 40 * d + noise(2.0),
        "hold_pressure": 600 + 25 * d + noise(2.0),
        "screw_speed": 120 + noise(1.0),
        "cushion": 5 - 0.5 * d + noise(0.02),
        "cycle_time": 30 + noise(0.2),
        "part_weight": 50 + 0.4 * drift(t - 420) + noise(0.01),
    }
    assert list(columns) == USE_CASE.metrics
    frames = []
    for metric, values in columns.items():
        keep = np.ones(len(t), dtype=bool)
        if weight_gap is not None and metric == USE_CASE.target_metric:
            keep = (t < weight_gap.start) | (t >= weight_gap.stop)
        frames.append(pd.DataFrame({"metric": metric, "offset_s": t[keep], "value": values[keep]}))
    rows = pd.concat(frames, ignore_index=True)
    return pd.DataFrame(
        {
            "thing_name": "press-1-gw",
            "line_id": LINE,
            "metric": rows["metric"],
            "time_ms": (int(T0.timestamp() * 1000) + rows["offset_s"] * 1000).astype(np.int64),
            "value": rows["value"].astype(np.float64),
            "seq": np.arange(len(rows), dtype=np.int64),
            "ingest_time_ms": np.int64(0),
        }
    )


def runs() -> list[ContextInterval]:
    return [
        ContextInterval(
            kind=ContextKind.RUN,
            interval_id=run_id,
            line_id=LINE,
            start=T0 + timedelta(seconds=i * RUN_S),
            end=T0 + timedelta(seconds=(i + 1) * RUN_S),
            value=run_id,
            spec=SpecLimits(target_metric=USE_CASE.target_metric, lower=lower, upper=upper),
        )
        for i, (run_id, (lower, upper)) in enumerate(SPECS.items())
    ]


def test_injection_molding_packs_train_and_export_like_extrusion():
    build = assemble_examples(molding_samples(2 * RUN_S), runs(), USE_CASE)
    examples = build.examples

    # 600 s packs every 60 s; the label window [end + 300, end + 360) must end inside the run
    per_run = (RUN_S - USE_CASE.pack_window_s - USE_CASE.horizon_s - USE_CASE.label_window_s) // 60 + 1
    assert len(examples) == 2 * per_run and build.unlabeled.empty
    assert set(examples["run_id"]) == set(SPECS) and examples[USE_CASE.feature_names].notna().all().all()
    assert set(examples["label_class"]) == {"lsl_violation", "in_range", "usl_violation"}

    config = USE_CASE.model_copy(
        update={
            "training": TrainingConfig(
                templates=[ModelTemplate.LASSO, ModelTemplate.XGBOOST], candidates_per_template=2, cv_folds=2
            )
        }
    )
    trained = train_line_model(examples, config)
    assert trained.feature_names == USE_CASE.feature_names
    assert trained.metrics.mse < 0.5 * np.var(trained.y_test)  # learned the lagged drift, not the mean

    exported = export_model(
        trained,
        model_id=f"{USE_CASE.use_case}-{LINE}",
        version="1.0.0",
        use_case=USE_CASE.use_case,
        line_ids=[LINE],
        target=USE_CASE.target_metric,
        precisions=(Precision.FP32,),
    )
    manifest = exported.manifest
    assert (manifest.use_case, manifest.target, manifest.line_ids) == ("injection_molding", "part_weight", [LINE])
    assert manifest.feature_schema_hash == feature_schema_hash(USE_CASE.feature_names)
    assert [tier.precision for tier in manifest.tiers] == [Precision.FP32]
    assert manifest.tiers[0].max_abs_error == 0.0  # fp32 is bit-exact or refused


@pytest.fixture
def press_bucket(monkeypatch):
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        monkeypatch.setenv(names.DATA_BUCKET_ENV, BUCKET)
        monkeypatch.setenv(names.USE_CASE_ENV, USE_CASE.use_case)
        yield s3


def test_metric_packer_lambda_queues_label_proposals_for_a_press(press_bucket):
    from edgeloop.functions.metric_packer import handler

    # the scale is off for 30 minutes in the second run: those packs have no measured weight
    samples = molding_samples(2 * RUN_S, seed=1, weight_gap=range(RUN_S + 1800, RUN_S + 3600))
    table = pa.Table.from_pandas(samples, schema=CURATED_SCHEMA, preserve_index=False)
    key = partition_prefix(LINE, T0.strftime("%Y-%m-%d")) + "part-0.parquet"
    press_bucket.put_object(Bucket=BUCKET, Key=key, Body=curated_parquet_bytes(table))
    put_context_intervals(BUCKET, LINE, runs())

    result = handler.lambda_handler({"partitions": [key]}, None)

    review = result["review"]
    unlabeled = result["stats"]["unlabeled"]
    assert unlabeled > 20 and review["auto_labeled"] + review["pending"] == unlabeled
    assert review["auto_labeled"] > 0 and review["pending"] > 0  # far from the limits is sure, near is not
    assert review["newly_queued"] == review["pending"] == len(proposals(BUCKET, LINE, status=ProposalStatus.PENDING))
    labeled = labeled_from_review(BUCKET, LINE, USE_CASE)
    assert len(labeled) == review["auto_labeled"] and set(labeled["label_source"]) <= {"auto"}
    assert list(labeled.columns)[-len(USE_CASE.feature_names) :] == USE_CASE.feature_names

    again = handler.lambda_handler({"line_id": LINE}, None)["review"]
    assert again == {**review, "newly_queued": 0}


# --- nothing under the data path or the pipeline steps knows extrusion's metrics -----------------

SCANNED = ("functions", "sagemaker_pipelines/steps")


def extrusion_metric_pattern() -> re.Pattern:
    extrusion = load_use_case("extrusion").metrics
    # distinctive keys anywhere (cold_od_average, screw_rpm, ...); plain words ("speed") only as a
    # quoted metric name, since prose may say "speed"
    distinctive = sorted({m for m in extrusion if "_" in m} | {"cold_od", "hot_od"}, key=len, reverse=True)
    plain = [m for m in extrusion if "_" not in m]
    return re.compile(rf"\b({'|'.join(map(re.escape, distinctive))})\b|[\"']({'|'.join(map(re.escape, plain))})[\"']")


def test_the_pattern_finds_extrusion_metrics_and_spares_other_words():
    pattern = extrusion_metric_pattern()
    assert pattern.search('target = "cold_od_average"') and pattern.search("x = frame['screw_rpm']")
    assert pattern.search('metrics = ["speed"]') and pattern.search("cold_od_x + 1")
    assert not pattern.search("playback speed of a replay") and not pattern.search('"part_weight"')


def test_no_data_path_or_pipeline_step_module_names_an_extrusion_metric():
    pattern = extrusion_metric_pattern()
    offenders = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix in {".pyc", ".parquet", ".npz"}:
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
                match = pattern.search(line)
                if match:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)}")
    assert len(list((REPO / "functions").rglob("*.py"))) > 20  # the scan did look at the code
    assert not offenders, "extrusion metrics named outside the extrusion use case:\n" + "\n".join(offenders)
