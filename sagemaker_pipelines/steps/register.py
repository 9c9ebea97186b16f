"""Register an exported model in the SageMaker model registry and approve it.

Payloads and manifest.json go to the model bucket under models/<model_id>/<version>/. The model
package carries a compact, searchable summary in CustomerMetadataProperties (manifest location,
version, feature schema, per-tier hardware compatibility); the manifest itself stays the full record.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import unicodedata
import uuid
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from edgeloop.cloud import aws
from edgeloop.model_runtime.signing import Ed25519PrivateKey, load_private_key
from edgeloop.schemas import names
from edgeloop.schemas.common import Contract, semver_key
from edgeloop.schemas.model import Architecture, ModelManifest, ModelMetrics, Precision
from edgeloop.schemas.use_case import UseCaseConfig, load_use_case

from ..pipeline import SECRET_ARN_PATTERN
from .export import ExportedModel, export_model, manifest_key
from .train import load_trained

if TYPE_CHECKING:  # evaluate.py imports this module; the reports are only read here
    from .dataset import DatasetInfo
    from .evaluate import EvaluationReport

# The sagemaker-xgboost serving image, as `sagemaker.image_uris.retrieve("xgboost", region,
# version=XGBOOST_IMAGE_VERSION)` returns it (the SDK is not a dependency here). Edge devices never
# run this container: it documents the model's framework in the registry and lets a package be
# deployed to a SageMaker endpoint for side-by-side checks. Accounts per region from the SDK's
# image_uri_config/xgboost.json.
XGBOOST_IMAGE_VERSION = "1.7-1"
XGBOOST_IMAGE_URI = "{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-xgboost:{version}"
XGBOOST_IMAGE_ACCOUNTS = {
    "af-south-1": "510948584623",
    "ap-east-1": "651117190479",
    "ap-northeast-1": "354813040037",
    "ap-northeast-2": "366743142698",
    "ap-northeast-3": "867004704886",
    "ap-south-1": "720646828776",
    "ap-southeast-1": "121021644041",
    "ap-southeast-2": "783357654285",
    "ca-central-1": "341280168497",
    "eu-central-1": "492215442770",
    "eu-north-1": "662702820516",
    "eu-south-1": "978288397137",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-west-3": "659782779980",
    "me-south-1": "801668240914",
    "sa-east-1": "737474898029",
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
}

# SageMaker's limits on CustomerMetadataProperties (CreateModelPackage API reference).
METADATA_PATTERN = r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$"  # Python's re has no \p{..}: see _metadata_text
METADATA_PUNCTUATION = frozenset("_.:/=+-@")
METADATA_KEY_MAX = 128
METADATA_VALUE_MAX = 256
METADATA_ENTRIES_MAX = 50
METADATA_PREFIX = "edgeloop:"
# "true" when every tier's payload carries a signature, "false" otherwise: unsigned versions are
# visible in the registry before anyone approves them for gateways that require signatures.
SIGNED_METADATA_KEY = f"{METADATA_PREFIX}signed"

APPROVAL_EVENT_SOURCE = "aws.sagemaker"
APPROVAL_EVENT_DETAIL_TYPE = "SageMaker Model Package State Change"


def xgboost_image_uri(region: str) -> str:
    if region not in XGBOOST_IMAGE_ACCOUNTS:
        known = sorted(XGBOOST_IMAGE_ACCOUNTS)
        raise ValueError(f"region={region!r} has no known sagemaker-xgboost image; known: {known}")
    account = XGBOOST_IMAGE_ACCOUNTS[region]
    return XGBOOST_IMAGE_URI.format(account=account, region=region, version=XGBOOST_IMAGE_VERSION)


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    match = re.match(r"^s3://([^/]+)/(.+)$", uri)
    if not match:
        raise ValueError(f"manifest_uri={uri!r} is not s3://bucket/key")
    return match.group(1), match.group(2)


# --- metadata ------------------------------------------------------------------------------------


class TierSummary(Contract):
    precision: Precision
    architectures: list[Architecture]
    min_runtime_version: str
    sha256: str


class ReferenceSummary(Contract):
    """How the candidate scored on the reference dataset in the evaluate step."""

    rows: int
    content_sha256: str
    mse: float
    violation_precision: float | None = None
    violation_recall: float | None = None


class RegistryLineage(Contract):
    """Everything a model package's CustomerMetadataProperties say: the registry's searchable summary
    of a model version and where it came from. `lineage_properties` writes it, `parse_lineage` reads it."""

    manifest_uri: str
    model_id: str
    version: str
    use_case: str
    line_ids: list[str]
    format_version: int
    family: str
    feature_schema_hash: str
    tiers: list[TierSummary]
    training_start: datetime
    training_end: datetime
    training_data_sha256: str
    metrics: ModelMetrics
    template: str | None = None
    code_version: str | None = None
    cv_rmse: float | None = None
    data_start: datetime | None = None
    data_end: datetime | None = None
    data_sha256: str | None = None
    reference: ReferenceSummary | None = None
    signed: bool | None = None  # None: registered before the property existed


def lineage_of(
    manifest: ModelManifest,
    manifest_uri: str,
    *,
    dataset: DatasetInfo | None = None,
    evaluation: EvaluationReport | None = None,
) -> RegistryLineage:
    reference = None
    if evaluation is not None:
        reference = ReferenceSummary(
            rows=evaluation.reference.rows,
            content_sha256=evaluation.reference.content_sha256,
            mse=evaluation.candidate.mse,
            violation_precision=evaluation.candidate.violation_precision,
            violation_recall=evaluation.candidate.violation_recall,
        )
    return RegistryLineage(
        manifest_uri=manifest_uri,
        model_id=manifest.model_id,
        version=manifest.version,
        use_case=manifest.use_case,
        line_ids=list(manifest.line_ids),
        format_version=manifest.format_version,
        family=manifest.family.value,
        feature_schema_hash=manifest.feature_schema_hash,
        tiers=[
            TierSummary(
                precision=t.precision,
                architectures=list(t.architectures),
                min_runtime_version=t.min_runtime_version,
                sha256=t.sha256,
            )
            for t in manifest.tiers
        ],
        training_start=manifest.training_start,
        training_end=manifest.training_end,
        training_data_sha256=manifest.training_data_sha256,
        metrics=manifest.metrics,
        template=manifest.template.value if manifest.template else None,
        code_version=manifest.code_version,
        cv_rmse=manifest.cv_rmse,
        data_start=dataset.data_start if dataset else None,
        data_end=dataset.data_end if dataset else None,
        data_sha256=dataset.content_sha256 if dataset else None,
        reference=reference,
        signed=all(t.signature for t in manifest.tiers),
    )


def metadata_properties(
    manifest: ModelManifest,
    manifest_uri: str,
    *,
    dataset: DatasetInfo | None = None,
    evaluation: EvaluationReport | None = None,
) -> dict[str, str]:
    """The registry's summary of a model version: enough to pick devices without reading S3, and its lineage."""
    properties = lineage_properties(lineage_of(manifest, manifest_uri, dataset=dataset, evaluation=evaluation))
    check_metadata(properties)
    return properties


