"""Evaluate step: judge a candidate against the line's champion on the reference dataset.

Both models are scored the way a gateway scores them: the fp32 weight-only payload through the
device scorer (model_runtime/scorer.py), not the training library, beside the trivial baselines
(baselines.py: persistence and the setpoint), all with one metric definition. A model's violations are
decided at its payload's decision margin (chosen on the training folds, train.py), the baselines' at
the spec limits; the report adds the model's operating point on the reference data and its
precision/recall curve over the use case's decision.margins. The candidate's
payload is exported in memory; the champion's (the latest Approved package of the line's Model Package
Group) is read back through its manifest. Gates, in order:
- every prediction is finite;
- recall of violations (LSL and USL together: a violation counts as recalled when predicted as that
  same violation) >= validation.min_recall_violation;
- the persistence gate (baselines.persistence_gate): reference RMSE at least
  validation.min_rmse_gain_vs_persistence below persistence's, violation F1 not below persistence's,
  unless the use case relaxes a part (the report's `gate.relaxed` says which);
- with a comparable champion (same feature schema hash): candidate MSE <= champion MSE x
  validation.max_mse_ratio_vs_champion. Without one the absolute gates decide alone.

The reference dataset holds only packs taken in productive machine states (dataset step): the
metrics and violation rates ignore the others, whose count the report carries
(packs_excluded_non_productive, from dataset.json).

Output: <output>/evaluation.json (EvaluationReport): `passed` and `reason` are the one decision, which
the pipeline's ConditionStep reads (its Fail step carries the reason) and `pipeline run-local` obeys.
"""

from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from botocore.exceptions import ClientError
from pydantic import Field

from edgeloop.cloud import aws
from edgeloop.cloud.model_registry import load_manifest, manifest_uri_of
from edgeloop.cloud.packing.labels import predictable
from edgeloop.model_runtime.scorer import Scorer, load_payload
from edgeloop.schemas import names
from edgeloop.schemas.common import Contract
from edgeloop.schemas.model import ModelManifest, Precision, feature_schema_hash
from edgeloop.schemas.use_case import UseCaseConfig, resolve_use_case

from .artifacts import read_payload
from .baselines import PERSISTENCE, GateResult, ScoredMetrics, persistence_gate, score_baselines, score_predictions
from .dataset import output_file, read_dataset_info, read_examples
from .export import export_model
from .operating_point import OperatingPoint, precision_recall_curve
from .train import (
    TRAINED_INFO_FILE,
    TrainedModel,
    check_examples,
    load_trained,
    training_data_sha256,
)

EVALUATION_FILE = "evaluation.json"
CANDIDATE_VERSION = "0.0.0"  # the in-memory export is never uploaded; its version is a placeholder


__all__ = ["EvaluationReport", "GateResult", "ScoredMetrics", "evaluate_candidate", "judge", "read_evaluation"]


class ReferenceInfo(Contract):
    rows: int = Field(ge=0)
    content_sha256: str


class ChampionInfo(Contract):
    model_package_arn: str
    model_id: str
    version: str
    feature_schema_hash: str


class EvaluationReport(Contract):
    line_id: str
    passed: bool
    reason: str
    candidate: ScoredMetrics
    champion: ScoredMetrics | None = None
    champion_model: ChampionInfo | None = None
    baselines: dict[str, ScoredMetrics] = Field(
        default_factory=dict, description="persistence and setpoint (baselines.py), scored like the candidate"
    )
    gate: GateResult | None = Field(default=None, description="the candidate vs persistence; None: not judged")
    operating_point: OperatingPoint | None = Field(
        default=None,
        description="the candidate's violation precision/recall/F1 on the reference data at its decision margin "
        "(reaches_target: against decision.target_recall_violation); None: reports written before it",
    )
    training_operating_point: OperatingPoint | None = Field(
        default=None, description="the out-of-fold point on the training folds the margin was chosen on"
    )
    pr_curve: list[OperatingPoint] = Field(
        default_factory=list, description="the candidate's operating points on the reference data over decision.margins"
    )
    reference: ReferenceInfo
    dataset_sha256: str | None = None
    packs_excluded_non_productive: int | None = Field(
        default=None,
        ge=0,
        description="packs of the line left out of the reference and training data for a non-productive machine "
        "state (dataset.json); None: not known",
    )


