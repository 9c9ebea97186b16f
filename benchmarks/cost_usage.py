"""A metered fleet run (cost_fleet.FleetRun) -> the billed quantities of the cost model.

Flow quantities are what the run counted; standing ones are steady state per month:
- S3 storage: each prefix's bytes per simulated day, kept for its lifecycle expiration from the
  template, or RETENTION_DAYS where there is none (curated/, rollups/: the goal's year); a prefix
  rewritten in place (one object per line: packs/, label_review/) counts as stored at the end;
  plus the server access log records the data bucket's requests leave (an estimate per record).
- Compaction's listings (functions/compaction/checkpoint.py), one LIST per 1,000 keys: a round
  lists raw/ and the markers only after its checkpoint, the hours still open (OPEN_HOURS of
  objects at most), and the first round of each UTC day sweeps all of raw/ (its lifecycle's days)
  and all markers (theirs). A run starting from an empty bucket sees one page per listing; the
  growth is the pages beyond that once the bucket holds its lifecycle's days.
- The rollups read the days of the current month on each round: after a year about half a month
  of GETs where a run from an empty bucket sees one. The metric packer does not grow
  (cloud/packing/incremental.py): a round lists the line's curated parts (one page for ~1,000
  days) and reads only the days of runs whose inputs changed, what the run counted.
- Live accuracy re-reads the predictions/ and curated/ objects of its window's day on every round
  (LIVE_ACCURACY_DAY_HOURS on average, an estimate); a run from an empty bucket reads only its own.
- CloudWatch Logs storage for the log groups' retention; custom metrics: the distinct EMF metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from edgeloop.functions.compaction.checkpoint import HOUR, HOUR_CLOSES_AFTER
from edgeloop.schemas import names

from . import cost_model
from .cost_fleet import FleetRun
from .cost_meter import LOG_EVENT_OVERHEAD_BYTES, S3_FREE, S3_PUT_CLASS
from .cost_template import DeployedSettings

# Lambda's event source mapping long-polls the queue even when it is empty: ~5 pollers, one 20 s
# long poll each (an estimate from its documented behaviour; a few cents a month per queue).
SQS_IDLE_POLLS_PER_MONTH = 5 * 3 * cost_model.MONTH_S / 60
RETENTION_DAYS = 365  # curated data (and the compaction markers) after one year of operation
ACCESS_LOG_RECORD_BYTES = 400  # an S3 server access log record is ~300-500 bytes (estimate)
LIST_PAGE_KEYS = 1000
REWRITTEN_PREFIXES = frozenset({names.PACKS_PREFIX, names.LABEL_REVIEW_PREFIX})
COMPACTION_STATE_PREFIX = "_state"  # top level of names.COMPACTION_MARKERS_PREFIX and the checkpoint
# A regular round lists the hours after the last closed one: the current hour, and those that close
# HOUR_CLOSES_AFTER after their end (between 2 and 3 hours of objects; the upper end).
OPEN_HOURS = (HOUR_CLOSES_AFTER + HOUR) / HOUR
LISTINGS_PER_ROUND = 2  # raw/ and the markers: their first pages are in what the run counted
# Registry reads are billed (IoT Core pricing, "Registry"); SageMaker and IoT control-plane reads
# the functions make (ListModelPackages, ...) are not.
IOT_REGISTRY_OPERATIONS = frozenset({"DescribeThing", "ListThingGroupsForThing", "ListThings", "UpdateThing"})
FREE_SERVICES = frozenset({"sagemaker", "sts"})
ARM64 = "arm64"
BATCHED_FUNCTIONS = frozenset(route.function for route in names.IOT_ROUTES if route.batched)
(PREDICTIONS_ROUTE,) = [route for route in names.IOT_ROUTES if route.topic_filter.endswith("/predictions")]


DAYS_PER_MONTH = 365.25 / 12
LIVE_ACCURACY = "live_accuracy"
LIVE_ACCURACY_GROWTH = "live_accuracy_day_reads"
LIVE_ACCURACY_READ_PREFIXES = (names.PREDICTIONS_PREFIX, names.CURATED_PREFIX)
# A round reads every predictions/ and curated/ object of its window's UTC day landed so far (the reader is
# per round): on average about half a day, 13.5 h (the rounds in the ~1.2 h after midnight score the last
# window of the day before and read all 24 h of it); a run from an empty bucket reads only its own hours.
LIVE_ACCURACY_DAY_HOURS = 13.5


@dataclass(frozen=True)
class RunFigures:
    usage: cost_model.RunUsage
    path: cost_model.PathCounts  # per gateway-month
    itemized: dict[str, float]  # "<price key> <function> <what>" -> quantity per gateway-month
    growth: dict[str, tuple[str, float]]  # name -> (price key, quantity per gateway-month) after a year
    predictions: dict[str, float]  # price key -> quantity per month for the run's fleet (in `usage` too)
    prediction_messages: float  # per month for the run's fleet
    live_accuracy: dict[str, float] = field(default_factory=dict)  # price key -> per month, the run's fleet


def figures(run: FleetRun, settings: DeployedSettings) -> RunFigures:
    flow, standing = Counter(), Counter()
    _lambda(run, settings, flow)
    _iot(run, flow)
    _requests(run, flow)
    days = run.spec.simulated_s / 86_400
    _storage(run, settings, days, standing)
    growth = growth_after_a_year(run, settings, days)
    for price_key, quantity in growth.values():
        standing[price_key] += quantity * run.spec.gateways
    log_bytes_per_day = flow["logs.ingested_gb"] / days
    standing["logs.stored_gb_month"] += log_bytes_per_day * settings.log_retention_days
    standing["cloudwatch.custom_metric_month"] += len(run.log.metrics)
    if run.spec.ingest_batching:  # every batched route's queue is polled (telemetry, predictions)
        standing["sqs.request_64kb"] += SQS_IDLE_POLLS_PER_MONTH * len(BATCHED_FUNCTIONS)
    usage = cost_model.RunUsage(run.spec.gateways, run.spec.simulated_s, dict(flow), dict(standing))
    predictions = prediction_quantities(run, settings, days)
    messages = run.prediction_iot.messages * cost_model.MONTH_S / run.spec.simulated_s
    live_accuracy = live_accuracy_quantities(run, settings, days)
    return RunFigures(
        usage, path_counts(run, settings, days), itemized(run), growth, predictions, messages, live_accuracy
    )


def prediction_quantities(run: FleetRun, settings: DeployedSettings, days: float) -> dict[str, float]:
    """Per month for the run's fleet, what its model runners' prediction messages are billed: their
    IoT Core units, the predictions rule (and queue), the landing function's invocations, requests,
    logs (ingested and kept) and the predictions/ objects kept for their retention. The landing
    function also takes alerts; the bench's constant model raises none."""
    function = PREDICTIONS_ROUTE.function
    scale = cost_model.MONTH_S / run.spec.simulated_s
    quantities = function_quantities(run, settings, days, function, names.PREDICTIONS_PREFIX)
    quantities["iot.message_5kb"] += run.prediction_iot.units * scale
    for price_key in ("iot.rule_triggered", "iot.action_executed"):
        quantities[price_key] += run.rule_units_by.get(function, 0) * scale
    quantities["sqs.request_64kb"] += run.sqs_requests_by.get(function, 0) * scale
    return dict(quantities)


