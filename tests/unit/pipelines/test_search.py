"""Time-ordered CV folds, the selection rule and the randomized search."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic_line_examples import SPEC_LOWER, SPEC_UPPER, synthetic_examples

from edgeloop.sagemaker_pipelines.steps.search import (
    CandidateResult,
    draw_candidates,
    search_line,
    search_templates,
    select_candidate,
    selection_tolerance,
    time_ordered_folds,
)
from edgeloop.schemas import load_use_case
from edgeloop.schemas.model import ModelFamily, ModelTemplate


@pytest.fixture(scope="module")
def config():
    base = load_use_case("extrusion")
    training = base.training.model_copy(update={"cv_folds": 3})
    # lasso needs devices that take linear payloads
    return base.model_copy(update={"model_families": [ModelFamily.XGBOOST, ModelFamily.LINEAR], "training": training})


@pytest.fixture(scope="module")
def examples(config):
    return synthetic_examples(config, n=300, seed=3)


# --- folds -------------------------------------------------------------------------------------


@st.composite
def windows(draw):
    n = draw(st.integers(min_value=12, max_value=80))
    steps = draw(st.lists(st.integers(min_value=0, max_value=120), min_size=n, max_size=n))
    lengths = draw(st.lists(st.integers(min_value=1, max_value=400), min_size=n, max_size=n))
    start = pd.Timestamp("2026-01-01T00:00:00Z") + pd.to_timedelta(np.cumsum(steps), unit="s")
    frame = pd.DataFrame({"window_start": start, "window_end": start + pd.to_timedelta(lengths, unit="s")})
    shuffled = frame.sample(frac=1.0, random_state=draw(st.integers(0, 1000))).reset_index(drop=True)
    return shuffled, draw(st.integers(min_value=0, max_value=600)), draw(st.integers(min_value=1, max_value=5))


@settings(max_examples=100, deadline=None)
@given(windows())
def test_no_training_label_reaches_into_its_validation_block(case):
    frame, gap_s, n_folds = case
    try:
        folds = time_ordered_folds(frame, n_folds, gap_s)
    except ValueError as exc:  # too few rows survive the gap: refused, never leaked
        assert "training rows" in str(exc) or "cannot make" in str(exc)
        return
    assert len(folds) == n_folds
    gap = pd.Timedelta(seconds=gap_s)
    previous_valid_end = None
    for train, valid in folds:
        assert len(train) >= 2 and len(valid) >= 2
        assert set(train).isdisjoint(valid)
        first_valid_start = frame["window_start"].iloc[valid].min()
        assert (frame["window_end"].iloc[train] + gap <= first_valid_start).all()
        if previous_valid_end is not None:  # validation blocks advance in time
            assert frame["window_end"].iloc[valid].min() >= previous_valid_end
        previous_valid_end = frame["window_end"].iloc[valid].max()


def test_folds_are_expanding_windows(examples, config):
    folds = time_ordered_folds(examples, 4, config.horizon_s + config.label_window_s)
    train_sizes = [len(train) for train, _ in folds]
    assert train_sizes == sorted(train_sizes) and train_sizes[0] < train_sizes[-1]
    assert all(set(a) <= set(b) for (a, _), (b, _) in zip(folds, folds[1:], strict=False))
    assert sum(len(valid) for _, valid in folds) == len(examples) - len(examples) // 5
    # a row's label ends 630 s (window 300 + horizon 300 + label 30) after its window_start, 21 strides:
    # of the 60 rows before the first validation block, the first 40 have labels ending in time
    assert len(folds[0][0]) == 40


def test_too_few_rows_for_the_folds_are_refused(examples):
    with pytest.raises(ValueError, match="7 examples cannot make 4 folds"):
        time_ordered_folds(examples.iloc[:7], 4, 0)
    with pytest.raises(ValueError, match="fold 1 of 4 keeps 0 training rows after the 0 days 01:00:00 label gap"):
        time_ordered_folds(examples.iloc[:150], 4, 3600)  # five runs of 15 min: the 1 h gap empties fold 1


# --- selection ---------------------------------------------------------------------------------


def candidate(tag: ModelTemplate, cv_rmse: float) -> CandidateResult:
    return CandidateResult(tag, {}, [cv_rmse], [1], cv_rmse, cv_rmse, 0.1)


def test_a_simpler_model_within_tolerance_wins():
    boosted, forest, lasso = (candidate(ModelTemplate.XGBOOST, 0.100), candidate(ModelTemplate.RANDOM_FOREST, 0.104),
                              candidate(ModelTemplate.LASSO, 0.109))  # fmt: skip
    assert select_candidate([boosted, forest, lasso], tolerance=0.01) is lasso
    assert select_candidate([boosted, forest, lasso], tolerance=0.005) is forest


def test_a_simpler_model_outside_tolerance_loses():
    boosted, lasso = candidate(ModelTemplate.XGBOOST, 0.100), candidate(ModelTemplate.LASSO, 0.111)
    assert select_candidate([lasso, boosted], tolerance=0.01) is boosted
    assert select_candidate([lasso, boosted], tolerance=0.0) is boosted


def test_within_a_template_the_lower_error_wins():
    worse, better = candidate(ModelTemplate.LASSO, 0.105), candidate(ModelTemplate.LASSO, 0.102)
    assert select_candidate([worse, candidate(ModelTemplate.XGBOOST, 0.1), better], tolerance=0.01) is better


def test_selection_refuses_nothing_and_bad_tolerances():
    with pytest.raises(ValueError, match="no candidates"):
        select_candidate([], 0.1)
    with pytest.raises(ValueError, match="tolerance=nan"):
        select_candidate([candidate(ModelTemplate.LASSO, 1.0)], float("nan"))


def test_tolerance_is_a_share_of_the_median_spec_width(examples, config):
    assert selection_tolerance(examples, config) == pytest.approx(0.05 * (SPEC_UPPER - SPEC_LOWER))
    wider = examples.assign(spec_upper=examples["spec_upper"] + np.where(np.arange(len(examples)) < 200, 1.0, 0.0))
    assert selection_tolerance(wider, config) == pytest.approx(0.05 * (SPEC_UPPER - SPEC_LOWER + 1.0))


# --- search ------------------------------------------------------------------------------------


def test_templates_follow_the_devices_model_families(config):
    assert [t.tag for t in search_templates(config)] == list(ModelTemplate)
    trees_only = config.model_copy(update={"model_families": [ModelFamily.XGBOOST]})
    assert [t.tag for t in search_templates(trees_only)] == [ModelTemplate.RANDOM_FOREST, ModelTemplate.XGBOOST]
    lasso_on_tree_devices = trees_only.model_copy(
        update={"training": config.training.model_copy(update={"templates": [ModelTemplate.LASSO]})}
    )
    with pytest.raises(ValueError, match=r"training.templates=\['lasso'\] yield no model family"):
        search_templates(lasso_on_tree_devices)


def test_draws_are_seeded(config):
    first, again, other = (draw_candidates(config, 4, seed) for seed in (7, 7, 8))
    assert [(t.tag, p) for t, p in first] == [(t.tag, p) for t, p in again]
    assert [p for _, p in first] != [p for _, p in other]
    assert [t.tag for t, _ in first] == [tag for tag in ModelTemplate for _ in range(4)]


@pytest.fixture(scope="module")
def searched(examples, config):
    calls = []
    result = search_line(examples, config, candidates_per_template=2, seed=5, n_jobs=2,
                         progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    return result, calls


def test_experiments_count_every_fold_fit(searched):
    result, calls = searched
    assert len(result.candidates) == 6 and result.n_folds == 3
    assert result.experiments == 18
    assert [done for done, _ in calls] == list(range(1, 19)) and {total for _, total in calls} == {18}
    assert all(len(c.fold_rmse) == len(c.fold_rounds) == 3 for c in result.candidates)
    summary = result.summary()
    assert summary["experiments"] == 18
    assert summary["candidates_per_template"] == {"lasso": 2, "random_forest": 2, "xgboost": 2}


def test_search_finds_the_signal_and_applies_the_rule(searched, examples):
    result, _ = searched
    assert result.line_id == "line-1" and result.n_rows == len(examples)
    assert result.best.cv_rmse == min(c.cv_rmse for c in result.candidates)
    assert result.best.cv_rmse < 0.5 * np.std(examples["label"])  # far better than the mean
    assert result.chosen is select_candidate(result.candidates, result.tolerance)
    for c in result.candidates:
        assert c.cv_rmse == pytest.approx(np.mean(c.fold_rmse)) and 0 < c.cv_mae <= c.cv_rmse
        assert c.fit_seconds > 0
        if "n_estimators" in c.params:  # early stopping never runs past the drawn cap
            assert all(1 <= r <= c.params["n_estimators"] for r in c.fold_rounds)
            assert 1 <= c.refit_params()["n_estimators"] <= c.params["n_estimators"]


def test_search_is_reproducible_whatever_the_workers(searched, examples, config):
    result, _ = searched
    again = search_line(examples, config, candidates_per_template=2, seed=5, n_jobs=1)
    assert [(c.template, c.params, c.fold_rmse) for c in again.candidates] == [
        (c.template, c.params, c.fold_rmse) for c in result.candidates
    ]
    other = search_line(examples, config, candidates_per_template=2, seed=6, n_jobs=1)
    assert [c.params for c in other.candidates] != [c.params for c in result.candidates]


def test_search_refuses_mixed_lines_and_missing_columns(examples, config):
    mixed = pd.concat([examples, examples.assign(line_id="line-2")], ignore_index=True)
    with pytest.raises(ValueError, match=r"one line's examples; line_id has \['line-1', 'line-2'\]"):
        search_line(mixed, config, candidates_per_template=1)
    with pytest.raises(ValueError, match=r"lack columns \['spec_upper'\]"):
        search_line(examples.drop(columns=["spec_upper"]), config, candidates_per_template=1)
    with pytest.raises(ValueError, match="n_jobs=0"):
        search_line(examples, config, candidates_per_template=1, n_jobs=0)
