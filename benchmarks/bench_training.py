"""Training: the randomized model search on 3 months of one simulated extrusion line, and the
quality of the model it chooses.

Dataset (training_data.py): 90 simulated days of one line as production builds examples (5-minute
packs every 30 s, label = mean cold OD 5 minutes ahead over 30 s), about 220k examples x 40
features, cached under benchmarks/.data/.

(a) Search: train.py's time split holds out the newest block; the search runs on the rest, over
    lasso, random forest and XGBoost, with candidates_per_template chosen so that the number of
    experiments (model fits, every CV fold counted) reaches N (env EDGELOOP_BENCH_TRAINING_EXPERIMENTS,
    default 7,500: Mímir's figure, which took them 6 h). Wall-clock, on this machine's 2 cores; the
    search's CPU time is reported too, since other work on a shared machine slows the wall clock.
    searched_config makes sure every template's payload family is accepted, so lasso, random forest
    and XGBoost are all searched. fits_per_s_<template> is per worker thread.
(b) Quality, trained exactly as the pipeline trains (train.py: only predictable examples, the time
    split, the use case's label mode: in change mode the search and refit learn "future minus now"
    and the current value is added back, so predictions are levels as TrainedModel.predict gives):
    the chosen candidate, refit on all training rows, scored on the held-out block with baselines.py's
    score_predictions, the one metric definition the pipeline's Evaluate step uses, beside
    persistence and the setpoint scored the same way; `gate_passed` is the pipeline's persistence gate.
    A violation is hit only when predicted as its own class (LSL or USL), decided at the model's decision
    margin (`decision_margin`), chosen as train.py chooses it: on out-of-fold predictions of the
    training folds, never on the held-out block.
(c) The same quality figures (prefix `quality2.`) for the second example line: PIPE_DAYS days of
    the pipe-extrusion generator (training_data.pipe_examples), searched with its use case's own
    candidates_per_template, as the pipeline would.
(d) The physical limit (training_oracle.py): for both lines, the oracle (edgeloop/oracle.py: the chosen
    learner with the simulator's hidden state at each pack end added) scored on the same held-out rows,
    its recall at the model's precision, at precision 0.6, and at horizons HORIZONS_S.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from edgeloop.cloud.packing.labels import predictable, training_labels
from edgeloop.model_runtime.label_mode import to_level
from edgeloop.oracle import HiddenState
from edgeloop.sagemaker_pipelines.steps.baselines import (
    PERSISTENCE,
    ScoredMetrics,
    persistence_gate,
    score_baselines,
    score_predictions,
)
from edgeloop.sagemaker_pipelines.steps.operating_point import OperatingPoint
from edgeloop.sagemaker_pipelines.steps.search import SearchResult, search_templates
from edgeloop.sagemaker_pipelines.steps.train import out_of_fold_operating_point, time_split
from edgeloop.sagemaker_pipelines.steps.train import search_and_refit as train_search_and_refit
from edgeloop.schemas import ViolationClass, load_use_case
from edgeloop.schemas.model import TEMPLATE_FAMILY
from edgeloop.schemas.use_case import LabelMode, UseCaseConfig

from .training_data import DAYS, PIPE_DAYS, USE_CASE, ensure_examples, pipe_examples, pipe_hidden
from .training_oracle import HORIZONS_S, oracle_figures

EXPERIMENTS_ENV = "EDGELOOP_BENCH_TRAINING_EXPERIMENTS"
DEFAULT_EXPERIMENTS = 7_500
WORKERS = 2  # this machine's cores
TARGET_S = 3600
MIMIR = {"precision_violation": 0.85, "recall_violation": 0.90, "experiments": 7_500, "hours": 6.0}

Results = dict[str, tuple[float, str]]


def run() -> Results:
    experiments = experiments_target()
    dataset = ensure_examples(DAYS)
    results = benchmark(dataset.examples(), load_use_case(USE_CASE), experiments, hidden=dataset.hidden())
    if dataset.generated_s is not None:
        results["training.dataset_generation_s"] = (dataset.generated_s, "s")
    results.update(second_line())
    return results


def experiments_target() -> int:
    raw = os.environ.get(EXPERIMENTS_ENV, str(DEFAULT_EXPERIMENTS))
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{EXPERIMENTS_ENV}={raw!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{EXPERIMENTS_ENV}={value} must be at least 1")
    return value


def candidates_per_template(experiments: int, config: UseCaseConfig) -> int:
    """Fewest draws per template whose fits (every CV fold counted) reach `experiments`."""
    fits_per_draw = len(search_templates(config)) * config.training.cv_folds
    return max(1, math.ceil(experiments / fits_per_draw))


def benchmark(
    examples: pd.DataFrame,
    config: UseCaseConfig,
    experiments: int,
    *,
    workers: int = WORKERS,
    hidden: HiddenState | None = None,
    horizons_s: Sequence[int] = HORIZONS_S,
) -> Results:
    """Search figures and quality figures (prefix quality.); with the simulator's `hidden` record, the oracle's."""
    config = searched_config(config)
    outcome = search_and_refit(examples, config, candidates_per_template(experiments, config), workers)
    if outcome.experiments < experiments:
        raise RuntimeError(f"the search ran {outcome.experiments} experiments; {experiments} were asked for")
    results: Results = {"training.examples": (float(len(examples)), "examples")}
    results.update(search_figures(outcome))
    results.update(quality_figures(outcome, config, prefix="quality.", unit="mm"))
    _print_summary(outcome, results)
    if hidden is not None:
        results.update(_oracle(outcome, config, hidden, "quality.", "mm", workers, horizons_s))
    return results


def second_line(
    days: float = PIPE_DAYS, *, workers: int = WORKERS, oracle: bool = True, horizons_s: Sequence[int] = HORIZONS_S
) -> Results:
    """Quality figures (prefix quality2.) of the second example line, searched as its use case says, and
    (`oracle`) the oracle's from the generator's hidden state."""
    start = time.perf_counter()
    examples, config = pipe_examples(days)
    outcome = search_and_refit(examples, config, config.training.candidates_per_template, workers)
    results: Results = {
        "quality2.days": (float(days), "days"),
        "quality2.examples": (float(len(examples)), "examples"),
        "quality2.experiments": (float(outcome.experiments), "fits"),
    }
    results.update(quality_figures(outcome, config, prefix="quality2.", unit="bar"))
    if oracle:
        results.update(_oracle(outcome, config, pipe_hidden(days), "quality2.", "bar", workers, horizons_s))
    results["quality2.bench_s"] = (time.perf_counter() - start, "s")
    print(
        f"   second line ({days:g} days, {len(examples):,} examples): RMSE {results['quality2.rmse'][0]:.3g} bar vs"
        f" persistence {results['quality2.rmse_persistence'][0]:.3g}; violation F1"
        f" {results['quality2.f1_violation'][0]:.3f} vs {results['quality2.f1_violation_persistence'][0]:.3f}"
    )
    return results


# --- (a) the search ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchOutcome:
    experiments: int
    search_s: float
    search_cpu_s: float  # CPU time of this process's threads: about 2 x search_s when both cores are ours
    fits_per_s: dict[str, float]  # per template: fits per second of one worker's time
    chosen_template: str
    chosen_params: dict
    chosen_cv_rmse: float
    best_template: str
    best_cv_rmse: float
    train: pd.DataFrame  # the training rows, as train.py splits them (level labels)
    test: pd.DataFrame  # the held-out block, as train.py splits it
    test_predictions: np.ndarray  # levels, whatever the label mode
    operating_point: OperatingPoint  # the decision margin, chosen on out-of-fold predictions (train.py)


def search_figures(outcome: SearchOutcome) -> Results:
    results: Results = {
        "training.experiments": (float(outcome.experiments), "fits"),
        "training.search_s": (outcome.search_s, "s"),
        "training.search_cpu_s": (outcome.search_cpu_s, "s"),
        "training.experiments_per_hour": (outcome.experiments * 3600 / outcome.search_s, "fits/h"),
        "training.target_met_1h": (1.0 if outcome.search_s <= TARGET_S else 0.0, "bool"),
        # at this run's rate: what Mímir's 7,500 would take here (meaningful when N was smaller)
        "training.projected_s_for_7500": (MIMIR["experiments"] * outcome.search_s / outcome.experiments, "s"),
    }
    for tag, rate in sorted(outcome.fits_per_s.items()):
        results[f"training.fits_per_s_{tag}"] = (rate, "fits/s")
    return results


def search_and_refit(examples: pd.DataFrame, config: UseCaseConfig, candidates: int, workers: int) -> SearchOutcome:
    """train_line_model's steps, timed (the refit is one fit of thousands): its split, its labels in the
    use case's mode, train.py's search and refit, and the chosen model's level predictions on the
    held-out block (the smoke test checks them against train_line_model's TrainedModel.predict)."""
    split = time_split(predictable(examples, config), config)
    train = split.train.assign(label=training_labels(split.train, config))  # change mode: future minus now
    start, cpu_start = time.perf_counter(), time.process_time()
    search, fitted = train_search_and_refit(
        train, config, seed=config.training.seed, candidates_per_template=candidates, n_jobs=workers
    )
    search_s, search_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    features = config.feature_names
    X_test = split.test[features].to_numpy(dtype=np.float32)
    mode = LabelMode(config.label.mode)
    current = features.index(config.current_value_feature) if mode == LabelMode.CHANGE else None
    chosen = search.chosen
    point = out_of_fold_operating_point(search, config, mode, current)
    return SearchOutcome(
        experiments=search.experiments,
        search_s=search_s,
        search_cpu_s=search_cpu_s,
        fits_per_s=_fits_per_s(search),
        chosen_template=chosen.template.value,
        chosen_params=chosen.refit_params(),
        chosen_cv_rmse=chosen.cv_rmse,
        best_template=search.best.template.value,
        best_cv_rmse=search.best.cv_rmse,
        train=split.train,
        test=split.test,
        test_predictions=to_level(fitted.predict(X_test), X_test, mode, current),
        operating_point=point,
    )


def searched_config(config: UseCaseConfig) -> UseCaseConfig:
    """The use case with every configured template's payload family accepted, so the search covers
    lasso, random forest and XGBoost even where the use case's devices take trees only."""
    families = list(dict.fromkeys([*config.model_families, *(TEMPLATE_FAMILY[t] for t in config.training.templates)]))
    return config.model_copy(update={"model_families": families})


def _fits_per_s(search: SearchResult) -> dict[str, float]:
    """Per template: fits per second of one worker's time (fold fits over their summed wall time)."""
    fits: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for candidate in search.candidates:
        tag = candidate.template.value
        fits[tag] = fits.get(tag, 0) + len(candidate.fold_rmse)
        seconds[tag] = seconds.get(tag, 0.0) + candidate.fit_seconds
    return {tag: fits[tag] / seconds[tag] for tag in fits}


# --- (b) quality -------------------------------------------------------------------------------------


def quality_figures(outcome: SearchOutcome, config: UseCaseConfig, *, prefix: str, unit: str) -> Results:
    """The model's (at its decision margin), persistence's and the setpoint's reference metrics, all from
    score_predictions; an undefined figure (a class never predicted or never present, no episode flagged) is NaN."""
    return scored_figures(
        outcome.test_predictions, outcome.test, config, prefix=prefix, unit=unit, margin=outcome.operating_point.margin
    )


def scored_figures(
    predictions: np.ndarray, test: pd.DataFrame, config: UseCaseConfig, *, prefix: str, unit: str, margin: float = 0.0
) -> Results:
    """quality_figures of any level predictions at a decision margin."""
    model = score_predictions(np.asarray(predictions), test, n_train=0, horizon_s=config.horizon_s, margin=margin)
    baselines = score_baselines(test, config)
    results = _scored(model, prefix, "", unit)
    results[f"{prefix}decision_margin"] = (float(margin), "fraction of half band")
    for name, scored in baselines.items():
        results.update(_scored(scored, prefix, f"_{name}", unit))
    persistence = baselines[PERSISTENCE]
    results[f"{prefix}rmse_ratio_vs_persistence"] = (model.rmse / persistence.rmse, "ratio")
    results[f"{prefix}gate_passed"] = (float(persistence_gate(model, persistence, config).passed), "bool")
    return results


def _oracle(
    outcome: SearchOutcome,
    config: UseCaseConfig,
    hidden: HiddenState,
    prefix: str,
    unit: str,
    workers: int,
    horizons_s: Sequence[int],
) -> Results:
    margin = outcome.operating_point.margin
    predictions = outcome.test_predictions
    model = score_predictions(predictions, outcome.test, n_train=0, horizon_s=config.horizon_s, margin=margin)
    return oracle_figures(
        model,
        predictions,
        predictable(outcome.train, config),
        outcome.test,
        hidden,
        config,
        learner=(outcome.chosen_template, outcome.chosen_params),
        prefix=prefix,
        unit=unit,
        scored=_scored,
        nthread=workers,
        horizons_s=horizons_s,
    )


def _scored(metrics: ScoredMetrics, prefix: str, suffix: str, unit: str) -> Results:
    def figure(value: float | None) -> float:
        return math.nan if value is None else float(value)

    results: Results = {
        f"{prefix}mse{suffix}": (metrics.mse, f"{unit}^2"),
        f"{prefix}rmse{suffix}": (figure(metrics.rmse), unit),
        f"{prefix}mae{suffix}": (metrics.mae, unit),
        f"{prefix}precision_violation{suffix}": (figure(metrics.violation_precision), "ratio"),
        f"{prefix}recall_violation{suffix}": (figure(metrics.violation_recall), "ratio"),
        f"{prefix}f1_violation{suffix}": (figure(metrics.violation_f1), "ratio"),
        f"{prefix}lead_time_median_s{suffix}": (figure(metrics.lead_time_median_s), "s"),
    }
    for short, cls in (("lsl", ViolationClass.LSL), ("usl", ViolationClass.USL)):
        for name, values in (("precision", metrics.precision), ("recall", metrics.recall), ("f1", metrics.f1)):
            results[f"{prefix}{name}_{short}{suffix}"] = (figure(values.get(cls.value)), "ratio")
    return results


def _print_summary(outcome: SearchOutcome, results: Results) -> None:
    def value(name: str) -> float:
        return results[name][0]

    hours_for_mimir = MIMIR["experiments"] / value("training.experiments_per_hour")
    print(
        f"   search: {outcome.experiments:,} experiments in {outcome.search_s:,.1f} s"
        f" ({value('training.experiments_per_hour'):,.0f}/h; {MIMIR['experiments']:,} would take"
        f" {hours_for_mimir * 60:,.1f} min here vs Mímir's {MIMIR['hours']:.0f} h);"
        f" {outcome.search_cpu_s / outcome.search_s:.2f} of {WORKERS} cores were ours"
    )
    print(
        f"   chosen: {outcome.chosen_template} (cv RMSE {outcome.chosen_cv_rmse:.5f}) {outcome.chosen_params};"
        f" best: {outcome.best_template} (cv RMSE {outcome.best_cv_rmse:.5f})"
    )
    print(
        f"   held-out RMSE {value('quality.rmse'):.3g} vs persistence {value('quality.rmse_persistence'):.3g}"
        f" (ratio {value('quality.rmse_ratio_vs_persistence'):.3f}) and setpoint {value('quality.rmse_setpoint'):.3g}"
    )
    print(
        f"   out of spec: precision {value('quality.precision_violation'):.1%}, recall"
        f" {value('quality.recall_violation'):.1%} (Mímir: >{MIMIR['precision_violation']:.0%},"
        f" >{MIMIR['recall_violation']:.0%}); persistence {value('quality.precision_violation_persistence'):.1%}"
        f" / {value('quality.recall_violation_persistence'):.1%}"
    )
