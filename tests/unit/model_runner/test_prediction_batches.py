"""Predictions on the wire: the PredictionBatch contract, its bounded decoder and the gateway's batcher (issue 18)."""

from __future__ import annotations

import json
import math
import zlib
from datetime import datetime, timedelta

import pytest

from edgeloop.greengrass_components.model_runner.prediction_batches import PredictionBatcher, prediction_flush_policy
from edgeloop.schemas import names
from edgeloop.schemas.bounded_json import MAX_PAYLOAD_BYTES, MessageDecodeError
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.device import MAX_ID_CHARS
from edgeloop.schemas.prediction import (
    MAX_BATCH_PREDICTIONS,
    MAX_PREDICTION_BATCH_BYTES,
    PredictionBatch,
    PredictionMessage,
    decode_prediction_batch,
    decode_prediction_payload,
)

THING = "gw-line-1"
START = datetime(2026, 1, 1, tzinfo=UTC)
STRIDE_S = 30


def prediction(i: int, *, thing: str = THING, line: str = "line-1", long_ids: bool = False) -> PredictionMessage:
    made_at = START + timedelta(seconds=STRIDE_S * i)
    long = "x" * MAX_ID_CHARS
    return PredictionMessage.model_validate(
        {
            "thing_name": thing,
            "line_id": line,
            "model": {
                "model_id": long if long_ids else "extrusion-line-1",
                "version": "1.0.0",
                "deployment_id": long if long_ids else "dep-1",
                "precision": "fp32",
                "decision_margin": 0.1,
            },
            "target_metric": long if long_ids else "cold_od_average",
            "made_at": made_at,
            "horizon_s": 300,
            "label_window_s": 30,
            "predicted_level": 3.0 + i / 1000,
            "violation_class": "in_range",
            "spec": {"target_metric": long if long_ids else "cold_od_average", "lower": 2.9, "upper": 3.2},
            "run_id": "r" * 128 if long_ids else "run-1",
            "sent_at": made_at + timedelta(seconds=2),
            "lead_time_s": 298.0,
        }
    )


def document(predictions: list, thing: str = THING, line: str = "line-1") -> dict:
    return {
        "thing_name": thing,
        "line_id": line,
        "predictions": [p.model_dump(mode="json") if isinstance(p, PredictionMessage) else p for p in predictions],
    }


def refusal(payload: bytes) -> MessageDecodeError:
    with pytest.raises(MessageDecodeError) as caught:
        decode_prediction_batch(payload)
    return caught.value


# --- the contract and its decoder ---------------------------------------------------------------------


def test_a_full_batch_of_the_largest_predictions_the_batcher_cuts_fits_well_under_iot_cores_limit():
    assert MAX_PREDICTION_BATCH_BYTES <= MAX_PAYLOAD_BYTES // 2
    batcher = PredictionBatcher(prediction_flush_policy(300), clock=lambda: 0.0)
    for i in range(3 * MAX_BATCH_PREDICTIONS):
        batcher.add(prediction(i, long_ids=True))
    batches = batcher.drain()
    assert len(batches) > 3, "cut by bytes before the count: ~1.6 KB each"
    for batch in batches:
        payload = batch.model_dump_json().encode()
        assert len(payload) <= MAX_PREDICTION_BATCH_BYTES
        assert decode_prediction_batch(payload) == batch
    assert [p.made_at for b in batches for p in b.predictions] == [prediction(i).made_at for i in range(180)]


def test_the_wire_form_is_compressed_says_the_thing_and_line_once_and_decodes_to_the_same_batch():
    batch = PredictionBatch(
        thing_name=THING, line_id="line-1", predictions=[prediction(i) for i in range(MAX_BATCH_PREDICTIONS)]
    )
    payload = batch.to_payload()
    assert decode_prediction_batch(payload) == batch == decode_prediction_payload(payload)
    assert decode_prediction_batch(batch.model_dump_json().encode()) == batch, "plain JSON decodes too"
    text = zlib.decompress(payload)
    assert all("thing_name" not in p and "line_id" not in p for p in json.loads(text)["predictions"])
    # a full batch in one 5 KB IoT Core unit (payload + topic: https://aws.amazon.com/iot-core/pricing/additional-details/)
    assert len(payload) + len(names.prediction_topic(THING)) <= 5 * 1024 < len(text)


def test_a_compressed_payload_is_inflated_only_to_the_byte_limit_and_must_be_one_whole_stream():
    bomb = zlib.compress(b" " * (10 * MAX_PREDICTION_BATCH_BYTES))  # ~600 KB of whitespace in ~1 KB
    assert len(bomb) < 2048 and "inflate beyond" in refusal(bomb).reason
    good = PredictionBatch(thing_name=THING, line_id="line-1", predictions=[prediction(0)]).to_payload()
    for broken in (good[:-4], good + b"{}", good + zlib.compress(b"{}"), b"\x78" + b"not zlib"):
        error = refusal(broken)
        assert error.field == "<prediction_batch>" and "zlib" in error.reason, (broken, error)


