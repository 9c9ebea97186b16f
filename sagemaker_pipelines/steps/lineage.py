"""A model version's lineage in the registry: the CustomerMetadataProperties of its model package.

The package carries a compact, searchable summary (manifest location, version, feature schema,
per-tier hardware compatibility, the data, code and evaluation it came from) under `edgeloop:` keys;
the manifest itself stays the full record. `lineage_properties` writes a RegistryLineage within
SageMaker's limits on those properties, `parse_lineage` reads it back.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import unicodedata
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from edgeloop.schemas import names
from edgeloop.schemas.common import Contract
from edgeloop.schemas.model import Architecture, ModelManifest, ModelMetrics, Precision

if TYPE_CHECKING:  # the step reports are only read here
    from .dataset import DatasetInfo
    from .evaluate import EvaluationReport

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


class TierSummary(Contract):
    precision: Precision
    architectures: list[Architecture]
    min_runtime_version: str
    sha256: str


# The baselines' figures share one property (SageMaker allows 50): "persistence:rmse=0.1 setpoint:rmse=0.2 ..."
BASELINE_FIGURES = ("persistence_rmse", "persistence_violation_f1", "setpoint_rmse", "setpoint_violation_f1")


class ReferenceSummary(Contract):
    """How the candidate and the baselines (persistence, setpoint) scored on the reference dataset in the
    evaluate step, and the persistence gate's verdict ("passed", or "passed relaxed:<part> ...")."""

    rows: int
    content_sha256: str
    mse: float
    violation_precision: float | None = None
    violation_recall: float | None = None
    violation_f1: float | None = None
    persistence_rmse: float | None = None
    persistence_violation_f1: float | None = None
    setpoint_rmse: float | None = None
    setpoint_violation_f1: float | None = None
    gate: str | None = None


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
    # what the payload's model predicts and its violation decision margin (decision.py); one property
    # "label_mode=change margin=0.15"; None: registered before it
    label_mode: str | None = None
    decision_margin: float | None = None


def lineage_of(
    manifest: ModelManifest,
    manifest_uri: str,
    *,
    dataset: DatasetInfo | None = None,
    evaluation: EvaluationReport | None = None,
) -> RegistryLineage:
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
        reference=reference_summary(evaluation) if evaluation is not None else None,
        signed=all(t.signature for t in manifest.tiers),
        label_mode=manifest.label_mode.value,
        decision_margin=manifest.decision_margin,
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
    if lineage.label_mode is not None and lineage.decision_margin is not None:
        optional["decision"] = f"label_mode={lineage.label_mode} margin={_text(lineage.decision_margin)}"
    if lineage.reference is not None:
        optional.update(_reference_properties(lineage.reference))
    properties.update({f"{p}{k}": _text(v) for k, v in optional.items() if v is not None})
    return properties


def _metrics_properties(metrics: ModelMetrics) -> dict[str, str]:
    p = f"{METADATA_PREFIX}metric:"
    properties = {f"{p}{k}": _text(getattr(metrics, k)) for k in ("mse", "mae", "n_train", "n_test")}
    for kind in ("precision", "recall"):
        properties.update({f"{p}{kind}:{cls}": _text(v) for cls, v in getattr(metrics, kind).items()})
    return properties


def reference_summary(evaluation: EvaluationReport) -> ReferenceSummary:
    baselines = {
        f"{name}_{figure}": getattr(metrics, figure)
        for name, metrics in evaluation.baselines.items()
        for figure in ("rmse", "violation_f1")
        if f"{name}_{figure}" in BASELINE_FIGURES
    }
    gate = evaluation.gate
    verdict = (
        None
        if gate is None
        else " ".join(["passed" if gate.passed else "failed", *(f"relaxed:{r}" for r in gate.relaxed)])
    )
    return ReferenceSummary(
        rows=evaluation.reference.rows,
        content_sha256=evaluation.reference.content_sha256,
        mse=evaluation.candidate.mse,
        violation_precision=evaluation.candidate.violation_precision,
        violation_recall=evaluation.candidate.violation_recall,
        violation_f1=evaluation.candidate.violation_f1,
        gate=verdict,
        **baselines,
    )


def _reference_properties(reference: ReferenceSummary) -> dict[str, float | int | str | None]:
    figures = reference.model_dump(include=set(BASELINE_FIGURES))
    packed = " ".join(f"{k.replace('_', ':', 1)}={_text(v)}" for k, v in figures.items() if v is not None)
    return {
        **{f"reference:{k}": v for k, v in reference.model_dump(exclude=set(BASELINE_FIGURES)).items()},
        "reference:baselines": packed or None,
    }


def _parse_baselines(text: str | None) -> dict[str, float]:
    """`reference:baselines` back to ReferenceSummary fields ("persistence:rmse=0.1" -> persistence_rmse)."""
    figures = {}
    for item in (text or "").split():
        key, _, value = item.partition("=")
        name = key.replace(":", "_", 1)
        if name in BASELINE_FIGURES:
            figures[name] = float(value)
    return figures


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
            violation_f1=_float_or_none(get(f"{p}reference:violation_f1")),
            gate=get(f"{p}reference:gate"),
            **_parse_baselines(get(f"{p}reference:baselines")),
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
        **_parse_decision(get(f"{p}decision")),
    )


def _parse_decision(text: str | None) -> dict[str, str | float]:
    """`decision` ("label_mode=change margin=0.15") back to RegistryLineage's label_mode and decision_margin."""
    items = dict(item.partition("=")[::2] for item in (text or "").split())
    if not items:
        return {}
    if set(items) != {"label_mode", "margin"}:
        raise ValueError(f"{METADATA_PREFIX}decision={text!r}: expected 'label_mode=<mode> margin=<number>'")
    return {"label_mode": items["label_mode"], "decision_margin": float(items["margin"])}


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
    try:
        return importlib.metadata.version(names.PROJECT)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
