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


def live_window_booster(simulator: ExtrusionLineSimulator):
    """A small XGBoost regressor of cold OD on the live-window features of 30 minutes of `simulator`
    (plausible next to the live target: the model runner's health check accepts it)."""
    import xgboost as xgb

    from edgeloop.greengrass_components.model_runner.runner import LiveScorer
    from edgeloop.schemas import load_use_case

    use_case = load_use_case("extrusion")
    live, rows = LiveScorer(use_case), []  # keeps only the recent samples: take each window as it goes by
    for _ in range(1800 // use_case.example_stride_s):
        live.add(simulator.advance(use_case.example_stride_s))
        window = live.window(simulator.now_ms)
        if window.complete:
            rows.append(window.features)
    X = np.stack(rows)
    y = X[:, use_case.feature_names.index("cold_od_average__last")]
    params = {"objective": "reg:squarederror", "max_depth": 2, "eta": 0.5, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=4)
