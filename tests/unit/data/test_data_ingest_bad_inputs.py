"""Issue 4's acceptance list for ingest, one test per bad input.

Each bad input yields a quarantine record whose reason names field, value and error; a sample-level
fault refuses only its samples, and the rest of a mixed batch is read back from raw/. Duplicate
deliveries (3 in a row, 3 at once) land once.
"""

from __future__ import annotations

import base64
import threading
import zlib

import boto3
import ingest_messages
import pytest
from botocore.exceptions import ClientError
from ingest_messages import LINE, LINES, RECEIVED_AT_MS, THING, USE_CASE, event_of, wire

from edgeloop.cloud.datalake.sample_validation import DAY_MS, FUTURE_TOLERANCE_MS
from edgeloop.cloud.line_directory import LINE_TTL_S, MISSING_TTL_S, IotLineDirectory, StaticLineDirectory
from edgeloop.functions.ingest.data_access import S3IngestStore
from edgeloop.functions.ingest.logic import IngestResult, ingest_event
from edgeloop.functions.ingest.settings import Settings
from edgeloop.provisioning import ProvisioningRequest
from edgeloop.schemas import QuarantineRecord, TelemetryBatch, names
from edgeloop.schemas.raw_batch import RawBatch
from edgeloop.schemas.telemetry import (
    COMPACT_FORMAT_VERSION,
    MAX_BATCH_SAMPLES,
    MAX_DECODED_BODY_BYTES,
    MAX_PAYLOAD_BYTES,
    ColumnarSamples,
)
from edgeloop.schemas.telemetry_compact import COMPACT_MAGIC, Compression, encode_compact

BUCKET = "edgeloop-bad-inputs-test"
SLA_DAYS = names.DEFAULT_LATENESS_SLA_DAYS


def batch_doc(n: int = 6, **fields) -> dict:
    return ingest_messages.batch_doc(n, age_ms=60_000, **fields)


def ingest(payload: bytes, *, lines=LINES, store=None, **kwargs) -> IngestResult:
    store = store or S3IngestStore(BUCKET)
    return ingest_event(event_of(payload), use_case=USE_CASE, store=store, lines=lines, **kwargs)


