"""The cost model: billed quantities (counted by cost_meter.py in a simulated run) -> USD per month.

A quantity is keyed by the price it is billed at (`iot.message_5kb`, `s3.put_copy_post_list`, ...;
see cost_prices_us_east_1.json); the service is the part before the dot. Flow quantities are
counted over a simulated period and scale with simulated time; standing quantities (GB-months
stored, custom metrics) are already per month at steady state.

The ingest path is a counter model (`PathCounts`): the measured per-message path, and the batched
path (IoT rule -> SQS -> ingest per batch, or IoT rule -> Firehose) estimated from the same counts.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PRICES_ENV = "EDGELOOP_COST_PRICES"
DEFAULT_PRICES = Path(__file__).resolve().parent / "cost_prices_us_east_1.json"
MONTH_S = 365.25 / 12 * 86_400
GIB = 2**30
IOT_UNIT_BYTES = 5 * 1024  # IoT Core meters messages, rules and actions in 5 KB units
SQS_CHUNK_BYTES = 64 * 1024
DYNAMODB_READ_UNIT_BYTES = 4 * 1024
DYNAMODB_WRITE_UNIT_BYTES = 1024
# X-Ray's default sampling rule: the first request each second, then 5 % of the rest. At fleet scale
# the 5 % is what grows with the fleet (an estimate, the rule is not metered locally).
XRAY_SAMPLED_FRACTION = 0.05


def service_of(price_key: str) -> str:
    return price_key.split(".", 1)[0]


# --- units -----------------------------------------------------------------------------------------


def iot_units(message_bytes: int) -> int:
    """IoT Core's billed 5 KB units for one message (payload + topic), at least one."""
    return max(1, math.ceil(message_bytes / IOT_UNIT_BYTES))


def sqs_requests(message_bytes: int) -> int:
    return max(1, math.ceil(message_bytes / SQS_CHUNK_BYTES))


