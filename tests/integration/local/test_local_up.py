"""`edgeloop local up` as a user runs it: a process of its own serving until SIGTERM.

One `local up` for the module: a gateway is added with `edgeloop local gateway add`, a recording
replayed through it lands in the raw bucket (read with a plain boto3 client on the endpoint
local.env names), the schedule compacts it into curated Parquet, a second `local up` on the same
folder is refused, and SIGTERM leaves no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from process_helpers import command_line, descendants
from registry_helpers import create_package
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.cloud.datalake.raw import raw_batches
from edgeloop.local.env_file import read_env_file
from edgeloop.local.up import process_alive
from edgeloop.schemas import names
from edgeloop.schemas.use_case import USE_CASES_DIR

THING = "gw-byo-1"
LINE = "line-7"
ROWS = 12
METRICS = 5  # columns the mapping maps
START_TIMEOUT_S = 60.0
WAIT_S = 30.0
MAPPING = """
layout: wide
timestamp: {column: time, format: epoch_s}
columns:
  line_speed_mpm: speed
  screw_rpm: {metric: screw_rpm, role: screw_speed}
  die_temp_c: {role: die_temperature}
  melt_pressure_bar: {role: melt_pressure}
  cold_od_avg_mm: cold_od_average
speed: 0
"""


def _edgeloop_command() -> list[str]:
    script = Path(sys.executable).parent / "edgeloop"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from edgeloop.cli import app; app()"]


def _wait_for(condition, what: str, timeout: float = WAIT_S, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"`local up` exited with {process.returncode} before {what}:\n{_output(process)}")
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def _output(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=10)
    return f"stdout:\n{out}\nstderr:\n{err}"


def _stop_for_good(process: subprocess.Popen) -> None:
    """After a failed test: still nothing may be left running."""
    if process.poll() is None:
        for pid in descendants(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.kill()
    process.communicate(timeout=10)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """Two `local up`s started together (their start-ups overlap): one to use, one to kill."""
    use_case_file = tmp_path_factory.mktemp("my-line") / "my-use-case.yaml"  # a use case outside the package
    shutil.copyfile(USE_CASES_DIR / "extrusion.yaml", use_case_file)
    used, killed = tmp_path_factory.mktemp("local-up"), tmp_path_factory.mktemp("local-up-killed")
    up = [*_edgeloop_command(), "local", "up"]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    options = ["--use-case-file", str(use_case_file), "--compaction-every", "1", "--approvals-every", "0.5"]
    processes = [
        subprocess.Popen([*up, "--dir", str(used), *options], **pipes),
        subprocess.Popen([*up, "--dir", str(killed), "--use-case", "extrusion"], **pipes),
    ]
    try:
        yield list(zip(processes, (used, killed), strict=True))
    finally:
        for process in processes:
            _stop_for_good(process)


def _ready(process: subprocess.Popen, local_dir: Path) -> dict[str, str]:
    env_file = local_dir / names.LOCAL_ENV_FILE
    _wait_for(env_file.exists, "local.env written", START_TIMEOUT_S, process)
    return read_env_file(env_file)


@pytest.fixture(scope="module")
def local_up(stacks):
    process, local_dir = stacks[0]
    return process, local_dir, _ready(process, local_dir)


def _s3(env: dict[str, str]):
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def _keys(s3, prefix: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=names.LOCAL_DATA_BUCKET, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def _recording(path: Path) -> Path:
    start = int(time.time()) - 5 * 60
    rows = [f"{start + i},120.0,38.2,{205.3 + i / 10:.2f},182.0,2.9" for i in range(ROWS)]
    path.write_text("time,line_speed_mpm,screw_rpm,die_temp_c,melt_pressure_bar,cold_od_avg_mm\n" + "\n".join(rows))
    return path


def test_local_env_names_the_stack_and_can_be_sourced(local_up):
    process, local_dir, env = local_up
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert env[names.LOCAL_BROKER_HOST_ENV] == "127.0.0.1"
    assert env[names.LOCAL_PID_ENV] == str(process.pid)
    assert env[names.LOCAL_DIR_ENV] == str(local_dir.resolve())
    assert env[names.USE_CASE_ENV] == "extrusion"
    assert env[names.USE_CASE_FILE_ENV].endswith("/my-use-case.yaml")
    assert Path(env[names.LOCAL_CA_ENV]).is_file()
    shell = f"set -e; . {local_dir / names.LOCAL_ENV_FILE}; echo $AWS_ENDPOINT_URL $EDGELOOP_DATA_BUCKET"
    sourced = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True, env={})
    assert sourced.stdout.split() == [env["AWS_ENDPOINT_URL"], names.LOCAL_DATA_BUCKET]


def test_a_gateway_added_and_replayed_lands_in_the_raw_bucket_and_is_compacted(local_up, tmp_path):
    _, local_dir, env = local_up
    runner = CliRunner()
    gateway_dir = tmp_path / "gateway"
    added = runner.invoke(
        app,
        ["local", "gateway", "add", THING, "--line", LINE, "--site", "plant-b", "--out", str(gateway_dir)]
        + ["--dir", str(local_dir)],
    )
    assert added.exit_code == 0, added.output
    config = gateway_dir / "gateway.json"
    assert str(config) in added.output
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    replayed = runner.invoke(
        app,
        ["gateway", "replay", str(_recording(tmp_path / "rec.csv")), "--mapping", str(mapping)]
        + ["--gateway-config", str(config), "--drain-timeout", "20"],
    )
    assert replayed.exit_code == 0, replayed.output
    report = json.loads(replayed.stdout)
    assert (report["published_samples"], report["pending"]) == (ROWS * METRICS, 0), report

    s3 = _s3(env)
    raw = _wait_for(lambda: _keys(s3, f"{names.RAW_PREFIX}/"), "a raw object")
    bodies = {key: s3.get_object(Bucket=names.LOCAL_DATA_BUCKET, Key=key)["Body"].read() for key in raw}
    assert {b.thing_name for key, body in bodies.items() for b in raw_batches(key, body)} == {THING}
    assert _keys(s3, f"{names.QUARANTINE_PREFIX}/") == []
    curated = _wait_for(lambda: _keys(s3, f"{names.CURATED_PREFIX}/line={LINE}/"), "compaction on the schedule")
    assert curated[0].endswith(".parquet")


def test_an_approved_model_package_is_handed_to_the_orchestrator(local_up):
    _, local_dir, env = local_up
    sagemaker = boto3.client(
        "sagemaker",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    group = names.model_package_group_name("extrusion", LINE)
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    create_package(sagemaker, group, f"s3://{names.LOCAL_MODEL_BUCKET}/no-such/manifest.json")
    lambda_log = local_dir / "lambda.log"
    # the manifest does not exist: the orchestrator fails, and says so in the function log
    _wait_for(lambda: f"{names.PROJECT}-orchestrator failed" in lambda_log.read_text(), "the orchestrator invoked")
    # the traceback follows the line that names the failure: wait for it rather than read it half-written
    _wait_for(lambda: "NoSuchKey" in lambda_log.read_text(), "the orchestrator's traceback")


def test_monitor_reads_the_running_stack_through_its_local_env(local_up):
    _, local_dir, env = local_up
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
    alert = {
        "thing_name": "gw-7",
        "line_id": LINE,
        "alert_id": "gw-7-usl_violation-1",
        "event": "raise",
        "violation_class": "usl_violation",
        "raised_at": at,
        "at": at,
        "predicted_for": at,
        "lead_time_s": 263.0,
        "consecutive": 2,
        "predicted_level": 3.86,
        "spec": {"target_metric": "cold_od_average", "lower": 3.75, "upper": 3.85},
        "model": {"model_id": "m", "version": "1.0.0", "precision": "fp32", "decision_margin": 0.0},
        "sent_at": at,
    }
    key = f"{names.ALERTS_PREFIX}/line={LINE}/event_date={at[:10]}/landed.jsonl"
    _s3(env).put_object(Bucket=names.LOCAL_DATA_BUCKET, Key=key, Body=json.dumps(alert).encode() + b"\n")
    # this shell has no local.env sourced: --dir points the command at the stack
    shell_env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL" and not k.startswith("EDGELOOP_")}
    monitor = [*_edgeloop_command(), "monitor", "--dir", str(local_dir), "--line", LINE]
    result = subprocess.run(monitor, capture_output=True, text=True, env=shell_env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "gw-7-usl_violation-1" in result.stdout and "263 s" in result.stdout and "open for" in result.stdout
    assert "Retraining: what would fire now" in result.stdout


def test_a_second_local_up_on_the_same_folder_is_refused(local_up):
    process, local_dir, _ = local_up
    second = CliRunner().invoke(app, ["local", "up", "--dir", str(local_dir), "--use-case", "extrusion"])
    assert second.exit_code == 1, second.output
    assert f"(pid {process.pid}) is already serving" in second.output
    assert (local_dir / names.LOCAL_ENV_FILE).exists()


def test_sigterm_stops_every_process_it_started(local_up):
    process, local_dir, _ = local_up
    children = descendants(process.pid)
    commands = " | ".join(command_line(pid) for pid in children)
    assert "moto.server" in commands and "mosquitto" in commands, commands
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=WAIT_S)
    assert process.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    left = {pid: command_line(pid) for pid in children if process_alive(pid)}
    assert left == {}
    assert not (local_dir / names.LOCAL_ENV_FILE).exists()
    assert "lost on stop" in out and "stopped" in out


def test_servers_do_not_outlive_a_killed_local_up(stacks):
    """SIGKILL leaves no chance to clean up: the servers get their parent-death signal instead."""
    process, local_dir = stacks[1]
    _ready(process, local_dir)
    children = descendants(process.pid)
    assert len(children) >= 2, {pid: command_line(pid) for pid in children}
    process.kill()
    process.wait(timeout=10)
    _wait_for(lambda: not any(process_alive(pid) for pid in children), "the servers gone", timeout=10)
