"""Violation decisions tuned, not implied (issue 16): the precision/recall curve over decision margins,
the margin chosen on out-of-fold predictions of the training folds only, carried by the payload, and
reported by the evaluate step at the model's margin beside the baselines at the limits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from evaluate_helpers import (
    examples_with_current_value,
    quick_extrusion_config,
    run_evaluate_main,
    write_evaluate_inputs,
)

from edgeloop.model_runtime.decision import classify_levels
from edgeloop.sagemaker_pipelines.steps.dataset import reference_split
from edgeloop.sagemaker_pipelines.steps.evaluate import candidate_scorer, evaluate_candidate, side_by_side
from edgeloop.sagemaker_pipelines.steps.operating_point import (
    DEFAULT_MARGINS,
    OperatingPoint,
    choose_margin,
    precision_recall_curve,
    recall_at_precision,
)
from edgeloop.sagemaker_pipelines.steps.train import load_trained, save_trained, time_split, train_line_model
from edgeloop.schemas.decision import DecisionConfig

LSL, IN, USL = "lsl_violation", "in_range", "usl_violation"
MODEL_BUCKET = "edgeloop-models-operating-point-test"
LINE = "line-1"


def random_frame(n: int = 400, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Levels that roughly track labels with per-row limits around 10 +- 0.2."""
    rng = np.random.default_rng(seed)
    truth = 10 + rng.normal(scale=0.15, size=n)
    lower, upper = 9.8 + rng.normal(scale=0.01, size=n), 10.2 + rng.normal(scale=0.01, size=n)
    actual = np.where(truth < lower, LSL, np.where(truth > upper, USL, IN))
    levels = 10 + 0.6 * (truth - 10) + rng.normal(scale=0.05, size=n)
    return levels, pd.DataFrame({"label_class": actual, "spec_lower": lower, "spec_upper": upper})


def naive_point(levels, frame, margin) -> tuple[float | None, float | None]:
    """Precision and recall of violations, row by row."""
    hits = flagged = present = 0
    for level, (actual, lower, upper) in zip(levels, frame.itertuples(index=False), strict=True):
        inset = margin * (upper - lower) / 2
        predicted = LSL if level < lower + inset else USL if level > upper - inset else IN
        flagged += predicted != IN
        present += actual != IN
        hits += predicted != IN and predicted == actual
    return (hits / flagged if flagged else None), (hits / present if present else None)


# --- the curve and the choice ----------------------------------------------------------------------


def test_the_curve_matches_a_row_by_row_count_at_every_margin():
    levels, frame = random_frame()
    curve = precision_recall_curve(levels, frame)
    assert [p.margin for p in curve] == list(DEFAULT_MARGINS) == DecisionConfig().margins
    for point in curve:
        precision, recall = naive_point(levels, frame, point.margin)
        assert point.precision == pytest.approx(precision) and point.recall == pytest.approx(recall)
        assert point.f1 == pytest.approx(2 * precision * recall / (precision + recall))
    recalls = [p.recall for p in curve]
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0]  # a wider margin flags more


def test_choose_margin_takes_the_smallest_margin_that_reaches_the_target():
    levels, frame = random_frame()
    curve = precision_recall_curve(levels, frame)
    target = curve[6].recall  # reached first somewhere at or before margin 0.3
    chosen = choose_margin(levels, frame, target)
    first = next(p for p in curve if p.recall >= target)
    assert chosen == first.model_copy(update={"reaches_target": True})
    assert chosen.margin <= 0.3 and chosen.precision >= curve[6].precision  # best precision that reaches it


def test_a_margin_reaching_the_recall_only_below_the_precision_floor_is_not_taken():
    levels, frame = random_frame()
    curve = precision_recall_curve(levels, frame)
    target = curve[-1].recall  # reached only at wide margins, where precision is low
    reached = choose_margin(levels, frame, target)
    assert reached.reaches_target is True and reached.precision < 0.3
    floored = choose_margin(levels, frame, target, min_precision=reached.precision + 0.01)
    assert floored.reaches_target is False and floored.f1 == max(p.f1 for p in curve)
    assert floored.margin < reached.margin


def test_unreachable_target_gives_the_best_f1_point_flagged_and_no_violations_gives_margin_zero():
    levels, frame = random_frame()
    chosen = choose_margin(levels, frame, 1.0, margins=[0.0, 0.1, 0.2])
    points = precision_recall_curve(levels, frame, [0.0, 0.1, 0.2])
    assert chosen.reaches_target is False and chosen.f1 == max(p.f1 for p in points)
    calm = frame.assign(label_class=IN)
    assert choose_margin(levels, calm, 0.85, margins=[0.1, 0.2]) == OperatingPoint(
        margin=0.0, precision=0.0, recall=None, f1=None, reaches_target=False
    )


