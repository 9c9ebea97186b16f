"""label.mode change end to end (issue 16): a line trained on future-minus-now labels, evaluated in
level space, exported with its mode, saved and loaded, and scored by the device code bit for bit as
the training library's prediction plus the float32 current value."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from edgeloop.model_runtime.label_mode import level_from_change
from edgeloop.model_runtime.scorer import load_payload
from edgeloop.sagemaker_pipelines.steps.export import export_model
from edgeloop.sagemaker_pipelines.steps.train import load_trained, save_trained, train_line_model
from edgeloop.schemas import load_use_case
from edgeloop.schemas.model import ModelTemplate, Precision
from edgeloop.schemas.training import ViolationClass
from edgeloop.schemas.use_case import LabelMode, TrainingConfig

EXTRUSION = load_use_case("extrusion")
LOWER, UPPER = 9.8, 10.2


def config(mode: LabelMode, template: ModelTemplate):
    training = TrainingConfig(templates=[template], candidates_per_template=2, cv_folds=3)
    return EXTRUSION.model_copy(
        update={"label": EXTRUSION.label.model_copy(update={"mode": mode}), "training": training}
    )


def slow_line(n: int = 360, seed: int = 5) -> pd.DataFrame:
    """A random-walk level (the target's last value) with a small learnable step ahead: persistence is
    already good, the change is what a model can add. A few packs lack the current value."""
    rng = np.random.default_rng(seed)
    names = EXTRUSION.feature_names
    level = 10 + np.cumsum(rng.normal(scale=0.02, size=n))
    push = rng.normal(size=n)
    features = rng.normal(size=(n, len(names)))
    features[:, names.index(EXTRUSION.current_value_feature)] = level
    features[:, names.index("temp_die__last")] = push
    features[rng.choice(n, 6, replace=False), names.index(EXTRUSION.current_value_feature)] = np.nan
    label = level + 0.05 * push + rng.normal(scale=0.005, size=n)
    start = pd.Timestamp("2026-03-01T06:00:00Z") + pd.to_timedelta(np.arange(n) * 30, unit="s")
    classes = np.where(label < LOWER, ViolationClass.LSL.value, ViolationClass.IN_RANGE.value)
    meta = pd.DataFrame(
        {
            "line_id": "line-1",
            "run_id": [f"run-{i // 30}" for i in range(n)],
            "window_start": start,
            "window_end": start + pd.Timedelta(seconds=EXTRUSION.pack_window_s),
            "label": label,
            "label_class": np.where(label > UPPER, ViolationClass.USL.value, classes),
            "label_source": "measured",
            "spec_lower": LOWER,
            "spec_upper": UPPER,
        }
    )
    return pd.concat([meta, pd.DataFrame(features, columns=names)], axis=1)


@pytest.mark.parametrize("template", [ModelTemplate.XGBOOST, ModelTemplate.LASSO])
def test_a_change_model_trains_evaluates_and_exports_in_level_space(template, tmp_path):
    examples = slow_line()
    trained = train_line_model(examples, config(LabelMode.CHANGE, template), seed=0)
    assert (trained.label_mode, trained.current_feature) == (LabelMode.CHANGE, EXTRUSION.current_value_feature)
    current = trained.X_test[:, trained.current_column]
    assert not np.isnan(current).any(), "packs without a current value are left out in change mode"
    raw, level = trained.predict_raw(trained.X_test), trained.predict(trained.X_test)
    assert abs(float(np.mean(raw))) < 0.2, "the booster learned the change, not the level"
    np.testing.assert_array_equal(level.view(np.uint32), level_from_change(raw, current).view(np.uint32))
    rmse = float(np.sqrt(np.mean((level - trained.y_test) ** 2)))
    assert trained.metrics.mse == pytest.approx(rmse**2), "metrics are of level predictions against level labels"
    assert rmse < 0.5 * float(np.std(trained.y_test - current)), "beats persistence on this line"

    loaded = load_trained(save_trained(trained, tmp_path / "line-1"))
    assert (loaded.label_mode, loaded.current_feature) == (trained.label_mode, trained.current_feature)
    exported = export_model(
        loaded,
        model_id="extrusion-line-1",
        version="1.0.0",
        use_case="extrusion",
        line_ids=["line-1"],
        target=EXTRUSION.target_metric,
        precisions=(Precision.FP32, Precision.FP16_LEAVES),
    )
    fp32 = exported.payloads[Precision.FP32]
    assert exported.manifest.tiers[0].max_abs_error == 0.0
    scorer = load_payload(fp32, expected_sha256=hashlib.sha256(fp32).hexdigest())
    assert (scorer.header["label_mode"], scorer.header["current_feature"]) == ("change", trained.current_feature)
    np.testing.assert_array_equal(scorer.predict(trained.X_test).view(np.uint32), level.view(np.uint32))
    assert scorer.predict_one(trained.X_test[3]) == level[3]


def test_level_mode_is_unchanged():
    trained = train_line_model(slow_line(), config(LabelMode.LEVEL, ModelTemplate.LASSO), seed=0)
    assert trained.label_mode == LabelMode.LEVEL and trained.current_column is None
    np.testing.assert_array_equal(trained.predict(trained.X_test), trained.predict_raw(trained.X_test))
    assert abs(float(np.mean(trained.predict_raw(trained.X_test))) - 10) < 0.5, "a level model predicts levels"
