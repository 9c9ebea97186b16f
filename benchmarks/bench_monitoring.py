"""Live accuracy and alert quality (issue 17) -> benchmarks/results/monitoring.json.

monitoring.join_s_per_line_day: one line-day of the extrusion use case (a prediction every 30 s, the
target measured at 1 Hz; monitoring_data.py) joined and scored in memory per hourly window by the
function's own code (functions/live_accuracy/join.py: the labeler's labels, the value now for
persistence, cloud/scoring.py's metrics for both), from the predictions as parsed and the target samples as
read; the median of REPEATS. monitoring.round_s_per_line_day: the whole scheduled round over that line-day
in moto S3 (listing, reading the JSON lines and the Parquet parts, the join, writing reports and state).
The row counts are entries of their own. alerts.*: benchmarks/alerts_quality.py (a model trained on
simulated days, the gateway's own Scorer and alert tracker over held-out days).
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timedelta

import boto3
import numpy as np
from moto import mock_aws

from edgeloop.functions.live_accuracy.join import Measured, score_version
from edgeloop.functions.live_accuracy.logic import run_round
from edgeloop.functions.live_accuracy.store import predictions_frame
from edgeloop.schemas import load_use_case
from edgeloop.schemas.compat import UTC

from .alerts_quality import alerts_quality
from .monitoring_data import land, line_day

DAY = datetime(2026, 3, 2, tzinfo=UTC)
BUCKET = "edgeloop-bench-monitoring"
REPEATS = 5
NO_RUNS = np.array([], dtype=np.int64)


def join_line_day(data, use_case) -> int:
    """Every window of the line-day joined and scored; the windows scored."""
    predictions = predictions_frame(data.predictions)
    target = data.measurements[data.measurements["metric"] == use_case.target_metric]
    measured = Measured(target["time_ms"].to_numpy(), target["value"].to_numpy(), NO_RUNS, NO_RUNS)
    width_ms = use_case.monitoring.window_minutes * 60_000
    window = predictions["predicted_for_ms"] // width_ms
    for (index, model_id, version), rows in predictions.groupby([window, "model_id", "version"]):
        start = datetime.fromtimestamp(index * width_ms / 1000, UTC)
        score_version(
            rows,
            measured,
            use_case,
            registered_rmse=0.02,
            line_id="line-1",
            model_id=model_id,
            version=version,
            window_start=start,
            window_end=start + timedelta(milliseconds=width_ms),
        )
    return int(window.nunique())


class NoEvents:
    def put_events(self, **_) -> dict:
        return {"FailedEntryCount": 0}


def round_line_day(data, use_case) -> float:
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        land(BUCKET, data)
        now = DAY + timedelta(days=1, hours=2)
        started = time.perf_counter()
        run_round(
            BUCKET,
            use_case,
            now,
            landing_delay_s=3600,
            eventbridge=NoEvents(),
            registered_rmse=lambda *_: 0.02,
        )
        return time.perf_counter() - started


def run() -> dict[str, tuple[float, str]]:
    use_case = load_use_case("extrusion")
    data = line_day(DAY, use_case, stride_s=30)
    joins, windows = [], 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        windows = join_line_day(data, use_case)
        joins.append(time.perf_counter() - started)
    rounds = [round_line_day(data, use_case) for _ in range(3)]
    target_rows = int((data.measurements["metric"] == use_case.target_metric).sum())
    figures = {
        "monitoring.join_s_per_line_day": (statistics.median(joins), "s"),
        "monitoring.round_s_per_line_day": (statistics.median(rounds), "s"),
        "monitoring.predictions_per_line_day": (float(len(data.predictions)), "predictions"),
        "monitoring.measurements_per_line_day": (float(target_rows), "samples"),
        "monitoring.windows_per_line_day": (float(windows), "windows"),
    }
    # W6's alert figures arrive as {"value", "unit"} documents
    figures |= {name: (entry["value"], entry["unit"]) for name, entry in alerts_quality().items()}
    return figures
