"""`edgeloop pipeline ...`: the SageMaker Pipeline definition, deploying it, starting it, running it locally.

The SageMaker SDK takes seconds to import, so nothing here imports it at module level:
`edgeloop --help` stays fast and works without the optional `pipelines` extra.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.use_case import use_case_file_option, use_case_option
from edgeloop.cloud.pipeline_execution import execution_display_name, execution_parameters
from edgeloop.schemas import names

pipeline_app = typer.Typer(
    no_args_is_help=True, help="The SageMaker training pipeline: definition, upsert, start, run-local."
)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


class PipelineCommandError(ValueError):
    """A bad command-line value: the message names the option and the value."""


# --- logic the commands call (plain functions, tested directly) -----------------------------------
def parse_iso_date(option: str, value: str | None) -> date | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PipelineCommandError(f"{option}={value!r} is not an ISO date (YYYY-MM-DD)") from None


def check_model_version(value: str | None) -> None:
    from pydantic import TypeAdapter, ValidationError

    from edgeloop.schemas.common import SemVer

    if value is None:
        return
    try:
        TypeAdapter(SemVer).validate_python(value)
    except ValidationError:
        raise PipelineCommandError(f"--model-version={value!r} is not MAJOR.MINOR.PATCH") from None


def check_date_range(start: date | None, end: date | None) -> None:
    if start and end and end < start:
        raise PipelineCommandError(f"--end={end.isoformat()} is before --start={start.isoformat()}")


def date_range(start: str | None, end: str | None) -> tuple[date | None, date | None]:
    """--start and --end as dates (None: unbounded), the end not before the start."""
    first, last = parse_iso_date("--start", start), parse_iso_date("--end", end)
    check_date_range(first, last)
    return first, last


def upsert_pipeline(*, name: str, definition: str, role_arn: str, description: str) -> tuple[str, bool]:
    """Create the pipeline, or update it if it exists. Returns (pipeline ARN, created?)."""
    from edgeloop.cloud.aws import client

    sagemaker = client("sagemaker")
    if not _pipeline_exists(sagemaker, name):
        response = sagemaker.create_pipeline(
            PipelineName=name,
            PipelineDefinition=definition,
            PipelineDescription=description,
            RoleArn=role_arn,
        )
        return response["PipelineArn"], True
    response = sagemaker.update_pipeline(
        PipelineName=name, PipelineDefinition=definition, PipelineDescription=description, RoleArn=role_arn
    )
    return response["PipelineArn"], False


def _pipeline_exists(sagemaker, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        sagemaker.describe_pipeline(PipelineName=name)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        # SageMaker says ResourceNotFound; moto says ValidationException "Could not find pipeline ...".
        if error.get("Code") == "ResourceNotFound" or "could not find" in error.get("Message", "").lower():
            return False
        raise
    return True


def start_pipeline(*, use_case: str, parameters: list[dict[str, str]], display_name: str) -> str:
    from edgeloop.cloud.aws import client

    sagemaker = client("sagemaker")
    pipeline = names.pipeline_name(use_case)
    if not _pipeline_exists(sagemaker, pipeline):
        raise PipelineCommandError(
            f"--use-case={use_case!r}: pipeline {pipeline!r} does not exist (deploy it: `edgeloop pipeline upsert`)"
        ) from None
    response = sagemaker.start_pipeline_execution(
        PipelineName=pipeline, PipelineParameters=parameters, PipelineExecutionDisplayName=display_name
    )
    return response["PipelineExecutionArn"]


def _use_case(name: str | None, file: Path | None = None):
    """The use case of --use-case / --use-case-file (or their environment variables); no default."""
    from edgeloop.schemas.use_case import UseCaseError, resolve_use_case

    try:
        return resolve_use_case(name, file)
    except UseCaseError as exc:
        raise PipelineCommandError(str(exc)) from None


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    errors.print(f"[red]error:[/] {exc}", highlight=False)
    return typer.Exit(code=code)


# --- commands -------------------------------------------------------------------------------------
@pipeline_app.command()
def definition(
    use_case: str = use_case_option(),
    use_case_file: Path = use_case_file_option(
        "a use-case file anywhere: the definition then reads it from the code archive "
        "(build that with `code-archive --use-case-file` the same file)"
    ),
    out: Path = typer.Option(None, "--out", help="write here instead of printing"),
    write_snapshots: bool = typer.Option(
        False,
        "--write-snapshots",
        help="rewrite every use case's committed template in sagemaker_pipelines/definitions/",
    ),
) -> None:
    """The pipeline definition template (CloudFormation Fn::Sub placeholders), as the CDK deploys it."""
    from edgeloop.sagemaker_pipelines.pipeline import definition_template, write_definitions
    from edgeloop.schemas.use_case import USE_CASES_DIR

    try:
        if write_snapshots:
            use_cases = [_use_case(p.stem) for p in sorted(USE_CASES_DIR.glob("*.yaml"))]
            for path in write_definitions(use_cases):
                console.print(f"wrote {path}", highlight=False)
            return
        text = definition_template(_use_case(use_case, use_case_file), packaged_file=use_case_file is not None)
    except (PipelineCommandError, ValueError) as exc:
        raise _fail(exc) from None
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        console.print(f"wrote {out}", highlight=False)


IMAGE_URI_HELP = "the image every step runs in (default: SageMaker's XGBoost image of the region, steps/images.py)"
CODE_S3_URI_HELP = (
    "s3:// URI of the step code archive: upload the sourcedir.tar.gz `edgeloop pipeline code-archive` writes"
)


@pipeline_app.command()
def upsert(
    role_arn: str = typer.Option(..., "--role-arn", help="the pipeline execution role"),
    use_case: str = use_case_option(),
    use_case_file: Path = use_case_file_option(
        "a use-case file anywhere; the steps read it from the code archive: build that with "
        "`code-archive --use-case-file` the same file"
    ),
    data_bucket: str = typer.Option(..., "--data-bucket"),
    model_bucket: str = typer.Option(..., "--model-bucket"),
    image_uri: str = typer.Option(None, "--image-uri", help=IMAGE_URI_HELP),
    code_s3_uri: str = typer.Option(..., "--code-s3-uri", help=CODE_S3_URI_HELP),
    region: str = typer.Option(None, "--region", help="default: the AWS region boto3 is configured with"),
    signing_key_secret_arn: str = typer.Option(
        "",
        "--signing-key-secret-arn",
        help="Secrets Manager secret (full ARN) whose SecretString is the Ed25519 PEM key the register step signs "
        "payloads with; the role must be allowed secretsmanager:GetSecretValue on it (default: unsigned)",
    ),
) -> None:
    """Create or update the use case's SageMaker Pipeline with a definition built for these resources."""
    import boto3

    from edgeloop.sagemaker_pipelines.pipeline import build_definition, pipeline_name
    from edgeloop.sagemaker_pipelines.steps import images
    from edgeloop.sagemaker_pipelines.targets import PipelineTargets

    region = region or boto3.session.Session().region_name
    try:
        if not region:
            raise PipelineCommandError("--region is not set and boto3 has no default region")
        image_uri = image_uri or images.step_image_uri(region)
        config = _use_case(use_case, use_case_file)
        targets = PipelineTargets(
            data_bucket=data_bucket,
            model_bucket=model_bucket,
            image_uri=image_uri,
            code_s3_uri=code_s3_uri,
            role_arn=role_arn,
            region=region,
            signing_key_secret_arn=signing_key_secret_arn,
        )
        text = build_definition(config, targets, packaged_file=use_case_file is not None)
        if not signing_key_secret_arn:
            errors.print(
                "[yellow]warning:[/] no --signing-key-secret-arn: the register step will register unsigned payloads, "
                "which gateways configured with a public key reject",
                highlight=False,
            )
        arn, created = upsert_pipeline(
            name=pipeline_name(config),
            definition=text,
            role_arn=role_arn,
            description=f"edgeloop {config.use_case}: dataset -> train -> evaluate -> register",
        )
    except (PipelineCommandError, ValueError) as exc:
        raise _fail(exc) from None
    console.print(f"{'created' if created else 'updated'} {arn}", highlight=False)


