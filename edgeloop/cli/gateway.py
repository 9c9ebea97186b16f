"""`edgeloop gateway ...`: provision a gateway in AWS IoT, replay a recording through a gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from edgeloop.cli.use_case import cli_use_case, use_case_file_option, use_case_option
from edgeloop.schemas import names
from edgeloop.schemas.model import Architecture

if TYPE_CHECKING:
    from edgeloop.provisioning import ProvisionedGateway

gateway_app = typer.Typer(no_args_is_help=True, help="Gateways: provisioning and replay of recordings.")
# soft_wrap: messages name paths and values; a wrapped line would break them in logs and greps.
# No file= : rich then writes to sys.stdout/sys.stderr as they are at print time.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


@gateway_app.command()
def provision(
    name: str = typer.Argument(..., help="thing name of the gateway"),
    site: str = typer.Option(..., "--site", help="site id, e.g. plant-gent"),
    line: str = typer.Option(..., "--line", help="line id, e.g. line-1"),
    arch: str = typer.Option(..., "--arch", help=" | ".join(Architecture)),
    use_case: str = use_case_option(),
    use_case_file: Path = use_case_file_option(
        "a use-case file anywhere, instead of --use-case: the gateway is provisioned for its use_case"
    ),
    runtime_version: str = typer.Option(None, "--runtime-version", help="default: this edgeloop's version"),
    out: Path = typer.Option(Path("."), "--out", help="where to write the config, certificate, key and CA"),
    device_dir: Path = typer.Option(
        None, "--device-dir", help="where those files will live on the gateway (default: --out; MQTT gateways)"
    ),
    buffer_path: Path = typer.Option(
        None, "--buffer-path", help="the gateway's buffer file (default: <device-dir>/buffer.db; MQTT gateways)"
    ),
    greengrass: bool = typer.Option(
        False, "--greengrass", help="a Greengrass core device: core policies, fleet group, nucleus config.yaml"
    ),
    greengrass_root: Path = typer.Option(
        Path("/greengrass/v2"), "--greengrass-root", help="the nucleus root folder on the gateway"
    ),
    nucleus_version: str = typer.Option(None, "--nucleus-version", help="Greengrass nucleus to install"),
    stack: str = typer.Option(None, "--stack", help="the edgeloop CloudFormation stack (default: Edgeloop)"),
    role_alias: str = typer.Option(None, "--role-alias", help="token exchange role alias (default: the stack's)"),
    ca_file: Path = typer.Option(None, "--ca-file", help="CA of the IoT endpoint (default: Amazon Root CA 1)"),
    force: bool = typer.Option(
        False, "--force", help="re-provision an existing thing: new certificate, old ones deactivated"
    ),
) -> None:
    """Create the IoT thing with its context, certificate, policies and thing groups; write its config
    (gateway.json, or for --greengrass the nucleus config.yaml and the commands to install it)."""
    from edgeloop.provisioning import ProvisioningError, ProvisioningRequest, provision_gateway

    fields = dict(
        thing_name=name,
        site=site,
        line_id=line,
        architecture=arch,
        use_case=cli_use_case(use_case, use_case_file).use_case,
        out_dir=out,
        device_dir=device_dir,
        buffer_path=buffer_path,
        greengrass=greengrass,
        greengrass_root=greengrass_root,
        role_alias=role_alias,
        ca_file=ca_file,
        force=force,
    )
    optional = {"runtime_version": runtime_version, "nucleus_version": nucleus_version, "stack_name": stack}
    fields.update({key: value for key, value in optional.items() if value is not None})
    try:
        result = provision_gateway(ProvisioningRequest.build(**fields))
    except (ValueError, ProvisioningError) as exc:
        errors.print(f"[red]provision failed:[/] {exc}", highlight=False)
        raise typer.Exit(code=1) from None
    _report(result)


def _report(result: ProvisionedGateway) -> None:
    console.print(f"provisioned [bold]{result.thing_name}[/] ({result.thing_arn})", highlight=False)
    console.print(f"  certificate {result.certificate_id}  policies {', '.join(result.policies)}", highlight=False)
    console.print(f"  thing groups {', '.join(result.thing_groups)}  endpoint {result.endpoint}", highlight=False)
    for arn in result.retired_certificates:
        console.print(f"  deactivated old certificate {arn}", highlight=False)
    console.print(f"  config {result.config_path}", highlight=False)
    if result.install_commands:
        console.print(
            f"\nCopy {result.config_path.parent} to the gateway; there, inside it (Java 11+, Python 3.9+, curl, unzip):",
            highlight=False,
        )
        for command in result.install_commands:
            console.print(f"  {command}", highlight=False, markup=False)
        console.print("(the same commands are in install-greengrass.sh)", highlight=False)


@gateway_app.command()
def replay(
    file: Path = typer.Argument(..., help="recorded CSV or Parquet file"),
    mapping: Path = typer.Option(..., "--mapping", help="replay mapping (YAML), see device_shims/examples/"),
    gateway_config: Path = typer.Option(
        ..., "--gateway-config", help="GatewayConfig JSON (e.g. from `edgeloop gateway provision`)"
    ),
    speed: float = typer.Option(
        None, "--speed", help="override the mapping's speed: 0 = as fast as possible, N = N x real time"
    ),
    drain_timeout: float = typer.Option(
        60.0, "--drain-timeout", help="seconds to wait for the broker to take the backlog"
    ),
    shift_to_now: bool = typer.Option(
        False, "--shift-to-now", help="move the recording's timeline so its last row is now"
    ),
    use_case_file: Path = use_case_file_option(
        f"the gateway's use case as a file (a use case of your own); default: ${names.USE_CASE_FILE_ENV}, "
        "else the packaged use case the gateway config names"
    ),
) -> None:
    """Push a recording through the gateway path (validator, durable buffer, publisher, MQTT), with
    the context intervals of the mapping's `context:` block (runs, states, spec limits).

    Rows older than ingest's lateness SLA (EDGELOOP_LATENESS_SLA_DAYS, default 14 days) refuse the
    whole replay before anything is published: historical recordings go through `edgeloop backfill`."""
    from edgeloop.device_shims.replay import replay_file

    try:
        report = replay_file(
            file,
            mapping,
            gateway_config,
            speed=speed,
            drain_timeout_s=drain_timeout,
            shift_to_now=shift_to_now,
            use_case_file=use_case_file,
        )
    except (ValueError, FileNotFoundError) as exc:
        errors.print(f"[red]replay failed:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(code=2) from None
    console.print_json(json.dumps(report.to_dict()))
    failed = False
    if report.pending:
        errors.print(f"{report.pending} samples are still buffered; the next run sends them", highlight=False)
        failed = True
    if report.context_pending:
        errors.print(
            f"{report.context_pending} context intervals were not published ({report.context_error}); "
            "replay the file again to send them",
            highlight=False,
        )
        failed = True
    if failed:
        raise typer.Exit(code=1)