def live_accuracy_quantities(run: FleetRun, settings: DeployedSettings, days: float) -> dict[str, float]:
    """Per month for the run's fleet, what the live accuracy rounds are billed: the function's
    invocations, requests, logs (its window records included), the monitoring/ objects it keeps, the
    year's re-reads of the day (growth_after_a_year) and its custom metrics (service live_accuracy:
    per account unless use_case.monitoring.line_metrics)."""
    quantities = function_quantities(run, settings, days, LIVE_ACCURACY, names.MONITORING_PREFIX)
    for name, (price_key, quantity) in growth_after_a_year(run, settings, days).items():
        if name == LIVE_ACCURACY_GROWTH:
            quantities[price_key] += quantity * run.spec.gateways
    quantities["cloudwatch.custom_metric_month"] += sum(
        1 for _, dimensions, _ in run.log.metrics if ("service", LIVE_ACCURACY) in dimensions
    )
    return dict(quantities)


def function_quantities(run: FleetRun, settings: DeployedSettings, days: float, function: str, prefix: str) -> Counter:
    """Per month for the run's fleet: `function`'s invocations, billed requests, logs (ingested and
    kept), X-Ray traces, the access log records of its S3 requests and the `prefix`/ objects kept."""
    scale = cost_model.MONTH_S / run.spec.simulated_s
    quantities: Counter = Counter()
    usage = run.lambdas.functions.get(function)
    if usage is not None:
        ingested_gb = _billed_log_bytes(usage) / cost_model.GIB
        quantities["lambda.request"] += usage.requests * scale
        quantities["lambda.gb_second_arm64"] += usage.gb_seconds * scale
        quantities["logs.ingested_gb"] += ingested_gb * scale
        quantities["logs.stored_gb_month"] += ingested_gb / days * settings.log_retention_days
        quantities["xray.trace_recorded"] += usage.requests * cost_model.XRAY_SAMPLED_FRACTION * scale
    s3_calls = 0
    for (caller, service, operation, _), calls in run.meter.usage.requests.items():
        if caller == function and service == "s3" and operation not in S3_FREE:
            s3_calls += calls
            key = "s3.put_copy_post_list" if operation in S3_PUT_CLASS else "s3.get_and_other"
            quantities[key] += calls * scale
        elif caller == function and service == "iot" and operation in IOT_REGISTRY_OPERATIONS:
            quantities["iot.registry_operation"] += calls * scale
    quantities["dynamodb.read_request_unit"] += run.meter.usage.read_units.get(function, 0) * scale
    quantities["dynamodb.write_request_unit"] += run.meter.usage.write_units.get(function, 0) * scale
    kept_per_day = run.stored_bytes.get(prefix, 0) / days
    retention = settings.expiry_days.get(prefix, RETENTION_DAYS)
    access_logs_per_day = s3_calls * ACCESS_LOG_RECORD_BYTES / days
    quantities["s3.storage_gb_month"] += cost_model.stored_gb_months(kept_per_day, retention)
    quantities["s3.storage_gb_month"] += cost_model.stored_gb_months(
        access_logs_per_day, settings.access_log_expiry_days
    )
    return quantities


