"""Running the evaluate step's `main` as the pipeline does: a saved model, its reference data and dataset.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from synthetic_line_examples import synthetic_examples

from edgeloop.sagemaker_pipelines.steps import evaluate as evaluate_step
from edgeloop.sagemaker_pipelines.steps.dataset import DatasetInfo
from edgeloop.sagemaker_pipelines.steps.train import save_trained
from edgeloop.schemas import load_use_case


def write_evaluate_inputs(
    trained, split: tuple[pd.DataFrame, pd.DataFrame], line_id: str, tmp_path: Path
) -> DatasetInfo:
    """The model under model/<line>, the reference examples and dataset.json, as the steps before leave them."""
    train, reference = split
    save_trained(trained, tmp_path / "model" / line_id)
    reference.to_parquet(tmp_path / "examples.parquet", index=False)
    info = DatasetInfo(
        line_id=line_id, use_case="extrusion", start=None, end=None, rows_train=len(train),
        rows_reference=len(reference), content_sha256="a" * 64, train_sha256="b" * 64, reference_sha256="c" * 64,
        data_start=train["window_start"].min(), data_end=reference["window_end"].max(),
    )  # fmt: skip
    (tmp_path / "dataset.json").write_text(info.model_dump_json())
    return info


def run_evaluate_main(tmp_path: Path, model_bucket: str) -> tuple[object, dict]:
    """The step's report and the evaluation.json it wrote under tmp_path/out."""
    report = evaluate_step.main(
        ["--model", str(tmp_path / "model"), "--reference", str(tmp_path), "--dataset", str(tmp_path),
         "--use-case", "extrusion", "--model-bucket", model_bucket, "--output", str(tmp_path / "out")]
    )  # fmt: skip
    return report, json.loads((tmp_path / "out" / "evaluation.json").read_text())


def quick_extrusion_config():
    """The extrusion use case with the smallest search (one candidate per template, two folds)."""
    base = load_use_case("extrusion")
    training = base.training.model_copy(update={"candidates_per_template": 1, "cv_folds": 2})
    return base.model_copy(update={"training": training})


def examples_with_current_value(config, line_id: str) -> pd.DataFrame:
    """Synthetic packs whose `<target>__last` is the current value: the label's drift seen 10 strides
    (5 minutes) earlier, so persistence is a fair baseline."""
    examples = synthetic_examples(config, line_id=line_id, n=600, seed=4)
    examples[f"{config.target_metric}__last"] = examples["label"].shift(10).bfill().to_numpy()
    return examples


class CopyCurrentValue:
    """A device scorer stand-in for a model that only copies the current value (<target>__last)."""

    decision_margin = 0.0  # decides at the spec limits, as a payload without a margin does

    def __init__(self, features: list[str], target: str) -> None:
        self.features = features
        self.column = features.index(f"{target}__last")

    def predict(self, X: np.ndarray) -> np.ndarray:
        return X[:, self.column].astype(np.float32)
