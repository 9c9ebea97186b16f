"""Start and stop simulated gateways, one OS process each (as real gateways are separate machines)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

GATEWAY_MODULE = "edgeloop.device_shims.simulated_gateway"
TERMINATE_GRACE_S = 10.0


def gateway_log_path(config: Path) -> Path:
    """Where a gateway's output goes: beside its config (config.json -> gateway.log)."""
    return Path(config).with_name("gateway.log")


def launch_fleet(configs: Sequence[Path], *, python: str = sys.executable) -> list[subprocess.Popen]:
    """One `python -m edgeloop.device_shims.simulated_gateway CONFIG` per config, output to gateway.log.

    Children inherit this process's environment (AWS_ENDPOINT_URL and credentials of the local
    runtime included), so their model downloads reach the same S3.
    """
    procs: list[subprocess.Popen] = []
    for config in configs:
        config = Path(config)
        if not config.is_file():
            stop_fleet(procs, [], timeout=TERMINATE_GRACE_S)
            raise FileNotFoundError(f"gateway config {str(config)!r} is not a file")
        with open(gateway_log_path(config), "ab") as output:
            procs.append(
                subprocess.Popen(
                    [python, "-m", GATEWAY_MODULE, str(config)],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=os.environ.copy(),
                )
            )
        log.info("gateway %s started (pid %d)", config, procs[-1].pid)
    return procs


def stop_fleet(procs: Sequence[subprocess.Popen], stop_files: Sequence[Path], timeout: float = 60.0) -> list[int]:
    """Ask every gateway to stop (stop file), wait up to `timeout` in all, then SIGTERM, then SIGKILL.

    Returns the exit codes in `procs` order.
    """
    for stop_file in stop_files:
        Path(stop_file).parent.mkdir(parents=True, exist_ok=True)
        Path(stop_file).touch()
    if len(stop_files) < len(procs):  # no stop file to reach them: ask by signal
        for proc in procs[len(stop_files) :]:
            if proc.poll() is None:
                proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        _wait(proc, max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.poll() is None:
            log.warning("gateway pid %d ignored its stop file for %.0f s: SIGTERM", proc.pid, timeout)
            proc.terminate()
            if not _wait(proc, TERMINATE_GRACE_S):
                log.warning("gateway pid %d ignored SIGTERM: SIGKILL", proc.pid)
                proc.kill()
                proc.wait()
    return [proc.returncode for proc in procs]


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False
