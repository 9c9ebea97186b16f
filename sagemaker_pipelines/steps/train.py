"""Train one model per line on labeled metric packs: randomized search, selection, refit, test.

The last 25% of examples by window_end form the test set. A training example's label averages the
target over [window_end + horizon, window_end + horizon + label_window), so training examples whose
label window reaches into the test period are dropped: that gap keeps test labels out of training.
The search (search.py: templates x random draws, time-ordered CV folds) runs on the training rows
only; the chosen candidate is refit on all of them and scored once on the test block. Its violation
decision margin (model_runtime/decision.py) is chosen on the chosen candidate's out-of-fold predictions
on the folds' validation blocks, training rows only (operating_point.choose_margin: the use case's
decision.target_recall_violation at the best precision), and decides the test block's classes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from edgeloop.cloud.packing.labels import predictable, training_labels
from edgeloop.model_runtime.decision import classify_levels
from edgeloop.model_runtime.label_mode import current_index, to_level
from edgeloop.schemas.model import ModelMetrics, ModelTemplate
from edgeloop.schemas.training import EXAMPLE_META_COLUMNS, ViolationClass
from edgeloop.schemas.use_case import LabelMode, UseCaseConfig, resolve_use_case

from .operating_point import OperatingPoint, choose_margin
from .search import Progress, SearchResult, search_line
from .templates import FittedModel, Standardization, template

TEST_FRACTION = 0.25
MIN_SPLIT_ROWS = 2  # fewer train or test rows than this cannot yield a model and a metric

EXAMPLE_COLUMNS = EXAMPLE_META_COLUMNS


@dataclass(frozen=True)
class TrainedModel:
    booster: xgb.Booster
    feature_names: list[str]
    metrics: ModelMetrics
    training_start: datetime  # earliest window_start of the training rows
    training_end: datetime  # latest window_end of the training rows
    X_test: np.ndarray  # float32 (n_test, n_features), kept for device parity checks
    y_test: np.ndarray  # float64 (n_test,)
    training_data_sha256: str
    test_start: datetime  # earliest window_start of the test rows
    # lineage; the defaults describe models trained before the search existed
    template: ModelTemplate = ModelTemplate.XGBOOST
    hyperparameters: dict[str, float | int] = field(default_factory=dict)
    cv_rmse: float | None = None
    search_summary: dict = field(default_factory=dict)  # SearchResult.summary()
    standardization: Standardization | None = None  # lasso: features are standardized before the weights
    # change mode: the booster predicts label minus current_feature (y_test stays the level label)
    label_mode: LabelMode = LabelMode.LEVEL
    current_feature: str | None = None
    # the violation decision margin (decision.py), chosen on out-of-fold predictions of the training folds,
    # and that choice's out-of-fold operating point (None: models trained before the margin existed)
    decision_margin: float = 0.0
    operating_point: OperatingPoint | None = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Level predictions (float32) on raw features, what the fp32 payload's scorer reproduces: the training
        library's own output, plus the current value in change mode (label_mode.to_level)."""
        return to_level(self.predict_raw(X), X, self.label_mode, self.current_column)

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        """The training library's float32 output: the level, or in change mode the change."""
        return FittedModel(self.template, self.booster, self.hyperparameters, self.standardization).predict(X)

    @property
    def current_column(self) -> int | None:
        """Column of the current value among feature_names (change mode), else None."""
        if self.label_mode == LabelMode.LEVEL:
            return None
        return current_index(self.feature_names, self.current_feature or "")


@dataclass(frozen=True)
class TimeSplit:
    train: pd.DataFrame
    test: pd.DataFrame
    gap: pd.Timedelta


def check_examples(examples: pd.DataFrame, config: UseCaseConfig) -> None:
    missing = [c for c in (*EXAMPLE_COLUMNS, *config.feature_names) if c not in examples.columns]
    if missing:
        raise ValueError(f"examples lack columns {missing}")
    for column in ("window_start", "window_end"):
        dtype = examples[column].dtype
        if not isinstance(dtype, pd.DatetimeTZDtype):
            raise ValueError(f"column {column!r} has dtype {dtype}; expected datetime64[ns, UTC]")
    if examples["label"].isna().any():
        raise ValueError(f"column 'label' has {int(examples['label'].isna().sum())} missing values")
    unknown = sorted(set(examples["label_class"]) - {c.value for c in ViolationClass})
    if unknown:
        raise ValueError(f"column 'label_class' has values {unknown}; expected {[c.value for c in ViolationClass]}")


