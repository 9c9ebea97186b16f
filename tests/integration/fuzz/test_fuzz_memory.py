"""Issue 14: the worst message each handler can be sent stays inside its Lambda's memory.

Each case runs the real handler (lambda_handler, on moto) in one fresh process whose address space
may grow by at most 512 MB past what the process holds once every handler is imported and warm
(RLIMIT_AS; an allocation beyond it raises MemoryError, which fails the test). Peak RSS is read
from VmHWM, reset before each case (/proc/self/clear_refs). The whole process's peak, with moto and
all five handlers' imports in it, must stay under the function's memory size (stack: cdk/constructs).

The cases are the largest messages the bounds let through and the bombs beyond them: the issue's
telemetry bombs in both wire formats, a full batch of 400k samples landing, the most intervals a context message may carry and 128 KB of nesting, strings
or elements in every JSON message, and a gzip bomb and the largest column a raw object may hold.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

from fuzz_cloud import ENVIRONMENT, LINE, RECEIVED_AT_MS, THING
from fuzz_messages import (
    announcement_document,
    lifecycle_document,
    raw_batch,
    raw_key,
    rule_event,
)

from edgeloop.schemas import ColumnarSamples, ContextInterval, TelemetryBatch, names
from edgeloop.schemas.bounded_json import MAX_CONTEXT_INTERVALS, MAX_DEVICE_STRING_CHARS, MAX_PAYLOAD_BYTES
from edgeloop.schemas.telemetry import MAX_BATCH_SAMPLES, MAX_DECODED_BODY_BYTES, RAW_BATCH_JSON
from edgeloop.schemas.telemetry_compact import COMPACT_MAGIC, Compression, _text_bytes, _uvarint_bytes, encode_compact

LAMBDA_MB = {"ingest": 512, "context": 1024, "status_intake": 512, "device_registry": 256, "hot_path": 512}
HEADROOM_MB = 512  # address space a case may add to the warm process

# --- the cases ---------------------------------------------------------------------------------------


def compact_body(body: bytes) -> bytes:
    return COMPACT_MAGIC + bytes([2, Compression.ZLIB]) + zlib.compress(body, 9)


def four_million_metrics() -> bytes:
    """3.9 KB of format 2 declaring 4 M metric names (once 1.19 GB and 13 s)."""
    head = _text_bytes(THING) + _text_bytes(LINE) + _uvarint_bytes(0) + _uvarint_bytes(0)
    return compact_body(head + _uvarint_bytes(4_000_000) + bytes(4_000_000))


def full_batch(value: float, n: int = MAX_BATCH_SAMPLES) -> bytes:
    """n samples (default: as many as a batch may hold) of one metric, 10 a millisecond apart,
    every value `value`."""
    samples = ColumnarSamples.model_construct(
        metrics=["screw_rpm"],
        metric_index=[0] * n,
        time_ms=[RECEIVED_AT_MS - 60_000 + i // 10 for i in range(n)],
        values=[value] * n,
    )
    batch = TelemetryBatch.model_construct(
        format_version=2, thing_name=THING, line_id=LINE, seq_first=0, seq_last=n - 1, samples=samples
    )
    return encode_compact(batch, Compression.ZLIB)


def context_intervals(n: int) -> list[dict]:
    return [
        ContextInterval(
            kind="state",
            interval_id=f"state-{i}",
            line_id=LINE,
            start=f"2026-01-01T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
            end=f"2026-01-01T{i // 60 % 24:02d}:{i % 60:02d}:30Z",
            value="running" if i % 2 else "idle",
        ).model_dump(mode="json")
        for i in range(n)
    ]


def json_bombs(size: int) -> dict[str, bytes]:
    """`size` bytes of nesting, strings, elements, one string."""
    return {
        "nesting": b"[" * (size // 2) + b"]" * (size // 2),
        "strings": b"[" + b",".join([b'"a"'] * (size // 4)) + b"]",
        "elements": b"[" + b",".join([b"[]"] * (size // 3)) + b"]",
        "one string": b'{"value": "' + b"x" * (size - 16) + b'"}',
    }


def raw_with_column(n: int) -> bytes:
    """A raw object whose values column holds `n` long floats: within RAW_BATCH_JSON, not a RawBatch."""
    head = b'{"format_version":1,"thing_name":"gw-line-1","line_id":"line-1","seq_first":0,"seq_last":0,'
    head += b'"received_at_ms":0,"samples":{"metrics":["a"],"metric_index":[],"time_ms":[],"values":['
    return gzip.compress(head + b"1234567.123456789," * (n - 1) + b'0.5]},"seq":[]}', compresslevel=1, mtime=0)


def cases() -> list[dict]:
    telemetry = names.telemetry_topic(THING)
    status = {
        "thing_name": THING,
        "deployment_id": "dep-1",
        "model_id": "m",
        "version": "1.0.0",
        "status": "rejected",
        "reason": "\u00e9" * MAX_DEVICE_STRING_CHARS,  # 6 KB escaped
        "sent_at": "2026-01-01T13:00:00Z",
    }
    limit = MAX_PAYLOAD_BYTES
    warm = [
        ("ingest", rule_event(telemetry, full_batch(21.5, 10))),
        ("context", rule_event(names.context_topic(THING), context_intervals(1))),
        ("status_intake", rule_event(names.model_status_topic(THING), status)),
        ("device_registry", rule_event(names.announce_topic(THING), announcement_document())),
    ]
    found = [
        ("ingest", "format-2 4M metrics", rule_event(telemetry, four_million_metrics())),
        ("ingest", "format-1 64 MiB of JSON", rule_event(telemetry, zlib.compress(b"[" + b"0.5," * 2**24 + b"1]", 9))),
        (
            "ingest",
            "format-1 16 MiB of nesting",
            rule_event(
                telemetry, zlib.compress(b"[" * (MAX_DECODED_BODY_BYTES // 2) + b"]" * (MAX_DECODED_BODY_BYTES // 2), 9)
            ),
        ),
        ("ingest", "format-2 400k samples land", rule_event(telemetry, full_batch(21.5))),
        # every sample refused: at most MAX_SAMPLE_REASONS listed, the rest counted
        ("ingest", "format-2 400k NaN samples refused", rule_event(telemetry, full_batch(float("nan")))),
        (
            "context",
            f"{MAX_CONTEXT_INTERVALS} intervals land",
            rule_event(names.context_topic(THING), context_intervals(MAX_CONTEXT_INTERVALS)),
        ),
        ("status_intake", "1000-character reason", rule_event(names.model_status_topic(THING), status)),
        ("device_registry", "announcement", rule_event(names.announce_topic(THING), announcement_document())),
        (
            "device_registry",
            "lifecycle event",
            rule_event(names.presence_topic("connected", THING), lifecycle_document("connected", THING, 1)),
        ),
    ]
    topics = {
        "context": names.context_topic(THING),
        "status_intake": names.model_status_topic(THING),
        "device_registry": names.announce_topic(THING),
    }
    for handler, topic in topics.items():
        for name, payload in json_bombs(limit).items():
            found.append((handler, f"128 KB of {name}", rule_event(topic, payload)))
    found.append(
        (
            "device_registry",
            "lifecycle 128 KB of nesting",
            rule_event(names.presence_topic("connected", THING), json_bombs(limit)["nesting"]),
        )
    )
    return [{"handler": h, "name": "warm-up", "event": e, "warm": True} for h, e in warm] + [
        {"handler": h, "name": n, "event": e} for h, n, e in found
    ]


def raw_cases() -> list[dict]:
    """Hot path: (name, key, body) put in the data bucket, then announced."""
    bomb = gzip.compress(b" " * (RAW_BATCH_JSON.max_bytes + 1), compresslevel=1, mtime=0)
    column = raw_with_column(RAW_BATCH_JSON.max_elements - 100)
    valid = raw_batch(5_000, seq_first=10**12)
    small = raw_batch(10, seq_first=10**13)
    found = [
        ("warm-up", small.to_gzip_json()),
        ("gzip bomb", bomb),
        ("2M floats in one column", column),
        ("5000 samples land", valid.to_gzip_json()),
    ]
    keys = [raw_key(small), raw_key(raw_batch(1, seq_first=1)), raw_key(raw_batch(1, seq_first=2)), raw_key(valid)]
    return [
        {
            "handler": "hot_path",
            "name": name,
            "key": key,
            "body": base64.b64encode(body).decode(),
            "warm": name == "warm-up",
        }
        for key, (name, body) in zip(keys, found)
    ]


# --- the processes they run in ----------------------------------------------------------------------

# One process per handler, as one Lambda container: moto, the handler's imports, one warm-up call,
# then RLIMIT_AS at the warm address space + HEADROOM_MB and each case with VmHWM reset before it.
_RUNNER = textwrap.dedent(
    """
    import base64, gc, importlib, json, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    from moto import mock_aws
    import fuzz_cloud

    handler_name, cases = sys.argv[4], json.load(open(sys.argv[2]))
    handler = importlib.import_module(f"edgeloop.functions.{handler_name}.handler")

    def status(field):
        return int(next(l for l in open("/proc/self/status") if l.startswith(field + ":")).split()[1]) // 1024

    results = []
    with mock_aws():
        s3 = fuzz_cloud.create_cloud()
        for case in cases:
            if "key" in case:  # the hot path reads a raw object; the event announces it
                s3.put_object(Bucket=fuzz_cloud.DATA_BUCKET, Key=case["key"], Body=base64.b64decode(case.pop("body")))
                case["event"] = {"source": "aws.s3", "detail-type": "Object Created",
                                 "detail": {"bucket": {"name": fuzz_cloud.DATA_BUCKET}, "object": {"key": case["key"]}}}
        for case in cases:  # warm: imports, clients and caches are the container's, not a message's
            if case.get("warm"):
                handler.lambda_handler(case["event"], None)
        cases = [case for case in cases if not case.get("warm")]
        gc.collect()
        limit = (status("VmSize") + int(sys.argv[3])) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        for case in cases:
            print("case:", case["name"], file=sys.stderr, flush=True)
            gc.collect()
            open("/proc/self/clear_refs", "w").write("5")
            before = status("VmRSS")
            start = time.perf_counter()
            handler.lambda_handler(case["event"], None)
            seconds = time.perf_counter() - start
            peak = status("VmHWM")
            results.append({"handler": handler_name, "name": case["name"], "peak_mb": peak,
                            "growth_mb": peak - before, "seconds": round(seconds, 3)})
    print("RESULTS " + json.dumps(results))
    """
)


def test_the_worst_messages_stay_inside_each_lambdas_memory(tmp_path):
    sent = cases() + raw_cases()
    environment = {
        **os.environ,
        **ENVIRONMENT,
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "CRITICAL",
    }
    processes = {}
    for handler in LAMBDA_MB:
        path = tmp_path / f"{handler}.json"
        path.write_text(json.dumps([case for case in sent if case["handler"] == handler]))
        args = [sys.executable, "-c", _RUNNER, str(Path(__file__).parent), str(path), str(HEADROOM_MB), handler]
        processes[handler] = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
        )
    results = []
    for handler, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"{handler}: {stderr[-3000:]}"
        (line,) = [line for line in stdout.splitlines() if line.startswith("RESULTS ")]
        results += json.loads(line.removeprefix("RESULTS "))
    for result in results:
        print(
            f"{result['handler']:>15} {result['name']:<32} peak {result['peak_mb']:>4} MB "
            f"(+{result['growth_mb']:>3} MB) in {result['seconds']:.2f} s"
        )
    assert sorted(r["name"] for r in results) == sorted(case["name"] for case in sent if not case.get("warm"))
    over = [r for r in results if r["peak_mb"] >= LAMBDA_MB[r["handler"]]]
    assert over == [], over
