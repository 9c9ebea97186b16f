"""demo-report.html: predicted vs measured cold OD per line, model metrics, alerts, live accuracy and fleet status."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from edgeloop.demo.explain import CLASS_ORDER
from edgeloop.demo.outcome import DemoOutcome
from edgeloop.demo.report_monitoring import html_table as _table
from edgeloop.demo.report_monitoring import monitoring_sections
from edgeloop.schemas import ContextInterval, UseCaseConfig, names


def predicted_vs_measured(curated: pd.DataFrame, target: str, prediction: str, label_window_s: int) -> pd.DataFrame:
    """Each live prediction beside the measured target averaged over the window it predicts."""
    predicted = curated[curated.metric == prediction][["time_ms", "value"]].sort_values("time_ms")
    measured = curated[curated.metric == target][["time_ms", "value"]].sort_values("time_ms")
    if predicted.empty or measured.empty:
        return pd.DataFrame(columns=["time", "predicted", "measured"])
    times = measured.time_ms.to_numpy()
    prefix = np.concatenate([[0.0], measured.value.cumsum().to_numpy()])
    starts = predicted.time_ms.to_numpy()
    lo = times.searchsorted(starts, side="left")
    hi = times.searchsorted(starts + label_window_s * 1000, side="left")
    counts = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (prefix[hi] - prefix[lo]) / counts  # NaN where the predicted window was never measured
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(starts, unit="ms", utc=True),
            "predicted": predicted.value.to_numpy(),
            "measured": means,
        }
    )
    return frame.dropna()


def with_spec_limits(frame: pd.DataFrame, intervals: list[ContextInterval]) -> pd.DataFrame:
    """Add the spec limits of the run each point falls in (NaN outside runs with limits)."""
    frame = frame.copy()
    frame["lower"] = frame["upper"] = float("nan")
    for run in intervals:
        if run.spec is None:
            continue
        inside = (frame.time >= run.start) & (frame.time < run.end)
        frame.loc[inside, ["lower", "upper"]] = (run.spec.lower, run.spec.upper)
    return frame


def _figure_html(series: dict[str, pd.DataFrame], target: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=len(series), cols=1, subplot_titles=list(series), shared_xaxes=False)
    for row, (line_id, frame) in enumerate(series.items(), start=1):
        figure.add_trace(
            go.Scatter(x=frame.time, y=frame.measured, name=f"{line_id} measured", mode="lines"), row=row, col=1
        )
        figure.add_trace(
            go.Scatter(x=frame.time, y=frame.predicted, name=f"{line_id} predicted (gateway)", mode="lines"),
            row=row,
            col=1,
        )
        for limit in ("lower", "upper"):
            figure.add_trace(
                go.Scatter(
                    x=frame.time,
                    y=frame[limit],
                    name=f"{line_id} spec {limit} limit",
                    mode="lines",
                    line={"dash": "dash", "color": "grey", "width": 1},
                ),
                row=row,
                col=1,
            )
        figure.update_yaxes(title_text=f"{target} (mm)", row=row, col=1)
    figure.update_layout(height=320 * len(series), title="Predicted (5 min ahead, on the gateway) vs measured")
    # the report must open offline, so plotly.js is embedded rather than fetched
    return figure.to_html(full_html=False, include_plotlyjs=True)


def write_report(outcome: DemoOutcome, use_case: UseCaseConfig, line_ids: list[str], path: Path) -> Path:
    """Compare each line's live predictions with what was measured, record the live figures in
    `outcome`, and write the report."""
    series = {line_id: _live_series(line_id, use_case) for line_id in line_ids}
    for line_id, frame in series.items():
        outcome.live_points[line_id] = len(frame)
        outcome.live_mae[line_id] = (
            float((frame.predicted - frame.measured).abs().mean()) if len(frame) else float("nan")
        )
    path = Path(path)
    path.write_text(_document(outcome, series, use_case.target_metric))
    return path.resolve()


def _live_series(line_id: str, use_case: UseCaseConfig) -> pd.DataFrame:
    from edgeloop.cloud.datalake.context import get_context_intervals
    from edgeloop.cloud.datalake.curated import read_curated

    curated = read_curated(names.LOCAL_DATA_BUCKET, line_id)
    frame = predicted_vs_measured(curated, use_case.target_metric, use_case.prediction_metric, use_case.label_window_s)
    return with_spec_limits(frame, get_context_intervals(names.LOCAL_DATA_BUCKET, line_id))


def _model_rows(outcome: DemoOutcome) -> list[list[object]]:
    """The registered lines; their per-class recall is the model's row of the comparison table (same reference)."""
    return [
        [
            m.line_id,
            m.n_examples,
            f"{m.metrics.mse:.5f}",
            f"{m.metrics.mae:.4f}",
            " / ".join(f"{m.metrics.precision[c]:.2f}" if c in m.metrics.precision else "-" for c in CLASS_ORDER),
            m.model_package_arn.rsplit("/", 2)[-2] + "/" + m.model_package_arn.rsplit("/", 1)[-1],
        ]
        for m in outcome.models.values()
    ]


