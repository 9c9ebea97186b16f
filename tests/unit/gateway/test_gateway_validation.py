"""Gateway input validation: every bad sample gets one counted reason; good samples and the stream go on."""

from __future__ import annotations

import logging

import pytest
from gateway_helpers import FakeClock

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.validation import (
    REJECT_DUPLICATE_TIME,
    REJECT_OUT_OF_ORDER,
    REJECT_UNKNOWN_METRIC,
    SampleValidator,
    append_validated,
)
from edgeloop.schemas import load_use_case
from edgeloop.schemas.telemetry_codec import decode_batch

USE_CASE = load_use_case("extrusion")
T0 = 1_700_000_000_000


@pytest.fixture
def buffer(tmp_path):
    with SampleBuffer(tmp_path / "buffer.db", thing_name="gw-val-1", line_id="line-1") as opened:
        yield opened


@pytest.fixture
def validator():
    return SampleValidator(USE_CASE, source="gw-val-1")


def stored_samples(buffer: SampleBuffer) -> list[tuple[str, int, float]]:
    batch = decode_batch(buffer.next_batch().payload)
    s = batch.samples
    return [(s.metrics[i], t, v) for i, t, v in zip(s.metric_index, s.time_ms, s.values, strict=True)]


def test_each_bad_kind_gets_its_reason_and_good_samples_of_the_same_call_are_stored(validator, buffer):
    samples = [
        ("speed", T0, 12.5),
        ("temp_die", T0, float("nan")),
        ("pressure", T0, float("inf")),
        ("screw_rpm", T0, "fast"),
        ("humidity", T0, 40.0),
        ("speed", T0, 12.6),  # same metric, same time
        ("speed", T0 - 1000, 12.4),  # earlier than the last accepted speed
        ("speed", T0 + 1000, 12.7),
        ("cold_od_average__predicted", T0 + 300_000, 3.1),  # the prediction metric is accepted too
    ]
    result = append_validated(validator, buffer, samples)
    assert result.offered == len(samples)
    assert result.accepted == 3
    assert result.rejected == {
        "non_finite": 2,
        "non_numeric": 1,
        REJECT_UNKNOWN_METRIC: 1,
        REJECT_DUPLICATE_TIME: 1,
        REJECT_OUT_OF_ORDER: 1,
    }
    assert sum(result.rejected.values()) + result.accepted == len(samples)
    assert stored_samples(buffer) == [
        ("speed", T0, 12.5),
        ("speed", T0 + 1000, 12.7),
        ("cold_od_average__predicted", T0 + 300_000, 3.1),
    ]


def test_counters_accumulate_by_reason_across_calls_and_the_stream_goes_on(validator, buffer):
    append_validated(validator, buffer, [("speed", T0, 1.0), ("speed", T0, 1.0)])
    append_validated(validator, buffer, [("speed", T0, 1.0), ("bogus", T0, 1.0), ("speed", T0 - 5, 1.0)])
    later = append_validated(validator, buffer, [("speed", T0 + 1000, 2.0), ("temp_die", T0, 200.0)])
    assert later.accepted == 2 and later.rejected == {}
    assert validator.rejected_total == {REJECT_DUPLICATE_TIME: 2, REJECT_UNKNOWN_METRIC: 1, REJECT_OUT_OF_ORDER: 1}
    assert buffer.stats().accepted_total == 3


def test_ordering_is_per_metric(validator):
    result = validator.check([("speed", T0 + 5000, 1.0), ("temp_die", T0, 1.0), ("speed", T0 + 6000, 1.0)])
    assert result.rejected == {}
    assert validator.last_time_ms("speed") == T0 + 6000
    assert validator.last_time_ms("temp_die") == T0


def test_a_value_the_buffer_refuses_does_not_move_the_metric_clock(validator, buffer):
    # the NaN reading is the buffer's to count; the good reading at the same time is not a duplicate
    result = append_validated(validator, buffer, [("speed", T0, float("nan")), ("speed", T0, 3.0)])
    assert result.accepted == 1
    assert result.rejected == {"non_finite": 1}


def test_malformed_samples_are_left_to_the_buffer_and_counted_once(validator, buffer):
    result = append_validated(
        validator, buffer, [("speed", T0), ("speed", "noon", 1.0), (None, T0, 1.0), ("speed", T0, 1.0)]
    )
    assert result.accepted == 1
    assert result.rejected == {"malformed": 1, "bad_time": 1, "bad_metric": 1}
    assert validator.rejected_total == {}


def test_warning_names_metric_value_and_reason_and_is_rate_limited(caplog):
    clock = FakeClock(start=0.0)
    validator = SampleValidator(USE_CASE, source="gw-val-1", warn_interval_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="edgeloop.greengrass_components.gateway.validation"):
        validator.check([("humidity", T0, 41.5)] + [("humidity", T0 + i, 1.0) for i in range(1, 50)])
        clock.now = 30
        validator.check([("humidity", T0 + 100, 1.0)])
        clock.now = 61
        validator.check([("humidity", T0 + 200, 7.25)])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "gw-val-1" in lines[0] and "'humidity'" in lines[0] and "41.5" in lines[0] and "unknown_metric" in lines[0]
    assert "7.25" in lines[1] and "+50 more unknown_metric" in lines[1]
    assert validator.rejected_total == {REJECT_UNKNOWN_METRIC: 52}


def test_each_reason_has_its_own_rate_limit(caplog):
    validator = SampleValidator(USE_CASE, clock=FakeClock(start=0.0))
    with caplog.at_level(logging.WARNING, logger="edgeloop.greengrass_components.gateway.validation"):
        validator.check(
            [("x", T0, 1.0), ("speed", T0, 1.0), ("speed", T0, 1.0), ("speed", T0 - 1, 1.0), ("x", T0, 2.0)]
        )
    reasons = sorted(r.getMessage().split(": ")[1].split(" (")[0] for r in caplog.records)
    assert reasons == [REJECT_DUPLICATE_TIME, REJECT_OUT_OF_ORDER, REJECT_UNKNOWN_METRIC]


def test_negative_warn_interval_is_refused():
    with pytest.raises(ValueError, match="warn_interval_s=-1"):
        SampleValidator(USE_CASE, warn_interval_s=-1)
