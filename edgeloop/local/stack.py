"""The whole local stack in one block: what `edgeloop local up` runs and the demo starts.

    with LocalStack(workdir, ["gw-line-1"], schedule=LocalSchedule()) as stack:
        stack.runtime   # moto_server + mosquitto (mTLS) + the CA; AWS_ENDPOINT_URL etc. set here
        stack.bridge    # the IoT rules: MQTT -> ingest, device registry, status intake, context
        stack.scheduler # compaction -> rollups -> metric packer, wave controller, approvals -> orchestrator
        stack.environment()  # what local.env holds: other processes use the same stack with it

Handlers run in this process; their output goes to `<workdir>/lambda.log`. Leaving the block
stops, in order: the scheduler (its round finishes), the bridge (what it received is handled),
mosquitto and moto_server (by PID; moto's data is gone with it).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from edgeloop.cloud.settings import temporary_environment
from edgeloop.local.bridge import IotRuleBridge
from edgeloop.local.env_file import env_file_path, write_env_file
from edgeloop.local.functions import QUIET_LAMBDA_ENV, bridge_handlers
from edgeloop.local.runtime import LocalRuntime
from edgeloop.local.schedule import LocalSchedule, LocalScheduler
from edgeloop.schemas import names

RUNTIME_DIR = "runtime"
LAMBDA_LOG = "lambda.log"


class LocalStack:
    def __init__(
        self,
        workdir: Path,
        thing_names: Sequence[str] = (),
        *,
        schedule: LocalSchedule | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        """`schedule` None: no scheduled functions (the caller invokes them, as the demo does);
        `environment`: set for the functions (and this process) while the stack runs."""
        self.workdir = Path(workdir).resolve()
        self.runtime = LocalRuntime(self.workdir / RUNTIME_DIR, thing_names)
        self.schedule = schedule
        self.extra_environment = dict(environment or {})
        self.bridge: IotRuleBridge | None = None
        self.scheduler: LocalScheduler | None = None
        self.lambda_log: TextIO | None = None
        self._exit = ExitStack()

    @property
    def lambda_log_path(self) -> Path:
        return self.workdir / LAMBDA_LOG

    def __enter__(self) -> LocalStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            stack.enter_context(temporary_environment({**QUIET_LAMBDA_ENV, **self.extra_environment}))
            stack.enter_context(warnings.catch_warnings())
            # powertools warns on every invocation without metrics (e.g. the wave controller's idle rounds)
            warnings.filterwarnings("ignore", message="No application metrics to publish")
            runtime = stack.enter_context(self.runtime)
            self.lambda_log = stack.enter_context(self.lambda_log_path.open("a", buffering=1))
            self.bridge = IotRuleBridge(
                runtime.broker.host, runtime.broker.port, runtime.cloud_cert, handlers=bridge_handlers(self.lambda_log)
            )
            self.bridge.start()
            stack.callback(self.bridge.stop)
            if self.schedule is not None:
                self.scheduler = LocalScheduler(self.schedule, self.lambda_log).start()
                stack.callback(self.scheduler.stop)
            self._exit = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._exit.close()

    @property
    def pids(self) -> list[int]:
        """The child processes the stack started (moto_server, mosquitto)."""
        return self.runtime.pids

    @property
    def env_file(self) -> Path:
        return env_file_path(self.workdir)

    def write_env_file(self) -> Path:
        """`<workdir>/local.env` (`source` it; `local gateway add --dir <workdir>` reads it)."""
        header = f"edgeloop local stack, pid {os.getpid()}, {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}: `source` this file"
        return write_env_file(self.env_file, self.environment(), header=header)

    def environment(self) -> dict[str, str]:
        """Everything another process needs to use this stack: the AWS endpoint, credentials, buckets and
        tables, the broker and its identities, this stack's folder and PID, and the extra environment."""
        runtime = self.runtime
        if runtime.broker is None or runtime.moto is None:
            raise RuntimeError("the stack is not started: use it as a context manager first")
        return {
            **runtime.env,
            names.LOCAL_BROKER_DEVICE_PORT_ENV: str(runtime.broker.device_port),
            names.LOCAL_DIR_ENV: str(self.workdir),
            names.LOCAL_PID_ENV: str(os.getpid()),
            **self.extra_environment,
        }