def read_object(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def refused_message(s3, payload: bytes, **kwargs) -> QuarantineRecord:
    """Ingest a payload that must be refused as a whole; its quarantine record (payload kept as sent)."""
    result = ingest(payload, **kwargs)
    assert result.raw_key is None and result.landed_samples == 0, result
    assert keys(s3, "raw/") == []
    record = QuarantineRecord.model_validate_json(read_object(s3, result.quarantine_key))
    assert base64.b64decode(record.payload_b64) == payload
    return record


def refused_samples(s3, payload: bytes, **kwargs) -> tuple[RawBatch, QuarantineRecord]:
    """Ingest a mixed batch: what landed in raw/ (read back) and the quarantine record of the rest."""
    result = ingest(payload, **kwargs)
    assert result.raw_key is not None and result.quarantine_key is not None, result
    raw = RawBatch.from_gzip_json(read_object(s3, result.raw_key))
    record = QuarantineRecord.model_validate_json(read_object(s3, result.quarantine_key))
    assert result.landed_samples == len(raw.seq) and result.quarantined_samples == len(record.reasons)
    return raw, record


def good_samples_of(doc: dict, refused: set[int]) -> list[tuple[int, str, int, float]]:
    """(seq, metric, time_ms, value) of every sample of `doc` not in `refused`."""
    samples = doc["samples"]
    return [
        (
            doc["seq_first"] + i,
            samples["metrics"][samples["metric_index"][i]],
            samples["time_ms"][i],
            samples["values"][i],
        )
        for i in range(len(samples["values"]))
        if i not in refused
    ]


def landed_samples(raw: RawBatch) -> list[tuple[int, str, int, float]]:
    s = raw.samples
    return [(seq, s.metrics[m], t, v) for seq, m, t, v in zip(raw.seq, s.metric_index, s.time_ms, s.values)]


def reasons_of(record: QuarantineRecord) -> list[tuple[str, str]]:
    return [(r.field, r.value) for r in record.reasons]


# --- malformed JSON, wrong types, missing fields ------------------------------------------------


def test_malformed_json_is_quarantined(s3):
    record = refused_message(s3, zlib.compress(b'{"thing_name": "gw-line-1", '))
    (reason,) = record.reasons
    assert (reason.field, reason.value) == ("<payload>", repr('{"thing_name": "gw-line-1", '))
    assert "not JSON" in reason.error


def test_json_that_is_not_an_object_is_quarantined(s3):
    (reason,) = refused_message(s3, zlib.compress(b"[1, 2, 3]")).reasons
    assert reason.field == "<payload>" and "JSON list, not an object" in reason.error


def test_wrong_type_of_a_batch_field_refuses_the_message(s3):
    doc = batch_doc()
    doc["seq_first"] = "one hundred"
    reasons = {r.field: r for r in refused_message(s3, wire(doc)).reasons}
    assert reasons["seq_first"].value == "'one hundred'"
    assert "valid integer" in reasons["seq_first"].error


def test_wrong_type_of_a_sample_refuses_only_that_sample(s3):
    doc = batch_doc()
    doc["samples"]["values"][1] = "warm"
    doc["samples"]["time_ms"][4] = "yesterday"
    raw, record = refused_samples(s3, wire(doc))

    assert landed_samples(raw) == good_samples_of(doc, {1, 4})
    reasons = {r.field: r for r in record.reasons}
    assert reasons["samples.values[1]"].value == "'warm'" and "valid number" in reasons["samples.values[1]"].error
    assert reasons["samples.time_ms[4]"].value == "'yesterday'"
    assert "valid integer" in reasons["samples.time_ms[4]"].error


def test_missing_batch_field_refuses_the_message(s3):
    doc = batch_doc()
    del doc["line_id"]
    (reason,) = refused_message(s3, wire(doc)).reasons
    assert (reason.field, reason.error) == ("line_id", "Field required")
    assert "thing_name" in reason.value  # the batch it is missing from


def test_missing_sample_column_refuses_the_message(s3):
    doc = batch_doc()
    del doc["samples"]["time_ms"]
    reasons = refused_message(s3, wire(doc)).reasons
    assert [(r.field, r.error) for r in reasons] == [("samples.time_ms", "Field required")]


# --- oversized ---------------------------------------------------------------------------------


def test_payload_over_the_iot_core_limit_is_quarantined(s3):
    payload = wire(batch_doc()) + bytes(MAX_PAYLOAD_BYTES)
    (reason,) = refused_message(s3, payload).reasons
    assert (reason.field, reason.value) == ("<payload>", repr(f"{len(payload)} bytes"))
    assert f"message limit of {MAX_PAYLOAD_BYTES} bytes" in reason.error


def test_payload_at_the_iot_core_limit_is_not_refused_for_its_size(s3):
    (reason,) = refused_message(s3, bytes(MAX_PAYLOAD_BYTES)).reasons
    assert reason.field == "<payload>" and "not zlib-compressed" in reason.error  # read, and found not to be zlib


def test_format_1_zlib_bomb_is_quarantined_naming_its_size(s3):
    bomb = zlib.compress(b"{" + b" " * (MAX_DECODED_BODY_BYTES + 1), 9)  # ~65 KB that inflate to 64 MiB
    assert len(bomb) <= MAX_PAYLOAD_BYTES
    (reason,) = refused_message(s3, bomb).reasons
    assert (reason.field, reason.value) == ("<payload>", repr(f"{len(bomb)} zlib bytes"))
    assert f"beyond {MAX_DECODED_BODY_BYTES} bytes" in reason.error


def test_format_2_zlib_bomb_is_quarantined(s3):
    body = zlib.compress(bytes(MAX_DECODED_BODY_BYTES + 1), 9)
    payload = COMPACT_MAGIC + bytes([COMPACT_FORMAT_VERSION, Compression.ZLIB]) + body
    assert len(payload) <= MAX_PAYLOAD_BYTES
    (reason,) = refused_message(s3, payload).reasons
    assert (reason.field, reason.value) == ("body", repr(f"{len(body)} zlib bytes"))
    assert f"inflate beyond {MAX_DECODED_BODY_BYTES} bytes, the limit" in reason.error


def constant_batch(n: int, version: int) -> TelemetryBatch:
    """n identical samples: compresses to almost nothing, so only the sample count is absurd."""
    return TelemetryBatch.model_construct(
        format_version=version,
        thing_name=THING,
        line_id=LINE,
        seq_first=0,
        seq_last=n - 1,
        samples=ColumnarSamples.model_construct(
            metrics=["speed"], metric_index=[0] * n, time_ms=[RECEIVED_AT_MS] * n, values=[1.0] * n
        ),
    )


# Uncompressed, a sample takes at least 3 body bytes, so 128 KB cannot declare an absurd count
# (the decoder itself refuses a count beyond the body's length).
@pytest.mark.parametrize("compression", [Compression.ZLIB, Compression.XZ])
def test_format_2_absurd_sample_count_is_refused_before_decoding(s3, monkeypatch, compression):
    from edgeloop.schemas.telemetry_compact import _Reader

    read_uvarints = _Reader.uvarints

    def must_not_read_samples(self, count, field):
        if count > MAX_BATCH_SAMPLES:
            raise AssertionError(f"{field} was read: per-sample lists of {count} would have been allocated")
        return read_uvarints(self, count, field)

    monkeypatch.setattr(_Reader, "uvarints", must_not_read_samples)
    n = MAX_BATCH_SAMPLES + 1
    payload = encode_compact(constant_batch(n, COMPACT_FORMAT_VERSION), compression)
    assert len(payload) <= MAX_PAYLOAD_BYTES
    (reason,) = refused_message(s3, payload).reasons
    assert (reason.field, reason.value) == ("n_samples", str(n))
    assert f"exceeds {MAX_BATCH_SAMPLES} samples per batch" in reason.error


def test_format_2_at_the_sample_limit_is_decoded(s3):
    payload = encode_compact(constant_batch(MAX_BATCH_SAMPLES, COMPACT_FORMAT_VERSION), Compression.ZLIB)
    result = ingest(payload)
    assert result.landed_samples == MAX_BATCH_SAMPLES and result.quarantine_key is None


def test_format_1_absurd_sample_count_is_refused(s3):
    n = MAX_BATCH_SAMPLES + 1
    payload = zlib.compress(constant_batch(n, 1).model_dump_json().encode(), 9)
    assert len(payload) <= MAX_PAYLOAD_BYTES
    (reason,) = refused_message(s3, payload).reasons
    assert (reason.field, reason.value) == ("samples.metric_index", repr(f"{n} samples"))
    assert f"exceeds {MAX_BATCH_SAMPLES} samples per batch" in reason.error


# --- unknown format version ----------------------------------------------------------------------


def test_unknown_binary_format_version_is_quarantined(s3):
    payload = COMPACT_MAGIC + bytes([9, Compression.ZLIB]) + zlib.compress(b"whatever")
    (reason,) = refused_message(s3, payload).reasons
    assert (reason.field, reason.value) == ("header.format_version", "9")
    assert "not supported" in reason.error


def test_unknown_format_version_field_is_quarantined(s3):
    doc = batch_doc()
    doc["format_version"] = 3
    (reason,) = refused_message(s3, wire(doc)).reasons
    assert (reason.field, reason.value) == ("format_version", "3")
    assert "1 or 2" in reason.error


# --- unknown line -------------------------------------------------------------------------------


def test_line_other_than_the_registry_holds_refuses_the_message(s3):
    record = refused_message(s3, wire(batch_doc(line_id="line-9")))
    (reason,) = record.reasons
    assert (reason.field, reason.value) == ("line_id", "'line-9'")
    assert f"differs from line {LINE!r}" in reason.error and THING in reason.error


def test_thing_without_a_line_in_the_registry_refuses_the_message(s3):
    (reason,) = refused_message(s3, wire(batch_doc()), lines=StaticLineDirectory({})).reasons
    assert (reason.field, reason.value) == ("line_id", repr(LINE))
    assert f"the IoT registry has no line for thing {THING!r}" in reason.error
    assert "not registered" in reason.error


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def register(iot, thing: str, line_id: str) -> None:
    """The thing as `edgeloop gateway provision` creates it: its attributes come from ProvisioningRequest."""
    request = ProvisioningRequest(thing_name=thing, site="plant-a", line_id=line_id, architecture="x86_64")
    iot.create_thing(thingName=thing, attributePayload={"attributes": request.attributes})


def test_iot_line_directory_reads_the_provisioned_line_and_caches_it(s3):
    iot = boto3.client("iot")
    register(iot, THING, LINE)
    clock = FakeClock()
    directory = IotLineDirectory(clock=clock)

    assert [directory.line_of(THING) for _ in range(3)] == [LINE] * 3
    assert directory.lookups == 1  # one DescribeThing per thing per TTL
    iot.update_thing(thingName=THING, attributePayload={"attributes": {"line_id": "line-2"}, "merge": True})
    clock.now += LINE_TTL_S - 1
    assert directory.line_of(THING) == LINE  # still cached
    clock.now += 2
    assert directory.line_of(THING) == "line-2" and directory.lookups == 2


def test_iot_line_directory_answers_none_for_unknown_things_and_retries_sooner(s3):
    iot = boto3.client("iot")
    iot.create_thing(thingName="gw-no-line")  # registered, but not by provisioning: no line_id
    clock = FakeClock()
    directory = IotLineDirectory(clock=clock)

    assert directory.line_of("gw-unknown") is None and directory.line_of("gw-no-line") is None
    register(iot, "gw-unknown", LINE)  # provisioned after its first message
    assert directory.line_of("gw-unknown") is None  # cached miss
    clock.now += MISSING_TTL_S + 1
    assert directory.line_of("gw-unknown") == LINE
    assert MISSING_TTL_S < LINE_TTL_S


def test_iot_line_directory_lets_other_registry_errors_fail_the_invocation():
    class DeniedIot:
        def describe_thing(self, thingName):
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "DescribeThing")

    with pytest.raises(ClientError, match="AccessDenied"):
        IotLineDirectory(iot=DeniedIot()).line_of(THING)