def test_the_decoder_refuses_too_many_bytes_predictions_or_levels_naming_the_limit():
    full = document([prediction(i) for i in range(MAX_BATCH_PREDICTIONS)])
    assert len(decode_prediction_batch(json.dumps(full).encode()).predictions) == MAX_BATCH_PREDICTIONS
    padded = json.dumps(full, indent=12).encode()
    assert len(padded) > MAX_PREDICTION_BATCH_BYTES
    assert "MAX_PREDICTION_BATCH_JSON_BYTES" in refusal(padded).reason
    # without spec (fewer objects) one too many passes the byte scan and is refused by count
    unclassified = {**prediction(0).model_dump(mode="json"), "violation_class": None, "spec": None}
    too_many = refusal(json.dumps(document([unclassified] * (MAX_BATCH_PREDICTIONS + 1))).encode())
    assert too_many.field == "<prediction_batch>.predictions" and str(MAX_BATCH_PREDICTIONS) in too_many.reason
    deep = refusal(json.dumps(document([prediction(0)]) | {"line_id": [[[[["line-1"]]]]]}).encode())
    assert deep.field == "<prediction_batch>" and "MAX_PREDICTION_BATCH_JSON_DEPTH" in deep.reason
    assert refusal(json.dumps(document([])).encode()).field == "<prediction_batch>.predictions"


@pytest.mark.parametrize(
    ("batch", "field", "value"),
    [
        (document([prediction(0), prediction(1, thing="gw-line-2")]), "predictions[1].thing_name", "gw-line-2"),
        (document([prediction(0), prediction(1), prediction(2, line="line-2")]), "predictions[2].line_id", "line-2"),
        (document([prediction(0, line="line-2")]), "predictions[0].line_id", "line-2"),
    ],
)
def test_every_prediction_carries_the_batchs_thing_and_line(batch, field, value):
    error = refusal(json.dumps(batch).encode())
    assert (error.field, error.value) == (f"<prediction_batch>.{field}", value) and "the batch's" in error.reason
    with pytest.raises(ValueError, match=rf"{re_escape(field)}='{value}'"):
        PredictionBatch.model_validate(batch)


def re_escape(text: str) -> str:
    return text.replace("[", r"\[").replace("]", r"\]")


def test_a_bad_prediction_is_named_by_its_index_and_field():
    bad = {**prediction(1).model_dump(mode="json"), "horizon_s": -1}
    error = refusal(json.dumps(document([prediction(0), bad])).encode())
    assert (error.field, error.value) == ("<prediction_batch>.predictions[1].horizon_s", -1)


def test_the_topic_still_takes_a_single_prediction_as_a_batch_of_one_under_its_own_limits():
    single = prediction(0)
    assert decode_prediction_payload(single.model_dump_json().encode()).predictions == [single]
    big = json.dumps(single.model_dump(mode="json"), indent=1000).encode()  # > 16 KB: MAX_PREDICTION_JSON
    with pytest.raises(MessageDecodeError, match="MAX_PREDICTION_JSON_BYTES"):
        decode_prediction_payload(big)


# --- the batcher on a fake clock --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("latency_s", [0, 60, 300, 1800])
def test_n_predictions_a_stride_apart_go_in_ceil_n_over_k_batches(latency_s):
    clock = Clock()
    batcher = PredictionBatcher(prediction_flush_policy(latency_s), clock)
    sent: list[PredictionBatch] = []
    n = 100
    for i in range(n):
        batcher.add(prediction(i))
        sent += batcher.due()  # what the runner's step does after scoring
        clock.now += STRIDE_S
    sent += batcher.drain()  # the stop
    # the prediction made when the oldest has waited max_latency_s still goes with it (the flush rule)
    k = min(latency_s // STRIDE_S + 1, MAX_BATCH_PREDICTIONS)
    assert len(sent) == math.ceil(n / k)
    assert {len(b.predictions) for b in sent[:-1]} == {k}
    assert [p.made_at for b in sent for p in b.predictions] == [prediction(i).made_at for i in range(n)]


def test_a_held_batch_goes_when_due_even_without_new_predictions_and_never_before():
    clock = Clock()
    batcher = PredictionBatcher(prediction_flush_policy(300), clock)
    batcher.add(prediction(0))
    clock.now += 299
    assert batcher.due() == [] and batcher.held == 1
    clock.now += 1
    (batch,) = batcher.due()
    assert len(batch.predictions) == 1 and batcher.held == 0 and batcher.drain() == []


def test_a_full_batch_goes_at_once_and_another_things_prediction_starts_a_new_one():
    batcher = PredictionBatcher(prediction_flush_policy(3600), Clock())
    for i in range(MAX_BATCH_PREDICTIONS + 1):
        batcher.add(prediction(i))
    (full,) = batcher.due()
    assert len(full.predictions) == MAX_BATCH_PREDICTIONS and batcher.held == 1
    batcher.add(prediction(99, thing="gw-line-2"))
    batches = batcher.drain()
    assert [(b.thing_name, len(b.predictions)) for b in batches] == [(THING, 1), ("gw-line-2", 1)]


def test_held_predictions_survive_a_restart_and_are_due_at_once(tmp_path, caplog):
    path = tmp_path / "model" / "held_predictions.jsonl"
    clock = Clock()
    first = PredictionBatcher(prediction_flush_policy(1800), clock, path)
    for i in range(3):
        first.add(prediction(i))
    assert first.due() == []
    with path.open("ab") as file:  # the process dies mid-write: a torn last line
        file.write(b'{"thing_name": "gw-li')
    second = PredictionBatcher(prediction_flush_policy(1800), clock, path)
    assert second.held == 3 and "held prediction dropped" in caplog.text
    (batch,) = second.due()  # held before the restart: it has waited long enough
    assert [p.made_at for p in batch.predictions] == [prediction(i).made_at for i in range(3)]
    assert path.read_bytes() == b"", "what was handed out is no longer kept"
    second.add(prediction(3))
    third = PredictionBatcher(prediction_flush_policy(1800), clock, path)
    assert [p.made_at for b in third.drain() for p in b.predictions] == [prediction(3).made_at]