def lineage_properties(lineage: RegistryLineage) -> dict[str, str]:
    p = METADATA_PREFIX
    properties = {
        names.MANIFEST_URI_METADATA_KEY: lineage.manifest_uri,
        f"{p}model_id": lineage.model_id,
        f"{p}version": lineage.version,
        f"{p}use_case": lineage.use_case,
        f"{p}line_ids": " ".join(lineage.line_ids),
        f"{p}format_version": str(lineage.format_version),
        f"{p}family": lineage.family,
        f"{p}feature_schema_hash": lineage.feature_schema_hash,
        f"{p}tiers": " ".join(t.precision.value for t in lineage.tiers),
        f"{p}training_start": lineage.training_start.isoformat(),
        f"{p}training_end": lineage.training_end.isoformat(),
        f"{p}training_data_sha256": lineage.training_data_sha256,
    }
    if lineage.signed is not None:
        properties[SIGNED_METADATA_KEY] = "true" if lineage.signed else "false"
    for tier in lineage.tiers:
        prefix = f"{p}tier:{tier.precision.value}:"
        properties[f"{prefix}architectures"] = " ".join(a.value for a in tier.architectures)
        properties[f"{prefix}min_runtime_version"] = tier.min_runtime_version
        properties[f"{prefix}sha256"] = tier.sha256
    properties.update(_metrics_properties(lineage.metrics))
    optional = {
        "template": lineage.template,
        "code_version": lineage.code_version,
        "cv_rmse": lineage.cv_rmse,
        "data_start": lineage.data_start.isoformat() if lineage.data_start else None,
        "data_end": lineage.data_end.isoformat() if lineage.data_end else None,
        "data_sha256": lineage.data_sha256,
    }
    if lineage.reference is not None:
        optional.update({f"reference:{k}": v for k, v in lineage.reference.model_dump().items()})
    properties.update({f"{p}{k}": _text(v) for k, v in optional.items() if v is not None})
    return properties


