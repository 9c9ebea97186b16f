"""The mapping's `context:` block: runs, spec limits and machine states derived from a recording, and
every bad configuration refused with its key, its value and the file."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from edgeloop.device_shims.context_publishing import context_messages, context_payloads
from edgeloop.device_shims.context_rows import interval_id
from edgeloop.device_shims.lateness import LatenessRefused, check_lateness, lateness_sla_days
from edgeloop.device_shims.recording_context import join_recordings, recording_context
from edgeloop.device_shims.replay_mapping import ReplayMapping
from edgeloop.schemas import ContextInterval, ContextKind, IotRuleEvent, load_use_case, names
from edgeloop.schemas.bounded_json import MAX_CONTEXT_INTERVALS, MAX_CONTEXT_JSON, loads_bounded

USE_CASE = load_use_case("extrusion")  # target cold_od_average, productive_states [running]
T0 = 1_772_000_000_000  # epoch ms, on a whole minute
MIN = 60_000


def mapping_doc(context: dict, **extra) -> dict:
    return {
        "timestamp": {"column": "t", "format": "epoch_ms"},
        "columns": {"od": "cold_od_average", "rpm": "screw_rpm"},
        "context": context,
        **extra,
    }


def write_csv(path: Path, rows: dict[str, list]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def derive(tmp_path: Path, rows: dict[str, list], context: dict, name: str = "rec.csv") -> list[ContextInterval]:
    path = write_csv(tmp_path / name, rows)
    return recording_context([path], ReplayMapping.model_validate(mapping_doc(context)), "line-1", USE_CASE)


def of(intervals: list[ContextInterval], kind: ContextKind) -> list[tuple]:
    return [
        (
            (i.start - datetime.fromtimestamp(T0 / 1000, UTC)).total_seconds() / 60,
            (i.end - datetime.fromtimestamp(T0 / 1000, UTC)).total_seconds() / 60,
            i.value,
            (round(i.spec.lower, 6), round(i.spec.upper, 6)) if i.spec else None,
        )
        for i in intervals
        if i.kind is kind
    ]


def minutes(n: int) -> list[int]:
    """One row per minute for n minutes."""
    return [T0 + k * MIN for k in range(n)]


# --- runs --------------------------------------------------------------------------------------------
def test_runs_follow_the_product_column_and_empty_cells_continue_a_run(tmp_path):
    rows = {
        "t": minutes(6),
        "product": ["A", "", "A", "B", "", "C"],
        "od": [2.9] * 6,
        "rpm": [38] * 6,
    }
    intervals = derive(tmp_path, rows, {"runs": {"column": "product"}, "limits": {"fixed": [2.85, 2.95]}})
    assert of(intervals, ContextKind.RUN) == [
        (0, 3, "A", (2.85, 2.95)),
        (3, 5, "B", (2.85, 2.95)),
        (5, 6, "C", (2.85, 2.95)),  # the last run ends one sample step after its last row
    ]
    assert intervals[0].interval_id == interval_id(ContextKind.RUN, "line-1", T0) == "run-line-1-20260225T061320.000Z"
    assert {i.spec.target_metric for i in intervals} == {"cold_od_average"}


def test_one_run_per_file_named_by_value_or_by_the_files_stem(tmp_path):
    rows = {"t": minutes(3), "od": [2.9] * 3, "rpm": [38] * 3}
    assert of(derive(tmp_path, rows, {}, name="shift-7.csv"), ContextKind.RUN) == [(0, 3, "shift-7", None)]
    assert of(derive(tmp_path, rows, {"runs": {"value": "EXT-290"}}), ContextKind.RUN) == [(0, 3, "EXT-290", None)]


def test_fixed_limits_per_product(tmp_path):
    rows = {"t": minutes(4), "product": ["A", "A", "B", "B"], "od": [2.9] * 4, "rpm": [38] * 4}
    context = {"runs": {"column": "product"}, "limits": {"fixed": {"A": [2.8, 3.0], "B": [3.1, 3.3]}}}
    assert [r[3] for r in of(derive(tmp_path, rows, context), ContextKind.RUN)] == [(2.8, 3.0), (3.1, 3.3)]


def test_rows_out_of_order_inside_a_run_are_fine_and_rows_without_time_are_left_out(tmp_path):
    rows = {
        "t": [T0 + MIN, T0, "never", T0 + 2 * MIN, T0 + 3 * MIN],
        "product": ["A", "A", "B", "B", "B"],
        "od": [2.9] * 5,
        "rpm": [38] * 5,
    }
    assert of(derive(tmp_path, rows, {"runs": {"column": "product"}}), ContextKind.RUN) == [
        (0, 2, "A", None),
        (2, 4, "B", None),
    ]


# --- states ------------------------------------------------------------------------------------------
def test_first_matching_rule_wins_else_the_default_and_short_spells_merge(tmp_path):
    rpm = [38, 38, 0, 0, 0, 38, 38, 0.5, 38, 38, 38, 38]  # minute 7: a one-minute dip
    speed = [100, 100, 100, 0, 0, 100, 100, 100, 100, 100, 2, 2]
    rows = {"t": minutes(12), "od": [2.9] * 12, "rpm": rpm, "speed": speed}
    states = {
        "default": "running",
        "rules": [
            {"when": "rpm < 1", "state": "idle"},  # wins over the next rule at minutes 3-4
            {"when": ["speed < 5"], "state": "down"},
            {"when": ["speed < 5", "rpm >= 1"], "state": "changeover"},  # never reached: rule 2 matched
        ],
        "min_duration_s": 90,
    }
    assert [(s, e, v) for s, e, v, _ in of(derive(tmp_path, rows, {"states": states}), ContextKind.STATE)] == [
        (0, 2, "running"),
        (2, 5, "idle"),
        (5, 10, "running"),  # the 1-minute idle at minute 7 merged into the running before it
        (10, 12, "down"),
    ]
    states["min_duration_s"] = 0
    spells = [v for _, _, v, _ in of(derive(tmp_path, rows, {"states": states}), ContextKind.STATE)]
    assert spells == ["running", "idle", "running", "idle", "running", "down"]


def test_changeover_covers_the_minutes_after_each_run_change(tmp_path):
    rows = {"t": minutes(12), "product": ["A"] * 4 + ["B"] * 8, "od": [2.9] * 12, "rpm": [38] * 4 + [0] + [38] * 7}
    states = {"rules": [{"when": "rpm < 1", "state": "idle"}], "changeover_min": 3, "min_duration_s": 0}
    intervals = derive(tmp_path, rows, {"runs": {"column": "product"}, "states": states})
    assert [(s, e, v) for s, e, v, _ in of(intervals, ContextKind.STATE)] == [
        (0, 4, "running"),  # the first run of the file: no change before it
        (4, 7, "changeover"),  # wins over the idle rule at minute 4
        (7, 12, "running"),
    ]


def test_text_conditions_and_empty_cells_match_nothing(tmp_path):
    rows = {"t": minutes(4), "od": [2.9] * 4, "rpm": [38, "", 38, 38], "mode": ["AUTO", "OFF", "", "OFF"]}
    states = {
        "rules": [{"when": "mode == OFF", "state": "down"}, {"when": "rpm < 1", "state": "idle"}],
        "min_duration_s": 0,
    }
    assert [v for _, _, v, _ in of(derive(tmp_path, rows, {"states": states}), ContextKind.STATE)] == [
        "running",
        "down",
        "running",
        "down",
    ]


# --- limits ------------------------------------------------------------------------------------------
def test_setpoint_band_gives_a_limits_interval_per_setpoint_and_per_run(tmp_path):
    rows = {
        "t": minutes(6),
        "product": ["A", "A", "A", "B", "B", "B"],
        "sp": ["", 2.9, 3.0, 3.0, "", 3.2],  # empty: the setpoint before holds
        "od": [2.9] * 6,
        "rpm": [38] * 6,
    }
    context = {"runs": {"column": "product"}, "limits": {"setpoint": "sp", "band": 0.05}}
    intervals = derive(tmp_path, rows, context)
    assert of(intervals, ContextKind.LIMITS) == [
        (1, 2, "setpoint 2.9 ± 0.05", (2.85, 2.95)),  # minute 0 has no setpoint yet: no limits
        (2, 3, "setpoint 3 ± 0.05", (2.95, 3.05)),
        (3, 5, "setpoint 3 ± 0.05", (2.95, 3.05)),  # a new run: a new interval
        (5, 6, "setpoint 3.2 ± 0.05", (3.15, 3.25)),
    ]
    assert [r[3] for r in of(intervals, ContextKind.RUN)] == [None, None]  # limits ride on LIMITS intervals
    context["limits"] = {"setpoint": "sp", "relative_band": 0.1}
    assert of(derive(tmp_path, rows, context), ContextKind.LIMITS)[0][2:] == ("setpoint 2.9 ± 10 %", (2.61, 3.19))


def test_limit_columns(tmp_path):
    rows = {"t": minutes(3), "lo": [2.8, 2.8, 2.7], "hi": [3.0, 3.0, 3.0], "od": [2.9] * 3, "rpm": [38] * 3}
    intervals = derive(tmp_path, rows, {"limits": {"columns": {"lower": "lo", "upper": "hi"}}})
    assert of(intervals, ContextKind.LIMITS) == [(0, 2, "[2.8, 3]", (2.8, 3.0)), (2, 3, "[2.7, 3]", (2.7, 3.0))]


def test_run_median_is_taken_over_the_productive_rows_only(tmp_path):
    rows = {
        "t": minutes(8),
        "product": ["A"] * 4 + ["B"] * 4,
        "od": [2.9, 2.92, 9.0, 2.94, 3.1, 3.1, 3.3, ""],  # 9.0 while idle is left out
        "rpm": [38, 38, 0, 38, 38, 38, 38, 38],
    }
    context = {
        "runs": {"column": "product"},
        "limits": {"run_median": True, "band": 0.1},
        "states": {"rules": [{"when": "rpm < 1", "state": "idle"}], "min_duration_s": 0},
    }
    assert of(derive(tmp_path, rows, context), ContextKind.LIMITS) == [
        (0, 4, "run median 2.92 ± 0.1", (2.82, 3.02)),
        (4, 8, "run median 3.1 ± 0.1", (3.0, 3.2)),
    ]


def test_a_million_rows_take_seconds_not_minutes(tmp_path):
    n = 1_000_000
    k = np.arange(n)
    frame = pd.DataFrame(
        {
            "product": np.where(k < n // 2, "A", "B"),
            "sp": np.where(k % 100_000 < 50_000, "2.9", "3.0"),
            "rpm": np.where((k // 5000) % 7 == 0, "0", "38.5"),
            "od": "2.9",
        }
    )
    from edgeloop.device_shims.recording_context import context_intervals

    mapping = ReplayMapping.model_validate(
        mapping_doc(
            {
                "runs": {"column": "product"},
                "limits": {"setpoint": "sp", "band": 0.05},
                "states": {"rules": [{"when": "rpm < 1", "state": "idle"}], "changeover_min": 10},
            }
        )
    )
    started = datetime.now()
    intervals = context_intervals(frame, T0 + k * 2000, np.ones(n, bool), mapping, "line-1", USE_CASE, source="big.csv")
    elapsed = (datetime.now() - started).total_seconds()
    counts = {kind: len(of(intervals, kind)) for kind in (ContextKind.RUN, ContextKind.STATE, ContextKind.LIMITS)}
    assert counts == {ContextKind.RUN: 2, ContextKind.STATE: 60, ContextKind.LIMITS: 20}
    assert elapsed < 8, elapsed  # ~1-2 s here; a loop over the rows in Python takes far longer


# --- configuration errors: key, value, file ------------------------------------------------------
@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"limits": {"band": 0.05}}, "band=0.05 needs a centre: setpoint"),
        ({"limits": {"relative_band": 0.02}}, "relative_band=0.02 needs a centre"),
        ({"limits": {"setpoint": "sp"}}, "setpoint='sp' needs exactly one of band"),
        ({"limits": {"fixed": [2.9, 2.9]}}, "fixed=[2.9, 2.9]: lower must be below upper"),
        ({"limits": {"fixed": [2.8, 3.0], "setpoint": "sp"}}, "give one of fixed, setpoint"),
        ({"limits": {"fixed": [2.8, 3.0], "band": 0.1}}, "band=0.1: fixed limits take no band"),
        ({"limits": {"run_median": True, "band": -1}}, "context.limits.band=-1"),
        ({"limits": {"bnd": 0.05}}, "context.limits.bnd=0.05"),
        ({"states": {"rules": [{"when": "rpm < 1", "state": "idel"}]}}, "rules[0].state='idel' is not among names"),
        ({"states": {"default": "on"}}, "default='on' is not among names"),
        ({"states": {"names": ["running", "idle"], "changeover_min": 5}}, "changeover_min=5.0 needs 'changeover'"),
        ({"states": {"rules": [{"when": "rpm ~ 1", "state": "idle"}]}}, "'rpm ~ 1' is not `<column> <op> <value>`"),
        ({"states": {"rules": [{"when": "mode < OFF", "state": "idle"}]}}, "< needs a number, got 'OFF'"),
        ({"runs": {"column": "product", "value": "A"}}, "value='A' names the per-file run"),
        ({"runs": {"column": "t"}}, "timestamp.column='t' is also read by the context block"),
    ],
)
def test_bad_context_configuration_names_the_key_the_value_and_the_file(tmp_path, context, expected):
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping_doc(context)))
    with pytest.raises(ValueError, match="invalid replay mapping") as error:
        ReplayMapping.from_file(path)
    assert expected in str(error.value) and str(path) in str(error.value)
    assert "context" in str(error.value) or "timestamp.column" in str(error.value)


def test_a_context_block_needs_the_wide_layout():
    document = {
        "layout": "long",
        "timestamp": {"column": "t"},
        "long": {"metric_column": "m", "value_column": "v"},
        "context": {},
    }
    with pytest.raises(ValueError, match="a `context` block needs layout='wide'"):
        ReplayMapping.model_validate(document)


ROWS = {"t": minutes(4), "product": ["A", "A", "B", "B"], "sp": [2.9] * 4, "od": [2.9] * 4, "rpm": [38] * 4}


@pytest.mark.parametrize(
    ("context", "rows", "expected"),
    [
        (
            {"states": {"rules": [{"when": "screw < 1", "state": "idle"}]}},
            ROWS,
            "context.states.rules[0].when='screw < 1' names column 'screw', which the file lacks",
        ),
        ({"runs": {"column": "recipe"}}, ROWS, "context.runs.column='recipe' names column 'recipe'"),
        ({"limits": {"setpoint": "od_sp", "band": 0.1}}, ROWS, "context.limits.setpoint='od_sp' names column"),
        (
            {"runs": {"column": "product"}},
            {**ROWS, "t": [T0, T0 + 3 * MIN, T0 + MIN, T0 + 2 * MIN]},  # A: 0 and 3 min, B from 1 min
            "overlapping runs from context.runs.column='product': run 'B' (from row 3) starts at",
        ),
        (
            {"limits": {"setpoint": "sp", "band": 0.1}},
            {**ROWS, "sp": [2.9, "high", 2.9, 2.9]},
            "context.limits.setpoint='sp': row 2 holds 'high', not a finite number",
        ),
        (
            {"limits": {"setpoint": "sp", "relative_band": 0.1}},
            {**ROWS, "sp": [0, 0, 0, 0]},
            "context.limits.setpoint='sp' give lower=0 >= upper=0",
        ),
        (
            {"runs": {"column": "product"}, "limits": {"fixed": {"A": [2.8, 3.0]}}},
            ROWS,
            "context.limits.fixed has no [lower, upper] for run value 'B'",
        ),
        (
            {"states": {"rules": [{"when": "product < 1", "state": "idle"}]}},
            ROWS,
            "context.states.rules[0].when='product < 1': column 'product' holds no number (row 1: 'A')",
        ),
        (
            {"runs": {"column": "product"}},
            {**ROWS, "product": [""] * 4},
            "context.runs.column='product' holds no value",
        ),
    ],
)
def test_bad_context_against_the_file_names_the_key_the_value_and_the_file(tmp_path, context, rows, expected):
    with pytest.raises(ValueError) as error:
        derive(tmp_path, rows, context)
    assert expected in str(error.value)
    assert str(tmp_path / "rec.csv") in str(error.value)


def test_run_median_needs_the_target_mapped(tmp_path):
    path = write_csv(tmp_path / "rec.csv", ROWS)
    document = mapping_doc({"limits": {"run_median": True, "band": 0.1}})
    document["columns"] = {"rpm": "screw_rpm"}
    with pytest.raises(ValueError, match="median of the target metric 'cold_od_average'.*no column maps to it"):
        recording_context([path], ReplayMapping.model_validate(document), "line-1", USE_CASE)


def test_a_timestamp_format_that_fails_most_rows_is_a_mapping_error(tmp_path):
    path = write_csv(tmp_path / "rec.csv", {**ROWS, "t": ["02/03/2026 08:00"] * 4})
    with pytest.raises(ValueError) as error:
        recording_context([path], ReplayMapping.model_validate(mapping_doc({})), "line-1", USE_CASE)
    message = str(error.value)
    assert str(path) in message and "timestamp.format='epoch_ms'" in message
    assert "does not parse 4 of 4 rows" in message and "row 1 value '02/03/2026 08:00'" in message


def test_runs_of_two_files_may_not_overlap(tmp_path):
    first = write_csv(tmp_path / "a.csv", ROWS)
    second = write_csv(tmp_path / "b.csv", {**ROWS, "t": [t + 2 * MIN for t in ROWS["t"]]})
    mapping = ReplayMapping.model_validate(mapping_doc({}))
    with pytest.raises(
        ValueError, match=r"overlapping runs: run 'b' of .*b\.csv starts at .* before run 'a' of .*a\.csv"
    ):
        recording_context([first, second], mapping, "line-1", USE_CASE)
    later = write_csv(tmp_path / "c.csv", {**ROWS, "t": [t + 4 * MIN for t in ROWS["t"]]})
    assert [i.value for i in recording_context([first, later], mapping, "line-1", USE_CASE)] == ["a", "c"]


def test_a_run_going_on_into_the_next_file_is_one_interval(tmp_path):
    rows = {"t": minutes(4), "product": ["A", "A", "B", "B"], "sp": [2.9] * 4, "od": [2.9] * 4, "rpm": [38] * 4}
    first = write_csv(tmp_path / "day1.csv", rows)
    second = write_csv(tmp_path / "day2.csv", {**rows, "t": [t + 4 * MIN for t in rows["t"]], "product": ["B"] * 4})
    context = {"runs": {"column": "product"}, "limits": {"setpoint": "sp", "band": 0.1}, "states": {}}
    mapping = ReplayMapping.model_validate(mapping_doc(context))
    intervals = recording_context([second, first], mapping, "line-1", USE_CASE)  # any order
    assert of(intervals, ContextKind.RUN) == [(0, 2, "A", None), (2, 8, "B", None)]
    assert [(s, e) for s, e, _, _ in of(intervals, ContextKind.STATE)] == [(0, 8)]
    assert [(s, e) for s, e, _, _ in of(intervals, ContextKind.LIMITS)] == [(0, 2), (2, 8)]
    assert intervals[1].interval_id == interval_id(ContextKind.RUN, "line-1", T0 + 2 * MIN)
    # per file (what backfill stores file by file): the later file's continuing intervals are gone
    per_file = [(str(p), recording_context([p], mapping, "line-1", USE_CASE)) for p in (first, second)]
    assert [(source, len(kept)) for source, kept in join_recordings(per_file)] == [(str(first), 5), (str(second), 0)]


# --- messages and the lateness SLA -------------------------------------------------------------------
def test_messages_stay_within_what_the_context_function_accepts(tmp_path):
    rows = {"t": minutes(2 * MAX_CONTEXT_INTERVALS + 50), "od": [2.9] * 1050, "rpm": [38, 0] * 525}
    rows["sp"] = [2.9 + 0.001 * k for k in range(1050)]
    context = {
        "limits": {"setpoint": "sp", "band": 0.05},
        "states": {"rules": [{"when": "rpm < 1", "state": "idle"}], "min_duration_s": 0},
    }
    intervals = derive(tmp_path, rows, context)
    assert len(intervals) == 1 + 1050 + 1050
    messages = context_messages(intervals)
    counts = [n for n, _ in messages]
    assert max(counts) == MAX_CONTEXT_INTERVALS and sum(counts) == len(intervals) and len(counts) == 5
    decoded = [item for _, payload in messages for item in loads_bounded(payload, MAX_CONTEXT_JSON)]
    assert [ContextInterval.model_validate(d) for d in decoded] == intervals
    # what the context function lands from the gateway's context topic
    from edgeloop.functions.context.logic import parse_context_message

    landed = []
    for _, payload in messages:
        event = IotRuleEvent(
            payload_b64=base64.b64encode(payload).decode(), topic=names.context_topic("gw-1"), received_at_ms=T0
        )
        parsed = parse_context_message(event)
        assert parsed.reasons == []
        landed += parsed.intervals
    assert landed == intervals
    assert len(context_payloads(intervals, max_bytes=20_000)) > 5
    assert all(len(p) <= 20_000 for p in context_payloads(intervals, max_bytes=20_000))


def test_lateness_check_names_the_sla_and_backfill():
    now_ms = T0 + 30 * 86_400_000
    times = np.array([T0, T0 + 1, 0, now_ms - 1000], dtype=np.int64)
    valid = np.array([True, True, False, True])
    with pytest.raises(LatenessRefused) as error:
        check_lateness(times, valid, now_ms=now_ms, sla_days=14, source="old.csv")
    message = str(error.value)
    assert "old.csv: 2 of 3 rows are older than the lateness SLA of 14 days" in message
    assert "EDGELOOP_LATENESS_SLA_DAYS" in message and "`edgeloop backfill old.csv" in message
    assert "row 1 at 2026-02-25T06:13:20Z" in message
    check_lateness(times, valid, now_ms=now_ms, sla_days=31, source="old.csv")  # within a 31-day SLA


def test_lateness_sla_comes_from_the_environment_or_the_default(monkeypatch):
    monkeypatch.delenv(names.LATENESS_SLA_DAYS_ENV, raising=False)
    assert lateness_sla_days() == names.DEFAULT_LATENESS_SLA_DAYS
    monkeypatch.setenv(names.LATENESS_SLA_DAYS_ENV, "30")
    assert lateness_sla_days() == 30
    monkeypatch.setenv(names.LATENESS_SLA_DAYS_ENV, "two weeks")
    with pytest.raises(ValueError, match="EDGELOOP_LATENESS_SLA_DAYS='two weeks' must be a positive whole number"):
        lateness_sla_days()
