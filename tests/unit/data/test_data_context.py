"""Context sub-intervals: the sweep, the quantization rule, and the join to 1-minute rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgeloop.cloud.datalake.context import context_columns, join_context, quantize, sub_intervals, to_ms
from edgeloop.cloud.datalake.rollups import rollup_samples
from edgeloop.schemas import ContextInterval, ContextKind, SpecLimits, SubInterval

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
LINE = "line-1"
SPEC = SpecLimits(target_metric="cold_od_average", lower=4.9, upper=5.1)


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def interval(kind: str, interval_id: str, start: datetime, end: datetime, value: str = "", **extra) -> ContextInterval:
    return ContextInterval(
        kind=kind, interval_id=interval_id, line_id=LINE, start=start, end=end, value=value or interval_id, **extra
    )


def spans(subs: list[SubInterval]) -> list[tuple[datetime, datetime, dict[str, str]]]:
    return [(s.start, s.end, {k.value: c.interval_id for k, c in s.contexts.items()}) for s in subs]


# --- the sweep ------------------------------------------------------------------------------------


def test_overlapping_kinds_cut_the_timeline_at_every_boundary():
    subs = sub_intervals(
        [
            interval("run", "r1", at(0), at(120), "cable-a", spec=SPEC),
            interval("shift", "early", at(60), at(180)),
            interval("state", "running", at(30), at(90)),
        ],
        LINE,
    )
    assert spans(subs) == [
        (at(0), at(30), {"run": "r1"}),
        (at(30), at(60), {"run": "r1", "state": "running"}),
        (at(60), at(90), {"run": "r1", "state": "running", "shift": "early"}),
        (at(90), at(120), {"run": "r1", "shift": "early"}),
        (at(120), at(180), {"shift": "early"}),
    ]
    assert [s.spec for s in subs] == [SPEC] * 4 + [None]
    assert subs[0].value(ContextKind.RUN) == "cable-a" and subs[0].interval_id(ContextKind.WORK_ORDER) is None


def test_adjacent_intervals_of_one_kind_stay_apart_and_gaps_have_no_sub_interval():
    subs = sub_intervals(
        [
            interval("run", "r1", at(0), at(10)),
            interval("run", "r2", at(10), at(20)),  # adjacent: end is exclusive
            interval("run", "r3", at(30), at(40)),  # after a gap
        ],
        LINE,
    )
    assert spans(subs) == [
        (at(0), at(10), {"run": "r1"}),
        (at(10), at(20), {"run": "r2"}),
        (at(30), at(40), {"run": "r3"}),
    ]


def test_the_later_start_wins_an_overlap_of_one_kind_and_the_interrupted_one_resumes():
    subs = sub_intervals(
        [
            interval("state", "running", at(0), at(60)),
            interval("state", "down", at(20), at(30)),
            interval("state", "b-tie", at(40), at(45)),
            interval("state", "a-tie", at(40), at(50)),  # same start: the greater id wins
        ],
        LINE,
    )
    assert spans(subs) == [
        (at(0), at(20), {"state": "running"}),
        (at(20), at(30), {"state": "down"}),
        (at(30), at(40), {"state": "running"}),
        (at(40), at(45), {"state": "b-tie"}),
        (at(45), at(50), {"state": "a-tie"}),
        (at(50), at(60), {"state": "running"}),
    ]


def test_boundaries_that_change_nothing_do_not_split_a_sub_interval():
    subs = sub_intervals(
        [
            interval("state", "early", at(-10), at(20)),
            interval("state", "late", at(0), at(30)),
            interval("shift", "s", at(-10), at(30)),
        ],
        LINE,
    )
    # 'late' wins from 0 on, so the end of 'early' at 20 changes nothing.
    assert spans(subs) == [
        (at(-10), at(0), {"state": "early", "shift": "s"}),
        (at(0), at(30), {"state": "late", "shift": "s"}),
    ]


def test_missing_kinds_and_no_intervals():
    assert sub_intervals([], LINE) == []
    only_shifts = sub_intervals([interval("shift", "night", at(0), at(480))], LINE)
    assert [s.contexts.keys() for s in only_shifts] == [{ContextKind.SHIFT}]


def test_intervals_of_another_line_are_refused():
    other = ContextInterval(kind="run", interval_id="x", line_id="line-2", start=at(0), end=at(1))
    with pytest.raises(ValueError, match=r"intervals \['x'\] do not belong to line_id='line-1'"):
        sub_intervals([other], LINE)


def test_sub_interval_contract_refuses_bad_spans_and_orphan_specs():
    with pytest.raises(ValidationError, match="must be before"):
        SubInterval(line_id=LINE, start=at(1), end=at(1))
    with pytest.raises(ValidationError, match="spec limits need an active run"):
        SubInterval(line_id=LINE, start=at(0), end=at(1), spec=SPEC)


def test_limits_intervals_override_the_runs_limits_while_active():
    moved = SpecLimits(target_metric="cold_od_average", lower=5.0, upper=5.2)
    subs = sub_intervals(
        [
            interval("run", "r1", at(0), at(10), "cable-a", spec=SPEC),
            interval("limits", "sp-1", at(4), at(6), "setpoint 5.1 ± 0.1", spec=moved),
        ],
        LINE,
    )
    assert [(s.start, s.end, s.spec) for s in subs] == [
        (at(0), at(4), SPEC),
        (at(4), at(6), moved),
        (at(6), at(10), SPEC),
    ]


def test_limits_intervals_carry_limits_and_only_run_and_limits_intervals_do():
    with pytest.raises(ValidationError, match="a limits interval needs spec limits"):
        interval("limits", "l1", at(0), at(1))
    with pytest.raises(ValidationError, match="spec limits belong to run or limits intervals, not kind=state"):
        interval("state", "s1", at(0), at(1), spec=SPEC)


# --- quantization ---------------------------------------------------------------------------------


def slices(subs) -> list[tuple[int, int, str | None]]:
    frame = quantize(subs)
    return [
        (int((a - to_ms(T0)) // 60_000), int((b - to_ms(T0)) // 60_000), r)
        for a, b, r in zip(frame["slice_start_ms"], frame["slice_end_ms"], frame["run_id"], strict=False)
    ]


@pytest.mark.parametrize(
    ("boundary_s", "owner_of_minute_10"),
    [(0, "r2"), (29, "r2"), (30, "r2"), (31, "r1"), (59, "r1")],  # the sub-interval covering 10:30 owns slice 10
)
def test_a_straddled_slice_goes_to_the_sub_interval_covering_its_midpoint(boundary_s, owner_of_minute_10):
    subs = sub_intervals(
        [interval("run", "r1", at(0), at(10, boundary_s)), interval("run", "r2", at(10, boundary_s), at(20))], LINE
    )
    first_r2 = 10 if owner_of_minute_10 == "r2" else 11
    assert slices(subs) == [(0, first_r2, "r1"), (first_r2, 20, "r2")]


def test_a_blip_shorter_than_half_a_slice_vanishes_and_its_neighbours_merge():
    subs = sub_intervals(
        [interval("run", "r1", at(0), at(20)), interval("run", "blip", at(5, 5), at(5, 25))],
        LINE,
    )
    assert len(subs) == 3
    assert slices(subs) == [(0, 20, "r1")]


def test_a_blip_over_a_midpoint_owns_that_slice():
    subs = sub_intervals([interval("run", "r1", at(0), at(20)), interval("run", "blip", at(5, 20), at(5, 40))], LINE)
    assert slices(subs) == [(0, 5, "r1"), (5, 6, "blip"), (6, 20, "r1")]


def test_quantize_to_coarser_slices_and_column_layout():
    subs = sub_intervals([interval("shift", "s1", at(0), at(100)), interval("shift", "s2", at(100), at(200))], LINE)
    frame = quantize(subs, "1h")
    assert list(frame.columns) == ["slice_start_ms", "slice_end_ms", *context_columns()]
    hour = 3_600_000
    # 06:00-07:40 / 07:40-09:20: midpoints 06:30 and 07:30 -> s1, 08:30 -> s2
    assert list(
        zip(frame["slice_start_ms"] - to_ms(T0), frame["slice_end_ms"] - to_ms(T0), frame["shift_id"], strict=False)
    ) == [
        (0, 2 * hour, "s1"),
        (2 * hour, 3 * hour, "s2"),
    ]


# --- join to rollups ------------------------------------------------------------------------------


def minute_rollups(first_minute: int, last_minute: int) -> pd.DataFrame:
    times = [to_ms(at(m, 5)) for m in range(first_minute, last_minute)]
    return rollup_samples(pd.DataFrame({"metric": "speed", "time_ms": times, "value": 1.0}))


def test_every_rollup_row_gets_its_slice_context_and_rows_outside_get_nulls():
    subs = sub_intervals(
        [interval("run", "r1", at(0), at(3, 40), "cable-a", spec=SPEC), interval("shift", "early", at(2), at(6))], LINE
    )
    joined = join_context(minute_rollups(-1, 7), subs)
    assert list(joined["run_value"].astype(object).where(joined["run_value"].notna(), None)) == [
        None,
        "cable-a",
        "cable-a",
        "cable-a",
        "cable-a",
        None,
        None,
        None,
    ]
    assert list(joined["shift_id"].astype(object).where(joined["shift_id"].notna(), None)) == [
        None,
        None,
        None,
        "early",
        "early",
        "early",
        "early",
        None,
    ]
    assert joined["spec_upper"].iloc[1] == 5.1 and np.isnan(joined["spec_upper"].iloc[6])
    assert joined["state_id"].isna().all() and joined["work_order_value"].isna().all()
    assert len(joined) == 8 and (joined["count"] == 1).all()


def test_join_refuses_rollups_off_the_slice_grid():
    rollups = minute_rollups(0, 2).assign(bucket_start_ms=lambda f: f["bucket_start_ms"] + 1)
    with pytest.raises(ValueError, match=r"bucket_start_ms=\d+ is not on the '1m' grid"):
        join_context(rollups, [], "1m")


KINDS = [k.value for k in ContextKind]


@st.composite
def interval_sets(draw):
    count = draw(st.integers(0, 12))
    out = []
    for n in range(count):
        start = draw(st.integers(0, 600))  # seconds after T0
        length = draw(st.integers(1, 300))
        kind = draw(st.sampled_from(KINDS))
        spec = SPEC if kind == ContextKind.LIMITS else None
        out.append(interval(kind, f"i{n}", at(seconds=start), at(seconds=start + length), spec=spec))
    return out


@settings(max_examples=80, deadline=None)
@given(interval_sets())
def test_joined_context_equals_a_brute_force_lookup_at_each_slice_midpoint(intervals):
    joined = join_context(minute_rollups(-1, 16), sub_intervals(intervals, LINE))
    for row in joined.itertuples():
        midpoint = row.bucket_start_ms + 30_000
        for kind in KINDS:
            covering = [i for i in intervals if i.kind.value == kind and to_ms(i.start) <= midpoint < to_ms(i.end)]
            expected = max(covering, key=lambda i: (i.start, i.interval_id)).interval_id if covering else None
            actual = getattr(row, f"{kind}_id")
            assert (None if pd.isna(actual) else actual) == expected, (kind, midpoint)


def test_stored_intervals_read_back_whatever_unicode_their_strings_hold():
    from moto import mock_aws

    from edgeloop.cloud.aws import client
    from edgeloop.cloud.datalake.context import context_key, get_context_intervals

    stored = interval("run", "r1", at(0), at(1), "cable\u2028a\x85b\u2029c", spec=SPEC)
    with mock_aws():
        client("s3").create_bucket(Bucket="context-test", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        client("s3").put_object(
            Bucket="context-test", Key=context_key(LINE), Body=(stored.model_dump_json() + "\n").encode()
        )
        assert get_context_intervals("context-test", LINE) == [stored]
