"""The oracle beside each demo line's model: what the line's physics allow at the use case's horizon.

Each line's simulator runs in its gateway process; the demo replays it here with the arguments of the
gateway's own config (same seed, start and simulator config: the simulator's output depends on nothing
else), recording its hidden state, and checks the replay against the line's labels before using it.
The oracle (edgeloop/oracle.py) is the model's learner and hyper-parameters trained on the model's own
training rows plus that hidden state, its decision margin tuned the model's way; it is scored on the
same held-out rows with the one metric definition (baselines.score_predictions) at that margin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from edgeloop.demo.gate import OracleFigures
from edgeloop.schemas import UseCaseConfig

if TYPE_CHECKING:
    from edgeloop.device_shims.extrusion_hidden import ExtrusionHidden
    from edgeloop.device_shims.simulated_gateway import SimulatedGatewayConfig
    from edgeloop.sagemaker_pipelines.steps.train import TrainedModel

# The labels are the gauge's 30 s means of the true cold OD plus 0.0015 mm sensor noise (a few hundredths
# of a millimetre between different lines' states): a replay of the same line lies well within this.
REPLAY_TOLERANCE_MM = 0.002


def replay_hidden(simulation: SimulatedGatewayConfig) -> ExtrusionHidden:
    """The hidden state of the history a gateway simulated, from the gateway's config."""
    from edgeloop.device_shims.extrusion import ExtrusionLineSimulator

    simulator = ExtrusionLineSimulator(
        simulation.gateway.line_id,
        seed=simulation.seed,
        start_ms=simulation.sim_start_ms,
        config=simulation.simulator,
        record_hidden=True,
    )
    simulator.advance_arrays(simulation.history_s)
    return simulator.hidden_record()


def check_replay(hidden: ExtrusionHidden, examples: pd.DataFrame, use_case: UseCaseConfig, line_id: str) -> None:
    """A ValueError unless the replay's true target over each label window matches the line's labels."""
    ends_ms = pd.to_datetime(examples["window_end"], utc=True).dt.as_unit("ms").astype("int64").to_numpy()
    truth = hidden.true_label(ends_ms, use_case.horizon_s, use_case.label_window_s)
    gap = np.abs(truth - examples["label"].to_numpy(dtype=np.float64))
    median = float(np.nanmedian(gap)) if np.isfinite(gap).any() else float("nan")
    if not median <= REPLAY_TOLERANCE_MM:
        raise ValueError(
            f"{line_id}: the replayed simulator is not the line's: median |label - replayed true {use_case.target_metric}|"
            f" = {median:.4g} mm over {len(examples)} examples > REPLAY_TOLERANCE_MM {REPLAY_TOLERANCE_MM}"
        )


def oracle_figures(
    trained: TrainedModel,
    train: pd.DataFrame,
    reference: pd.DataFrame,
    hidden: ExtrusionHidden,
    use_case: UseCaseConfig,
    model_precision: float | None,
) -> OracleFigures:
    """The oracle trained on the model's training rows (train.time_split of `train`, as the model's search
    sees them) with the model's learner, scored on the reference rows evaluate scores; with its best recall
    over the use case's margins at a violation precision of at least `model_precision` (the model's)."""
    from edgeloop.cloud.packing.labels import predictable
    from edgeloop.oracle import fit_oracle
    from edgeloop.sagemaker_pipelines.steps.baselines import score_predictions
    from edgeloop.sagemaker_pipelines.steps.train import time_split

    rows = time_split(predictable(train, use_case), use_case).train
    oracle = fit_oracle(rows, hidden, use_case, template_tag=trained.template, params=trained.hyperparameters)
    scored = predictable(reference, use_case)
    metrics = score_predictions(
        oracle.predict(scored), scored, n_train=len(rows), horizon_s=use_case.horizon_s, margin=oracle.margin
    )
    at = None if model_precision is None else oracle.recall_at_precision(scored, model_precision)
    return OracleFigures(metrics=metrics, margin=oracle.margin, recall_at_model_precision=at)
