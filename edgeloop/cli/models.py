"""`edgeloop models ...`: the model registry as a data scientist reads it.

Answers come from SageMaker's registry (list/describe of the edgeloop Model Package Groups and their
packages, whose CustomerMetadataProperties carry the lineage) and, for `show`, the model's manifest in S3.
`rollback` is the one write: the signing key's holder authorizes a line's devices to go back to an
older version (schemas/signed_model.RollbackAuthorization) and hands it to the orchestrator.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from edgeloop.schemas import names
from edgeloop.schemas.common import validation_problems

models_app = typer.Typer(no_args_is_help=True, help="Registered models per line: versions, lineage, tiers.")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")


@dataclass(frozen=True)
class PackageRow:
    group: str
    package_version: int
    model_version: str
    template: str
    status: str
    mse: float | None
    created: datetime | None
    arn: str


def _sagemaker():
    from edgeloop.cloud import aws

    return aws.client("sagemaker")


def _paged(method, key: str, **request) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = method(**request)
        items += page.get(key, [])
        if not page.get("NextToken"):
            return items
        request["NextToken"] = page["NextToken"]


def group_names(use_case: str | None = None, line_id: str | None = None) -> list[str]:
    """edgeloop Model Package Groups, narrowed to a use case and/or line."""
    prefix = f"{names.MODEL_PACKAGE_GROUP_PREFIX}-"
    groups = _paged(_sagemaker().list_model_package_groups, "ModelPackageGroupSummaryList", NameContains=prefix)
    found = sorted(g["ModelPackageGroupName"] for g in groups if g["ModelPackageGroupName"].startswith(prefix))
    if use_case and line_id:
        return [g for g in found if g == names.model_package_group_name(use_case, line_id)]
    if use_case:
        return [g for g in found if g.startswith(f"{prefix}{use_case.replace('_', '-')}-")]
    if line_id:
        return [g for g in found if g.endswith(f"-{line_id.replace('_', '-')}")]
    return found


def package_rows(
    use_case: str | None = None, line_id: str | None = None, status: str | None = None
) -> list[PackageRow]:
    from edgeloop.sagemaker_pipelines.steps.lineage import METADATA_PREFIX

    if status is not None and status not in APPROVAL_STATUSES:
        raise ValueError(f"--status {status!r} is not one of {list(APPROVAL_STATUSES)}")
    sagemaker = _sagemaker()
    rows = []
    for group in group_names(use_case, line_id):
        request = {"ModelPackageGroupName": group, **({"ModelApprovalStatus": status} if status else {})}
        for summary in _paged(sagemaker.list_model_packages, "ModelPackageSummaryList", **request):
            package = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            metadata = package.get("CustomerMetadataProperties") or {}
            mse = metadata.get(f"{METADATA_PREFIX}metric:mse")
            rows.append(
                PackageRow(
                    group=group,
                    package_version=int(package.get("ModelPackageVersion") or 0),
                    model_version=metadata.get(f"{METADATA_PREFIX}version", "-"),
                    template=metadata.get(f"{METADATA_PREFIX}template", "-"),
                    status=package.get("ModelApprovalStatus", "-"),
                    mse=float(mse) if mse is not None else None,
                    created=package.get("CreationTime"),
                    arn=package["ModelPackageArn"],
                )
            )
    return sorted(rows, key=lambda r: (r.group, r.package_version))


def resolve_package(reference: str) -> dict[str, Any]:
    """A described package from its ARN, or GROUP/N (package version) or GROUP/MAJOR.MINOR.PATCH."""
    from edgeloop.sagemaker_pipelines.steps.lineage import METADATA_PREFIX

    sagemaker = _sagemaker()
    if reference.startswith("arn:"):
        return sagemaker.describe_model_package(ModelPackageName=reference)
    group, sep, version = reference.rpartition("/")
    if not sep or not group or not version:
        raise ValueError(f"package {reference!r} is neither an ARN nor GROUP/VERSION")
    for summary in _paged(sagemaker.list_model_packages, "ModelPackageSummaryList", ModelPackageGroupName=group):
        package = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        model_version = (package.get("CustomerMetadataProperties") or {}).get(f"{METADATA_PREFIX}version")
        if version in (str(package.get("ModelPackageVersion")), model_version):
            return package
    raise ValueError(f"package {reference!r}: group {group!r} has no version {version!r}")


def package_details(reference: str):
    """(described package, RegistryLineage, ModelManifest) of one model package."""
    from edgeloop.cloud.model_registry import load_manifest
    from edgeloop.sagemaker_pipelines.steps.lineage import parse_lineage

    package = resolve_package(reference)
    lineage = parse_lineage(package.get("CustomerMetadataProperties") or {})
    return package, lineage, load_manifest(lineage.manifest_uri)


# --- commands ------------------------------------------------------------------------------------


@models_app.command("list")
def list_models(
    use_case: str = typer.Option(None, "--use-case", help="only this use case's groups"),
    use_case_file: Path = typer.Option(
        None, "--use-case-file", dir_okay=False, help="only the groups of this use-case file's use_case"
    ),
    line: str = typer.Option(None, "--line", help="only this line's group"),
    status: str = typer.Option(None, "--status", help=f"one of {', '.join(APPROVAL_STATUSES)}"),
) -> None:
    """Model package versions per line: version, template, approval status, MSE, created."""
    if use_case_file is not None:  # a filter: neither option lists every use case (no environment fallback)
        from edgeloop.cli.use_case import cli_use_case

        use_case = cli_use_case(use_case, use_case_file).use_case
    try:
        rows = package_rows(use_case, line, status)
    except ValueError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    table = Table(title="Registered models (SageMaker Model Package Groups)")
    for column in ("group", "#", "version", "template", "status", "MSE", "created"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.group,
            str(row.package_version),
            row.model_version,
            row.template,
            row.status,
            f"{row.mse:.6g}" if row.mse is not None else "-",
            row.created.isoformat(timespec="seconds") if isinstance(row.created, datetime) else "-",
        )
    console.print(table)
    if not rows:
        console.print("no model packages found")


@models_app.command("show")
def show_model(
    reference: str = typer.Argument(..., help="package ARN, or GROUP/N, or GROUP/MAJOR.MINOR.PATCH"),
) -> None:
    """A model version's whole lineage: data, code, parameters, metrics and tiers."""
    try:
        package, lineage, manifest = package_details(reference)
    except ValueError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    summary = Table(title=f"{manifest.model_id} {manifest.version}", show_header=False)
    summary.add_column("field")
    summary.add_column("value")
    for field, value in _summary_fields(package, lineage, manifest):
        summary.add_row(field, value)
    console.print(summary)
    tiers = Table(title="Compatibility tiers")
    for column in ("precision", "architectures", "min runtime", "bytes", "max abs error", "sha256", "signed"):
        tiers.add_column(column)
    for tier in manifest.tiers:
        tiers.add_row(
            tier.precision.value,
            " ".join(a.value for a in tier.architectures),
            tier.min_runtime_version,
            f"{tier.payload_bytes:,}",
            f"{tier.max_abs_error:.3g}",
            tier.sha256,
            "yes" if tier.signature else "no",
        )
    console.print(tiers)


