"""Cost at fleet scale: what AWS would bill per gateway-month, from counts measured on the local stack.

Runs (cost_fleet.py), each of extrusion gateways (10 metrics at 1 Hz) on a simulated clock:
- default: the default flush policy (a batch when full or after 60 s) and batched ingest (IoT rule
  -> SQS -> ingest, batch size and window from the template's event source mapping), 2, 4 and 8
  gateways for SIMULATED_S simulated seconds each;
- direct: the default flush policy with the per-message path (the rule invokes ingest once per
  message), DIRECT_GATEWAYS for SIMULATED_S: the flush policy's share, and the counts the
  counter model estimates other paths from;
- before: everything pending at once (one message a second) on the per-message path, as before
  issue 18, BEFORE_GATEWAYS for BEFORE_SIMULATED_S.
Compaction runs at the template's schedule (edgeloop:compactionIntervalMinutes); each run lasts a whole
number of its intervals (at least one), so every run pays its rounds as the stack would.
EDGELOOP_BENCH_COST_COMPACTION_INTERVAL_MINUTES=<n> synthesizes the stack with that setting instead.
Every billed call is counted where it happens (cost_meter.py), priced from the dated table
(cost_prices_us_east_1.json; EDGELOOP_COST_PRICES=<table> for another region), with memory, logging,
batching, lifecycle and log retention from the synthesized template (cost_template.py).

The fleet line: least squares of the monthly bill over the default runs; its slope is the cost per
gateway-month (by service: each service's own line, the slopes add up), its intercept what the
account pays whatever the fleet (custom metrics, the wave controller, and with batched ingest one
invocation and one raw object per batching window while a window's messages fit one batch, i.e. up
to ~1,000 gateways at one message a minute). A single-size run's per-gateway figure is its bill
less its custom metrics, divided by its gateways.

Every gateway also runs the ModelRunner component's class on its samples (cost_predictions.py): a
prediction every pack stride, batched to IoT Core at the default predictionFlushMaxLatencySeconds,
landed by the predictions function through its queue. cost.predictions_usd_per_gateway_month is
that traffic's share (its own fleet line over the default runs), included in the total and in the
per-service figures. cost.prediction_*_at_<n>s compare flush latencies on the same runner without
a cloud (one gateway, cost_predictions.COMPARISON_S): messages and 5 KB units per month,
and what they cost on the wire (IoT Core units, rule and action, the queue's requests: one
SendMessage a message, a receive and a delete per 10), and with the landing's S3 PUTs at the
default run's measured PUTs per message (one per line per landing batch: about one a message).

cost.estimate_* are the counter model's estimates from the direct run's counts
(cost_model.sqs_batched_quantities / firehose_quantities), not measurements; the measured batched
path beside them shows the model's error. cost.compaction_rounds_usd_per_gateway_month is what the
scheduled rounds cost per line at the interval, whatever the messages.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

from edgeloop.greengrass_components.gateway.flush_policy import FlushPolicy
from edgeloop.schemas import names

from . import cost_model
from .cost_fleet import SQS_RECEIVE_MAX, RunSpec, run_fleet
from .cost_predictions import COMPARISON_S, FlushFigures, flush_comparison
from .cost_template import DeployedSettings, deployed_settings
from .cost_usage import COMPACTION_STATE_PREFIX, RETENTION_DAYS, RunFigures, figures

SIZES = (2, 4, 8)
SIMULATED_S = int(os.environ.get("EDGELOOP_BENCH_COST_SIMULATED_S", 1800))
DIRECT_GATEWAYS = 2
BEFORE_GATEWAYS = 2
BEFORE_SIMULATED_S = int(os.environ.get("EDGELOOP_BENCH_COST_BEFORE_SIMULATED_S", 900))
FLEETS = (10, 100, 1_000, 10_000)
ESTIMATE_FLEET = 1_000
LAMBDA_PAYLOAD_BYTES = 6 * 2**20  # a batch's messages must fit one invocation's payload
PER_ROUND_FUNCTIONS = frozenset({"compaction", "rollups", "metric_packer"})
COMPACTION_INTERVAL_ENV = "EDGELOOP_BENCH_COST_COMPACTION_INTERVAL_MINUTES"
UNIT = "USD/gateway-month"


def stack_context() -> dict[str, str]:
    """CDK context the bench synthesizes with: the compaction interval of COMPACTION_INTERVAL_ENV, if set."""
    minutes = os.environ.get(COMPACTION_INTERVAL_ENV, "")
    if not minutes:
        return {}
    from edgeloop.cdk.constructs.config import COMPACTION_INTERVAL_KEY  # noqa: PLC0415 (jsii starts only when needed)

    return {COMPACTION_INTERVAL_KEY: minutes}


def whole_rounds(simulated_s: int, interval_s: int) -> int:
    """`simulated_s` rounded up to a whole number of compaction intervals, at least one."""
    return max(1, math.ceil(simulated_s / interval_s)) * interval_s


def run() -> dict[str, tuple[float, str]]:
    settings = deployed_settings(context=stack_context() or None)
    interval = settings.compaction_interval_s
    prices = cost_model.PriceTable.load()
    print(f"   prices: {prices.path.name} ({prices.region}, {prices.retrieved}); template: {settings.path}")
    print(f"   compaction every {interval / 60:g} minutes (the template's schedule)")
    batching = settings.queue_batching.get("ingest")
    if batching is None:
        raise ValueError(f"{settings.path}: no SQS event source mapping in front of ingest (batched ingest)")
    workdir = Path(tempfile.mkdtemp(prefix="edgeloop-bench-cost-"))
    try:
        simulated_s, before_s = whole_rounds(SIMULATED_S, interval), whole_rounds(BEFORE_SIMULATED_S, interval)
        default = [_measure(spec(settings, n, simulated_s, FlushPolicy(), batching), settings, workdir) for n in SIZES]
        direct = _measure(spec(settings, DIRECT_GATEWAYS, simulated_s, FlushPolicy()), settings, workdir)
        before = _measure(spec(settings, BEFORE_GATEWAYS, before_s, FlushPolicy.immediate()), settings, workdir)
        compared = flush_comparison(workdir / "prediction-flush")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = results(default, prices)
    out.update(single_run_figures("direct", direct, prices))
    out.update(single_run_figures("before", before, prices))
    out["cost.usd_per_gateway_month_before"] = out.pop("cost.before_usd_per_gateway_month")
    out["cost.compaction_interval_minutes"] = (interval / 60, "minutes")
    out.update(estimates(direct, default, prices, batching))
    out.update(prediction_flush_figures(compared, prices, landing_puts_per_message(default[-1])))
    if settings.live_accuracy_interval_s:
        out.update(live_accuracy_round_figures(default[-1], settings.live_accuracy_interval_s))
    print_itemized(default[-1], prices)
    return out


def live_accuracy_round_figures(run: RunFigures, interval_s: int) -> dict[str, tuple[float, str]]:
    """S3 requests one live accuracy round makes per line, by operation (and printed by prefix too)."""
    rounds_per_month = cost_model.MONTH_S / interval_s
    by_operation: dict[str, float] = {}
    for item, quantity in sorted(run.itemized.items()):
        key, function, *what = item.split(" ")
        if function != "live_accuracy" or not key.startswith("s3."):
            continue
        per_round = quantity / rounds_per_month  # itemized is per gateway-month: one line per gateway
        print(f"   live accuracy, per line per round: {per_round:6.2f} {' '.join(what)}")
        by_operation[what[0]] = by_operation.get(what[0], 0.0) + per_round
    return {f"cost.live_accuracy_round_s3_{op}_per_line": (n, "requests") for op, n in by_operation.items()}


def spec(
    settings: DeployedSettings,
    gateways: int,
    simulated_s: int,
    flush: FlushPolicy,
    batching: tuple[int, int] | None = None,
) -> RunSpec:
    """A run at the template's schedules: compaction's, and live accuracy's with its landing delay."""
    return RunSpec(
        gateways,
        simulated_s,
        flush,
        settings.compaction_interval_s,
        batching,
        live_accuracy_interval_s=settings.live_accuracy_interval_s,
        landing_delay_minutes=settings.landing_delay_minutes,
    )


