"""Starting and stopping the local servers as child processes, always by their own PID."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from edgeloop.local.ports import free_port

STOP_GRACE_S = 5.0
START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it


class ServerStartError(RuntimeError):
    """A local server did not come up; the message carries the tail of its log."""


def log_tail(path: Path | None, lines: int = 20) -> str:
    if path is None or not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(empty log)"


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen, timeout_s: float, what: str, log: Path | None
) -> None:
    """Poll `ready` until true; fail early, with the log, if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"{what} exited with code {process.returncode} while starting:\n{log_tail(log)}")
        if ready():
            return
        time.sleep(0.05)
    raise ServerStartError(f"{what} was not ready within {timeout_s:.0f} s:\n{log_tail(log)}")


def stopped_with_parent(command: list[str]) -> list[str]:
    """`command`, run so that it gets SIGTERM should this process die without stopping it (SIGKILL, a
    crash): util-linux `setpriv` sets the parent-death signal and execs the command (same PID). The
    signal follows the *thread* that spawned the child: start servers from a thread that outlives them
    (the main thread). Without setpriv (not Linux) the command runs as is."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else list(command)


def stop_process(process: subprocess.Popen | None, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child, wait, SIGKILL if it lingers; reaps it so no zombie is left."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)


class ManagedServer(ABC):
    """A server this runtime started as a child process: stopped by PID, also as a context manager."""

    process: subprocess.Popen | None = None
    port: int | None = None
    name: str  # for messages: "mosquitto", "moto_server"

    @abstractmethod
    def start(self) -> ManagedServer:
        """Start the server and return once it answers."""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def refuse_second_start(self) -> None:
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")

    def start_on_a_port(
        self,
        requested_port: int | None,
        spawn: Callable[[int], subprocess.Popen],
        ready: Callable[[], bool],
        *,
        timeout_s: float,
        log: Path | None,
    ) -> None:
        """Spawn on `requested_port`, or on a free one (trying again on another if it was taken),
        and wait until `ready`; raises ServerStartError with the log's tail."""
        attempts = 1 if requested_port else START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self.port = requested_port or free_port()
            self.process = spawn(self.port)
            try:
                wait_until(ready, self.process, timeout_s, self.name, log)
                return
            except ServerStartError:
                self.stop()
                if attempt == attempts:
                    raise

    def stop(self) -> None:
        stop_process(self.process)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
