"""The demo's oracle: a replay of a line's simulator from its gateway config is that line (checked against
its labels), and the oracle is scored on the rows the model is scored on, beside it in the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from moto import mock_aws
from rich.console import Console

from edgeloop.cloud.packing.examples import assemble_examples
from edgeloop.cloud.packing.labels import predictable
from edgeloop.demo.gate import comparison_rows, evaluate_line, recall_zero_notes, split_lines
from edgeloop.demo.oracle import check_replay, replay_hidden
from edgeloop.demo.run import DemoRun
from edgeloop.demo.settings import DEMO_RUNTIME_VERSION, DemoSettings
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import METRICS
from edgeloop.device_shims.simulated_gateway import SimulatedGatewayConfig
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.sagemaker_pipelines.steps.train import train_line_model
from edgeloop.schemas import Architecture, ContextKind, load_use_case

LINE = "line-1"
SEED = 7
START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z
HISTORY_S = 5 * 3600  # the simulator's runs last 1.5-3 h: at least two, the newest held out


@pytest.fixture(scope="module")
def config():
    base = load_use_case("extrusion")
    training = base.training.model_copy(update={"candidates_per_template": 1, "cv_folds": 2})
    return base.model_copy(update={"training": training})


@pytest.fixture(scope="module")
def examples(config) -> pd.DataFrame:
    """The line's labeled packs, packed as the demo packs what its gateway sent (its runs' context)."""
    simulator = ExtrusionLineSimulator(LINE, seed=SEED, start_ms=START_MS)
    metric, time_ms, value = simulator.advance_arrays(HISTORY_S)
    curated = pd.DataFrame(
        {
            "line_id": LINE,
            "metric": pd.Categorical.from_codes(metric.astype(np.int8), categories=list(METRICS)),
            "time_ms": time_ms,
            "value": value,
        }
    )
    runs = [i for i in simulator.context_intervals() if i.kind is ContextKind.RUN]
    return assemble_examples(curated, runs, config).examples


def simulation(tmp_path: Path, seed: int = SEED) -> SimulatedGatewayConfig:
    gateway = GatewayConfig(
        thing_name=f"gw-{LINE}",
        site="plant-a",
        line_id=LINE,
        use_case="extrusion",
        architecture=Architecture.X86_64,
        runtime_version=DEMO_RUNTIME_VERSION,
        transport="greengrass",
        buffer_path=tmp_path / "buffer.sqlite",
    )
    return SimulatedGatewayConfig(
        gateway=gateway,
        seed=seed,
        sim_start_ms=START_MS,
        history_s=HISTORY_S,
        state_file=tmp_path / "state.json",
        stop_file=tmp_path / "stop",
        context_file=tmp_path / "context.jsonl",
    )


def test_the_replay_from_the_gateway_config_is_the_line_and_another_seed_is_not(examples, config, tmp_path):
    hidden = replay_hidden(simulation(tmp_path))
    assert len(hidden) == HISTORY_S
    check_replay(hidden, examples, config, LINE)
    with pytest.raises(ValueError, match=f"{LINE}: the replayed simulator is not the line's: median"):
        check_replay(replay_hidden(simulation(tmp_path, seed=SEED + 1)), examples, config, LINE)


def test_the_oracle_is_scored_on_the_models_rows_and_sits_beside_it(examples, config, tmp_path, monkeypatch):
    (train, reference) = split_lines({LINE: examples}, config)[LINE]
    trained = train_line_model(train, config)
    with mock_aws():  # evaluate looks for a champion in the (empty) registry
        evaluation = evaluate_line(trained, train, reference, config, LINE)
    demo = DemoRun(DemoSettings(lines=1, workdir=tmp_path / "demo"), Console(file=None, quiet=True))
    demo.use_case = config
    demo.outcome.evaluations[LINE] = evaluation
    monkeypatch.setattr(demo.gateways, "simulation", lambda line_id: simulation(tmp_path))

    demo._add_oracle(LINE, trained, (train, reference), examples)

    oracle = evaluation.oracle
    assert oracle is not None
    assert oracle.metrics.n_test == evaluation.report.candidate.n_test == len(predictable(reference, config))
    assert 0.0 <= oracle.margin <= config.decision.max_margin
    present = [cls for cls, count in evaluation.class_counts.items() if count]
    assert set(oracle.metrics.recall) == set(present)  # scored on the same rows: the same classes occur
    at = oracle.recall_at_model_precision
    assert at is None or 0.0 <= at <= 1.0
    rows = comparison_rows({LINE: evaluation})
    assert rows[-1][1] == "oracle (hidden state)" and rows[-1][2] == f"{oracle.margin:.2f}"
    assert rows[0][2] == f"{trained.decision_margin:.2f}"
    # whatever the figures, no 0.00 of a present class is left without a note
    zeros = sum(row[-1].count("0.00*") for row in rows)
    assert (zeros == 0) == (recall_zero_notes({LINE: evaluation}) == [])
