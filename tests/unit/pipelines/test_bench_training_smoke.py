"""The training benchmark on a tiny dataset: its data build, its cache, and the figures it reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_training
from benchmarks.training_data import (
    DAY_S,
    LINE_ID,
    MANIFEST_FILE,
    START_MS,
    USE_CASE,
    curated_like,
    ensure_examples,
    simulate_examples,
)
from edgeloop.cloud.packing.examples import build_examples
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.sagemaker_pipelines.steps.baselines import score_predictions
from edgeloop.sagemaker_pipelines.steps.search import search_templates
from edgeloop.sagemaker_pipelines.steps.train import train_line_model
from edgeloop.schemas import ContextKind, load_use_case
from edgeloop.schemas.use_case import LabelMode

DAYS = 1
SEED = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ensure_examples(DAYS, seed=SEED, root=tmp_path_factory.mktemp("bench-data"))


def test_day_chunks_give_the_examples_of_one_whole_pass():
    chunked, stats, hidden = simulate_examples(1, seed=SEED, chunk_s=2 * 3600 + 17)  # boundaries fall anywhere
    simulator = ExtrusionLineSimulator(LINE_ID, seed=SEED, start_ms=START_MS)
    samples = curated_like(*simulator.advance_arrays(DAY_S + 4 * 3600))
    day_end = pd.Timestamp(START_MS + DAY_S * 1000, unit="ms", tz="UTC")
    runs_done = [i for i in simulator.context_intervals() if i.kind is ContextKind.RUN and i.end <= day_end]
    whole = build_examples(samples, runs_done, load_use_case(USE_CASE))
    pd.testing.assert_frame_equal(chunked, whole)
    assert stats.examples == len(chunked) > 1000
    assert stats.runs == len(runs_done)
    assert len(hidden) >= DAY_S  # the hidden record covers every simulated second


def test_the_cache_is_reused_and_a_tampered_file_regenerated(tiny):
    again = ensure_examples(DAYS, seed=SEED, root=tiny.path.parent.parent.parent)
    assert again.generated_s is None and again.path == tiny.path
    assert again.manifest["rows"] == len(again.examples()) == len(tiny.examples())
    manifest_path = tiny.path.parent / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "sha256": "0" * 64}))
    rebuilt = ensure_examples(DAYS, seed=SEED, root=tiny.path.parent.parent.parent)
    assert rebuilt.generated_s is not None and rebuilt.manifest["sha256"] == manifest["sha256"]


def test_bad_experiment_counts_are_refused_by_name(monkeypatch):
    monkeypatch.setenv(bench_training.EXPERIMENTS_ENV, "lots")
    with pytest.raises(ValueError, match=f"{bench_training.EXPERIMENTS_ENV}='lots'"):
        bench_training.experiments_target()
    monkeypatch.setenv(bench_training.EXPERIMENTS_ENV, "0")
    with pytest.raises(ValueError, match="must be at least 1"):
        bench_training.experiments_target()


def test_candidates_per_template_reach_the_asked_experiments():
    config = bench_training.searched_config(load_use_case(USE_CASE))
    assert [t.tag.value for t in search_templates(config)] == ["lasso", "random_forest", "xgboost"]
    per_draw = 3 * config.training.cv_folds
    for asked in (1, 12, 13, 300, 7_500):
        candidates = bench_training.candidates_per_template(asked, config)
        assert candidates * per_draw >= asked > (candidates - 1) * per_draw


QUALITY = (
    "rmse_ratio_vs_persistence",
    "gate_passed",
    *(
        f"{name}{suffix}"
        for suffix in ("", "_persistence", "_setpoint")
        for name in (
            "mse",
            "rmse",
            "mae",
            "precision_violation",
            "recall_violation",
            "f1_violation",
            "lead_time_median_s",
            *(f"{m}_{c}" for m in ("precision", "recall", "f1") for c in ("lsl", "usl")),
        )
    ),
)


def _check_quality(results: dict, prefix: str) -> None:
    assert {f"{prefix}{name}" for name in QUALITY} <= set(results)
    assert results[f"{prefix}rmse_ratio_vs_persistence"][0] == pytest.approx(
        results[f"{prefix}rmse"][0] / results[f"{prefix}rmse_persistence"][0]
    )
    assert results[f"{prefix}gate_passed"][0] in (0.0, 1.0)
    assert all(
        math.isnan(results[name][0]) or 0 <= results[name][0] <= 1
        for name in results
        if name.startswith(prefix) and any(k in name for k in ("precision", "recall", "f1_"))
    )


def test_benchmark_reports_every_figure(tiny, capsys):
    results = bench_training.benchmark(tiny.examples(), load_use_case(USE_CASE), 12)
    expected = {
        "training.examples",
        "training.experiments",
        "training.search_s",
        "training.experiments_per_hour",
        "training.target_met_1h",
        *(f"training.fits_per_s_{t}" for t in ("lasso", "random_forest", "xgboost")),
    }
    assert expected <= set(results)
    _check_quality(results, "quality.")
    for name, (value, unit) in results.items():
        assert isinstance(value, float) and isinstance(unit, str) and unit, name
    assert results["training.examples"][0] == len(tiny.examples())
    assert results["training.experiments"][0] >= 12
    assert results["training.target_met_1h"][0] in (0.0, 1.0)
    assert all(results[f"training.fits_per_s_{t}"][0] > 0 for t in ("lasso", "random_forest", "xgboost"))
    assert 0 < results["quality.mse"][0] < 10 * results["quality.mse_persistence"][0]
    printed = capsys.readouterr().out
    assert "Mímir" in printed and "chosen:" in printed


def test_the_bench_predicts_what_the_pipelines_trained_model_predicts(tiny):
    """Change mode (the extrusion use case's): levels, exactly train_line_model's TrainedModel.predict."""
    config = bench_training.searched_config(load_use_case(USE_CASE))
    assert config.label.mode == LabelMode.CHANGE
    outcome = bench_training.search_and_refit(tiny.examples(), config, 1, 1)
    trained = train_line_model(tiny.examples(), config, candidates_per_template=1)
    np.testing.assert_array_equal(outcome.test_predictions, trained.predict(trained.X_test))
    np.testing.assert_array_equal(outcome.test["label"].to_numpy(), trained.y_test)


def test_the_second_line_reports_its_quality_figures(capsys):
    results = bench_training.second_line(1, oracle=False)  # the oracle's figures: tests/unit/shims/test_*oracle*
    _check_quality(results, "quality2.")
    assert results["quality2.days"][0] == 1.0 and results["quality2.examples"][0] > 100
    assert "second line" in capsys.readouterr().out


def test_figures_come_from_the_pipelines_metric_definition():
    test = pd.DataFrame(
        {
            "label": [1.0, 3.0, 2.0, 2.0],
            "label_class": ["lsl_violation", "usl_violation", "in_range", "in_range"],
            "spec_lower": 1.5,
            "spec_upper": 2.5,
            "run_id": "r",
            "window_end": pd.date_range("2026-01-01", periods=4, freq="30s", tz="UTC"),
            "cold_od_average__last": [2.0, 2.0, 2.0, 2.0],
        }
    )
    config = load_use_case(USE_CASE)
    # predicted: USL (actual LSL), USL (actual USL), in range, LSL (actual in range)
    predictions = np.array([3.0, 3.0, 2.0, 1.0])
    figures = bench_training.scored_figures(predictions, test, config, prefix="q.", unit="mm")
    scored = score_predictions(predictions, test, n_train=0, horizon_s=config.horizon_s)
    assert figures["q.recall_violation"][0] == scored.violation_recall == 0.5  # LSL predicted as USL: no hit
    assert figures["q.precision_violation"][0] == pytest.approx(1 / 3)
    assert figures["q.f1_violation"][0] == pytest.approx(scored.violation_f1)
    assert figures["q.precision_usl"][0] == 0.5 and figures["q.recall_lsl"][0] == 0.0
    assert figures["q.rmse_persistence"][0] == pytest.approx(math.sqrt(np.mean((2.0 - test["label"]) ** 2)))