@dataclass(frozen=True)
class Champion:
    arn: str
    manifest: ModelManifest
    scorer: Scorer


# --- scoring -------------------------------------------------------------------------------------


def candidate_scorer(trained: TrainedModel, *, use_case: UseCaseConfig, line_id: str) -> Scorer:
    """The fp32 payload a device would receive, exported in memory (parity-checked by export_model)."""
    exported = export_model(
        trained,
        model_id=f"{use_case.use_case}-{line_id}",
        version=CANDIDATE_VERSION,
        use_case=use_case.use_case,
        line_ids=[line_id],
        target=use_case.target_metric,
        precisions=(Precision.FP32,),
    )
    tier = exported.manifest.tier(Precision.FP32)
    return load_payload(
        exported.payloads[Precision.FP32],
        expected_sha256=tier.sha256,
        expected_feature_schema_hash=exported.manifest.feature_schema_hash,
    )


def score(scorer: Scorer, reference: pd.DataFrame, *, n_train: int, horizon_s: float | None = None) -> ScoredMetrics:
    """A payload's reference metrics, violations decided at the payload's own decision margin."""
    return score_levels(scorer, _levels(scorer, reference), reference, n_train=n_train, horizon_s=horizon_s)


def _levels(scorer: Scorer, reference: pd.DataFrame) -> np.ndarray:
    return scorer.predict(reference[scorer.features].to_numpy(dtype=np.float32))


def score_levels(
    scorer: Scorer, levels: np.ndarray, reference: pd.DataFrame, *, n_train: int, horizon_s: float | None
) -> ScoredMetrics:
    return score_predictions(levels, reference, n_train=n_train, horizon_s=horizon_s, margin=scorer.decision_margin)


def operating_points(
    scorer: Scorer, levels: np.ndarray, reference: pd.DataFrame, config: UseCaseConfig
) -> tuple[OperatingPoint, list[OperatingPoint]]:
    """The candidate's reference point at its own margin, and its reference curve over the use case's margins."""
    point = precision_recall_curve(levels, reference, [scorer.decision_margin])[0]
    target = config.decision.target_recall_violation
    reached = None if point.recall is None else point.recall >= target
    return point.model_copy(update={"reaches_target": reached}), precision_recall_curve(
        levels, reference, config.decision.margins
    )


# --- the champion --------------------------------------------------------------------------------


def latest_approved_package(group_name: str) -> dict[str, Any] | None:
    """The Approved package with the highest version in the group (None: no group or none approved)."""
    sagemaker = aws.client("sagemaker")
    summaries: list[dict[str, Any]] = []
    request: dict[str, Any] = {"ModelPackageGroupName": group_name, "ModelApprovalStatus": "Approved"}
    try:
        while True:
            page = sagemaker.list_model_packages(**request)
            summaries += page.get("ModelPackageSummaryList", [])
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
            return None
        raise
    if not summaries:
        return None
    newest = max(summaries, key=lambda s: s.get("ModelPackageVersion") or 0)
    return sagemaker.describe_model_package(ModelPackageName=newest["ModelPackageArn"])


def load_champion(use_case: UseCaseConfig, line_id: str) -> Champion | None:
    package = latest_approved_package(names.model_package_group_name(use_case.use_case, line_id))
    if package is None:
        return None
    manifest_uri = manifest_uri_of(package)
    manifest = load_manifest(manifest_uri)
    tier = manifest.tier(Precision.FP32)
    scorer = load_payload(
        read_payload(manifest_uri, tier),
        expected_sha256=tier.sha256,
        expected_feature_schema_hash=manifest.feature_schema_hash,
    )
    return Champion(arn=package["ModelPackageArn"], manifest=manifest, scorer=scorer)


# --- the decision --------------------------------------------------------------------------------