def test_the_settings_carry_one_line_directory_for_the_warm_container():
    environment = {names.DATA_BUCKET_ENV: BUCKET, names.USE_CASE_ENV: "extrusion"}
    settings = Settings.from_env(environment)
    assert isinstance(settings.line_directory, IotLineDirectory)
    assert settings.line_directory is settings.line_directory
    assert Settings.from_env(environment).line_directory is not settings.line_directory


def test_ingest_checks_the_line_against_the_iot_registry(s3):
    register(boto3.client("iot"), THING, LINE)
    directory = IotLineDirectory()
    assert ingest(wire(batch_doc()), lines=directory).landed_samples == 6
    refused = ingest(wire(batch_doc(seq_first=200, line_id="line-2")), lines=directory)
    assert refused.raw_key is None and len(keys(s3, "raw/")) == 1
    record = QuarantineRecord.model_validate_json(read_object(s3, refused.quarantine_key))
    (reason,) = record.reasons
    assert reason.field == "line_id" and f"differs from line {LINE!r}" in reason.error


def test_handler_quarantines_a_batch_from_an_unregistered_thing(s3):
    from edgeloop.functions.ingest import handler

    handler._settings.cache_clear()
    result = handler.lambda_handler(event_of(wire(batch_doc())).model_dump(), None)
    assert result["raw_key"] is None and result["quarantined_samples"] == 6
    record = QuarantineRecord.model_validate_json(read_object(s3, result["quarantine_key"]))
    assert reasons_of(record) == [("line_id", repr(LINE))]

    register(boto3.client("iot"), THING, LINE)
    handler._settings.cache_clear()  # a new container: no cached miss
    assert handler.lambda_handler(event_of(wire(batch_doc())).model_dump(), None)["landed_samples"] == 6


