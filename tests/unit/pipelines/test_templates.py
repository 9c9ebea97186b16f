"""Model templates: ranges, draws, fits, and fp32 parity of every template's export."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from synthetic_line_examples import synthetic_examples

from edgeloop.model_runtime.scorer import load_payload
from edgeloop.sagemaker_pipelines.steps.export import export_model, parity_error, payload_from_booster
from edgeloop.sagemaker_pipelines.steps.templates import (
    MAX_TREE_DEPTH,
    TEMPLATES,
    LassoProblem,
    Standardization,
    template,
)
from edgeloop.sagemaker_pipelines.steps.train import load_trained, save_trained, train_line_model
from edgeloop.schemas import load_use_case
from edgeloop.schemas.model import TEMPLATE_FAMILY, ModelFamily, ModelTemplate, Precision
from edgeloop.schemas.use_case import ParameterRange, TrainingConfig

FEATURES = [f"f{i}" for i in range(6)]


def _scorer(payload: bytes):
    return load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(4)
    X = (rng.normal(size=(400, 6)) * [1, 5, 0.1, 2, 3, 1] + [0, 100, 1, -5, 0, 7]).astype(np.float32)
    y = 2.0 + 0.8 * X[:, 0] - 0.05 * X[:, 1] + 0.3 * np.tanh(X[:, 3] + 5) + rng.normal(scale=0.05, size=400)
    X[rng.random(X.shape) < 0.05] = np.nan
    return X, y


def test_templates_are_ranked_simplest_first():
    assert [TEMPLATES[tag].cost_rank for tag in ModelTemplate] == [0, 1, 2]
    assert template("lasso") is TEMPLATES[ModelTemplate.LASSO]
    with pytest.raises(ValueError, match="template='svm'"):
        template("svm")


def test_config_ranges_replace_defaults_and_unknown_names_are_refused():
    config = TrainingConfig(ranges={"xgboost": {"max_depth": ParameterRange(low=2, high=3, integer=True)}})
    ranges = TEMPLATES[ModelTemplate.XGBOOST].ranges(config)
    assert ranges["max_depth"] == ParameterRange(low=2, high=3, integer=True)
    assert ranges["eta"] == TEMPLATES[ModelTemplate.XGBOOST].default_ranges["eta"]
    typo = TrainingConfig(ranges={"lasso": {"alpah": ParameterRange(low=0.1, high=1)}})
    with pytest.raises(ValueError, match=r"training.ranges.lasso names \['alpah'\]; lasso has \['alpha'\]"):
        TEMPLATES[ModelTemplate.LASSO].ranges(typo)
    too_deep = TrainingConfig(ranges={"random_forest": {"max_depth": ParameterRange(low=4, high=12, integer=True)}})
    with pytest.raises(ValueError, match=f"max_depth high=12.0 exceeds {MAX_TREE_DEPTH}"):
        TEMPLATES[ModelTemplate.RANDOM_FOREST].ranges(too_deep)


@pytest.mark.parametrize("tag", list(ModelTemplate))
def test_draws_stay_in_range_and_respect_integer_and_log(tag):
    tmpl = TEMPLATES[tag]
    ranges = tmpl.ranges()
    rng = np.random.default_rng(0)
    draws = [tmpl.draw(rng, ranges) for _ in range(200)]
    for name, bounds in ranges.items():
        values = np.array([d[name] for d in draws])
        assert bounds.low <= values.min() and values.max() <= bounds.high
        if bounds.integer:
            assert all(isinstance(d[name], int) for d in draws)
        if bounds.log and not bounds.integer:  # log-uniform: the median sits near the geometric middle
            span = np.log(bounds.high) - np.log(bounds.low)
            assert abs(np.log(np.median(values)) - np.log(bounds.low) - span / 2) < 0.15 * span


def test_unknown_parameters_are_refused(data):
    X, y = data
    with pytest.raises(ValueError, match=r"random_forest has no parameters \['eta'\]"):
        TEMPLATES[ModelTemplate.RANDOM_FOREST].fit(X, y, {"eta": 0.1}, seed=0)


def _params(tag: ModelTemplate) -> dict:
    if tag == ModelTemplate.LASSO:
        return {"alpha": 1e-3}  # a light penalty: the test is about parity, not about regularization
    return TEMPLATES[tag].draw(np.random.default_rng(1), TEMPLATES[tag].ranges())


@pytest.mark.parametrize("tag", list(ModelTemplate))
def test_each_template_fits_and_its_fp32_payload_is_bit_exact(tag, data):
    X, y = data
    fitted = TEMPLATES[tag].fit(X, y, _params(tag), seed=0)
    predictions = fitted.predict(X)
    assert np.sqrt(np.mean((predictions - y) ** 2)) < 0.6 * np.std(y)
    payload = payload_from_booster(
        fitted.booster, model_id="m", version="1.0.0", features=FEATURES, standardization=fitted.standardization
    )
    assert parity_error(fitted.booster, payload, X, fitted.standardization) == 0.0
    scorer = _scorer(payload)
    np.testing.assert_array_equal(scorer.predict(X).view(np.uint32), predictions.view(np.uint32))
    assert scorer.predict_one(X[7]) == predictions[7]


def test_random_forest_is_one_round_of_parallel_trees(data):
    X, y = data
    params = {**_params(ModelTemplate.RANDOM_FOREST), "n_trees": 17}
    fitted = TEMPLATES[ModelTemplate.RANDOM_FOREST].fit(X, y, params, seed=0)
    config = json.loads(fitted.booster.save_config())
    assert fitted.booster.num_boosted_rounds() == 1
    assert int(config["learner"]["gradient_booster"]["gbtree_model_param"]["num_parallel_tree"]) == 17
    payload = payload_from_booster(fitted.booster, model_id="m", version="1.0.0", features=FEATURES)
    assert _scorer(payload).header["n_trees"] == 17


def test_lasso_standardizes_and_treats_missing_as_the_mean(data):
    X, y = data
    fitted = TEMPLATES[ModelTemplate.LASSO].fit(X, y, {"alpha": 1e-3}, seed=0)
    scaling = fitted.standardization
    np.testing.assert_allclose(scaling.center, np.nanmean(X, axis=0), rtol=1e-5)
    np.testing.assert_allclose(scaling.scale, np.nanstd(X, axis=0), rtol=1e-5)
    row = X[0].copy()
    row[1] = np.nan
    at_mean = X[0].copy()
    at_mean[1] = scaling.center[1]
    assert fitted.predict(row[None])[0] == pytest.approx(fitted.predict(at_mean[None])[0], abs=1e-5)
    payload = payload_from_booster(fitted.booster, model_id="m", version="1.0.0", features=FEATURES,
                                   standardization=scaling)  # fmt: skip
    assert _scorer(payload).predict_one(row) == fitted.predict(row[None])[0]


def test_lasso_solves_least_squares_and_l1_zeroes_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))
    y = 3.0 + X @ np.array([1.5, -2.0, 0.0, 0.3]) + rng.normal(scale=0.01, size=500)
    scaling = Standardization.fit(X)
    Xs = scaling.apply(X).astype(np.float64)
    problem = LassoProblem.build(Xs, y)
    least_squares, *_ = np.linalg.lstsq(np.c_[np.ones(500), Xs], y, rcond=None)
    np.testing.assert_allclose(problem.solve(0.0), least_squares[1:], atol=1e-5)
    assert problem.y_mean == pytest.approx(least_squares[0], abs=1e-3)
    sparse = problem.solve(0.5)
    assert sparse[2] == 0.0 and sparse[3] == 0.0 and abs(sparse[0]) > 0 and abs(sparse[1]) > 0
    assert not problem.solve(100.0).any()  # a huge penalty predicts the mean


def test_lasso_is_exact_on_nearly_collinear_features_where_coordinate_descent_crawls():
    """Pack stats of one metric are nearly collinear and a change-mode label needs cancelling weights on
    them: the active-set solution meets the optimality conditions and is no worse than coordinate descent."""
    rng = np.random.default_rng(1)
    level = np.cumsum(rng.normal(size=3000))
    stats = [level + rng.normal(scale=s, size=3000) for s in (0.05, 0.1, 0.2)]  # mean, last, min...
    X = np.c_[np.array(stats).T, rng.normal(size=(3000, 3))]
    y = (stats[0] - stats[1]) + 0.1 * X[:, 3] + rng.normal(scale=0.01, size=3000)  # future - last
    problem = LassoProblem.build(Standardization.fit(X).apply(X).astype(np.float64), y)
    gram, correlation = problem.gram, problem.correlation
    objective = lambda w, alpha: 0.5 * w @ gram @ w - correlation @ w + alpha * np.abs(w).sum()  # noqa: E731
    for alpha in (1e-4, 1e-3, 1e-2):
        weights = problem.active_set(alpha)
        assert weights is not None and np.array_equal(problem.solve(alpha), weights)
        gradient, active = correlation - gram @ weights, weights != 0
        np.testing.assert_allclose(gradient[active], alpha * np.sign(weights[active]), rtol=1e-6, atol=1e-12)
        assert np.all(np.abs(gradient[~active]) <= alpha * (1 + 1e-9))
        crawled = objective(problem.coordinate_descent(alpha), alpha)
        assert objective(weights, alpha) <= crawled + 1e-15
        if alpha == 1e-4:  # weights of about +-12.8 on the two near twins: 2000 sweeps stop far short of them
            assert objective(weights, alpha) < crawled - 1e-3 and np.abs(weights).max() > 10


def test_a_constant_or_empty_feature_is_left_unscaled():
    X = np.array([[1.0, np.nan, 2.0], [1.0, np.nan, 4.0]], dtype=np.float32)
    scaling = Standardization.fit(X)
    np.testing.assert_array_equal(scaling.scale, np.array([1, 1, 1], np.float32))
    np.testing.assert_array_equal(scaling.center, np.array([1, 0, 3], np.float32))


# --- through train and export --------------------------------------------------------------------


@pytest.fixture(scope="module")
def config():
    return load_use_case("extrusion")


def _only(config, tag: ModelTemplate):
    training = config.training.model_copy(update={"templates": [tag], "cv_folds": 2})
    return config.model_copy(update={"training": training, "model_families": list(ModelFamily)})


@pytest.mark.parametrize("tag", list(ModelTemplate))
def test_each_template_trains_exports_and_round_trips(tag, config, tmp_path):
    examples = synthetic_examples(config, n=240, seed=2)
    trained = train_line_model(examples, _only(config, tag), candidates_per_template=2)
    assert trained.template == tag and trained.cv_rmse is not None
    assert trained.search_summary["candidates_per_template"] == {tag.value: 2}
    assert trained.search_summary["experiments"] == 4
    assert (trained.standardization is not None) == (tag == ModelTemplate.LASSO)
    exported = export_model(trained, model_id="m", version="1.0.0", use_case="extrusion", line_ids=["line-1"],
                            target="cold_od_average", code_version="abc1234")  # fmt: skip
    manifest = exported.manifest
    assert manifest.template == tag and manifest.family == TEMPLATE_FAMILY[tag]
    assert manifest.hyperparameters == trained.hyperparameters and manifest.cv_rmse == trained.cv_rmse
    assert manifest.code_version == "abc1234" and manifest.tier(Precision.FP32).max_abs_error == 0.0
    reloaded = load_trained(save_trained(trained, tmp_path / "line-1"))
    assert (reloaded.template, reloaded.hyperparameters, reloaded.cv_rmse, reloaded.search_summary) == (
        trained.template, trained.hyperparameters, trained.cv_rmse, trained.search_summary)  # fmt: skip
    np.testing.assert_array_equal(reloaded.predict(trained.X_test), trained.predict(trained.X_test))
    again = export_model(reloaded, model_id="m", version="1.0.0", use_case="extrusion", line_ids=["line-1"],
                         target="cold_od_average", created_at=manifest.created_at, code_version="abc1234")  # fmt: skip
    assert again.payloads == exported.payloads