def judge(
    candidate: ScoredMetrics,
    champion: ScoredMetrics | None,
    config: UseCaseConfig,
    note: str = "",
    gate: GateResult | None = None,
) -> tuple[bool, str]:
    """(passed, reason); the reason names the numbers that decided (`gate`: the persistence gate's verdict)."""
    gates = config.validation
    if not candidate.finite:
        return False, "candidate predictions are not all finite on the reference data"
    recall = candidate.violation_recall
    if recall is not None and recall < gates.min_recall_violation:
        return False, (
            f"candidate violation recall {recall:.4f} < min_recall_violation {gates.min_recall_violation:.4f}"
        )
    if gate is not None and not gate.passed:
        return False, f"no better than persistence: {gate.reason}"
    recall_text = "no violations in the reference data" if recall is None else f"violation recall {recall:.4f}"
    if gate is not None:
        recall_text = f"{recall_text}; vs persistence: {gate.reason}"
    if champion is None:
        prefix = f"{note}; " if note else "no champion; "
        return True, f"{prefix}candidate MSE {candidate.mse:.6g} (no champion comparison), {recall_text}"
    bound = champion.mse * gates.max_mse_ratio_vs_champion
    comparison = (
        f"candidate MSE {candidate.mse:.6g} {'>' if candidate.mse > bound else '<='} champion MSE "
        f"{champion.mse:.6g} x {gates.max_mse_ratio_vs_champion:g} = {bound:.6g}"
    )
    if candidate.mse > bound:
        return False, comparison
    return True, f"{comparison}; {recall_text}"


def evaluate_candidate(
    trained: TrainedModel, reference: pd.DataFrame, config: UseCaseConfig, *, line_id: str
) -> EvaluationReport:
    check_examples(reference, config)
    # change mode: rows without a current value have no level prediction (the gateway publishes none);
    # the model and the baselines are scored on the same rows
    reference = predictable(reference, config)
    n_train = trained.metrics.n_train
    scorer = candidate_scorer(trained, use_case=config, line_id=line_id)
    levels = _levels(scorer, reference)
    candidate = score_levels(scorer, levels, reference, n_train=n_train, horizon_s=config.horizon_s)
    point, curve = operating_points(scorer, levels, reference, config)
    champion = load_champion(config, line_id)
    champion_metrics, champion_info, note = None, None, ""
    if champion is not None:
        champion_info = ChampionInfo(
            model_package_arn=champion.arn,
            model_id=champion.manifest.model_id,
            version=champion.manifest.version,
            feature_schema_hash=champion.manifest.feature_schema_hash,
        )
        if champion.scorer.feature_schema_hash == candidate_feature_hash(trained):
            champion_metrics = score(
                champion.scorer, reference, n_train=champion.manifest.metrics.n_train, horizon_s=config.horizon_s
            )
        else:
            note = (
                f"champion {champion.manifest.version} ({champion.arn}) has feature schema "
                f"{champion.manifest.feature_schema_hash[:12]}, the candidate {candidate_feature_hash(trained)[:12]}: "
                "comparison skipped"
            )
    baselines = score_baselines(reference, config)
    gate = persistence_gate(candidate, baselines[PERSISTENCE], config) if candidate.finite else None
    passed, reason = judge(candidate, champion_metrics, config, note, gate)
    return EvaluationReport(
        line_id=line_id,
        passed=passed,
        reason=reason,
        candidate=candidate,
        champion=champion_metrics,
        champion_model=champion_info,
        baselines=baselines,
        gate=gate,
        operating_point=point,
        training_operating_point=trained.operating_point,
        pr_curve=curve,
        reference=ReferenceInfo(
            rows=len(reference), content_sha256=training_data_sha256(reference, trained.feature_names)
        ),
    )


def candidate_feature_hash(trained: TrainedModel) -> str:
    return feature_schema_hash(trained.feature_names)


# --- step I/O ------------------------------------------------------------------------------------


MODEL_ARCHIVE = "model.tar.gz"  # what a SageMaker training job makes of its /opt/ml/model