def _summary_fields(package: dict[str, Any], lineage, manifest) -> list[tuple[str, str]]:
    metrics = manifest.metrics
    reference = lineage.reference
    per_class = lambda values: " ".join(f"{k}={v:.3f}" for k, v in sorted(values.items())) or "-"  # noqa: E731
    return [
        ("package", package["ModelPackageArn"]),
        ("status", package.get("ModelApprovalStatus", "-")),
        ("use case / lines", f"{manifest.use_case} / {' '.join(manifest.line_ids)}"),
        ("family / template", f"{manifest.family.value} / {manifest.template.value if manifest.template else '-'}"),
        ("hyperparameters", " ".join(f"{k}={v}" for k, v in sorted(manifest.hyperparameters.items())) or "-"),
        ("cv RMSE", f"{manifest.cv_rmse:.6g}" if manifest.cv_rmse is not None else "-"),
        ("code version", manifest.code_version or lineage.code_version or "-"),
        ("data range", f"{_iso(lineage.data_start)} .. {_iso(lineage.data_end)}"),
        ("data sha256", lineage.data_sha256 or "-"),
        ("training range", f"{_iso(manifest.training_start)} .. {_iso(manifest.training_end)}"),
        ("training data sha256", manifest.training_data_sha256),
        (
            "test MSE / MAE",
            f"{metrics.mse:.6g} / {metrics.mae:.6g} (n_train={metrics.n_train}, n_test={metrics.n_test})",
        ),
        ("decision", _decision_text(manifest, reference)),
        ("precision", per_class(metrics.precision)),
        ("recall", per_class(metrics.recall)),
        (
            "reference data",
            f"{reference.rows} rows, MSE {reference.mse:.6g}, violation recall "
            f"{'-' if reference.violation_recall is None else f'{reference.violation_recall:.3f}'}, "
            f"sha256 {reference.content_sha256}"
            if reference
            else "-",
        ),
        ("model vs baselines", _baselines_text(reference)),
        ("features", f"{len(manifest.features)} (schema {manifest.feature_schema_hash})"),
        ("manifest", lineage.manifest_uri),
        ("created", _iso(manifest.created_at)),
    ]


