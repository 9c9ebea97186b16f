"""The contracts: JSON Schema copies are current, and bad input is refused naming field and value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from edgeloop.schemas import (
    ContextInterval,
    ModelUpdate,
    TelemetryBatch,
    decode_batch,
    encode_batch,
    feature_schema_hash,
    load_use_case,
    names,
)
from edgeloop.schemas.export import JSON_DIR, render_schemas

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _batch(**overrides) -> dict:
    document = {
        "thing_name": "gw-line-1",
        "line_id": "line-1",
        "seq_first": 10,
        "seq_last": 12,
        "samples": {
            "metrics": ["speed", "temp_die"],
            "metric_index": [0, 1, 0],
            "time_ms": [1_000, 1_000, 2_000],
            "values": [12.5, 210.0, 12.6],
        },
    }
    document.update(overrides)
    return document


def test_checked_in_json_schemas_are_current():
    rendered = render_schemas()
    on_disk = {p.name: p.read_text() for p in JSON_DIR.glob("*.schema.json")}
    stale = sorted(name for name in rendered.keys() | on_disk.keys() if rendered.get(name) != on_disk.get(name))
    assert not stale, f"schemas/json is stale for {stale}: run `make schemas`"


def test_batch_round_trips_through_the_wire_encoding():
    batch = TelemetryBatch.model_validate(_batch())
    payload = encode_batch(batch)
    assert decode_batch(payload) == batch
    assert len(payload) < len(batch.model_dump_json())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"seq_last": 13}, "sequence range 10..13 covers 4 samples but the batch holds 3"),
        ({"thing_name": "gw/line"}, "thing name 'gw/line'"),
        ({"format_version": 3}, "format_version"),
    ],
)
def test_bad_batches_name_the_field_and_value(overrides, expected):
    with pytest.raises(ValidationError) as error:
        TelemetryBatch.model_validate(_batch(**overrides))
    assert expected in str(error.value)


def test_non_finite_values_are_refused_with_their_position():
    samples = _batch()["samples"] | {"values": [1.0, float("nan"), 2.0]}
    with pytest.raises(ValidationError, match=r"values\[1\]=nan is not finite"):
        TelemetryBatch.model_validate(_batch(samples=samples))


def test_context_interval_must_be_ordered_and_time_zoned():
    with pytest.raises(ValidationError, match="must be before"):
        ContextInterval(kind="run", interval_id="r1", line_id="line-1", start=NOW, end=NOW)
    with pytest.raises(ValidationError, match="has no time zone"):
        ContextInterval(kind="shift", interval_id="s1", line_id="line-1", start=NOW.replace(tzinfo=None), end=NOW)
    with pytest.raises(ValidationError, match="spec limits belong to run or limits intervals"):
        ContextInterval(
            kind="shift",
            interval_id="s1",
            line_id="line-1",
            start=NOW,
            end=NOW + timedelta(hours=8),
            spec={"target_metric": "cold_od_average", "lower": 1.0, "upper": 2.0},
        )


def test_model_update_requires_an_s3_uri_and_a_real_digest():
    good = {
        "deployment_id": "d-1",
        "model_id": "m",
        "version": "1.0.0",
        "precision": "fp32",
        "payload_uri": "s3://bucket/models/m/1.0.0/fp32.npz",
        "sha256": "a" * 64,
        "features": ["f1"],
        "feature_schema_hash": feature_schema_hash(["f1"]),
    }
    ModelUpdate.model_validate(good)
    with pytest.raises(ValidationError, match="payload_uri"):
        ModelUpdate.model_validate(good | {"payload_uri": "https://example.com/x"})
    with pytest.raises(ValidationError, match="version '1.0' is not MAJOR.MINOR.PATCH"):
        ModelUpdate.model_validate(good | {"version": "1.0"})


def test_feature_schema_hash_depends_on_order():
    assert feature_schema_hash(["a", "b"]) != feature_schema_hash(["b", "a"])


def test_extrusion_use_case_is_consistent():
    use_case = load_use_case("extrusion")
    assert use_case.target_metric in use_case.metrics
    stats = [f"{metric}__{stat}" for metric in use_case.metrics for stat in use_case.feature_stats]
    assert use_case.feature_names[: len(stats)] == stats, "the per-metric statistics come first"
    assert len(set(use_case.feature_names)) == len(use_case.feature_names) > len(stats), "then the declared extras"
    assert use_case.prediction_metric in use_case.accepted_metrics


def test_topics_confine_a_gateway_to_its_own_thing_name():
    for topic in (names.telemetry_topic("gw-1"), names.announce_topic("gw-1"), names.model_status_topic("gw-1")):
        assert names.thing_from_topic(topic) == "gw-1"
    with pytest.raises(ValueError, match="not an edgeloop device topic"):
        names.thing_from_topic("other/gw-1/telemetry")
    routes = {route.topic_filter for route in names.IOT_ROUTES}
    assert all(route.function in names.FUNCTIONS for route in names.IOT_ROUTES)
    assert "edgeloop/+/telemetry" in routes
