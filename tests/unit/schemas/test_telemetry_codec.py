"""Wire format 2 (compact binary): lossless round trip, format detection, size, and named decode errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import METRICS
from edgeloop.schemas.telemetry import COMPACT_FORMAT_VERSION, ColumnarSamples, TelemetryBatch, TelemetryDecodeError
from edgeloop.schemas.telemetry_codec import decode_batch, decode_batch_document, encode_batch, wire_format_version
from edgeloop.schemas.telemetry_compact import (
    COMPACT_MAGIC,
    MAX_ABS_TIME_MS,
    Compression,
    ValueMode,
    _exact_decimals,
    _text_bytes,
    _uvarint_bytes,
    encode_compact,
)

START_MS = 1_767_225_600_000


def _bits(values: list[float]) -> list[int]:
    return list(struct.unpack(f"<{len(values)}Q", struct.pack(f"<{len(values)}d", *values)))


def _batch(metric_index, time_ms, values, metrics=("speed", "temp_die"), seq_first=7, version=2) -> TelemetryBatch:
    return TelemetryBatch(
        format_version=version,
        thing_name="gw-line-1",
        line_id="line-1",
        seq_first=seq_first,
        seq_last=seq_first + len(values) - 1,
        samples=ColumnarSamples(
            metrics=list(metrics), metric_index=list(metric_index), time_ms=list(time_ms), values=list(values)
        ),
    )


def _assert_identical(decoded: TelemetryBatch, batch: TelemetryBatch) -> None:
    assert decoded == batch
    # == on floats lets -0.0 pass for 0.0: compare the float64 bits as well
    assert _bits(decoded.samples.values) == _bits(batch.samples.values)


# --- round trip ------------------------------------------------------------------------------------

_finite = st.floats(allow_nan=False, allow_infinity=False)
_decimal_like = st.builds(lambda m, d: m / 10**d, st.integers(-(10**9), 10**9), st.integers(0, 6))
_special = st.sampled_from(
    [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1e300, 1e-300]
)
_time_small = st.integers(START_MS - 5, START_MS + 5)  # few distinct values: repeated timestamps
_time_any = st.integers(-MAX_ABS_TIME_MS + 1, MAX_ABS_TIME_MS - 1)


@st.composite
def batches(draw) -> TelemetryBatch:
    metrics = draw(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5, unique=True))
    n = draw(st.integers(1, 120))
    values_of = draw(st.sampled_from(["finite", "decimal", "special", "mixed"]))
    value = {
        "finite": _finite,
        "decimal": _decimal_like,
        "special": _special,
        "mixed": st.one_of(_finite, _decimal_like, _special),
    }[values_of]
    time = draw(st.sampled_from([_time_small, _time_any]))
    return _batch(
        draw(st.lists(st.integers(0, len(metrics) - 1), min_size=n, max_size=n)),
        draw(st.lists(time, min_size=n, max_size=n)),
        draw(st.lists(value, min_size=n, max_size=n)),
        metrics=metrics,
        seq_first=draw(st.integers(0, 2**63 - n)),  # the last sequence number still fits int64
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), compression=st.sampled_from(list(Compression)))
def test_round_trip_is_lossless_and_keeps_sequence_order(batch, compression):
    payload = encode_compact(batch, compression)
    assert wire_format_version(payload) == COMPACT_FORMAT_VERSION
    _assert_identical(decode_batch(payload), batch)


def test_round_trip_of_the_edge_cases_named_in_the_format():
    values = [-0.0, 0.0, 1e308, -1.7976931348623157e308, 5e-324, 0.1, 0.30000000000000004, 123.456, -0.0]
    times = [START_MS, START_MS, START_MS - 1000, START_MS + 10**9, START_MS, START_MS, -5, 0, START_MS]
    batch = _batch([i % 2 for i in range(len(values))], times, values)
    for compression in Compression:
        _assert_identical(decode_batch(encode_compact(batch, compression)), batch)


def test_times_unordered_across_metrics_come_back_in_sequence_order():
    # metric 1 runs backwards in time and metric 0 forwards; sequence order interleaves them unevenly
    metric_index = [0, 1, 1, 0, 1, 0, 0, 1]
    times = [10, 900, 800, 20, 700, 30, 40, 600]
    batch = _batch(metric_index, times, [float(i) for i in range(8)])
    decoded = decode_batch(encode_batch(batch))
    assert decoded.samples.metric_index == metric_index and decoded.samples.time_ms == times


def test_format_1_is_still_written_and_read():
    batch = _batch([0, 1], [START_MS, START_MS], [1.5, -0.0], version=1)
    payload = encode_batch(batch)
    assert payload[:1] == b"\x78" and wire_format_version(payload) == 1  # a zlib stream
    _assert_identical(decode_batch(payload), batch)
    assert decode_batch(encode_batch(batch.model_copy(update={"format_version": 2}))).format_version == 2


# --- value modes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, -3.0, 0.0], 0),
        ([0.1, 0.25, -7.5], 2),
        ([2.9013, 2.9], 4),
        ([0.30000000000000004], None),  # no short decimal form
        ([1.0, -0.0], None),  # m / 10**d never gives -0.0
        ([1e300], None),
        ([5e-324], None),
        ([900719925474099.2], 1),  # m = 2**53: still exact
        ([900719925474099.4], None),  # m = 2**53 + 2: beyond the exact integers
    ],
)
def test_decimal_mode_is_chosen_only_when_exact(values, expected):
    assert _exact_decimals(np.array(values, dtype=np.float64)) == expected


def test_a_metric_with_one_inexact_value_still_round_trips_through_xor():
    values = [210.25, 210.5, 210.30000000000001, -0.0]
    batch = _batch([0, 0, 0, 0], [1, 2, 3, 4], values, metrics=("temp_die",))
    body = encode_compact(batch, Compression.NONE)
    assert bytes([ValueMode.XOR]) in body
    _assert_identical(decode_batch(body), batch)


def test_times_beyond_the_encodable_range_are_refused_by_name():
    batch = _batch([0], [MAX_ABS_TIME_MS], [1.0])
    with pytest.raises(ValueError, match=r"samples.time_ms=2305843009213693952 is outside"):
        encode_compact(batch)


# --- size on realistic data ---------------------------------------------------------------------------


def test_simulated_line_costs_well_under_five_bytes_per_sample():
    simulator = ExtrusionLineSimulator("line-1", seed=3, start_ms=START_MS)
    metric_index, time_ms, values = simulator.advance_arrays(3 * 3600)
    n = 100_000
    batch = _batch(metric_index[:n].tolist(), time_ms[:n].tolist(), values[:n].tolist(), metrics=METRICS)
    compact = encode_batch(batch)
    json_zlib = encode_batch(batch.model_copy(update={"format_version": 1}))
    assert len(compact) / n < 1.5  # measured 1.03; the 14-day drain needs <= 5
    assert len(compact) < 0.6 * len(json_zlib)
    _assert_identical(decode_batch(compact), batch)


# --- decode errors name the field and the value --------------------------------------------------------


def _payload(body: bytes, version: int = COMPACT_FORMAT_VERSION, compression: int = 0) -> bytes:
    return COMPACT_MAGIC + bytes([version, compression]) + body


def _body(*, n_samples=2, metrics=("speed",), index=b"\x00\x00", tail=b"\x00\x02\x00\x00\x00\x02") -> bytes:
    # tail: times (t0=0, d=1 -> zigzag 0, 2) then mode decimal, d=0, deltas (0 -> 0, 1 -> 2), i.e. 0.0, 1.0
    return (
        _text_bytes("gw-line-1")
        + _text_bytes("line-1")
        + _uvarint_bytes(5)
        + _uvarint_bytes(n_samples)
        + _uvarint_bytes(len(metrics))
        + b"".join(_text_bytes(m) for m in metrics)
        + index
        + tail
    )


def test_hand_built_body_decodes():
    # guards the error cases below: the unmodified body is valid
    document = decode_batch_document(_payload(_body()))
    assert document["samples"] == {
        "metrics": ["speed"],
        "metric_index": [0, 0],
        "time_ms": [0, 1],
        "values": [0.0, 1.0],
    }
    assert (document["seq_first"], document["seq_last"]) == (5, 6)


@pytest.mark.parametrize(
    ("payload", "field", "value"),
    [
        (_payload(_body(), version=9), "header.format_version", 9),
        (COMPACT_MAGIC + b"\x02", "header", COMPACT_MAGIC + b"\x02"),
        (_payload(_body(), compression=7), "header.compression", 7),
        (_payload(b"not zlib", compression=1), "body", "8 bytes"),
        (_payload(zlib.compress(_body())[:-3], compression=1), "body", f"{len(zlib.compress(_body())) - 3} zlib bytes"),
        (_payload(_body()[:-1]), "metrics[0].values[1]", "body of 33 bytes"),
        (_payload(_body() + b"\x00"), "body", "1 bytes"),
        (_payload(_body(n_samples=10**6)), "n_samples", 10**6),
        (_payload(_body(index=b"\x00\x03")), "samples.metric_index[1]", 3),
        (_payload(_body(tail=b"\x00\x02\x07\x00\x00\x02")), "metrics[0].values.mode", 7),
        (_payload(_body(tail=b"\x00\x02\x00\x10\x00\x02")), "metrics[0].values.decimals", 16),
        (_payload(_body(tail=b"\x00\x02\x01\x71\x00")), "metrics[0].values[0].control", 0x71),
        (_payload(_body(tail=b"\x00\x02\x00\x00" + b"\xff" * 11)), "metrics[0].values[0]", "varint at byte 32"),
        (
            _payload(_text_bytes("gw-line-1") + _uvarint_bytes(2) + b"\xff\xfe"),
            "line_id",
            b"\xff\xfe",
        ),
    ],
)
def test_unreadable_payloads_name_the_field_and_value(payload, field, value):
    with pytest.raises(TelemetryDecodeError) as error:
        decode_batch_document(payload)
    assert (error.value.field, error.value.value) == (field, value)
    assert f"{field}={value!r}" in str(error.value)


def test_format_1_errors_are_unchanged():
    with pytest.raises(ValueError, match="payload is not zlib-compressed"):
        decode_batch_document(b"plain text")


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200), compression=st.sampled_from([0, 1]))
def test_garbage_bodies_fail_only_with_a_decode_error(body, compression):
    data = zlib.compress(body) if compression else body
    try:
        document = decode_batch_document(_payload(data, compression=compression))
    except TelemetryDecodeError as error:
        assert error.field
    else:
        assert document["format_version"] == COMPACT_FORMAT_VERSION


# --- the column checks of ColumnarSamples (fast whole-column paths) -----------------------------------


def test_values_whose_sum_overflows_are_still_finite():
    batch = _batch([0, 0, 1], [1, 2, 3], [1.7e308, 1.7e308, -5.0])
    _assert_identical(decode_batch(encode_batch(batch)), batch)


@pytest.mark.parametrize(
    ("column", "bad", "expected"),
    [
        ("values", [1.0, 2.0, float("inf"), float("nan")], r"values\[2\]=inf is not finite"),
        ("metric_index", [0, 1, 2, 0], r"metric_index\[2\]=2 is outside metrics \(0..1\)"),
        ("metric_index", [0, -1, 1, 0], r"metric_index\[1\]=-1 is outside metrics \(0..1\)"),
    ],
)
def test_column_checks_name_the_first_bad_sample(column, bad, expected):
    columns = {"metrics": ["a", "b"], "metric_index": [0, 1, 0, 1], "time_ms": [1, 2, 3, 4], "values": [1.0] * 4}
    with pytest.raises(ValueError, match=expected):
        ColumnarSamples.model_validate(columns | {column: bad})