def _baselines_text(reference) -> str:
    """The reference RMSE and violation F1 of the model, persistence and the setpoint, and the gate's verdict."""
    if reference is None or reference.persistence_rmse is None:
        return "-"  # registered before evaluations carried baselines

    def figures(rmse: float | None, f1: float | None) -> str:
        return f"RMSE {'-' if rmse is None else f'{rmse:.6g}'} F1 {'-' if f1 is None else f'{f1:.3f}'}"

    return (
        f"model {figures(reference.mse**0.5, reference.violation_f1)} | "
        f"persistence {figures(reference.persistence_rmse, reference.persistence_violation_f1)} | "
        f"setpoint {figures(reference.setpoint_rmse, reference.setpoint_violation_f1)} | gate {reference.gate or '-'}"
    )


def _decision_text(manifest, reference) -> str:
    """The label mode and the violation decision margin the gateway decides at, with the reference figures
    at that margin."""
    text = f"{manifest.label_mode.value} labels, violation margin {manifest.decision_margin:g} x half spec band"
    if reference is None or reference.violation_recall is None:
        return text
    precision = "-" if reference.violation_precision is None else f"{reference.violation_precision:.3f}"
    return f"{text} (reference violation precision {precision}, recall {reference.violation_recall:.3f})"


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "-"


# --- signed rollback -------------------------------------------------------------------------------


@models_app.command("rollback")
def rollback_model(
    line: str = typer.Option(..., "--line", help="the line whose devices go back"),
    to_version: str = typer.Option(..., "--to-version", help="the version to go back to, MAJOR.MINOR.PATCH"),
    use_case: str = typer.Option(None, "--use-case", help="the line's use case (or --use-case-file)"),
    use_case_file: Path = typer.Option(
        None, "--use-case-file", dir_okay=False, help="the line's use case as a file anywhere, instead of --use-case"
    ),
    signing_key: str = typer.Option(
        None,
        "--signing-key",
        envvar=names.MODEL_SIGNING_KEY_ENV,
        help="the model signing key: a PKCS#8 PEM file (the register step's key; the fleet holds none)",
    ),
    deployment: str = typer.Option(
        None, "--deployment", help="the deployment rolled back (default: the line's newest started deployment)"
    ),
    deployment_table: str = typer.Option(
        names.LOCAL_DEPLOYMENT_TABLE,
        "--deployment-table",
        envvar=names.DEPLOYMENT_TABLE_ENV,
        help="the deployment table",
    ),
    function: str = typer.Option(
        None,
        "--function",
        help="the orchestrator Lambda to hand the rollback to (default: deliver it from this process, with the "
        "rollout functions' EDGELOOP_* settings, e.g. the local runtime's)",
    ),
    output: Path = typer.Option(None, "--output", help="also write the signed rollback (JSON) to this file"),
    sign_only: bool = typer.Option(False, "--sign-only", help="sign and print it, deliver nothing"),
) -> None:
    """Sign a rollback of the line's deployment to an older version and have the orchestrator deliver it.

    Devices with a signing public key refuse any older version without it; they accept it only for the
    deployment they run, and each only once (issued_at_ms).
    """
    from edgeloop.cli.use_case import cli_use_case

    use_case = cli_use_case(use_case, use_case_file).use_case  # neither: $EDGELOOP_USE_CASE[_FILE]; no default
    try:
        key = _signing_key(signing_key)
        signed = sign_line_rollback(
            key, use_case=use_case, line_id=line, to_version=to_version, deployment_id=deployment,
            deployment_table=deployment_table,
        )  # fmt: skip
    except ValueError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    text = signed.model_dump_json(indent=2)
    if output is not None:
        output.write_text(text + "\n")
    console.print(text, markup=False, highlight=False)
    if not sign_only:
        _deliver_or_exit(signed, function)


