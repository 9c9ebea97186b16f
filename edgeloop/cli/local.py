"""`edgeloop local ...`: the embedded stack (moto_server, mosquitto, the functions) for your own data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from edgeloop.cli.use_case import use_case_file_option, use_case_option
from edgeloop.schemas.model import Architecture

local_app = typer.Typer(
    no_args_is_help=True, help="The local stack: AWS (moto), IoT Core (mosquitto) and the functions."
)
local_gateway_app = typer.Typer(no_args_is_help=True, help="Gateways of a running `edgeloop local up`.")
local_app.add_typer(local_gateway_app, name="gateway")
# soft_wrap: paths and commands must stay on one line to be copied; markup off: they are literal.
console = Console(soft_wrap=True, highlight=False)
errors = Console(stderr=True, soft_wrap=True, highlight=False)
DEFAULT_DIR = Path(".edgeloop/local")


@local_app.command("up")
def up(
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="certificates, logs and local.env"),
    use_case: str = use_case_option(),
    use_case_file: Path = use_case_file_option(),
    compaction_every: float = typer.Option(
        30.0, "--compaction-every", min=0, help="seconds between compaction -> rollups -> metric packer (0: off)"
    ),
    wave_controller_every: float = typer.Option(
        20.0, "--wave-controller-every", min=0, help="seconds between wave controller rounds (0: off)"
    ),
    approvals_every: float = typer.Option(
        5.0, "--approvals-every", min=0, help="seconds between checks for approved models -> orchestrator (0: off)"
    ),
    live_accuracy_every: float = typer.Option(
        60.0, "--live-accuracy-every", min=0, help="seconds between live-accuracy rounds (`edgeloop monitor`; 0: off)"
    ),
) -> None:
    """Start the local stack and keep it running until Ctrl-C / SIGTERM; writes DIR/local.env to `source`."""
    from edgeloop.local.schedule import LocalSchedule
    from edgeloop.local.up import LocalUpError, run_local_up

    try:
        schedule = LocalSchedule(
            compaction_s=compaction_every,
            wave_controller_s=wave_controller_every,
            approvals_s=approvals_every,
            live_accuracy_s=live_accuracy_every,
        )
        run_local_up(
            directory,
            schedule=schedule,
            use_case_file=use_case_file,
            use_case=use_case,
            out=lambda line: console.print(line, markup=False),
        )
    except ValueError as exc:
        errors.print(f"local up: {exc}", markup=False)
        raise typer.Exit(code=2) from None
    except LocalUpError as exc:
        errors.print(f"local up: {exc}", markup=False)
        raise typer.Exit(code=1) from None


@local_gateway_app.command("add")
def gateway_add(
    thing: str = typer.Argument(..., help="thing name of the gateway (its certificate's CN)"),
    line: str = typer.Option(..., "--line", help="line id, e.g. line-1"),
    site: str = typer.Option(..., "--site", help="site id, e.g. plant-gent"),
    out: Path = typer.Option(..., "--out", help="where to write gateway.json, the certificate, key and CA"),
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="the folder of the running `edgeloop local up`"),
    use_case: str = typer.Option(None, "--use-case", help="default: the use case `local up` serves"),
    arch: Architecture = typer.Option(None, "--arch", help="default: this machine's"),
    runtime_version: str = typer.Option(None, "--runtime-version", help="default: this edgeloop's"),
) -> None:
    """Provision a gateway on the running local stack: thing + attributes, certificate, gateway.json."""
    from edgeloop.local.gateways import add_gateway

    try:
        gateway = add_gateway(
            thing,
            line_id=line,
            site=site,
            out_dir=out,
            local_dir=directory.resolve(),
            use_case=use_case,
            architecture=arch,
            runtime_version=runtime_version,
        )
    except (ValueError, FileNotFoundError) as exc:
        errors.print(f"local gateway add: {exc}", markup=False)
        raise typer.Exit(code=2) from None
    config = gateway.config
    console.print(f"gateway {config.thing_name} ({gateway.thing_arn}) on line {config.line_id}, site {config.site}")
    console.print(f"  broker {config.broker_host}:{config.broker_port}  certificate {config.cert_path}")
    console.print(f"  config {gateway.config_path}")
    console.print("Replay a recording through it:")
    console.print(
        f"  edgeloop gateway replay RECORDING.csv --mapping MAPPING.yaml --gateway-config {gateway.config_path}",
        markup=False,
    )
