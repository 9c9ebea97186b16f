"""The demo's gateways: one OS process per simulated line, watched through the state file each writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from edgeloop.demo.outcome import DemoFailed, progress_bars, wait_until
from edgeloop.demo.settings import DEMO_ARCHITECTURES, DEMO_RUNTIME_VERSION, DEMO_SITE, DemoSettings
from edgeloop.schemas import UseCaseConfig

if TYPE_CHECKING:
    from edgeloop.device_shims.simulated_gateway import SimulatedGatewayConfig


@dataclass
class GatewayProcess:
    thing_name: str
    line_id: str
    config_path: Path
    state_file: Path
    stop_file: Path
    context_file: Path

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}


@dataclass(frozen=True)
class SimulatedTime:
    """Where the simulated history starts and how long the gateways may run (seconds)."""

    start_ms: int
    history_s: int
    max_live_s: int


class DemoGateways:
    def __init__(self, settings: DemoSettings, use_case: UseCaseConfig, console: Console, clock: SimulatedTime) -> None:
        self.settings = settings
        self.use_case = use_case
        self.console = console
        self.clock = clock
        self.processes: list[GatewayProcess] = []
        self.procs: list = []

    def write_configs(self, runtime, home: Path, signing_public_key_b64: str) -> None:
        """A gateway config per line, registered in the local IoT registry (ingest checks each batch's
        line against it); the second gateway loses its uplink a third of the way into its history."""
        for i, line_id in enumerate(self.settings.line_ids()):
            thing = self.settings.thing_name(line_id)
            folder = home / thing
            folder.mkdir(parents=True, exist_ok=True)
            gateway = self._gateway_config(runtime, thing, line_id, i, folder / "buffer.sqlite")
            runtime.register_gateway(gateway)
            process = GatewayProcess(
                thing_name=thing,
                line_id=line_id,
                config_path=folder / "config.json",
                state_file=folder / "state.json",
                stop_file=folder / "stop",
                context_file=folder / "context.jsonl",
            )
            offline = []
            if i == 1 and self.settings.offline_minutes > 0:
                offline = [(self.clock.history_s // 3, int(self.settings.offline_minutes * 60))]
            config = self._simulation(gateway, process, i, offline, signing_public_key_b64)
            process.config_path.write_text(config.model_dump_json(indent=2))
            self.processes.append(process)

    def _gateway_config(self, runtime, thing: str, line_id: str, index: int, buffer_path: Path):
        from edgeloop.greengrass_components.gateway.config import GatewayConfig

        cert = runtime.certs[thing]
        return GatewayConfig(
            thing_name=thing,
            site=DEMO_SITE,
            line_id=line_id,
            use_case=self.use_case.use_case,
            architecture=DEMO_ARCHITECTURES[index % len(DEMO_ARCHITECTURES)],
            runtime_version=DEMO_RUNTIME_VERSION,
            broker_host=runtime.broker.host,
            broker_port=runtime.broker.device_port,  # the client id is the certificate's CN there
            cert_path=cert.cert_path,
            key_path=cert.key_path,
            ca_path=cert.ca_path,
            buffer_path=buffer_path,
        )

    def _simulation(self, gateway, process: GatewayProcess, index: int, offline: list, public_key_b64: str):
        from edgeloop.device_shims.simulated_gateway import SimulatedGatewayConfig

        return SimulatedGatewayConfig(
            gateway=gateway,
            seed=self.settings.seed + index,
            sim_start_ms=self.clock.start_ms,
            history_s=self.clock.history_s,
            offline_windows=offline,
            live_speedup=self.settings.live_speedup,
            max_live_s=self.clock.max_live_s,
            state_file=process.state_file,
            stop_file=process.stop_file,
            context_file=process.context_file,
            model_signing_public_key=public_key_b64,
        )

    def simulation(self, line_id: str) -> SimulatedGatewayConfig | None:
        """The simulated gateway config of `line_id` as written for its process (None: none written)."""
        from edgeloop.device_shims.simulated_gateway import SimulatedGatewayConfig

        paths = [g.config_path for g in self.processes if g.line_id == line_id]
        return SimulatedGatewayConfig.from_file(paths[0]) if paths else None

    def launch(self) -> None:
        from edgeloop.device_shims.fleet import launch_fleet

        self.procs = launch_fleet([g.config_path for g in self.processes])

    def wait_for_history(self) -> None:
        per_line = self.clock.history_s / self.use_case.sample_period_s * len(self.use_case.metrics)
        self._wait_for_each(
            "gateways to publish their history",
            "history",
            per_line,
            lambda state: state.get("published_samples", 0),
            lambda state: bool(state.get("history_drained")),
        )

    def wait_for_live_predictions(self, things: set[str] | None = None) -> None:
        """Until each gateway in `things` (default: all) has scored the live period."""
        wanted = int(self.settings.live_minutes * 60 / self.use_case.example_stride_s)
        self._wait_for_each(
            "live predictions",
            "live predictions",
            wanted,
            lambda state: min(wanted, state.get("predictions", 0)),
            lambda state: state.get("predictions", 0) >= wanted,
            things,
        )

    def _wait_for_each(self, what: str, label: str, total: float, completed, done, things=None) -> None:
        """A progress bar per gateway (in `things`, default all), fed from its state file, until `done`
        holds for each."""
        watched = [g for g in self.processes if things is None or g.thing_name in things]
        with progress_bars(self.console) as progress:
            tasks = {g.thing_name: progress.add_task(f"{g.thing_name} {label}", total=total) for g in watched}

            def all_done() -> bool:
                self.check_alive()
                states = {g.thing_name: g.state() for g in watched}
                for thing, state in states.items():
                    progress.update(tasks[thing], completed=completed(state))
                return all(done(state) for state in states.values())

            wait_until(what, all_done, self.settings.timeout_s)

    def check_alive(self) -> None:
        for g, proc in zip(self.processes, self.procs):
            code = proc.poll()
            if code is not None and not g.stop_file.exists():
                raise DemoFailed(f"gateway {g.thing_name} exited with code {code}: {g.state().get('last_error', '')}")

    def stop(self) -> None:
        from edgeloop.device_shims.fleet import stop_fleet

        if self.procs:
            stop_fleet(self.procs, [g.stop_file for g in self.processes], timeout=self.settings.timeout_s)

    def accepted_samples(self) -> int:
        return sum(g.state().get("accepted_samples", 0) for g in self.processes)