def _deliver_or_exit(signed, function: str | None) -> None:
    """Deliver the signed rollback and print the orchestrator's answer; exit 1 when it was not
    delivered or the orchestrator refused it."""
    try:
        result = deliver_rollback(signed, function=function)
    except (ValueError, RuntimeError) as exc:
        errors.print(f"[red]rollback not delivered: {exc}[/]")
        raise typer.Exit(1) from None
    console.print(json.dumps(result, indent=2), markup=False, highlight=False)
    if "refused" in result:
        raise typer.Exit(1)


def _signing_key(source: str | None):
    from edgeloop.model_runtime.signing import load_private_key

    if not source:
        raise ValueError(
            f"no signing key: --signing-key FILE (or {names.MODEL_SIGNING_KEY_ENV}) is required; a rollback must be "
            f"signed by the model signing key's holder, devices with its public key refuse an unsigned downgrade"
        )
    return load_private_key(Path(source) if "-----BEGIN" not in source else source)


def sign_line_rollback(
    key, *, use_case: str, line_id: str, to_version: str, deployment_id: str | None, deployment_table: str
):
    """The SignedRollback of `deployment_id` (default: the line's newest) back to `to_version`."""
    from edgeloop.cloud.fleet.deployments import DeploymentTable
    from edgeloop.functions.orchestrator.rollback import latest_deployment_of_line, updates_of_version
    from edgeloop.model_runtime.signing import sign_rollback
    from edgeloop.schemas.signed_model import RollbackAuthorization

    stored = DeploymentTable(deployment_table).scan_stored()
    if deployment_id is None:
        record = latest_deployment_of_line(stored, use_case, line_id)
        if record is None:
            raise ValueError(
                f"--line {line_id!r}: no started deployment of use case {use_case!r} in {deployment_table}"
            )
    else:
        record = next((s.record for s in stored if s.record.deployment_id == deployment_id), None)
        if record is None:
            raise ValueError(f"--deployment {deployment_id!r} is not in the deployment table {deployment_table}")
    target = updates_of_version(stored, record.model_id, to_version, use_case, line_id)
    if not target:
        raise ValueError(
            f"--to-version {to_version!r}: no rollout delivered {record.model_id} {to_version} to line {line_id!r} "
            f"(nothing to go back to)"
        )
    try:
        document = RollbackAuthorization(
            model_id=target[0].model_id,
            use_case=use_case,
            line_id=line_id,
            to_version=to_version,
            rolls_back_deployment_id=record.deployment_id,
            rolls_back_version=record.model_version,
            issued_at_ms=int(time.time() * 1000),
        )
    except ValidationError as exc:
        raise ValueError(f"rollback of {record.deployment_id!r}: {validation_problems(exc)}") from None
    return sign_rollback(document, key)


def deliver_rollback(signed, *, function: str | None) -> dict[str, Any]:
    """Hand `signed` to the orchestrator Lambda `function`, or deliver it from this process."""
    from edgeloop.functions.orchestrator.rollback import rollback_event

    event = rollback_event(signed)
    if function:
        from edgeloop.cloud import aws

        response = aws.client("lambda").invoke(FunctionName=function, Payload=json.dumps(event).encode())
        body = response["Payload"].read()
        if response.get("FunctionError"):
            raise RuntimeError(f"orchestrator {function} failed: {body[:500].decode(errors='replace')}")
        return json.loads(body)
    from edgeloop.functions.orchestrator.handler import lambda_handler

    return lambda_handler(event, None)
