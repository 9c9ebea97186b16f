"""The demo's registration decision is the pipeline's: a model that only copies the current value is
refused, nothing is registered or rolled out, and the figures of both sides are reported."""

from __future__ import annotations

import pytest
from evaluate_helpers import CopyCurrentValue, examples_with_current_value, quick_extrusion_config
from rich.console import Console

from edgeloop.demo.gate import COMPARISON_COLUMNS, comparison_rows, decision_lines
from edgeloop.demo.run import DemoRun
from edgeloop.demo.settings import DemoSettings
from edgeloop.sagemaker_pipelines.steps import evaluate as evaluate_step
from edgeloop.sagemaker_pipelines.steps import train as train_step
from edgeloop.sagemaker_pipelines.steps.dataset import reference_split

MODEL_BUCKET = "edgeloop-models-demo-gate-test"
LINE = "line-1"


@pytest.fixture(scope="module")
def config():
    return quick_extrusion_config()


@pytest.fixture(scope="module")
def examples(config):
    return examples_with_current_value(config, LINE)


def test_the_demo_refuses_a_model_that_only_copies_the_current_value(registry, examples, config, monkeypatch, tmp_path):
    trained = train_step.train_line_model(reference_split(examples, config)[0], config)
    copier = CopyCurrentValue(trained.feature_names, config.target_metric)
    monkeypatch.setattr(train_step, "train_lines", lambda by_line, *args, **kwargs: dict.fromkeys(by_line, trained))
    monkeypatch.setattr(evaluate_step, "candidate_scorer", lambda *args, **kwargs: copier)
    demo = DemoRun(DemoSettings(lines=1, workdir=tmp_path / "demo"), Console(file=None, quiet=True))
    demo.use_case = config

    events = demo.train_register_approve({LINE: examples})

    assert events == [] and demo.outcome.models == {} and demo.outcome.rolled_out_things == set()
    evaluation = demo.outcome.evaluations[LINE]
    assert not evaluation.passed and not evaluation.registered
    # no gateway simulated this line here: no oracle, and the reason is kept for the notes
    assert evaluation.oracle is None and evaluation.oracle_missing == "no simulated gateway of this line to replay"
    assert evaluation.report.reason.startswith("no better than persistence: candidate RMSE ")
    _, reference = reference_split(examples, config)
    assert evaluation.report.reference.rows == len(reference)  # judged on the newest whole run(s) only
    assert set(evaluation.reference_runs) == set(reference["run_id"].astype(str))
    rows = comparison_rows(demo.outcome.evaluations)
    assert [row[1] for row in rows] == ["model (REFUSED)", "persistence", "setpoint"]
    rmse = COMPARISON_COLUMNS.index("RMSE")
    assert rows[0][rmse] == rows[1][rmse]  # the copy's RMSE is persistence's
    assert "REFUSED: no better than persistence" in decision_lines(demo.outcome.evaluations)[0]
    assert not demo.outcome.ok
