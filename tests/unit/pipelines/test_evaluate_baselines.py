"""Baselines in every evaluation and the persistence gate: a model that only copies the current value
is refused with both figures; a model better than persistence passes; a use case may relax the gate."""

from __future__ import annotations

import numpy as np
import pytest
from evaluate_helpers import (
    CopyCurrentValue,
    examples_with_current_value,
    quick_extrusion_config,
    run_evaluate_main,
    write_evaluate_inputs,
)

from edgeloop.sagemaker_pipelines.steps import evaluate as evaluate_step
from edgeloop.sagemaker_pipelines.steps.baselines import (
    PERSISTENCE,
    SETPOINT,
    persistence_gate,
    persistence_predictions,
    score_predictions,
)
from edgeloop.sagemaker_pipelines.steps.dataset import reference_split
from edgeloop.sagemaker_pipelines.steps.evaluate import evaluate_candidate, judge, read_evaluation
from edgeloop.sagemaker_pipelines.steps.lineage import metadata_properties, parse_lineage
from edgeloop.sagemaker_pipelines.steps.train import train_line_model

MODEL_BUCKET = "edgeloop-models-baselines-test"
LINE = "line-1"


def with_validation(config, **fields):
    return config.model_copy(update={"validation": config.validation.model_copy(update=fields)})


@pytest.fixture(scope="module")
def config():
    return quick_extrusion_config()


@pytest.fixture(scope="module")
def split(config):
    return reference_split(examples_with_current_value(config, LINE), config)


@pytest.fixture(scope="module")
def good(split, config):
    return train_line_model(split[0], config)


def test_persistence_is_the_value_at_pack_end_then_the_mean_then_the_setpoint(split, config):
    reference = split[1].head(3).copy()
    target = config.target_metric
    reference.loc[reference.index[1], f"{target}__last"] = np.nan
    reference.loc[reference.index[2], [f"{target}__last", f"{target}__mean"]] = np.nan
    values = persistence_predictions(reference, config)
    assert values[0] == reference[f"{target}__last"].iloc[0]
    assert values[1] == reference[f"{target}__mean"].iloc[1]
    assert values[2] == (reference["spec_lower"].iloc[2] + reference["spec_upper"].iloc[2]) / 2


def test_the_gate_refuses_a_model_that_only_copies_the_current_value(registry, good, split, config, monkeypatch):
    copier = CopyCurrentValue(good.feature_names, config.target_metric)
    monkeypatch.setattr(evaluate_step, "candidate_scorer", lambda *args, **kwargs: copier)
    report = evaluate_candidate(good, split[1], config, line_id=LINE)
    persistence = report.baselines[PERSISTENCE]
    assert report.candidate.mse == pytest.approx(persistence.mse, rel=1e-6)  # float32 copy of the same values
    assert not report.passed and not report.gate.passed
    bound = persistence.rmse * (1 - config.validation.min_rmse_gain_vs_persistence)
    assert report.reason.startswith("no better than persistence: ")
    assert f"candidate RMSE {report.candidate.rmse:.6g} > persistence RMSE {persistence.rmse:.6g}" in report.reason
    assert f"x (1 - 0.05) = {bound:.6g}" in report.reason


def test_a_model_better_than_persistence_passes_and_the_report_carries_the_baselines(
    registry, good, split, config, tmp_path
):
    write_evaluate_inputs(good, split, LINE, tmp_path)
    report, document = run_evaluate_main(tmp_path, MODEL_BUCKET)
    assert document["passed"] is True, document["reason"]
    assert set(document["baselines"]) == {PERSISTENCE, SETPOINT}
    for metrics in (document["candidate"], *document["baselines"].values()):
        assert {"rmse", "mae", "precision", "recall", "f1", "violation_f1"} <= set(metrics)
    gate = document["gate"]
    assert gate["passed"] and gate["relaxed"] == [] and gate["min_rmse_gain_vs_persistence"] == 0.05
    assert gate["rmse"] <= 0.95 * gate["persistence_rmse"]
    assert f"persistence RMSE {gate['persistence_rmse']:.6g}" in document["reason"]
    assert read_evaluation(tmp_path / "out") == report
    # the registry's metadata carries model and baselines side by side
    from edgeloop.sagemaker_pipelines.steps.export import export_model

    exported = export_model(
        good, model_id=f"extrusion-{LINE}", version="1.0.0", use_case="extrusion", line_ids=[LINE],
        target=config.target_metric,
    )  # fmt: skip
    lineage = parse_lineage(metadata_properties(exported.manifest, "s3://b/m.json", evaluation=report))
    assert lineage.reference.persistence_rmse == pytest.approx(gate["persistence_rmse"])
    assert lineage.reference.setpoint_rmse == pytest.approx(document["baselines"][SETPOINT]["rmse"])
    assert lineage.reference.gate == "passed"


