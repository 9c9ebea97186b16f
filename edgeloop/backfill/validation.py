"""Validation of a recording's samples with ingest's code (cloud/datalake/sample_validation.py).

Each chunk of at most CHUNK_SAMPLES samples (ingest's largest batch) goes through `validate_samples`
as a telemetry batch document, the same screening, strict schema and per-sample rules a gateway's
message meets, with no lateness SLA: a recording is old by nature. A sample without a usable time
stands with its timestamp cell as its time (ingest refuses text); one before 1970, or after
BACKFILL_MAX_TIME_MS, has no backfill seq (raw.backfill_seq) and is refused here.

Chunks are validated in forked worker processes or inline (`validators`); a job carries only what a
worker needs (it pickles).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from edgeloop.cloud.datalake.backfill import DAY_MS
from edgeloop.cloud.datalake.quarantine import MessageRefused
from edgeloop.cloud.datalake.raw import BACKFILL_MAX_TIME_MS
from edgeloop.cloud.datalake.sample_validation import SampleReasons, validate_samples
from edgeloop.schemas import UseCaseConfig
from edgeloop.schemas.telemetry import MAX_BATCH_SAMPLES

from .layout import Layout, Samples
from .plan import BackfillPlan
from .recording import BackfillError, Recording, where_in_file

CHUNK_SAMPLES = MAX_BATCH_SAMPLES  # one validation chunk = the largest batch ingest accepts


@dataclass
class ChunkJob:
    """One chunk to validate: what a worker process needs, and nothing it does not (it pickles)."""

    thing_name: str
    line_id: str
    metrics: list[str]
    code: np.ndarray
    time_ms: np.ndarray
    value: np.ndarray
    other: dict[int, object]  # position -> a cell that is no float
    times: dict[int, object]  # position -> what stands as its time (rows without a usable time)
    before_1970: list[int]  # positions whose time parsed but precedes the epoch
    file: str
    columns: list[str]
    row: np.ndarray  # per position: the file row (0-based, header excluded)
    column: np.ndarray  # per position: index into columns
    day: int | None

    def where(self, position: int) -> str:
        return where_in_file(self.file, self.columns, int(self.row[position]), int(self.column[position]))


_WORKER: dict = {}


def init_worker(use_case_json: str, received_at_ms: int) -> None:
    _WORKER["use_case"] = UseCaseConfig.model_validate_json(use_case_json)
    _WORKER["received_at_ms"] = received_at_ms


def chunk_job(plan: BackfillPlan, recording: Recording, layout: Layout, samples: Samples, day: int | None) -> ChunkJob:
    times: dict[int, object] = {}
    before: list[int] = []
    if day is None:  # the timestamp cell stands as the time: ingest refuses text
        for position, row in enumerate(samples.row.tolist()):
            if recording.valid[row]:
                times[position] = int(recording.time_ms[row])
                if recording.time_ms[row] < 0:
                    before.append(position)
            else:
                times[position] = recording.time_cell(row)
    return ChunkJob(
        thing_name=plan.thing_name,
        line_id=plan.line_id,
        metrics=layout.metrics,
        code=samples.code,
        time_ms=samples.time_ms,
        value=samples.value,
        other=samples.other,
        times=times,
        before_1970=before,
        file=str(recording.path),
        columns=layout.columns,
        row=samples.row,
        column=samples.column,
        day=day,
    )


def validate_chunk(job: ChunkJob) -> SampleReasons:
    """Reasons per refused position: the chunk as a batch document through ingest's validate_samples.
    Runs in a worker process (use case and receive time from init_worker) or inline."""
    n = len(job.code)
    if n == 0:
        return SampleReasons()
    values = job.value.tolist()
    for position, cell in job.other.items():
        values[position] = cell
    times: list = job.time_ms.tolist()
    for position, stands in job.times.items():
        times[position] = stands
    document = {
        "thing_name": job.thing_name,
        "line_id": job.line_id,
        "seq_first": 0,
        "seq_last": n - 1,
        "samples": {"metrics": job.metrics, "metric_index": job.code.tolist(), "time_ms": times, "values": values},
    }
    try:
        _, reasons = validate_samples(
            document,
            use_case=_WORKER["use_case"],
            received_at_ms=_WORKER["received_at_ms"],
            lateness_sla_days=None,
            describe=job.where,
        )
    except MessageRefused as refused:  # planning checked thing and line: not expected, but never silent
        raise BackfillError(f"{job.file}: a chunk of samples was refused whole: {refused}") from None
    if job.day is not None and (job.day + 1) * DAY_MS > BACKFILL_MAX_TIME_MS:  # only once clocks pass 2109
        for position in np.flatnonzero(job.time_ms > BACKFILL_MAX_TIME_MS).tolist():
            reasons.refuse(
                position, f"samples.time_ms[{position}]", times[position], f"is after {BACKFILL_MAX_TIME_MS}"
            )
    for position in job.before_1970:
        reasons.refuse(
            position,
            f"samples.time_ms[{position}]",
            times[position],
            "is before 1970-01-01: a backfilled reading is keyed by its event time (raw.backfill_seq)",
        )
    return reasons


def kept_mask(n: int, reasons: SampleReasons) -> np.ndarray:
    """True for the samples of a chunk that land (no reason refuses them)."""
    keep = np.ones(n, dtype=bool)
    if reasons:
        keep[np.fromiter(reasons, dtype=np.int64, count=len(reasons))] = False
    return keep


class _Inline:
    """An executor that runs each call at once, in this process."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


@contextmanager
def validators(plan: BackfillPlan, received_at_ms: int, workers: int) -> Iterator:
    """Where chunks are validated: `workers` forked processes (started here, before any thread), or inline."""
    if workers <= 1:
        init_worker(plan.use_case.model_dump_json(), received_at_ms)
        yield _Inline()
        return
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=init_worker,
        initargs=(plan.use_case.model_dump_json(), received_at_ms),
    )
    try:
        pool.submit(int).result()  # forks every worker now, while this process runs no other thread
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
