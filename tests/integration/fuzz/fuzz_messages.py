"""What the fuzz suite sends: every device message the cloud parses, as the IoT rule (or
EventBridge, for the hot path) hands it to the real handlers, and hypothesis strategies for good,
mixed and hostile ones.

A `Sent` is one invocation: the handler, the event, and what must come of it (the good samples
or intervals that must land, the bad ones that must be refused). The cloud it runs against (moto:
data bucket, IoT registry, device and deployment tables, Timestream) is fuzz_cloud.py's.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from fuzz_cloud import DATA_BUCKET, DAY_MS, LINE, METRICS, RECEIVED_AT, RECEIVED_AT_MS, THING, device_record
from hypothesis import strategies as st

from edgeloop.cloud.datalake.raw import raw_object_key
from edgeloop.schemas import (
    ColumnarSamples,
    DeviceAnnouncement,
    DeviceStatus,
    IotRuleEvent,
    ModelStatusReport,
    PeriodicStatus,
    TelemetryBatch,
    names,
)
from edgeloop.schemas.bounded_json import MAX_CONTEXT_INTERVALS, MAX_DEVICE_STRING_CHARS
from edgeloop.schemas.raw_batch import RawBatch
from edgeloop.schemas.telemetry_compact import COMPACT_MAGIC, Compression, encode_compact

_ids = count()


def fresh_id(prefix: str) -> str:
    """An id no earlier example used (examples share one moto cloud)."""
    return f"{prefix}-{next(_ids)}"


@dataclass
class Sent:
    """One invocation of a handler and what must come of it."""

    handler: str  # ingest, context, status_intake, device_registry, hot_path
    event: dict
    good: list[Any] = field(default_factory=list)  # seqs / interval ids that must land
    bad: list[int] = field(default_factory=list)  # sample / interval indexes that must be refused


def fresh_seq_first(draw) -> int:
    """A sequence range of at most 64 samples no earlier example used (a re-used one is a duplicate
    delivery, which lands nothing new), anywhere in int64."""
    return next(_ids) * 64 + 2**50 * draw(st.integers(0, 8191))


def position(draw, length: int) -> int:
    """An index into something `length` long, drawn independently of the length (which may depend
    on fresh ids, so would make hypothesis's replays differ)."""
    return draw(st.integers(0, 2**16)) % length


def rule_event(topic: str, payload: bytes | dict | list) -> dict:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return IotRuleEvent.from_message(topic, body, RECEIVED_AT_MS).model_dump()


# --- any JSON, and the bytes around it -----------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
# Values a lax decoder would coerce into a number, a time or a string.
mistyped = st.sampled_from(["1.5", "0", "NaN", True, False, None, [], {}, 1767225600, "2026-13-01", 2**64])


@st.composite
def hostile_json_bytes(draw, document: dict | list) -> bytes:
    """`document` made hostile: a field replaced, nested deep, padded, trailed, or not JSON at all."""
    kind = draw(st.sampled_from(["replace", "nest", "trail", "nan", "long", "bytes", "any", "many"]))
    text = json.dumps(document)
    if kind == "replace" and isinstance(document, dict) and document:
        changed = dict(document)
        changed[draw(st.sampled_from(sorted(changed)))] = draw(json_values | mistyped)
        return json.dumps(changed).encode()
    if kind == "nest":
        depth = draw(st.integers(2, 5_000))
        return (b"[" * depth + b"]" * depth) if draw(st.booleans()) else (b'{"a":' * depth + b"1" + b"}" * depth)
    if kind == "trail":
        return text.encode() + draw(st.sampled_from([b" {}", b"x", text.encode(), b"\x00"]))
    if kind == "nan":
        return text.replace("1", "NaN", 1).encode() if "1" in text else b"[NaN]"
    if kind == "long":
        return json.dumps({"value": "x" * draw(st.integers(MAX_DEVICE_STRING_CHARS + 1, 130_000))}).encode()
    if kind == "many":
        return b"[" + b",".join([b'"a"'] * draw(st.integers(600, 40_000))) + b"]"
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    return json.dumps(draw(json_values)).encode()


# --- telemetry, both wire formats ----------------------------------------------------------------

GOOD_TIME = st.integers(RECEIVED_AT_MS - 13 * DAY_MS, RECEIVED_AT_MS)
# Per-sample faults and what they replace; format 2 can carry only numbers (its values are float64).
FORMAT_1_FAULTS = {
    "values": ["1.5", True, "NaN", None, float("nan"), float("inf")],
    "metric_index": ["0", True, 99, -1],
    "time_ms": [2**64, RECEIVED_AT_MS - 30 * DAY_MS, RECEIVED_AT_MS + DAY_MS, "1767225600000"],
}
FORMAT_2_FAULTS = {
    "values": [float("nan"), float("inf"), float("-inf")],
    "time_ms": [RECEIVED_AT_MS - 30 * DAY_MS, RECEIVED_AT_MS + DAY_MS],
}


def telemetry_wire(doc: dict, fmt: int, compression: Compression = Compression.ZLIB) -> bytes:
    if fmt == 1:
        return zlib.compress(json.dumps(doc).encode())  # NaN and Infinity as Python writes them
    samples = ColumnarSamples.model_construct(**doc["samples"])
    batch = TelemetryBatch.model_construct(**{**doc, "format_version": 2, "samples": samples})
    return encode_compact(batch, compression)


@st.composite
def telemetry_batches(draw) -> Sent:
    """A batch of either format with some samples mistyped, non-finite or out of range: exactly the
    others must land."""
    fmt = draw(st.sampled_from([1, 2]))
    n = draw(st.integers(1, 40))
    metrics = draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=4, unique=True))
    seq_first = fresh_seq_first(draw)
    doc = {
        "format_version": 1,
        "thing_name": THING,
        "line_id": LINE,
        "seq_first": seq_first,
        "seq_last": seq_first + n - 1,
        "samples": {
            "metrics": metrics,
            "metric_index": draw(st.lists(st.integers(0, len(metrics) - 1), min_size=n, max_size=n)),
            "time_ms": draw(st.lists(GOOD_TIME, min_size=n, max_size=n)),
            "values": draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=n, max_size=n)),
        },
    }
    faults = FORMAT_1_FAULTS if fmt == 1 else FORMAT_2_FAULTS
    bad = sorted(draw(st.sets(st.integers(0, n - 1), max_size=n)))
    for index in bad:
        column = draw(st.sampled_from(sorted(faults)))
        doc["samples"][column][index] = draw(st.sampled_from(faults[column]))
    compression = draw(st.sampled_from([Compression.ZLIB, Compression.XZ]))
    payload = telemetry_wire(doc, fmt, compression)
    good = [seq_first + i for i in range(n) if i not in bad]
    return Sent("ingest", rule_event(names.telemetry_topic(THING), payload), good=good, bad=bad)


