"""demo-report.html's issue-17 sections: the gateways' violation alerts on a timeline per line, and live
accuracy against persistence, both read back as `edgeloop monitor` reads them (edgeloop/monitor_view.py).

The figures go after the report's first plotly figure, which embeds plotly.js (the report opens offline).
"""

from __future__ import annotations

import html

from edgeloop.demo.outcome import DemoOutcome

CLASS_COLOURS = {"usl_violation": "#d62728", "lsl_violation": "#1f77b4"}


def html_table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def alert_rows(outcome: DemoOutcome) -> list[list[object]]:
    rows = []
    for line_id, episodes in outcome.alerts.items():
        for e in sorted(episodes, key=lambda e: e.raised_at):
            cleared = "open" if e.cleared is None else f"{e.cleared.at:%H:%M:%S}"
            level = f"{e.raised.predicted_level:.4f}" if e.raised else "-"
            rows.append(
                [
                    line_id,
                    e.violation_class,
                    f"{e.raised_at:%Y-%m-%d %H:%M:%S}",
                    _seconds(e.lead_time_s),
                    level,
                    cleared,
                ]
            )
    return rows


def _timeline_html(outcome: DemoOutcome) -> str:
    """One row per line; each alert a bar from its raise to its clear (open: to the line's last prediction),
    coloured by class, the raise marked with its lead time."""
    import plotly.graph_objects as go

    figure = go.Figure()
    shown: set[str] = set()
    for line_id, episodes in outcome.alerts.items():
        for e in episodes:
            end = e.cleared.at if e.cleared else max(e.raised_at, outcome.last_prediction_at.get(line_id, e.raised_at))
            colour = CLASS_COLOURS.get(e.violation_class, "grey")
            figure.add_trace(
                go.Scatter(
                    x=[e.raised_at, end],
                    y=[line_id, line_id],
                    mode="lines+markers",
                    line={"color": colour, "width": 12},
                    marker={"size": 10},
                    name=e.violation_class,
                    legendgroup=e.violation_class,
                    showlegend=e.violation_class not in shown,
                    hovertext=f"{e.alert_id}: lead time {_seconds(e.lead_time_s)}{'' if e.cleared else ', open'}",
                    hoverinfo="text+x",
                )
            )
            shown.add(e.violation_class)
    figure.update_yaxes(categoryorder="array", categoryarray=list(outcome.alerts), title_text="line")
    figure.update_layout(height=120 + 60 * len(outcome.alerts), title="Violation alerts: raise to clear, per line")
    return figure.to_html(full_html=False, include_plotlyjs=False)


def accuracy_rows(outcome: DemoOutcome) -> list[list[object]]:
    rows = []
    for windows in outcome.live_accuracy.values():
        for w in windows:
            model, persistence = w.model, w.persistence
            rows.append(
                [
                    w.line_id,
                    f"{w.model_id} {w.version}",
                    f"{w.window_start:%Y-%m-%d %H:%M} .. {w.window_end:%H:%M}",
                    f"{w.joined}/{w.predictions}" + ("" if w.judged else " (too few to judge)"),
                    f"{model.rmse:.4f}" if model else "-",
                    f"{persistence.rmse:.4f}" if persistence else "-",
                    f"{w.rmse_ratio_vs_persistence:.2f}" if w.rmse_ratio_vs_persistence is not None else "-",
                    f"{model.mae:.4f}" if model else "-",
                    f"{persistence.mae:.4f}" if persistence else "-",
                    "degraded" if w.degraded else "ok" if w.judged else "-",
                ]
            )
    return rows


ACCURACY_COLUMNS = [
    "line",
    "model",
    "window of predicted time (UTC)",
    "joined/landed",
    "RMSE",
    "persistence RMSE",
    "ratio",
    "MAE",
    "persistence MAE",
    "verdict",
]


def _accuracy_html(outcome: DemoOutcome) -> str:
    import plotly.graph_objects as go

    windows = [w for line in outcome.live_accuracy.values() for w in line if w.model and w.persistence]
    labels = [f"{w.line_id} {w.window_start:%H:%M}" for w in windows]
    figure = go.Figure(
        [
            go.Bar(name="model (gateway)", x=labels, y=[w.model.rmse for w in windows]),
            go.Bar(name="persistence (value at made_at)", x=labels, y=[w.persistence.rmse for w in windows]),
        ]
    )
    figure.update_layout(barmode="group", height=360, title="Live RMSE per line and window: model vs persistence")
    figure.update_yaxes(title_text="RMSE (mm)")
    return figure.to_html(full_html=False, include_plotlyjs=False)


def monitoring_sections(outcome: DemoOutcome) -> str:
    alerts = alert_rows(outcome)
    accuracy = accuracy_rows(outcome)
    landed = ", ".join(f"{line} {n:,}" for line, n in outcome.predictions_landed.items())
    return f"""<h2>Violation alerts (on the gateways, landed in S3)</h2>
<p>Each gateway classifies its predictions against the run's spec limits and raises an alert after
predictions in a row in a violation class, clearing it after predictions in a row in range. The lead time
is the earliest violation the raise foresees minus when the gateway sent it. Predictions landed: {landed}.</p>
{_timeline_html(outcome) if alerts else "<p>No alert was raised in the live period.</p>"}
{html_table(["line", "class", "raised (UTC)", "lead time", "predicted level", "cleared (UTC)"], alerts) if alerts else ""}
<h2>Live accuracy vs persistence (the live-accuracy function)</h2>
<p>The landed predictions joined with the measured target per window of predicted time and model version,
beside persistence (the measured value when the prediction was made) on the same rows; a window with fewer
joined predictions than the use case's minimum is shown but not judged.</p>
{_accuracy_html(outcome) if accuracy else "<p>No window could be scored.</p>"}
{html_table(ACCURACY_COLUMNS, accuracy) if accuracy else ""}
"""
