"""How good the gateway's violation alerts are, on the extrusion simulator (issue 17's alerts.* figures).

1. Train: the first TRAIN_DAYS days of the training benchmark's simulated line (training_data.py
   simulate_examples: seed SEED, packed by production's assemble_examples) through the pipeline's own
   train_line_model (its time split, change-mode labels, search, refit and the decision margin chosen
   out of fold), searching XGBoost only with CANDIDATES draws (the benchmark needs a model made the
   project's way, not the best one: bench-training measures that); export_model makes the fp32 payload
   (parity-checked) and model_runtime's load_payload the gateway's Scorer.
2. Replay on the gateway: the HELD_OUT_DAYS days that follow on the same line (the same simulator, run on
   past the training days: the model never saw them; another seed would be another line, with products
   and disturbances the model never learned) go through the model runner's ModelService exactly as on a
   gateway: samples in, the simulator's runs (with spec limits) as context intervals, a prediction per
   pack stride classified at the payload's decision margin, and the alert tracker (alerts.py, the
   runner's default raise/clear counts) deciding raises and clears.
3. Score against the measured target, by the labeler's rule (cloud/packing/labels.py label_packs: the
   mean of the target over the label window; measured(t) = mean over [t, t + label_window)), classified
   against the run's limits at margin 0:
   - a raise of class K at made_at r is true when measured(t) is in class K for some t in [r, r + horizon]
     (the measured value crosses the limit within the horizon after the raise);
   - a violation episode is a maximal stretch of the stride grid, within one run, where measured is in one
     violation class; it is caught when a raise of its class came within the horizon before its start
     (start - horizon <= r <= start); recall = caught / episodes;
   - lead time = episode start - raise made_at (the earliest raise that caught it); the median over caught
     episodes; recall_sustained: the recall over episodes of at least SUSTAINED_POINTS grid points. The gateway sends a raise at once, so made_at is when the PLC/HMI and the cloud learn of it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from edgeloop.cloud.packing.labels import classify_between, label_packs
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import METRICS
from edgeloop.greengrass_components.model_runner.service import ModelService
from edgeloop.model_runtime.scorer import Scorer, load_payload
from edgeloop.sagemaker_pipelines.steps.export import export_model
from edgeloop.sagemaker_pipelines.steps.train import train_line_model
from edgeloop.schemas import ContextKind, UseCaseConfig, ViolationClass, load_use_case
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.model import ModelTemplate, Precision
from edgeloop.schemas.prediction import AlertEvent, AlertEventKind

from .training_data import DAY_S, LINE_ID, SEED, START_MS, USE_CASE, simulate_examples

TRAIN_DAYS = 14
HELD_OUT_DAYS = 3
CANDIDATES = 3
# recall_sustained counts episodes of at least this many grid points (90 s at the 30 s stride): the raise's
# debounce (2 predictions in a row) is there to let shorter blips pass
SUSTAINED_POINTS = 3
CHUNK_S = 30  # samples reach the gateway in 30 s messages; one scoring round after each
THING = "gw-alerts-bench"

Figures = dict[str, dict]


@dataclass(frozen=True)
class GatewayTrace:
    """What the gateway decided over the held-out days, and what was measured there."""

    raises: list[AlertEvent]
    predictions: int
    classified: int
    made_at_ms: np.ndarray  # the stride grid: every made_at the gateway scored
    measured_class: np.ndarray  # ViolationClass value of measured(made_at + horizon), "" where none
    horizon_ms: int
    stride_ms: int


def alerts_quality(
    *, train_days: int = TRAIN_DAYS, held_out_days: float = HELD_OUT_DAYS, candidates: int = CANDIDATES
) -> Figures:
    """alerts.precision, alerts.recall, alerts.lead_time_median_s and the counts behind them."""
    use_case = load_use_case(USE_CASE)
    started = time.perf_counter()
    examples, _, _ = simulate_examples(train_days, seed=SEED)
    scorer = trained_scorer(use_case, examples, candidates)
    trained_s = time.perf_counter() - started
    simulator = ExtrusionLineSimulator(LINE_ID, seed=SEED, start_ms=START_MS)
    simulator.advance_arrays(train_days * DAY_S)  # the training days again: the held-out days follow them
    trace = replay_gateway(use_case, scorer, simulator, held_out_days)
    figures = score_alerts(trace)
    figures["alerts.train_examples"] = {"value": float(len(examples)), "unit": "examples"}
    figures["alerts.train_days"] = {"value": float(train_days), "unit": "days"}
    figures["alerts.held_out_days"] = {"value": float(held_out_days), "unit": "days"}
    figures["alerts.decision_margin"] = {"value": float(scorer.decision_margin), "unit": "fraction of half band"}
    figures["alerts.train_s"] = {"value": round(trained_s, 1), "unit": "s"}
    figures["alerts.replay_s"] = {"value": round(time.perf_counter() - started - trained_s, 1), "unit": "s"}
    return figures


def trained_scorer(use_case: UseCaseConfig, examples: pd.DataFrame, candidates: int) -> Scorer:
    """The gateway's Scorer for a model trained by train_line_model on `examples`."""
    training = use_case.training.model_copy(
        update={"templates": [ModelTemplate.XGBOOST], "candidates_per_template": candidates}
    )
    config = use_case.model_copy(update={"training": training})
    trained = train_line_model(examples, config, n_jobs=1, nthread=1)
    exported = export_model(
        trained,
        model_id=f"{USE_CASE}-{LINE_ID}",
        version="1.0.0",
        use_case=USE_CASE,
        line_ids=[LINE_ID],
        target=use_case.target_metric,
        precisions=(Precision.FP32,),
    )
    payload = exported.payloads[Precision.FP32]
    return load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())


