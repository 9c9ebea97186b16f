"""Train per line, export a bit-exact payload, register in the (moto) model registry, approve."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import boto3
import numpy as np
import pandas as pd
import pytest
from synthetic_line_examples import synthetic_examples

from edgeloop.cloud.model_registry import load_manifest
from edgeloop.local.approval import approve_model
from edgeloop.model_runtime.model_format import PREDICTIVE_RUNTIME
from edgeloop.model_runtime.scorer import load_payload
from edgeloop.sagemaker_pipelines.steps import export as export_step
from edgeloop.sagemaker_pipelines.steps.export import ParityError, export_model
from edgeloop.sagemaker_pipelines.steps.images import serving_image_uri
from edgeloop.sagemaker_pipelines.steps.lineage import check_metadata
from edgeloop.sagemaker_pipelines.steps.register import main as register_main
from edgeloop.sagemaker_pipelines.steps.registration import register_model
from edgeloop.sagemaker_pipelines.steps.train import (
    load_trained,
    save_trained,
    time_split,
    train_line_model,
    train_lines,
    training_data_sha256,
)
from edgeloop.sagemaker_pipelines.steps.train import main as train_main
from edgeloop.schemas import ModelTemplate, load_use_case, names
from edgeloop.schemas.model import Precision, feature_schema_hash
from edgeloop.schemas.training import ViolationClass

FAST = {"candidates_per_template": 2}  # per template, x 4 CV folds
MODEL_BUCKET = "edgeloop-models-test"


@pytest.fixture(scope="module")
def config():
    # the tier tests are about tree payloads (fp16 leaves): search the boosted-tree template only
    use_case = load_use_case("extrusion")
    return use_case.model_copy(
        update={"training": use_case.training.model_copy(update={"templates": [ModelTemplate.XGBOOST]})}
    )


@pytest.fixture(scope="module")
def examples(config):
    return synthetic_examples(config, n=600, seed=1)


@pytest.fixture(scope="module")
def trained(examples, config):
    return train_line_model(examples, config, seed=0, **FAST)


def export_line_1(trained, *, model_id="m", version="1.0.0", target="t", precisions=(Precision.FP32,)):
    """export_model of an extrusion line-1 model; the tests vary only these arguments."""
    return export_model(
        trained,
        model_id=model_id,
        version=version,
        use_case="extrusion",
        line_ids=["line-1"],
        target=target,
        precisions=precisions,
    )


@pytest.fixture(scope="module")
def exported(trained):
    return export_line_1(trained, model_id="extrusion-cold-od-line-1", target="cold_od_average")


@pytest.fixture(scope="module")
def exported_two_tiers(trained):
    return export_line_1(
        trained,
        model_id="extrusion-cold-od-line-1",
        version="1.1.0",
        target="cold_od_average",
        precisions=(Precision.FP32, Precision.FP16_LEAVES),
    )


# --- train ---------------------------------------------------------------------------------------


def test_model_learns_the_signal(trained):
    metrics = trained.metrics
    assert metrics.n_test == len(trained.y_test) > 100 and metrics.n_train > 300
    assert metrics.mse < 0.1 * np.var(trained.y_test)  # far better than predicting the mean
    assert metrics.mae < 0.1
    assert set(metrics.precision) == set(metrics.recall) == {c.value for c in ViolationClass}
    assert all(0.6 < v <= 1.0 for v in [*metrics.precision.values(), *metrics.recall.values()])


def test_time_split_leaves_a_label_gap(examples, config):
    split = time_split(examples, config)
    train_label_end = split.train["window_end"] + pd.Timedelta(seconds=config.horizon_s + config.label_window_s)
    assert train_label_end.max() <= split.test["window_start"].min()
    assert split.train["window_end"].max() < split.test["window_end"].min()
    assert len(split.test) == 150  # the last 25% by window_end
    assert len(split.train) + len(split.test) < len(examples)  # the gap cost some rows
    assert set(split.train.index).isdisjoint(split.test.index)


def test_trained_model_records_its_ranges(trained, config):
    gap = pd.Timedelta(seconds=config.horizon_s + config.label_window_s)
    assert trained.training_start < trained.training_end
    assert trained.training_end + gap <= trained.test_start
    assert trained.X_test.dtype == np.float32 and trained.X_test.shape == (150, len(config.feature_names))


def test_training_data_digest_tracks_the_data(examples, config):
    features = config.feature_names
    assert training_data_sha256(examples, features) == training_data_sha256(examples.copy(), features)
    changed = examples.copy()
    changed.loc[3, "label"] += 1e-6
    assert training_data_sha256(changed, features) != training_data_sha256(examples, features)


def test_missing_columns_are_named(examples, config):
    with pytest.raises(ValueError, match=r"lack columns \['label', 'speed__mean'\]"):
        train_line_model(examples.drop(columns=["label", "speed__mean"]), config, **FAST)


def test_too_few_examples_are_refused(examples, config):
    with pytest.raises(ValueError, match="need at least"):
        train_line_model(examples.iloc[:12], config, **FAST)


def test_lines_train_concurrently(config):
    lines = ["line-1", "line-2"]
    frames = {line: synthetic_examples(config, line_id=line, n=300, seed=i) for i, line in enumerate(lines)}
    models = train_lines(frames, config, max_workers=2, candidates_per_template=1)
    assert set(models) == {"line-1", "line-2"}
    assert models["line-1"].training_data_sha256 != models["line-2"].training_data_sha256


def test_a_failing_line_is_named(config):
    with pytest.raises(ValueError, match="line 'line-9'"):
        train_lines({"line-9": synthetic_examples(config, n=10)}, config, candidates_per_template=1)


# --- export --------------------------------------------------------------------------------------


def test_export_is_bit_exact_and_described_by_its_manifest(exported, trained):
    manifest = exported.manifest
    tier = manifest.tier(Precision.FP32)
    payload = exported.payloads[Precision.FP32]
    assert tier.max_abs_error == 0.0
    assert tier.payload_key == "models/extrusion-cold-od-line-1/1.0.0/fp32.npz"
    assert tier.sha256 == hashlib.sha256(payload).hexdigest() and tier.payload_bytes == len(payload)
    assert [a.value for a in tier.architectures] == ["x86_64", "aarch64", "armv7l"]
    # extrusion's change mode and extra features need the predictive runtime; fp32 alone would be 1.0.0
    assert tier.min_runtime_version == PREDICTIVE_RUNTIME == "1.3.0"
    assert (manifest.label_mode, manifest.decision_margin) == (trained.label_mode, trained.decision_margin)
    assert manifest.features == trained.feature_names
    assert manifest.feature_schema_hash == feature_schema_hash(trained.feature_names)
    assert manifest.training_data_sha256 == trained.training_data_sha256
    assert manifest.metrics == trained.metrics
    assert (manifest.template, manifest.hyperparameters, manifest.cv_rmse) == (
        trained.template, trained.hyperparameters, trained.cv_rmse)  # fmt: skip
    assert manifest.code_version is None  # not given
    scorer = load_payload(
        payload, expected_sha256=tier.sha256, expected_feature_schema_hash=manifest.feature_schema_hash
    )
    expected = trained.predict(trained.X_test)  # XGBoost's own prediction, plus the current value in change mode
    np.testing.assert_array_equal(scorer.predict(trained.X_test).view(np.uint32), expected.view(np.uint32))


def test_export_refuses_a_payload_that_drifts(trained, monkeypatch):
    real = export_step.booster_base_margin
    monkeypatch.setattr(export_step, "booster_base_margin", lambda b, o: np.float32(real(b, o) + np.float32(1e-3)))
    with pytest.raises(ParityError, match="max_abs_error"):
        export_line_1(trained)


def test_export_refuses_tiers_without_a_builder(trained, monkeypatch):
    tiers_without_quantized = {p: t for p, t in export_step.TIERS.items() if p != Precision.QUANTIZED}
    monkeypatch.setattr(export_step, "TIERS", tiers_without_quantized)
    with pytest.raises(ValueError, match="precision='quantized' has no export tier"):
        export_line_1(trained, precisions=(Precision.QUANTIZED,))


def _max_abs_error_vs_xgboost(scorer, trained) -> float:
    expected = trained.predict(trained.X_test).astype(np.float64)  # level, as the scorer predicts
    return float(np.abs(scorer.predict(trained.X_test).astype(np.float64) - expected).max())


def test_fp16_leaves_tier_is_within_its_bound_and_records_its_error(exported_two_tiers, trained):
    tier = exported_two_tiers.manifest.tier(Precision.FP16_LEAVES)
    bound = 1e-3 * np.std(trained.y_test)
    assert 0.0 < tier.max_abs_error <= bound  # lossy, but within 1e-3 x std(y_test)
    assert tier.payload_key == "models/extrusion-cold-od-line-1/1.1.0/fp16-leaves.npz"
    assert [a.value for a in tier.architectures] == ["x86_64", "aarch64", "armv7l"]
    assert tier.min_runtime_version == "1.3.0"  # extrusion's payloads: above fp16-leaves' own 1.1.0
    assert exported_two_tiers.manifest.tier(Precision.FP32).max_abs_error == 0.0


def test_both_tier_payloads_load_and_fp16_error_matches_the_manifest(exported_two_tiers, trained):
    manifest = exported_two_tiers.manifest
    for tier in manifest.tiers:
        payload = exported_two_tiers.payloads[tier.precision]
        scorer = load_payload(
            payload, expected_sha256=tier.sha256, expected_feature_schema_hash=manifest.feature_schema_hash
        )
        assert scorer.precision == tier.precision
        assert _max_abs_error_vs_xgboost(scorer, trained) == tier.max_abs_error


def test_manifest_describes_each_tier_payload(exported_two_tiers):
    manifest, payloads = exported_two_tiers.manifest, exported_two_tiers.payloads
    assert [t.precision for t in manifest.tiers] == [Precision.FP32, Precision.FP16_LEAVES]
    assert set(payloads) == {Precision.FP32, Precision.FP16_LEAVES}
    for tier in manifest.tiers:
        assert tier.sha256 == hashlib.sha256(payloads[tier.precision]).hexdigest()
        assert tier.payload_bytes == len(payloads[tier.precision])
    fp32, fp16 = manifest.tier(Precision.FP32), manifest.tier(Precision.FP16_LEAVES)
    assert fp32.sha256 != fp16.sha256 and fp32.payload_key != fp16.payload_key
    assert fp16.payload_bytes < fp32.payload_bytes  # half-width leaves


def test_fp16_tier_beyond_its_bound_is_refused_naming_tier_error_and_bound(trained, monkeypatch):
    strict = dataclasses.replace(export_step.TIERS[Precision.FP16_LEAVES], max_error_per_target_std=1e-7)
    monkeypatch.setitem(export_step.TIERS, Precision.FP16_LEAVES, strict)
    with pytest.raises(ParityError, match=r"fp16-leaves payload .* max_abs_error=\S+ exceeds the bound \S+ \(1e-07 x"):
        export_line_1(trained, precisions=(Precision.FP32, Precision.FP16_LEAVES))


def test_export_refuses_repeated_precisions(trained):
    with pytest.raises(ValueError, match=r"precisions repeat a tier: \['fp32', 'fp32'\]"):
        export_line_1(trained, precisions=(Precision.FP32, Precision.FP32))


# --- register ------------------------------------------------------------------------------------


def test_register_uploads_and_creates_a_pending_package(registry, exported):
    arn = register_model(exported, model_bucket=MODEL_BUCKET)
    package = registry.describe_model_package(ModelPackageName=arn)
    group = names.model_package_group_name("extrusion", "line-1")
    assert package["ModelPackageGroupName"] == group and package["ModelApprovalStatus"] == "PendingManualApproval"
    metadata = package["CustomerMetadataProperties"]
    manifest_uri = f"s3://{MODEL_BUCKET}/models/extrusion-cold-od-line-1/1.0.0/manifest.json"
    assert metadata[names.MANIFEST_URI_METADATA_KEY] == manifest_uri
    assert metadata["edgeloop:version"] == "1.0.0"
    assert metadata["edgeloop:feature_schema_hash"] == exported.manifest.feature_schema_hash
    assert metadata["edgeloop:tier:fp32:architectures"] == "x86_64 aarch64 armv7l"
    assert metadata["edgeloop:tier:fp32:sha256"] == exported.manifest.tiers[0].sha256
    check_metadata(metadata)
    container = package["InferenceSpecification"]["Containers"][0]
    # no serving image given: SageMaker's XGBoost image of the client's region (the SDK-generated table)
    assert container["Image"] == "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:3.2-0"
    assert container["ModelDataUrl"] == f"s3://{MODEL_BUCKET}/models/extrusion-cold-od-line-1/1.0.0/fp32.npz"
    stored = boto3.client("s3").get_object(Bucket=MODEL_BUCKET, Key="models/extrusion-cold-od-line-1/1.0.0/fp32.npz")
    assert stored["Body"].read() == exported.payloads[Precision.FP32]
    assert load_manifest(manifest_uri) == exported.manifest


def test_approval_keeps_metadata_and_emits_the_state_change_event(registry, exported):
    arn = register_model(exported, model_bucket=MODEL_BUCKET)
    before = registry.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    event = approve_model(arn)
    after = registry.describe_model_package(ModelPackageName=arn)
    assert after["ModelApprovalStatus"] == "Approved"
    assert after["CustomerMetadataProperties"] == before
    assert event["source"] == "aws.sagemaker" and event["detail-type"] == "SageMaker Model Package State Change"
    assert event["version"] == "0" and event["resources"] == [arn] and event["region"] == "eu-west-1"
    detail = event["detail"]
    assert detail["ModelPackageArn"] == arn and detail["ModelApprovalStatus"] == "Approved"
    assert detail["ModelPackageGroupName"] == names.model_package_group_name("extrusion", "line-1")
    assert detail["ModelPackageVersion"] == 1
    assert detail["CustomerMetadataProperties"] == before
    json.dumps(event)  # what EventBridge delivers is JSON
    assert load_manifest(detail["CustomerMetadataProperties"][names.MANIFEST_URI_METADATA_KEY]) == exported.manifest


def test_register_and_approve_with_two_tiers(registry, exported_two_tiers):
    manifest = exported_two_tiers.manifest
    arn = register_model(exported_two_tiers, model_bucket=MODEL_BUCKET)
    metadata = registry.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    check_metadata(metadata)
    assert metadata["edgeloop:tiers"] == "fp32 fp16-leaves"
    for tier in manifest.tiers:
        prefix = f"edgeloop:tier:{tier.precision.value}:"
        assert metadata[f"{prefix}sha256"] == tier.sha256
        assert metadata[f"{prefix}min_runtime_version"] == tier.min_runtime_version
        assert metadata[f"{prefix}architectures"] == "x86_64 aarch64 armv7l"
        stored = boto3.client("s3").get_object(Bucket=MODEL_BUCKET, Key=tier.payload_key)["Body"].read()
        assert stored == exported_two_tiers.payloads[tier.precision]
    package = registry.describe_model_package(ModelPackageName=arn)
    fp32_uri = f"s3://{MODEL_BUCKET}/models/extrusion-cold-od-line-1/1.1.0/fp32.npz"
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == fp32_uri
    event = approve_model(arn)
    assert event["detail"]["ModelApprovalStatus"] == "Approved"
    assert event["detail"]["CustomerMetadataProperties"] == metadata
    reloaded = load_manifest(metadata[names.MANIFEST_URI_METADATA_KEY])
    assert reloaded == manifest and reloaded.tier(Precision.FP16_LEAVES).max_abs_error > 0


def test_versions_accumulate_in_one_group(registry, exported):
    first = register_model(exported, model_bucket=MODEL_BUCKET)
    second = register_model(exported, model_bucket=MODEL_BUCKET)
    assert first != second
    group = names.model_package_group_name("extrusion", "line-1")
    listed = registry.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert len(listed) == 2


def test_metadata_outside_the_allowed_alphabet_is_refused():
    with pytest.raises(ValueError, match="edgeloop:line_ids='line-1,line-2'"):
        check_metadata({"edgeloop:line_ids": "line-1,line-2"})
    with pytest.raises(ValueError, match="<= 256 chars"):
        check_metadata({"edgeloop:long": "x" * 257})
    check_metadata({"edgeloop:tier:fp16-leaves:architectures": "x86_64 aarch64", "edgeloop:note": "Düsen @ Linie 1"})


def test_unknown_region_has_no_image():
    assert serving_image_uri("us-east-1").startswith("683313688378.dkr.ecr.us-east-1.amazonaws.com/")
    with pytest.raises(ValueError, match="region='xx-nowhere-1'"):
        serving_image_uri("xx-nowhere-1")


def test_load_manifest_needs_an_s3_uri():
    with pytest.raises(ValueError, match="not s3://bucket/key"):
        load_manifest("https://example.com/manifest.json")


# --- as pipeline steps ---------------------------------------------------------------------------


def test_a_saved_model_reloads_with_identical_predictions(trained, tmp_path):
    reloaded = load_trained(save_trained(trained, tmp_path / "line-1"))
    assert reloaded.metrics == trained.metrics and reloaded.feature_names == trained.feature_names
    assert (reloaded.training_start, reloaded.training_end) == (trained.training_start, trained.training_end)
    np.testing.assert_array_equal(reloaded.X_test, trained.X_test)
    expected = trained.booster.inplace_predict(trained.X_test)
    np.testing.assert_array_equal(reloaded.booster.inplace_predict(trained.X_test), expected)


def test_steps_run_from_the_command_line(registry, config, tmp_path):
    frames = [synthetic_examples(config, line_id=line, n=240, seed=i) for i, line in enumerate(["line-1", "line-2"])]
    pd.concat(frames, ignore_index=True).to_parquet(tmp_path / "examples.parquet")
    saved = train_main(
        [
            "--examples",
            str(tmp_path / "examples.parquet"),
            "--output",
            str(tmp_path / "model"),
            "--candidates-per-template",
            "1",
        ]
    )
    assert sorted(saved) == ["line-1", "line-2"]
    expected = {"lasso": 1, "random_forest": 1, "xgboost": 1}  # every template the extrusion YAML allows
    assert load_trained(saved["line-1"]).search_summary["candidates_per_template"] == expected
    arns = register_main(["--trained", str(tmp_path / "model"), "--model-bucket", MODEL_BUCKET, "--version", "0.1.0"])
    assert sorted(arns) == ["line-1", "line-2"]
    package = registry.describe_model_package(ModelPackageName=arns["line-2"])
    assert package["ModelPackageGroupName"] == names.model_package_group_name("extrusion", "line-2")
    manifest = load_manifest(package["CustomerMetadataProperties"][names.MANIFEST_URI_METADATA_KEY])
    assert manifest.model_id == "extrusion-line-2" and manifest.version == "0.1.0"