@st.composite
def hostile_telemetry(draw) -> Sent:
    """Bytes no gateway should send: random, a valid batch of either format mutated or cut, any
    JSON, a field of the batch replaced, nested or trailing data, another thing's topic."""
    valid = draw(telemetry_batches())
    payload = IotRuleEvent.model_validate(valid.event).payload
    kind = draw(st.sampled_from(["bytes", "mutate", "json", "field", "trail", "topic", "header"]))
    topic = names.telemetry_topic(THING)
    if kind == "bytes":
        payload = draw(st.sampled_from([b"", b"x\x9c", COMPACT_MAGIC + b"\x02\x01"])) + draw(st.binary(max_size=300))
    elif kind == "mutate":
        mutated = bytearray(payload)
        for _ in range(draw(st.integers(1, 4))):
            mutated[position(draw, len(mutated))] = draw(st.integers(0, 255))
        payload = bytes(mutated[: 1 + position(draw, len(mutated))])
    elif kind == "json":
        payload = zlib.compress(draw(hostile_json_bytes({"samples": {}})))
    elif kind == "field":
        doc = {"format_version": 1, "thing_name": THING, "line_id": LINE, "seq_first": 0, "seq_last": 0}
        doc["samples"] = {"metrics": ["x"], "metric_index": [0], "time_ms": [RECEIVED_AT_MS], "values": [1.0]}
        payload = zlib.compress(draw(hostile_json_bytes(doc)))
    elif kind == "trail":
        payload += draw(st.sampled_from([payload, b"\x00", zlib.compress(b"{}")]))
    elif kind == "topic":
        topic = draw(st.sampled_from([names.telemetry_topic("gw-other"), "edgeloop/gw-line-1/context", "x/y"]))
    else:  # a format-2 header in front of anything
        payload = COMPACT_MAGIC + bytes([2, draw(st.integers(0, 4))]) + draw(st.binary(max_size=200))
    return Sent("ingest", rule_event(topic, payload))


