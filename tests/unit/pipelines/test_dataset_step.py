"""Dataset step: simulated extrusion data in a (moto) bucket -> train/reference split with a label gap."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import boto3
import numpy as np
import pandas as pd
import pytest
from moto import mock_aws
from simulated_line_data import put_simulated_line

from edgeloop.sagemaker_pipelines.steps import dataset as dataset_step
from edgeloop.sagemaker_pipelines.steps.dataset import (
    build_dataset,
    parse_day,
    read_dataset_info,
    read_examples,
    reference_split,
)
from edgeloop.sagemaker_pipelines.steps.train import training_data_sha256
from edgeloop.schemas import load_use_case

BUCKET = "edgeloop-data-test"
LINE = "line-1"
# 16 simulated hours from 16:00 span two event dates: 2026-03-01 and 2026-03-02
SIM_START = datetime(2026, 3, 1, 16, tzinfo=UTC)
SIM_HOURS = 16


@pytest.fixture(scope="module")
def config():
    return load_use_case("extrusion")


@pytest.fixture(scope="module")
def bucket():
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        put_simulated_line(BUCKET, LINE, start=SIM_START, hours=SIM_HOURS, seed=3)
        yield BUCKET


@pytest.fixture(scope="module")
def whole(bucket, config):
    return build_dataset(data_bucket=bucket, line_id=LINE, use_case=config, start=None, end=None)


def test_reference_is_the_newest_whole_runs_reaching_the_share_with_no_label_overlap(whole, config):
    gap = pd.Timedelta(seconds=config.horizon_s + config.label_window_s)
    info = whole.info
    n_examples = info.rows_train + info.rows_reference + info.rows_dropped_for_gap
    assert n_examples > 500
    # whole runs, the newest, as few as reach reference_share of the examples
    runs = list(dict.fromkeys(whole.reference["run_id"]))
    assert info.reference_runs == runs and info.runs_train == whole.train["run_id"].nunique() > 1
    assert set(whole.train["run_id"]).isdisjoint(runs)
    wanted = np.ceil(n_examples * config.validation.reference_share)
    assert info.rows_reference >= wanted > info.rows_reference - (whole.reference["run_id"] == runs[0]).sum()
    # a changeover longer than the label gap precedes the first reference run: no training row is dropped (the
    # contiguous case is test_split_drops_training_rows_whose_labels_reach_the_reference)
    assert info.rows_dropped_for_gap == 0
    # every training label window ends before the first reference pack starts
    assert (whole.train["window_end"] + gap).max() <= whole.reference["window_start"].min()
    assert info.data_start == whole.train["window_start"].min()
    assert info.data_end == whole.reference["window_end"].max()


def test_split_drops_training_rows_whose_labels_reach_the_reference(config):
    step = pd.Timedelta(seconds=config.example_stride_s)
    start = pd.Timestamp("2026-03-01T00:00:00Z")
    window_start = start + step * np.arange(100)
    frame = pd.DataFrame(
        {
            "run_id": [f"run-{i // 5}" for i in range(100)],  # runs of 5 packs: 15 rows are 3 whole runs
            "window_start": window_start,
            "window_end": window_start + pd.Timedelta(seconds=config.pack_window_s),
        }
    )
    train, reference = reference_split(frame, config)
    assert len(reference) == 15  # ceil(100 x 0.15), the newest 3 runs
    gap = pd.Timedelta(seconds=config.horizon_s + config.label_window_s)
    assert (train["window_end"] + gap <= reference["window_start"].min()).all()
    # the packs whose label window overlaps the reference period are gone, not moved
    dropped = 100 - 15 - len(train)
    assert dropped == int(np.ceil((pd.Timedelta(seconds=config.pack_window_s) + gap) / step)) - 1


def test_date_range_reads_only_its_partitions(bucket, config, whole):
    first_day = build_dataset(data_bucket=bucket, line_id=LINE, use_case=config, start=None, end=date(2026, 3, 1))
    used = pd.concat([first_day.train, first_day.reference])
    assert used["window_end"].max() <= pd.Timestamp("2026-03-02T00:00:00Z")
    second_day = build_dataset(
        data_bucket=bucket, line_id=LINE, use_case=config, start=date(2026, 3, 2), end=date(2026, 3, 2)
    )
    used = pd.concat([second_day.train, second_day.reference])
    assert used["window_start"].min() >= pd.Timestamp("2026-03-02T00:00:00Z")
    assert first_day.info.content_sha256 != whole.info.content_sha256


def test_content_hash_is_of_the_exact_rows_and_changes_with_a_row(whole, config):
    features = config.feature_names
    used = pd.concat([whole.train, whole.reference], ignore_index=True)
    assert whole.info.content_sha256 == training_data_sha256(used, features)
    assert whole.info.reference_sha256 == training_data_sha256(whole.reference, features)
    changed = used.copy()
    changed.loc[len(changed) // 2, "label"] += 1e-3
    assert training_data_sha256(changed, features) != whole.info.content_sha256
    changed = used.copy()
    changed.loc[3, features[0]] = np.float32(changed.loc[3, features[0]]) + 1
    assert training_data_sha256(changed, features) != whole.info.content_sha256


def test_main_writes_the_three_outputs(bucket, tmp_path, whole):
    info = dataset_step.main(
        ["--data-bucket", bucket, "--line-id", LINE, "--start", "", "--end", "", "--use-case", "extrusion",
         "--output", str(tmp_path)]
    )  # fmt: skip
    assert info == whole.info
    on_disk = json.loads((tmp_path / "dataset" / "dataset.json").read_text())
    for key in ("line_id", "use_case", "start", "end", "rows_train", "rows_reference", "content_sha256",
                "data_start", "data_end"):  # fmt: skip
        assert key in on_disk
    assert read_dataset_info(tmp_path / "dataset") == info
    train = read_examples(tmp_path / "train")
    reference = read_examples(tmp_path / "reference")
    assert len(train) == info.rows_train and len(reference) == info.rows_reference
    assert isinstance(train["window_start"].dtype, pd.DatetimeTZDtype)
    used = pd.concat([train, reference], ignore_index=True)
    assert training_data_sha256(used, load_use_case("extrusion").feature_names) == info.content_sha256


def test_main_holdout_runs_makes_the_newest_n_runs_the_reference(bucket, tmp_path, whole):
    info = dataset_step.main(
        ["--data-bucket", bucket, "--line-id", LINE, "--use-case", "extrusion", "--holdout-runs", "2",
         "--output", str(tmp_path)]
    )  # fmt: skip
    runs = list(dict.fromkeys(pd.concat([whole.train, whole.reference])["run_id"]))  # all runs, in time order
    assert len(runs) > 3 and info.reference_runs == runs[-2:]
    reference = read_examples(tmp_path / "reference")
    assert list(dict.fromkeys(reference["run_id"])) == runs[-2:] and len(reference) == info.rows_reference
    assert not set(read_examples(tmp_path / "train")["run_id"]) & set(runs[-2:])
    with pytest.raises(SystemExit):
        dataset_step.main(["--line-id", LINE, "--holdout-runs", "-1", "--output", str(tmp_path)])


def test_bad_arguments_are_named(bucket, config):
    with pytest.raises(ValueError, match=r"--start='2026-13-01'"):
        parse_day("--start", "2026-13-01")
    assert parse_day("--start", "2026-03-01T00:00:00Z") == date(2026, 3, 1)
    with pytest.raises(ValueError, match=r"end=2026-03-01 is before start=2026-03-02"):
        build_dataset(data_bucket=bucket, line_id=LINE, use_case=config, start=date(2026, 3, 2), end=date(2026, 3, 1))
    with pytest.raises(ValueError, match=r"line_id='line-9': no labeled examples"):
        build_dataset(data_bucket=bucket, line_id="line-9", use_case=config, start=None, end=None)


def test_reviewed_labels_join_and_a_measured_label_wins_its_window(bucket, config, whole, monkeypatch):
    from edgeloop.cloud.packing import label_review as review

    measured = pd.concat([whole.train, whole.reference], ignore_index=True)
    same_window = measured.iloc[[5]].assign(label=99.0, label_source="reviewed")
    new_window = measured.iloc[[6]].assign(
        window_start=measured["window_start"].iloc[6] + pd.Timedelta(seconds=1),
        window_end=measured["window_end"].iloc[6] + pd.Timedelta(seconds=1),
        label_source="reviewed",
    )
    reviewed = pd.concat([same_window, new_window], ignore_index=True)
    monkeypatch.setattr(review, "labeled_from_review", lambda b, line, use_case: reviewed)
    with_reviews = build_dataset(data_bucket=bucket, line_id=LINE, use_case=config, start=None, end=None)
    used = pd.concat([with_reviews.train, with_reviews.reference], ignore_index=True)
    assert with_reviews.info.reviewed_rows == 1
    assert 99.0 not in used["label"].to_numpy()
    assert with_reviews.info.content_sha256 != whole.info.content_sha256