def time_split(examples: pd.DataFrame, config: UseCaseConfig, test_fraction: float = TEST_FRACTION) -> TimeSplit:
    """Last `test_fraction` by window_end is the test set; train labels must end before test windows start."""
    ordered = examples.sort_values(["window_end", "window_start"], kind="stable").reset_index(drop=True)
    n_test = max(1, int(np.ceil(len(ordered) * test_fraction)))
    test = ordered.iloc[len(ordered) - n_test :]
    gap = pd.Timedelta(seconds=config.horizon_s + config.label_window_s)
    label_end = ordered["window_end"] + gap
    train = ordered.iloc[: len(ordered) - n_test]
    train = train[label_end.iloc[: len(train)] <= test["window_start"].min()]
    if len(train) < MIN_SPLIT_ROWS or len(test) < MIN_SPLIT_ROWS:
        raise ValueError(
            f"{len(examples)} examples leave {len(train)} train and {len(test)} test rows after the "
            f"{gap} gap; need at least {MIN_SPLIT_ROWS} of each"
        )
    return TimeSplit(train=train, test=test, gap=gap)


def training_data_sha256(frame: pd.DataFrame, feature_names: list[str]) -> str:
    """Digest of exactly what the model learned from: feature names, X, y and the windows, in row order."""
    digest = hashlib.sha256()
    digest.update("\n".join(feature_names).encode())
    digest.update(np.ascontiguousarray(frame[feature_names].to_numpy(dtype="<f4")).tobytes())
    digest.update(np.ascontiguousarray(frame["label"].to_numpy(dtype="<f8")).tobytes())
    for column in ("window_start", "window_end"):
        nanoseconds = frame[column].dt.tz_convert("UTC").dt.as_unit("ns").astype("int64").to_numpy()
        digest.update(nanoseconds.astype("<i8").tobytes())
    return digest.hexdigest()


def evaluate(predictions: np.ndarray, test: pd.DataFrame, n_train: int, margin: float = 0.0) -> ModelMetrics:
    """Test-block metrics; violation classes at the model's decision margin (model_runtime/decision.py)."""
    y = test["label"].to_numpy(dtype=np.float64)
    errors = predictions.astype(np.float64) - y
    predicted = classify_levels(predictions, test["spec_lower"].to_numpy(), test["spec_upper"].to_numpy(), margin)
    actual = test["label_class"].astype(str).to_numpy()
    precision, recall = {}, {}
    for cls in ViolationClass:
        hits = int(((predicted == cls.value) & (actual == cls.value)).sum())
        # undefined ratios (class never predicted / never present) are left out rather than guessed
        if (predicted == cls.value).any():
            precision[cls.value] = hits / int((predicted == cls.value).sum())
        if (actual == cls.value).any():
            recall[cls.value] = hits / int((actual == cls.value).sum())
    return ModelMetrics(
        mse=float(np.mean(errors**2)),
        mae=float(np.mean(np.abs(errors))),
        precision=precision,
        recall=recall,
        n_train=n_train,
        n_test=len(test),
    )


def search_and_refit(
    train: pd.DataFrame,
    config: UseCaseConfig,
    *,
    seed: int,
    candidates_per_template: int | None = None,
    n_jobs: int = 1,
    nthread: int = 1,
    progress: Progress | None = None,
) -> tuple[SearchResult, FittedModel]:
    """The randomized search on the training rows, then the chosen candidate refit on all of them."""
    search = search_line(
        train,
        config,
        candidates_per_template=candidates_per_template,
        nthread=nthread,
        seed=seed,
        progress=progress,
        n_jobs=n_jobs,
    )
    fitted = template(search.chosen.template).fit(
        train[config.feature_names].to_numpy(dtype=np.float32),
        train["label"].to_numpy(dtype=np.float64),
        search.chosen.refit_params(),
        seed,
        nthread=nthread,
    )
    return search, fitted