# --- context ----------------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)


@st.composite
def good_intervals(draw) -> dict:
    kind = draw(st.sampled_from(["run", "state", "shift", "work_order", "limits"]))
    start = T0 + timedelta(minutes=draw(st.integers(0, 20_000)))
    end = start + timedelta(minutes=draw(st.integers(1, 600)), milliseconds=draw(st.integers(0, 999)))
    interval = {
        "kind": kind,
        "interval_id": fresh_id(kind),
        "line_id": LINE,
        "start": start.isoformat(),
        "end": end.isoformat().replace("+00:00", "Z"),
        "value": draw(st.text(st.characters(exclude_characters="\x85\u2028\u2029"), max_size=20)),
    }
    if kind == "limits" or (kind == "run" and draw(st.booleans())):
        lower = draw(st.floats(-1e6, 1e6))
        interval["spec"] = {
            "target_metric": "cold_od_average",
            "lower": lower,
            "upper": lower + draw(st.floats(1e-3, 10)),
        }
    return interval


# A per-interval fault, as (path, value): refuses that interval only.
INTERVAL_FAULTS = [
    (("spec", "lower"), "4.9"),
    (("spec", "upper"), True),
    (("start",), 1767225600),
    (("start",), "2026-01-01T06:00:00"),  # no time zone
    (("end",), "2020-01-01T00:00:00Z"),  # before start
    (("kind",), "coffee_break"),
    (("interval_id",), ""),
    (("value",), 7),
    (("value",), "two\u2028lines"),
    (("color",), "extra field"),
    (("line_id",), None),
    ((), 5),  # not an object at all
    ((), ["run"]),
]


@st.composite
def context_messages(draw) -> Sent:
    """One interval or a list of good and faulty ones: exactly the good ones must land."""
    intervals = draw(st.lists(good_intervals(), min_size=1, max_size=8))
    bad = sorted(draw(st.sets(st.integers(0, len(intervals) - 1), max_size=len(intervals))))
    for index in bad:
        path, value = draw(st.sampled_from(INTERVAL_FAULTS))
        if not path:
            intervals[index] = value
        elif path[0] == "spec":
            intervals[index]["spec"] = {"target_metric": "cold_od_average", "lower": 1.0, "upper": 2.0}
            intervals[index]["kind"] = "run"
            intervals[index]["spec"][path[1]] = value
        else:
            intervals[index][path[0]] = value
    good = [item["interval_id"] for i, item in enumerate(intervals) if i not in bad]
    document: Any = intervals[0] if len(intervals) == 1 and draw(st.booleans()) else intervals
    return Sent("context", rule_event(names.context_topic(THING), document), good=good, bad=bad)


@st.composite
def hostile_context(draw) -> Sent:
    topic = names.context_topic(THING)
    kind = draw(st.sampled_from(["json", "too_many", "other_line", "topic"]))
    if kind == "json":
        payload = draw(hostile_json_bytes(draw(good_intervals())))
    elif kind == "too_many":
        payload = json.dumps([{}] * (MAX_CONTEXT_INTERVALS + draw(st.integers(1, 100)))).encode()
    elif kind == "other_line":
        payload = json.dumps([{**draw(good_intervals()), "line_id": "line-2"}]).encode()
    else:
        payload = json.dumps(draw(good_intervals())).encode()
        topic = draw(st.sampled_from([names.context_topic("gw-unregistered"), "edgeloop/gw-line-1/contexts"]))
    return Sent("context", rule_event(topic, payload))


# --- status, announcements, lifecycle events ------------------------------------------------------

sent_at = st.integers(0, 10 * DAY_MS).map(lambda ms: RECEIVED_AT - timedelta(milliseconds=ms))


@st.composite
def status_documents(draw) -> dict:
    if draw(st.booleans()):
        return PeriodicStatus(thing_name=THING, model_id="m", version="1.0.0", sent_at=draw(sent_at)).model_dump(
            mode="json"
        )
    report = ModelStatusReport(
        thing_name=THING,
        deployment_id=draw(st.sampled_from(["", "dep-unknown", fresh_id("dep")])),
        model_id="extrusion-line-1",
        version="1.0.0",
        status=draw(st.sampled_from(list(DeviceStatus))),
        reason=draw(st.text(max_size=40)),
        sent_at=draw(sent_at),
    )
    return report.model_dump(mode="json")