def growth_after_a_year(run: FleetRun, settings: DeployedSettings, days: float) -> dict[str, tuple[str, float]]:
    """Requests per gateway-month that a year of stored data adds to what the run counted."""
    scale = cost_model.MONTH_S / run.spec.simulated_s / run.spec.gateways
    rollup_reads = run.meter.usage.requests[("rollups", "s3", "GetObject", names.CURATED_PREFIX)] * scale
    return {
        "compaction_listing": (
            "s3.put_copy_post_list",
            compaction_listing_per_month(run, settings, days) / run.spec.gateways,
        ),
        "rollup_reads": ("s3.get_and_other", rollup_reads * (DAYS_PER_MONTH / 2 - 1)),
        LIVE_ACCURACY_GROWTH: ("s3.get_and_other", live_accuracy_day_reads(run) * scale),
    }


def live_accuracy_day_reads(run: FleetRun) -> float:
    """GETs beyond what the run counted that a round reading its window's whole day adds (per run):
    the run's rounds read (rounds + 1) / 2 intervals of objects on average, the stack's LIVE_ACCURACY_DAY_HOURS."""
    reads = sum(run.meter.usage.requests[(LIVE_ACCURACY, "s3", "GetObject", p)] for p in LIVE_ACCURACY_READ_PREFIXES)
    if not run.live_accuracy_rounds or run.spec.live_accuracy_interval_s is None:
        return 0.0
    run_hours = (run.live_accuracy_rounds + 1) / 2 * run.spec.live_accuracy_interval_s / 3600
    return reads * max(0.0, LIVE_ACCURACY_DAY_HOURS / run_hours - 1)


def itemized(run: FleetRun) -> dict[str, float]:
    """Requests and Lambda time by function, per gateway-month (priced later), largest first."""
    scale = cost_model.MONTH_S / run.spec.simulated_s / run.spec.gateways
    items: Counter = Counter()
    for (function, service, operation, prefix), calls in run.meter.usage.requests.items():
        if service == "s3" and operation not in S3_FREE:
            key = "s3.put_copy_post_list" if operation in S3_PUT_CLASS else "s3.get_and_other"
            items[f"{key} {function} {operation} {prefix}"] += calls * scale
    for function, usage in run.lambdas.functions.items():
        items[f"lambda.request {function}"] += usage.requests * scale
        items[f"lambda.gb_second_arm64 {function}"] += usage.gb_seconds * scale
        items[f"logs.ingested_gb {function}"] += _billed_log_bytes(usage) * scale / cost_model.GIB
    for function, units in run.meter.usage.read_units.items():
        items[f"dynamodb.read_request_unit {function}"] += units * scale
    for function, units in run.meter.usage.write_units.items():
        items[f"dynamodb.write_request_unit {function}"] += units * scale
    return dict(items)


def _lambda(run: FleetRun, settings: DeployedSettings, flow: Counter) -> None:
    for function, usage in run.lambdas.functions.items():
        if settings.architectures[function] != ARM64:
            raise ValueError(f"{settings.path}: {function} runs on {settings.architectures[function]}: price it")
        flow["lambda.request"] += usage.requests
        flow["lambda.gb_second_arm64"] += usage.gb_seconds
        flow["logs.ingested_gb"] += _billed_log_bytes(usage) / cost_model.GIB
        flow["xray.trace_recorded"] += usage.requests * cost_model.XRAY_SAMPLED_FRACTION


