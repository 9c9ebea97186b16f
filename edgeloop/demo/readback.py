"""Stage 4 of the demo: read back what landed, through the same code and queries an operator uses."""

from __future__ import annotations

import time
from pathlib import Path

from edgeloop.demo.outcome import DemoOutcome, LineModel
from edgeloop.schemas import DeviceRecord, ModelMetrics, names


def read_fleet() -> list[DeviceRecord]:
    from edgeloop.cloud.fleet.devices import DeviceTable
    from edgeloop.cloud.fleet.queries import fleet_status

    return fleet_status(DeviceTable(names.LOCAL_DEVICE_TABLE))


def read_back_registration(line_id: str, arn: str, metrics: ModelMetrics, n_examples: int) -> LineModel:
    """What the model registry holds after approval (the orchestrator relies on this metadata)."""
    from edgeloop.cloud.model_registry import describe_model_package

    package = describe_model_package(arn)
    return LineModel(
        line_id=line_id,
        model_package_arn=arn,
        metrics=metrics,
        n_examples=n_examples,
        approval_status=package.get("ModelApprovalStatus", ""),
        registry_metadata=package.get("CustomerMetadataProperties", {}),
    )


def count_samples(outcome: DemoOutcome, line_ids: list[str]) -> None:
    """Curated samples, unique by (thing, sequence number): what the gateways sent must land exactly once."""
    from edgeloop.cloud import s3
    from edgeloop.cloud.datalake.curated import read_curated

    outcome.samples_landed = sum(
        len(read_curated(names.LOCAL_DATA_BUCKET, line_id).drop_duplicates(["thing_name", "seq"]))
        for line_id in line_ids
    )
    quarantined = s3.list_keys(names.LOCAL_DATA_BUCKET, f"{names.QUARANTINE_PREFIX}/")
    outcome.samples_quarantined = sum(1 for _ in quarantined)


def count_rollups_and_slices(outcome: DemoOutcome, line_ids: list[str]) -> None:
    from edgeloop.cloud.datalake.context_store import get_slices
    from edgeloop.cloud.datalake.curated import read_curated, read_late
    from edgeloop.cloud.datalake.rollups import LEVELS, MINUTE_MS
    from edgeloop.functions.rollups.logic import read_rollups

    rows = dict.fromkeys(LEVELS, 0)
    for line_id in line_ids:
        for resolution in LEVELS:
            rollups = read_rollups(names.LOCAL_DATA_BUCKET, line_id, resolution)
            rows[resolution] += len(rollups)
            if resolution == "1h":
                outcome.rollup_samples_1h[line_id] = int(rollups["count"].sum())
        outcome.curated_samples[line_id] = len(read_curated(names.LOCAL_DATA_BUCKET, line_id))
        outcome.late_samples[line_id] = len(read_late(names.LOCAL_DATA_BUCKET, line_id))
        slices = get_slices(names.LOCAL_DATA_BUCKET, line_id)
        spans = slices.column("slice_end_ms").to_numpy() - slices.column("slice_start_ms").to_numpy()
        outcome.context_slices[line_id] = int(spans.sum() // MINUTE_MS)
    outcome.rollup_rows = rows


def read_monitoring(outcome: DemoOutcome, line_ids: list[str]) -> None:
    """The landed predictions and alerts and live accuracy's windows, as `edgeloop monitor` reads them."""
    from datetime import date

    from edgeloop.cloud import s3
    from edgeloop.cloud.datalake.landed_jsonl import landed_lines
    from edgeloop.functions.live_accuracy.store import read_line_monitoring
    from edgeloop.monitor_view import alert_episodes, landed_alerts
    from edgeloop.schemas.prediction import PredictionMessage

    for line_id in line_ids:
        outcome.alerts[line_id] = alert_episodes(landed_alerts(names.LOCAL_DATA_BUCKET, line_id, date.min))
        _, reports = read_line_monitoring(names.LOCAL_DATA_BUCKET, line_id, last=1000)
        outcome.live_accuracy[line_id] = [w for report in reports for w in report.models if w.joined]
        made_at = [
            PredictionMessage.model_validate_json(text).made_at
            for key in s3.list_keys(names.LOCAL_DATA_BUCKET, f"{names.PREDICTIONS_PREFIX}/line={line_id}/")
            for text in landed_lines(key, s3.get_bytes(names.LOCAL_DATA_BUCKET, key))
        ]
        outcome.predictions_landed[line_id] = len(made_at)
        if made_at:
            outcome.last_prediction_at[line_id] = max(made_at)


def query_die_temperature(outcome: DemoOutcome, use_case: str, line_ids: list[str], mirror: Path) -> None:
    """The named query `rollups_by_role` on DuckDB over a mirror of the bucket: the same SQL
    Athena runs in AWS (edgeloop.query)."""
    from edgeloop.query import DuckDbEngine

    end_ms = int(time.time() * 1000) + 400 * 86_400_000  # every simulated hour, wherever it lies
    engine, _ = DuckDbEngine.from_bucket(names.LOCAL_DATA_BUCKET, mirror)
    with engine:
        rows = engine.run(
            "rollups_by_role",
            use_case=use_case,
            role="die_temperature",
            lines=line_ids,
            resolution="1h",
            start_ms=0,
            end_ms=end_ms,
        )
    for line_id, group in rows.groupby("line"):
        outcome.role_query_rows[line_id] = len(group)
        outcome.role_query_mean[line_id] = float(group["sum"].sum() / group["count"].sum())
