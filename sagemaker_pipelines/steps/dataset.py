"""Dataset step: one line's labeled examples for a date range, split into training and reference data.

Examples are rebuilt from the curated partitions whose event date lies in [start, end] and the line's
context intervals (metric packer -> labeler -> feature extractor), plus examples labeled through the
review queue. Runs, limits and states all count: each label is classed against the limits in force at
its time, and packs overlapping a state outside the use case's productive_states are left out (of
the reviewed examples too) and counted in dataset.json (packs_excluded_non_productive), so neither
training nor the evaluate step's metrics see them.

The reference dataset the evaluate step judges candidates on is whole runs, the line's newest (runs
ordered by their last window_end): `--holdout-runs N` (or the use case's `validation.holdout_runs`)
takes exactly the newest N; otherwise as many of the newest runs as it takes to hold at least
`validation.reference_share` of the examples, at least one. A run is never split between training
and reference, and at least one run is left to train on: the reference is runs the model never saw,
as on the line after deployment. Training rows whose label window (window_end + horizon_s +
label_window_s) would reach into the reference period are dropped, so no label is shared.

A line whose examples are all one run (or no more runs than --holdout-runs) is refused with an error
naming the line and its runs: a row share of that run would score the model on the run it was
trained on (the same material, setpoint and drift), which tells nothing about the next run, and a
model with no reference at all could pass no gate. Widen --start/--end or record another run.

Outputs (the pipeline's ProcessingStep outputs, mapped under --output):
    train/examples.parquet, reference/examples.parquet, dataset/dataset.json
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.context import get_context_intervals
from edgeloop.cloud.datalake.curated import read_parts
from edgeloop.cloud.packing import label_review
from edgeloop.cloud.packing.examples import LineTimeline, assemble_examples
from edgeloop.schemas import ContextInterval, LabelSource, names
from edgeloop.schemas.common import Contract, Sha256Hex, UtcDatetime
from edgeloop.schemas.use_case import UseCaseConfig, resolve_use_case

from .search import run_positions
from .train import EXAMPLE_COLUMNS, check_examples, training_data_sha256

TRAIN_DIR = "train"
REFERENCE_DIR = "reference"
DATASET_DIR = "dataset"
EXAMPLES_FILE = "examples.parquet"
DATASET_FILE = "dataset.json"
MIN_REFERENCE_ROWS = 2
MIN_TRAIN_ROWS = 10
# Examples are identified by their window; a measured label wins over a reviewed one for the same pack.
EXAMPLE_IDENTITY = ["line_id", "window_start", "window_end"]


class DatasetInfo(Contract):
    """dataset/dataset.json: what the dataset step produced, for lineage and the later steps."""

    line_id: str
    use_case: str
    start: date | None = Field(description="requested first event date (None: from the earliest data)")
    end: date | None = Field(description="requested last event date, inclusive (None: to the latest data)")
    rows_train: int = Field(ge=0)
    rows_reference: int = Field(ge=0)
    content_sha256: Sha256Hex = Field(description="training rows then reference rows (train.training_data_sha256)")
    train_sha256: Sha256Hex
    reference_sha256: Sha256Hex
    data_start: UtcDatetime = Field(description="earliest window_start of the examples used")
    data_end: UtcDatetime = Field(description="latest window_end of the examples used")
    rows_dropped_for_gap: int = Field(
        default=0, ge=0, description="training rows left out because their label window reaches the reference period"
    )
    reviewed_rows: int = Field(default=0, ge=0, description="examples whose label came from the review queue")
    runs_train: int = Field(default=0, ge=0, description="runs the training rows come from")
    reference_runs: list[str] = Field(
        default_factory=list, description="run ids of the reference rows (the line's newest whole runs), oldest first"
    )
    packs_excluded_non_productive: int = Field(
        default=0,
        ge=0,
        description="packs left out because the line was in a state outside the use case's productive_states "
        "between the pack's start and its label's end",
    )


@dataclass(frozen=True)
class LineDataset:
    train: pd.DataFrame
    reference: pd.DataFrame
    info: DatasetInfo


# --- reading the line's data ---------------------------------------------------------------------


def read_curated_range(bucket: str, line_id: str, start: date | None, end: date | None) -> pd.DataFrame:
    """Curated rows of a line from the event_date partitions in [start, end] only."""
    prefix = f"{names.CURATED_PREFIX}/line={line_id}/"
    return read_parts(
        bucket, [k for k in s3.list_keys(bucket, prefix) if k.endswith(".parquet") and _in_range(k, start, end)]
    )


def _in_range(key: str, start: date | None, end: date | None) -> bool:
    marker = "event_date="
    position = key.find(marker)
    if position < 0:
        return False
    event_date = date.fromisoformat(key[position + len(marker) :].split("/", 1)[0])
    return (start is None or event_date >= start) and (end is None or event_date <= end)


def clip_intervals(intervals: list[ContextInterval], start: date | None, end: date | None) -> list[ContextInterval]:
    """Intervals cut to [start 00:00, end + 1 day 00:00) UTC, so every pack lies inside the range."""
    lower = datetime.combine(start, time(), tzinfo=UTC) if start else None
    upper = datetime.combine(end + timedelta(days=1), time(), tzinfo=UTC) if end else None
    clipped = []
    for interval in intervals:
        begin = max(interval.start, lower) if lower else interval.start
        finish = min(interval.end, upper) if upper else interval.end
        if begin < finish:
            clipped.append(interval.model_copy(update={"start": begin, "end": finish}))
    return clipped


def reviewed_examples(bucket: str, line_id: str, use_case: UseCaseConfig) -> pd.DataFrame | None:
    """Auto-labeled and reviewed examples (cloud/packing/label_review.py)."""
    return label_review.labeled_from_review(bucket, line_id, use_case)


def productive_only(
    examples: pd.DataFrame | None, intervals: list[ContextInterval], line_id: str, use_case: UseCaseConfig
) -> pd.DataFrame | None:
    """`examples` without those whose pack overlaps a non-productive state (reviewed labels of packs the
    packer has since left out, e.g. when a state interval arrived after the proposal)."""
    if examples is None or examples.empty:
        return examples
    start_ms = _epoch_ms(examples["window_start"])
    label_end_ms = _epoch_ms(examples["window_end"]) + (use_case.horizon_s + use_case.label_window_s) * 1000
    idle = LineTimeline.of(intervals, line_id, use_case).non_productive(start_ms, label_end_ms)
    return examples[~idle].reset_index(drop=True)


def _epoch_ms(stamps: pd.Series) -> np.ndarray:
    return (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)


def merge_reviewed(measured: pd.DataFrame, reviewed: pd.DataFrame | None, use_case: UseCaseConfig) -> pd.DataFrame:
    if reviewed is None or reviewed.empty:
        return measured
    check_examples(reviewed, use_case)
    columns = [*EXAMPLE_COLUMNS, *use_case.feature_names]
    merged = pd.concat([measured[columns], reviewed[columns]], ignore_index=True)
    return merged.drop_duplicates(EXAMPLE_IDENTITY, keep="first").reset_index(drop=True)


def _within(examples: pd.DataFrame, start: date | None, end: date | None) -> pd.DataFrame:
    keep = np.ones(len(examples), dtype=bool)
    if start is not None:
        keep &= (examples["window_start"] >= pd.Timestamp(start, tz="UTC")).to_numpy()
    if end is not None:
        keep &= (examples["window_end"] <= pd.Timestamp(end + timedelta(days=1), tz="UTC")).to_numpy()
    return examples[keep].reset_index(drop=True)


# --- the split -----------------------------------------------------------------------------------


def reference_split(
    examples: pd.DataFrame, use_case: UseCaseConfig, holdout_runs: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, reference): the newest whole runs are the reference (module docstring), with a label gap
    before it. holdout_runs: exactly this many newest runs (default: use_case.validation.holdout_runs,
    else the runs that reach validation.reference_share)."""
    if "run_id" not in examples.columns:
        raise ValueError("examples lack columns ['run_id']: the reference is whole runs")
    ordered = examples.sort_values(["window_end", "window_start"], kind="stable").reset_index(drop=True)
    runs = run_positions(ordered)
    n_reference_runs = _reference_run_count(ordered, runs, use_case, holdout_runs)
    reference = ordered.iloc[np.sort(np.concatenate(runs[-n_reference_runs:]))].reset_index(drop=True)
    gap = pd.Timedelta(seconds=use_case.horizon_s + use_case.label_window_s)
    candidates = ordered.iloc[np.sort(np.concatenate(runs[:-n_reference_runs]))]
    train = candidates[candidates["window_end"] + gap <= reference["window_start"].min()].reset_index(drop=True)
    if len(train) < MIN_TRAIN_ROWS or len(reference) < MIN_REFERENCE_ROWS:
        raise ValueError(
            f"{_line(ordered)}{len(examples)} examples in {len(runs)} runs leave {len(train)} training and "
            f"{len(reference)} reference rows (newest {n_reference_runs} runs) after the {gap} label gap; need at "
            f"least {MIN_TRAIN_ROWS} and {MIN_REFERENCE_ROWS}"
        )
    return train, reference