def test_recall_at_precision_is_the_best_recall_among_points_precise_enough():
    curve = [
        OperatingPoint(margin=0.0, precision=None, recall=0.0, f1=0.0),
        OperatingPoint(margin=0.1, precision=0.7, recall=0.3, f1=0.42),
        OperatingPoint(margin=0.2, precision=0.6, recall=0.5, f1=0.545),
        OperatingPoint(margin=0.3, precision=0.4, recall=0.7, f1=0.509),
    ]
    assert recall_at_precision(curve, 0.6) == 0.5
    assert recall_at_precision(curve, 0.65) == 0.3
    assert recall_at_precision(curve, 0.9) is None


def test_decision_config_is_validated():
    assert DecisionConfig(max_margin=0.3, margin_step=0.1).margins == [0.0, 0.1, 0.2, 0.3]
    for bad in (
        {"max_margin": 1.0},
        {"target_recall_violation": 0},
        {"margin_step": 0},
        {"margin_step": 1e-4},
        {"min_precision_violation": 1.1},
    ):
        with pytest.raises(ValueError):
            DecisionConfig(**bad)


# --- training: the margin is chosen on the training folds only -------------------------------------


@pytest.fixture(scope="module")
def config():
    return quick_extrusion_config()


@pytest.fixture(scope="module")
def split(config):
    return reference_split(examples_with_current_value(config, LINE), config)


@pytest.fixture(scope="module")
def trained(split, config):
    return train_line_model(split[0], config)


def test_the_margin_is_chosen_on_out_of_fold_predictions_and_persisted(trained, config, tmp_path):
    point = trained.operating_point
    assert point is not None and point.margin == trained.decision_margin
    assert point.margin in config.decision.margins and point.reaches_target is not None
    loaded = load_trained(save_trained(trained, tmp_path))
    assert (loaded.decision_margin, loaded.operating_point) == (trained.decision_margin, trained.operating_point)


def test_rows_after_the_training_folds_cannot_move_the_margin(trained, split, config):
    """The train step's own test block (and the reference runs, which it never receives) is outside the
    folds: rewriting all of its classes leaves the out-of-fold operating point bit for bit the same."""
    examples = split[0].copy()
    test_rows = time_split(examples, config).test.index  # reset positions of the sorted frame
    ordered = examples.sort_values(["window_end", "window_start"], kind="stable").reset_index(drop=True)
    ordered.loc[test_rows, "label_class"] = USL
    retrained = train_line_model(ordered, config)
    assert retrained.operating_point == trained.operating_point
    assert retrained.metrics != trained.metrics  # the test block did change (so the test above could fail)


# --- evaluate: the operating point and the curve on the reference data -----------------------------


def test_the_device_scorer_decides_exactly_as_evaluate_scores(registry, trained, split, config):
    reference = split[1]
    scorer = candidate_scorer(trained, use_case=config, line_id=LINE)
    assert scorer.decision_margin == trained.decision_margin
    levels = scorer.predict(reference[scorer.features].to_numpy(dtype=np.float32))
    lower, upper = reference["spec_lower"].to_numpy(), reference["spec_upper"].to_numpy()
    device = scorer.classify(levels, lower, upper)
    cloud = classify_levels(trained.predict(reference[trained.feature_names].to_numpy(np.float32)), lower, upper,
                            trained.decision_margin)  # fmt: skip
    assert list(device) == list(cloud)
    one_by_one = [scorer.classify(float(v), lo, up) for v, lo, up in zip(levels, lower, upper, strict=True)]
    assert one_by_one == list(device)
    report = evaluate_candidate(trained, reference, config, line_id=LINE)
    hits = int(((device == reference["label_class"].to_numpy()) & (device != IN)).sum())
    assert report.candidate.violation_recall == hits / int((reference["label_class"] != IN).sum())


def test_evaluation_json_carries_the_operating_point_and_the_curve(registry, trained, split, config, tmp_path):
    write_evaluate_inputs(trained, split, LINE, tmp_path)
    report, document = run_evaluate_main(tmp_path, MODEL_BUCKET)
    point = document["operating_point"]
    assert point["margin"] == trained.decision_margin
    candidate = document["candidate"]
    assert (point["precision"], point["recall"], point["f1"]) == (
        candidate["violation_precision"], candidate["violation_recall"], candidate["violation_f1"])  # fmt: skip
    assert [p["margin"] for p in document["pr_curve"]] == config.decision.margins
    assert next(p for p in document["pr_curve"] if p["margin"] == point["margin"])["recall"] == point["recall"]
    assert document["training_operating_point"] == trained.operating_point.model_dump(mode="json")
    # the baselines decide at the limits: persistence's figures are those of margin 0
    assert report.gate.persistence_violation_f1 == document["baselines"]["persistence"]["violation_f1"]
    assert f"model (margin {trained.decision_margin:g}) RMSE" in side_by_side(report)
    assert "| persistence RMSE" in side_by_side(report)