def _measure(spec: RunSpec, settings: DeployedSettings, workdir: Path) -> RunFigures:
    path = "batched" if spec.ingest_batching else "direct"
    run = run_fleet(
        spec,
        settings.memory_mb,
        workdir / f"{spec.gateways}-{spec.flush.max_latency_s:g}-{path}",
        settings.logging_env,
    )
    print(
        f"   {spec.gateways} gateways, {spec.simulated_s} simulated s, max latency {spec.flush.max_latency_s:g} s,"
        f" {path} ingest: {run.iot.messages} messages,"
        f" {sum(f.requests for f in run.lambdas.functions.values())} invocations,"
        f" {run.compaction_rounds} compaction rounds, {run.live_accuracy_rounds} live accuracy rounds"
        f" ({run.live_accuracy_windows} windows scored) in {run.wall_s:.0f} s",
        flush=True,
    )
    if spec.live_accuracy_interval_s and not run.live_accuracy_windows:
        raise RuntimeError(f"{spec}: live accuracy ran {run.live_accuracy_rounds} round(s) and scored no window")
    return figures(run, settings)


def monthly_by_service(run: RunFigures, prices: cost_model.PriceTable) -> dict[str, float]:
    return prices.cost(run.usage.per_month())


def growth_usd(run: RunFigures, prices: cost_model.PriceTable) -> dict[str, float]:
    """The run's year-one growth, USD per month for its whole fleet, by kind."""
    return {name: quantity * prices.usd[key] * run.usage.gateways for name, (key, quantity) in run.growth.items()}


