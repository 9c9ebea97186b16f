"""Quarantine records stay bounded: past MAX_SAMPLE_REASONS refused samples, ingest (and backfill,
which validates with ingest's code) count the rest per (field, fault) instead of describing each."""

from __future__ import annotations

import json

from ingest_messages import LINES, USE_CASE, batch_doc, event_of, wire

from edgeloop.backfill import plan_backfill, run_backfill
from edgeloop.cloud.datalake.sample_validation import MAX_SAMPLE_REASONS
from edgeloop.cloud.line_directory import StaticLineDirectory
from edgeloop.functions.ingest.logic import ingest_event
from edgeloop.schemas import QuarantineRecord

BUCKET = "edgeloop-backfill-reasons-test"
N = MAX_SAMPLE_REASONS + 500


class Store:
    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}
        self.quarantine: dict[str, bytes] = {}

    def put_raw_if_absent(self, key: str, body: bytes) -> bool:
        self.raw[key] = body
        return True

    def put_quarantine(self, key: str, body: bytes) -> None:
        self.quarantine[key] = body


def test_ingest_describes_at_most_max_sample_reasons_and_counts_the_rest():
    doc = batch_doc(N + 2, age_ms=(N + 3) * 1000)
    doc["samples"]["values"][1 : N + 1] = [float("nan")] * N
    store = Store()
    result = ingest_event(event_of(wire(doc)), use_case=USE_CASE, store=store, lines=LINES)

    assert (result.landed_samples, result.quarantined_samples) == (2, N)
    (body,) = store.quarantine.values()
    reasons = QuarantineRecord.model_validate_json(body).reasons
    assert len(reasons) == MAX_SAMPLE_REASONS + 1
    assert reasons[0].field == "samples.values[1]" and reasons[0].error == "is not a finite number"
    summary = reasons[-1]
    assert (summary.field, summary.value) == ("samples.values", "500 samples")
    assert summary.error.endswith(f"(at most {MAX_SAMPLE_REASONS} are): is not a finite number")


def test_a_backfill_chunk_with_many_bad_cells_makes_one_bounded_record(s3, tmp_path):
    (tmp_path / "map.yaml").write_text("layout: wide\ntimestamp: {column: t, format: epoch_s}\ncolumns: {v: speed}\n")
    rows = "".join(f"{1_700_000_000 + i},{'x' if i < N else 1.0}\n" for i in range(N + 3))
    (tmp_path / "rec.csv").write_text("t,v\n" + rows)
    plan = plan_backfill(
        [tmp_path / "rec.csv"],
        tmp_path / "map.yaml",
        line_id="line-1",
        use_case=USE_CASE,
        lines=StaticLineDirectory({}),
    )
    (report,) = run_backfill(plan, BUCKET)

    assert (report.landed, report.quarantined) == (3, N)
    (key,) = report.quarantine_keys
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert len(record["reasons"]) == MAX_SAMPLE_REASONS + 1
    assert record["reasons"][0]["field"] == "v"
    assert record["reasons"][-1]["error"].startswith(f"{tmp_path / 'rec.csv'}: 500 more samples refused")
