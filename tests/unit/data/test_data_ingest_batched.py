"""The batched ingest path (IoT rule -> SQS -> ingest): one raw object per invocation, refusals
quarantined per message, and a partial failure that neither loses nor duplicates the other messages."""

from __future__ import annotations

import json

import boto3
import pytest
from ingest_messages import RECEIVED_AT_MS, THING, USE_CASE, batch_doc, event_of, sqs_event, sqs_record, wire

from edgeloop.cloud.datalake.raw import RAW_KEY, RAW_SET_KEY, raw_batches
from edgeloop.cloud.line_directory import StaticLineDirectory
from edgeloop.cloud.sqs_event import SqsRecord
from edgeloop.functions.compaction.logic import compact, raw_rows
from edgeloop.functions.ingest import batched
from edgeloop.functions.ingest.batched import NOT_A_RULE_EVENT, ingest_sqs_records
from edgeloop.functions.ingest.data_access import S3IngestStore
from edgeloop.schemas import QuarantineRecord
from edgeloop.schemas.raw_batch import RawBatchSet

BUCKET = "edgeloop-ingest-batched-test"
OTHER = "gw-line-2"
TWO_LINES = StaticLineDirectory({THING: "line-1", OTHER: "line-2"})


def records(*payloads: bytes, thing: str = THING) -> list[SqsRecord]:
    return [
        SqsRecord.of(sqs_record(event_of(p, thing=thing, received_at_ms=RECEIVED_AT_MS + i)))
        for i, p in enumerate(payloads)
    ]


def ingest(recs: list[SqsRecord], store=None, lines=TWO_LINES):
    return ingest_sqs_records(recs, use_case=USE_CASE, store=store or S3IngestStore(BUCKET), lines=lines)


