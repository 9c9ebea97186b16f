"""Registration with lineage: data range and hash, code version, template, metrics in the registry."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from synthetic_line_examples import synthetic_examples

from edgeloop.cloud.model_registry import load_manifest
from edgeloop.sagemaker_pipelines.steps import register as register_step
from edgeloop.sagemaker_pipelines.steps.dataset import DatasetInfo, reference_split
from edgeloop.sagemaker_pipelines.steps.evaluate import EvaluationReport, GateResult, ReferenceInfo, ScoredMetrics
from edgeloop.sagemaker_pipelines.steps.export import export_model
from edgeloop.sagemaker_pipelines.steps.lineage import (
    METADATA_ENTRIES_MAX,
    METADATA_VALUE_MAX,
    check_metadata,
    code_version,
    lineage_of,
    metadata_properties,
    parse_lineage,
)
from edgeloop.sagemaker_pipelines.steps.registration import (
    ValidationFailed,
    approve_package,
    next_version,
    register_model,
)
from edgeloop.sagemaker_pipelines.steps.train import save_trained, train_line_model
from edgeloop.schemas import load_use_case, names
from edgeloop.schemas.model import Precision

MODEL_BUCKET = "edgeloop-models-lineage-test"
LINE = "line-1"


@pytest.fixture(scope="module")
def config():
    use_case = load_use_case("extrusion")
    training = use_case.training.model_copy(update={"candidates_per_template": 1, "cv_folds": 2})
    return use_case.model_copy(update={"training": training})


@pytest.fixture(scope="module")
def trained(config):
    train, _ = reference_split(synthetic_examples(config, line_id=LINE, n=500, seed=2), config)
    return train_line_model(train, config)


@pytest.fixture(scope="module")
def dataset_info(trained):
    return DatasetInfo(
        line_id=LINE,
        use_case="extrusion",
        start=datetime(2026, 3, 1).date(),
        end=datetime(2026, 3, 2).date(),
        rows_train=400,
        rows_reference=75,
        content_sha256="1" * 64,
        train_sha256="2" * 64,
        reference_sha256="3" * 64,
        data_start=datetime(2026, 3, 1, 6, tzinfo=UTC),
        data_end=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    )


def evaluation(passed: bool = True, reason: str = "no champion; candidate MSE 0.01") -> EvaluationReport:
    metrics = ScoredMetrics(
        mse=0.0123456789, mae=0.08, precision={"usl_violation": 0.9}, recall={"usl_violation": 0.8},
        n_train=400, n_test=75, violation_precision=0.9, violation_recall=0.8, violation_f1=0.8470588235294118,
    )  # fmt: skip
    persistence = metrics.model_copy(update={"mse": 0.0234567891, "rmse": 0.15315608, "violation_f1": 0.61234})
    setpoint = metrics.model_copy(update={"mse": 0.05, "rmse": 0.2236068, "violation_f1": 0.0})
    gate = GateResult(
        passed=True, reason="candidate RMSE 0.111 <= persistence RMSE 0.153", rmse=0.111, persistence_rmse=0.153,
        min_rmse_gain_vs_persistence=None, violation_f1_vs_persistence=True, relaxed=["min_rmse_gain_vs_persistence"],
    )  # fmt: skip
    return EvaluationReport(
        line_id=LINE, passed=passed, reason=reason, candidate=metrics,
        reference=ReferenceInfo(rows=75, content_sha256="3" * 64),
        baselines={"persistence": persistence, "setpoint": setpoint}, gate=gate,
    )  # fmt: skip


def exported_with_lineage(trained, version: str = "1.0.0", precisions=(Precision.FP32, Precision.FP16_LEAVES)):
    return export_model(
        trained, code_version="0123456789abcdef0123456789abcdef01234567", model_id=f"extrusion-{LINE}",
        version=version, use_case="extrusion", line_ids=[LINE], target="cold_od_average", precisions=precisions,
    )  # fmt: skip


def test_metadata_and_manifest_round_trip_through_the_registry(registry, trained, dataset_info):
    exported = exported_with_lineage(trained)
    arn = register_model(exported, model_bucket=MODEL_BUCKET, dataset=dataset_info, evaluation=evaluation())
    properties = registry.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    lineage = parse_lineage(properties)
    manifest_uri = properties[names.MANIFEST_URI_METADATA_KEY]
    assert lineage == lineage_of(exported.manifest, manifest_uri, dataset=dataset_info, evaluation=evaluation())
    assert load_manifest(manifest_uri) == exported.manifest
    # the lineage a data scientist asks for, spelled out
    assert lineage.data_start == dataset_info.data_start and lineage.data_end == dataset_info.data_end
    assert lineage.data_sha256 == dataset_info.content_sha256
    assert lineage.code_version == exported.manifest.code_version == "0123456789abcdef0123456789abcdef01234567"
    assert lineage.metrics == trained.metrics
    assert lineage.reference.mse == 0.0123456789 and lineage.reference.violation_recall == 0.8
    assert lineage.reference.persistence_rmse == 0.15315608 and lineage.reference.setpoint_violation_f1 == 0.0
    assert lineage.reference.gate == "passed relaxed:min_rmse_gain_vs_persistence"
    assert [t.precision for t in lineage.tiers] == [Precision.FP32, Precision.FP16_LEAVES]
    assert lineage.template == trained.template.value == exported.manifest.template.value
    assert lineage.cv_rmse == trained.cv_rmse == exported.manifest.cv_rmse
    assert exported.manifest.hyperparameters == trained.hyperparameters and trained.hyperparameters
    mode = trained.label_mode.value
    assert (lineage.label_mode, lineage.decision_margin) == (mode, trained.decision_margin)
    assert properties["edgeloop:decision"] == f"label_mode={mode} margin={trained.decision_margin!r}"
    assert len(properties) <= METADATA_ENTRIES_MAX
    assert all(len(v) <= METADATA_VALUE_MAX for v in properties.values())


def test_metadata_stays_within_sagemaker_limits_with_every_tier(trained, dataset_info):
    exported = exported_with_lineage(trained, precisions=(Precision.FP32, Precision.FP16_LEAVES, Precision.QUANTIZED))
    properties = metadata_properties(exported.manifest, "s3://b/k", dataset=dataset_info, evaluation=evaluation())
    check_metadata(properties)
    assert len(properties) <= METADATA_ENTRIES_MAX


def test_a_failed_evaluation_is_refused_naming_the_reason(registry, trained, dataset_info):
    failed = evaluation(passed=False, reason="candidate MSE 0.05 > champion MSE 0.01 x 1.1 = 0.011")
    with pytest.raises(ValidationFailed, match=r"not registering: candidate MSE 0.05 > champion MSE 0.01"):
        register_model(exported_with_lineage(trained), model_bucket=MODEL_BUCKET, evaluation=failed)
    assert registry.list_model_package_groups()["ModelPackageGroupSummaryList"] == []
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=MODEL_BUCKET)


def test_main_registers_the_dataset_line_with_lineage_and_refuses_a_failed_one(
    registry, trained, dataset_info, tmp_path
):
    save_trained(trained, tmp_path / "model" / LINE)
    save_trained(trained, tmp_path / "model" / "line-2")  # another line's model: not this dataset's
    (tmp_path / "dataset.json").write_text(dataset_info.model_dump_json())
    (tmp_path / "evaluation.json").write_text(evaluation().model_dump_json())
    argv = ["--trained", str(tmp_path / "model"), "--model-bucket", MODEL_BUCKET, "--use-case", "extrusion",
            "--dataset", str(tmp_path), "--evaluation", str(tmp_path), "--code-version", "v-test", "--approve"]  # fmt: skip
    first = register_step.main(argv)
    second = register_step.main(argv)
    assert list(first) == [LINE]
    described = [registry.describe_model_package(ModelPackageName=a[LINE]) for a in (first, second)]
    assert [d["ModelApprovalStatus"] for d in described] == ["Approved", "Approved"]
    lineages = [parse_lineage(d["CustomerMetadataProperties"]) for d in described]
    assert [x.version for x in lineages] == ["1.0.0", "1.0.1"]  # next patch, not an overwrite
    assert lineages[0].code_version == "v-test" and lineages[0].data_sha256 == "1" * 64
    assert load_manifest(lineages[1].manifest_uri).code_version == "v-test"
    group = names.model_package_group_name("extrusion", LINE)
    assert next_version(group) == "1.0.2"

    (tmp_path / "evaluation.json").write_text(
        evaluation(False, "candidate violation recall 0.1 < 0.5").model_dump_json()
    )
    with pytest.raises(ValidationFailed, match="candidate violation recall 0.1 < 0.5"):
        register_step.main(argv)
    assert next_version(group) == "1.0.2"


def test_code_version_is_the_checkout_commit():
    version = code_version()
    assert version == code_version()  # computed once
    assert len(version) == 40 and int(version, 16) >= 0


def test_lineage_without_a_decision_property_has_none_and_a_bad_one_is_refused(trained, dataset_info):
    properties = metadata_properties(exported_with_lineage(trained).manifest, "s3://b/k", dataset=dataset_info)
    old = {k: v for k, v in properties.items() if k != "edgeloop:decision"}  # registered before the property
    assert (parse_lineage(old).label_mode, parse_lineage(old).decision_margin) == (None, None)
    with pytest.raises(ValueError, match="edgeloop:decision='margin=0.1'"):
        parse_lineage({**properties, "edgeloop:decision": "margin=0.1"})


def test_parse_refuses_foreign_metadata():
    with pytest.raises(ValueError, match="not an edgeloop model package"):
        parse_lineage({"team": "vision"})


def test_models_cli_lists_and_shows_the_lineage(registry, trained, dataset_info, monkeypatch):
    from rich.console import Console
    from typer.testing import CliRunner

    from edgeloop.cli import models as models_cli

    monkeypatch.setattr(models_cli, "console", Console(width=400, soft_wrap=True))
    exported = exported_with_lineage(trained)
    arn = register_model(exported, model_bucket=MODEL_BUCKET, dataset=dataset_info, evaluation=evaluation())
    register_model(exported_with_lineage(trained, "1.0.1"), model_bucket=MODEL_BUCKET)
    approve_package(arn)
    group = names.model_package_group_name("extrusion", LINE)

    rows = models_cli.package_rows(use_case="extrusion", line_id=LINE)
    assert [(r.package_version, r.model_version, r.status) for r in rows] == [
        (1, "1.0.0", "Approved"),
        (2, "1.0.1", "PendingManualApproval"),
    ]
    assert rows[0].mse == trained.metrics.mse and rows[0].template == exported.manifest.template.value
    assert [r.model_version for r in models_cli.package_rows(status="Approved")] == ["1.0.0"]
    assert models_cli.package_rows(use_case="injection_molding") == []

    runner = CliRunner()
    listed = runner.invoke(models_cli.models_app, ["list", "--line", LINE])
    assert listed.exit_code == 0, listed.output
    assert group in listed.output and "PendingManualApproval" in listed.output
    for reference in (arn, f"{group}/1", f"{group}/1.0.0"):
        shown = runner.invoke(models_cli.models_app, ["show", reference])
        assert shown.exit_code == 0, shown.output
        for expected in (
            dataset_info.content_sha256,
            dataset_info.data_start.isoformat(),
            exported.manifest.code_version,
            exported.manifest.tiers[0].sha256,
            "x86_64 aarch64 armv7l",
            exported.manifest.template.value,
            f"{exported.manifest.cv_rmse:.6g}",
            "model RMSE 0.111111 F1 0.847 | persistence RMSE 0.153156 F1 0.612 | setpoint RMSE 0.223607 F1 0.000",
            "gate passed relaxed:min_rmse_gain_vs_persistence",
            f"{trained.label_mode.value} labels, violation margin {trained.decision_margin:g} x half spec band "
            "(reference violation "
            "precision 0.900, recall 0.800)",
        ):
            assert expected in shown.output, expected
        assert all(f"{name}=" in shown.output for name in exported.manifest.hyperparameters)
    missing = runner.invoke(models_cli.models_app, ["show", f"{group}/9"])
    assert missing.exit_code == 2 and "has no version '9'" in missing.output
    bad_status = runner.invoke(models_cli.models_app, ["list", "--status", "approved"])
    assert bad_status.exit_code == 2 and "--status 'approved'" in bad_status.output