def _gate_section(outcome: DemoOutcome) -> str:
    """Model, persistence, setpoint and oracle side by side per line, the gate's decision, and why each
    recall shown as 0.00 of a class that occurs is 0."""
    from edgeloop.demo.gate import COMPARISON_COLUMNS, comparison_rows, decision_lines, oracle_lines, recall_zero_notes

    decisions = "".join(f"<li>{html.escape(line)}</li>" for line in decision_lines(outcome.evaluations))
    oracle = "".join(f"<li>{html.escape(line)}</li>" for line in oracle_lines(outcome.evaluations))
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in recall_zero_notes(outcome.evaluations))
    return f"""<h2>Model vs trivial baselines and the oracle (the registration gate)</h2>
<p>Each line trains on all but its newest whole run(s); the model is scored on those held-out runs beside
persistence (the target's value at the pack end), the setpoint (the middle of the spec limits) and the oracle:
the model's learner trained on the same runs with the simulator's hidden state at the pack end added (what has
already been extruded, the true speed, the material), an estimate of what this horizon allows (on a few hours of
history an estimate, not a bound). A model is registered and rolled out only if its RMSE beats persistence's
by the use case's margin and its violation F1 is not below persistence's; a refused line keeps what it runs.
Margin: the decision margin, the fraction of the half spec band by which a prediction may stay inside a limit
and still be flagged as a violation; the model's and the oracle's are tuned on their training runs, the baselines
decide at 0; as margins differ, the oracle's recall at the model's violation precision (its best over the margins
on the held-out rows) is given per line. Recall per class: "absent" where the class does not occur in the held-out data; a 0.00 marked *
is explained below.</p>
{_table(list(COMPARISON_COLUMNS), comparison_rows(outcome.evaluations))}
{f"<ul>{oracle}</ul>" if oracle else ""}
<ul>{decisions}</ul>
{f"<h3>Why a recall is 0.00</h3><ul>{notes}</ul>" if notes else ""}
"""


def _document(outcome: DemoOutcome, series: dict[str, pd.DataFrame], target: str) -> str:
    from edgeloop.cloud.fleet.queries import DEVICE_SUMMARY_COLUMNS, device_summary

    fleet_rows = [list(device_summary(d)) for d in outcome.fleet]
    live_rows = [[line, outcome.live_points[line], f"{outcome.live_mae[line]:.4f}"] for line in series]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgeloop demo report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}
th{{background:#f3f3f3}}</style></head><body>
<h1>edgeloop demo report</h1>
<p>Samples accepted by the gateways: <b>{outcome.samples_sent:,}</b>; landed in curated storage (unique by thing and
sequence number): <b>{outcome.samples_landed:,}</b>; quarantined objects: {outcome.samples_quarantined}.</p>
{_gate_section(outcome)}
<h2>Registered models (one per line that passed the gate; figures on its held-out reference run(s))</h2>
{_table(["line", "examples", "MSE", "MAE", "precision (LSL/in/USL)", "model package"], _model_rows(outcome))}
<h2>Live scoring on the gateways</h2>
{_table(["line", "predictions", "mean abs error vs measured"], live_rows)}
{_figure_html(series, target)}
{monitoring_sections(outcome)}
<h2>Fleet status (DynamoDB)</h2>
{_table(list(DEVICE_SUMMARY_COLUMNS), fleet_rows)}
</body></html>
"""