def replay_gateway(
    use_case: UseCaseConfig, scorer: Scorer, simulator: ExtrusionLineSimulator, days: float
) -> GatewayTrace:
    """The simulator's next `days` days through the model runner's ModelService, 30 s of samples at a time."""
    start_ms = simulator.now_ms
    metric_index, time_ms, values = simulator.advance_arrays(round(days * DAY_S))
    intervals = [i for i in simulator.context_intervals() if _ms(i.end) > start_ms]
    clock = {"now": datetime.fromtimestamp(start_ms / 1000, UTC)}
    models = ModelService(
        THING, use_case, lambda report: None, state_dir=None, line_id=LINE_ID, wall_clock=lambda: clock["now"]
    )
    models.live.swap(scorer)
    models.add_context([i for i in intervals if i.kind in (ContextKind.RUN, ContextKind.STATE)])
    names = np.asarray(METRICS, dtype=object)
    bounds = np.searchsorted(time_ms, np.arange(start_ms, int(time_ms[-1]) + 1, CHUNK_S * 1000), side="left")
    raises: list[AlertEvent] = []
    made: list[int] = []
    classified = 0
    for lo, hi in zip(bounds, [*bounds[1:], len(time_ms)]):
        if lo == hi:
            continue
        models.add(list(zip(names[metric_index[lo:hi]].tolist(), time_ms[lo:hi].tolist(), values[lo:hi].tolist())))
        newest = int(time_ms[hi - 1])
        clock["now"] = datetime.fromtimestamp(newest / 1000, UTC)
        scored = models.predict(newest)
        if scored.prediction is None:
            continue
        made.append(int(scored.prediction.made_at.timestamp() * 1000))
        classified += scored.prediction.violation_class is not None
        raises += [a for a in scored.alerts if a.event is AlertEventKind.RAISE]
    made_at_ms = np.asarray(made, dtype=np.int64)
    target = METRICS.index(use_case.target_metric)
    is_target = metric_index == target
    measured = measured_classes(made_at_ms, time_ms[is_target], values[is_target], intervals, use_case)
    return GatewayTrace(
        raises, len(made), classified, made_at_ms, measured, use_case.horizon_s * 1000, use_case.example_stride_s * 1000
    )


