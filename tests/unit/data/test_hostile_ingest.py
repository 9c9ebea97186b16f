"""Issue 14, items 1-6: hostile telemetry is refused with a reason, bounded, and isolated.

- sequence numbers outside int64 (the curated `seq` column) are refused at ingest, and a raw
  object compaction cannot convert is moved aside while every other line's data is compacted;
- deeply nested JSON, memory bombs of both wire formats and data after the compressed stream are
  refused before they cost memory (the bombs under a 512 MB address-space limit, in a subprocess);
- mistyped samples ("1.5", true, "0") are refused, not coerced, and a "NaN" string refuses only
  its sample.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import textwrap
import zlib
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_messages import LINE, LINES, RECEIVED_AT_MS, THING, USE_CASE, batch_doc, event_of, wire

from edgeloop.cloud.datalake.curated import read_curated
from edgeloop.cloud.datalake.packs import get_examples
from edgeloop.cloud.line_directory import StaticLineDirectory
from edgeloop.functions.compaction.logic import compact, marker_key
from edgeloop.functions.context import handler as context_handler
from edgeloop.functions.ingest.data_access import S3IngestStore
from edgeloop.functions.ingest.logic import IngestResult, ingest_event
from edgeloop.functions.metric_packer import handler as packer_handler
from edgeloop.functions.rollups.logic import build_line_rollups
from edgeloop.schemas import (
    ContextInterval,
    ContextKind,
    IotRuleEvent,
    QuarantineRecord,
    SpecLimits,
    TelemetryBatch,
    names,
)
from edgeloop.schemas.raw_batch import RawBatch
from edgeloop.schemas.telemetry import (
    COMPACT_FORMAT_VERSION,
    INT64_MAX,
    MAX_BATCH_METRICS,
    MAX_DECODED_BODY_BYTES,
    MAX_JSON_CONTAINERS,
    MAX_JSON_DEPTH,
    MAX_JSON_ELEMENTS,
    MAX_PAYLOAD_BYTES,
    ColumnarSamples,
    TelemetryDecodeError,
)
from edgeloop.schemas.telemetry_codec import check_json_shape
from edgeloop.schemas.telemetry_compact import COMPACT_MAGIC, Compression, _text_bytes, _uvarint_bytes, encode_compact

BUCKET = "edgeloop-hostile-test"


def ingest(payload: bytes, *, lines=LINES) -> IngestResult:
    return ingest_event(event_of(payload), use_case=USE_CASE, store=S3IngestStore(BUCKET), lines=lines)


def read(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def keys(s3, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def refused_message(s3, payload: bytes) -> QuarantineRecord:
    result = ingest(payload)
    assert result.raw_key is None and result.landed_samples == 0, result
    assert keys(s3, "raw/") == []
    return QuarantineRecord.model_validate_json(read(s3, result.quarantine_key))


def refused_samples(s3, payload: bytes) -> tuple[RawBatch, dict[str, str]]:
    """A mixed batch: what landed, and {field: value} of the quarantined samples."""
    result = ingest(payload)
    assert result.raw_key is not None and result.quarantine_key is not None, result
    raw = RawBatch.from_gzip_json(read(s3, result.raw_key))
    record = QuarantineRecord.model_validate_json(read(s3, result.quarantine_key))
    assert result.quarantined_samples == len(record.reasons)
    return raw, {r.field: r.value for r in record.reasons}


def compact_payload(batch: TelemetryBatch, compression=Compression.ZLIB) -> bytes:
    return encode_compact(batch, compression)


def batch_of(doc: dict) -> TelemetryBatch:
    return TelemetryBatch.model_construct(**{**doc, "samples": ColumnarSamples.model_construct(**doc["samples"])})


# --- 1. sequence numbers in the stored type ------------------------------------------------------


@pytest.mark.parametrize("fmt", [1, 2])
def test_sequence_numbers_beyond_int64_are_refused_at_ingest(s3, fmt):
    doc = batch_doc(4, seq_first=2**63)
    payload = wire(doc) if fmt == 1 else compact_payload(batch_of(doc))
    reasons = {r.field: r for r in refused_message(s3, payload).reasons}
    assert reasons["seq_first"].value == str(2**63)
    assert "less than or equal to 9223372036854775807" in reasons["seq_first"].error


def test_sequence_numbers_up_to_int64_max_land(s3):
    doc = batch_doc(4, seq_first=INT64_MAX - 3)
    result = ingest(wire(doc))
    assert result.landed_samples == 4 and result.quarantine_key is None


def poisoned_raw(thing: str, line: str, seq: int, time_ms: int = RECEIVED_AT_MS) -> tuple[str, bytes]:
    """A raw object as if written straight into raw/ (not through ingest)."""
    doc = {
        "format_version": 1,
        "thing_name": thing,
        "line_id": line,
        "seq_first": seq,
        "seq_last": seq,
        "received_at_ms": RECEIVED_AT_MS,
        "samples": {"metrics": ["speed"], "metric_index": [0], "time_ms": [time_ms], "values": [1.0]},
        "seq": [seq],
    }
    key = f"raw/ingest_date=2026-01-01/hour=13/thing={thing}/{0:020d}-{0:020d}.json.gz"
    return key, gzip.compress(json.dumps(doc).encode(), mtime=0)


def plant_poison(s3) -> tuple[str, str, str, bytes]:
    """Line-1's three poisoned raw objects, straight into raw/: a sequence number of 2^63, bytes that
    are not gzip, and a time in int64 that has no date. Returns (poison, garbage, undatable) keys and
    the 2^63 object's body. Sorted, the line-1 keys fall before and after gw-line-2's."""
    poison_key, poison = poisoned_raw(THING, LINE, 2**63)
    s3.put_object(Bucket=BUCKET, Key=poison_key, Body=poison)
    garbage_key = poison_key.replace(f"thing={THING}", "thing=gw-garbage")
    s3.put_object(Bucket=BUCKET, Key=garbage_key, Body=b"not gzip at all")
    undatable_key, undatable = poisoned_raw("gw-undatable", LINE, 5, time_ms=2**62)  # int64, but no date
    undatable_key = undatable_key.replace(f"thing={THING}", "thing=gw-undatable")
    s3.put_object(Bucket=BUCKET, Key=undatable_key, Body=undatable)
    return poison_key, garbage_key, undatable_key, poison


def test_a_poisoned_raw_object_does_not_stop_another_lines_compaction(s3):
    good = ingest_event(
        event_of(wire(batch_doc(6, thing="gw-line-2", line_id="line-2")), thing="gw-line-2"),
        use_case=USE_CASE,
        store=S3IngestStore(BUCKET),
        lines=StaticLineDirectory({"gw-line-2": "line-2"}),
    )
    assert good.landed_samples == 6
    poison_key, garbage_key, undatable_key, poison = plant_poison(s3)

    result = compact(BUCKET)

    assert len(read_curated(BUCKET, "line-2")) == 6 and result.line_ids == ["line-2"]
    assert build_line_rollups(BUCKET, "line-2").samples == 6  # and on to the rollups of that line
    assert len(read_curated(BUCKET, LINE)) == 0
    assert len(result.quarantined_keys) == 3
    records = [QuarantineRecord.model_validate_json(read(s3, k)) for k in result.quarantined_keys]
    by_source = {r.source: r for r in records}
    assert base64.b64decode(by_source[poison_key].payload_b64) == poison  # kept as stored
    assert any(r.field.startswith("seq") and r.value == str(2**63) for r in by_source[poison_key].reasons)
    assert "cannot be compacted" in by_source[garbage_key].reasons[0].error
    assert "cannot be compacted" in by_source[undatable_key].reasons[0].error
    # the run is marked done for every object, the poisoned ones included: the next run skips them
    assert {marker_key(k) for k in (poison_key, garbage_key, undatable_key, good.raw_key)} <= set(keys(s3, "_state/"))
    assert compact(BUCKET).raw_objects == 0


# A 1 Hz line of every extrusion metric long enough for packs: a pack needs pack_window_s + horizon_s
# + label_window_s (300 + 300 + 30 s) inside its run; starts step by example_stride_s (30 s).
PACKED_LINE, PACKED_THING, PACKED_SECONDS = "line-2", "gw-line-2", 720
PACKED_START_MS = RECEIVED_AT_MS - PACKED_SECONDS * 1000
PACK_SPAN_S = USE_CASE.pack_window_s + USE_CASE.horizon_s + USE_CASE.label_window_s
EXPECTED_PACKS = (PACKED_SECONDS - PACK_SPAN_S) // USE_CASE.example_stride_s + 1  # starts 0, 30, 60, 90 s
TARGET_VALUE = 5.0


def packed_line_batch() -> bytes:
    """Every metric of the use case once a second for PACKED_SECONDS, received as the last one is sent."""
    metrics = USE_CASE.metrics
    n = len(metrics) * PACKED_SECONDS
    doc = batch_doc(n, seq_first=0, thing=PACKED_THING, line_id=PACKED_LINE, metrics=metrics)
    doc["samples"]["time_ms"] = [PACKED_START_MS + 1000 * (i // len(metrics)) for i in range(n)]
    doc["samples"]["values"] = [
        TARGET_VALUE if metrics[i % len(metrics)] == USE_CASE.target_metric else 100.0 + i // len(metrics)
        for i in range(n)
    ]
    return wire(doc)


def run_context(thing: str, line_id: str) -> dict:
    """A run with spec limits over the packed span, sent as the gateway sends context: the context
    function's IoT rule event (the thing registered with its line, as `edgeloop gateway provision` does)."""
    boto3.client("iot").create_thing(
        thingName=thing, attributePayload={"attributes": {names.GATEWAY_LINE_ATTRIBUTE: line_id}}
    )
    start = datetime.fromtimestamp(PACKED_START_MS / 1000, tz=UTC)
    interval = ContextInterval(
        kind=ContextKind.RUN,
        interval_id=f"run-{line_id}",
        line_id=line_id,
        start=start,
        end=start + timedelta(seconds=PACKED_SECONDS),
        value="cable-a",
        spec=SpecLimits(target_metric=USE_CASE.target_metric, lower=4.9, upper=5.1),
    )
    body = json.dumps([interval.model_dump(mode="json")]).encode()
    return IotRuleEvent.from_message(names.context_topic(thing), body, RECEIVED_AT_MS).model_dump(mode="json")


