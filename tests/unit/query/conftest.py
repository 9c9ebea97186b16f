"""A small data bucket written by the real writers: compaction (curated + late), rollups, context slices.

Two lines of the extrusion use case over a day and month boundary (2026-01-31 22:00 to
2026-02-01 02:00 UTC): `line-a` (shared taxonomy) and `line-us-1` (temp_die in °F, pressure in
psi). Some rows of line-a arrive 20 days late. `samples` keeps what was sent, for pandas checks.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from edgeloop.cloud.datalake.context import quantize, sub_intervals
from edgeloop.functions.compaction.logic import compact
from edgeloop.functions.rollups.logic import build_line_rollups
from edgeloop.query.tables import CONTEXT_SLICES
from edgeloop.schemas import ColumnarSamples, ContextInterval, SpecLimits, names
from edgeloop.schemas.raw_batch import RawBatch

BUCKET = "edgeloop-query-test"
T0 = int(datetime(2026, 1, 31, 22, tzinfo=UTC).timestamp() * 1000)
HOURS = 4
STEP_MS = 10_000
LINES = ("line-a", "line-us-1")
METRICS = ("temp_die", "pressure")
DAY_MS = 86_400_000
LATE_DELAY_MS = 20 * DAY_MS  # beyond the 14-day SLA


@dataclass
class Dataset:
    bucket: str
    samples: pd.DataFrame  # thing_name, line_id, metric, time_ms, value, seq, ingest_time_ms, late
    intervals: dict[str, list[ContextInterval]]


def _samples() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frames = []
    times = np.arange(T0, T0 + HOURS * 3_600_000, STEP_MS, dtype=np.int64)
    for line_number, line in enumerate(LINES):
        thing = f"gw-{line}"
        seq = 0
        for metric_number, metric in enumerate(METRICS):
            base = 200.0 + 50 * metric_number + 10 * line_number
            values = base + rng.normal(0, 3, len(times)).round(3)
            frame = pd.DataFrame(
                {"thing_name": thing, "line_id": line, "metric": metric, "time_ms": times, "value": values}
            )
            frame["seq"] = np.arange(seq, seq + len(times), dtype=np.int64)
            seq += len(times)
            frames.append(frame)
    samples = pd.concat(frames, ignore_index=True)
    # The last hour of line-a's temp_die is delivered 20 days late; the rest 5 s after the event.
    samples["late"] = (
        (samples["line_id"] == "line-a")
        & (samples["metric"] == "temp_die")
        & (samples["time_ms"] >= T0 + 3 * 3_600_000)
    )
    sent_at = samples["time_ms"] + np.where(samples["late"], LATE_DELAY_MS, 5_000)
    # One raw object per (thing, metric, lateness); compaction stamps its rows with its receive time.
    samples["ingest_time_ms"] = sent_at.groupby([samples["thing_name"], samples["metric"], samples["late"]]).transform(
        "max"
    )
    return samples


def _land_raw(s3, samples: pd.DataFrame) -> None:
    """One raw object per (thing, metric, lateness), as ingest lands them."""
    for (thing, line, metric, _late), group in samples.groupby(["thing_name", "line_id", "metric", "late"]):
        received = int(group["ingest_time_ms"].max())
        batch = RawBatch(
            thing_name=thing,
            line_id=line,
            seq_first=int(group["seq"].min()),
            seq_last=int(group["seq"].max()),
            received_at_ms=received,
            samples=ColumnarSamples(
                metrics=[metric],
                metric_index=[0] * len(group),
                time_ms=group["time_ms"].tolist(),
                values=group["value"].tolist(),
            ),
            seq=group["seq"].tolist(),
        )
        moment = datetime.fromtimestamp(received / 1000, tz=UTC)
        key = (
            f"{names.RAW_PREFIX}/ingest_date={moment:%Y-%m-%d}/hour={moment:%H}/thing={thing}/"
            f"{batch.seq_first}-{batch.seq_last}.json.gz"
        )
        s3.put_object(Bucket=BUCKET, Key=key, Body=batch.to_gzip_json())


def _intervals() -> list[ContextInterval]:
    start = datetime.fromtimestamp(T0 / 1000, tz=UTC)

    def at(minutes: float) -> datetime:
        return start + timedelta(minutes=minutes)

    spec = SpecLimits(target_metric="cold_od_average", lower=1.9, upper=2.1)
    return [
        ContextInterval(
            kind="run", interval_id="run-1", line_id="line-a", start=at(10), end=at(130), value="P-100", spec=spec
        ),
        ContextInterval(kind="run", interval_id="run-2", line_id="line-a", start=at(130.4), end=at(200), value="P-200"),
        ContextInterval(kind="state", interval_id="st-1", line_id="line-a", start=at(0), end=at(90), value="running"),
        ContextInterval(kind="state", interval_id="st-2", line_id="line-a", start=at(90), end=at(100), value="idle"),
        ContextInterval(kind="shift", interval_id="sh-1", line_id="line-a", start=at(-60), end=at(120), value="night"),
    ]


def put_slices(s3, line_id: str, slices: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(slices, schema=CONTEXT_SLICES.arrow_schema(), preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    s3.put_object(
        Bucket=BUCKET, Key=f"{names.CONTEXT_SLICES_PREFIX}/line={line_id}/slices.parquet", Body=buffer.getvalue()
    )


@pytest.fixture(scope="package")
def data_bucket():
    """The bucket inside one moto session for the whole package; yields (Dataset, s3 client)."""
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        samples = _samples()
        _land_raw(s3, samples)
        compact(BUCKET, lateness_sla_days=14)
        for line in LINES:
            build_line_rollups(BUCKET, line)
        intervals = {"line-a": _intervals()}
        put_slices(s3, "line-a", quantize(sub_intervals(intervals["line-a"], "line-a"), "1m"))
        yield Dataset(BUCKET, samples, intervals), s3
