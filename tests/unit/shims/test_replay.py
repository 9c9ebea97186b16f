"""Replay of recorded files: mapping validation, wide and long layouts, timestamp formats, pacing, the gateway path."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from gateway_helpers import FakeClock, extrusion_gateway_config

from edgeloop.device_shims.lateness import LatenessRefused
from edgeloop.device_shims.replay import Replay, main
from edgeloop.device_shims.replay_mapping import ReplayMapping
from edgeloop.device_shims.replay_pacing import paced_chunks
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.schemas import ContextInterval, load_use_case
from edgeloop.schemas.telemetry_codec import decode_batch
from edgeloop.schemas.use_case import USE_CASES_DIR

EXAMPLES = Path(__file__).resolve().parents[3] / "device_shims" / "examples"
EXAMPLE_CSV = EXAMPLES / "extrusion_recording.csv"
EXAMPLE_MAPPING = EXAMPLES / "extrusion_recording.mapping.yaml"
USE_CASE = load_use_case("extrusion")
# The wall clock of replays whose recordings must be within the lateness SLA: a day after the example.
EXAMPLE_DAY_AFTER = datetime(2026, 3, 3, tzinfo=UTC).timestamp


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


class FakeTransport:
    """Acknowledges every publish at once and keeps the payloads."""

    def __init__(self) -> None:
        self.connected = False
        self.published: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()

    def connect(self, timeout_s: float) -> None:
        self.connected = True

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        with self._lock:
            self.published.append((topic, payload))

    def subscribe(self, topic_filter, callback, timeout_s: float) -> None:
        pass

    @property
    def is_connected(self) -> bool:
        return self.connected

    def disconnect(self) -> None:
        self.connected = False

    def samples(self) -> list[tuple[str, int, float]]:
        out = []
        for topic, payload in self.published:
            if not topic.endswith("/telemetry"):
                continue
            s = decode_batch(payload).samples
            out += [(s.metrics[i], t, v) for i, t, v in zip(s.metric_index, s.time_ms, s.values, strict=True)]
        return out


def gateway_config(tmp_path: Path, **changes) -> GatewayConfig:
    return extrusion_gateway_config(tmp_path / "buffer.db", thing_name="gw-replay-1", **changes)


def mapping(**document) -> ReplayMapping:
    base = {"timestamp": {"column": "time", "format": "epoch_ms"}, "columns": {"speed": "speed"}}
    return ReplayMapping.model_validate({**base, **document})


def write_mapping(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def rows_of(replay: Replay, path: Path) -> list:
    return list(replay.rows(path))


# --- mapping validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"timestamp": {"column": "time", "format": "yyyy-mm-dd"}}, "timestamp.format='yyyy-mm-dd'"),
        ({"timestamp": {"column": "time", "timezone": "Mars/Olympus"}}, "timestamp.timezone='Mars/Olympus'"),
        ({"speed": -2}, "speed=-2"),
        ({"layout": "sideways"}, "layout='sideways'"),
        ({"columns": {"speed": {}}}, "columns.speed={}"),
        ({"columns": {}}, "layout='wide' needs `columns`"),
        ({"layout": "long", "columns": {}}, "layout='long' needs `long"),
        ({"line_id": "Line 1"}, "line_id='Line 1'"),
        ({"thing_name": "gw 1"}, "thing_name='gw 1'"),
        ({"colums": {"a": "speed"}}, "colums="),
        ({"columns": {"time": "speed"}}, "timestamp.column='time' is also mapped"),
    ],
)
def test_invalid_mapping_names_the_field_and_the_value(tmp_path, change, expected):
    document = {"timestamp": {"column": "time", "format": "epoch_ms"}, "columns": {"speed": "speed"}, **change}
    path = write_mapping(tmp_path, document)
    with pytest.raises(ValueError, match="invalid replay mapping") as error:
        ReplayMapping.from_file(path)
    assert expected in str(error.value)
    assert str(path) in str(error.value)


def test_mapping_that_is_not_yaml_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("timestamp: [unclosed")
    with pytest.raises(ValueError, match="not YAML"):
        ReplayMapping.from_file(path)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"metric": "humidity"}, "columns.x.metric='humidity' is not a metric of use case 'extrusion'"),
        ({"role": "humidity"}, "columns.x.role='humidity': no metric of use case 'extrusion'"),
        ({"metric": "speed", "role": "die_temperature"}, "metric 'speed' carries role 'line_speed'"),
    ],
)
def test_metric_and_role_are_checked_against_the_use_case(tmp_path, entry, expected):
    with pytest.raises(ValueError) as error:
        Replay(mapping(columns={"x": entry}), gateway_config(tmp_path))
    assert expected in str(error.value)


def test_role_resolves_to_the_lines_own_key(tmp_path):
    replay = Replay(mapping(columns={"x": {"role": "die_temperature"}}), gateway_config(tmp_path))
    assert replay.column_metrics == {"x": "temp_die"}


def test_mapping_for_another_thing_is_refused_and_line_override_applies(tmp_path):
    with pytest.raises(ValueError, match="thing_name='gw-other' differs"):
        Replay(mapping(thing_name="gw-other"), gateway_config(tmp_path))
    assert Replay(mapping(line_id="line-9"), gateway_config(tmp_path)).gateway.line_id == "line-9"


def test_the_example_mapping_is_valid_and_matches_its_recording(tmp_path):
    replay = Replay(ReplayMapping.from_file(EXAMPLE_MAPPING), gateway_config(tmp_path))
    rows = rows_of(replay, EXAMPLE_CSV)
    assert len(rows) == 30 and all(len(samples) == 5 for _, samples in rows)
    # 08:00 in Brussels in March is 07:00 UTC
    assert rows[0][0] == ms("2026-03-02T07:00:00+00:00")
    assert rows[0][1] == [
        ("speed", rows[0][0], 120.0),
        ("screw_rpm", rows[0][0], 38.25),
        ("temp_die", rows[0][0], 205.3),
        ("pressure", rows[0][0], 182.0),
        ("cold_od_average", rows[0][0], 2.9),
    ]


# --- wide and long --------------------------------------------------------------------------------
def test_wide_csv_skips_empty_cells_keeps_bad_values_for_the_gateway_and_ignores_unmapped_columns(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("time,spd,die,note\n1000,10.5,200,a\n2000,,201,b\n3000,NaN,abc,c\n")
    replay = Replay(mapping(columns={"spd": "speed", "die": "temp_die"}), gateway_config(tmp_path))
    rows = rows_of(replay, path)
    assert rows[0] == (1000, [("speed", 1000, 10.5), ("temp_die", 1000, 200.0)])
    assert rows[1] == (2000, [("temp_die", 2000, 201.0)])
    (_, (speed, die)) = rows[2]
    assert speed[:2] == ("speed", 3000) and speed[2] != speed[2]  # NaN, refused later as non_finite
    assert die == ("temp_die", 3000, "abc")


def test_a_column_the_file_lacks_is_named(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("time,spd\n1000,1\n")
    replay = Replay(mapping(columns={"spd": "speed", "die": "temp_die"}), gateway_config(tmp_path))
    with pytest.raises(ValueError, match=r"columns \['die'\] that the file lacks"):
        rows_of(replay, path)


def test_unknown_suffix_is_refused(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(ValueError, match="'.xlsx' is neither CSV"):
        rows_of(Replay(mapping(columns={"spd": "speed"}), gateway_config(tmp_path)), path)


def test_long_csv_renames_mapped_keys_and_passes_the_others(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("tag,ts,val\nLINE_SPEED,1000,10.5\ntemp_die,1000,200\nhumidity,1000,40\nLINE_SPEED,2000,\n")
    replay = Replay(
        ReplayMapping.model_validate(
            {
                "layout": "long",
                "timestamp": {"column": "ts", "format": "epoch_ms"},
                "long": {"metric_column": "tag", "value_column": "val", "metrics": {"LINE_SPEED": "speed"}},
            }
        ),
        gateway_config(tmp_path),
    )
    assert rows_of(replay, path) == [
        (1000, [("speed", 1000, 10.5)]),
        (1000, [("temp_die", 1000, 200.0)]),
        (1000, [("humidity", 1000, 40.0)]),
        (2000, [("speed", 2000, None)]),
    ]


def test_long_layout_columns_must_differ():
    with pytest.raises(ValueError, match="must differ"):
        ReplayMapping.model_validate(
            {
                "layout": "long",
                "timestamp": {"column": "t"},
                "long": {"metric_column": "t", "value_column": "v"},
            }
        )


def test_parquet_nulls_are_gaps_and_nan_is_a_value(tmp_path):
    path = tmp_path / "wide.parquet"
    table = pa.table(
        {
            "time": pa.array([1000, 2000, 3000], pa.int64()),
            "spd": pa.array([1.0, None, float("nan")], pa.float64()),
        }
    )
    pq.write_table(table, path)
    rows = rows_of(Replay(mapping(columns={"spd": "speed"}), gateway_config(tmp_path)), path)
    assert rows[0] == (1000, [("speed", 1000, 1.0)])
    assert rows[1] == (2000, [])
    assert rows[2][1][0][2] != rows[2][1][0][2]


# --- timestamp formats ----------------------------------------------------------------------------
def times_of(tmp_path: Path, cells: list[str], fmt: str, zone: str = "UTC") -> list[int | None]:
    path = tmp_path / "t.csv"
    path.write_text("time,spd\n" + "".join(f"{c},1\n" for c in cells))
    replay = Replay(
        mapping(timestamp={"column": "time", "format": fmt, "timezone": zone}, columns={"spd": "speed"}),
        gateway_config(tmp_path),
    )
    return [t for t, _ in rows_of(replay, path)]


def test_epoch_seconds_and_milliseconds(tmp_path):
    assert times_of(tmp_path, ["1700000000", "1700000000.5", "x"], "epoch_s") == [
        1_700_000_000_000,
        1_700_000_000_500,
        None,
    ]
    assert times_of(tmp_path, ["1700000000123", ""], "epoch_ms") == [1_700_000_000_123, None]


def test_strftime_format_in_a_time_zone_with_dst(tmp_path):
    cells = ["02/03/2026 08:00", "29/03/2026 02:30", "01/07/2026 08:00", "noon"]
    # 02:30 on 29 March does not exist in Brussels (clocks jump 02:00 -> 03:00): no usable time
    assert times_of(tmp_path, cells, "%d/%m/%Y %H:%M", "Europe/Brussels") == [
        ms("2026-03-02T07:00:00+00:00"),
        None,
        ms("2026-07-01T06:00:00+00:00"),
        None,
    ]


def test_strftime_with_offsets(tmp_path):
    cells = ["2026-03-02 08:00:00+0100", "2026-07-01 08:00:00+0200"]
    assert times_of(tmp_path, cells, "%Y-%m-%d %H:%M:%S%z", "Asia/Tokyo") == [
        ms("2026-03-02T07:00:00+00:00"),
        ms("2026-07-01T06:00:00+00:00"),
    ]


def test_iso8601_mixes_offsets_and_local_times(tmp_path):
    cells = ["2026-03-02T08:00:00+01:00", "2026-07-01T08:00:00Z", "2026-07-01T08:00:00", "garbage"]
    assert times_of(tmp_path, cells, "iso8601", "Europe/Brussels") == [
        ms("2026-03-02T07:00:00+00:00"),
        ms("2026-07-01T08:00:00+00:00"),
        ms("2026-07-01T06:00:00+00:00"),
        None,
    ]


def test_parquet_timestamp_columns_need_iso8601_not_epoch(tmp_path):
    path = tmp_path / "ts.parquet"
    stamps = pd.to_datetime(["2026-03-02 08:00:00", "2026-03-02 08:00:01"])
    pq.write_table(pa.table({"time": pa.array(stamps), "spd": [1.0, 2.0]}), path)
    local = Replay(
        mapping(
            timestamp={"column": "time", "format": "iso8601", "timezone": "Europe/Brussels"}, columns={"spd": "speed"}
        ),
        gateway_config(tmp_path),
    )
    assert [t for t, _ in rows_of(local, path)] == [ms("2026-03-02T07:00:00+00:00"), ms("2026-03-02T07:00:01+00:00")]
    with pytest.raises(ValueError, match="timestamp.format='epoch_ms', but column 'time' holds timestamps"):
        rows_of(Replay(mapping(columns={"spd": "speed"}), gateway_config(tmp_path)), path)


def test_bad_timestamps_are_reported_with_the_first_value(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="edgeloop.replay"):
        times_of(tmp_path, ["1000", "soon", "later"], "epoch_ms")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "2 rows have no usable timestamp" in line and "row 2 value 'soon'" in line


# --- pacing ---------------------------------------------------------------------------------------
def release_times(rows, speed: float, max_samples: int = 1000) -> tuple[list[tuple[float, list]], FakeClock]:
    clock = FakeClock(start=100.0)
    released = [(clock.now, chunk) for chunk in paced_chunks(rows, speed, clock, clock.sleep, max_samples)]
    return released, clock


def row(t: int | None, n: int = 1) -> tuple[int | None, list]:
    return t, [("speed", t, float(i)) for i in range(n)]


def test_real_time_and_faster_playback_follow_the_recordings_timeline():
    rows = [row(10_000), row(11_000), row(11_000), row(13_000)]
    released, _ = release_times(rows, speed=1)
    assert [(at - 100.0, len(chunk)) for at, chunk in released] == [(0.0, 1), (1.0, 2), (3.0, 1)]
    released, _ = release_times(rows, speed=4)
    assert [at - 100.0 for at, _ in released] == [0.0, 0.25, 0.75]


def test_speed_zero_never_sleeps_and_chunks_by_size():
    rows = [row(i * 1000, n=3) for i in range(10)]
    released, clock = release_times(rows, speed=0, max_samples=7)
    assert clock.sleeps == []
    assert [len(chunk) for _, chunk in released] == [9, 9, 9, 3]


def test_rows_out_of_order_or_without_time_do_not_wait():
    released, clock = release_times([row(5000), row(7000), row(1000), row(None), row(8000)], speed=1)
    assert clock.sleeps == [2.0, 1.0]
    assert [len(chunk) for _, chunk in released] == [1, 3, 1]


# --- the gateway path -----------------------------------------------------------------------------
def test_replay_pushes_the_example_through_validator_buffer_and_publisher(tmp_path):
    transport = FakeTransport()
    replay = Replay(ReplayMapping.from_file(EXAMPLE_MAPPING), gateway_config(tmp_path), wall_clock=EXAMPLE_DAY_AFTER)
    report = replay.run(EXAMPLE_CSV, transport=transport, drain_timeout_s=10)
    assert (report.rows, report.samples_offered, report.accepted, report.rejected) == (30, 150, 150, {})
    assert (report.published_samples, report.pending) == (150, 0)
    samples = transport.samples()
    assert len(samples) == 150
    assert {m for m, _, _ in samples} == {"speed", "screw_rpm", "temp_die", "pressure", "cold_od_average"}
    # the mapping's context block first: one message on the context topic, then the telemetry
    assert [topic for topic, _ in transport.published[:2]] == [
        "edgeloop/gw-replay-1/context",
        "edgeloop/gw-replay-1/telemetry",
    ]
    intervals = [ContextInterval.model_validate(i) for i in json.loads(transport.published[0][1])]
    assert [(i.kind.value, i.value, i.line_id) for i in intervals] == [
        ("run", "EXT-290", "line-1"),
        ("state", "running", "line-1"),
    ]
    assert intervals[0].spec.lower == 2.85 and intervals[0].start == datetime(2026, 3, 2, 7, tzinfo=UTC)
    assert (report.context, report.context_published) == ({"run": 1, "state": 1}, 2)


def test_bad_rows_get_counted_reasons_and_the_rest_is_published(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text(
        "tag,ts,val\n"
        "speed,1000,1\n"
        "speed,1000,2\n"  # duplicate time
        "speed,500,3\n"  # out of order
        "humidity,1000,40\n"  # unknown metric
        "speed,2000,inf\n"  # non-finite
        "speed,3000,high\n"  # non-numeric
        "speed,never,4\n"  # bad time
        "speed,4000,\n"  # empty value
        "speed,5000,5\n"
    )
    mapping_doc = {
        "layout": "long",
        "timestamp": {"column": "ts"},
        "long": {"metric_column": "tag", "value_column": "val"},
        "line_id": "line-7",
    }
    transport = FakeTransport()
    report = Replay(ReplayMapping.model_validate(mapping_doc), gateway_config(tmp_path), wall_clock=lambda: 10.0).run(
        path, transport=transport, drain_timeout_s=10
    )
    assert report.accepted == 2 and report.rows == 9 and report.bad_time_rows == 1
    assert report.rejected == {
        "duplicate_time": 1,
        "out_of_order": 1,
        "unknown_metric": 1,
        "non_finite": 1,
        "non_numeric": 2,
        "bad_time": 1,
    }
    assert transport.samples() == [("speed", 1000, 1.0), ("speed", 5000, 5.0)]
    assert {decode_batch(p).line_id for _, p in transport.published} == {"line-7"}


def test_replay_paces_appends_on_the_injected_clock(tmp_path):
    path = tmp_path / "paced.csv"
    path.write_text("time,spd\n" + "".join(f"{1000 * i},{i}\n" for i in range(5)))
    clock = FakeClock(start=100.0)
    replay = Replay(
        mapping(columns={"spd": "speed"}, speed=10),
        gateway_config(tmp_path),
        clock=clock,
        sleep=clock.sleep,
        wall_clock=lambda: 10.0,
    )
    report = replay.run(path, transport=FakeTransport(), drain_timeout_s=10)
    assert report.accepted == 5
    assert clock.sleeps == pytest.approx([0.1, 0.1, 0.1, 0.1])


def test_undelivered_samples_stay_buffered_and_are_reported(tmp_path):
    class DeadLink(FakeTransport):
        def connect(self, timeout_s: float) -> None:
            from edgeloop.greengrass_components.gateway.transport import ConnectFailed

            raise ConnectFailed("broker unreachable")

    report = Replay(
        ReplayMapping.from_file(EXAMPLE_MAPPING), gateway_config(tmp_path), wall_clock=EXAMPLE_DAY_AFTER
    ).run(EXAMPLE_CSV, transport=DeadLink(), drain_timeout_s=0.2)
    assert report.accepted == 150 and report.published_samples == 0 and report.pending == 150
    assert (report.context_published, report.context_pending) == (0, 2)
    assert "broker unreachable" in report.context_error


def test_module_entry_point_refuses_a_greengrass_gateway_config_with_a_clear_message(tmp_path, capsys):
    config_path = gateway_config(tmp_path).to_file(tmp_path / "gw.json")
    code = main(["--mapping", str(EXAMPLE_MAPPING), "--gateway-config", str(config_path), str(EXAMPLE_CSV)])
    assert code == 2
    assert "transport='greengrass': replay talks MQTT only" in capsys.readouterr().err


def test_speed_override_is_validated(tmp_path, capsys):
    config_path = gateway_config(tmp_path).to_file(tmp_path / "gw.json")
    code = main(
        ["--mapping", str(EXAMPLE_MAPPING), "--gateway-config", str(config_path), "--speed", "-1", str(EXAMPLE_CSV)]
    )
    assert code == 2
    assert "--speed: speed=-1.0" in capsys.readouterr().err


def test_timezone_naive_datetimes_are_utc_by_default(tmp_path):
    assert times_of(tmp_path, ["2026-03-02T08:00:00"], "iso8601") == [
        int(datetime(2026, 3, 2, 8, tzinfo=UTC).timestamp() * 1000)
    ]


# --- the lateness SLA and the context block ---------------------------------------------------------
def day(text: str):
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp


def test_replay_refuses_rows_beyond_the_lateness_sla_before_anything_is_buffered_or_published(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGELOOP_LATENESS_SLA_DAYS", raising=False)
    transport = FakeTransport()
    replay = Replay(ReplayMapping.from_file(EXAMPLE_MAPPING), gateway_config(tmp_path), wall_clock=day("2026-03-20"))
    with pytest.raises(LatenessRefused) as error:
        replay.run(EXAMPLE_CSV, transport=transport, drain_timeout_s=1)
    message = str(error.value)
    assert f"{EXAMPLE_CSV}: 30 of 30 rows are older than the lateness SLA of 14 days" in message
    assert f"`edgeloop backfill {EXAMPLE_CSV} --mapping" in message and "nothing was published" in message
    assert transport.published == [] and not (tmp_path / "buffer.db").exists()
    # the SLA ingest is configured with (same variable) decides
    monkeypatch.setenv("EDGELOOP_LATENESS_SLA_DAYS", "30")
    assert replay.run(EXAMPLE_CSV, transport=transport, drain_timeout_s=10).accepted == 150


def test_shift_to_now_moves_samples_and_context_so_the_last_row_is_now(tmp_path):
    now = datetime(2026, 12, 6, 7, 30, 0, 400_000, tzinfo=UTC)
    transport = FakeTransport()
    replay = Replay(
        ReplayMapping.from_file(EXAMPLE_MAPPING), gateway_config(tmp_path), wall_clock=now.timestamp, shift_to_now=True
    )
    report = replay.run(EXAMPLE_CSV, transport=transport, drain_timeout_s=10)
    last = int(datetime(2026, 12, 6, 7, 30, tzinfo=UTC).timestamp() * 1000)  # whole seconds
    assert report.time_shift_ms == last - ms("2026-03-02T07:00:29+00:00")
    assert max(t for _, t, _ in transport.samples()) == last and report.accepted == 150
    run = ContextInterval.model_validate(json.loads(transport.published[0][1])[0])
    assert run.start == datetime(2026, 12, 6, 7, 29, 31, tzinfo=UTC)  # the first row, 29 s before the last


def test_bad_context_configuration_refuses_the_replay_before_anything_is_published(tmp_path):
    document = yaml.safe_load(EXAMPLE_MAPPING.read_text())
    document["context"]["states"]["rules"][0]["when"] = "screw_speed < 1"
    transport = FakeTransport()
    replay = Replay(ReplayMapping.model_validate(document), gateway_config(tmp_path), wall_clock=EXAMPLE_DAY_AFTER)
    with pytest.raises(ValueError) as error:
        replay.run(EXAMPLE_CSV, transport=transport, drain_timeout_s=1)
    assert str(error.value).startswith(
        f"{EXAMPLE_CSV}: context.states.rules[0].when='screw_speed < 1' names column 'screw_speed', "
        "which the file lacks (columns: ['time', 'line_speed_mpm'"
    )
    assert transport.published == [] and not (tmp_path / "buffer.db").exists()


def test_a_timestamp_format_that_matches_nothing_refuses_the_replay(tmp_path):
    transport = FakeTransport()
    replay = Replay(mapping(columns={"spd": "speed"}), gateway_config(tmp_path), wall_clock=lambda: 10.0)
    path = tmp_path / "iso.csv"
    path.write_text("time,spd\n2026-03-02 08:00:00,1\n2026-03-02 08:00:01,2\n")
    with pytest.raises(ValueError, match=r"timestamp.format='epoch_ms' .*does not parse 2 of 2 rows .*row 1 value"):
        replay.run(path, transport=transport, drain_timeout_s=1)
    assert transport.published == []


def test_gateway_replay_command_exits_non_zero_naming_the_sla_and_backfill(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgeloop.cli.gateway import gateway_app

    monkeypatch.delenv("EDGELOOP_LATENESS_SLA_DAYS", raising=False)
    mqtt = dict(broker_host="localhost", broker_port=8883, cert_path=tmp_path / "c", key_path=tmp_path / "k")
    config = gateway_config(tmp_path).model_copy(update={"transport": "mqtt", "ca_path": tmp_path / "ca", **mqtt})
    config_path = config.to_file(tmp_path / "gw.json")
    args = ["replay", str(EXAMPLE_CSV), "--mapping", str(EXAMPLE_MAPPING), "--gateway-config", str(config_path)]
    result = CliRunner().invoke(gateway_app, args)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "replay failed:" in text and "older than the lateness SLA of 14 days" in text
    assert f"`edgeloop backfill {EXAMPLE_CSV} --mapping {EXAMPLE_MAPPING} --line line-1 --thing gw-replay-1`" in text
    assert "--shift-to-now" in text
    assert not (tmp_path / "buffer.db").exists()
    # a mistake in the context block comes first, its brackets intact
    document = yaml.safe_load(EXAMPLE_MAPPING.read_text())
    document["context"]["limits"] = {"fixed": {"EXT-310": [3.0, 3.2]}}
    bad_mapping = write_mapping(tmp_path, document)
    args[3] = str(bad_mapping)
    result = CliRunner().invoke(gateway_app, args)
    assert result.exit_code == 2
    assert "context.limits.fixed has no [lower, upper] for run value 'EXT-290'" in " ".join(result.output.split())


def test_a_use_case_file_must_be_the_gateways_use_case(tmp_path, capsys):
    config_path = gateway_config(tmp_path).to_file(tmp_path / "gw.json")
    document = yaml.safe_load((USE_CASES_DIR / "extrusion.yaml").read_text())
    other = tmp_path / "pipe.yaml"
    other.write_text(yaml.safe_dump({**document, "use_case": "pipe_line"}))
    arguments = ["--mapping", str(EXAMPLE_MAPPING), "--gateway-config", str(config_path)]
    code = main([*arguments, "--use-case-file", str(other), str(EXAMPLE_CSV)])
    assert code == 2
    error = capsys.readouterr().err
    assert f"{config_path}: use_case='extrusion'" in error and "use_case='pipe_line'" in error