@pytest.fixture()
def handlers():
    """The context and metric packer handlers with settings read from this test's environment
    (EDGELOOP_USE_CASE=extrusion, the data bucket: the s3 fixture), not a previous test's."""
    for handler in (context_handler, packer_handler):
        handler._settings.cache_clear()
    yield context_handler, packer_handler
    for handler in (context_handler, packer_handler):
        handler._settings.cache_clear()


def test_a_poisoned_device_does_not_stop_another_lines_curated_rollups_and_packs(s3, handlers):
    context, packer = handlers
    good = ingest_event(
        event_of(packed_line_batch(), thing=PACKED_THING),
        use_case=USE_CASE,
        store=S3IngestStore(BUCKET),
        lines=StaticLineDirectory({PACKED_THING: PACKED_LINE}),
    )
    n = len(USE_CASE.metrics) * PACKED_SECONDS
    assert good.landed_samples == n and good.quarantine_key is None
    for thing, line_id in ((PACKED_THING, PACKED_LINE), (THING, LINE)):  # both lines have a run to pack
        assert context.lambda_handler(run_context(thing, line_id), None)["accepted"] == 1
    poisoned = plant_poison(s3)[:3]

    compacted = compact(BUCKET)

    # curated/: line-2 whole, line-1 nothing, its three objects in quarantine and marked done
    assert compacted.line_ids == [PACKED_LINE] and compacted.rows_written == n
    assert len(read_curated(BUCKET, PACKED_LINE)) == n and len(read_curated(BUCKET, LINE)) == 0
    assert all(k.startswith(f"{names.QUARANTINE_PREFIX}/") for k in compacted.quarantined_keys)
    records = [QuarantineRecord.model_validate_json(read(s3, k)) for k in compacted.quarantined_keys]
    assert sorted(r.source for r in records) == sorted(poisoned)
    assert {marker_key(k) for k in (*poisoned, good.raw_key)} <= set(keys(s3, "_state/"))
    # rollups of line-2
    assert build_line_rollups(BUCKET, PACKED_LINE).samples == n
    # packs: the metric packer on the compaction result, as the pipeline passes it on
    packed = packer.lambda_handler({"partitions": compacted.partitions}, None)
    assert packed["examples_per_line"] == {PACKED_LINE: EXPECTED_PACKS}
    examples = get_examples(BUCKET, PACKED_LINE)
    assert len(examples) == EXPECTED_PACKS >= 1
    assert (examples["line_id"] == PACKED_LINE).all() and (examples["run_id"] == f"run-{PACKED_LINE}").all()
    assert (examples["label"] == TARGET_VALUE).all() and set(examples["label_class"]) == {"in_range"}
    # line-1 has its run but no data: asked for directly, the packer builds it no pack
    assert packer.lambda_handler({"line_id": LINE}, None)["examples_per_line"] == {LINE: 0}
    assert get_examples(BUCKET, LINE).empty


