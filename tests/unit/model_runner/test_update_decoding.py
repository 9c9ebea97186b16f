"""Issue 14: the model update a gateway receives (configuration merge or MQTT JSON) is bounded before it is
built and strictly typed; each refusal names field, value and reason, and the component applies nothing."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from edgeloop.greengrass_components.model_runner.component import update_from_configuration
from edgeloop.greengrass_components.model_runner.update_decoding import (
    MAX_MODEL_UPDATE_JSON,
    UpdateDecodeError,
    decode_model_update,
)
from edgeloop.model_runtime.signing import generate_private_key, sign_identity, sign_rollback
from edgeloop.schemas import load_use_case
from edgeloop.schemas.signed_model import RollbackAuthorization, SignedModelIdentity

FEATURES = load_use_case("extrusion").feature_names
MAX_UPDATE_BYTES = MAX_MODEL_UPDATE_JSON.max_bytes
KEY = generate_private_key()


def _update() -> dict:
    """A full update: payload signature, signed identity and signed rollback (the deepest real document)."""
    identity = SignedModelIdentity(
        model_id="extrusion-line-1", use_case="extrusion", line_ids=["line-1"], version="1.0.0",
        payload_sha256={"fp32": "a" * 64}, issued_at_ms=1,
    )  # fmt: skip
    rollback = RollbackAuthorization(
        model_id="extrusion-line-1", use_case="extrusion", line_id="line-1", to_version="1.0.0",
        rolls_back_deployment_id="dep-2", rolls_back_version="2.0.0", issued_at_ms=2,
    )  # fmt: skip
    return {
        "deployment_id": "dep-2",
        "model_id": "extrusion-line-1",
        "version": "1.0.0",
        "precision": "fp32",
        "payload_uri": "s3://edgeloop-models/m/1.0.0/fp32.npz",
        "sha256": "a" * 64,
        "features": FEATURES,
        "feature_schema_hash": "b" * 64,
        "payload_bytes": 1234,
        "architectures": ["armv7l"],
        "identity": sign_identity(identity, KEY).model_dump(mode="json"),
        "rollback": sign_rollback(rollback, KEY).model_dump(mode="json"),
    }


def test_a_full_update_decodes_from_the_configuration_map_and_from_json():
    document = _update()
    from_map = decode_model_update(document)
    assert from_map == decode_model_update(json.dumps(document).encode())
    assert from_map.rollback.document.rolls_back_deployment_id == "dep-2"
    assert len(json.dumps(document)) < MAX_UPDATE_BYTES // 20  # the bound leaves ample room


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"payload_bytes": "1234"}, "payload_bytes", "valid integer"),
        ({"payload_bytes": True}, "payload_bytes", "valid integer"),
        ({"version": 1}, "version", "valid string"),
        ({"features": [*FEATURES[:-1], 1.5]}, f"features[{len(FEATURES) - 1}]", "valid string"),
        ({"precision": "fp64"}, "precision", "fp32"),
        ({"extra": 1}, "extra", "Extra inputs"),
        ({"model_id": None}, "model_id", "valid string"),
    ],
    ids=["int_as_string", "int_as_bool", "string_as_int", "feature_as_float", "unknown_enum", "unknown_field", "null"],
)
def test_mistyped_fields_are_refused_not_coerced(change, field, reason):
    with pytest.raises(UpdateDecodeError) as refused:
        decode_model_update({**_update(), **change})
    assert refused.value.field == field and reason in refused.value.reason, str(refused.value)
    assert f"{field}=" in str(refused.value)


def _nested(levels: int) -> object:
    value: object = 0
    for _ in range(levels):
        value = [value]
    return value


DEEP_BOMB_LEVELS = 10_000
DEEP_BOMB = {"identity": _nested(DEEP_BOMB_LEVELS)}


@pytest.mark.parametrize("form", ["map", "json"])
@pytest.mark.parametrize(
    ("bomb", "reason"),
    [
        ({"identity": _nested(8)}, "(MAX_MODEL_UPDATE_JSON_DEPTH)"),
        (DEEP_BOMB, "(MAX_MODEL_UPDATE_JSON_"),
        ({"features": [[]] * 100}, "(MAX_MODEL_UPDATE_JSON_CONTAINERS)"),
        ({"features": ["f"] * 1_000_000}, "(MAX_MODEL_UPDATE_JSON_"),
        ({"model_id": "m" * (MAX_UPDATE_BYTES + 1)}, "(MAX_MODEL_UPDATE_JSON_"),
    ],
    ids=["deep", "deep_bomb", "containers", "elements", "long_string"],
)
def test_bombs_are_refused_before_anything_is_built(form, bomb, reason):
    document = {**_update(), **bomb}
    if form == "map":
        raw = document
    elif bomb is DEEP_BOMB:  # json.dumps would recurse: the text is written by hand
        nest = b"[" * DEEP_BOMB_LEVELS + b"0" + b"]" * DEEP_BOMB_LEVELS
        raw = json.dumps({**document, "identity": 0}).encode().replace(b'"identity": 0', b'"identity": ' + nest)
    else:
        raw = json.dumps(document).encode()
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(UpdateDecodeError) as refused:
            decode_model_update(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reason in str(refused.value), str(refused.value)
    assert peak < 4 << 20 and time.perf_counter() - started < 1.0, (peak, str(refused.value))


def test_not_json_and_not_an_object_are_refused():
    with pytest.raises(UpdateDecodeError, match="is not JSON"):
        decode_model_update(b'{"deployment_id": ')
    with pytest.raises(UpdateDecodeError, match="is not a JSON object"):
        decode_model_update(b"[1, 2]")
    with pytest.raises(UpdateDecodeError, match="not a finite number"):
        decode_model_update({**_update(), "payload_bytes": float("nan")})


def test_the_configuration_names_its_key_in_the_refusal():
    with pytest.raises(ValueError, match=r"modelUpdate\.payload_bytes='1234'.*valid integer"):
        update_from_configuration({**_update(), "payload_bytes": "1234"})
