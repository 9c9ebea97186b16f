"""Run the training pipeline on this machine: dataset -> train -> evaluate -> register, per line.

Each step is the same module the SageMaker Pipeline runs, called through its `main(argv)` with the
pipeline's arguments; the step's /opt/ml/... directories are mapped under `work_dir/<line_id>/`. AWS is
whatever boto3 is configured with: the local runtime's moto_server through AWS_ENDPOINT_URL, or an
account. Lines run concurrently, each line's steps in order, like one pipeline execution per line.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from edgeloop.sagemaker_pipelines.steps import dataset as dataset_step
from edgeloop.sagemaker_pipelines.steps import evaluate as evaluate_step
from edgeloop.sagemaker_pipelines.steps import register as register_step
from edgeloop.sagemaker_pipelines.steps import train as train_step
from edgeloop.schemas.use_case import resolve_use_case

MAX_PARALLEL_LINES = 2  # the machines this runs on have two cores; train.main parallelises within a line too


@dataclass(frozen=True)
class LocalRunResult:
    line_id: str
    passed: bool
    reason: str
    model_package_arn: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # the candidate's reference metrics (evaluation.json)


@dataclass(frozen=True)
class LinePaths:
    """Where one line's step outputs go: the pipeline's processing/model directories, locally."""

    root: Path

    @property
    def dataset_output(self) -> Path:
        return self.root / "dataset-output"

    @property
    def train_examples(self) -> Path:
        return self.dataset_output / dataset_step.TRAIN_DIR / dataset_step.EXAMPLES_FILE

    @property
    def reference(self) -> Path:
        return self.dataset_output / dataset_step.REFERENCE_DIR

    @property
    def dataset(self) -> Path:
        return self.dataset_output / dataset_step.DATASET_DIR

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"


def run_local(
    *,
    use_case: str | None = None,
    use_case_file: str | Path | None = None,
    line_ids: list[str],
    start: date | None,
    end: date | None,
    data_bucket: str,
    model_bucket: str,
    work_dir: Path,
    signing_key: str | None = None,
    approve: bool = False,
    candidates_per_template: int | None = None,
    holdout_runs: int | None = None,
) -> list[LocalRunResult]:
    """One result per line, in the order given; a line that fails validation registers nothing.

    holdout_runs: each line's newest N whole runs are its reference data (the dataset step's --holdout-runs;
    None: the use case's validation settings).

    The use case: a packaged name or a file anywhere (edgeloop.schemas.use_case.resolve_use_case, which
    every step calls with the same two arguments); checked before any line runs."""
    resolve_use_case(use_case, use_case_file)
    if not line_ids:
        raise ValueError("line_ids=[]: name at least one line")
    if len(set(line_ids)) != len(line_ids):
        raise ValueError(f"line_ids={line_ids} repeat a line")
    if holdout_runs is not None and holdout_runs < 1:
        raise ValueError(f"holdout_runs={holdout_runs} must be at least 1")
    options = {
        "use_case": use_case_arguments(use_case, use_case_file),
        "start": start,
        "end": end,
        "data_bucket": data_bucket,
        "model_bucket": model_bucket,
        "signing_key": signing_key,
        "approve": approve,
        "candidates_per_template": candidates_per_template,
        "holdout_runs": holdout_runs,
    }
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_LINES, len(line_ids)), thread_name_prefix="run-line") as pool:
        futures = [pool.submit(run_line, line, LinePaths(Path(work_dir) / line), **options) for line in line_ids]
        return [future.result() for future in futures]


def run_line(
    line_id: str,
    paths: LinePaths,
    *,
    use_case: list[str],
    start: date | None,
    end: date | None,
    data_bucket: str,
    model_bucket: str,
    signing_key: str | None,
    approve: bool,
    candidates_per_template: int | None,
    holdout_runs: int | None = None,
) -> LocalRunResult:
    try:
        dataset_step.main(
            _dataset_args(line_id, paths, use_case=use_case, start=start, end=end, data_bucket=data_bucket)
            + (["--holdout-runs", str(holdout_runs)] if holdout_runs else [])
        )
    except (ValueError, FileNotFoundError) as exc:
        # too little data is an outcome of the run, like a failed validation, not a crash
        return LocalRunResult(line_id=line_id, passed=False, reason=f"dataset: {exc}")
    try:
        train_step.main(_train_args(paths, use_case=use_case, candidates_per_template=candidates_per_template))
    except ValueError as exc:  # e.g. too few training rows for the configured cross-validation
        return LocalRunResult(line_id=line_id, passed=False, reason=f"train: {exc}")
    report = evaluate_step.main(_evaluate_args(paths, use_case=use_case, model_bucket=model_bucket))
    metrics = report.candidate.model_dump(mode="json")
    if not report.passed:
        return LocalRunResult(line_id=line_id, passed=False, reason=report.reason, metrics=metrics)
    arns = register_step.main(
        _register_args(paths, use_case=use_case, model_bucket=model_bucket, signing_key=signing_key, approve=approve)
    )
    return LocalRunResult(
        line_id=line_id, passed=True, reason=report.reason, model_package_arn=arns[line_id], metrics=metrics
    )


# Each step's arguments, as the pipeline definition passes them (step_builder.py), with local paths.


def use_case_arguments(use_case: str | None, use_case_file: str | Path | None) -> list[str]:
    """--use-case and/or --use-case-file as given (a file as an absolute path: steps may run elsewhere)."""
    args = ["--use-case", use_case] if use_case else []
    if use_case_file:
        args += ["--use-case-file", str(Path(use_case_file).expanduser().resolve())]
    return args


def _dataset_args(
    line_id: str, paths: LinePaths, *, use_case: list[str], start: date | None, end: date | None, data_bucket: str
) -> list[str]:
    return [
        "--data-bucket", data_bucket,
        "--line-id", line_id,
        "--start", start.isoformat() if start else "",
        "--end", end.isoformat() if end else "",
        *use_case,
        "--output", str(paths.dataset_output),
    ]  # fmt: skip


def _train_args(paths: LinePaths, *, use_case: list[str], candidates_per_template: int | None) -> list[str]:
    args = ["--examples", str(paths.train_examples), "--output", str(paths.model), *use_case]
    if candidates_per_template is not None:
        args += ["--candidates-per-template", str(candidates_per_template)]
    return args


def _evaluate_args(paths: LinePaths, *, use_case: list[str], model_bucket: str) -> list[str]:
    return [
        "--model", str(paths.model),
        "--reference", str(paths.reference),
        "--dataset", str(paths.dataset),
        *use_case,
        "--model-bucket", model_bucket,
        "--output", str(paths.evaluation),
    ]  # fmt: skip


def _register_args(
    paths: LinePaths, *, use_case: list[str], model_bucket: str, signing_key: str | None, approve: bool
) -> list[str]:
    args = [
        "--trained", str(paths.model),
        "--model-bucket", model_bucket,
        *use_case,
        "--dataset", str(paths.dataset),
        "--evaluation", str(paths.evaluation),
    ]  # fmt: skip
    if signing_key:
        args += ["--signing-key", signing_key]
    if approve:
        args.append("--approve")
    return args
