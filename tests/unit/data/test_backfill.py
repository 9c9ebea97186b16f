"""`edgeloop backfill`: a recording through ingest's validation and quarantine, without the lateness
SLA, straight to curated/, exactly once, with its context through the context path."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgeloop.backfill import BackfillError, plan_backfill, run_backfill
from edgeloop.cli.backfill import backfill_command
from edgeloop.cloud.datalake.context import get_context_intervals
from edgeloop.cloud.datalake.curated import read_curated, read_late
from edgeloop.cloud.datalake.raw import BACKFILL_KEY, BACKFILL_SEQ_BASE, BackfillLineage, backfill_seq
from edgeloop.cloud.datalake.sample_validation import validate_samples
from edgeloop.cloud.line_directory import StaticLineDirectory
from edgeloop.functions.rollups.logic import read_rollups
from edgeloop.local.env_file import write_env_file
from edgeloop.schemas import ContextKind, QuarantineRecord, load_use_case, names

BUCKET = "edgeloop-backfill-test"
LINE = "line-1"
THING = f"backfill-{LINE}"
NOW = datetime(2026, 3, 1, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
OLD = datetime(2024, 1, 10, tzinfo=UTC)  # ~2 years before NOW: far beyond the 14-day SLA
MAPPING = """layout: wide
timestamp: {column: time, format: "%Y-%m-%d %H:%M:%S", timezone: UTC}
columns:
  spd: speed
  rpm: screw_rpm
