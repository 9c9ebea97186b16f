"""Running a planned backfill: each recording laid out, validated, quarantined and landed, then committed.

Per recording: the recording as received goes to raw_backfill/ while its samples are laid out a
UTC day at a time and validated in chunks (validation.py); refused samples go to quarantine/
(quarantine.py), each day's kept samples to one curated partition (cloud/datalake/backfill.py),
written by a thread while later days validate. Then the mapping's context intervals are stored
through the context path (cloud/datalake/context_store.py), the rollups of the months written are
rebuilt (in AWS compaction's result triggers the rollups function; backfill bypasses compaction), and
last the lineage, which marks the run complete: a run whose lineage exists lands nothing again.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.backfill import curated_rows, partitions_with_parts, put_recording, write_partition
from edgeloop.cloud.datalake.context_store import store_context_intervals
from edgeloop.cloud.datalake.raw import BackfillLineage, backfill_lineage_key, backfill_recording_key
from edgeloop.device_shims import recording_context
from edgeloop.device_shims.recording import PARQUET_SUFFIXES
from edgeloop.functions.rollups.handler import months_to_rebuild
from edgeloop.functions.rollups.logic import build_line_rollups

from .layout import Layout, Samples, slice_samples
from .plan import BackfillPlan
from .quarantine import quarantine_chunk
from .recording import Recording
from .validation import CHUNK_SAMPLES, chunk_job, kept_mask, validate_chunk, validators

MAX_DAYS_IN_FLIGHT = 4  # days laid out and validating at once (bounds memory: ~15 MB per 650 k samples)


@dataclass
class FileReport:
    file: str
    backfill_id: str
    rows: int = 0
    samples: int = 0
    landed: int = 0
    already_stored: int = 0
    quarantined: int = 0
    duplicate_run: bool = False  # this recording, mapping, line and thing were backfilled before
    partitions: list[str] = field(default_factory=list)
    quarantine_keys: list[str] = field(default_factory=list)
    context_intervals: dict[str, int] = field(default_factory=dict)
    rollup_months: list[str] = field(default_factory=list)
    recording_key: str = ""
    lineage_key: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def run_backfill(
    plan: BackfillPlan,
    bucket: str,
    *,
    received_at_ms: int | None = None,
    code_version: str | None = None,
    progress: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> list[FileReport]:
    """Land every planned recording; one report per file. `workers`: validation processes (1:
    validate in this process). Default: 1 up to 2 CPUs (this process lays out and validates while a
    thread writes Parquet: both cores busy; measured faster than forked validators), else CPUs - 1."""
    received_at_ms = int(time.time() * 1000) if received_at_ms is None else received_at_ms
    version = code_version or _code_version()
    if workers is None:
        cpus = os.cpu_count() or 1
        workers = 1 if cpus <= 2 else cpus - 1
    return [_land(plan, recording, bucket, received_at_ms, version, progress, workers) for recording in plan.recordings]


def backfill_id(plan: BackfillPlan, recording: Recording) -> str:
    """Same recording, mapping, use case, line and thing: same id (a re-run finds the earlier lineage)."""
    parts = [recording.sha256, plan.mapping_sha256, plan.use_case.use_case, plan.line_id, plan.thing_name]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _land(
    plan: BackfillPlan,
    recording: Recording,
    bucket: str,
    received_at_ms: int,
    version: str,
    progress: Callable[[str], None] | None,
    workers: int,
) -> FileReport:
    started = time.perf_counter()
    bid = backfill_id(plan, recording)
    report = FileReport(
        file=str(recording.path),
        backfill_id=bid,
        rows=recording.rows,
        recording_key=backfill_recording_key(plan.line_id, plan.thing_name, bid, recording.path.suffix),
        lineage_key=backfill_lineage_key(plan.line_id, plan.thing_name, bid),
    )
    if s3.get_bytes_or_none(bucket, report.lineage_key) is not None:
        report.duplicate_run = True  # landed completely before: exactly once, as ingest's duplicates
        report.seconds = time.perf_counter() - started
        return report
    _land_samples(plan, recording, bucket, received_at_ms, workers, report)
    report.context_intervals = _store_context(bucket, plan, recording)
    report.rollup_months = _rebuild_rollups(bucket, report.partitions)
    _put_lineage(bucket, plan, recording, report, received_at_ms, version)
    report.seconds = time.perf_counter() - started
    if progress is not None:
        progress(f"{recording.path}: {report.landed:,} landed, {report.quarantined:,} quarantined")
    return report


def _land_samples(
    plan: BackfillPlan, recording: Recording, bucket: str, received_at_ms: int, workers: int, report: FileReport
) -> None:
    """The recording as received, and its samples validated, quarantined and written, a day at a time."""
    with (
        validators(plan, received_at_ms, workers) as validating,
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="backfill-write") as writer,
    ):
        # The recording as received (create-once) while the samples are validated.
        raw_put = writer.submit(put_recording, bucket, report.recording_key, recording.data, _content_type(recording))
        landing = _Landing(plan, recording, bucket, received_at_ms, report, validating, writer)
        for samples, day in landing.layout.days():
            landing.submit(samples, day)
        landing.drain()
        raw_put.result()


class _Landing:
    """One recording's days on their way: validating (at most MAX_DAYS_IN_FLIGHT at once), then their
    refused samples quarantined and their kept ones written as a curated partition."""

    def __init__(
        self,
        plan: BackfillPlan,
        recording: Recording,
        bucket: str,
        received_at_ms: int,
        report: FileReport,
        validating,
        writer: ThreadPoolExecutor,
    ) -> None:
        self.plan, self.recording, self.bucket, self.report = plan, recording, bucket, report
        self.received_at_ms = received_at_ms
        self.received_at = datetime.fromtimestamp(received_at_ms / 1000, tz=UTC)
        self.validating, self.writer = validating, writer
        self.layout = Layout(plan, recording)
        self.existing = partitions_with_parts(bucket, plan.line_id)
        self.writes: list[Future] = []
        self.in_flight: deque = deque()

    def submit(self, samples: Samples, day: int | None) -> None:
        """Validate a day's samples in chunks of ingest's batch size (at most MAX_BATCH_SAMPLES)."""
        self.report.samples += len(samples)
        chunks = []
        for start in range(0, len(samples), CHUNK_SAMPLES):
            chunk = slice_samples(samples, start, start + CHUNK_SAMPLES)
            job = chunk_job(self.plan, self.recording, self.layout, chunk, day)
            chunks.append((start, chunk, self.validating.submit(validate_chunk, job)))
        self.in_flight.append((samples, day, chunks))
        while len(self.in_flight) > MAX_DAYS_IN_FLIGHT:
            self._finish(*self.in_flight.popleft())

    def drain(self) -> None:
        """Finish every day still validating, wait for the writes, count what landed."""
        while self.in_flight:
            self._finish(*self.in_flight.popleft())
        for write in self.writes:
            prefix, written_new, already = write.result()
            self.report.partitions.append(prefix)
            self.report.landed += written_new
            self.report.already_stored += already

    def _finish(self, samples: Samples, day: int | None, chunks: list[tuple[int, Samples, Future]]) -> None:
        keep = np.ones(len(samples), dtype=bool)
        for start, chunk, validated in chunks:
            refused = validated.result()
            keep[start : start + len(chunk)] = kept_mask(len(chunk), refused)
            if refused:
                self.report.quarantined += len(refused)
                self.report.quarantine_keys.append(self._quarantine(chunk, refused))
        if day is not None and keep.any():  # one part per day partition, written while others validate
            layout = self.layout
            rows = curated_rows(
                self.plan.thing_name,
                self.plan.line_id,
                layout.metrics,
                layout.slots,
                samples.code[keep],
                samples.time_ms[keep],
                samples.value[keep],
                self.received_at_ms,
            )
            self.writes.append(
                self.writer.submit(write_partition, self.bucket, self.plan.line_id, day, rows, self.existing)
            )

    def _quarantine(self, chunk: Samples, refused) -> str:
        return quarantine_chunk(
            self.bucket,
            self.plan,
            self.recording,
            self.layout,
            chunk,
            refused,
            self.report.recording_key,
            self.received_at,
        )


def _rebuild_rollups(bucket: str, partitions: list[str]) -> list[str]:
    """The rollups of every event month the run wrote to, rebuilt as the rollups function would."""
    rebuilt = []
    for line_id, months in months_to_rebuild({"partitions": partitions}).items():
        rebuilt += build_line_rollups(bucket, line_id, months=months).months
    return rebuilt


def _store_context(bucket: str, plan: BackfillPlan, recording: Recording) -> dict[str, int]:
    """The recording's context intervals stored as the context function stores a gateway's
    (upserted, the line's slices rebuilt; planning checked each against its strict rule)."""
    if not recording.intervals:
        return {}
    store_context_intervals(bucket, plan.line_id, recording.intervals)
    return recording_context.summary(recording.intervals)


def _put_lineage(
    bucket: str, plan: BackfillPlan, recording: Recording, report: FileReport, received_at_ms: int, version: str
) -> None:
    """The lineage, written last: it marks the run complete (a re-run finds it and lands nothing)."""
    lineage = BackfillLineage(
        backfill_id=report.backfill_id,
        line_id=plan.line_id,
        thing_name=plan.thing_name,
        use_case=plan.use_case.use_case,
        source_file=str(recording.path),
        source_sha256=recording.sha256,
        source_bytes=len(recording.data),
        recording_key=report.recording_key,
        mapping_file=str(plan.mapping_path),
        mapping_sha256=plan.mapping_sha256,
        received_at_ms=received_at_ms,
        rows=report.rows,
        samples=report.samples,
        landed=report.landed,
        already_stored=report.already_stored,
        quarantined=report.quarantined,
        quarantine_keys=report.quarantine_keys,
        partitions=report.partitions,
        context_intervals=report.context_intervals,
        code_version=version,
    )
    body = lineage.model_dump_json(indent=1).encode()
    s3.put_bytes(bucket, report.lineage_key, body, content_type="application/json")


def _content_type(recording: Recording) -> str:
    path: Path = recording.path
    return "application/vnd.apache.parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "text/csv"


def _code_version() -> str:
    try:
        from importlib.metadata import version

        return version("edgeloop")
    except Exception:  # noqa: BLE001 - an uninstalled checkout has no version; lineage says so
        return "unknown"
