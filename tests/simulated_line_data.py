"""A simulated extrusion line's data as the data path leaves it in S3: curated partitions (one per
event date) and context intervals. The dataset step's tests and the local pipeline run read it back.

A module beside tests/conftest.py: pytest puts this folder on sys.path, so any test imports it.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.context import put_context_intervals
from edgeloop.cloud.datalake.curated import curated_parquet_bytes, partition_prefix
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import METRICS


def put_simulated_line(bucket: str, line_id: str, *, start: datetime, hours: int, seed: int) -> None:
    """Curated partitions (one per event date) and context intervals, as compaction and context intake leave them."""
    simulator = ExtrusionLineSimulator(line_id, seed=seed, start_ms=int(start.timestamp() * 1000))
    metric_index, time_ms, values = simulator.advance_arrays(hours * 3600)
    rows = pd.DataFrame(
        {
            "thing_name": f"gw-{line_id}",
            "line_id": line_id,
            "metric": np.asarray(METRICS, dtype=object)[metric_index],
            "time_ms": time_ms,
            "value": values,
            "seq": np.arange(len(time_ms), dtype=np.int64),
            "ingest_time_ms": time_ms + 2_000,
        }
    )
    event_date = pd.to_datetime(rows["time_ms"], unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    for day, part in rows.groupby(event_date):
        body = curated_parquet_bytes(pa.Table.from_pandas(part, preserve_index=False))
        s3.put_bytes(bucket, f"{partition_prefix(line_id, day)}part-0.parquet", body)
    put_context_intervals(bucket, line_id, simulator.context_intervals())