def results(default: list[RunFigures], prices: cost_model.PriceTable) -> dict[str, tuple[float, str]]:
    gateways = [run.usage.gateways for run in default]
    monthly = [monthly_by_service(run, prices) for run in default]
    total = cost_model.fit_line(gateways, [sum(m.values()) for m in monthly])
    predictions = cost_model.fit_line(gateways, [sum(prices.cost(run.predictions).values()) for run in default])
    live_accuracy = cost_model.fit_line(gateways, [sum(prices.cost(run.live_accuracy).values()) for run in default])
    out: dict[str, tuple[float, str]] = {
        "cost.usd_per_gateway_month": (total.slope, UNIT),
        "cost.predictions_usd_per_gateway_month": (predictions.slope, UNIT),
        "cost.live_accuracy_usd_per_gateway_month": (live_accuracy.slope, UNIT),
        "cost.fixed_usd_per_month": (total.intercept, "USD/month"),
        "cost.linear_fit_max_error": (total.max_relative_error, "fraction"),
        "cost.curated_retention_days": (float(RETENTION_DAYS), "days"),
    }
    for service in sorted({service for m in monthly for service in m}):
        line = cost_model.fit_line(gateways, [m.get(service, 0.0) for m in monthly])
        out[f"cost.{service}_usd_per_gateway_month"] = (line.slope, UNIT)
    for service in sorted({service for run in default for service in prices.cost(run.live_accuracy)}):
        line = cost_model.fit_line(gateways, [prices.cost(run.live_accuracy).get(service, 0.0) for run in default])
        out[f"cost.live_accuracy_{service}_usd_per_gateway_month"] = (line.slope, UNIT)
    by_key = [prices.cost_by_key(run.usage.per_month()) for run in default]
    storage = cost_model.fit_line(gateways, [m.get("s3.storage_gb_month", 0.0) for m in by_key])
    out["cost.s3_storage_usd_per_gateway_month"] = (storage.slope, UNIT)
    growth = [growth_usd(run, prices) for run in default]
    for name in growth[0]:
        line = cost_model.fit_line(gateways, [g[name] for g in growth])
        out[f"cost.year_one_{name}_usd_per_gateway_month"] = (line.slope, UNIT)
    all_growth = cost_model.fit_line(gateways, [sum(g.values()) for g in growth])
    out["cost.usd_per_gateway_month_without_year_one_growth"] = (total.slope - all_growth.slope, UNIT)
    for fleet in FLEETS:
        out[f"cost.fleet_{_fleet_name(fleet)}_usd_per_month"] = (total.at(fleet), "USD/month")
        without = total.at(fleet) - all_growth.at(fleet)
        out[f"cost.fleet_{_fleet_name(fleet)}_without_year_one_growth_usd_per_month"] = (without, "USD/month")
    return out


def landing_puts_per_message(run: RunFigures) -> float:
    """The landing's S3 PUTs per prediction message: one per line per landing batch, so about one."""
    return run.predictions.get("s3.put_copy_post_list", 0.0) / max(run.prediction_messages, 1.0)


def prediction_flush_figures(
    compared: list[FlushFigures], prices: cost_model.PriceTable, puts_per_message: float
) -> dict[str, tuple[float, str]]:
    out: dict[str, tuple[float, str]] = {
        "cost.prediction_comparison_hours": (COMPARISON_S / 3600, "hours"),
        "cost.prediction_landing_puts_per_message": (puts_per_message, "PUTs"),
    }
    per_message_sqs = 1 + 2 / SQS_RECEIVE_MAX
    for flush in compared:
        at = f"at_{flush.max_latency_s:g}s"
        wire = {
            "iot.message_5kb": flush.units_per_month,
            "iot.rule_triggered": flush.units_per_month,
            "iot.action_executed": flush.units_per_month,
            "sqs.request_64kb": flush.messages_per_month * per_message_sqs,
        }
        out[f"cost.prediction_messages_per_gateway_month_{at}"] = (flush.messages_per_month, "messages")
        out[f"cost.prediction_iot_units_per_gateway_month_{at}"] = (flush.units_per_month, "5 KB units")
        out[f"cost.prediction_bytes_per_message_{at}"] = (flush.bytes_per_message, "bytes")
        out[f"cost.prediction_wire_usd_per_gateway_month_{at}"] = (sum(prices.cost(wire).values()), UNIT)
        landed = {**wire, "s3.put_copy_post_list": flush.messages_per_month * puts_per_message}
        out[f"cost.prediction_wire_and_puts_usd_per_gateway_month_{at}"] = (sum(prices.cost(landed).values()), UNIT)
    return out


