"""`edgeloop fleet ...`: which device runs which model, its history, and why a device is not on a version.

The same queries as the fleet API (functions/fleet_status), straight against the DynamoDB tables:
the stack's tables in AWS (EDGELOOP_DEVICE_TABLE / EDGELOOP_DEPLOYMENT_TABLE, or the options), the
local runtime's by default (with AWS_ENDPOINT_URL pointing at its moto_server).
"""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.schemas import names

fleet_app = typer.Typer(no_args_is_help=True, help="Fleet status, device history and why-not, from DynamoDB.")
# Piped output (logs, grep) would otherwise wrap the tables at 80 columns and split reasons.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True, soft_wrap=True)

_STATUS_STYLE = {"applied": "green", "pending": "yellow", "rejected": "red", "rolled_back": "red", "offline": "dim"}

DeviceTableOption = typer.Option(
    names.LOCAL_DEVICE_TABLE, "--device-table", envvar=names.DEVICE_TABLE_ENV, help="the device table"
)
DeploymentTableOption = typer.Option(
    names.LOCAL_DEPLOYMENT_TABLE, "--deployment-table", envvar=names.DEPLOYMENT_TABLE_ENV, help="the deployment table"
)
JsonOption = typer.Option(False, "--json", help="print JSON (what the fleet API returns) instead of a table")


@fleet_app.command("status")
def status(
    site: str = typer.Option(None, "--site"),
    line: str = typer.Option(None, "--line"),
    model: str = typer.Option(None, "--model", help="current model version, e.g. 2.0.0"),
    device_status: str = typer.Option(
        None, "--status", help="registered, pending, applied, rejected, rolled_back, offline"
    ),
    as_json: bool = JsonOption,
    device_table: str = DeviceTableOption,
) -> None:
    """Devices by site, line, model version and status."""
    from edgeloop.cloud.fleet.queries import fleet_status

    records = _run(
        lambda: fleet_status(_devices(device_table), site=site, line_id=line, model_version=model, status=device_status)
    )
    if as_json:
        _print_json({"devices": [r.model_dump(mode="json") for r in records]})
        return
    table = _table(
        f"Fleet: {len(records)} devices",
        "thing",
        "site",
        "line",
        "arch",
        "runtime",
        "model",
        "status",
        "reason",
        "since",
    )
    for d in records:
        table.add_row(
            d.thing_name,
            d.site,
            d.line_id,
            d.architecture.value,
            d.runtime_version,
            d.current_model_version or "-",
            _styled(d.status.value),
            d.reason or "-",
            d.status_since.isoformat(timespec="seconds"),
        )
    console.print(table)


@fleet_app.command("history")
def history(
    thing: str = typer.Argument(..., help="the gateway's thing name"),
    limit: int = typer.Option(None, "--limit", help="newest N changes only"),
    as_json: bool = JsonOption,
    device_table: str = DeviceTableOption,
) -> None:
    """A device's status changes, newest first."""
    from edgeloop.cloud.fleet.queries import device_history

    entries = _run(lambda: device_history(_devices(device_table), thing, limit=limit))
    if as_json:
        _print_json({"thing_name": thing, "history": [e.model_dump(mode="json") for e in entries]})
        return
    table = _table(
        f"History of {thing} (newest first)", "at", "event", "status", "model", "desired", "deployment", "reason"
    )
    for e in entries:
        table.add_row(
            e.at.isoformat(timespec="seconds"),
            e.event.value,
            _styled(e.status.value),
            e.model_version or "-",
            e.desired_model_version or "-",
            e.deployment_id or "-",
            e.reason or "-",
        )
    console.print(table)


@fleet_app.command("why-not")
def why_not(
    model_version: str = typer.Argument(..., help="a model version, e.g. 2.0.0"),
    model_id: str = typer.Option(None, "--model-id", help="only this model's rollouts of the version"),
    as_json: bool = JsonOption,
    device_table: str = DeviceTableOption,
    deployment_table: str = DeploymentTableOption,
) -> None:
    """Every device not on MODEL_VERSION, and why (incompatible, offline, rejected, rolled back, pending...)."""
    from edgeloop.cloud.fleet.deployments import DeploymentTable
    from edgeloop.cloud.fleet.queries import why_not as explain

    report = _run(
        lambda: explain(_devices(device_table), DeploymentTable(deployment_table), model_version, model_id=model_id)
    )
    if as_json:
        _print_json(report.model_dump(mode="json"))
        return
    title = (
        f"Not on {report.model_version}: {len(report.devices)} devices "
        f"({len(report.on_version)} on it; rollouts: {', '.join(report.deployments)})"
    )
    table = _table(title, "thing", "site", "line", "why", "reason", "status", "runs", "since")
    for d in report.devices:
        table.add_row(
            d.thing_name,
            d.site,
            d.line_id,
            d.category.value,
            d.reason,
            _styled(d.status.value),
            d.current_model_version or "-",
            d.since.isoformat(timespec="seconds"),
        )
    console.print(table)


def _devices(table_name: str):
    from edgeloop.cloud.fleet.devices import DeviceTable

    return DeviceTable(table_name)


def _run(query):
    """Run a query; a bad parameter or an unknown device/version exits 2 with the message."""
    from edgeloop.cloud.fleet.queries import NotFound

    try:
        return query()
    except (ValueError, NotFound) as exc:
        errors.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    return table


def _styled(status: str) -> str:
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _print_json(document: dict) -> None:
    # print(), not rich: machines read this, and rich would wrap and highlight it.
    print(json.dumps(document, indent=2))