def unpack_trained(model: Path, unpack_to: Path) -> Path:
    """train.main's output directory: `model` itself, or unpacked into `unpack_to` when `model` is the
    training job's model.tar.gz or a directory holding it (a processing input of that S3 object)."""
    archive = model / MODEL_ARCHIVE if model.is_dir() else model
    if archive.is_file() and archive.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(archive) as tar:
                # "data": no absolute paths, links out of the tree or device files from the archive
                tar.extractall(unpack_to, filter="data")
        except tarfile.TarError as exc:
            raise ValueError(f"{archive}: not a readable model archive ({exc})") from None
        return unpack_to
    if not model.is_dir():
        raise FileNotFoundError(f"{model}: neither a directory nor a {MODEL_ARCHIVE}")
    return model


def line_model_dir(model_dir: Path, line_id: str, unpack_to: Path) -> Path:
    """The saved model of `line_id` under train.main's output, also when SageMaker packed it as model.tar.gz."""
    model_dir = unpack_trained(model_dir, unpack_to)
    for candidate in (model_dir / line_id, model_dir):
        if (candidate / TRAINED_INFO_FILE).exists():
            return candidate
    raise FileNotFoundError(f"--model {model_dir}: no saved model for line_id={line_id!r} (expected {line_id}/)")


def read_evaluation(directory: str | Path) -> EvaluationReport:
    return EvaluationReport.model_validate_json(output_file(directory, EVALUATION_FILE, "--evaluation").read_text())


def main(argv: list[str] | None = None) -> EvaluationReport:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="train step output (<line_id>/ per line, or model.tar.gz)")
    parser.add_argument("--reference", required=True, help="dataset step's reference/ output")
    parser.add_argument("--dataset", required=True, help="dataset step's dataset/ output")
    parser.add_argument("--use-case", default=None, help="a packaged use case (or $EDGELOOP_USE_CASE)")
    parser.add_argument("--use-case-file", default=None, help="a use-case file (or $EDGELOOP_USE_CASE_FILE)")
    parser.add_argument(
        "--model-bucket",
        default=os.environ.get(names.MODEL_BUCKET_ENV, names.LOCAL_MODEL_BUCKET),
        help="the model bucket (the champion is read from the bucket its registered manifest URI names)",
    )
    parser.add_argument("--output", default="/opt/ml/processing/evaluation")
    args = parser.parse_args(argv)
    info = read_dataset_info(args.dataset)
    config = resolve_use_case(args.use_case, args.use_case_file)
    if info.use_case != config.use_case:
        parser.error(f"--use-case {config.use_case!r} differs from the dataset's use_case={info.use_case!r}")
    with tempfile.TemporaryDirectory(prefix="edgeloop-model-") as unpacked:
        trained = load_trained(line_model_dir(Path(args.model), info.line_id, Path(unpacked)))
    report = evaluate_candidate(trained, read_examples(args.reference), config, line_id=info.line_id)
    report = report.model_copy(
        update={
            "dataset_sha256": info.content_sha256,
            "packs_excluded_non_productive": info.packs_excluded_non_productive,
        }
    )
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / EVALUATION_FILE).write_text(report.model_dump_json(indent=2))
    left_out = f" ({info.packs_excluded_non_productive} packs in non-productive states left out)"
    print(f"{info.line_id}: {'passed' if report.passed else 'FAILED'}: {report.reason}{left_out}")
    print(f"{info.line_id}: {side_by_side(report)}")
    return report


def side_by_side(report: EvaluationReport) -> str:
    """The candidate (at its decision margin) and the baselines (at the limits) on the reference data, in one line."""

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def figures(name: str, metrics: ScoredMetrics) -> str:
        lead = "-" if metrics.lead_time_median_s is None else f"{metrics.lead_time_median_s:.0f} s"
        rmse = metrics.rmse if metrics.rmse is not None else metrics.mse**0.5
        return (
            f"{name} RMSE {rmse:.6g} violation P {ratio(metrics.violation_precision)} "
            f"R {ratio(metrics.violation_recall)} F1 {ratio(metrics.violation_f1)} lead {lead}"
        )

    point = report.operating_point
    model = "model" if point is None else f"model (margin {point.margin:g})"
    return " | ".join(figures(n, m) for n, m in {model: report.candidate, **report.baselines}.items())


if __name__ == "__main__":
    main()