def train_line_model(
    examples: pd.DataFrame,
    config: UseCaseConfig,
    *,
    seed: int | None = None,
    candidates_per_template: int | None = None,
    n_jobs: int = 1,
    nthread: int = 1,
    progress: Progress | None = None,
) -> TrainedModel:
    """Search on the training rows, refit the chosen candidate on all of them, score the test block."""
    check_examples(examples, config)
    features = config.feature_names
    split = time_split(predictable(examples, config), config)
    train = split.train.assign(label=training_labels(split.train, config))  # change mode: future minus now
    seed = config.training.seed if seed is None else seed
    search, fitted = search_and_refit(
        train,
        config,
        seed=seed,
        candidates_per_template=candidates_per_template,
        n_jobs=n_jobs,
        nthread=nthread,
        progress=progress,
    )
    chosen = search.chosen
    X_test = split.test[features].to_numpy(dtype=np.float32)
    mode = LabelMode(config.label.mode)  # a model_copy may have left a str
    current = config.current_value_feature if mode == LabelMode.CHANGE else None
    column = None if current is None else features.index(current)
    level = to_level(fitted.predict(X_test), X_test, mode, column)
    point = out_of_fold_operating_point(search, config, mode, column)
    return TrainedModel(
        booster=fitted.booster,
        feature_names=list(features),
        metrics=evaluate(level, split.test, n_train=len(split.train), margin=point.margin),
        training_start=split.train["window_start"].min().to_pydatetime(),
        training_end=split.train["window_end"].max().to_pydatetime(),
        X_test=X_test,
        y_test=split.test["label"].to_numpy(dtype=np.float64),
        training_data_sha256=training_data_sha256(train, features),
        test_start=split.test["window_start"].min().to_pydatetime(),
        template=fitted.template,
        hyperparameters=fitted.hyperparameters,
        cv_rmse=chosen.cv_rmse,
        search_summary=search.summary(),
        standardization=fitted.standardization,
        label_mode=mode,
        current_feature=current,
        decision_margin=point.margin,
        operating_point=point,
    )


def out_of_fold_operating_point(
    search: SearchResult, config: UseCaseConfig, mode: LabelMode, current_column: int | None
) -> OperatingPoint:
    """The decision margin chosen on the chosen candidate's out-of-fold level predictions: training rows only,
    each predicted by a fold fit that did not see it."""
    oof = search.out_of_fold
    if oof is None:
        raise ValueError(f"line {search.line_id!r}: the search kept no out-of-fold predictions")
    X = oof.rows[config.feature_names].to_numpy(dtype=np.float32)
    levels = to_level(oof.predictions, X, mode, current_column)
    decision = config.decision
    return choose_margin(
        levels,
        oof.rows,
        decision.target_recall_violation,
        decision.margins,
        min_precision=decision.min_precision_violation,
    )


