"""A metered fleet run built by hand, for the usage model's tests (benchmarks/cost_usage.py)."""

from __future__ import annotations

from collections import Counter

from benchmarks import cost_meter, cost_model
from benchmarks.cost_fleet import FleetRun, RunSpec
from benchmarks.cost_meter import AwsCallMeter, CountingLog, IotUsage, LambdaMeter
from benchmarks.cost_template import DeployedSettings
from edgeloop.greengrass_components.gateway.flush_policy import FlushPolicy
from edgeloop.schemas import names

RAW_EXPIRY_DAYS = 30
MARKER_EXPIRY_DAYS = 32


def settings(compaction_interval_s: int = 15 * 60) -> DeployedSettings:
    return DeployedSettings(
        memory_mb={"ingest": 512, "compaction": 2048, "live_accuracy": 1024},
        architectures={"ingest": "arm64", "compaction": "arm64", "live_accuracy": "arm64"},
        logging_env={},
        queue_batching={},
        expiry_days={names.RAW_PREFIX: RAW_EXPIRY_DAYS, names.COMPACTION_MARKERS_PREFIX: MARKER_EXPIRY_DAYS},
        access_log_expiry_days=365,
        log_retention_days=90,
        compaction_interval_s=compaction_interval_s,
        path=cost_model.DEFAULT_PRICES,
    )


def fleet_run(
    requests: Counter,
    simulated_s: int = 86_400,
    *,
    raw_objects: int = 10_000,
    compaction_interval_s: int = 15 * 60,
) -> FleetRun:
    """2 gateways for `simulated_s`; raw/ holds `raw_objects`, _state one marker each and the checkpoint."""
    aws = AwsCallMeter()
    aws.usage.requests = requests
    log = CountingLog()
    lambdas = LambdaMeter(settings().memory_mb, log)
    lambdas.functions["ingest"] = cost_meter.FunctionUsage(requests=10, gb_seconds=1.0, log_bytes=100, log_lines=2)
    return FleetRun(
        spec=RunSpec(
            gateways=2, simulated_s=simulated_s, flush=FlushPolicy(), compaction_interval_s=compaction_interval_s
        ),
        iot=IotUsage(messages=10, units=12, payload_bytes=1000),
        rule_units=10,
        sqs_requests=0,
        meter=aws,
        lambdas=lambdas,
        log=log,
        stored_bytes={"raw": 2**30, "curated": 2**30, "packs": 2**30},
        stored_objects={"raw": raw_objects, "_state": raw_objects + 1},
        compaction_rounds=simulated_s // compaction_interval_s,
        wall_s=1.0,
    )
