"""`edgeloop local up`: the local stack (edgeloop.local.stack) kept running for a user's own data.

Writes `<dir>/local.env` once everything answers, serves until SIGINT/SIGTERM, then stops what it
started and removes local.env (its ports are gone). moto_server keeps its data in memory: buckets,
tables and the IoT registry do not survive a stop.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from edgeloop.local.env_file import env_file_path, read_env_file
from edgeloop.local.schedule import LocalSchedule
from edgeloop.local.stack import LocalStack
from edgeloop.schemas import UseCaseConfig, names
from edgeloop.schemas.use_case import resolve_use_case

HEALTH_CHECK_S = 1.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class LocalUpError(RuntimeError):
    """`local up` cannot start or stopped because a server died; the message says which and why."""


def use_case_environment(use_case_file: Path | None, use_case: str | None) -> tuple[dict[str, str], UseCaseConfig]:
    """The functions' use-case variables, resolved (and the file validated) before anything starts:
    a file anywhere or a packaged use case by name; with neither, the caller's EDGELOOP_USE_CASE_FILE
    or EDGELOOP_USE_CASE. No default: nothing at all is a UseCaseError (a ValueError) saying what to give."""
    config = resolve_use_case(use_case, use_case_file)
    if use_case_file is None and use_case is None:
        use_case_file = os.environ.get(names.USE_CASE_FILE_ENV) or None
    environment = {names.USE_CASE_ENV: config.use_case}
    if use_case_file is not None:
        environment[names.USE_CASE_FILE_ENV] = str(Path(use_case_file).expanduser().resolve())
    return environment, config


def check_not_running(local_dir: Path) -> None:
    """Refuse a folder another live `local up` serves; forget a local.env a killed one left behind."""
    path = env_file_path(local_dir)
    if not path.exists():
        return
    try:
        pid = int(read_env_file(path).get(names.LOCAL_PID_ENV, "0"))
    except ValueError:
        pid = 0
    if pid and pid != os.getpid() and process_alive(pid):
        raise LocalUpError(f"{path}: `edgeloop local up` (pid {pid}) is already serving {local_dir}; stop it first")
    path.unlink()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return os.name != "posix"  # no /proc: trust kill(0)
    except OSError:
        return True


def summary(stack: LocalStack, env_path: Path, use_case: UseCaseConfig, schedule: LocalSchedule) -> list[str]:
    env, runtime = stack.environment(), stack.runtime
    source = env.get(names.USE_CASE_FILE_ENV) or "packaged"
    return [
        f"edgeloop local stack up (pid {os.getpid()})",
        f"  AWS endpoint   {env['AWS_ENDPOINT_URL']}  (moto_server, region {env['AWS_DEFAULT_REGION']})",
        f"  MQTT broker    mosquitto mTLS {runtime.broker.host}: gateways on port {runtime.broker.device_port}, "
        f"cloud identity on {runtime.broker.port}",
        f"  CA             {env[names.LOCAL_CA_ENV]}",
        f"  buckets        {', '.join(runtime.resources.buckets)}",
        f"  tables         {', '.join(runtime.resources.tables)}",
        f"  use case       {use_case.use_case} ({source})",
        f"  functions      IoT rules -> {', '.join(sorted({r.function for r in names.IOT_ROUTES}))}; "
        f"{schedule.describe()}",
        f"  alert topic    {runtime.resources.alert_topic_arn} (SNS: subscribe a queue to see the notices)",
        f"  function logs  {stack.lambda_log_path}",
        f"  environment    {env_path}",
        "",
        f"In another shell:  source {env_path}",
        f"  edgeloop local gateway add GATEWAY --line LINE --site SITE --out GATEWAY_DIR --dir {stack.workdir}",
        f"  edgeloop monitor --dir {stack.workdir}   (live accuracy, alerts, retraining triggers)",
        "",
        "Ctrl-C (or SIGTERM) stops everything this started. moto_server keeps its data in memory: "
        "buckets, tables and the IoT registry are lost on stop.",
    ]


def run_local_up(
    local_dir: Path,
    *,
    schedule: LocalSchedule,
    use_case_file: Path | None = None,
    use_case: str | None = None,
    out: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> None:
    """Start the stack, write local.env, serve until a stop signal (or `stop` is set); LocalUpError
    if a server dies meanwhile. ValueError for bad options, before anything starts."""
    local_dir = Path(local_dir).resolve()
    use_case_env, config = use_case_environment(use_case_file, use_case)
    local_dir.mkdir(parents=True, exist_ok=True)
    check_not_running(local_dir)
    stop = stop or threading.Event()
    with LocalStack(local_dir, schedule=schedule, environment=use_case_env) as stack:
        previous = _stop_on_signals(stop)
        env_path = stack.env_file
        try:
            stack.write_env_file()
            for line in summary(stack, env_path, config, schedule):
                out(line)
            _serve(stack, stop, out)
        finally:
            env_path.unlink(missing_ok=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # the runtime's: a second Ctrl-C still stops the servers
        out("stopping: scheduler, bridge, mosquitto, moto_server ...")
    out(
        f"stopped; moto_server's data is gone (start again and re-add gateways). Function logs: {stack.lambda_log_path}"
    )


def _stop_on_signals(stop: threading.Event) -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, lambda *_: stop.set()) for signum in _STOP_SIGNALS}


def _serve(stack: LocalStack, stop: threading.Event, out: Callable[[str], None]) -> None:
    """Wait for the stop; meanwhile say when a function fails (details in lambda.log) or a server dies."""
    servers = (stack.runtime.moto, stack.runtime.broker)
    reported = 0
    while not stop.wait(HEALTH_CHECK_S):
        for server in servers:
            if not server.is_running():
                code = server.process.returncode
                raise LocalUpError(f"{server.name} (pid {server.pid}) exited with code {code}: stopping the stack")
        failures, last_error = _failures(stack)
        if failures > reported:
            out(
                f"{failures - reported} function invocation(s) failed; last: {last_error} (see {stack.lambda_log_path})"
            )
            reported = failures


def _failures(stack: LocalStack) -> tuple[int, str | None]:
    failures, last_error = stack.bridge.failed, stack.bridge.last_error
    if stack.scheduler is not None:
        stats = stack.scheduler.stats()
        failures += sum(stats.failures.values())
        last_error = stats.last_error or last_error
    return failures, last_error