def _reference_run_count(
    ordered: pd.DataFrame, runs: list[np.ndarray], use_case: UseCaseConfig, holdout_runs: int | None
) -> int:
    holdout_runs = holdout_runs or use_case.validation.holdout_runs
    names = [str(ordered["run_id"].iloc[run[0]]) for run in runs]
    if len(runs) < 2 or (holdout_runs is not None and holdout_runs >= len(runs)):
        wanted = f"{holdout_runs} reference runs" if holdout_runs else "a reference run"
        raise ValueError(
            f"{_line(ordered)}the examples are {len(runs)} run(s) ({', '.join(names[-5:])}): {wanted} plus at least "
            "one training run are needed, and a run is never split between training and reference (widen "
            "--start/--end, record another run, or lower --holdout-runs)"
        )
    if holdout_runs is not None:
        if holdout_runs < 1:
            raise ValueError(f"holdout_runs={holdout_runs} must be at least 1")
        return holdout_runs
    wanted_rows = np.ceil(len(ordered) * use_case.validation.reference_share)
    newest_first = np.cumsum([len(run) for run in reversed(runs)])
    reaching = int(np.searchsorted(newest_first, wanted_rows)) + 1  # runs whose rows reach the share
    return min(reaching, len(runs) - 1)


def _line(examples: pd.DataFrame) -> str:
    lines = sorted(map(str, examples["line_id"].unique())) if "line_id" in examples.columns else []
    return f"line {lines[0]!r}: " if len(lines) == 1 else ""