# --- 2. nesting depth ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "error"),
    [
        (MAX_JSON_DEPTH + 1, f"deeper than {MAX_JSON_DEPTH} levels"),
        (MAX_JSON_CONTAINERS + 1, f"exceed {MAX_JSON_CONTAINERS} (MAX_JSON_CONTAINERS)"),
        (100_000, f"exceed {MAX_JSON_CONTAINERS} (MAX_JSON_CONTAINERS)"),  # 445 bytes crashed ingest
    ],
)
def test_deeply_nested_json_is_quarantined(s3, depth, error):
    payload = zlib.compress(b"[" * depth + b"]" * depth, 9)
    (reason,) = refused_message(s3, payload).reasons
    assert reason.field == "<payload>" and error in reason.error


def test_deep_nesting_inside_a_batch_field_is_quarantined(s3):
    nest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    text = json.dumps(batch_doc()).replace('"seq_first": 100', '"seq_first": ' + nest)
    (reason,) = refused_message(s3, zlib.compress(text.encode())).reasons
    assert "deeper than" in reason.error


def test_brackets_inside_strings_do_not_count_as_nesting():
    check_json_shape(b'{"a": "' + b"[" * 50 + b'", "b": "\\"' + b"{" * 50 + b'"}', "<payload>")
    with pytest.raises(TelemetryDecodeError, match="deeper"):
        check_json_shape(b'{"a": "\\\\"' + b"[" * 10 + b"]" * 10 + b"}", "<payload>")