"""
# Line 2 and 3 are good; then a text cell, a NaN cell, an unparseable time, a reading 4 days after NOW,
# and a good row of the next day.
MIXED = """time,spd,rpm,note
2024-01-10 00:00:00,1.5,20,start
2024-01-10 00:00:02,1.6,,
2024-01-10 00:00:04,abc,21,
2024-01-10 00:00:06,nan,22,
yesterday,1.0,23,
2026-03-05 00:00:00,1.0,24,
2024-01-11 12:00:00,1.7,25,
"""


@pytest.fixture()
def use_case():
    return load_use_case("extrusion")


def _files(tmp_path: Path, recording: str = MIXED, mapping: str = MAPPING) -> tuple[Path, Path]:
    (tmp_path / "rec.csv").write_text(recording)
    (tmp_path / "map.yaml").write_text(mapping)
    return tmp_path / "rec.csv", tmp_path / "map.yaml"


def _backfill(files, mapping, use_case, **kwargs):
    plan = plan_backfill(files, mapping, line_id=LINE, use_case=use_case, lines=StaticLineDirectory({}))
    return run_backfill(plan, BUCKET, received_at_ms=kwargs.pop("received_at_ms", NOW_MS), **kwargs)


def _keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def _json(s3, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_a_mixed_recording_lands_its_good_samples_and_quarantines_the_bad_ones_with_reasons(s3, tmp_path, use_case):
    recording, mapping = _files(tmp_path)
    (report,) = _backfill([recording], mapping, use_case)

    curated = read_curated(BUCKET, LINE)
    landed = {(r.metric, r.time_ms): r.value for r in curated.itertuples()}
    t0 = int(OLD.timestamp() * 1000)
    assert landed == {
        ("speed", t0): 1.5,
        ("screw_rpm", t0): 20.0,
        ("speed", t0 + 2000): 1.6,  # its empty rpm cell is no reading, not a bad one
        ("screw_rpm", t0 + 4000): 21.0,
        ("screw_rpm", t0 + 6000): 22.0,
        ("speed", t0 + 129_600_000): 1.7,
        ("screw_rpm", t0 + 129_600_000): 25.0,
    }
    assert report.samples == 13 and report.landed == 7 and report.quarantined == 6
    assert sorted(report.partitions) == [
        f"curated/line={LINE}/event_date=2024-01-10/",
        f"curated/line={LINE}/event_date=2024-01-11/",
    ]

    reasons = []
    for key in report.quarantine_keys:
        assert key.startswith(f"{names.QUARANTINE_PREFIX}/ingest_date=2026-03-01/{THING}-")
        record = QuarantineRecord.model_validate(_json(s3, key))
        assert record.source == report.recording_key
        reasons += [(r.field, r.value, r.error) for r in record.reasons]
    where = f"{recording} line"
    assert ("spd", "'abc'", f"{where} 4 column 'spd': Input should be a valid number") in reasons
    assert ("spd", "nan", f"{where} 5 column 'spd': is not a finite number") in reasons
    assert ("time", "'yesterday'", f"{where} 6 column 'rpm': Input should be a valid integer") in reasons
    future = [r for r in reasons if r[2].startswith(f"{where} 7 column 'spd': event time is ")]
    assert future and "after received_at_ms=" in future[0][2] and future[0][1] == str(NOW_MS + 4 * 86_400_000)
    assert len(reasons) == 6


def test_samples_older_than_the_lateness_sla_land_in_curated_marked_as_backfill(s3, tmp_path, use_case):
    recording, mapping = _files(tmp_path, "time,spd,rpm,note\n2024-01-10 00:00:00,1.5,20,\n")
    # What ingest does with the same sample: refused, beyond the SLA.
    t0 = int(OLD.timestamp() * 1000)
    document = {
        "thing_name": THING,
        "line_id": LINE,
        "seq_first": 0,
        "seq_last": 0,
        "samples": {"metrics": ["speed"], "metric_index": [0], "time_ms": [t0], "values": [1.5]},
    }
    _, refused = validate_samples(document, use_case=use_case, received_at_ms=NOW_MS, lateness_sla_days=14)
    assert "beyond the lateness SLA of 14 days" in refused[0][0].error

    (report,) = _backfill([recording], mapping, use_case)

    assert report.landed == 2 and report.quarantined == 0
    curated = read_curated(BUCKET, LINE)
    assert read_late(BUCKET, LINE).empty
    assert (curated.ingest_time_ms == NOW_MS).all() and (curated.seq >= BACKFILL_SEQ_BASE).all()
    assert set(curated.seq) == {backfill_seq(t0, "speed"), backfill_seq(t0, "screw_rpm")}
    assert set(curated.thing_name) == {THING}
    match = BACKFILL_KEY.match(report.recording_key)
    assert match and match["thing"] == THING and match["backfill_id"] == report.backfill_id
    assert s3.get_object(Bucket=BUCKET, Key=report.recording_key)["Body"].read() == recording.read_bytes()
    lineage = BackfillLineage.model_validate(_json(s3, report.lineage_key))
    assert lineage.kind == "backfill" and lineage.lateness_sla == "not applied (backfill)"
    assert (lineage.received_at_ms, lineage.landed, lineage.partitions) == (NOW_MS, 2, report.partitions)
    assert _keys(s3, f"{names.RAW_PREFIX}/") == []  # nothing for the hot path or compaction
    # compaction's result is what triggers the rollups in AWS: backfill rebuilds its months itself
    assert report.rollup_months == ["2024-01"]
    assert read_rollups(BUCKET, LINE, "1m", months=["2024-01"])["count"].sum() == 2


def test_a_rerun_lands_nothing_again_and_a_corrected_file_only_its_fixed_reading(s3, tmp_path, use_case):
    recording, mapping = _files(tmp_path)
    (first,) = _backfill([recording], mapping, use_case)
    before = read_curated(BUCKET, LINE)

    (again,) = _backfill([recording], mapping, use_case, received_at_ms=NOW_MS + 60_000)
    assert again.duplicate_run and again.landed == 0 and again.quarantine_keys == []

    # A run that died before its lineage was written (the commit): the rerun stores each reading once.
    s3.delete_object(Bucket=BUCKET, Key=first.lineage_key)
    (retry,) = _backfill([recording], mapping, use_case, received_at_ms=NOW_MS + 120_000)
    assert (retry.landed, retry.already_stored) == (0, 7)
    after = read_curated(BUCKET, LINE)
    assert after[["metric", "time_ms", "value", "seq"]].equals(before[["metric", "time_ms", "value", "seq"]])
    assert len(_keys(s3, f"{names.CURATED_PREFIX}/line={LINE}/event_date=2024-01-10/")) == 1  # merged, one part

    fixed, _ = _files(tmp_path, MIXED.replace(",abc,", ",1.65,"))
    (corrected,) = _backfill([fixed], mapping, use_case, received_at_ms=NOW_MS + 180_000)
    assert corrected.backfill_id != first.backfill_id
    assert (corrected.landed, corrected.already_stored) == (1, 7)
    assert len(read_curated(BUCKET, LINE)) == 8


def test_the_mapping_context_block_is_stored_through_the_context_path(s3, tmp_path, use_case):
    mapping = MAPPING.replace("timezone: UTC}", "timezone: UTC}\ncontext:\n  runs: {column: note}\n")
    rows = "".join(f"2024-01-10 00:00:{2 * i:02d},1.5,20,{'A' if i < 5 else 'B'}\n" for i in range(10))
    recording, mapping_path = _files(tmp_path, "time,spd,rpm,note\n" + rows, mapping)
    (report,) = _backfill([recording], mapping_path, use_case, workers=2)  # validated in forked processes
    assert report.context_intervals == {"run": 2}
    runs = [(i.kind, i.value) for i in get_context_intervals(BUCKET, LINE)]
    assert runs == [(ContextKind.RUN, "A"), (ContextKind.RUN, "B")]
    assert BackfillLineage.model_validate(_json(s3, report.lineage_key)).context_intervals == {"run": 2}


def test_a_context_interval_the_context_path_refuses_is_refused_before_anything_is_written(s3, tmp_path, use_case):
    mapping = MAPPING.replace("timezone: UTC}", "timezone: UTC}\ncontext:\n  runs: {column: note}\n")
    run_b = "B\u2028C"  # a line break JSON leaves unescaped: the context path's strict rule refuses it
    rows = "".join(f"2024-01-10 00:00:{2 * i:02d},1.5,20,{'A' if i < 5 else run_b}\n" for i in range(10))
    recording, mapping_path = _files(tmp_path, "time,spd,rpm,note\n" + rows, mapping)
    with pytest.raises(BackfillError, match=r"rec\.csv: context interval 'run-line-1-.*': value=.* line break"):
        _backfill([recording], mapping_path, use_case)
    assert _keys(s3, "") == []


def test_a_file_lacking_a_mapped_column_is_refused_before_anything_is_written(s3, tmp_path, use_case):
    recording, mapping = _files(tmp_path, "time,spd\n2024-01-10 00:00:00,1.5\n")
    with pytest.raises(BackfillError, match=r"rec\.csv: the mapping names columns \['rpm'\] that the file lacks"):
        _backfill([recording], mapping, use_case)
    assert _keys(s3, "") == []


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("backfill")(backfill_command)
    app.command("other")(lambda: None)  # two commands: typer keeps `backfill` as a subcommand
    return app


def test_the_cli_exits_non_zero_naming_key_value_and_file_on_a_bad_mapping(s3, tmp_path):
    bad = MAPPING.replace("rpm: screw_rpm", "rpm: screw_speed_rpm")
    recording, mapping = _files(tmp_path, mapping=bad)
    result = CliRunner().invoke(
        _cli(), ["backfill", str(recording), "--mapping", str(mapping), "--line", LINE, "--use-case", "extrusion"]
    )
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"{mapping}: columns.rpm.metric='screw_speed_rpm' is not a metric of use case 'extrusion'" in message
    assert _keys(s3, "") == []


def test_the_cli_lands_a_recording_and_reports_it(s3, tmp_path, monkeypatch):
    recording, mapping = _files(tmp_path, MIXED.replace("2026-03-05 00:00:00,1.0,24,\n", ""))
    # The bucket and use case from a `local up` folder's local.env (--dir), not from this environment.
    monkeypatch.delenv(names.DATA_BUCKET_ENV)
    monkeypatch.delenv(names.USE_CASE_ENV)
    local = tmp_path / "local"
    write_env_file(local / names.LOCAL_ENV_FILE, {names.DATA_BUCKET_ENV: BUCKET, names.USE_CASE_ENV: "extrusion"})
    args = ["backfill", str(recording), "--mapping", str(mapping), "--line", LINE, "--dir", str(local)]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["landed"], summary["quarantined"], summary["partitions"]) == (7, 4, 2)


def test_a_long_recording_refuses_unknown_metric_keys_and_empty_values_as_ingest_does(s3, tmp_path, use_case):
    mapping = """layout: long
timestamp: {column: ts, format: epoch_ms}
long: {metric_column: tag, value_column: val, metrics: {SPD: speed}}
"""
    t0 = int(OLD.timestamp() * 1000)
    recording = f"ts,tag,val\n{t0},SPD,1.5\n{t0},screw_rpm,20\n{t0 + 2000},FOO,3\n{t0 + 2000},SPD,\n"
    recording, mapping_path = _files(tmp_path, recording, mapping)
    (report,) = _backfill([recording], mapping_path, use_case)
    assert sorted(zip(*[read_curated(BUCKET, LINE)[c] for c in ("metric", "value")])) == [
        ("screw_rpm", 20.0),
        ("speed", 1.5),
    ]
    (key,) = report.quarantine_keys
    reasons = {(r.field, r.value, r.error) for r in QuarantineRecord.model_validate(_json(s3, key)).reasons}
    assert reasons == {
        ("tag", "'FOO'", f"{recording} line 4 column 'val': metric is not accepted by use case 'extrusion'"),
        ("val", "None", f"{recording} line 5 column 'val': Input should be a valid number"),
    }
