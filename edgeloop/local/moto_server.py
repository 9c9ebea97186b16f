"""moto_server as a child process: the local stand-in for S3, DynamoDB, IoT and the SageMaker registry.

A separate process (not in-process `mock_aws`) so gateways, the bridge and the CLI, in their own
processes, all see one shared AWS over HTTP through `AWS_ENDPOINT_URL`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from edgeloop.local.aws import FAKE_CREDENTIALS, LOCAL_REGION, REAL_ACCOUNT_VARIABLES
from edgeloop.local.ports import LOOPBACK
from edgeloop.local.processes import ManagedServer, stopped_with_parent

READY_PATH = "/moto-api/"
START_TIMEOUT_S = 60.0  # importing moto takes a few seconds, more on a busy 2-core machine
# Never send loopback requests through a proxy the environment might configure.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def server_environment() -> dict[str, str]:
    """The caller's environment without anything that names a real account (moto's own boto3 calls
    fail on a missing profile) and without an endpoint override pointing somewhere else."""
    env = {k: v for k, v in os.environ.items() if k not in REAL_ACCOUNT_VARIABLES and k != "AWS_ENDPOINT_URL"}
    env.update(FAKE_CREDENTIALS)
    env.setdefault("AWS_DEFAULT_REGION", LOCAL_REGION)
    return env


class MotoServer(ManagedServer):
    """Start with `.start()` or `with MotoServer() as moto:`; point boto3 at `.endpoint_url`."""

    name = "moto_server"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.host = LOOPBACK
        self._requested_port = port
        self.port: int | None = port
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("moto_server has no port yet: call start() first")
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoServer:
        self.refuse_second_start()
        self.start_on_a_port(
            self._requested_port, self._spawn, self._ready, timeout_s=START_TIMEOUT_S, log=self.log_path
        )
        return self

    def _spawn(self, port: int) -> subprocess.Popen:
        command = stopped_with_parent([sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(port)])
        options = dict(stdin=subprocess.DEVNULL, env=server_environment(), start_new_session=True)
        if self.log_path is None:
            return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **options)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **options)

    def _ready(self) -> bool:
        try:
            with _NO_PROXY_OPENER.open(self.endpoint_url + READY_PATH, timeout=2.0) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False