@pipeline_app.command("code-archive")
def code_archive(
    out: Path = typer.Option(Path("build"), "--out", help="directory to write step-code-<hash>/sourcedir.tar.gz in"),
    use_case_file: Path = use_case_file_option(
        f"a use-case file to package at {names.PACKAGED_USE_CASE_FILE} in the archive (for `upsert --use-case-file`)"
    ),
) -> None:
    """Write the steps' code archive (what the stack uploads as an asset) for `upsert --code-s3-uri`."""
    from edgeloop.sagemaker_pipelines.step_code import build_archive

    try:
        config = _use_case(None, use_case_file) if use_case_file is not None else None
    except PipelineCommandError as exc:
        raise _fail(exc) from None
    console.print(str(build_archive(out, use_case=config)), highlight=False)


@pipeline_app.command()
def start(
    use_case: str = use_case_option(),
    use_case_file: Path = use_case_file_option(),
    line: str = typer.Option(..., "--line", help="line id"),
    start_date: str = typer.Option(None, "--start", help="first event date, YYYY-MM-DD (default: earliest)"),
    end_date: str = typer.Option(None, "--end", help="last event date, inclusive (default: latest)"),
    instance_type: str = typer.Option(None, "--instance-type", help="processing instance type"),
    training_instance_type: str = typer.Option(None, "--training-instance-type"),
    candidates_per_template: int = typer.Option(None, "--candidates-per-template", min=1),
    model_version: str = typer.Option(
        None, "--model-version", help="MAJOR.MINOR.PATCH (default: the next patch in the line's model package group)"
    ),
    code_version: str = typer.Option(None, "--code-version", help="default: this checkout's git commit"),
) -> None:
    """Start an execution of the use case's pipeline for one line and date range."""
    try:
        first, last = date_range(start_date, end_date)
        check_model_version(model_version)
        if code_version is None:
            from edgeloop.sagemaker_pipelines.steps.lineage import code_version as checkout_version

            code_version = checkout_version()
        now = datetime.now(UTC)
        parameters = execution_parameters(
            line_id=line,
            start=first,
            end=last,
            model_version=model_version,
            code_version=code_version,
            processing_instance_type=instance_type,
            training_instance_type=training_instance_type,
            candidates_per_template=candidates_per_template,
        )
        name = _use_case(use_case, use_case_file).use_case
        arn = start_pipeline(use_case=name, parameters=parameters, display_name=execution_display_name(line, now))
    except (PipelineCommandError, ValueError) as exc:
        raise _fail(exc) from None
    console.print(f"started {arn}", highlight=False)
    console.print_json(json.dumps({p["Name"]: p["Value"] for p in parameters}))


