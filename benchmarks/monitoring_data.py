"""One synthetic line-day for live accuracy: 1 Hz measurements of the target (and of a second metric the
join must not read) in curated/, and a gateway's PredictionMessages every `stride_s` in predictions/, as
compaction and the prediction landing leave them. The predictions are the true label plus noise and an
optional offset (a model that degrades), classified at the model's margin like the gateway does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.curated import CURATED_SCHEMA, curated_parquet_bytes, partition_prefix
from edgeloop.model_runtime.decision import classify_levels
from edgeloop.schemas import names
from edgeloop.schemas.prediction import ModelIdentity, PredictionMessage
from edgeloop.schemas.use_case import UseCaseConfig

LOWER, UPPER = 2.9, 3.2
MARGIN = 0.1
MODEL = ModelIdentity(model_id="extrusion-line-1", version="1.0.0", precision="fp32", decision_margin=MARGIN)
THING = "gw-line-1"


@dataclass(frozen=True)
class LineDay:
    measurements: pd.DataFrame  # curated rows (CURATED_SCHEMA), both metrics
    predictions: list[PredictionMessage]


def signal(time_s: np.ndarray) -> np.ndarray:
    """A level that wanders across both spec limits a few times a day."""
    return 3.05 + 0.2 * np.sin(2 * np.pi * time_s / 7200) + 0.03 * np.sin(2 * np.pi * time_s / 600)


def line_day(
    day: datetime,
    use_case: UseCaseConfig,
    *,
    line_id: str = "line-1",
    stride_s: int = 30,
    offset: float = 0.0,
    seed: int = 0,
    model: ModelIdentity = MODEL,
    hours: float = 24.0,
) -> LineDay:
    rng = np.random.default_rng(seed)
    start_ms = int(day.timestamp() * 1000)
    n = int(hours * 3600 / use_case.sample_period_s)
    time_ms = start_ms + (np.arange(n) * use_case.sample_period_s * 1000).astype(np.int64)
    target = signal((time_ms - start_ms) / 1000) + rng.normal(0, 0.005, n)
    rows = pd.DataFrame(
        {
            "thing_name": THING,
            "line_id": line_id,
            "metric": np.repeat([use_case.target_metric, "line_speed"], n),
            "time_ms": np.tile(time_ms, 2),
            "value": np.concatenate([target, rng.normal(10, 1, n)]),
            "seq": np.tile(time_ms, 2) * 2 + np.repeat([0, 1], n),  # unique across line-days of a thing
            "ingest_time_ms": np.tile(time_ms, 2) + 2000,
        }
    )
    made = np.arange(0, hours * 3600 - use_case.horizon_s - use_case.label_window_s, stride_s)
    made_at = [day + timedelta(seconds=float(s)) for s in made]
    truth = signal(made + use_case.horizon_s + use_case.label_window_s / 2)
    levels = truth + rng.normal(0, 0.01, len(made)) + offset
    classes = classify_levels(levels, LOWER, UPPER, model.decision_margin)
    spec = {"target_metric": use_case.target_metric, "lower": LOWER, "upper": UPPER}
    predictions = [
        PredictionMessage(
            thing_name=THING,
            line_id=line_id,
            model=model,
            target_metric=use_case.target_metric,
            made_at=at,
            horizon_s=use_case.horizon_s,
            label_window_s=use_case.label_window_s,
            predicted_level=float(level),
            violation_class=cls,
            spec=spec,
            run_id="run-1",
            sent_at=at + timedelta(seconds=1),
            lead_time_s=use_case.horizon_s - 1.0,
        )
        for at, level, cls in zip(made_at, levels, classes, strict=True)
    ]
    return LineDay(measurements=rows, predictions=predictions)


def land(bucket: str, data: LineDay, *, messages_per_object: int = 10) -> None:
    """Write the line-day as compaction (one curated part per event date) and the landing (JSON lines
    objects per made_date) would."""
    rows = data.measurements
    days = pd.to_datetime(rows["time_ms"], unit="ms").dt.strftime("%Y-%m-%d")
    for (line_id, day), part in rows.groupby([rows["line_id"], days]):
        table = pa.Table.from_pandas(part[CURATED_SCHEMA.names], schema=CURATED_SCHEMA, preserve_index=False)
        first = int(part["time_ms"].min())  # one part per landing: a second line-day adds a part
        s3.put_bytes(bucket, f"{partition_prefix(line_id, day)}part-{first}.parquet", curated_parquet_bytes(table))
    by_key: dict[str, list[PredictionMessage]] = {}
    for message in data.predictions:
        prefix = f"{names.PREDICTIONS_PREFIX}/line={message.line_id}/made_date={message.made_at:%Y-%m-%d}/"
        by_key.setdefault(prefix, []).append(message)
    for prefix, messages in by_key.items():
        for start in range(0, len(messages), messages_per_object):
            chunk = messages[start : start + messages_per_object]
            body = "".join(m.model_dump_json() + "\n" for m in chunk).encode()
            name = f"{chunk[0].made_at:%H%M%S}-{start:06d}.jsonl"
            s3.put_bytes(bucket, f"{prefix}{name}", body, content_type="application/json")