# --- timestamps in the future, beyond the lateness SLA -------------------------------------------


def test_timestamps_in_the_future_refuse_only_those_samples(s3):
    doc = batch_doc()
    doc["samples"]["time_ms"][2] = RECEIVED_AT_MS + FUTURE_TOLERANCE_MS + 1
    doc["samples"]["time_ms"][3] = RECEIVED_AT_MS + FUTURE_TOLERANCE_MS  # at the tolerance: accepted
    raw, record = refused_samples(s3, wire(doc))

    assert landed_samples(raw) == good_samples_of(doc, {2})
    (reason,) = record.reasons
    assert (reason.field, reason.value) == ("samples.time_ms[2]", str(RECEIVED_AT_MS + FUTURE_TOLERANCE_MS + 1))
    assert "seq=102" in reason.error and f"at most {FUTURE_TOLERANCE_MS} ms" in reason.error


def test_timestamps_beyond_the_lateness_sla_refuse_only_those_samples(s3):
    oldest_accepted = RECEIVED_AT_MS - SLA_DAYS * DAY_MS
    doc = batch_doc()
    doc["samples"]["time_ms"][0] = oldest_accepted - 1
    doc["samples"]["time_ms"][1] = oldest_accepted  # exactly the SLA late: accepted, like compaction
    doc["samples"]["time_ms"][5] = 0
    raw, record = refused_samples(s3, wire(doc))

    assert landed_samples(raw) == good_samples_of(doc, {0, 5})
    assert reasons_of(record) == [("samples.time_ms[0]", str(oldest_accepted - 1)), ("samples.time_ms[5]", "0")]
    for reason in record.reasons:
        assert f"beyond the lateness SLA of {SLA_DAYS} days ({names.LATENESS_SLA_DAYS_ENV})" in reason.error
    assert f"{SLA_DAYS * DAY_MS + 1} ms before received_at_ms={RECEIVED_AT_MS}" in record.reasons[0].error