def build_dataset(
    *,
    data_bucket: str,
    line_id: str,
    use_case: UseCaseConfig,
    start: date | None,
    end: date | None,
    holdout_runs: int | None = None,
) -> LineDataset:
    if start and end and end < start:
        raise ValueError(f"end={end.isoformat()} is before start={start.isoformat()}")
    curated = read_curated_range(data_bucket, line_id, start, end)
    intervals = clip_intervals(get_context_intervals(data_bucket, line_id), start, end)
    build = assemble_examples(curated, intervals, use_case)
    reviewed = productive_only(reviewed_examples(data_bucket, line_id, use_case), intervals, line_id, use_case)
    examples = _within(merge_reviewed(build.examples, reviewed, use_case), start, end)
    if examples.empty:
        where = f"s3://{data_bucket}/{names.CURATED_PREFIX}/line={line_id}/"
        raise ValueError(f"line_id={line_id!r}: no labeled examples in {where} between start={start} and end={end}")
    check_examples(examples, use_case)
    train, reference = reference_split(examples, use_case, holdout_runs)
    features = use_case.feature_names
    used = pd.concat([train, reference], ignore_index=True)
    info = DatasetInfo(
        line_id=line_id,
        use_case=use_case.use_case,
        start=start,
        end=end,
        rows_train=len(train),
        rows_reference=len(reference),
        content_sha256=training_data_sha256(used, features),
        train_sha256=training_data_sha256(train, features),
        reference_sha256=training_data_sha256(reference, features),
        data_start=used["window_start"].min().to_pydatetime(),
        data_end=used["window_end"].max().to_pydatetime(),
        rows_dropped_for_gap=len(examples) - len(used),
        reviewed_rows=int((used["label_source"] == LabelSource.REVIEWED.value).sum()),
        runs_train=int(train["run_id"].nunique()),
        reference_runs=list(dict.fromkeys(reference["run_id"].astype(str))),  # reference is in time order
        packs_excluded_non_productive=build.stats.excluded_non_productive,
    )
    return LineDataset(train=train, reference=reference, info=info)