def read_units(item_bytes: int, *, consistent: bool) -> float:
    """On-demand read request units for reading `item_bytes` in one request."""
    units = max(1, math.ceil(item_bytes / DYNAMODB_READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def write_units(item_bytes: int) -> int:
    return max(1, math.ceil(item_bytes / DYNAMODB_WRITE_UNIT_BYTES))


def lambda_gb_seconds(duration_ms: float, memory_mb: int) -> float:
    """Lambda bills duration rounded up to the millisecond, times configured memory."""
    return math.ceil(duration_ms) / 1000 * memory_mb / 1024


def stored_gb_months(bytes_per_day: float, retention_days: float) -> float:
    """GB-months held at steady state by data arriving at `bytes_per_day` and kept `retention_days`."""
    return bytes_per_day * retention_days / GIB


# --- prices ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceTable:
    region: str
    retrieved: str
    usd: Mapping[str, float]
    unconfirmed: tuple[str, ...]
    path: Path

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The table at `path`, else $EDGELOOP_COST_PRICES, else the us-east-1 table in the repo."""
        path = Path(path or os.environ.get(PRICES_ENV) or DEFAULT_PRICES)
        document = json.loads(path.read_text())
        usd, unconfirmed = {}, []
        for key, entry in document.get("prices", {}).items():
            value = entry.get("usd") if isinstance(entry, dict) else None
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{path}: prices.{key}.usd={value!r} must be a number >= 0")
            if not entry.get("source"):
                raise ValueError(f"{path}: prices.{key}.source is missing: every price names its page")
            usd[key] = float(value)
            if entry.get("confirmed") is not True:
                unconfirmed.append(key)
        for field in ("region", "retrieved"):
            if not document.get(field):
                raise ValueError(f"{path}: {field} is missing")
        return cls(document["region"], document["retrieved"], usd, tuple(unconfirmed), path)

    def cost_by_key(self, quantities: Mapping[str, float]) -> dict[str, float]:
        """USD per price key for the quantities (keyed by price key)."""
        unknown = sorted(set(quantities) - set(self.usd))
        if unknown:
            raise KeyError(f"no price for {unknown} in {self.path}")
        return {key: quantity * self.usd[key] for key, quantity in quantities.items()}

    def cost(self, quantities: Mapping[str, float]) -> dict[str, float]:
        """USD per service for the quantities (keyed by price key)."""
        by_service: Counter[str] = Counter()
        for key, usd in self.cost_by_key(quantities).items():
            by_service[service_of(key)] += usd
        return dict(by_service)


# --- one measured run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunUsage:
    """What one simulated run was billed for: `flow` over `simulated_s`, `standing` per month."""

    gateways: int
    simulated_s: float
    flow: Mapping[str, float]
    standing: Mapping[str, float]

    def per_month(self) -> dict[str, float]:
        """The run's fleet (all its gateways) for one month."""
        scale = MONTH_S / self.simulated_s
        month: Counter[str] = Counter({k: v * scale for k, v in self.flow.items()})
        month.update(self.standing)
        return dict(month)


# --- the fleet line ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    intercept: float
    slope: float
    max_relative_error: float

    def at(self, gateways: float) -> float:
        return self.intercept + self.slope * gateways


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Line:
    """Least-squares line through (xs, ys) and its largest relative error on those points."""
    if len(xs) != len(ys) or len(set(xs)) < 2:
        raise ValueError(f"fit_line needs >= 2 distinct x values and as many ys: xs={list(xs)}, ys={list(ys)}")
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    intercept = mean_y - slope * mean_x
    errors = [abs(intercept + slope * x - y) / abs(y) if y else math.inf for x, y in zip(xs, ys, strict=True)]
    return Line(intercept, slope, max(errors))


# --- the ingest path as a counter model ----------------------------------------------------------------


@dataclass(frozen=True)
class PathCounts:
    """Per gateway-month counts of the per-message ingest path that batching would change."""

    messages: float  # telemetry messages (one ingest invocation each today)
    message_bytes: float  # mean payload + topic bytes of one message
    ingest_gb_s: float
    ingest_log_bytes: float
    raw_puts: float  # raw/ objects written by ingest
    raw_reads: float  # compaction's GETs of raw/ objects
    marker_puts: float  # compaction's _state markers, one per raw object
    listings: float  # compaction's LIST pages over raw/ and _state at steady state


def per_message_quantities(path: PathCounts) -> dict[str, float]:
    """What the per-message path's own counts cost as billed quantities (for the comparison)."""
    return {
        "lambda.request": path.messages,
        "lambda.gb_second_arm64": path.ingest_gb_s,
        "logs.ingested_gb": path.ingest_log_bytes / GIB,
        "s3.put_copy_post_list": path.raw_puts + path.marker_puts + path.listings,
        "s3.get_and_other": path.raw_reads,
        "xray.trace_recorded": path.messages * XRAY_SAMPLED_FRACTION,
    }


def sqs_batched_quantities(path: PathCounts, messages_per_batch: float) -> dict[str, float]:
    """Estimate, not a measurement: IoT rule -> SQS -> ingest (batch window) writing one raw object
    per batch. Per message: one SendMessage (the rule's SQS action); per batch of up to 10 a
    ReceiveMessage and a DeleteMessageBatch; one invocation, one raw PUT, one compaction GET and one
    marker per batch. Duration is kept as measured (the per-sample work does not shrink); the log
    lines per invocation are divided by the batch (one summary line per batch)."""
    if messages_per_batch < 1:
        raise ValueError(f"messages_per_batch={messages_per_batch!r} must be >= 1")
    batches = path.messages / messages_per_batch
    chunks = sqs_requests(int(path.message_bytes))
    receive_and_delete = 2 * math.ceil(messages_per_batch / 10) * batches
    return {
        "sqs.request_64kb": path.messages * chunks + receive_and_delete,
        "lambda.request": batches,
        "lambda.gb_second_arm64": path.ingest_gb_s,
        "logs.ingested_gb": path.ingest_log_bytes / messages_per_batch / GIB,
        "s3.put_copy_post_list": 2 * batches + path.listings / messages_per_batch,
        "s3.get_and_other": batches,
        "xray.trace_recorded": batches * XRAY_SAMPLED_FRACTION,
    }


def firehose_quantities(path: PathCounts, gateways: int, buffer_s: float = 60.0) -> dict[str, float]:
    """Estimate, not a measurement: IoT rule -> Firehose (Direct PUT, each record billed as >= 5 KB),
    a transform Lambda per buffer, one object per buffer interval for the whole fleet; the
    gateway's share of the per-buffer counts is 1/gateways."""
    record_gb = path.messages * iot_units(int(path.message_bytes)) * IOT_UNIT_BYTES / GIB
    flushes = MONTH_S / buffer_s / gateways
    return {
        "firehose.ingested_gb_5kb": record_gb,
        "lambda.request": flushes,
        "lambda.gb_second_arm64": path.ingest_gb_s,
        "logs.ingested_gb": path.ingest_log_bytes * flushes / max(path.messages, 1) / GIB,
        "s3.put_copy_post_list": 2 * flushes + path.listings * flushes / max(path.messages, 1),
        "s3.get_and_other": flushes,
        "xray.trace_recorded": flushes * XRAY_SAMPLED_FRACTION,
    }


def path_difference(table: PriceTable, today: PathCounts, alternative: Mapping[str, float]) -> float:
    """USD per gateway-month the alternative saves (negative: costs more) on the ingest path."""
    return sum(table.cost(per_message_quantities(today)).values()) - sum(table.cost(alternative).values())
