"""`edgeloop gateway ...`: provision a gateway in AWS IoT, replay a recording through a gateway."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from edgeloop.schemas import names
from edgeloop.schemas.model import Architecture

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
    use_case: str = typer.Option(names.DEFAULT_USE_CASE, "--use-case"),
    runtime_version: str = typer.Option(None, "--runtime-version", help="default: this edgeloop's version"),
    out: Path = typer.Option(Path("."), "--out", help="where to write gateway.json, certificate, key and CA"),
    device_dir: Path = typer.Option(
        None, "--device-dir", help="where those files will live on the gateway (default: --out)"
    ),
    buffer_path: Path = typer.Option(
        None, "--buffer-path", help="the gateway's buffer file (default: <device-dir>/buffer.db)"
    ),
    greengrass: bool = typer.Option(False, "--greengrass", help="also attach the Greengrass core policy"),
    ca_file: Path = typer.Option(None, "--ca-file", help="CA of the IoT endpoint (default: Amazon Root CA 1)"),
    force: bool = typer.Option(
        False, "--force", help="re-provision an existing thing: new certificate, old ones deactivated"
    ),
) -> None:
    """Create the IoT thing with its context, certificate, policy and thing groups; write its connection config."""
    from edgeloop.provisioning import ProvisioningError, ProvisioningRequest, provision_gateway

    fields = dict(
        thing_name=name,
        site=site,
        line_id=line,
        architecture=arch,
        use_case=use_case,
        out_dir=out,
        device_dir=device_dir,
        buffer_path=buffer_path,
        greengrass=greengrass,
        ca_file=ca_file,
        force=force,
    )
    if runtime_version is not None:
        fields["runtime_version"] = runtime_version
    try:
        result = provision_gateway(ProvisioningRequest.build(**fields))
    except (ValueError, ProvisioningError) as exc:
        errors.print(f"[red]provision failed:[/] {exc}", highlight=False)
        raise typer.Exit(code=1) from None
    console.print(f"provisioned [bold]{result.thing_name}[/] ({result.thing_arn})", highlight=False)
    console.print(f"  certificate {result.certificate_id}  policies {', '.join(result.policies)}", highlight=False)
    console.print(f"  thing groups {', '.join(result.thing_groups)}  endpoint {result.endpoint}", highlight=False)
    for arn in result.retired_certificates:
        console.print(f"  deactivated old certificate {arn}", highlight=False)
    console.print(f"  config {result.config_path}", highlight=False)


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
) -> None:
    """Push a recording through the gateway path (validator, durable buffer, publisher, MQTT)."""
    from edgeloop.device_shims.replay import replay_file

    try:
        report = replay_file(file, mapping, gateway_config, speed=speed, drain_timeout_s=drain_timeout)
    except (ValueError, FileNotFoundError) as exc:
        errors.print(f"[red]replay failed:[/] {exc}", highlight=False)
        raise typer.Exit(code=2) from None
    console.print_json(json.dumps(report.to_dict()))
    if report.pending:
        errors.print(f"{report.pending} samples are still buffered; the next run sends them", highlight=False)
        raise typer.Exit(code=1)
