"""run_local against moto_server: simulated extrusion data -> dataset -> train -> evaluate -> register.

The first run registers (and approves) a model whose registry metadata and manifest round-trip; a second
run whose training labels were shuffled fails validation (the gate against persistence) and registers nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from simulated_line_data import put_simulated_line

from edgeloop.cloud.aws import client, reset_clients
from edgeloop.cloud.model_registry import load_manifest
from edgeloop.local.aws import local_aws_environment
from edgeloop.local.moto_server import MotoServer
from edgeloop.sagemaker_pipelines import local_run
from edgeloop.sagemaker_pipelines.local_run import LinePaths, run_local
from edgeloop.sagemaker_pipelines.steps import dataset as dataset_step
from edgeloop.sagemaker_pipelines.steps.dataset import read_dataset_info, read_examples
from edgeloop.sagemaker_pipelines.steps.evaluate import read_evaluation
from edgeloop.sagemaker_pipelines.steps.lineage import lineage_of, parse_lineage
from edgeloop.sagemaker_pipelines.steps.train import load_trained
from edgeloop.schemas import names

DATA_BUCKET = "edgeloop-data-runlocal"
MODEL_BUCKET = "edgeloop-models-runlocal"
LINE = "line-1"
EMPTY_LINE = "line-2"  # no data at all: its run reports that, while line-1 runs beside it
SIM_START = datetime(2026, 3, 1, tzinfo=UTC)
SIM_DAYS = 2
CANDIDATES = 2


@pytest.fixture(scope="module")
def moto_endpoint():
    with MotoServer() as server:
        yield server.endpoint_url


@pytest.fixture(scope="module")
def seeded(moto_endpoint):
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in local_aws_environment(moto_endpoint).items():
            patch.setenv(variable, value)
        reset_clients()
        for bucket in (DATA_BUCKET, MODEL_BUCKET):
            client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        put_simulated_line(DATA_BUCKET, LINE, start=SIM_START, hours=24 * SIM_DAYS, seed=11)
        yield
    reset_clients()


@pytest.fixture
def aws(seeded, moto_endpoint, monkeypatch):
    for variable, value in local_aws_environment(moto_endpoint).items():
        monkeypatch.setenv(variable, value)
    reset_clients()


def run(work_dir, **options):
    return run_local(
        use_case="extrusion",
        line_ids=[LINE, EMPTY_LINE],
        start=date(2026, 3, 1),
        end=date(2026, 3, 2),
        data_bucket=DATA_BUCKET,
        model_bucket=MODEL_BUCKET,
        work_dir=work_dir,
        candidates_per_template=CANDIDATES,
        **options,
    )


def group_packages() -> list[dict]:
    group = names.model_package_group_name("extrusion", LINE)
    return client("sagemaker").list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]


def test_a_good_model_registers_with_round_tripping_lineage_then_a_degraded_one_fails(aws, tmp_path, monkeypatch):
    good, empty = run(tmp_path / "good", approve=True)
    assert empty.line_id == EMPTY_LINE and not empty.passed and empty.model_package_arn is None
    assert empty.reason.startswith("dataset: line_id='line-2': no labeled examples")
    assert good.passed, good.reason
    assert good.reason.startswith("no champion")
    package = client("sagemaker").describe_model_package(ModelPackageName=good.model_package_arn)
    assert package["ModelApprovalStatus"] == "Approved"

    paths = LinePaths(tmp_path / "good" / LINE)
    dataset = read_dataset_info(paths.dataset)
    evaluation = read_evaluation(paths.evaluation)
    lineage = parse_lineage(package["CustomerMetadataProperties"])
    manifest = load_manifest(lineage.manifest_uri)
    assert lineage == lineage_of(manifest, lineage.manifest_uri, dataset=dataset, evaluation=evaluation)
    trained = load_trained(paths.model / LINE)
    assert manifest.training_data_sha256 == trained.training_data_sha256
    assert manifest.metrics == trained.metrics == lineage.metrics
    assert manifest.code_version and lineage.code_version == manifest.code_version
    assert lineage.data_start >= SIM_START and lineage.data_end <= datetime(2026, 3, 3, tzinfo=UTC)
    assert lineage.data_sha256 == dataset.content_sha256
    assert lineage.reference.rows == dataset.rows_reference == len(read_examples(paths.reference))
    assert good.metrics["mse"] == evaluation.candidate.mse

    build_dataset_outputs = dataset_step.main

    def shuffled_labels(argv):
        info = build_dataset_outputs(argv)
        train_file = LinePaths(tmp_path / "degraded" / info.line_id).train_examples
        if train_file.exists():
            train = pd.read_parquet(train_file)
            train["label"] = np.random.default_rng(5).permutation(train["label"].to_numpy())
            train.to_parquet(train_file, index=False)
        return info

    monkeypatch.setattr(local_run.dataset_step, "main", shuffled_labels)
    degraded, _ = run(tmp_path / "degraded", approve=True)
    assert not degraded.passed and degraded.model_package_arn is None
    # the persistence gate (evaluate.judge: before the champion comparison) refuses it, naming both figures
    gate = read_evaluation(LinePaths(tmp_path / "degraded" / LINE).evaluation).gate
    assert degraded.reason.startswith("no better than persistence: ") and not gate.passed, degraded.reason
    assert (
        f"candidate RMSE {gate.rmse:.6g} > persistence RMSE {gate.persistence_rmse:.6g}" in degraded.reason
        or f"candidate violation F1 {gate.violation_f1:.4f} < persistence violation F1 "
        f"{gate.persistence_violation_f1:.4f}"
        in degraded.reason
    ), degraded.reason
    assert len(group_packages()) == 1  # nothing of the degraded run reached the registry
