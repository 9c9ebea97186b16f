"""The pieces of `edgeloop local up` / `local gateway add` that need no servers: local.env, the use-case
resolution, the schedule, the CA reloaded for gateway certificates, approvals seen once, refusals."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import UTC, datetime

import pytest
from moto import mock_aws
from registry_helpers import create_package

from edgeloop.cloud.aws import client
from edgeloop.local import functions
from edgeloop.local.approval import ApprovalWatcher
from edgeloop.local.env_file import format_env_file, read_env_file, write_env_file
from edgeloop.local.gateways import add_gateway
from edgeloop.local.pki import CertificateAuthority
from edgeloop.local.schedule import CuratedWatcher, LocalSchedule, LocalScheduler
from edgeloop.local.up import LocalUpError, check_not_running, use_case_environment
from edgeloop.schemas import names
from edgeloop.schemas.use_case import USE_CASES_DIR

TRICKY = {"PLAIN": "x", "SPACES": "a b  c", "QUOTES": 'it\'s "quoted"', "DOLLAR": "$HOME and `cmd`", "EMPTY": ""}


# --- local.env --------------------------------------------------------------------------------------
def test_local_env_reads_back_what_it_wrote_and_a_shell_sources_the_same(tmp_path):
    path = write_env_file(tmp_path / "local.env", TRICKY, header="written by a test\nsecond line")
    assert read_env_file(path) == TRICKY
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    script = f". {path}; " + "; ".join(f'printf "%s\\0" "${key}"' for key in TRICKY)
    sourced = subprocess.run(["sh", "-c", script], capture_output=True, check=True, env={}).stdout.decode()
    assert sourced.split("\0")[:-1] == list(TRICKY.values())


def test_local_env_refuses_a_name_a_shell_cannot_export():
    with pytest.raises(ValueError, match="'BAD-NAME' is not a shell variable name"):
        format_env_file({"BAD-NAME": "1"})


def test_an_unreadable_local_env_line_is_named_with_file_and_line(tmp_path):
    path = tmp_path / "local.env"
    path.write_text("export A=1\nexport B='unterminated\n")
    with pytest.raises(ValueError, match=rf"{path}:2: .*unterminated"):
        read_env_file(path)


# --- the use case -----------------------------------------------------------------------------------
def test_a_use_case_file_anywhere_is_exported_resolved(tmp_path, monkeypatch):
    copy = tmp_path / "mine.yaml"
    copy.write_text((USE_CASES_DIR / "extrusion.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    environment, config = use_case_environment(tmp_path / ".." / tmp_path.name / "mine.yaml", None)
    assert environment == {names.USE_CASE_ENV: "extrusion", names.USE_CASE_FILE_ENV: str(copy)}
    assert config.use_case == "extrusion"


def test_a_packaged_use_case_by_name(monkeypatch):
    monkeypatch.delenv(names.USE_CASE_FILE_ENV, raising=False)
    environment, _ = use_case_environment(None, "extrusion")
    assert environment == {names.USE_CASE_ENV: "extrusion"}


def test_no_use_case_at_all_is_an_error_naming_the_options(monkeypatch):
    monkeypatch.delenv(names.USE_CASE_ENV, raising=False)
    monkeypatch.delenv(names.USE_CASE_FILE_ENV, raising=False)
    with pytest.raises(ValueError, match="--use-case-file"):
        use_case_environment(None, None)


def test_an_invalid_use_case_file_names_the_file_and_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("use_case: mine\ntarget_metric: od\n")
    with pytest.raises(ValueError, match=rf"{bad}.*metrics"):
        use_case_environment(bad, None)


# --- the schedule -----------------------------------------------------------------------------------
def test_a_negative_interval_is_refused_by_name():
    with pytest.raises(ValueError, match=r"wave_controller_s=-1 must be >= 0"):
        LocalSchedule(wave_controller_s=-1)
    assert LocalSchedule(compaction_s=5, wave_controller_s=0).describe().startswith("compaction every 5 s, wave")


class _Lines:
    def __init__(self, *rounds: list[str]) -> None:
        self.rounds = iter(rounds)

    def changed_lines(self) -> list[str]:
        return next(self.rounds)


def test_compaction_rounds_pack_the_lines_whose_curated_data_changed_and_keep_going_after_failures(monkeypatch):
    outcomes = iter([{}, {}, RuntimeError("moto went away")])
    packed = []

    def compact(log, source):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(functions, "compact_and_roll_up", compact)
    monkeypatch.setattr(functions, "pack_lines", lambda log, lines: packed.append(lines))
    scheduler = LocalScheduler(
        LocalSchedule(compaction_s=0.01, wave_controller_s=0, approvals_s=0, live_accuracy_s=0), lambda_log=None
    )
    scheduler.curated = _Lines(["line-1", "line-2"], [])
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while scheduler.stats().runs["compaction"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        scheduler.stop()
    stats = scheduler.stats()
    assert packed == [["line-1", "line-2"]]  # the round without changes packs nothing
    assert stats.failures == {"compaction": 1}
    assert "moto went away" in stats.last_error


@mock_aws
def test_curated_objects_new_or_rewritten_by_anyone_name_their_lines_once():
    s3 = client("s3")
    s3.create_bucket(Bucket="data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    watcher = CuratedWatcher("data")
    assert watcher.changed_lines() == []
    s3.put_object(Bucket="data", Key="curated/line=line-1/event_date=2026-03-02/part-a.parquet", Body=b"a")
    s3.put_object(Bucket="data", Key="raw_backfill/line=line-9/x.csv", Body=b"x")
    assert watcher.changed_lines() == ["line-1"]
    assert watcher.changed_lines() == []
    s3.put_object(Bucket="data", Key="curated/line=line-1/event_date=2026-03-02/part-a.parquet", Body=b"b")
    s3.put_object(Bucket="data", Key="curated/line=line-2/event_date=2026-03-03/part-b.parquet", Body=b"c")
    assert watcher.changed_lines() == ["line-1", "line-2"]


# --- the CA `local gateway add` signs with -----------------------------------------------------------
def test_the_ca_reloaded_from_its_folder_issues_certificates_of_the_same_chain(tmp_path):
    created = CertificateAuthority.create(tmp_path / "ca", "edgeloop-local-ca")
    loaded = CertificateAuthority.load(tmp_path / "ca")
    assert loaded.name == "edgeloop-local-ca"
    issued = loaded.issue("gw-later", tmp_path / "things")
    verify = ["openssl", "verify", "-CAfile", str(created.cert_path), str(issued.cert_path)]
    assert subprocess.run(verify, capture_output=True, text=True).stdout.strip().endswith(": OK")


def test_a_ca_key_of_another_ca_is_refused(tmp_path):
    CertificateAuthority.create(tmp_path / "a", "ca-a")
    other = CertificateAuthority.create(tmp_path / "b", "ca-b")
    (tmp_path / "a" / "ca.key").write_bytes(other.key_path.read_bytes())
    with pytest.raises(ValueError, match=r"ca.key does not belong to the CA certificate"):
        CertificateAuthority.load(tmp_path / "a")


# --- refusals -----------------------------------------------------------------------------------------
def test_a_folder_served_by_a_live_local_up_is_refused_and_a_stale_local_env_forgotten(tmp_path):
    env = tmp_path / names.LOCAL_ENV_FILE
    write_env_file(env, {names.LOCAL_PID_ENV: str(os.getppid())})  # alive: the process running pytest
    with pytest.raises(LocalUpError, match=rf"\(pid {os.getppid()}\) is already serving"):
        check_not_running(tmp_path)
    finished = subprocess.Popen(["true"])
    finished.wait()
    write_env_file(env, {names.LOCAL_PID_ENV: str(finished.pid)})
    check_not_running(tmp_path)
    assert not env.exists()


def test_gateway_add_needs_a_running_local_up(tmp_path):
    options = dict(line_id="line-1", site="plant-a", out_dir=tmp_path / "gw", local_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"local.env does not exist: start `edgeloop local up --dir"):
        add_gateway("gw-1", **options)
    finished = subprocess.Popen(["true"])
    finished.wait()
    values = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        names.LOCAL_BROKER_HOST_ENV: "127.0.0.1",
        names.LOCAL_BROKER_DEVICE_PORT_ENV: "1",
        names.LOCAL_DIR_ENV: str(tmp_path),
        names.LOCAL_PID_ENV: str(finished.pid),
        names.USE_CASE_ENV: "extrusion",
    }
    write_env_file(tmp_path / names.LOCAL_ENV_FILE, values)
    with pytest.raises(ValueError, match=rf"{names.LOCAL_PID_ENV}='{finished.pid}': .* not running"):
        add_gateway("gw-1", **options)
    with pytest.raises(ValueError, match="'edgeloop-cloud' is reserved"):
        add_gateway("edgeloop-cloud", **options)
    assert not (tmp_path / "gw").exists()


# --- approvals ----------------------------------------------------------------------------------------
@mock_aws
def test_each_approved_edgeloop_package_reaches_the_orchestrator_once():
    sagemaker = client("sagemaker")
    group = names.model_package_group_name("extrusion", "line-1")
    for name in (group, "someone-else"):
        sagemaker.create_model_package_group(ModelPackageGroupName=name)
    watcher = ApprovalWatcher()
    assert watcher.poll() == []
    pending = create_package(sagemaker, group, "s3://m/1.json", approval="PendingManualApproval")
    create_package(sagemaker, "someone-else", "s3://m/x.json")
    assert watcher.poll() == []
    sagemaker.update_model_package(ModelPackageArn=pending, ModelApprovalStatus="Approved")
    (event,) = watcher.poll()
    assert event["detail"]["ModelPackageArn"] == pending
    assert event["detail-type"] == names.MODEL_PACKAGE_STATE_CHANGE
    assert watcher.poll() == []


def test_invocations_take_turns():
    log, order = open(os.devnull, "w"), []  # noqa: SIM115
    slow = functions.logging_to(log, lambda e, c: (order.append("start"), time.sleep(0.05), order.append("end")))
    threads = [threading.Thread(target=slow, args=({}, None)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert order == ["start", "end"] * 3


def test_a_bad_gateway_option_is_named_before_any_certificate_is_issued(tmp_path):
    CertificateAuthority.create(tmp_path / "runtime" / "pki" / "ca", "edgeloop-local-ca")
    values = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",  # never called: the options are refused first
        names.LOCAL_BROKER_HOST_ENV: "127.0.0.1",
        names.LOCAL_BROKER_DEVICE_PORT_ENV: "8883",
        names.LOCAL_DIR_ENV: str(tmp_path),
        names.LOCAL_PID_ENV: str(os.getpid()),
        names.USE_CASE_ENV: "extrusion",
    }
    write_env_file(tmp_path / names.LOCAL_ENV_FILE, values)
    with pytest.raises(ValueError, match=r"gateway.json: invalid gateway config: .*line_id.*'line 1'"):
        add_gateway("gw-1", line_id="line 1", site="plant-a", out_dir=tmp_path / "gw", local_dir=tmp_path)
    assert not (tmp_path / "gw").exists()


def test_the_schedule_runs_live_accuracy_rounds_with_the_schedules_time(monkeypatch):
    rounds = []
    monkeypatch.setattr(functions, "live_accuracy_round", lambda log, source: rounds.append(source) or {})
    schedule = LocalSchedule(compaction_s=0, wave_controller_s=0, approvals_s=0, live_accuracy_s=0.01)
    assert schedule.describe().endswith("live_accuracy every 0.01 s")
    scheduler = LocalScheduler(schedule, lambda_log=None).start()
    try:
        deadline = time.monotonic() + 10
        while len(rounds) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        scheduler.stop()
    assert rounds[:2] == ["edgeloop.local.schedule"] * 2 and scheduler.stats().failures == {"live_accuracy": 0}
    event = functions.scheduled_event("edgeloop.local", datetime(2026, 3, 2, 10, 0, 5, tzinfo=UTC))
    assert event["time"] == "2026-03-02T10:00:05Z" and event["detail-type"] == "Scheduled Event"