def per_gateway(run: RunFigures, prices: cost_model.PriceTable) -> dict[str, float]:
    """A single run's bill per gateway-month by service, less the custom metrics (per account)."""
    monthly = monthly_by_service(run, prices)
    monthly.pop("cloudwatch", None)
    return {service: usd / run.usage.gateways for service, usd in monthly.items()}


def single_run_figures(name: str, run: RunFigures, prices: cost_model.PriceTable) -> dict[str, tuple[float, str]]:
    services = per_gateway(run, prices)
    out = {f"cost.{name}_{service}_usd_per_gateway_month": (usd, UNIT) for service, usd in services.items()}
    out[f"cost.{name}_usd_per_gateway_month"] = (sum(services.values()), UNIT)
    growth = sum(growth_usd(run, prices).values()) / run.usage.gateways
    out[f"cost.{name}_usd_per_gateway_month_without_year_one_growth"] = (sum(services.values()) - growth, UNIT)
    return out


def print_itemized(run: RunFigures, prices: cost_model.PriceTable, top: int = 20) -> None:
    priced = {item: quantity * prices.usd[item.split(" ", 1)[0]] for item, quantity in run.itemized.items()}
    print(f"   largest items per gateway-month ({run.usage.gateways} gateways, default policy, batched ingest):")
    for item, usd in sorted(priced.items(), key=lambda kv: -kv[1])[:top]:
        print(f"     {usd:9.4f} USD  {run.itemized[item]:>12,.1f}  {item}")


def _fleet_name(fleet: int) -> str:
    return f"{fleet // 1000}k" if fleet >= 1000 else str(fleet)


def messages_per_batch(path: cost_model.PathCounts, fleet: int, batching: tuple[int, int]) -> float:
    """Messages one SQS-triggered invocation gets: the fleet's messages in one batch window, capped."""
    batch_size, window_s = batching
    arriving = path.messages * fleet / cost_model.MONTH_S * window_s
    return max(1.0, min(arriving, batch_size, LAMBDA_PAYLOAD_BYTES / max(path.message_bytes, 1)))


def per_round_usd(run: RunFigures, prices: cost_model.PriceTable) -> float:
    """USD per gateway-month of what each compaction round costs per line whatever the messages:
    the scheduled functions' Lambda time and requests, less their per-raw-object requests."""
    per_message = {
        f"s3.get_and_other compaction GetObject {names.RAW_PREFIX}",
        f"s3.put_copy_post_list compaction PutObject {COMPACTION_STATE_PREFIX}",
    }
    return sum(
        quantity * prices.usd[item.split(" ", 1)[0]]
        for item, quantity in run.itemized.items()
        if item.split(" ")[1] in PER_ROUND_FUNCTIONS and item not in per_message
    )


def estimates(
    direct: RunFigures, default: list[RunFigures], prices: cost_model.PriceTable, batching: tuple[int, int]
) -> dict[str, tuple[float, str]]:
    """At ESTIMATE_FLEET gateways: the counter model's batched paths from the direct run's counts
    (estimates), the measured batched path (the fleet line at that size, per gateway), and what the
    compaction rounds cost per line at the template's interval."""
    path = direct.path
    today = sum(per_gateway(direct, prices).values())
    batch = messages_per_batch(path, ESTIMATE_FLEET, batching)
    sqs = today - cost_model.path_difference(prices, path, cost_model.sqs_batched_quantities(path, batch))
    firehose = today - cost_model.path_difference(prices, path, cost_model.firehose_quantities(path, ESTIMATE_FLEET))
    measured = results(default, prices)
    at_fleet = measured[f"cost.fleet_{_fleet_name(ESTIMATE_FLEET)}_usd_per_month"][0] / ESTIMATE_FLEET
    rounds = per_round_usd(default[-1], prices)
    return {
        "cost.direct_ingest_path_usd_per_gateway_month": (
            sum(prices.cost(cost_model.per_message_quantities(path)).values()),
            UNIT,
        ),
        "cost.estimate_sqs_batched_usd_per_gateway_month": (sqs, UNIT),
        "cost.estimate_firehose_usd_per_gateway_month": (firehose, UNIT),
        "cost.estimate_sqs_messages_per_batch": (batch, "messages"),
        "cost.measured_batched_usd_per_gateway_month_at_1k": (at_fleet, UNIT),
        "cost.compaction_rounds_usd_per_gateway_month": (rounds, UNIT),
    }
