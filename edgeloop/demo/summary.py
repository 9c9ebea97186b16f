"""What `edgeloop demo` prints of the models when the loop has run: the figures demo-report.html shows."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgeloop.demo.explain import CLASS_ORDER
from edgeloop.demo.gate import comparison_table, oracle_lines, recall_zero_notes
from edgeloop.demo.outcome import DemoOutcome
from edgeloop.demo.report_monitoring import ACCURACY_COLUMNS, accuracy_rows, alert_rows

REGISTERED_COLUMNS = ("line", "examples", "MSE", "MAE", "precision (LSL/in/USL)", "live MAE (gateway)")


def print_figures(outcome: DemoOutcome, console: Console) -> None:
    """The comparison per line (model, baselines, oracle), why a recall is 0.00, and the registered models."""
    console.print(comparison_table(outcome.evaluations))
    for line in oracle_lines(outcome.evaluations):
        console.print(f"  {line}", highlight=False)
    console.print(
        'recall per class: "absent" = the class does not occur in the held-out run(s); 0.00* = explained below',
        highlight=False,
    )
    for note in recall_zero_notes(outcome.evaluations):
        console.print(f"  * {note}", highlight=False)
    console.print(registered_table(outcome))
    for table in monitoring_tables(outcome):
        console.print(table)


def monitoring_tables(outcome: DemoOutcome) -> list[Table]:
    """The gateways' alerts with their lead time, and live accuracy vs persistence (the report's tables)."""
    alerts = Table(title="Violation alerts raised by the gateways (landed in S3)")
    for column in ("line", "class", "raised (UTC)", "lead time", "predicted level", "cleared (UTC)"):
        alerts.add_column(column)
    for row in alert_rows(outcome):
        alerts.add_row(*map(str, row))
    accuracy = Table(title="Live accuracy vs persistence (per window of predicted time and model version)")
    for column in ACCURACY_COLUMNS:
        accuracy.add_column(column)
    for row in accuracy_rows(outcome):
        accuracy.add_row(*map(str, row))
    return [alerts, accuracy]


def registered_table(outcome: DemoOutcome) -> Table:
    """The registered lines with their live error; their recall per class is the model's row above."""
    table = Table(title="Registered models (reference = the held-out newest run(s); refused lines are not listed)")
    for column in REGISTERED_COLUMNS:
        table.add_column(column)
    for model in outcome.models.values():
        m = model.metrics
        live = (
            f"{outcome.live_mae.get(model.line_id, float('nan')):.4f} ({outcome.live_points.get(model.line_id, 0)} pts)"
        )
        precision = " / ".join(f"{m.precision[c]:.2f}" if c in m.precision else "-" for c in CLASS_ORDER)
        table.add_row(model.line_id, str(model.n_examples), f"{m.mse:.5f}", f"{m.mae:.4f}", precision, live)
    return table
