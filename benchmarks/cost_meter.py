"""Meters for the cost bench: what AWS would bill, counted where the calls happen.

- `AwsCallMeter`: every botocore API call made inside a metered Lambda invocation (a patch of
  `BaseClient._make_api_call`, so every client and resource of the process is seen): S3 requests
  by class and top-level prefix, bytes PUT, DynamoDB read/write units from the items' sizes
  (GSI writes included), IoT registry operations.
- `LambdaMeter`: wraps each handler: requests, billed duration, log bytes and lines written
  during the invocation, and the distinct EMF metrics (namespace, dimensions, name).
- `CountingTransport`: a gateway transport that counts what IoT Core meters (5 KB units of
  payload + topic) on the way to the broker.
"""

from __future__ import annotations

import contextvars
import io
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import botocore.client

from . import cost_model

FUNCTION = contextvars.ContextVar("metered_function", default=None)
# Lambda's own lines per invocation (START, END, REPORT with the XRAY trace id): an estimate from
# their documented format, ~350 bytes; CloudWatch Logs adds 26 bytes per event to the ingested size.
PLATFORM_LOG_BYTES_PER_INVOCATION = 350
PLATFORM_LOG_EVENTS_PER_INVOCATION = 3
LOG_EVENT_OVERHEAD_BYTES = 26

