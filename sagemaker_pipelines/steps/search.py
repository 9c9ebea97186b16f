"""Randomized search over the model templates with time-ordered cross-validation, and the selection rule.

Folds are expanding windows over whole runs: the runs, oldest first, form n_folds+1 time-ordered
blocks of about equal rows whose boundaries fall on run boundaries (a run is never split between a
fold's training and validation rows); fold k validates on block k+1 and trains on the blocks before
it, minus every row whose label window (window_end + horizon + label window) ends after the
validation block's first window_start, so no label from the validation period leaks into training.
With fewer runs than n_folds+1 there are as many folds as runs allow (n_runs - 1; the search
summary's n_folds says how many). Training rows of a single run (a short history) leave nothing whole
to hold out: their folds cut that run in time order, and the summary's fold_unit says so (the
reference the evaluate step judges on is whole runs all the same, steps/dataset.py). A frame
without a run_id column is split by rows (each row its own run).

Speed: the features array is built once; each worker builds each fold's matrices once (binned
QuantileDMatrix for the tree templates, standardized DMatrix for lasso) and fits all its candidates
on them; boosted candidates stop early on the fold's validation block. Each candidate keeps its fold
predictions; the chosen one's, beside their rows, are the search's out-of-fold predictions (the
decision margin is tuned on them, train.py) at no extra fit. Workers are threads: XGBoost
releases the GIL while it trains, and each worker owns its matrices, so no XGBoost object is shared.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from edgeloop.schemas.model import TEMPLATE_FAMILY, ModelTemplate
from edgeloop.schemas.use_case import UseCaseConfig

from .templates import Params, PreparedFold, Template, template

MIN_FOLD_ROWS = 2  # a fold needs this many train and validation rows to fit and score anything

Progress = Callable[[int, int], None]  # (experiments done, experiments planned); called from workers


@dataclass(frozen=True)
class CandidateResult:
    template: ModelTemplate
    params: Params  # as drawn; n_estimators is the cap early stopping worked under
    fold_rmse: list[float]
    fold_rounds: list[int]  # rounds each fold's fit used (early stopping), for the refit
    cv_rmse: float  # mean over folds
    cv_mae: float  # mean over folds
    fit_seconds: float  # wall time of all its fold fits
    fit_cpu_seconds: float = 0.0  # CPU time of the fitting thread: what the fits cost on an idle machine
    # each fold's float32 predictions on its validation block (the model's own output: a change in change mode)
    fold_predictions: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)

    @property
    def cost_rank(self) -> int:
        return template(self.template).cost_rank

    def refit_params(self) -> Params:
        """Params for the final fit: boosted rounds become what the folds' early stopping found."""
        if "n_estimators" not in self.params:
            return dict(self.params)
        return {**self.params, "n_estimators": max(1, round(statistics.fmean(self.fold_rounds)))}


@dataclass(frozen=True)
class OutOfFold:
    """The chosen candidate's predictions on every fold's validation block: rows of the training data only,
    each predicted by a fit that did not see it (what the decision margin is tuned on, train.py)."""

    rows: pd.DataFrame  # the validation rows, fold after fold, all columns of the search's examples
    predictions: np.ndarray  # float32, the model's own output per row of `rows`


FOLDS_OF_RUNS = "whole runs"
FOLDS_OF_ONE_RUN = "rows of a single run"


@dataclass(frozen=True)
class SearchResult:
    line_id: str
    candidates: list[CandidateResult]
    best: CandidateResult  # lowest cv_rmse
    chosen: CandidateResult  # by the selection rule
    experiments: int  # model fits, folds counted
    elapsed_s: float
    tolerance: float  # in target units
    n_folds: int = 0
    n_rows: int = 0
    fold_unit: str = FOLDS_OF_RUNS
    out_of_fold: OutOfFold | None = field(default=None, compare=False, repr=False)

    def summary(self) -> dict:
        """What a model's lineage keeps of its search (JSON-ready)."""
        per_template: dict[str, int] = {}
        for candidate in self.candidates:
            per_template[candidate.template.value] = per_template.get(candidate.template.value, 0) + 1
        return {
            "experiments": self.experiments,
            "n_folds": self.n_folds,
            "fold_unit": self.fold_unit,
            "n_rows": self.n_rows,
            "elapsed_s": round(self.elapsed_s, 3),
            "tolerance": self.tolerance,
            "candidates_per_template": per_template,
            "best": _describe(self.best),
            "chosen": _describe(self.chosen),
        }


