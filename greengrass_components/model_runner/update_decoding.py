"""Bounded, strictly typed decoding of the ModelUpdate a gateway receives.

Two forms arrive: the Greengrass configuration merge (already parsed by the IPC client: a map
under names.MODEL_UPDATE_CONFIG_KEY) and the JSON bytes of the local delivery's MQTT topic. Both are
measured against MAX_MODEL_UPDATE_JSON before anything is built from them, with the shared bounded
JSON checks (schemas/bounded_json.py: the bytes' size, nesting depth, arrays and objects, strings,
elements on the text, then an iterative walk of the parsed document; for the configuration map, that
walk alone). Only then is the document validated as a ModelUpdate in strict mode: no "1.5" or true
where a number is due, no number where a string is due, no unknown field. A refusal is an
UpdateDecodeError (a bounded_json.MessageDecodeError) naming the field, its value and the reason.

A legitimate update is ~3 KB (40 feature names, one signed identity, at most one signed rollback);
the limits leave room for a few thousand features and stay far below what a gateway can spare.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from edgeloop.schemas import ModelUpdate
from edgeloop.schemas.bounded_json import (
    MAX_PAYLOAD_BYTES,
    JsonLimits,
    MessageDecodeError,
    check_document,
    loads_bounded,
)
from edgeloop.schemas.common import validation_problems

MAX_UPDATE_FEATURES = 2048
MAX_MODEL_UPDATE_JSON = JsonLimits(
    name="MAX_MODEL_UPDATE_JSON",
    max_bytes=MAX_PAYLOAD_BYTES,  # AWS IoT Core's per-message limit; ample for a configuration merge too
    max_depth=6,  # update > rollback/identity > document > payload_sha256 is 4 levels
    max_containers=64,  # a real update has about 10 arrays and objects
    max_strings=MAX_UPDATE_FEATURES + 128,  # feature names, plus keys and a few dozen other strings
    max_elements=MAX_UPDATE_FEATURES + 128,
    max_string_chars=2048,  # the longest legitimate string is the payload's S3 URI (keys <= 1024)
)
MAX_VALUE_CHARS = 80  # of a refused value, in the message


class UpdateDecodeError(MessageDecodeError):
    """A model update refused before it is used: `field` (its path), `value` and `reason`."""


def decode_model_update(raw: bytes | str | Mapping[str, Any]) -> ModelUpdate:
    """The ModelUpdate in `raw` (JSON bytes/text, or the parsed configuration map), or UpdateDecodeError."""
    try:
        if isinstance(raw, (bytes, bytearray, str)):
            document = loads_bounded(
                raw.encode() if isinstance(raw, str) else bytes(raw), MAX_MODEL_UPDATE_JSON, "<update>"
            )
        else:
            document = dict(raw) if isinstance(raw, Mapping) else raw
            check_document(document, MAX_MODEL_UPDATE_JSON, "<update>")
        if not isinstance(document, dict):
            raise MessageDecodeError("<update>", type(document).__name__, "is not a JSON object")
        text = json.dumps(document, allow_nan=False, separators=(",", ":")).encode()
        if len(text) > MAX_MODEL_UPDATE_JSON.max_bytes:  # a map counts only once written out
            raise MessageDecodeError(
                "<update>",
                f"{len(text)} bytes",
                f"exceed {MAX_MODEL_UPDATE_JSON.max_bytes} bytes ({MAX_MODEL_UPDATE_JSON.label('BYTES')})",
            )
    except MessageDecodeError as exc:
        raise UpdateDecodeError(exc.field, _short(exc.value), exc.reason) from None
    try:
        return ModelUpdate.model_validate_json(text, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".") or "<update>"
        value = "<missing>" if first["type"] == "missing" else _short(first.get("input"))
        problems = validation_problems(exc, root="<update>", max_value_chars=MAX_VALUE_CHARS)
        raise UpdateDecodeError(field, value, f"is not a ModelUpdate: {problems}") from None


def _short(value: object) -> object:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value[:MAX_VALUE_CHARS]).decode("utf-8", "replace")
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return value[:MAX_VALUE_CHARS] + "..."
    if isinstance(value, (dict, list, tuple)):
        text = repr(value)
        return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."
    return value
