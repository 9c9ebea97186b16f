"""Onboarding: a plant's own recording into the data lake (`edgeloop backfill`), and on to a registered model.

Dataset: one line's recording of 30 days x 15 metrics at 0.5 Hz (1 296 000 rows, 19.44 M samples)
as a wide CSV with a "%Y-%m-%d %H:%M:%S" timestamp column (the shape of issue 15's extruder
recording), written once to a temporary folder (not timed).

Timed: `plan_backfill` + `run_backfill` (edgeloop/backfill/), the whole command
minus the interpreter start: read the CSV, parse the timestamps, validate every sample through
ingest's `validate_samples`, write the curated Parquet day partitions, the recording as the raw
object, and the lineage, into moto's in-process S3. Best of ROUNDS runs (a fresh bucket each);
the result is checked (every sample landed, 30 partitions) before it is reported. Beside the wall
clock figure, samples per CPU second (all threads and processes of the run): on a machine shared
with other work, that one does not move with the load.

Baseline, same run: ingest's per-message path (one warm Lambda invocation on a telemetry batch near
IoT Core's 128 KB limit, benchmarks/ingest_invoke.py), in samples per second: what replaying the
recording through gateways and ingest would at best achieve, before compaction.

`onboarding.csv_to_registered_model_s`: the second example line (device_shims/pipe_extrusion.py's
documented generator, two days: one recorder export a local day with German column names, a mapping
with a `context:` block, a use case file; written first, not timed: the committed 8-hour example is too
short for a model that beats persistence, which the pipeline's gate requires) from its CSV files to a
registered model, as the README's "Bring your own recording" runs it:
`edgeloop backfill` (samples and context) then `edgeloop pipeline run-local --use-case-file` (dataset,
train, evaluate, register), in process against a moto server already up (what `edgeloop local up`
starts; its start-up is not timed). The model package must be registered.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from moto import mock_aws

from edgeloop.schemas import UseCaseConfig, load_use_case, names

DAYS, METRICS, PERIOD_S = 30, 15, 2
START = datetime(2026, 1, 5, tzinfo=UTC)
LINE_ID = "line-1"
BUCKET = "edgeloop-bench-onboarding"
ROUNDS = 2
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
EXAMPLE_LINE = "rohrlinie-2"
EXAMPLE_HOURS = 48  # the README's `python -m edgeloop.device_shims.pipe_extrusion --days 2`


def run() -> dict[str, tuple[float, str]]:
    folder = Path(tempfile.mkdtemp(prefix="edgeloop-bench-onboarding-"))
    try:
        use_case = bench_use_case()
        recording, mapping = write_recording(folder, use_case)
        samples = (DAYS * 86_400 // PERIOD_S) * METRICS
        seconds, cpu_seconds = min(_timed_backfill(recording, mapping, use_case, samples) for _ in range(ROUNDS))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    from .ingest_invoke import samples_per_s_on_a_full_batch

    baseline = samples_per_s_on_a_full_batch()
    chain_s = csv_to_registered_model_s()
    rate = samples / seconds
    print(f"   backfill: {samples:,} samples in {seconds:.2f} s; per-message ingest: {baseline:,.0f} samples/s")
    return {
        "onboarding.backfill_samples_per_s": (rate, "samples/s"),
        "onboarding.backfill_samples_per_cpu_s": (samples / cpu_seconds, "samples/s"),
        "onboarding.backfill_30d_15metrics_0.5hz_s": (seconds, "s"),
        "onboarding.backfill_samples": (float(samples), "samples"),
        "onboarding.ingest_per_message_samples_per_s": (baseline, "samples/s"),
        "onboarding.backfill_ratio_vs_ingest_per_message": (rate / baseline, "x"),
        "onboarding.csv_to_registered_model_s": (chain_s, "s"),
    }


def bench_use_case() -> UseCaseConfig:
    """The extrusion use case with METRICS metrics (its own, then aux_* ones)."""
    base = load_use_case("extrusion")
    extra = [f"aux_{i}" for i in range(METRICS - len(base.metrics))]
    return UseCaseConfig.model_validate({**base.model_dump(), "metrics": [*base.metrics, *extra]})


def write_recording(folder: Path, use_case: UseCaseConfig) -> tuple[Path, Path]:
    """The CSV (file columns sensor_00.. mapped to the use case's metrics) and its mapping."""
    rows = DAYS * 86_400 // PERIOD_S
    rng = np.random.default_rng(15)
    start_s = int(START.timestamp())
    stamps = (np.arange(rows, dtype=np.int64) * PERIOD_S + start_s).astype("datetime64[s]")
    columns = {"time": pa.array(np.datetime_as_string(stamps, unit="s")).cast(pa.string())}
    columns["time"] = pa.compute.replace_substring(columns["time"], "T", " ")
    for i in range(METRICS):
        walk = np.cumsum(rng.normal(0, 0.01, rows)) + 100 + 10 * i
        columns[f"sensor_{i:02d}"] = pa.array(np.round(walk, 3))
    recording = folder / "recording.csv"
    pacsv.write_csv(pa.table(columns), recording, pacsv.WriteOptions(quoting_style="none"))
    mapping = folder / "recording.mapping.yaml"
    lines = [
        "layout: wide",
        f'timestamp: {{column: time, format: "{TIME_FORMAT}", timezone: UTC}}',
        "columns:",
        *(f"  sensor_{i:02d}: {metric}" for i, metric in enumerate(use_case.metrics[:METRICS])),
    ]
    mapping.write_text("\n".join(lines) + "\n")
    return recording, mapping


def _timed_backfill(recording: Path, mapping: Path, use_case: UseCaseConfig, samples: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process's threads and of any validation processes)."""
    from edgeloop.backfill import plan_backfill, run_backfill
    from edgeloop.cloud.aws import reset_clients
    from edgeloop.cloud.line_directory import StaticLineDirectory

    with mock_aws():
        reset_clients()
        boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        start, cpu_start = time.perf_counter(), _cpu_s()
        plan = plan_backfill([recording], mapping, line_id=LINE_ID, use_case=use_case, lines=StaticLineDirectory({}))
        (report,) = run_backfill(plan, BUCKET)
        seconds, cpu_seconds = time.perf_counter() - start, _cpu_s() - cpu_start
        parts = [k for k in _keys(f"{names.CURATED_PREFIX}/line={LINE_ID}/") if k.endswith(".parquet")]
    reset_clients()
    if report.landed != samples or report.quarantined or len(parts) != DAYS:
        raise AssertionError(f"the bench recording did not land whole: {report.to_dict()} ({len(parts)} parts)")
    print(f"   backfill round: {seconds:.2f} s wall, {cpu_seconds:.2f} s CPU")
    return seconds, cpu_seconds


def _cpu_s() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _keys(prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def csv_to_registered_model_s() -> float:
    """Seconds from the second example's CSV files to its registered model (see the module doc)."""
    from edgeloop.backfill import plan_backfill, run_backfill
    from edgeloop.cloud.aws import client, reset_clients
    from edgeloop.cloud.line_directory import StaticLineDirectory
    from edgeloop.cloud.settings import temporary_environment
    from edgeloop.device_shims.pipe_extrusion import write_example
    from edgeloop.local.aws import local_aws_environment
    from edgeloop.local.moto_server import MotoServer
    from edgeloop.sagemaker_pipelines.local_run import run_local
    from edgeloop.schemas.use_case import load_use_case_file

    work = Path(tempfile.mkdtemp(prefix="edgeloop-bench-onboarding-chain-"))
    example = work / "pipe_extrusion"
    try:
        write_example(example, hours=EXAMPLE_HOURS)
        files = sorted(example.glob("*.csv"))
        use_case = load_use_case_file(example / "use_case.yaml")
        with MotoServer() as moto, temporary_environment(local_aws_environment(moto.endpoint_url)):
            reset_clients()
            for bucket in (names.LOCAL_DATA_BUCKET, names.LOCAL_MODEL_BUCKET):
                client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
            start = time.perf_counter()
            plan = plan_backfill(
                files, example / "mapping.yaml", line_id=EXAMPLE_LINE, use_case=use_case, lines=StaticLineDirectory({})
            )
            reports = run_backfill(plan, names.LOCAL_DATA_BUCKET)
            first = min(int(r.time_ms[r.valid].min()) for r in plan.recordings)
            last = max(int(r.time_ms[r.valid].max()) for r in plan.recordings)
            (result,) = run_local(
                use_case_file=example / "use_case.yaml",
                line_ids=[EXAMPLE_LINE],
                start=datetime.fromtimestamp(first / 1000, tz=UTC).date(),
                end=datetime.fromtimestamp(last / 1000, tz=UTC).date(),
                data_bucket=names.LOCAL_DATA_BUCKET,
                model_bucket=names.LOCAL_MODEL_BUCKET,
                work_dir=work,
            )
            seconds = time.perf_counter() - start
        reset_clients()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not (result.passed and result.model_package_arn):
        raise AssertionError(f"the second example registered no model: {result}")
    landed = sum(r.landed for r in reports)
    print(f"   chain: {landed:,} samples of {len(files)} files -> {result.model_package_arn} in {seconds:.1f} s")
    return seconds
