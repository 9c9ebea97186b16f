"""What a compaction round's followers leave unwritten when nothing changed (billed requests, issue 18):
the metric packer's auto labels, the rollups' stale-month listing."""

from __future__ import annotations

import pandas as pd

from edgeloop.cloud import s3 as data_s3
from edgeloop.cloud.packing.label_store import auto_labels_key, get_auto_labels, put_auto_labels

BUCKET = "edgeloop-round-writes"
LINE = "line-1"


def labels(*values: float) -> pd.DataFrame:
    return pd.DataFrame({"window_start": pd.to_datetime([0] * len(values), utc=True), "label": list(values)})


def test_auto_labels_are_written_only_when_they_change(s3):
    assert not put_auto_labels(BUCKET, LINE, labels()), "none to store and none stored: no object"
    assert get_auto_labels(BUCKET, LINE) is None
    assert put_auto_labels(BUCKET, LINE, labels(1.0, 2.0))
    modified = s3.head_object(Bucket=BUCKET, Key=auto_labels_key(LINE))["ETag"]
    assert not put_auto_labels(BUCKET, LINE, labels(1.0, 2.0)), "the same labels again: not rewritten"
    assert s3.head_object(Bucket=BUCKET, Key=auto_labels_key(LINE))["ETag"] == modified
    assert put_auto_labels(BUCKET, LINE, labels(1.0, 3.0))
    assert put_auto_labels(BUCKET, LINE, labels()), "labels withdrawn: the stored ones are replaced by none"
    assert get_auto_labels(BUCKET, LINE).empty
    assert list(data_s3.list_keys(BUCKET, "label_review/")) == [auto_labels_key(LINE)]


def test_rollups_of_months_with_data_list_no_rollups_and_a_month_without_data_loses_its_own(s3, monkeypatch):
    import test_data_rollups
    from test_data_rollups import T0, day_of_samples, put_curated

    from edgeloop.cloud.aws import client
    from edgeloop.functions.rollups.logic import LEVELS, build_line_rollups

    monkeypatch.setattr(test_data_rollups, "BUCKET", BUCKET)  # its helper writes to its module's bucket
    listed: list[str] = []
    client("s3").meta.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **_: listed.append(params["Prefix"])
    )
    put_curated(s3, LINE, "2026-01-01", day_of_samples(T0, 1))
    result = build_line_rollups(BUCKET, LINE, months=["2026-01"])
    assert result.keys_deleted == [] and sum(result.rows_written.values()) > 0
    assert any(p.startswith("curated/") for p in listed), listed  # the hook sees the listings
    assert not [p for p in listed if p.startswith("rollups/")], listed  # compaction's hourly round: no LIST
    s3.delete_object(Bucket=BUCKET, Key="curated/line=line-1/event_date=2026-01-01/part-0.parquet")
    gone = build_line_rollups(BUCKET, LINE, months=["2026-01"])
    assert len(gone.keys_deleted) == len(LEVELS) and not list(data_s3.list_keys(BUCKET, "rollups/"))


def test_a_line_without_runs_is_neither_listed_nor_given_empty_packs_until_it_has_had_some(s3, monkeypatch):
    import test_pack_incremental as packing
    from test_pack_incremental import USE_CASE, interval, land

    from edgeloop.cloud.aws import client
    from edgeloop.cloud.datalake.context import put_context_intervals
    from edgeloop.cloud.datalake.packs import read_packs, unlabeled_key
    from edgeloop.cloud.packing.examples import build_line_examples_with_stats
    from edgeloop.schemas import ContextKind

    monkeypatch.setattr(packing, "BUCKET", BUCKET)
    listed: list[str] = []
    client("s3").meta.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **_: listed.append(params["Prefix"])
    )
    land(0, 1200, seq0=0)
    listed.clear()
    none = build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    assert (none.runs_packed, none.stats.examples, len(none.examples)) == (0, 0, 0)
    assert listed == [] and not list(data_s3.list_keys(BUCKET, "packs/")), "no listing, no empty files"
    put_context_intervals(BUCKET, LINE, [interval(ContextKind.RUN, "r1", 0, 1200, "cable-a", (1.9, 2.15))])
    one = build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    assert one.runs_packed == 1 and len(one.examples) > 100 and any(p.startswith("curated/") for p in listed)
    put_context_intervals(BUCKET, LINE, [])  # its only run withdrawn: the stored packs go empty
    gone = build_line_examples_with_stats(BUCKET, LINE, USE_CASE)
    assert len(gone.examples) == 0 and read_packs(BUCKET, unlabeled_key(LINE)).frame.empty