def _billed_log_bytes(usage) -> float:
    return usage.log_bytes + LOG_EVENT_OVERHEAD_BYTES * usage.log_lines


def _iot(run: FleetRun, flow: Counter) -> None:
    flow["sqs.request_64kb"] += run.sqs_requests
    flow["iot.message_5kb"] += run.iot.units
    flow["iot.connection_minute"] += run.spec.gateways * run.spec.simulated_s / 60
    flow["iot.rule_triggered"] += run.rule_units
    flow["iot.action_executed"] += run.rule_units


def _requests(run: FleetRun, flow: Counter) -> None:
    usage = run.meter.usage
    for (_, service, operation, _), calls in usage.requests.items():
        if service == "s3" and operation not in S3_FREE:
            flow["s3.put_copy_post_list" if operation in S3_PUT_CLASS else "s3.get_and_other"] += calls
        elif service == "iot" and operation in IOT_REGISTRY_OPERATIONS:
            flow["iot.registry_operation"] += calls
        elif service not in ("s3", "iot", "dynamodb", *FREE_SERVICES):
            raise ValueError(f"{service}.{operation} was called {calls} times and has no price: add one")
    flow["dynamodb.read_request_unit"] += sum(usage.read_units.values())
    flow["dynamodb.write_request_unit"] += sum(usage.write_units.values())


def _storage(run: FleetRun, settings: DeployedSettings, days: float, standing: Counter) -> None:
    for prefix, stored in run.stored_bytes.items():
        if prefix in REWRITTEN_PREFIXES:
            standing["s3.storage_gb_month"] += stored / cost_model.GIB
            continue
        retention = settings.expiry_days.get(prefix, RETENTION_DAYS)
        standing["s3.storage_gb_month"] += cost_model.stored_gb_months(stored / days, retention)
    data_requests = sum(calls for (_, service, _, _), calls in run.meter.usage.requests.items() if service == "s3")
    log_bytes_per_day = data_requests * ACCESS_LOG_RECORD_BYTES / days
    standing["s3.storage_gb_month"] += cost_model.stored_gb_months(log_bytes_per_day, settings.access_log_expiry_days)


def compaction_listing_per_month(run: FleetRun, settings: DeployedSettings, days: float) -> float:
    """LIST requests per month beyond each listing's first page, once raw/ and the markers hold their
    lifecycle's days: the regular rounds list OPEN_HOURS of objects, the daily sweep all of them."""
    raw_per_day = run.stored_objects.get(names.RAW_PREFIX, 0) / days
    markers = run.stored_objects.get(COMPACTION_STATE_PREFIX, 0) - (1 if run.compaction_rounds else 0)
    markers_per_day = max(0, markers) / days  # less the checkpoint, the one other object under _state
    open_keys = (raw_per_day + markers_per_day) * OPEN_HOURS / 24
    stored_keys = raw_per_day * settings.expiry_days[names.RAW_PREFIX] + markers_per_day * settings.expiry_days.get(
        names.COMPACTION_MARKERS_PREFIX, RETENTION_DAYS
    )
    rounds = cost_model.MONTH_S / settings.compaction_interval_s
    sweeps = min(rounds, DAYS_PER_MONTH)
    return (rounds - sweeps) * _pages_beyond_the_first(open_keys) + sweeps * _pages_beyond_the_first(stored_keys)


def _pages_beyond_the_first(keys: float) -> float:
    return max(0.0, keys / LIST_PAGE_KEYS - LISTINGS_PER_ROUND)


def path_counts(run: FleetRun, settings: DeployedSettings, days: float) -> cost_model.PathCounts:
    """The per-message ingest path's counts per gateway-month (what batching would change)."""
    scale = cost_model.MONTH_S / run.spec.simulated_s / run.spec.gateways
    ingest = run.lambdas.functions["ingest"]
    requests = run.meter.usage.requests
    raw_puts = requests[("ingest", "s3", "PutObject", names.RAW_PREFIX)]
    marker_puts = requests[("compaction", "s3", "PutObject", COMPACTION_STATE_PREFIX)]
    return cost_model.PathCounts(
        messages=ingest.requests * scale,
        message_bytes=run.iot.payload_bytes / max(run.iot.messages, 1),
        ingest_gb_s=ingest.gb_seconds * scale,
        ingest_log_bytes=_billed_log_bytes(ingest) * scale,
        raw_puts=raw_puts * scale,
        raw_reads=requests[("compaction", "s3", "GetObject", names.RAW_PREFIX)] * scale,
        marker_puts=marker_puts * scale,
        listings=compaction_listing_per_month(run, settings, days) / run.spec.gateways,
    )
