"""Ingest's logs at fleet scale: every message is an invocation, so what one invocation prints is
paid per message in CloudWatch Logs ingestion. A good or duplicate message prints one EMF document
and nothing else at INFO; quarantine adds one WARNING; the summary is DEBUG (sampled)."""

from __future__ import annotations

import json
import logging

import boto3
import pytest
from ingest_messages import batch_doc, event_of, wire

BUCKET = "edgeloop-ingest-logs-test"
# An EMF document of two metrics with the service dimension: about 265 bytes (was about 330 with a
# zero SamplesQuarantined in every document, and a 470-byte INFO line per duplicate delivery).
MAX_GOOD_INVOCATION_BYTES = 300


@pytest.fixture
def handler(s3):
    from edgeloop.functions.ingest import handler

    handler._settings.cache_clear()
    boto3.client("iot").create_thing(thingName="gw-line-1", attributePayload={"attributes": {"line_id": "line-1"}})
    return handler


@pytest.fixture
def printed(handler, monkeypatch):
    """What one invocation prints: the metrics (print) and the logger's lines, as text lines."""
    lines: list[str] = []
    monkeypatch.setattr("builtins.print", lambda *args, **kwargs: lines.append(" ".join(map(str, args))))

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    collect = Collect()
    collect.setFormatter(handler.logger.registered_formatter)
    # powertools' own handler keeps the stdout it saw at import, which may be an earlier test's closed
    # capture stream: while collecting, only our handler writes
    own = list(handler.logger.handlers)
    for existing in own:
        handler.logger.removeHandler(existing)
    handler.logger.addHandler(collect)
    yield lines
    handler.logger.removeHandler(collect)
    for existing in own:
        handler.logger.addHandler(existing)


def invoke(handler, seq_first: int, *, age_ms: int = 700_000, payload: bytes | None = None) -> dict:
    payload = payload if payload is not None else wire(batch_doc(600, seq_first=seq_first, age_ms=age_ms))
    return handler.lambda_handler(event_of(payload).model_dump(), None)


def levels(lines: list[str]) -> list[str]:
    return [json.loads(line).get("level", "EMF") for line in lines]


def test_a_good_and_a_duplicate_message_print_one_emf_document_each(handler, printed):
    invoke(handler, 100)
    assert levels(printed) == ["EMF"]
    assert len(printed[0].encode()) <= MAX_GOOD_INVOCATION_BYTES, printed[0]
    emf = json.loads(printed[0])
    assert (emf["SamplesLanded"], emf["BatchesLanded"]) == ([600.0], [1.0]) and "SamplesQuarantined" not in emf
    printed.clear()
    assert invoke(handler, 100)["duplicate"]
    assert levels(printed) == ["EMF"] and json.loads(printed[0])["DuplicateBatches"] == [1.0]


def test_quarantine_adds_one_warning_and_a_sampled_invocation_one_debug_summary(handler, printed):
    invoke(handler, 100, payload=b"garbage")
    assert sorted(levels(printed)) == ["EMF", "WARNING"]
    printed.clear()
    handler.logger.setLevel(logging.DEBUG)  # what a sampled invocation does
    try:
        invoke(handler, 700)
    finally:
        handler.logger.setLevel(logging.INFO)
    summary = [json.loads(line) for line in printed if '"level":"DEBUG"' in line]
    assert len(summary) == 1 and summary[0]["SamplesLanded"] == 600 and len(summary[0]["raw_keys"]) == 1