# --- 4. data after the compressed stream ---------------------------------------------------------


@pytest.mark.parametrize("tail", [zlib.compress(b'{"x": 1}'), b"\x00", b"trailing"])
def test_format_1_data_after_the_zlib_stream_is_refused(s3, tail):
    (reason,) = refused_message(s3, wire(batch_doc()) + tail).reasons
    assert reason.field == "<payload>" and f"{len(tail)} bytes follow the zlib stream" in reason.error


@pytest.mark.parametrize("compression", [Compression.ZLIB, Compression.XZ])
def test_format_2_data_after_the_compressed_stream_is_refused(s3, compression):
    payload = compact_payload(batch_of(batch_doc()), compression)
    second = payload[6:]  # the same body again: a second stream
    (reason,) = refused_message(s3, payload + second).reasons
    assert reason.field == "body" and "follow the" in reason.error


# --- 5, 6. strict types, one bad sample refuses only itself --------------------------------------


@pytest.mark.parametrize(
    ("column", "bad"),
    [("values", "1.5"), ("values", True), ("values", "NaN"), ("metric_index", "0"), ("metric_index", True)],
)
def test_a_mistyped_sample_is_refused_alone_not_coerced(s3, column, bad):
    doc = batch_doc(6)
    doc["samples"][column][2] = bad
    raw, reasons = refused_samples(s3, wire(doc))
    assert raw.seq == [100, 101, 103, 104, 105]  # the good samples of the batch landed
    assert reasons == {f"samples.{column}[2]": repr(bad)}