def test_relaxing_the_gate_is_explicit_and_visible(split, config):
    reference = split[1]
    copy = score_predictions(persistence_predictions(reference, config), reference, n_train=10)
    persistence = score_predictions(persistence_predictions(reference, config), reference, n_train=0)
    refused = persistence_gate(copy, persistence, config)
    assert not refused.passed and "persistence RMSE" in refused.reason
    relaxed = with_validation(config, min_rmse_gain_vs_persistence=None)
    gate = persistence_gate(copy, persistence, relaxed)
    assert gate.passed and gate.relaxed == ["min_rmse_gain_vs_persistence"]
    assert gate.min_rmse_gain_vs_persistence is None and "relaxed by the use case" in gate.reason
    passed, reason = judge(copy, None, relaxed, gate=gate)
    assert passed and "RMSE gain not required" in reason


def test_violation_f1_below_persistence_is_refused_unless_relaxed(split, config):
    reference = split[1]
    persistence = score_predictions(persistence_predictions(reference, config), reference, n_train=0)
    # the mean of the labels: a small RMSE, but it never predicts a violation
    flat = score_predictions(np.full(len(reference), reference["label"].mean()), reference, n_train=10)
    flat = flat.model_copy(update={"rmse": 0.5 * persistence.rmse})  # RMSE part passes: F1 alone decides
    assert flat.violation_f1 == 0.0 and persistence.violation_f1 > 0
    gate = persistence_gate(flat, persistence, config)
    assert not gate.passed
    assert gate.reason == (f"candidate violation F1 0.0000 < persistence violation F1 {persistence.violation_f1:.4f}")
    relaxed = persistence_gate(flat, persistence, with_validation(config, violation_f1_vs_persistence=False))
    assert relaxed.passed and relaxed.relaxed == ["violation_f1_vs_persistence"] and "(not required)" in relaxed.reason


def test_lead_time_is_the_horizon_when_the_first_pack_of_an_episode_flags_it():
    import pandas as pd

    from edgeloop.sagemaker_pipelines.steps.baselines import lead_time_median_s

    window_end = pd.Timestamp("2026-03-01T06:00:00Z") + pd.to_timedelta(np.arange(12) * 30, unit="s")
    usl, ok = "usl_violation", "in_range"
    actual = [ok, ok, usl, usl, usl, ok, ok, usl, usl, usl, usl, ok]  # two episodes: rows 2-4 and 7-10
    reference = pd.DataFrame({"run_id": "run-1", "window_end": window_end, "label_class": actual})
    early = np.array([ok, ok, usl, ok, ok, ok, ok, ok, ok, usl, usl, ok])  # episode 1 at its start, 2 after 60 s
    assert lead_time_median_s(early, reference, 300.0) == pytest.approx((300 + 240) / 2)
    assert lead_time_median_s(np.array([ok] * 12), reference, 300.0) is None
    # an episode under way at a run's first row has no observed start: run-2's rows 9-10 are left out
    split_runs = reference.assign(run_id=["run-1"] * 9 + ["run-2"] * 3)
    flags = np.array([ok, ok, ok, ok, ok, ok, ok, ok, usl, usl, ok, ok])
    assert lead_time_median_s(flags, split_runs, 300.0) == 270.0