def train_lines(
    examples_by_line: dict[str, pd.DataFrame], config: UseCaseConfig, *, max_workers: int = 2, **train_options
) -> dict[str, TrainedModel]:
    """One model per line, lines concurrently (XGBoost releases the GIL while it trains); each line's
    search gets the cores the lines leave over unless train_options sets n_jobs."""
    if max_workers < 1:
        raise ValueError(f"max_workers={max_workers} must be at least 1")
    workers = max(1, min(max_workers, len(examples_by_line)))
    train_options.setdefault("n_jobs", max(1, (os.cpu_count() or 1) // workers))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="train-line") as pool:
        futures = {
            line: pool.submit(train_line_model, examples, config, **train_options)
            for line, examples in examples_by_line.items()
        }
        results = {}
        for line, future in futures.items():
            try:
                results[line] = future.result()
            except ValueError as exc:
                raise ValueError(f"line {line!r}: {exc}") from exc
        return results


# --- persistence between pipeline steps ----------------------------------------------------------

BOOSTER_FILE = "model.ubj"
TEST_SET_FILE = "test_set.npz"
TRAINED_INFO_FILE = "trained.json"


def save_trained(trained: TrainedModel, directory: str | Path) -> Path:
    """Write what the export step needs: the booster, the held-out test set and the training facts."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trained.booster.save_model(directory / BOOSTER_FILE)
    arrays = {"X_test": trained.X_test, "y_test": trained.y_test}
    if trained.standardization is not None:
        arrays.update(feature_center=trained.standardization.center, feature_scale=trained.standardization.scale)
    np.savez(directory / TEST_SET_FILE, **arrays)
    info = {
        "feature_names": trained.feature_names,
        "metrics": trained.metrics.model_dump(mode="json"),
        "training_start": trained.training_start.isoformat(),
        "training_end": trained.training_end.isoformat(),
        "test_start": trained.test_start.isoformat(),
        "training_data_sha256": trained.training_data_sha256,
        "template": trained.template.value,
        "hyperparameters": trained.hyperparameters,
        "cv_rmse": trained.cv_rmse,
        "search_summary": trained.search_summary,
        "label_mode": LabelMode(trained.label_mode).value,
        "current_feature": trained.current_feature,
        "decision_margin": trained.decision_margin,
        "operating_point": None if trained.operating_point is None else trained.operating_point.model_dump(mode="json"),
    }
    (directory / TRAINED_INFO_FILE).write_text(json.dumps(info, indent=2))
    return directory


def load_trained(directory: str | Path) -> TrainedModel:
    directory = Path(directory)
    missing = [f for f in (BOOSTER_FILE, TEST_SET_FILE, TRAINED_INFO_FILE) if not (directory / f).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} lacks {missing}: not a saved trained model")
    booster = xgb.Booster()
    booster.load_model(directory / BOOSTER_FILE)
    info = json.loads((directory / TRAINED_INFO_FILE).read_text())
    with np.load(directory / TEST_SET_FILE, allow_pickle=False) as test_set:
        X_test, y_test = test_set["X_test"], test_set["y_test"]
        standardization = (
            Standardization(center=test_set["feature_center"], scale=test_set["feature_scale"])
            if "feature_center" in test_set.files
            else None
        )
    return TrainedModel(
        booster=booster,
        feature_names=info["feature_names"],
        metrics=ModelMetrics.model_validate(info["metrics"]),
        training_start=datetime.fromisoformat(info["training_start"]),
        training_end=datetime.fromisoformat(info["training_end"]),
        X_test=X_test,
        y_test=y_test,
        training_data_sha256=info["training_data_sha256"],
        test_start=datetime.fromisoformat(info["test_start"]),
        template=ModelTemplate(info.get("template", ModelTemplate.XGBOOST.value)),
        hyperparameters=info.get("hyperparameters", {}),
        cv_rmse=info.get("cv_rmse"),
        search_summary=info.get("search_summary", {}),
        standardization=standardization,
        label_mode=LabelMode(info.get("label_mode", LabelMode.LEVEL.value)),
        current_feature=info.get("current_feature"),
        decision_margin=info.get("decision_margin", 0.0),
        operating_point=None if info.get("operating_point") is None else OperatingPoint(**info["operating_point"]),
    )


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Training step: examples Parquet (all lines) -> <output>/<line_id>/ per line.

    Defaults follow SageMaker's training-job layout: in the pipeline's training job, SageMaker's XGBoost
    container runs this module in script mode with SM_CHANNEL_TRAIN and SM_MODEL_DIR set and the job's
    hyperparameters (use-case, candidates-per-template, seed) as these flags (step_builder.py).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", default=os.environ.get("SM_CHANNEL_TRAIN"), help="Parquet file or directory")
    parser.add_argument("--output", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--use-case", default=None, help="a packaged use case (or $EDGELOOP_USE_CASE)")
    parser.add_argument("--use-case-file", default=None, help="a use-case file (or $EDGELOOP_USE_CASE_FILE)")
    parser.add_argument(
        "--candidates-per-template", type=int, default=None, help="default: the use case's training config"
    )
    parser.add_argument("--seed", type=int, default=None, help="default: the use case's training.seed")
    parser.add_argument("--max-workers", type=int, default=2, help="lines trained at once")
    args = parser.parse_args(argv)
    if not args.examples:
        parser.error("--examples is required (or set SM_CHANNEL_TRAIN)")
    examples = pd.read_parquet(args.examples)
    by_line = {str(line): frame.reset_index(drop=True) for line, frame in examples.groupby("line_id", sort=True)}
    trained = train_lines(
        by_line,
        resolve_use_case(args.use_case, args.use_case_file),
        max_workers=args.max_workers,
        seed=args.seed,
        candidates_per_template=args.candidates_per_template,
    )
    return {line: save_trained(model, Path(args.output) / line) for line, model in trained.items()}


if __name__ == "__main__":
    main()
