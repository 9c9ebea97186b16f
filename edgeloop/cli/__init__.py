"""The `edgeloop` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from edgeloop.cli.backfill import backfill_command
from edgeloop.cli.fleet import devices_table, fleet_app
from edgeloop.cli.gateway import gateway_app
from edgeloop.cli.labels import labels_app
from edgeloop.cli.local import local_app
from edgeloop.cli.models import models_app
from edgeloop.cli.monitor import monitor_command
from edgeloop.cli.pipeline import pipeline_app
from edgeloop.query.cli import query_app

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Close the ML loop between factory gateways and AWS."
)
schemas_app = typer.Typer(no_args_is_help=True, help="The contracts in schemas/.")
app.add_typer(schemas_app, name="schemas")
app.add_typer(gateway_app, name="gateway")
app.add_typer(query_app, name="query")
app.add_typer(models_app, name="models")
app.add_typer(labels_app, name="labels")
app.add_typer(fleet_app, name="fleet")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(local_app, name="local")
app.command("backfill")(backfill_command)
app.command("monitor")(monitor_command)
# Piped output (CI logs, `make demo | tee`) would otherwise wrap the tables at 80 columns;
# the file is explicit so the console stays on the terminal while Lambda output is redirected.
console = Console(file=sys.stdout) if sys.stdout.isatty() else Console(file=sys.stdout, width=160)


def _print_outcome(outcome) -> None:
    from edgeloop.demo.outcome import DemoOutcome

    assert isinstance(outcome, DemoOutcome)
    verdict = "[green]==[/]" if outcome.samples_sent == outcome.samples_landed else "[red]!=[/]"
    console.print(
        f"\nsamples sent {outcome.samples_sent:,} {verdict} samples landed {outcome.samples_landed:,}"
        f"  (quarantined objects: {outcome.samples_quarantined})"
    )
    from edgeloop.demo.summary import print_figures

    print_figures(outcome, console)
    console.print(devices_table(outcome.fleet, title="Fleet status (read back from DynamoDB)"))
    if outcome.report_path:
        console.print(f"report: {outcome.report_path}")


@app.command()
def demo(
    lines: int = typer.Option(3, help="simulated extrusion lines, one gateway each"),
    history_hours: float = typer.Option(6.0, help="simulated history per line before training"),
    offline_minutes: float = typer.Option(30.0, help="one gateway is offline this long (simulated), then catches up"),
    live_minutes: float = typer.Option(40.0, help="simulated time scored live with the new model"),
    seed: int = typer.Option(7),
    workdir: Path = typer.Option(Path(".edgeloop/demo"), help="certificates, buffers, logs"),
    report: Path = typer.Option(Path("demo-report.html")),
) -> None:
    """Run the whole loop on this machine: gateways -> MQTT -> S3 -> training -> rollout -> live scoring."""
    from edgeloop.demo.run import run_demo
    from edgeloop.demo.settings import DemoSettings

    settings = DemoSettings(
        lines=lines,
        history_hours=history_hours,
        offline_minutes=offline_minutes,
        live_minutes=live_minutes,
        seed=seed,
        workdir=workdir,
        report_path=report,
    )
    outcome = run_demo(settings, console)
    _print_outcome(outcome)
    if not outcome.ok:
        console.print("[red]the loop did not close: see above[/]")
        raise typer.Exit(code=1)


@schemas_app.command("export")
def export_schemas(directory: Path = typer.Argument(None, help="default: schemas/json")) -> None:
    """Write the JSON Schema of every contract."""
    from edgeloop.schemas.export import JSON_DIR, write_schemas

    for path in write_schemas(directory or JSON_DIR):
        console.print(str(path))


if __name__ == "__main__":
    app()