S3_PUT_CLASS = frozenset(
    {"PutObject", "CopyObject", "PostObject", "ListObjects", "ListObjectsV2", "ListObjectVersions", "ListBuckets"}
    | {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
)
S3_FREE = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload"})
DYNAMODB_READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


def top_prefix(key: str | None) -> str:
    return (key or "").split("/", 1)[0] or "(bucket)"


def attribute_bytes(value: Mapping[str, Any]) -> int:
    """DynamoDB's size of one typed attribute value (close to its documented item-size rules)."""
    ((kind, inner),) = value.items()
    if kind in ("S", "N"):
        return len(str(inner).encode())
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + item_bytes(inner)
    if kind == "L":
        return 3 + sum(1 + attribute_bytes(v) for v in inner)
    return sum(len(str(v).encode()) for v in inner)  # SS, NS, BS


def item_bytes(item: Mapping[str, Mapping[str, Any]] | None) -> int:
    return sum(len(name.encode()) + attribute_bytes(value) for name, value in (item or {}).items())


@dataclass
class AwsUsage:
    requests: Counter = field(default_factory=Counter)  # (function, service, operation, prefix) -> calls
    s3_put_bytes: Counter = field(default_factory=Counter)  # prefix -> bytes
    read_units: Counter = field(default_factory=Counter)  # function -> RRU
    write_units: Counter = field(default_factory=Counter)  # function -> WRU


class AwsCallMeter:
    """Counts the API calls made while `FUNCTION` is set (a metered invocation); others are set-up."""

    def __init__(self) -> None:
        self.usage = AwsUsage()
        self._original: Callable | None = None
        self._bypass = threading.local()
        self._indexes: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> AwsCallMeter:
        self._original = botocore.client.BaseClient._make_api_call
        meter = self

        def metered(client, operation_name, api_params):
            return meter._call(client, operation_name, api_params)

        botocore.client.BaseClient._make_api_call = metered
        return self

    def __exit__(self, *exc_info: object) -> None:
        botocore.client.BaseClient._make_api_call = self._original

    def _call(self, client, operation: str, params: dict) -> Any:
        function = FUNCTION.get()
        if function is None or getattr(self._bypass, "on", False):
            return self._original(client, operation, params)
        service = client.meta.service_model.service_name
        # botocore wraps and reads the body during the call: measure it before
        body_bytes = _body_bytes(params.get("Body", b"")) if service == "s3" else 0
        response = self._original(client, operation, params)
        with self._lock:
            self._record(client, function, service, operation, params, response)
            if operation == "PutObject" and service == "s3":
                self.usage.s3_put_bytes[top_prefix(params.get("Key"))] += body_bytes
        return response

    def _uncounted(self, client, operation: str, params: dict) -> Any:
        self._bypass.on = True
        try:
            return self._original(client, operation, params)
        finally:
            self._bypass.on = False

    def _record(self, client, function: str, service: str, operation: str, params: dict, response: dict) -> None:
        prefix = top_prefix(params.get("Key", params.get("Prefix"))) if service == "s3" else ""
        self.usage.requests[(function, service, operation, prefix)] += 1
        if service == "dynamodb" and operation in DYNAMODB_READS:
            self.usage.read_units[function] += _read_units(operation, params, response)
        elif service == "dynamodb" and operation in DYNAMODB_WRITES:
            self.usage.write_units[function] += self._write_units(client, operation, params)

    def _write_units(self, client, operation: str, params: dict) -> float:
        if operation == "PutItem":
            return self._item_write(client, params["TableName"], params["Item"])
        if operation == "UpdateItem":
            found = self._uncounted(client, "GetItem", {"TableName": params["TableName"], "Key": params["Key"]})
            return self._item_write(client, params["TableName"], found.get("Item") or params["Key"])
        if operation == "DeleteItem":
            return 1 + len(self._gsi_keys(client, params["TableName"]))
        if operation == "BatchWriteItem":
            units = 0.0
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    item = request.get("PutRequest", {}).get("Item")
                    units += self._item_write(client, table, item) if item else 1
            return units
        return 2 * sum(  # TransactWriteItems: two units per item
            self._item_write(client, op.get("TableName", ""), op.get("Item") or op.get("Key") or {})
            for entry in params["TransactItems"]
            for op in entry.values()
        )

    def _item_write(self, client, table: str, item: Mapping) -> float:
        """One write of `item` and of each GSI whose partition key it carries."""
        units = cost_model.write_units(item_bytes(item))
        return units * (1 + sum(1 for key in self._gsi_keys(client, table) if key in item))

    def _gsi_keys(self, client, table: str) -> list[str]:
        if table not in self._indexes:
            described = self._uncounted(client, "DescribeTable", {"TableName": table})["Table"]
            self._indexes[table] = [
                index["KeySchema"][0]["AttributeName"] for index in described.get("GlobalSecondaryIndexes", [])
            ]
        return self._indexes[table]


def _read_units(operation: str, params: dict, response: dict) -> float:
    consistent = bool(params.get("ConsistentRead"))
    if operation == "GetItem":
        return cost_model.read_units(item_bytes(response.get("Item")), consistent=consistent)
    if operation in ("Query", "Scan"):
        total = sum(item_bytes(item) for item in response.get("Items", []))
        return cost_model.read_units(total, consistent=consistent)
    items = (
        [i for items in response.get("Responses", {}).values() for i in items] if operation == "BatchGetItem" else []
    )
    if operation == "TransactGetItems":
        return sum(2 * cost_model.read_units(item_bytes(r.get("Item")), consistent=True) for r in response["Responses"])
    return sum(cost_model.read_units(item_bytes(item), consistent=consistent) for item in items)


def _body_bytes(body: Any) -> int:
    if isinstance(body, (bytes, bytearray)):
        return len(body)
    if isinstance(body, str):
        return len(body.encode())
    position = body.tell()
    size = body.seek(0, io.SEEK_END) - position
    body.seek(position)
    return size


# --- Lambda -------------------------------------------------------------------------------------------


class CountingLog(io.TextIOBase):
    """A text sink that counts bytes and lines and collects the distinct EMF metrics written to it;
    it keeps no text beyond the current line (memory stays bounded)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.lines = 0
        self.metrics: set[tuple[str, tuple[tuple[str, str], ...], str]] = set()
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        self.lines += text.count("\n")
        if "\n" not in text:
            self._partial += text
            return len(text)
        first, *middle, last = (self._partial + text).split("\n")
        for line in (first, *middle):
            if '"_aws"' in line:
                self.metrics |= emf_metrics(line)
        self._partial = last
        return len(text)


def emf_metrics(line: str) -> set[tuple[str, tuple[tuple[str, str], ...], str]]:
    """The (namespace, dimensions, metric name) custom metrics one EMF log line creates."""
    record = json.loads(line)
    found = set()
    for directive in record["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive.get("Dimensions", []):
            dimensions = tuple(sorted((name, str(record.get(name))) for name in dimension_set))
            for metric in directive.get("Metrics", []):
                found.add((directive["Namespace"], dimensions, metric["Name"]))
    return found


@dataclass
class FunctionUsage:
    requests: int = 0
    duration_ms: float = 0.0
    gb_seconds: float = 0.0
    log_bytes: int = 0
    log_lines: int = 0


class LambdaMeter:
    def __init__(self, memory_mb: Mapping[str, int], log: CountingLog) -> None:
        self.memory_mb = dict(memory_mb)
        self.log = log
        self.functions: dict[str, FunctionUsage] = {}

    def wrap(self, function: str, handler: Callable) -> Callable:
        if function not in self.memory_mb:
            raise KeyError(f"function {function!r} has no configured memory; known: {sorted(self.memory_mb)}")

        def metered(event: dict, context: object) -> object:
            usage = self.functions.setdefault(function, FunctionUsage())
            token = FUNCTION.set(function)
            bytes_before, lines_before = self.log.bytes, self.log.lines
            start = time.perf_counter()
            try:
                return handler(event, context)
            finally:
                elapsed_ms = (time.perf_counter() - start) * 1000
                FUNCTION.reset(token)
                usage.requests += 1
                usage.duration_ms += elapsed_ms
                usage.gb_seconds += cost_model.lambda_gb_seconds(elapsed_ms, self.memory_mb[function])
                usage.log_bytes += self.log.bytes - bytes_before + PLATFORM_LOG_BYTES_PER_INVOCATION
                usage.log_lines += self.log.lines - lines_before + PLATFORM_LOG_EVENTS_PER_INVOCATION

        return metered


# --- IoT Core -------------------------------------------------------------------------------------------


@dataclass
class IotUsage:
    messages: int = 0
    units: int = 0
    payload_bytes: int = 0


class CountingTransport:
    """Delegates to a gateway Transport and counts each publish IoT Core would meter."""

    def __init__(self, inner: Any, usage: IotUsage) -> None:
        self.inner = inner
        self.usage = usage

    def connect(self, timeout_s: float) -> None:
        self.inner.connect(timeout_s)

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        self.inner.publish(topic, payload, timeout_s)
        self.usage.messages += 1
        self.usage.units += cost_model.iot_units(len(payload) + len(topic.encode()))
        self.usage.payload_bytes += len(payload)

    def subscribe(self, topic_filter: str, callback: Any, timeout_s: float) -> None:
        self.inner.subscribe(topic_filter, callback, timeout_s)

    @property
    def is_connected(self) -> bool:
        return self.inner.is_connected

    def disconnect(self) -> None:
        self.inner.disconnect()


def rule_units(event: Mapping[str, Any]) -> int:
    """5 KB units of the message a rule processed (IotRuleEvent: base64 payload + topic)."""
    payload = event.get("payload_b64", "")
    return cost_model.iot_units(math.ceil(len(payload) * 3 / 4) + len(str(event.get("topic", ""))))