# --- step I/O ------------------------------------------------------------------------------------


def write_dataset(dataset: LineDataset, output: str | Path) -> Path:
    output = Path(output)
    for name, frame in ((TRAIN_DIR, dataset.train), (REFERENCE_DIR, dataset.reference)):
        (output / name).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(output / name / EXAMPLES_FILE, index=False)
    (output / DATASET_DIR).mkdir(parents=True, exist_ok=True)
    (output / DATASET_DIR / DATASET_FILE).write_text(dataset.info.model_dump_json(indent=2))
    return output


def output_file(directory: str | Path, file_name: str, option: str = "") -> Path:
    """`file_name` in a step's output folder (SageMaker mounts folders), or `directory` if it is the file."""
    path = Path(directory)
    path = path / file_name if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{option} {directory}: no {file_name} there".lstrip())
    return path


def read_dataset_info(directory: str | Path) -> DatasetInfo:
    """dataset.json from the dataset step's `dataset/` output (or the file itself)."""
    return DatasetInfo.model_validate_json(output_file(directory, DATASET_FILE, "--dataset").read_text())


def read_examples(directory: str | Path) -> pd.DataFrame:
    """examples.parquet from a train/ or reference/ output (or the file itself)."""
    return pd.read_parquet(output_file(directory, EXAMPLES_FILE))


def parse_day(name: str, text: str | None) -> date | None:
    """An ISO date argument; empty means unbounded (pipeline parameters default to "")."""
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10]) if len(text) > 10 and text[10] == "T" else date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an ISO date (YYYY-MM-DD)") from None


def main(argv: list[str] | None = None) -> DatasetInfo:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-bucket", default=os.environ.get(names.DATA_BUCKET_ENV, names.LOCAL_DATA_BUCKET))
    parser.add_argument("--line-id", required=True)
    parser.add_argument("--start", default="", help="first event date, YYYY-MM-DD (empty: from the earliest)")
    parser.add_argument("--end", default="", help="last event date, inclusive (empty: to the latest)")
    parser.add_argument("--use-case", default=None, help="a packaged use case (or $EDGELOOP_USE_CASE)")
    parser.add_argument("--use-case-file", default=None, help="a use-case file (or $EDGELOOP_USE_CASE_FILE)")
    parser.add_argument(
        "--holdout-runs",
        type=int,
        default=0,
        help="the newest N whole runs are the reference (0: the use case's validation settings)",
    )
    parser.add_argument("--output", default="/opt/ml/processing/output")
    args = parser.parse_args(argv)
    if args.holdout_runs < 0:
        parser.error(f"--holdout-runs={args.holdout_runs} must be 0 (use case) or at least 1")
    try:
        start, end = parse_day("--start", args.start), parse_day("--end", args.end)
    except ValueError as exc:
        parser.error(str(exc))
    use_case = resolve_use_case(args.use_case, args.use_case_file)
    dataset = build_dataset(
        data_bucket=args.data_bucket,
        line_id=args.line_id,
        use_case=use_case,
        start=start,
        end=end,
        holdout_runs=args.holdout_runs or None,
    )
    write_dataset(dataset, args.output)
    print(dataset.info.model_dump_json(indent=2))
    return dataset.info


if __name__ == "__main__":
    main()