def _describe(candidate: CandidateResult) -> dict:
    return {"template": candidate.template.value, "cv_rmse": candidate.cv_rmse, "params": candidate.params}


# --- folds -------------------------------------------------------------------------------------


def time_ordered_folds(
    frame: pd.DataFrame, n_folds: int, gap: pd.Timedelta | float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train positions, validation positions) per fold, positions into `frame` as given (iloc).

    `gap` (a Timedelta or seconds) is horizon + label window: a training row is kept only when
    window_end + gap <= the validation block's first window_start. Blocks are whole runs (module
    docstring); fewer runs than n_folds + 1 make n_runs - 1 folds.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds={n_folds} must be at least 1")
    gap = gap if isinstance(gap, pd.Timedelta) else pd.Timedelta(seconds=float(gap))
    if gap < pd.Timedelta(0):
        raise ValueError(f"gap={gap} is negative")
    if len(frame) < (n_folds + 1) * MIN_FOLD_ROWS:
        raise ValueError(f"{len(frame)} examples cannot make {n_folds} folds of at least {MIN_FOLD_ROWS} rows")
    window_end, window_start = _nanoseconds(frame["window_end"]), _nanoseconds(frame["window_start"])
    blocks = _run_blocks(frame, n_folds)
    label_end = window_end + gap.value
    folds = []
    for k in range(1, len(blocks)):
        valid = np.sort(blocks[k])
        earlier = np.concatenate(blocks[:k])
        train = np.sort(earlier[label_end[earlier] <= window_start[valid].min()])
        if len(train) < MIN_FOLD_ROWS or len(valid) < MIN_FOLD_ROWS:
            raise ValueError(
                f"fold {k} of {len(blocks) - 1} keeps {len(train)} training rows after the {gap} label gap "
                f"and validates on {len(valid)}; need at least {MIN_FOLD_ROWS} of each (fewer cv_folds or more "
                "examples)"
            )
        folds.append((train, valid))
    return folds


def run_positions(frame: pd.DataFrame) -> list[np.ndarray]:
    """Positions (iloc) of each run's rows, runs oldest first: by their last window_end, then their
    first window_start, then run_id; rows in a run by window_end, then window_start. Without a run_id
    column every row is its own run."""
    window_end, window_start = _nanoseconds(frame["window_end"]), _nanoseconds(frame["window_start"])
    order = np.lexsort((window_start, window_end))  # by window_end, ties by window_start
    if "run_id" not in frame.columns:
        return [order[i : i + 1] for i in range(len(order))]
    codes, names = pd.factorize(frame["run_id"].astype(str).to_numpy()[order])
    grouped = order[np.argsort(codes, kind="stable")]  # each run's rows together, still in time order
    runs = np.split(grouped, np.cumsum(np.bincount(codes, minlength=len(names)))[:-1])
    keys = [(window_end[run].max(), window_start[run].min(), str(name)) for run, name in zip(runs, names, strict=True)]
    return [runs[i] for i in sorted(range(len(runs)), key=keys.__getitem__)]