def _metrics_properties(metrics: ModelMetrics) -> dict[str, str]:
    p = f"{METADATA_PREFIX}metric:"
    properties = {f"{p}{k}": _text(getattr(metrics, k)) for k in ("mse", "mae", "n_train", "n_test")}
    for kind in ("precision", "recall"):
        properties.update({f"{p}{kind}:{cls}": _text(v) for cls, v in getattr(metrics, kind).items()})
    return properties


def _text(value: float | int | str) -> str:
    # repr round-trips floats exactly (and "inf"/"nan" are letters, which SageMaker allows)
    return repr(value) if isinstance(value, float) else str(value)


def parse_lineage(properties: dict[str, str]) -> RegistryLineage:
    """RegistryLineage back from a described package's CustomerMetadataProperties."""
    p = METADATA_PREFIX
    get = properties.get
    missing = [k for k in (names.MANIFEST_URI_METADATA_KEY, f"{p}model_id", f"{p}version") if k not in properties]
    if missing:
        raise ValueError(f"CustomerMetadataProperties lack {missing}: not an edgeloop model package")
    tiers = [
        TierSummary(
            precision=precision,
            architectures=get(f"{p}tier:{precision}:architectures", "").split(),
            min_runtime_version=get(f"{p}tier:{precision}:min_runtime_version", ""),
            sha256=get(f"{p}tier:{precision}:sha256", ""),
        )
        for precision in get(f"{p}tiers", "").split()
    ]
    reference = None
    if f"{p}reference:rows" in properties:
        reference = ReferenceSummary(
            rows=int(properties[f"{p}reference:rows"]),
            content_sha256=properties[f"{p}reference:content_sha256"],
            mse=float(properties[f"{p}reference:mse"]),
            violation_precision=_float_or_none(get(f"{p}reference:violation_precision")),
            violation_recall=_float_or_none(get(f"{p}reference:violation_recall")),
        )
    return RegistryLineage(
        manifest_uri=properties[names.MANIFEST_URI_METADATA_KEY],
        model_id=properties[f"{p}model_id"],
        version=properties[f"{p}version"],
        use_case=get(f"{p}use_case", ""),
        line_ids=get(f"{p}line_ids", "").split(),
        format_version=int(get(f"{p}format_version", "1")),
        family=get(f"{p}family", ""),
        feature_schema_hash=get(f"{p}feature_schema_hash", ""),
        tiers=tiers,
        training_start=datetime.fromisoformat(properties[f"{p}training_start"]),
        training_end=datetime.fromisoformat(properties[f"{p}training_end"]),
        training_data_sha256=properties[f"{p}training_data_sha256"],
        metrics=_parse_metrics(properties),
        template=get(f"{p}template"),
        code_version=get(f"{p}code_version"),
        cv_rmse=_float_or_none(get(f"{p}cv_rmse")),
        data_start=_datetime_or_none(get(f"{p}data_start")),
        data_end=_datetime_or_none(get(f"{p}data_end")),
        data_sha256=get(f"{p}data_sha256"),
        reference=reference,
        signed=_bool_or_none(get(SIGNED_METADATA_KEY)),
    )