def test_a_lower_lateness_sla_refuses_more(s3):
    doc = batch_doc()
    doc["samples"]["time_ms"][3] = RECEIVED_AT_MS - 2 * DAY_MS
    raw, record = refused_samples(s3, wire(doc), lateness_sla_days=1)
    assert landed_samples(raw) == good_samples_of(doc, {3})
    assert "lateness SLA of 1 days" in record.reasons[0].error


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_lateness_sla_must_be_a_positive_whole_number_of_days(s3, bad):
    with pytest.raises(ValueError, match=f"lateness_sla_days={bad!r}"):
        ingest(wire(batch_doc()), lateness_sla_days=bad)


def test_settings_read_the_lateness_sla_from_the_environment():
    base = {names.DATA_BUCKET_ENV: BUCKET, names.USE_CASE_ENV: "extrusion"}
    assert Settings.from_env(base).lateness_sla_days == names.DEFAULT_LATENESS_SLA_DAYS == 14
    assert Settings.from_env({**base, names.LATENESS_SLA_DAYS_ENV: "3"}).lateness_sla_days == 3
    with pytest.raises(ValueError, match=f"{names.LATENESS_SLA_DAYS_ENV}='two weeks'"):
        Settings.from_env({**base, names.LATENESS_SLA_DAYS_ENV: "two weeks"})
    with pytest.raises(ValueError, match=f"{names.LATENESS_SLA_DAYS_ENV}='0'"):
        Settings.from_env({**base, names.LATENESS_SLA_DAYS_ENV: "0"})


