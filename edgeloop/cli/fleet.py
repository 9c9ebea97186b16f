"""`edgeloop fleet ...`: which device runs which model, its history, why a device is not on a version,
and how a rollout of a model would go.

The same queries as the fleet API (functions/fleet_status), straight against the DynamoDB tables:
the stack's tables in AWS (EDGELOOP_DEVICE_TABLE / EDGELOOP_DEPLOYMENT_TABLE, or the options), the
local runtime's by default (with AWS_ENDPOINT_URL pointing at its moto_server). `plan` previews a
rollout under a rollout policy given by options (or the EDGELOOP_* policy variables the rollout
functions read), the orchestrator's own planning, without writing or delivering anything.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

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
    console.print(devices_table(records, f"Fleet: {len(records)} devices"))


def devices_table(records, title: str) -> Table:
    """One row per device: where it is, what it is, what it runs, and its status since when."""
    from edgeloop.cloud.fleet.queries import DEVICE_SUMMARY_COLUMNS, device_summary

    table = _table(title, *DEVICE_SUMMARY_COLUMNS)
    for d in records:
        table.add_row(*device_summary(d, status_text=_styled))
    return table


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


_POLICY_HELP = "rollout policy (default: the variable, else schemas.deployment.RolloutPolicy's)"


@fleet_app.command("plan")
def plan(
    source: str = typer.Argument(..., help="a model package ARN, or its manifest (s3:// URI or a local file)"),
    canary_share: float = typer.Option(None, "--canary-share", envvar=names.CANARY_SHARE_ENV, help=_POLICY_HELP),
    failure_threshold: float = typer.Option(
        None, "--failure-threshold", envvar=names.FAILURE_THRESHOLD_ENV, help=_POLICY_HELP
    ),
    rollout_timeout_s: int = typer.Option(
        None, "--rollout-timeout-s", envvar=names.ROLLOUT_TIMEOUT_S_ENV, help=_POLICY_HELP
    ),
    as_json: bool = JsonOption,
    device_table: str = DeviceTableOption,
) -> None:
    """How a rollout of SOURCE would go: its waves and the devices left out, and why. Writes nothing."""
    from edgeloop.cloud.fleet.planning import plan_rollout

    policy = _run(
        lambda: _policy(
            canary_share=canary_share, failure_threshold=failure_threshold, rollout_timeout_s=rollout_timeout_s
        )
    )
    manifest, package = _run(lambda: _manifest(source))
    fleet = _devices(device_table).scan_all()
    record = plan_rollout(manifest, fleet, model_package_arn=package, policy=policy, now=datetime.now(UTC))
    if as_json:
        _print_json({"policy": policy.model_dump(mode="json"), "plan": record.model_dump(mode="json")})
        return
    title = (
        f"Rollout of {manifest.model_id} {manifest.version}: {len(record.targets)} devices in {len(record.waves)} "
        f"waves (canary share {policy.canary_share:g}, failure threshold {policy.failure_threshold:g})"
    )
    table = _table(title, "wave", "precision", "devices", "targets")
    for wave in record.waves:
        table.add_row(str(wave.index), wave.precision.value, str(len(wave.targets)), ", ".join(wave.targets))
    console.print(table)
    excluded = _table(f"Left out: {len(record.excluded)} devices", "thing", "reason")
    for entry in record.excluded:
        excluded.add_row(entry.thing_name, entry.reason)
    console.print(excluded)
    if record.reason:
        errors.print(f"[red]{record.reason}[/]", highlight=False)


def _policy(**options: float | None):
    """The rollout policy with the options given; a bad one raises ValueError naming the option and the value."""
    from pydantic import ValidationError

    from edgeloop.schemas import RolloutPolicy

    given = {field: value for field, value in options.items() if value is not None}
    try:
        return RolloutPolicy(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0])
        raise ValueError(f"--{field.replace('_', '-')}={given[field]!r}: {error['msg']}") from None


def _manifest(source: str):
    """(the manifest, the model package ARN) of a package ARN; of a manifest, the ARN is a stand-in naming it."""
    from edgeloop.cloud import model_registry
    from edgeloop.schemas import ModelManifest

    if source.startswith("arn:"):
        package = model_registry.describe_model_package(source)
        return model_registry.load_manifest(model_registry.manifest_uri_of(package)), source
    if source.startswith("s3://"):
        return model_registry.load_manifest(source), f"manifest:{source}"
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"source={source!r} is neither a model package ARN, an s3:// URI nor a manifest file")
    return ModelManifest.model_validate_json(path.read_text()), f"manifest:{path.name}"


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
