"""Evaluate step: candidate vs the Approved champion on reference data, both scored by the device scorer."""

from __future__ import annotations

import numpy as np
import pytest
from evaluate_helpers import run_evaluate_main, write_evaluate_inputs
from synthetic_line_examples import synthetic_examples

from edgeloop.sagemaker_pipelines.steps import evaluate as evaluate_step
from edgeloop.sagemaker_pipelines.steps.dataset import reference_split
from edgeloop.sagemaker_pipelines.steps.evaluate import (
    ScoredMetrics,
    evaluate_candidate,
    judge,
    latest_approved_package,
    read_evaluation,
)
from edgeloop.sagemaker_pipelines.steps.export import export_model, reference_predict
from edgeloop.sagemaker_pipelines.steps.registration import approve_package, register_model
from edgeloop.sagemaker_pipelines.steps.train import train_line_model, training_data_sha256
from edgeloop.schemas import load_use_case, names
from edgeloop.schemas.use_case import LabelMode

MODEL_BUCKET = "edgeloop-models-eval-test"
LINE = "line-1"


def fast(config):
    """The use case with a tiny search, so each training here takes a second or two, in level mode (the
    synthetic packs' `<target>__last` is noise, no current value: change mode is tested in tests/unit/model)."""
    training = config.training.model_copy(update={"candidates_per_template": 1, "cv_folds": 2})
    label = config.label.model_copy(update={"mode": LabelMode.LEVEL})
    return config.model_copy(update={"training": training, "label": label})


@pytest.fixture(scope="module")
def config():
    return fast(load_use_case("extrusion"))


@pytest.fixture(scope="module")
def split(config):
    return reference_split(synthetic_examples(config, line_id=LINE, n=600, seed=4), config)


@pytest.fixture(scope="module")
def good(split, config):
    return train_line_model(split[0], config)


@pytest.fixture(scope="module")
def degraded(split, config):
    train = split[0].copy()
    train["label"] = np.random.default_rng(7).permutation(train["label"].to_numpy())
    return train_line_model(train, config)


def make_champion(trained, config, version: str = "1.0.0") -> str:
    exported = export_model(
        trained,
        model_id=f"{config.use_case}-{LINE}",
        version=version,
        use_case=config.use_case,
        line_ids=[LINE],
        target=config.target_metric,
    )
    arn = register_model(exported, model_bucket=MODEL_BUCKET)
    approve_package(arn)
    return arn


def test_without_a_champion_only_the_absolute_gates_decide(registry, good, split, config):
    report = evaluate_candidate(good, split[1], config, line_id=LINE)
    assert report.passed, report.reason
    assert report.reason.startswith("no champion")
    assert report.champion is None and report.champion_model is None
    assert report.reference.rows == len(split[1])
    assert report.reference.content_sha256 == training_data_sha256(split[1], good.feature_names)


def test_candidate_is_scored_with_the_device_scorer(registry, good, split, config):
    report = evaluate_candidate(good, split[1], config, line_id=LINE)
    X = split[1][good.feature_names].to_numpy(dtype=np.float32)
    expected = reference_predict(good.booster, X, good.standardization).astype(np.float64)  # fp32 is bit-exact
    mse = float(np.mean((expected - split[1]["label"].to_numpy()) ** 2))
    assert report.candidate.mse == pytest.approx(mse, rel=1e-12)
    assert report.candidate.n_test == len(split[1])


def test_degraded_candidate_fails_against_a_good_champion_naming_the_mses(registry, good, degraded, split, config):
    champion_arn = make_champion(good, config)
    # the persistence gate (test_evaluate_baselines.py) would refuse it first: relaxed, the champion decides
    no_gate = {"min_rmse_gain_vs_persistence": None, "violation_f1_vs_persistence": False}
    config = config.model_copy(update={"validation": config.validation.model_copy(update=no_gate)})
    report = evaluate_candidate(degraded, split[1], config, line_id=LINE)
    assert not report.passed
    assert report.champion_model.model_package_arn == champion_arn
    assert report.candidate.mse > report.champion.mse * config.validation.max_mse_ratio_vs_champion
    assert f"candidate MSE {report.candidate.mse:.6g} > champion MSE {report.champion.mse:.6g}" in report.reason
    assert "x 1.1" in report.reason


def test_good_candidate_passes_against_itself_as_champion(registry, good, split, config):
    make_champion(good, config)
    report = evaluate_candidate(good, split[1], config, line_id=LINE)
    assert report.passed, report.reason
    assert report.champion.mse == report.candidate.mse
    assert "<= champion MSE" in report.reason


def test_the_latest_approved_version_is_the_champion(registry, good, degraded, config):
    make_champion(good, config, "1.0.0")
    newest = make_champion(degraded, config, "1.0.1")
    pending = export_model(
        good, model_id=f"{config.use_case}-{LINE}", version="1.0.2", use_case=config.use_case,
        line_ids=[LINE], target=config.target_metric,
    )  # fmt: skip
    register_model(pending, model_bucket=MODEL_BUCKET)  # pending approval: never a champion
    package = latest_approved_package(names.model_package_group_name(config.use_case, LINE))
    assert package["ModelPackageArn"] == newest


def test_champion_with_another_feature_schema_is_not_compared(registry, good, split, config):
    narrow = config.model_copy(update={"feature_stats": ["mean", "last"]})
    champion = train_line_model(split[0], narrow)
    make_champion(champion, narrow)
    report = evaluate_candidate(good, split[1], config, line_id=LINE)
    assert report.passed
    assert report.champion is None and report.champion_model is not None
    assert "feature schema" in report.reason and "comparison skipped" in report.reason


def test_recall_floor_and_non_finite_predictions_fail(config):
    base = dict(mse=0.01, mae=0.1, n_train=10, n_test=10)
    strict = config.model_copy(
        update={"validation": config.validation.model_copy(update={"min_recall_violation": 0.9})}
    )
    passed, reason = judge(ScoredMetrics(**base, violation_recall=0.5), None, strict)
    assert not passed and reason == "candidate violation recall 0.5000 < min_recall_violation 0.9000"
    passed, reason = judge(ScoredMetrics(**base, finite=False), None, config)
    assert not passed and "not all finite" in reason
    passed, reason = judge(ScoredMetrics(**base, violation_recall=None), None, strict)
    assert passed and "no violations in the reference data" in reason


def test_main_writes_the_report_the_pipeline_condition_reads(registry, good, split, config, tmp_path):
    info = write_evaluate_inputs(good, split, LINE, tmp_path)
    report, document = run_evaluate_main(tmp_path, MODEL_BUCKET)
    assert {"line_id", "passed", "reason", "candidate", "champion", "reference"} <= set(document)
    assert document["passed"] is True and document["champion"] is None
    assert document["reference"]["rows"] == len(split[1])
    assert read_evaluation(tmp_path / "out") == report
    with pytest.raises(FileNotFoundError, match="no saved model for line_id='line-2'"):
        (tmp_path / "dataset.json").write_text(info.model_copy(update={"line_id": "line-2"}).model_dump_json())
        evaluate_step.main(
            ["--model", str(tmp_path / "model"), "--reference", str(tmp_path), "--dataset", str(tmp_path),
             "--use-case", "extrusion", "--output", str(tmp_path / "out")]
        )  # fmt: skip
