"""The model of test_greengrass_components_e2e.py: a small XGBoost regressor trained on the line
simulator, exported as a weight-only payload, with its manifest and an Approved package in the registry."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import boto3
import xgboost as xgb
from fleet_e2e_helpers import simulator_config
from registry_helpers import create_package
from simulated_line_data import live_window_booster

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.sagemaker_pipelines.steps.export import payload_from_booster
from edgeloop.schemas import CompatibilityTier, ModelManifest, Precision, feature_schema_hash, load_use_case, names
from edgeloop.schemas.model import ModelMetrics

MODEL_ID, VERSION = "extrusion-line-1", "1.0.0"
USE_CASE = load_use_case("extrusion")


def _booster() -> xgb.Booster:
    return live_window_booster(ExtrusionLineSimulator("line-1", seed=11, start_ms=0, config=simulator_config()))


def register_approved_model(now) -> str:
    """Payload and manifest in the model bucket, an Approved package pointing at the manifest."""
    payload = payload_from_booster(_booster(), model_id=MODEL_ID, version=VERSION, features=USE_CASE.feature_names)
    prefix = f"{names.MODELS_PREFIX}/{MODEL_ID}/{VERSION}"
    s3 = boto3.client("s3")
    s3.put_object(Bucket=names.LOCAL_MODEL_BUCKET, Key=f"{prefix}/fp32.npz", Body=payload)
    manifest = ModelManifest(
        model_id=MODEL_ID,
        version=VERSION,
        use_case="extrusion",
        line_ids=["line-1"],
        family="xgboost",
        target=USE_CASE.target_metric,
        features=USE_CASE.feature_names,
        feature_schema_hash=feature_schema_hash(USE_CASE.feature_names),
        tiers=[
            CompatibilityTier(
                precision=Precision.FP32,
                architectures=["x86_64", "aarch64", "armv7l"],
                min_runtime_version="1.0.0",
                payload_key=f"{prefix}/fp32.npz",
                payload_bytes=len(payload),
                sha256=hashlib.sha256(payload).hexdigest(),
                max_abs_error=0.0,
            )
        ],
        training_start=now - timedelta(days=2),
        training_end=now - timedelta(days=1),
        training_data_sha256="a" * 64,
        metrics=ModelMetrics(mse=0.01, mae=0.05, n_train=50, n_test=10),
        created_at=now,
    )
    s3.put_object(Bucket=names.LOCAL_MODEL_BUCKET, Key=f"{prefix}/manifest.json", Body=manifest.model_dump_json())
    sagemaker = boto3.client("sagemaker")
    group = names.model_package_group_name("extrusion", "line-1")
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    return create_package(sagemaker, group, f"s3://{names.LOCAL_MODEL_BUCKET}/{prefix}/manifest.json")
