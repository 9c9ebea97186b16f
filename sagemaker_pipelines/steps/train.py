"""Train one XGBoost regressor per line on labeled metric packs, with a leak-free time split.

The last 25% of examples by window_end form the test set. A training example's label averages the
target over [window_end + horizon, window_end + horizon + label_window), so training examples whose
label window reaches into the test period are dropped: that gap keeps test labels out of training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from edgeloop.schemas.model import ModelMetrics
from edgeloop.schemas.training import ViolationClass
from edgeloop.schemas.use_case import UseCaseConfig, load_use_case

TEST_FRACTION = 0.25
LEARNING_RATE = 0.1
MIN_SPLIT_ROWS = 2  # fewer train or test rows than this cannot yield a model and a metric

EXAMPLE_COLUMNS = (
    "line_id",
    "run_id",
    "window_start",
    "window_end",
    "label",
    "label_class",
    "label_source",
    "spec_lower",
    "spec_upper",
)


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


def classify(predictions: np.ndarray, spec_lower: np.ndarray, spec_upper: np.ndarray) -> np.ndarray:
    """ViolationClass values of predictions against each example's own spec limits."""
    return np.where(
        predictions < spec_lower,
        ViolationClass.LSL.value,
        np.where(predictions > spec_upper, ViolationClass.USL.value, ViolationClass.IN_RANGE.value),
    )


def evaluate(predictions: np.ndarray, test: pd.DataFrame, n_train: int) -> ModelMetrics:
    y = test["label"].to_numpy(dtype=np.float64)
    errors = predictions.astype(np.float64) - y
    predicted = classify(predictions, test["spec_lower"].to_numpy(), test["spec_upper"].to_numpy())
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


def train_line_model(
    examples: pd.DataFrame,
    config: UseCaseConfig,
    *,
    seed: int = 0,
    n_estimators: int = 200,
    max_depth: int = 6,
) -> TrainedModel:
    check_examples(examples, config)
    features = config.feature_names
    split = time_split(examples, config)
    X_train = split.train[features].to_numpy(dtype=np.float32)
    X_test = split.test[features].to_numpy(dtype=np.float32)
    params = {
        "objective": "reg:squarederror",
        "tree_method": "hist",
        "max_depth": max_depth,
        "eta": LEARNING_RATE,
        "seed": seed,
        "nthread": 1,  # one core per line: lines train in parallel instead
    }
    train_matrix = xgb.DMatrix(X_train, label=split.train["label"].to_numpy(), feature_names=features, nthread=1)
    booster = xgb.train(params, train_matrix, num_boost_round=n_estimators)
    predictions = booster.inplace_predict(X_test)
    return TrainedModel(
        booster=booster,
        feature_names=list(features),
        metrics=evaluate(predictions, split.test, n_train=len(split.train)),
        training_start=split.train["window_start"].min().to_pydatetime(),
        training_end=split.train["window_end"].max().to_pydatetime(),
        X_test=X_test,
        y_test=split.test["label"].to_numpy(dtype=np.float64),
        training_data_sha256=training_data_sha256(split.train, features),
        test_start=split.test["window_start"].min().to_pydatetime(),
    )


def train_lines(
    examples_by_line: dict[str, pd.DataFrame], config: UseCaseConfig, *, max_workers: int = 2, **train_options
) -> dict[str, TrainedModel]:
    """One model per line, trained concurrently (XGBoost releases the GIL while it trains)."""
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="train-line") as pool:
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
    np.savez(directory / TEST_SET_FILE, X_test=trained.X_test, y_test=trained.y_test)
    info = {
        "feature_names": trained.feature_names,
        "metrics": trained.metrics.model_dump(mode="json"),
        "training_start": trained.training_start.isoformat(),
        "training_end": trained.training_end.isoformat(),
        "test_start": trained.test_start.isoformat(),
        "training_data_sha256": trained.training_data_sha256,
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
    )


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Training step: examples Parquet (all lines) -> <output>/<line_id>/ per line.

    Defaults follow SageMaker's training-job layout, so the same module runs as a step's script.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", default=os.environ.get("SM_CHANNEL_TRAIN"), help="Parquet file or directory")
    parser.add_argument("--output", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--use-case", default="extrusion")
    parser.add_argument("--n-estimators", type=int, default=200)
    parser.add_argument("--max-depth", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-workers", type=int, default=2)
    args = parser.parse_args(argv)
    if not args.examples:
        parser.error("--examples is required (or set SM_CHANNEL_TRAIN)")
    examples = pd.read_parquet(args.examples)
    by_line = {str(line): frame.reset_index(drop=True) for line, frame in examples.groupby("line_id", sort=True)}
    trained = train_lines(
        by_line,
        load_use_case(args.use_case),
        max_workers=args.max_workers,
        seed=args.seed,
        n_estimators=args.n_estimators,
        max_depth=args.max_depth,
    )
    return {line: save_trained(model, Path(args.output) / line) for line, model in trained.items()}


if __name__ == "__main__":
    main()