def test_a_time_beyond_int64_refuses_only_its_sample(s3):
    doc = batch_doc(4)
    doc["samples"]["time_ms"][1] = 2**64
    raw, reasons = refused_samples(s3, wire(doc))
    assert raw.seq == [100, 102, 103] and list(reasons) == ["samples.time_ms[1]"]


# --- 3. memory bombs, under the Lambda's memory --------------------------------------------------


def compact_body(body: bytes) -> bytes:
    return COMPACT_MAGIC + bytes([COMPACT_FORMAT_VERSION, Compression.ZLIB]) + zlib.compress(body, 9)


def million_metrics() -> bytes:
    """3.9 KB declaring 4 M (empty) metric names: once 1.19 GB and 13 s."""
    head = _text_bytes(THING) + _text_bytes(LINE) + _uvarint_bytes(0) + _uvarint_bytes(0)
    return compact_body(head + _uvarint_bytes(4_000_000) + bytes(4_000_000))


def declared_samples() -> bytes:
    """400 k samples declared, 1.2 MB of zero body: more than the body could hold once decoded."""
    head = _text_bytes(THING) + _text_bytes(LINE) + _uvarint_bytes(0) + _uvarint_bytes(400_000)
    return compact_body(head + _uvarint_bytes(1) + _text_bytes("speed") + bytes(600_000))