def announcement_document() -> dict:
    record = device_record()
    fields = {name: getattr(record, name) for name in DeviceAnnouncement.model_fields if hasattr(record, name)}
    return DeviceAnnouncement(**{**fields, "sent_at": RECEIVED_AT}).model_dump(mode="json")


def lifecycle_document(event_type: str, client_id: str, version: int) -> dict:
    return {
        "clientId": client_id,
        "timestamp": RECEIVED_AT_MS - 1000,
        "eventType": event_type,
        "sessionIdentifier": "00000000-0000-0000-0000-000000000000",
        "principalIdentifier": "12345678901234567890123456789012",
        "versionNumber": version,
        "ipAddress": "192.0.2.1",
    }


@st.composite
def fleet_messages(draw) -> Sent:
    """A valid status report, periodic status, announcement or lifecycle event."""
    which = draw(st.sampled_from(["status", "announce", "presence"]))
    if which == "status":
        return Sent("status_intake", rule_event(names.model_status_topic(THING), draw(status_documents())))
    if which == "announce":
        return Sent("device_registry", rule_event(names.announce_topic(THING), announcement_document()))
    event_type = draw(st.sampled_from(["connected", "disconnected"]))
    client = draw(st.sampled_from([THING, f"{THING}#2", "not-a-device"]))
    document = lifecycle_document(event_type, client, draw(st.integers(0, 2**40)))
    return Sent("device_registry", rule_event(names.presence_topic(event_type, client), document))


@st.composite
def hostile_fleet_messages(draw) -> Sent:
    which = draw(st.sampled_from(["status", "announce", "presence"]))
    if which == "status":
        handler, topic, document = "status_intake", names.model_status_topic(THING), draw(status_documents())
    elif which == "announce":
        handler, topic, document = "device_registry", names.announce_topic(THING), announcement_document()
    else:
        handler, topic = "device_registry", names.presence_topic("connected", THING)
        document = lifecycle_document("connected", THING, 1)
    if draw(st.integers(0, 9)) == 0:  # another thing's topic, or not a device topic
        topic = draw(st.sampled_from([topic.replace(THING, "gw-9"), "edgeloop/gw-line-1", "$aws/events/presence/x"]))
    return Sent(handler, rule_event(topic, draw(hostile_json_bytes(document))))


# --- raw objects (the hot path reads what ingest wrote) --------------------------------------------


def raw_batch(n: int, seq_first: int = 0) -> RawBatch:
    return RawBatch(
        thing_name=THING,
        line_id=LINE,
        seq_first=seq_first,
        seq_last=seq_first + n - 1,
        received_at_ms=RECEIVED_AT_MS,
        samples=ColumnarSamples(
            metrics=["speed"],
            metric_index=[0] * n,
            time_ms=[RECEIVED_AT_MS - 1000 * (n - i) for i in range(n)],
            values=[0.5 * i for i in range(n)],
        ),
        seq=list(range(seq_first, seq_first + n)),
    )


def raw_key(raw: RawBatch) -> str:
    batch = TelemetryBatch(
        thing_name=raw.thing_name,
        line_id=raw.line_id,
        seq_first=raw.seq_first,
        seq_last=raw.seq_last,
        samples=raw.samples,
    )
    return raw_object_key(batch, RECEIVED_AT)


def object_created(key: str) -> dict:
    return {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": DATA_BUCKET}, "object": {"key": key}},
    }


@st.composite
def raw_objects(draw) -> tuple[str, bytes, bool]:
    """(key, body, whether it is a valid raw object of that key)."""
    raw = raw_batch(draw(st.integers(1, 64)), seq_first=fresh_seq_first(draw))
    body = raw.to_gzip_json()
    kind = draw(st.sampled_from(["valid", "valid", "bytes", "json", "trail", "cut", "mutate", "other_key"]))
    key = raw_key(raw)
    if kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "json":
        body = gzip.compress(json.dumps(draw(json_values)).encode(), mtime=0)
    elif kind == "trail":
        body += draw(st.sampled_from([body, b"\x00", b"junk"]))
    elif kind == "cut":
        body = body[: position(draw, len(body))]
    elif kind == "mutate":
        mutated = bytearray(body)
        mutated[10 + position(draw, len(mutated) - 18)] ^= draw(st.integers(1, 255))
        body = bytes(mutated)
    elif kind == "other_key":
        key = raw_key(raw_batch(len(raw.seq), seq_first=raw.seq_first + 1))
    return key, body, kind == "valid"