def _parse_metrics(properties: dict[str, str]) -> ModelMetrics:
    p = f"{METADATA_PREFIX}metric:"
    per_class: dict[str, dict[str, float]] = {"precision": {}, "recall": {}}
    for key, value in properties.items():
        for kind, values in per_class.items():
            if key.startswith(f"{p}{kind}:"):
                values[key.removeprefix(f"{p}{kind}:")] = float(value)
    return ModelMetrics(
        mse=float(properties[f"{p}mse"]),
        mae=float(properties[f"{p}mae"]),
        n_train=int(properties[f"{p}n_train"]),
        n_test=int(properties[f"{p}n_test"]),
        **per_class,
    )


def _float_or_none(text: str | None) -> float | None:
    return None if text is None else float(text)


def _bool_or_none(text: str | None) -> bool | None:
    if text is None:
        return None
    if text not in ("true", "false"):
        raise ValueError(f"{SIGNED_METADATA_KEY}={text!r} is neither 'true' nor 'false'")
    return text == "true"


def _datetime_or_none(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def check_metadata(properties: dict[str, str]) -> None:
    if len(properties) > METADATA_ENTRIES_MAX:
        raise ValueError(f"{len(properties)} metadata properties exceed SageMaker's {METADATA_ENTRIES_MAX}")
    for key, value in properties.items():
        if not (1 <= len(key) <= METADATA_KEY_MAX) or not _metadata_text(key):
            raise ValueError(
                f"metadata key {key!r} breaks SageMaker's rule (1-{METADATA_KEY_MAX} chars of {METADATA_PATTERN})"
            )
        if not isinstance(value, str) or len(value) > METADATA_VALUE_MAX or not _metadata_text(value):
            raise ValueError(
                f"metadata {key}={value!r} breaks SageMaker's rule "
                f"(<= {METADATA_VALUE_MAX} chars of {METADATA_PATTERN})"
            )


def _metadata_text(text: str) -> bool:
    """Letters, separators (spaces), numbers and _.:/=+-@ only."""
    return all(unicodedata.category(c)[0] in "LZN" or c in METADATA_PUNCTUATION for c in text)


# --- registration --------------------------------------------------------------------------------


def upload_artifacts(exported: ExportedModel, model_bucket: str) -> str:
    """Payloads first, manifest last: a manifest never points at a payload that is not there yet."""
    s3 = aws.client("s3")
    manifest = exported.manifest
    for tier in manifest.tiers:
        s3.put_object(
            Bucket=model_bucket,
            Key=tier.payload_key,
            Body=exported.payloads[tier.precision],
            ContentType="application/octet-stream",
            Metadata={"sha256": tier.sha256},
        )
    key = manifest_key(manifest.model_id, manifest.version)
    body = manifest.model_dump_json(indent=2).encode()
    s3.put_object(Bucket=model_bucket, Key=key, Body=body, ContentType="application/json")
    return s3_uri(model_bucket, key)


def ensure_model_package_group(group_name: str, description: str) -> None:
    sagemaker = aws.client("sagemaker")
    try:
        sagemaker.describe_model_package_group(ModelPackageGroupName=group_name)
        return
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
            raise
    sagemaker.create_model_package_group(ModelPackageGroupName=group_name, ModelPackageGroupDescription=description)


class ValidationFailed(RuntimeError):
    """The evaluate step did not pass the candidate: it must not reach the registry."""


def register_model(
    exported: ExportedModel,
    *,
    model_bucket: str,
    dataset: DatasetInfo | None = None,
    evaluation: EvaluationReport | None = None,
) -> str:
    """Upload the artifacts and create a PendingManualApproval model package; returns its ARN.

    With `evaluation`, a candidate that failed validation is refused before anything is uploaded."""
    manifest = exported.manifest
    if evaluation is not None:
        check_evaluation(evaluation, manifest.line_ids)
    if len(manifest.line_ids) != 1:
        raise ValueError(f"line_ids={manifest.line_ids}: a model package group holds one line's models")
    group_name = names.model_package_group_name(manifest.use_case, manifest.line_ids[0])
    manifest_uri = upload_artifacts(exported, model_bucket)
    ensure_model_package_group(group_name, f"{manifest.use_case} models of line {manifest.line_ids[0]}")
    sagemaker = aws.client("sagemaker")
    # the exact tier is what a SageMaker endpoint would serve, whatever order the tiers were listed in
    primary = manifest.tier(Precision.FP32)
    response = sagemaker.create_model_package(
        ModelPackageGroupName=group_name,
        ModelPackageDescription=f"{manifest.model_id} {manifest.version} ({manifest.target})",
        InferenceSpecification={
            "Containers": [
                {
                    "Image": xgboost_image_uri(sagemaker.meta.region_name),
                    "ModelDataUrl": s3_uri(model_bucket, primary.payload_key),
                    "Framework": "XGBOOST",
                }
            ],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties=metadata_properties(manifest, manifest_uri, dataset=dataset, evaluation=evaluation),
    )
    return response["ModelPackageArn"]


def check_evaluation(evaluation: EvaluationReport, line_ids: list[str]) -> None:
    if evaluation.line_id not in line_ids:
        raise ValueError(f"evaluation line_id={evaluation.line_id!r} is not the model's line_ids={line_ids}")
    if not evaluation.passed:
        raise ValidationFailed(f"line {evaluation.line_id}: validation failed, not registering: {evaluation.reason}")


def next_version(group_name: str) -> str:
    """One patch above the highest edgeloop:version registered in the group (1.0.0 for a new group)."""
    sagemaker = aws.client("sagemaker")
    versions: list[str] = []
    request: dict[str, Any] = {"ModelPackageGroupName": group_name}
    try:
        while True:
            page = sagemaker.list_model_packages(**request)
            for summary in page.get("ModelPackageSummaryList", []):
                package = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
                version = (package.get("CustomerMetadataProperties") or {}).get(f"{METADATA_PREFIX}version")
                if version:
                    versions.append(version)
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
            raise
    if not versions:
        return "1.0.0"
    major, minor, patch = max(semver_key(v) for v in versions)
    return f"{major}.{minor}.{patch + 1}"


@cache
def code_version() -> str:
    """The git commit of this checkout, else the installed package's version: recorded with every model."""
    checkout = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            return commit
    except (OSError, subprocess.SubprocessError):
        pass  # no git or not a checkout (a container image): the package version still says something
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(names.PROJECT)
    except PackageNotFoundError:
        return "unknown"


def approve_model(model_package_arn: str, *, description: str = "approved by edgeloop") -> dict[str, Any]:
    """Set Approved and return the EventBridge event AWS emits for that change.

    UpdateModelPackage is given the current CustomerMetadataProperties back: moto blanks fields an
    update omits, and passing them unchanged is a no-op on AWS.
    """
    sagemaker = aws.client("sagemaker")
    current = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
    update: dict[str, Any] = {
        "ModelPackageArn": model_package_arn,
        "ModelApprovalStatus": "Approved",
        "ApprovalDescription": description,
    }
    if current.get("CustomerMetadataProperties"):
        update["CustomerMetadataProperties"] = current["CustomerMetadataProperties"]
    sagemaker.update_model_package(**update)
    approved = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
    if approved.get("CustomerMetadataProperties") != current.get("CustomerMetadataProperties"):
        raise RuntimeError(f"approving {model_package_arn} changed its CustomerMetadataProperties")
    return approval_event(approved)


def approval_event(package: dict[str, Any]) -> dict[str, Any]:
    """The "SageMaker Model Package State Change" event for a described model package."""
    arn = package["ModelPackageArn"]
    _, _, _, region, account, _ = arn.split(":", 5)
    detail = {
        "ModelPackageGroupName": package.get("ModelPackageGroupName"),
        "ModelPackageVersion": package.get("ModelPackageVersion"),
        "ModelPackageArn": arn,
        "ModelPackageName": package.get("ModelPackageName"),
        "CreationTime": _epoch_ms(package.get("CreationTime")),
        "InferenceSpecification": package.get("InferenceSpecification"),
        "ModelPackageStatus": package.get("ModelPackageStatus"),
        "ModelApprovalStatus": package["ModelApprovalStatus"],
        "ApprovalDescription": package.get("ApprovalDescription"),
        "CustomerMetadataProperties": dict(package.get("CustomerMetadataProperties") or {}),
    }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": APPROVAL_EVENT_DETAIL_TYPE,
        "source": APPROVAL_EVENT_SOURCE,
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [arn],
        "detail": detail,
    }


def _epoch_ms(value: Any) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return value


def load_manifest(manifest_uri: str) -> ModelManifest:
    """Read a ModelManifest back from s3://bucket/models/<model_id>/<version>/manifest.json."""
    bucket, key = parse_s3_uri(manifest_uri)
    body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return ModelManifest.model_validate_json(body)


class SigningKeyUnavailable(ValueError):
    """The configured signing-key secret cannot be read or does not hold an Ed25519 PEM private key."""


def signing_key_for(source: str | Path | None, secret_arn: str | None = None) -> Ed25519PrivateKey | None:
    """The key payloads are signed with: an explicit key (PEM path or text) wins over a Secrets Manager
    secret. Without either the payloads go out unsigned: the gateways decide (one configured with a
    public key refuses them), so that is said loudly."""
    if source:
        if secret_arn:
            _warn(f"--signing-key is given: the signing key secret {secret_arn} is not read")
        return load_private_key(source)
    if secret_arn:
        return signing_key_from_secret(secret_arn)
    _warn(
        f"no signing key (--signing-key / ${names.MODEL_SIGNING_KEY_ENV} or --signing-key-secret-arn / "
        f"${names.MODEL_SIGNING_KEY_SECRET_ARN_ENV}): registering UNSIGNED payloads "
        f"(metadata {SIGNED_METADATA_KEY}=false), which gateways configured with a public key will reject"
    )
    return None


def signing_key_from_secret(secret_arn: str) -> Ed25519PrivateKey:
    """The Ed25519 private key held as PEM text in a secret's SecretString. Errors name the ARN, never
    the secret's content."""
    if not SECRET_ARN_PATTERN.match(secret_arn):
        raise SigningKeyUnavailable(
            f"signing_key_secret_arn={secret_arn!r} is not a Secrets Manager secret ARN "
            "(arn:aws:secretsmanager:<region>:<account>:secret:<name>-<suffix>)"
        )
    try:
        response = aws.client("secretsmanager").get_secret_value(SecretId=secret_arn)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SigningKeyUnavailable(
            f"signing_key_secret_arn={secret_arn!r} cannot be read: {error.get('Code')}: {error.get('Message')}"
        ) from None
    pem = response.get("SecretString")
    if not pem:
        raise SigningKeyUnavailable(
            f"signing_key_secret_arn={secret_arn!r} has no SecretString (a binary secret?): "
            "store the PKCS#8 PEM private key as the secret's text"
        )
    if "-----BEGIN" not in pem:
        raise SigningKeyUnavailable(
            f"signing_key_secret_arn={secret_arn!r}: its SecretString is not PEM text (no '-----BEGIN' line)"
        )
    try:
        # bytes, never str: a str without a PEM header would be taken for a file path
        return load_private_key(pem.encode())
    except ValueError as exc:
        raise SigningKeyUnavailable(f"signing_key_secret_arn={secret_arn!r}: {exc}") from None


def _warn(message: str) -> None:
    # stderr is the processing job's CloudWatch log stream
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Export + register step: <trained>/<line_id>/ (from train.main) -> one model package per line.

    With --dataset and --evaluation (the pipeline's case) only that line is registered, with its data
    lineage, and only if the evaluation passed."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--trained",
        required=True,
        help="directory with one saved trained model per line, or the training job's model.tar.gz (or a "
        "directory holding it)",
    )
    parser.add_argument("--model-bucket", default=os.environ.get(names.MODEL_BUCKET_ENV, names.LOCAL_MODEL_BUCKET))
    parser.add_argument("--use-case", default="extrusion")
    parser.add_argument(
        "--version", default="", help="MAJOR.MINOR.PATCH of this model version (default: next patch in the group)"
    )
    parser.add_argument(
        "--signing-key",
        default=os.environ.get(names.MODEL_SIGNING_KEY_ENV) or None,
        help=f"Ed25519 private key (PEM file path or PEM text) the payloads are signed with "
        f"(default: ${names.MODEL_SIGNING_KEY_ENV})",
    )
    parser.add_argument(
        "--signing-key-secret-arn",
        default=os.environ.get(names.MODEL_SIGNING_KEY_SECRET_ARN_ENV) or None,
        help="ARN of a Secrets Manager secret whose SecretString is that PEM private key, read when "
        f"--signing-key is not given (default: ${names.MODEL_SIGNING_KEY_SECRET_ARN_ENV}; empty: unsigned)",
    )
    parser.add_argument("--dataset", default="", help="dataset step's dataset/ output (dataset.json)")
    parser.add_argument("--evaluation", default="", help="evaluate step's output (evaluation.json)")
    parser.add_argument(
        "--code-version", default="", help="git commit that trained the model (default: this checkout's)"
    )
    parser.add_argument("--approve", action="store_true", help="approve each registered package")
    args = parser.parse_args(argv)
    from .dataset import read_dataset_info
    from .evaluate import read_evaluation, unpack_trained

    dataset = read_dataset_info(args.dataset) if args.dataset else None
    evaluation = read_evaluation(args.evaluation) if args.evaluation else None
    if evaluation is not None and not evaluation.passed:
        # before the signing key is even loaded: nothing of a failed candidate is uploaded
        raise ValidationFailed(f"line {evaluation.line_id}: validation failed, not registering: {evaluation.reason}")
    signing_key = signing_key_for(args.signing_key, args.signing_key_secret_arn)
    config = load_use_case(args.use_case)
    with tempfile.TemporaryDirectory(prefix="edgeloop-trained-") as unpacked:
        trained_dir = unpack_trained(Path(args.trained), Path(unpacked))
        line_dirs = sorted(p for p in trained_dir.iterdir() if p.is_dir())
        if dataset is not None:
            line_dirs = [p for p in line_dirs if p.name == dataset.line_id]
        if not line_dirs:
            only = f" for line_id={dataset.line_id!r}" if dataset else ""
            parser.error(f"--trained {args.trained} holds no per-line model directories{only}")
        arns = register_lines(line_dirs, config, args, signing_key=signing_key, dataset=dataset, evaluation=evaluation)
    print(json.dumps(arns, indent=2))
    return arns


def register_lines(
    line_dirs: list[Path],
    config: UseCaseConfig,
    args: argparse.Namespace,
    *,
    signing_key: Ed25519PrivateKey | None,
    dataset: DatasetInfo | None,
    evaluation: EvaluationReport | None,
) -> dict[str, str]:
    """Export, upload and register each line's saved model (main's parsed `args`); line_id -> package ARN."""
    arns = {}
    for line_dir in line_dirs:
        group = names.model_package_group_name(config.use_case, line_dir.name)
        exported = export_model(
            load_trained(line_dir),
            model_id=f"{config.use_case}-{line_dir.name}",
            version=args.version or next_version(group),
            use_case=config.use_case,
            line_ids=[line_dir.name],
            target=config.target_metric,
            precisions=tuple(config.precisions),
            signing_key=signing_key,
            code_version=args.code_version or code_version(),
        )
        arns[line_dir.name] = register_model(
            exported, model_bucket=args.model_bucket, dataset=dataset, evaluation=evaluation
        )
        if args.approve:
            approve_model(arns[line_dir.name])
    return arns


if __name__ == "__main__":
    main()
