"""Honest validation (issue 16): reference data and CV folds are whole runs; --holdout-runs takes the newest N.

Runs are named out of time order, and rows are shuffled, so nothing here can pass by sorting names or rows.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.sagemaker_pipelines import local_run
from edgeloop.sagemaker_pipelines.steps.dataset import reference_split
from edgeloop.sagemaker_pipelines.steps.search import time_ordered_folds
from edgeloop.schemas import load_use_case

CONFIG = load_use_case("extrusion")
STRIDE = pd.Timedelta(seconds=CONFIG.example_stride_s)


def run_name(r: int) -> str:
    return f"run-{(r * 37) % 101:03d}"  # not in time order


def packs(run_lengths: list[int], changeover_s: int = 0, seed: int = 0) -> pd.DataFrame:
    """Runs of consecutive packs (one per stride), changeover_s between runs, rows shuffled."""
    run_ids, starts, t = [], [], pd.Timestamp("2026-03-01T00:00:00Z")
    for r, n in enumerate(run_lengths):
        run_ids += [run_name(r)] * n
        starts += [t + STRIDE * i for i in range(n)]
        t += STRIDE * n + pd.Timedelta(seconds=changeover_s)
    frame = pd.DataFrame({"line_id": "line-1", "run_id": run_ids, "window_start": pd.DatetimeIndex(starts)})
    frame["window_end"] = frame["window_start"] + pd.Timedelta(seconds=CONFIG.pack_window_s)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def runs_of(frame: pd.DataFrame) -> set[str]:
    return set(frame["run_id"])


@settings(max_examples=60, deadline=None)
@given(
    run_lengths=st.lists(st.integers(min_value=3, max_value=80), min_size=2, max_size=12),
    changeover_s=st.sampled_from([0, 1800]),
)
def test_no_run_is_split_between_training_and_reference(run_lengths, changeover_s):
    frame = packs(run_lengths, changeover_s)
    try:
        train, reference = reference_split(frame, CONFIG)
    except ValueError as exc:  # too few rows survive: refused, never split
        assert "need at least" in str(exc)
        return
    names = [run_name(r) for r in range(len(run_lengths))]
    assert runs_of(train).isdisjoint(runs_of(reference))
    k = len(runs_of(reference))
    assert 1 <= k < len(run_lengths) and runs_of(reference) == set(names[-k:])  # the newest k, whole
    assert len(reference) == sum(run_lengths[-k:])
    # as few runs as reach the share (or all but one run)
    wanted = np.ceil(len(frame) * CONFIG.validation.reference_share)
    assert len(reference) >= wanted or k == len(run_lengths) - 1
    assert k == 1 or sum(run_lengths[-k + 1 :]) < wanted


@settings(max_examples=80, deadline=None)
@given(
    run_lengths=st.lists(st.integers(min_value=1, max_value=40), min_size=2, max_size=15),
    n_folds=st.integers(min_value=1, max_value=5),
    gap_s=st.sampled_from([0, 330, 630]),
)
def test_folds_never_split_a_run(run_lengths, n_folds, gap_s):
    frame = packs(run_lengths)
    try:
        folds = time_ordered_folds(frame, n_folds, gap_s)
    except ValueError as exc:  # too few rows for the folds or after the gap: refused
        assert "training rows" in str(exc) or "cannot make" in str(exc)
        return
    assert len(folds) == min(n_folds, len(run_lengths) - 1)
    sizes = frame["run_id"].value_counts()
    previous_valid_end = None
    for train, valid in folds:
        valid_runs, train_runs = runs_of(frame.iloc[valid]), runs_of(frame.iloc[train])
        assert valid_runs.isdisjoint(train_runs)
        assert len(valid) == sizes[list(valid_runs)].sum()  # every validation run whole
        first_valid_start = frame["window_start"].iloc[valid].min()
        assert (frame["window_end"].iloc[train] + pd.Timedelta(seconds=gap_s) <= first_valid_start).all()
        if previous_valid_end is not None:
            assert frame["window_end"].iloc[valid].min() > previous_valid_end
        previous_valid_end = frame["window_end"].iloc[valid].max()


def test_folds_keep_dropping_training_rows_whose_labels_reach_validation():
    frame = packs([40] * 5)  # contiguous runs: the label gap bites at each run boundary
    folds = time_ordered_folds(frame, 4, CONFIG.horizon_s + CONFIG.label_window_s)
    assert [len(valid) for _, valid in folds] == [40, 40, 40, 40]
    # a label ends 630 s (window 300 + horizon 300 + label 30) = 21 strides after its pack starts: the 20
    # packs before each validation block lose their rows
    assert [len(train) for train, _ in folds] == [40 - 20, 80 - 20, 120 - 20, 160 - 20]


@pytest.mark.parametrize("n", [1, 2, 4])
def test_holdout_runs_are_exactly_the_newest_n_runs(n):
    run_lengths = [50, 7, 90, 12, 60]
    frame = packs(run_lengths, changeover_s=1800)
    names = [run_name(r) for r in range(len(run_lengths))]
    train, reference = reference_split(frame, CONFIG, holdout_runs=n)
    assert runs_of(reference) == set(names[-n:]) and len(reference) == sum(run_lengths[-n:])
    assert runs_of(train) == set(names[:-n]) and len(train) == sum(run_lengths[:-n])
    configured = CONFIG.model_copy(update={"validation": CONFIG.validation.model_copy(update={"holdout_runs": n})})
    assert runs_of(reference_split(frame, configured)[1]) == set(names[-n:])


def test_a_single_run_line_is_refused_with_its_name_and_run():
    frame = packs([400])
    with pytest.raises(ValueError, match=r"line 'line-1': the examples are 1 run\(s\) \(run-000\).*never split"):
        reference_split(frame, CONFIG)
    with pytest.raises(ValueError, match=r"line 'line-1': the examples are 3 run\(s\).*3 reference runs"):
        reference_split(packs([100, 100, 100]), CONFIG, holdout_runs=3)


def test_a_single_runs_training_rows_are_folded_in_time_order():
    """A short history (one run) still trains: its folds cut the run in time order, said in the summary."""
    frame = packs([400])
    folds = time_ordered_folds(frame, 4, 0)
    ends = pd.to_datetime(frame["window_end"]).to_numpy()
    assert len(folds) == 4
    for train, valid in folds:
        assert ends[train].max() < ends[valid].min()


def test_run_local_passes_holdout_runs_to_the_dataset_step(monkeypatch, tmp_path):
    seen = []

    def dataset_main(argv):
        seen.append(argv)
        raise ValueError("stopped after the dataset arguments")

    monkeypatch.setattr(local_run.dataset_step, "main", dataset_main)
    options = {"use_case": "extrusion", "line_ids": ["line-1"], "start": None, "end": None, "data_bucket": "d",
               "model_bucket": "m", "work_dir": tmp_path}  # fmt: skip
    (result,) = local_run.run_local(**options, holdout_runs=2)
    assert result.reason == "dataset: stopped after the dataset arguments"
    assert seen[0][seen[0].index("--holdout-runs") + 1] == "2"
    local_run.run_local(**options)
    assert "--holdout-runs" not in seen[1]
    with pytest.raises(ValueError, match="holdout_runs=0"):
        local_run.run_local(**options, holdout_runs=0)


def test_cli_run_local_takes_holdout_runs(monkeypatch, tmp_path):
    calls = []
    module = types.ModuleType("edgeloop.sagemaker_pipelines.local_run")
    module.run_local = lambda **kwargs: calls.append(kwargs) or []
    monkeypatch.setitem(sys.modules, "edgeloop.sagemaker_pipelines.local_run", module)
    args = ["pipeline", "run-local", "--use-case", "extrusion", "--line", "line-1", "--work-dir", str(tmp_path)]
    CliRunner().invoke(app, [*args, "--holdout-runs", "3"], catch_exceptions=False)
    assert calls[-1]["holdout_runs"] == 3
    CliRunner().invoke(app, args, catch_exceptions=False)
    assert calls[-1]["holdout_runs"] is None
    refused = CliRunner().invoke(app, [*args, "--holdout-runs", "0"], catch_exceptions=False)
    assert refused.exit_code == 2 and len(calls) == 2