def json_floats(size: int) -> bytes:
    """A format-1 document whose values column is `size` bytes of floats."""
    head = b'{"thing_name": "gw-line-1", "samples": {"values": ['
    return zlib.compress(head + b"0.5," * (size // 4) + b"0.5]}}", 9)


BOMBS = {
    "format-2 4M metrics": (million_metrics, "n_metrics", f"exceeds {MAX_BATCH_METRICS} metrics"),
    "format-2 declared samples": (declared_samples, "n_samples", "are left in the body"),
    "format-1 64 MiB of JSON": (lambda: json_floats(64 * 2**20 - 1024), "<payload>", "inflate beyond"),
    "format-1 JSON elements": (
        lambda: json_floats(MAX_DECODED_BODY_BYTES - 100),
        "<payload>",
        f"exceed {MAX_JSON_ELEMENTS}",
    ),
    "format-1 [] elements": (
        lambda: zlib.compress(b"[" + b"[]," * (MAX_DECODED_BODY_BYTES // 3 - 1) + b"[]]", 9),
        "<payload>",
        f"exceed {MAX_JSON_ELEMENTS}",
    ),
    "format-1 nesting": (
        lambda: zlib.compress(b"[" * (MAX_DECODED_BODY_BYTES // 2) + b"]" * (MAX_DECODED_BODY_BYTES // 2), 9),
        "<payload>",
        "MAX_JSON_CONTAINERS",
    ),
    "format-1 strings": (
        lambda: zlib.compress(b'"a",' * (MAX_DECODED_BODY_BYTES // 4), 9),
        "<payload>",
        "MAX_JSON_STRINGS",
    ),
}

# Runs ingest's logic (what the handler calls) in a fresh process limited to the Lambda's 512 MB.
_UNDER_LIMIT = textwrap.dedent(
    """
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (512 * 2**20, 512 * 2**20))
    from edgeloop.cloud.line_directory import StaticLineDirectory
    from edgeloop.functions.ingest.logic import ingest_event
    from edgeloop.schemas import IotRuleEvent, QuarantineRecord, load_use_case, names

    class Store:
        def __init__(self):
            self.raw, self.quarantine = {}, {}
        def put_raw_if_absent(self, key, body):
            self.raw[key] = body
            return True
        def put_quarantine(self, key, body):
            self.quarantine[key] = body

    payload = open(sys.argv[1], "rb").read()
    thing, line, received = sys.argv[2], sys.argv[3], int(sys.argv[4])
    event = IotRuleEvent.from_message(names.telemetry_topic(thing), payload, received)
    store = Store()
    start = time.perf_counter()
    result = ingest_event(
        event, use_case=load_use_case("extrusion"), store=store, lines=StaticLineDirectory({thing: line})
    )
    seconds = time.perf_counter() - start
    reasons = [r.model_dump() for body in store.quarantine.values() for r in QuarantineRecord.model_validate_json(body).reasons]
    # VmHWM: this process's peak RSS (ru_maxrss would carry over the forking pytest's across exec)
    peak_kb = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
    print(json.dumps({"landed": result.landed_samples, "reasons": reasons, "seconds": seconds, "peak_kb": peak_kb}))
    """
)


def ingest_under_512_mb(tmp_path, payload: bytes) -> dict:
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    args = [sys.executable, "-c", _UNDER_LIMIT, str(path), THING, LINE, str(RECEIVED_AT_MS)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_is_refused_with_a_reason_under_512_mb(tmp_path, name):
    make, field, error = BOMBS[name]
    payload = make()
    assert len(payload) <= MAX_PAYLOAD_BYTES
    outcome = ingest_under_512_mb(tmp_path, payload)
    print(f"{name}: {len(payload)} bytes refused in {outcome['seconds']:.3f} s, peak RSS {outcome['peak_kb']} kB")
    assert outcome["landed"] == 0
    (reason,) = outcome["reasons"]
    assert reason["field"] == field and error in reason["error"], reason


def test_a_full_batch_at_the_sample_limit_lands_under_512_mb(tmp_path):
    from edgeloop.schemas.telemetry import MAX_BATCH_SAMPLES

    n = MAX_BATCH_SAMPLES
    doc = batch_doc(n, age_ms=60_000)
    doc["samples"]["time_ms"] = [RECEIVED_AT_MS - 60_000 + i // 10 for i in range(n)]
    doc["samples"]["values"] = [round(20.0 + (i % 997) * 0.013, 3) for i in range(n)]
    outcome = ingest_under_512_mb(tmp_path, compact_payload(batch_of(doc)))
    print(f"{n} samples landed in {outcome['seconds']:.3f} s, peak RSS {outcome['peak_kb']} kB")
    assert outcome["landed"] == n and outcome["reasons"] == []


# --- fuzz: no input raises, every refusal carries a reason ---------------------------------------


class MemoryStore:
    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}
        self.quarantine: dict[str, bytes] = {}

    def put_raw_if_absent(self, key: str, body: bytes) -> bool:
        return self.raw.setdefault(key, body) is body

    def put_quarantine(self, key: str, body: bytes) -> None:
        self.quarantine[key] = body


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
_VALID = [wire(batch_doc(6)), compact_payload(batch_of(batch_doc(6)))]


@st.composite
def hostile_payloads(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "field", "mutated"]))
    if kind == "bytes":
        return draw(st.sampled_from([b"", b"x\x9c", COMPACT_MAGIC + b"\x02\x01"])) + draw(st.binary(max_size=300))
    if kind == "json":
        return zlib.compress(json.dumps(draw(_json)).encode())
    if kind == "field":  # one field of a valid batch replaced by any JSON value
        doc = batch_doc(4)
        path = draw(st.sampled_from([(), ("samples",)]))
        target = doc["samples"] if path else doc
        target[draw(st.sampled_from(sorted(target)))] = draw(_json)
        return zlib.compress(json.dumps(doc).encode())
    payload = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 4))):
        payload[draw(st.integers(0, len(payload) - 1))] = draw(st.integers(0, 255))
    return bytes(payload[: draw(st.integers(1, len(payload)))])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=hostile_payloads())
def test_fuzzed_payloads_never_raise_and_every_refusal_has_a_reason(payload):
    store = MemoryStore()
    result = ingest_event(event_of(payload), use_case=USE_CASE, store=store, lines=LINES)
    assert result.raw_key is not None or result.quarantine_key is not None
    for body in store.quarantine.values():
        record = QuarantineRecord.model_validate_json(body)  # at least one reason, by its schema
        assert all(r.field and r.error for r in record.reasons)
    for body in store.raw.values():
        RawBatch.from_gzip_json(body)  # what landed is a valid raw object