def test_handler_applies_the_lateness_sla_from_the_environment(s3, monkeypatch):
    from edgeloop.functions.ingest import handler

    register(boto3.client("iot"), THING, LINE)
    monkeypatch.setenv(names.LATENESS_SLA_DAYS_ENV, "1")
    handler._settings.cache_clear()
    try:
        doc = batch_doc()
        doc["samples"]["time_ms"][0] = RECEIVED_AT_MS - 2 * DAY_MS  # within the default 14 days, not within 1
        result = handler.lambda_handler(event_of(wire(doc)).model_dump(), None)
    finally:
        handler._settings.cache_clear()  # later tests must not inherit this SLA
    assert (result["landed_samples"], result["quarantined_samples"]) == (5, 1)


def test_every_sample_fault_at_once_still_lands_the_good_samples(s3):
    doc = batch_doc(10, metrics=("speed", "temp_die", "bogus_metric"))  # samples 2, 5, 8 are bogus
    samples = doc["samples"]
    samples["values"][0] = float("nan")
    samples["values"][1] = "hot"
    samples["time_ms"][3] = RECEIVED_AT_MS + DAY_MS
    samples["time_ms"][4] = RECEIVED_AT_MS - (SLA_DAYS + 1) * DAY_MS
    samples["metric_index"][6] = 7
    raw, record = refused_samples(s3, wire(doc))

    refused = {0, 1, 2, 3, 4, 5, 6, 8}
    assert landed_samples(raw) == good_samples_of(doc, refused) and raw.seq == [107, 109]
    fields = [r.field for r in record.reasons]
    assert fields == [
        "samples.values[0]",
        "samples.values[1]",
        "samples.metrics[2]",
        "samples.time_ms[3]",
        "samples.time_ms[4]",
        "samples.metrics[2]",
        "samples.metric_index[6]",
        "samples.metrics[2]",
    ]


# --- duplicate deliveries -----------------------------------------------------------------------


def test_same_batch_delivered_three_times_lands_once(s3):
    doc = batch_doc()
    results = [ingest(wire(doc)) for _ in range(3)]

    assert [r.duplicate for r in results] == [False, True, True]
    assert [r.landed_samples for r in results] == [6, 0, 0]
    assert keys(s3, "raw/") == [results[0].raw_key] and keys(s3, "quarantine/") == []
    assert landed_samples(RawBatch.from_gzip_json(read_object(s3, results[0].raw_key))) == good_samples_of(doc, set())


class SerializedCreateStore(S3IngestStore):
    """moto checks If-None-Match and then writes, in two steps (moto/s3/responses.py put_object), so
    two threads can both pass the check; real S3's conditional write is atomic. The lock makes the
    fake as atomic as S3 is: the test then checks ingest's use of it, not moto's race."""

    _create_lock = threading.Lock()

    def put_raw_if_absent(self, key: str, body: bytes) -> bool:
        with self._create_lock:
            return super().put_raw_if_absent(key, body)


def test_same_batch_delivered_three_times_concurrently_lands_once(s3):
    doc = batch_doc()
    doc["samples"]["metric_index"][5] = 9  # a refused sample too: it must be quarantined once only
    payload, store = wire(doc), SerializedCreateStore(BUCKET)
    start, results, errors = threading.Barrier(3), [], []

    def deliver() -> None:
        start.wait()
        try:
            results.append(ingest(payload, store=store))
        except Exception as exc:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == [] and len(results) == 3
    assert sorted(r.duplicate for r in results) == [False, True, True]
    assert sorted(r.landed_samples for r in results) == [0, 0, 5]
    assert len({r.raw_key for r in results}) == 1 and keys(s3, "raw/") == [results[0].raw_key]
    assert len(keys(s3, "quarantine/")) == 1
    assert landed_samples(RawBatch.from_gzip_json(read_object(s3, results[0].raw_key))) == good_samples_of(doc, {5})