def measured_classes(made_at_ms, target_ms, target_values, intervals, use_case: UseCaseConfig) -> np.ndarray:
    """Per made_at: the class of the measured target at made_at + horizon by the labeler's rule (label_packs:
    the mean over the label window, inside the run), against that run's limits; "" outside runs."""
    classes = np.full(len(made_at_ms), "", dtype=object)
    for run in (i for i in intervals if i.kind is ContextKind.RUN and i.spec is not None):
        run_start, run_end = _ms(run.start), _ms(run.end)
        inside = (made_at_ms >= run_start) & (made_at_ms < run_end)
        if not inside.any():
            continue
        labels = label_packs(made_at_ms[inside], target_ms, target_values, run_end_ms=run_end, use_case=use_case)
        decided = classify_between(labels.value, run.spec.lower, run.spec.upper).astype(object)
        decided[~labels.keep] = ""
        classes[inside] = decided
    return classes


def score_alerts(trace: GatewayTrace) -> Figures:
    """Precision, recall and lead time of the raises against the measured classes (module docstring)."""
    measured_at = trace.made_at_ms + trace.horizon_ms  # the time each measured class describes
    true_raises = 0
    for alert in trace.raises:
        r = _ms(alert.raised_at)
        window = (measured_at >= r) & (measured_at <= r + trace.horizon_ms)
        true_raises += bool((trace.measured_class[window] == alert.violation_class.value).any())
    episodes = violation_episodes(measured_at, trace.measured_class, trace.stride_ms)
    leads, sustained, sustained_caught = [], 0, 0
    for start_ms, violation, points in episodes:
        raised = [
            _ms(a.raised_at)
            for a in trace.raises
            if a.violation_class.value == violation and start_ms - trace.horizon_ms <= _ms(a.raised_at) <= start_ms
        ]
        if raised:
            leads.append((start_ms - min(raised)) / 1000)
        sustained += points >= SUSTAINED_POINTS
        sustained_caught += points >= SUSTAINED_POINTS and bool(raised)
    n_raises, n_episodes = len(trace.raises), len(episodes)
    return {
        "alerts.precision": {"value": _ratio(true_raises, n_raises), "unit": "ratio"},
        "alerts.recall": {"value": _ratio(len(leads), n_episodes), "unit": "ratio"},
        "alerts.lead_time_median_s": {"value": float(np.median(leads)) if leads else float("nan"), "unit": "s"},
        "alerts.raises": {"value": float(n_raises), "unit": "alerts"},
        "alerts.true_raises": {"value": float(true_raises), "unit": "alerts"},
        "alerts.violation_episodes": {"value": float(n_episodes), "unit": "episodes"},
        "alerts.episodes_caught": {"value": float(len(leads)), "unit": "episodes"},
        "alerts.recall_sustained": {"value": _ratio(sustained_caught, sustained), "unit": "ratio"},
        "alerts.sustained_episodes": {"value": float(sustained), "unit": "episodes"},
        "alerts.predictions": {"value": float(trace.predictions), "unit": "predictions"},
        "alerts.predictions_classified": {"value": float(trace.classified), "unit": "predictions"},
    }


def violation_episodes(measured_at: np.ndarray, classes: np.ndarray, stride_ms: int) -> list[tuple[int, str, int]]:
    """(start ms, class, grid points) of each maximal stretch of consecutive grid points in one violation
    class; a gap in the grid (no prediction, no measured value) ends a stretch."""
    violations = {ViolationClass.LSL.value, ViolationClass.USL.value}
    episodes: list[tuple[int, str, int]] = []
    previous = ""
    for n, current in enumerate(classes):
        contiguous = n > 0 and measured_at[n] - measured_at[n - 1] <= stride_ms
        if current in violations and current == previous and contiguous:
            start, violation, points = episodes[-1]
            episodes[-1] = (start, violation, points + 1)
        elif current in violations:
            episodes.append((int(measured_at[n]), current, 1))
        previous = current
    return episodes


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def _ms(moment: datetime) -> int:
    return round((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


if __name__ == "__main__":
    for name, figure in alerts_quality().items():
        print(f"{name:36s} {figure['value']:>12.4g} {figure['unit']}")