def keys(s3, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def body(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def landed_seqs(s3) -> list[tuple[str, int]]:
    """(thing, seq) of every sample in raw/, copies included."""
    return sorted(
        (b.thing_name, seq) for key in keys(s3, "raw/") for b in raw_batches(key, body(s3, key)) for seq in b.seq
    )


def good(seq_first: int, n: int = 4, thing: str = THING, **kw) -> bytes:
    return wire(batch_doc(n, seq_first=seq_first, thing=thing, line_id="line-2" if thing == OTHER else "line-1", **kw))


class FailingStore(S3IngestStore):
    """S3 refusing some writes: the quarantine record of a payload, or the raw set objects."""

    def __init__(self, *, fail_quarantine_of: bytes | None = None, fail_raw: bool = False) -> None:
        super().__init__(BUCKET)
        self.fail_quarantine_of = fail_quarantine_of
        self.fail_raw = fail_raw
        self.quarantine_puts = 0

    def put_quarantine(self, key: str, body: bytes) -> None:
        self.quarantine_puts += 1
        record = QuarantineRecord.model_validate_json(body)
        if self.fail_quarantine_of is not None and record.payload_b64 == event_of(self.fail_quarantine_of).payload_b64:
            raise OSError("SlowDown: injected S3 failure")
        super().put_quarantine(key, body)

    def put_raw_if_absent(self, key: str, body: bytes) -> bool:
        if self.fail_raw:
            raise OSError("InternalError: injected S3 failure")
        return super().put_raw_if_absent(key, body)


def test_a_batch_of_messages_lands_in_one_raw_object_that_compaction_reads(s3):
    recs = records(good(100), good(104)) + records(good(7, thing=OTHER), thing=OTHER)
    outcome = ingest(recs)

    assert outcome.failed == {} and outcome.response() == {"batchItemFailures": []}
    (key,) = keys(s3, "raw/")
    assert RAW_SET_KEY.match(key) and not RAW_KEY.match(key) and key.startswith("raw/ingest_date=2026-01-01/hour=13/")
    assert outcome.raw_keys == [key] and {r.raw_key for r in outcome.results.values()} == {key}
    assert [r.landed_samples for r in outcome.results.values()] == [4, 4, 4]
    rows = raw_rows(body(s3, key), key)
    assert sorted(zip(rows["thing_name"], rows["seq"])) == landed_seqs(s3)
    assert len(rows) == 12 and set(rows["line_id"]) == {"line-1", "line-2"}
    assert set(rows["ingest_time_ms"]) == {RECEIVED_AT_MS, RECEIVED_AT_MS + 1}


def test_refusals_are_quarantined_per_message_and_never_stop_the_others(s3):
    bogus = wire(batch_doc(4, seq_first=200, metrics=("speed", "bogus")))  # samples 1 and 3 refused
    recs = records(good(100), b"not zlib", bogus, good(104))
    recs.append(SqsRecord.of({**sqs_record(event_of(b"x")), "messageId": "not-a-rule-event", "body": "{}"}))
    outcome = ingest(recs)

    assert outcome.failed == {}
    by_id = {r.message_id: outcome.results[r.message_id] for r in recs}
    landed = [by_id[r.message_id].landed_samples for r in recs]
    assert landed == [4, 0, 2, 4, 0]
    assert [by_id[r.message_id].quarantined_samples for r in recs] == [0, 0, 2, 0, 0]
    assert len(keys(s3, "quarantine/")) == 3 and len(keys(s3, "raw/")) == 1
    stand_in = QuarantineRecord.model_validate_json(body(s3, by_id["not-a-rule-event"].quarantine_key))
    assert stand_in.reasons[0].field == NOT_A_RULE_EVENT and "payload_b64" in stand_in.reasons[0].error
    assert landed_seqs(s3) == [(THING, s) for s in [100, 101, 102, 103, 104, 105, 106, 107, 200, 202]]


def test_a_failed_quarantine_write_in_the_middle_neither_loses_nor_duplicates(s3):
    partly_bad = wire(batch_doc(4, seq_first=200, metrics=("speed", "bogus")))
    recs = records(good(100), partly_bad, good(104))
    outcome = ingest(recs, store=FailingStore(fail_quarantine_of=partly_bad))

    assert outcome.response() == {"batchItemFailures": [{"itemIdentifier": recs[1].message_id}]}
    assert landed_seqs(s3) == [(THING, s) for s in range(100, 108)]  # the failed one is not in the set
    retry = ingest([recs[1]])  # SQS redelivers only the reported message, the same body and id
    assert retry.failed == {} and retry.results[recs[1].message_id].landed_samples == 2
    assert landed_seqs(s3) == [(THING, s) for s in [*range(100, 108), 200, 202]]  # each once
    assert len(keys(s3, "quarantine/")) == 1


def test_a_failed_raw_write_reports_every_landing_message_and_the_retry_lands_them_once(s3):
    recs = records(good(100), b"garbage", good(104))
    outcome = ingest(recs, store=FailingStore(fail_raw=True))

    assert sorted(outcome.failed) == sorted([recs[0].message_id, recs[2].message_id])  # not the refused one
    assert keys(s3, "raw/") == [] and len(keys(s3, "quarantine/")) == 1
    retry = ingest([recs[0], recs[2]])
    assert retry.failed == {} and landed_seqs(s3) == [(THING, s) for s in range(100, 108)]


def test_a_registry_error_fails_only_that_message(s3):
    class FlakyDirectory:
        def line_of(self, thing_name: str) -> str | None:
            if thing_name == OTHER:
                raise ConnectionError("iot:DescribeThing timed out")
            return "line-1"

    recs = records(good(100)) + records(good(7, thing=OTHER), thing=OTHER)
    outcome = ingest(recs, lines=FlakyDirectory())
    assert list(outcome.failed) == [recs[1].message_id] and "DescribeThing" in outcome.failed[recs[1].message_id]
    assert landed_seqs(s3) == [(THING, s) for s in range(100, 104)]


def test_a_whole_batch_delivered_again_is_a_duplicate_and_quarantines_once(s3):
    recs = records(good(100), wire(batch_doc(4, seq_first=200, metrics=("speed", "bogus"))))
    first, again = ingest(recs), ingest(list(reversed(recs)))  # SQS may hand the records in another order

    assert first.raw_keys == again.raw_keys and len(keys(s3, "raw/")) == 1
    assert [r.duplicate for r in again.results.values()] == [True, True]
    assert sum(r.landed_samples for r in again.results.values()) == 0
    assert len(keys(s3, "quarantine/")) == 1


def test_copies_of_one_batch_in_one_invocation_land_once(s3):
    payload = good(100)
    recs = records(payload, payload, payload)  # a gateway's re-publish: the same batch, other receive times
    outcome = ingest(recs)
    assert [outcome.results[r.message_id].duplicate for r in recs] == [False, True, True]
    assert landed_seqs(s3) == [(THING, s) for s in range(100, 104)]


def test_a_message_regrouped_on_retry_lands_twice_in_raw_and_once_in_curated(s3):
    recs = records(good(100), good(104))
    ingest(recs)
    ingest([recs[1]] + records(good(300)))  # e.g. the first invocation timed out after its PUT
    assert len(keys(s3, "raw/")) == 2 and landed_seqs(s3).count((THING, 104)) == 2

    result = compact(BUCKET)
    assert result.raw_objects == 2 and result.rows_written == 12 and result.duplicates_dropped == 4


def test_a_set_holds_at_most_max_set_samples(s3, monkeypatch):
    monkeypatch.setattr(batched, "MAX_SET_SAMPLES", 8)
    outcome = ingest(records(good(100), good(104), good(108), good(112, n=10)))
    assert len(outcome.raw_keys) == 3 and len(keys(s3, "raw/")) == 3  # 4+4 | 4 | 10 (alone, over the cap)
    assert [len(RawBatchSet.from_gzip_json(body(s3, k)).batches) for k in outcome.raw_keys] == [2, 1, 1]


def test_the_handler_takes_an_sqs_event_and_reports_batch_item_failures(s3, capsys):
    from edgeloop.functions.ingest import handler

    handler._settings.cache_clear()
    boto3.client("iot").create_thing(thingName=THING, attributePayload={"attributes": {"line_id": "line-1"}})
    response = handler.lambda_handler(sqs_event(event_of(good(100)), event_of(b"garbage")), None)

    assert response == {"batchItemFailures": []}
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 1 and emf[0]["SamplesLanded"] == [4.0] and emf[0]["BatchesQuarantined"] == [1.0]
    assert len(keys(s3, "raw/")) == 1


@pytest.mark.parametrize("bad_event", [{"Records": []}, {"Records": [{"messageId": "m", "body": "{}"}]}])
def test_the_handler_refuses_an_event_that_is_not_from_sqs(s3, bad_event):
    from edgeloop.functions.ingest import handler

    handler._settings.cache_clear()
    with pytest.raises(ValueError, match="Records|eventSource"):
        handler.lambda_handler(bad_event, None)


def test_compaction_moves_an_unreadable_set_aside_under_a_set_name(s3):
    key = "raw/ingest_date=2026-01-01/hour=13/set=" + "0" * 32 + ".json.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"not gzip")
    ingest(records(good(100)))
    result = compact(BUCKET)
    (moved,) = result.quarantined_keys
    assert "/raw-set-" in moved and result.rows_written == 4