def _run_blocks(frame: pd.DataFrame, n_folds: int) -> list[np.ndarray]:
    """n_folds + 1 (at most n_runs) time-ordered blocks of whole runs, each boundary at the run boundary
    nearest to an equal share of rows."""
    runs = run_positions(frame)
    if len(runs) < 2:
        runs = run_positions(frame.drop(columns="run_id"))  # one run: cut in time order (fold_unit)
    n_blocks = min(n_folds + 1, len(runs))
    before = np.concatenate([[0], np.cumsum([len(run) for run in runs])])  # rows before run i
    bounds = [0]
    for k in range(1, n_blocks):
        low, high = bounds[-1] + 1, len(runs) - (n_blocks - k)  # every block keeps at least one run
        target = k * len(frame) / n_blocks
        bounds.append(low + int(np.argmin(np.abs(before[low : high + 1] - target))))
    bounds.append(len(runs))
    return [np.concatenate(runs[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def _nanoseconds(times: pd.Series) -> np.ndarray:
    """int64 UTC nanoseconds of a datetime column, tz-aware (UTC) or naive (taken as UTC)."""
    times = pd.to_datetime(times, utc=True)
    return times.dt.as_unit("ns").astype("int64").to_numpy()


# --- selection ---------------------------------------------------------------------------------


def select_candidate(candidates: list[CandidateResult], tolerance: float) -> CandidateResult:
    """Among candidates within `tolerance` of the best cv_rmse, the lowest cost rank, then lowest cv_rmse."""
    if not candidates:
        raise ValueError("no candidates to select from")
    if not tolerance >= 0:
        raise ValueError(f"tolerance={tolerance!r} must be >= 0")
    best = min(candidates, key=lambda c: c.cv_rmse)
    close = [c for c in candidates if c.cv_rmse <= best.cv_rmse + tolerance]
    return min(close, key=lambda c: (c.cost_rank, c.cv_rmse))


def selection_tolerance(examples: pd.DataFrame, config: UseCaseConfig) -> float:
    """config.training.selection_tolerance x the median spec width (U - L) of the line's examples."""
    width = float(np.median(examples["spec_upper"].to_numpy(np.float64) - examples["spec_lower"].to_numpy(np.float64)))
    if not width >= 0:
        raise ValueError(f"median spec width (spec_upper - spec_lower)={width!r} must be >= 0")
    return config.training.selection_tolerance * width


# --- search ------------------------------------------------------------------------------------


def search_templates(config: UseCaseConfig) -> list[Template]:
    """The configured templates whose payload family the use case's devices accept."""
    accepted = set(config.model_families)
    chosen = [template(tag) for tag in config.training.templates if TEMPLATE_FAMILY[tag] in accepted]
    if not chosen:
        raise ValueError(
            f"training.templates={[t.value for t in config.training.templates]} yield no model family in "
            f"model_families={[f.value for f in config.model_families]}"
        )
    return chosen


def draw_candidates(config: UseCaseConfig, candidates_per_template: int, seed: int) -> list[tuple[Template, Params]]:
    """Seeded draws, template by template: the same config and seed give the same candidates."""
    if candidates_per_template < 1:
        raise ValueError(f"candidates_per_template={candidates_per_template} must be at least 1")
    rng = np.random.default_rng(seed)
    drawn = []
    for tmpl in search_templates(config):
        ranges = tmpl.ranges(config.training)
        drawn.extend((tmpl, tmpl.draw(rng, ranges)) for _ in range(candidates_per_template))
    return drawn


@dataclass
class _SearchData:
    X: np.ndarray  # float32 (n, n_features), time-ordered
    y: np.ndarray  # float64 (n,)
    folds: list[tuple[np.ndarray, np.ndarray]]
    nthread: int


@dataclass
class _Worker:
    """One worker's own fold matrices, built the first time a template kind needs them."""

    data: _SearchData
    prepared: dict[tuple[str, int], PreparedFold] = field(default_factory=dict)

    def fold(self, tmpl: Template, k: int) -> PreparedFold:
        key = (tmpl.matrix_kind, k)
        if key not in self.prepared:
            train, valid = self.data.folds[k]
            X, y = self.data.X, self.data.y
            self.prepared[key] = tmpl.prepare(X[train], y[train], X[valid], y[valid], nthread=self.data.nthread)
        return self.prepared[key]


def search_line(
    examples: pd.DataFrame,
    config: UseCaseConfig,
    *,
    candidates_per_template: int | None = None,
    nthread: int = 1,
    seed: int | None = None,
    progress: Progress | None = None,
    n_jobs: int | None = None,
) -> SearchResult:
    """Randomized search on one line's examples; every candidate is fit on every fold.

    n_jobs: worker threads (default: every core / nthread). Results do not depend on n_jobs.
    """
    started = time.perf_counter()
    line_id = _single_line(examples)
    features = config.feature_names
    missing = [c for c in ("run_id", "window_start", "window_end", "label", "spec_lower", "spec_upper", *features)
               if c not in examples.columns]  # fmt: skip
    if missing:
        raise ValueError(f"examples lack columns {missing}")
    ordered = examples.sort_values(["window_end", "window_start"], kind="stable").reset_index(drop=True)
    gap = pd.Timedelta(seconds=config.horizon_s + config.label_window_s)
    data = _SearchData(
        X=ordered[features].to_numpy(dtype=np.float32),
        y=ordered["label"].to_numpy(dtype=np.float64),
        folds=time_ordered_folds(ordered, config.training.cv_folds, gap),
        nthread=nthread,
    )
    seed = config.training.seed if seed is None else seed
    drawn = draw_candidates(config, candidates_per_template or config.training.candidates_per_template, seed)
    candidates = _run_candidates(drawn, data, _jobs(n_jobs, nthread, len(drawn)), progress, seed)
    best = min(candidates, key=lambda c: c.cv_rmse)
    tolerance = selection_tolerance(ordered, config)
    chosen = select_candidate(candidates, tolerance)
    return SearchResult(
        line_id=line_id,
        candidates=candidates,
        best=best,
        chosen=chosen,
        experiments=len(candidates) * len(data.folds),
        elapsed_s=time.perf_counter() - started,
        tolerance=tolerance,
        n_folds=len(data.folds),
        n_rows=len(ordered),
        fold_unit=FOLDS_OF_RUNS if len(run_positions(ordered)) > 1 else FOLDS_OF_ONE_RUN,
        out_of_fold=out_of_fold(ordered, data.folds, chosen),
    )


def out_of_fold(
    ordered: pd.DataFrame, folds: list[tuple[np.ndarray, np.ndarray]], chosen: CandidateResult
) -> OutOfFold:
    """The chosen candidate's fold predictions beside the rows they predict."""
    positions = np.concatenate([valid for _, valid in folds])
    predictions = np.concatenate(chosen.fold_predictions).astype(np.float32)
    if len(predictions) != len(positions):
        raise ValueError(f"{len(predictions)} out-of-fold predictions for {len(positions)} validation rows")
    return OutOfFold(rows=ordered.iloc[positions].reset_index(drop=True), predictions=predictions)


def _single_line(examples: pd.DataFrame) -> str:
    if "line_id" not in examples.columns:
        raise ValueError("examples lack columns ['line_id']")
    lines = sorted(map(str, examples["line_id"].unique()))
    if len(lines) != 1:
        raise ValueError(f"search_line needs one line's examples; line_id has {lines[:5]}")
    return lines[0]


def _jobs(n_jobs: int | None, nthread: int, n_candidates: int) -> int:
    if n_jobs is not None and n_jobs < 1:
        raise ValueError(f"n_jobs={n_jobs} must be at least 1")
    if nthread < 1:
        raise ValueError(f"nthread={nthread} must be at least 1")
    wanted = n_jobs if n_jobs is not None else max(1, (os.cpu_count() or 1) // nthread)
    return max(1, min(wanted, n_candidates))


def _run_candidates(
    drawn: list[tuple[Template, Params]], data: _SearchData, n_jobs: int, progress: Progress | None, seed: int
) -> list[CandidateResult]:
    """Workers pull candidates from a shared queue (costs vary a lot); results keep the draw order."""
    results: list[CandidateResult | None] = [None] * len(drawn)
    # costliest kinds first so the last candidates running are short ones and workers finish together
    queue = sorted(range(len(drawn)), key=lambda i: -drawn[i][0].cost_rank)
    lock = threading.Lock()
    total = len(drawn) * len(data.folds)
    done = [0]

    def report() -> None:
        if progress is not None:
            with lock:
                done[0] += 1
                progress(done[0], total)

    def work() -> None:
        worker = _Worker(data)
        while True:
            with lock:
                if not queue:
                    return
                index = queue.pop(0)
            tmpl, params = drawn[index]
            # a per-candidate seed: the same candidate gets the same fits whatever worker runs it
            results[index] = _evaluate(worker, tmpl, params, seed + index, report)

    with ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="search") as pool:
        for future in [pool.submit(work) for _ in range(n_jobs)]:
            future.result()
    return [r for r in results if r is not None]


def _evaluate(
    worker: _Worker, tmpl: Template, params: Params, seed: int, report: Callable[[], None]
) -> CandidateResult:
    folds = [worker.fold(tmpl, k) for k in range(len(worker.data.folds))]  # built once, outside the timing
    started, started_cpu = time.perf_counter(), time.thread_time()
    rmse, mae, rounds, predictions = [], [], [], []
    for fold in folds:
        fit = tmpl.fit_prepared(fold, params, seed, nthread=worker.data.nthread)
        predictions.append(fit.predictions)
        errors = fit.predictions.astype(np.float64) - fold.y_valid
        rmse.append(float(np.sqrt(np.mean(errors**2))))
        mae.append(float(np.mean(np.abs(errors))))
        rounds.append(fit.rounds)
        report()
    return CandidateResult(
        template=tmpl.tag,
        params=params,
        fold_rmse=rmse,
        fold_rounds=rounds,
        cv_rmse=float(np.mean(rmse)),
        cv_mae=float(np.mean(mae)),
        fit_seconds=time.perf_counter() - started,
        fit_cpu_seconds=time.thread_time() - started_cpu,
        fold_predictions=tuple(predictions),
    )


__all__ = [
    "CandidateResult",
    "OutOfFold",
    "SearchResult",
    "draw_candidates",
    "search_line",
    "search_templates",
    "select_candidate",
    "selection_tolerance",
    "run_positions",
    "time_ordered_folds",
]
