"""Bring your own recording (issue 15): a line edgeloop has no code for, from its CSV export to a registered,
deployable model, with the documented commands only.

From two days of the example line written by the README's documented generator (`python -m
edgeloop.device_shims.pipe_extrusion --out pipe_extrusion --days 2`: one CSV file a local day with German
column names, mapping.yaml with a `context:` block, use_case.yaml; the committed 8-hour example in
device_shims/examples/pipe_extrusion/ is the same line, too short for whole-run validation folds and for a
model that beats persistence, which the pipeline's gate requires), as the README's "Bring your own
recording" section types them:

    edgeloop local up --dir .edgeloop/local --use-case-file pipe_extrusion/use_case.yaml    # in the background
    source .edgeloop/local/local.env
    edgeloop local gateway add gw-rohrlinie-2 --line rohrlinie-2 --site werk-1 --out ... --dir .edgeloop/local
    edgeloop backfill pipe_extrusion/rohrlinie2_*.csv --mapping pipe_extrusion/mapping.yaml --line rohrlinie-2 ...
    edgeloop pipeline run-local --use-case-file pipe_extrusion/use_case.yaml --line rohrlinie-2 ... --approve
    edgeloop models list --use-case-file pipe_extrusion/use_case.yaml --line rohrlinie-2

then checks what they left with a plain boto3 client on the endpoint local.env names: the samples in curated
Parquet; the context intervals (runs, spec limits, machine states) of the line; the packs the scheduled metric
packer built (none overlapping a non-productive state, those counted; limits as in force at the label's
time); the model package in the line's group with its payload tiers and hardware-compatibility metadata,
read the way the orchestrator reads it; and the orchestrator's handling of the approval. SIGTERM stops
`local up`, which must exit 0.

Expectations come from the example's files (mapping.yaml, use_case.yaml, the CSVs read through the
mapping), the line id and the README's sample count: nothing here knows the line's column names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pandas as pd
import pytest
import yaml
from process_helpers import descendants

from edgeloop.schemas import names

pytestmark = pytest.mark.timeout(240)

GENERATE_DAYS = 2  # the README's "For more data": the generator's default seed and start (2026-03-02 20:00 local)
# the recorder's export, one file a local day
RECORDINGS = ("rohrlinie2_2026-03-02.csv", "rohrlinie2_2026-03-03.csv", "rohrlinie2_2026-03-04.csv")
LINE = "rohrlinie-2"
THING = "gw-rohrlinie-2"
SITE = "werk-1"
START, END = "2026-03-02", "2026-03-04"
SAMPLES = 946_040  # what the backfill of the generated files lands (default seed)
START_TIMEOUT_S = 60.0
WAIT_S = 60.0
COMMAND_TIMEOUT_S = 150.0
MODELS_BUCKET_URI = f"s3://{names.LOCAL_MODEL_BUCKET}/"


# --- running the documented commands ---------------------------------------------------------------


def _edgeloop() -> list[str]:
    script = Path(sys.executable).parent / "edgeloop"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from edgeloop.cli import app; app()"]


def _user_environment() -> dict[str, str]:
    """A user's shell: this process's environment without its AWS or edgeloop settings (the suite's fakes)."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "EDGELOOP_"))}


def _sourced(env_file: Path, base: dict[str, str]) -> dict[str, str]:
    """The environment of a shell started with `base` after `source env_file`."""
    shell = subprocess.run(
        ["sh", "-c", '. "$1" && env -0', "sh", str(env_file)], env=base, capture_output=True, check=True
    )
    return dict(entry.split("=", 1) for entry in shell.stdout.decode().split("\0") if "=" in entry)


@dataclass
class Stack:
    """The `edgeloop local up` running in the background, its output in files (a full pipe would block it)."""

    process: subprocess.Popen
    workdir: Path
    local_dir: Path
    out: Path
    err: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return f"`local up` stdout:\n{self.out.read_text()}\n`local up` stderr:\n{self.err.read_text()}"

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as Ctrl-C in its terminal; SIGKILL only if it does not stop."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def _wait_for(condition, what: str, stack: Stack, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not stack.alive():
            raise AssertionError(f"`local up` exited with {stack.process.returncode} before {what}\n{stack.output()}")
        value = condition()
        if value is not None and value is not False:  # (a DataFrame has no truth value)
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s\n{stack.output()}")


def _run(stack: Stack, env: dict[str, str], command: str) -> str:
    """`edgeloop COMMAND` in the user's folder and shell; its stdout. It must succeed."""
    args = shlex.split(command)
    done = subprocess.run(
        [*_edgeloop(), *args], cwd=stack.workdir, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert done.returncode == 0, (
        f"edgeloop {' '.join(args)} exited with {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return done.stdout


def _json_documents(text: str) -> list:
    """The JSON documents a command printed (each starting at the beginning of a line), in order."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while (start := text.find("{", position)) >= 0:
        if start and text[start - 1] != "\n":
            position = start + 1
            continue
        document, position = decoder.raw_decode(text, start)
        documents.append(document)
    return documents


# --- the user's session, once for the module ---------------------------------------------------------


@dataclass
class Session:
    stack: Stack
    env: dict[str, str]
    line_dir: Path
    gateway_config: dict
    mapping: dict
    use_case: dict
    backfills: list[dict]
    pipeline_stdout: str
    models_list: str

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self, prefix: str, bucket: str = names.LOCAL_DATA_BUCKET) -> list[str]:
        pages = self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def read(self, key: str, bucket: str = names.LOCAL_DATA_BUCKET) -> bytes:
        return self.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()

    def intervals(self) -> list[dict]:
        body = self.read(f"{names.CONTEXT_PREFIX}/line={LINE}/intervals.jsonl")
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    def dataset(self) -> dict:
        """The dataset step's report in `pipeline run-local`'s output."""
        reports = [d for d in _json_documents(self.pipeline_stdout) if "packs_excluded_non_productive" in d]
        assert len(reports) == 1, self.pipeline_stdout
        return reports[0]

    def model_package_arn(self) -> str:
        """The package `pipeline run-local` registered for the line (its output: line -> ARN)."""
        registered = [d for d in _json_documents(self.pipeline_stdout) if set(d) == {LINE}]
        assert len(registered) == 1, self.pipeline_stdout
        return registered[0][LINE]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bring-your-own")
    line_dir = workdir / "pipe_extrusion"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeloop.device_shims.pipe_extrusion",
            "--out",
            str(line_dir),
            "--days",
            str(GENERATE_DAYS),
        ],
        check=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    use_case_file, mapping_file, local_dir = (
        "pipe_extrusion/use_case.yaml",
        "pipe_extrusion/mapping.yaml",
        ".edgeloop/local",
    )
    base = _user_environment()
    out, err = workdir / "local-up.out", workdir / "local-up.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            # the README's command, with its schedule options shortened
            [*_edgeloop(), *shlex.split(f"local up --dir {local_dir} --use-case-file {use_case_file}")]
            + shlex.split("--compaction-every 1 --approvals-every 0.5"),
            cwd=workdir,
            env=base,
            stdout=stdout,
            stderr=stderr,
        )
    stack = Stack(process, workdir, workdir / local_dir, out, err)
    try:
        env_file = stack.local_dir / names.LOCAL_ENV_FILE
        _wait_for(env_file.exists, "local.env written", stack, START_TIMEOUT_S)
        env = _sourced(env_file, base)
        gateway_dir = f".edgeloop/{THING}"
        _run(stack, env, f"local gateway add {THING} --line {LINE} --site {SITE} --out {gateway_dir} --dir {local_dir}")
        recordings = " ".join(sorted(str(path.relative_to(workdir)) for path in line_dir.glob("*.csv")))  # the glob
        backfilled = _run(stack, env, f"backfill {recordings} --mapping {mapping_file} --line {LINE} --dir {local_dir}")
        trained = _run(
            stack,
            env,
            f"pipeline run-local --use-case-file {use_case_file} --line {LINE} --start {START} --end {END} --approve",
        )
        wide = {**env, "COLUMNS": "250"}  # rich cuts table cells to the terminal's width
        listed = _run(stack, wide, f"models list --use-case-file {use_case_file} --line {LINE}")
        yield Session(
            stack=stack,
            env=env,
            line_dir=line_dir,
            gateway_config=json.loads((workdir / gateway_dir / "gateway.json").read_text()),
            mapping=yaml.safe_load((line_dir / "mapping.yaml").read_text()),
            use_case=yaml.safe_load((line_dir / "use_case.yaml").read_text()),
            backfills=_json_documents(backfilled),
            pipeline_stdout=trained,
            models_list=listed,
        )
    finally:
        code = stack.stop()
    assert code == 0, stack.output()


# --- what the commands left ------------------------------------------------------------------------------


def _times(values) -> pd.Series:
    return pd.to_datetime(pd.Series(list(values)), utc=True)


def _intervals_of(session: Session, kind: str) -> pd.DataFrame:
    frame = pd.DataFrame([i for i in session.intervals() if i["kind"] == kind])
    frame["start"], frame["end"] = _times(frame["start"]), _times(frame["end"])
    return frame.sort_values("start", ignore_index=True)


def _non_productive_overlap(packs: pd.DataFrame, states: pd.DataFrame, productive: list[str], until) -> pd.Series:
    """Per pack: does [window_start, until) overlap a state outside `productive`?"""
    overlap = pd.Series(False, index=packs.index)
    for state in states[~states["value"].isin(productive)].itertuples():
        overlap |= (packs["window_start"] < state.end) & (until > state.start)
    return overlap


def _packer_metrics(session: Session) -> list[dict]:
    """The metric packer's EMF records in the function log (lambda.log), oldest first."""
    records = []
    for line in (session.stack.local_dir / "lambda.log").read_text().splitlines():
        if line.startswith("{") and '"service":"metric_packer"' in line.replace(" ", ""):
            records.append(json.loads(line))
    return records


def test_local_up_serves_the_use_case_file_and_a_gateway_is_added(session):
    assert session.env[names.USE_CASE_ENV] == session.use_case["use_case"]
    assert Path(session.env[names.USE_CASE_FILE_ENV]).resolve() == (session.line_dir / "use_case.yaml").resolve()
    config = session.gateway_config
    assert (config["thing_name"], config["line_id"], config["use_case"]) == (THING, LINE, session.use_case["use_case"])
    thing = session.client("iot").describe_thing(thingName=THING)
    assert LINE in thing["attributes"].values() and SITE in thing["attributes"].values(), thing["attributes"]


def test_backfill_lands_every_sample_in_curated_parquet(session):
    reports = session.backfills
    assert [Path(r["file"]).name for r in reports] == list(RECORDINGS), reports
    assert sum(r["samples"] for r in reports) == sum(r["landed"] for r in reports) == SAMPLES, reports
    assert [r["quarantined"] for r in reports] == [0] * len(RECORDINGS)
    for report in reports:  # marked as backfill: the recording and its lineage under raw_backfill/
        for key in (report["recording_key"], report["lineage_key"]):
            assert key.startswith(f"{names.BACKFILL_PREFIX}/line={LINE}/"), key
            assert session.keys(key) == [key]
    # not through the live path, no lateness SLA: nothing in raw/, late/ or quarantine/
    for prefix in (names.RAW_PREFIX, names.LATE_PREFIX, names.QUARANTINE_PREFIX):
        assert session.keys(f"{prefix}/") == [], prefix

    keys = session.keys(f"{names.CURATED_PREFIX}/line={LINE}/")
    assert keys and all(key.endswith(".parquet") for key in keys), keys
    curated = pd.concat([pd.read_parquet(io.BytesIO(session.read(key))) for key in keys], ignore_index=True)
    assert len(curated) == SAMPLES
    assert set(curated["line_id"]) == {LINE}
    assert set(curated["metric"]) == set(session.mapping["columns"].values()) == set(session.use_case["metrics"])
    assert not curated.duplicated(["metric", "time_ms"]).any()
    times = pd.to_datetime(curated["time_ms"], unit="ms", utc=True)
    first, after_last = pd.Timestamp(START, tz="UTC"), pd.Timestamp(END, tz="UTC") + pd.Timedelta(days=1)
    assert first <= times.min() and times.max() < after_last, (times.min(), times.max())


def test_the_context_of_the_mapping_is_stored_for_the_line(session):
    context = session.mapping["context"]
    intervals = session.intervals()
    assert {i["line_id"] for i in intervals} == {LINE}
    assert {i["kind"] for i in intervals} == {"run", "state", "limits"}
    for kind in ("run", "state", "limits"):
        frame = _intervals_of(session, kind)
        assert (frame["start"] < frame["end"]).all(), kind
        assert (frame["end"].iloc[:-1].to_numpy() <= frame["start"].iloc[1:].to_numpy()).all(), f"{kind}s overlap"
        assert sum(r["context_intervals"].get(kind, 0) for r in session.backfills) > 0, session.backfills

    # runs: one per product in the run column (read through the mapping), across both files
    column = context["runs"]["column"]
    products = pd.concat(
        [pd.read_csv(session.line_dir / name, usecols=[column])[column] for name in RECORDINGS], ignore_index=True
    ).dropna()
    expected_runs = products[products != products.shift()].tolist()
    assert _intervals_of(session, "run")["value"].tolist() == expected_runs

    # machine states: the mapping's rules and default, each seen in the recording
    states = _intervals_of(session, "state")
    assert set(states["value"]) == {context["states"]["default"]} | {r["state"] for r in context["states"]["rules"]}

    # spec limits: setpoint +- band on the use case's target, moving within runs
    limits = _intervals_of(session, "limits")
    band = context["limits"]["band"]
    for spec in limits["spec"]:
        assert spec["target_metric"] == session.use_case["target_metric"]
        assert spec["upper"] - spec["lower"] == pytest.approx(2 * band)
    assert limits["spec"].map(lambda spec: spec["lower"]).nunique() > 1
    runs = _intervals_of(session, "run")
    within = [((limits["start"] >= run.start) & (limits["end"] <= run.end)).sum() for run in runs.itertuples()]
    assert max(within) > 1, "no run in which the limits move"


def test_packs_leave_non_productive_states_out_and_count_them(session):
    use_case = session.use_case
    run_ids = set(_intervals_of(session, "run")["interval_id"])
    packs_key = f"{names.PACKS_PREFIX}/line={LINE}/examples.parquet"

    def packs_of_every_run() -> pd.DataFrame | None:
        if not session.keys(packs_key):
            return None
        packs = pd.read_parquet(io.BytesIO(session.read(packs_key)))
        return packs if set(packs["run_id"]) == run_ids else None

    # built by the metric packer on `local up`'s schedule, from what the backfill stored
    packs = _wait_for(packs_of_every_run, "packs of every run", session.stack)
    assert set(packs["line_id"]) == {LINE}
    assert ((packs["window_end"] - packs["window_start"]) == pd.Timedelta(seconds=use_case["pack_window_s"])).all()

    horizon = pd.Timedelta(seconds=use_case["horizon_s"])
    label_end = packs["window_end"] + horizon + pd.Timedelta(seconds=use_case["label_window_s"])
    states = _intervals_of(session, "state")
    overlapping = _non_productive_overlap(packs, states, use_case["productive_states"], label_end)
    assert not overlapping.any(), packs[overlapping][["window_start", "window_end"]]

    # each pack's spec limits: those in force at its label's time (the setpoint's band then)
    limits = _intervals_of(session, "limits")
    for pack in packs.itertuples():
        label_time = pack.window_end + horizon
        force = limits[(limits["start"] <= label_time) & (label_time < limits["end"])]
        assert len(force) == 1, (pack.window_end, force)
        spec = force["spec"].iloc[0]
        assert (pack.spec_lower, pack.spec_upper) == (spec["lower"], spec["upper"]), pack

    # counted, by the packer and by the pipeline's dataset step, which trained on productive packs only
    excluded = [record["PacksExcludedNonProductive"][0] for record in _packer_metrics(session)]
    assert excluded and excluded[-1] > 0, excluded
    dataset = session.dataset()
    assert dataset["line_id"] == LINE and dataset["use_case"] == use_case["use_case"]
    assert dataset["packs_excluded_non_productive"] > 0
    assert dataset["rows_train"] > 0 and dataset["rows_reference"] > 0
    assert f"({dataset['packs_excluded_non_productive']} packs in non-productive states left out)" in " ".join(
        session.pipeline_stdout.split()
    )


def _manifest(session: Session, package: dict):
    from edgeloop.schemas import ModelManifest

    uri = package["CustomerMetadataProperties"][names.MANIFEST_URI_METADATA_KEY]
    assert uri.startswith(MODELS_BUCKET_URI), uri
    return ModelManifest.model_validate_json(
        session.read(uri.removeprefix(MODELS_BUCKET_URI), names.LOCAL_MODEL_BUCKET)
    )


def test_a_model_is_registered_in_the_lines_group_with_its_tiers_and_hardware_metadata(session):
    from edgeloop.model_runtime.model_format import RUNTIME_VERSION
    from edgeloop.schemas.common import semver_key
    from edgeloop.schemas.model import architecture_of_machine

    use_case = session.use_case
    group = names.model_package_group_name(use_case["use_case"], LINE)
    arn = session.model_package_arn()
    sagemaker = session.client("sagemaker")
    listed = sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert [p["ModelPackageArn"] for p in listed] == [arn]
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "Approved"  # --approve
    metadata = package["CustomerMetadataProperties"]
    assert metadata["edgeloop:use_case"] == use_case["use_case"] and metadata["edgeloop:line_ids"] == LINE
    # registered only past the persistence gate: it beat persistence on the reference runs, by the figures
    assert metadata["edgeloop:reference:gate"] == "passed", metadata
    assert "persistence:rmse=" in metadata["edgeloop:reference:baselines"], metadata
    assert (
        "vs persistence: candidate RMSE " in session.pipeline_stdout
        and " <= persistence RMSE " in session.pipeline_stdout
    )

    # what the orchestrator plans with: the manifest the package points at, and every tier's payload
    manifest = _manifest(session, package)
    assert (manifest.use_case, manifest.line_ids, manifest.target) == (
        use_case["use_case"],
        [LINE],
        use_case["target_metric"],
    )
    assert {feature.split("__")[0] for feature in manifest.features} == set(use_case["metrics"])
    assert [tier.precision.value for tier in manifest.tiers] == use_case["precisions"]
    assert metadata["edgeloop:tiers"].split() == use_case["precisions"]
    for tier in manifest.tiers:
        payload = session.read(tier.payload_key, names.LOCAL_MODEL_BUCKET)
        assert (len(payload), hashlib.sha256(payload).hexdigest()) == (tier.payload_bytes, tier.sha256)
        prefix = f"edgeloop:tier:{tier.precision.value}:"
        assert metadata[f"{prefix}architectures"].split() == [a.value for a in tier.architectures]
        assert metadata[f"{prefix}min_runtime_version"] == tier.min_runtime_version
        assert metadata[f"{prefix}sha256"] == tier.sha256
        assert architecture_of_machine() in [a.value for a in tier.architectures]
        assert semver_key(tier.min_runtime_version) <= semver_key(RUNTIME_VERSION)

    listing = session.models_list
    assert group in listing and manifest.version in listing and "Approved" in listing, listing


def test_the_approval_reaches_the_orchestrator_and_the_added_gateway_could_run_the_model(session):
    from edgeloop.cloud.fleet.deployments import DeploymentTable
    from edgeloop.cloud.fleet.planning import deployment_id_for, plan_rollout
    from edgeloop.greengrass_components.gateway.config import GatewayConfig
    from edgeloop.local.gateways import using_stack
    from edgeloop.schemas import DeploymentState, DeviceRecord, Precision
    from edgeloop.schemas.device import DeviceProfile

    arn = session.model_package_arn()
    manifest = _manifest(session, session.client("sagemaker").describe_model_package(ModelPackageName=arn))
    with using_stack(session.env):
        table = DeploymentTable(session.env[names.DEPLOYMENT_TABLE_ENV])
        # `local up` sees the approval within --approvals-every and hands it to the orchestrator
        stored = _wait_for(
            lambda: table.get_stored(deployment_id_for(arn)), "the orchestrator's deployment", session.stack
        )
    record = stored.record
    assert (record.model_package_arn, record.model_id, record.model_version) == (
        arn,
        manifest.model_id,
        manifest.version,
    )
    for tier in manifest.tiers:
        update = stored.updates[tier.precision]
        assert update.payload_uri == f"{MODELS_BUCKET_URI}{tier.payload_key}"
        assert (update.sha256, update.architectures) == (tier.sha256, tier.architectures)
    # The fleet learns of a gateway from its announcement when its runtime starts; `local gateway add`
    # provisions it (thing, certificate, gateway.json) and nothing the README documents starts it here:
    # the rollout finds no device (the gateway is enrolled when it announces itself).
    assert record.state is DeploymentState.FAILED and "no device" in record.reason, record

    # ... and the orchestrator's plan would target the added gateway, as it announces itself
    config = GatewayConfig.model_validate(session.gateway_config)
    now = datetime.now(UTC)
    announced = config.announcement(list(Precision)).model_dump(include=set(DeviceProfile.model_fields))
    device = DeviceRecord(**announced, status_since=now, last_seen=now)
    plan = plan_rollout(manifest, [device], model_package_arn=arn, now=now)
    assert plan.excluded == [] and [(w.precision, w.targets) for w in plan.waves] == [
        (manifest.tiers[0].precision, [THING])
    ], plan


def test_sigterm_stops_local_up_and_everything_it_started(session):
    from edgeloop.local.up import process_alive

    started = descendants(session.stack.process.pid)  # moto_server, mosquitto
    assert len(started) >= 2, started
    code = session.stack.stop()
    assert code == 0, session.stack.output()
    assert "stopped" in session.stack.out.read_text()
    assert {pid for pid in started if process_alive(pid)} == set()
    assert not (session.stack.local_dir / names.LOCAL_ENV_FILE).exists()