@pipeline_app.command("run-local")
def run_local_command(
    use_case: str = use_case_option(),
    use_case_file: Path = use_case_file_option(),
    lines: list[str] = typer.Option(..., "--line", help="line id (repeat for several lines)"),
    start_date: str = typer.Option(None, "--start", help="first event date, YYYY-MM-DD"),
    end_date: str = typer.Option(None, "--end", help="last event date, inclusive"),
    data_bucket: str = typer.Option(os.environ.get(names.DATA_BUCKET_ENV, names.LOCAL_DATA_BUCKET), "--data-bucket"),
    model_bucket: str = typer.Option(
        os.environ.get(names.MODEL_BUCKET_ENV, names.LOCAL_MODEL_BUCKET), "--model-bucket"
    ),
    work_dir: Path = typer.Option(Path(".edgeloop/pipeline"), "--work-dir", help="step inputs and outputs"),
    signing_key: str = typer.Option(
        None, "--signing-key", help=f"Ed25519 private key (PEM path or text; default ${names.MODEL_SIGNING_KEY_ENV})"
    ),
    approve: bool = typer.Option(False, "--approve", help="approve the registered packages (starts rollouts)"),
    candidates_per_template: int = typer.Option(None, "--candidates-per-template", min=1),
    holdout_runs: int = typer.Option(
        None,
        "--holdout-runs",
        min=1,
        help="each line's newest N whole runs are its reference data (default: the use case's validation settings)",
    ),
) -> None:
    """Run dataset -> train -> evaluate -> register on this machine against the configured AWS endpoint."""
    try:
        first, last = date_range(start_date, end_date)
        config = _use_case(use_case, use_case_file)
    except PipelineCommandError as exc:
        raise _fail(exc) from None
    from edgeloop.sagemaker_pipelines.local_run import run_local

    # as given: the steps resolve them the same way (neither: the same environment variables)
    console.print(f"use case {config.use_case}", highlight=False)
    results = run_local(
        use_case=use_case,
        use_case_file=use_case_file,
        line_ids=list(lines),
        start=first,
        end=last,
        data_bucket=data_bucket,
        model_bucket=model_bucket,
        work_dir=work_dir,
        signing_key=signing_key or os.environ.get(names.MODEL_SIGNING_KEY_ENV) or None,
        approve=approve,
        candidates_per_template=candidates_per_template,
        holdout_runs=holdout_runs,
    )
    console.print(results_table(results))
    for result in results:
        if not result.passed:  # in full, unwrapped: the table cell may be cut to the terminal's width
            errors.print(f"{result.line_id} failed: {result.reason}", highlight=False)
    if not results or not all(r.passed for r in results):
        raise typer.Exit(code=1)


def results_table(results) -> Table:
    table = Table(title="Local pipeline run, per line")
    for column in ("line", "passed", "MSE", "MAE", "model package", "reason"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.line_id,
            "[green]yes[/]" if r.passed else "[red]no[/]",
            _metric(r.metrics, "mse", ".5f"),
            _metric(r.metrics, "mae", ".4f"),
            r.model_package_arn or "-",
            r.reason or "-",
        )
    return table


def _metric(metrics, key: str, spec: str) -> str:
    # metrics may be a ModelMetrics, a dict (from evaluation.json) or absent for a line that failed early
    if metrics is None:
        return "-"
    value = metrics.get(key) if isinstance(metrics, dict) else getattr(metrics, key, None)
    return "-" if value is None else format(value, spec)
