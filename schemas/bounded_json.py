"""Bounded JSON: a device's JSON is measured on its bytes before it is parsed, and every limit of
every device message is named here once (telemetry's own are in schemas/telemetry.py).

Python's json recurses per nesting level (445 bytes of `[[[...` raised RecursionError) and makes a
Python object of every element and string, so a small message can cost a Lambda its memory. Each
kind of message has its JsonLimits; `loads_bounded` checks a payload against them on the bytes
(size, nesting depth, arrays and objects, strings, elements: C-speed passes, no parsing), parses it
only then (refusing data after the document and the non-JSON tokens NaN and Infinity), and walks
the result for what bytes cannot show exactly (string lengths, lone surrogates). `check_document`
is that walk alone, for a document that arrives already parsed (e.g. a Greengrass configuration).

A refusal is a MessageDecodeError naming the field, the value and the limit (as `<name>_<LIMIT>`,
e.g. MAX_CONTEXT_JSON_DEPTH): what a quarantine record holds.

Device code imports this: Python 3.9, standard library only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

# AWS IoT Core's per-message limit: no device message can be larger (only a path around IoT Core).
MAX_PAYLOAD_BYTES = 128 * 1024


class MessageDecodeError(ValueError):
    """A device's bytes are not a valid message: `field` and `value` say where and what (for quarantine)."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"{field}={value!r} {reason}")
        self.field = field
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class JsonLimits:
    """What one kind of JSON document may hold before it is parsed.

    `name` is how a refusal names each limit: <name>_BYTES, _DEPTH, _CONTAINERS, _STRINGS,
    _ELEMENTS, _STRING_CHARS. Elements are counted as commas + 1 (array items and object members);
    strings include object keys.
    """

    name: str
    max_bytes: int
    max_depth: int
    max_containers: int
    max_strings: int
    max_elements: int
    max_string_chars: int | None = None  # checked on the parsed document (exact, after escapes)

    def label(self, limit: str) -> str:
        return f"{self.name}_{limit}"


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")


def check_json_shape(text: bytes, field: str, limits: JsonLimits) -> None:
    """Refuse JSON text larger than limits.max_bytes, with more strings, elements or arrays and
    objects than allowed, or nested deeper, before parsing it; each is counted by C-speed passes
    over the bytes (16 MiB in well under a second). Malformed JSON is left to the parser."""
    if len(text) > limits.max_bytes:
        raise MessageDecodeError(
            field, f"{len(text)} bytes", f"exceed {limits.max_bytes} bytes ({limits.label('BYTES')})"
        )
    # Escapes out first (outside a string a backslash is invalid anyway): then every quote opens or
    # closes a string, and the even pieces between them are what lies outside strings.
    unescaped = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    strings = unescaped.count(b'"') // 2
    if strings > limits.max_strings:
        raise MessageDecodeError(
            field, f"{strings} JSON strings", f"exceed {limits.max_strings} ({limits.label('STRINGS')})"
        )
    bare = b"".join(unescaped.split(b'"')[::2])
    elements = bare.count(b",") + 1
    if elements > limits.max_elements:
        raise MessageDecodeError(
            field, f"{elements} JSON elements", f"exceed {limits.max_elements} ({limits.label('ELEMENTS')})"
        )
    containers = bare.count(b"[") + bare.count(b"{")
    if containers > limits.max_containers:
        raise MessageDecodeError(
            field,
            f"{containers} JSON arrays and objects",
            f"exceed {limits.max_containers} ({limits.label('CONTAINERS')})",
        )
    # Brackets only, "{" and "}" as "[" and "]" (a mismatched pair is the parser's to report).
    brackets = bare.translate(_AS_SQUARE, _NOT_BRACKETS)
    # Each pass removes the innermost level of every nest (replace does not rescan what it joined);
    # a pair left after max_depth passes nests deeper. Unpaired brackets are the parser's.
    for _ in range(limits.max_depth):
        if not brackets:
            return
        brackets = brackets.replace(b"[]", b"")
    if b"[]" in brackets:
        raise MessageDecodeError(
            field, text[:64], f"nests JSON deeper than {limits.max_depth} levels ({limits.label('DEPTH')})"
        )


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number (RFC 8259 has no NaN or Infinity)")


def loads_bounded(text: bytes, limits: JsonLimits, field: str = "<payload>") -> Any:
    """The JSON document in `text`, parsed only after check_json_shape passed, then checked whole
    by check_document. MessageDecodeError names what was refused."""
    check_json_shape(text, field, limits)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageDecodeError(
            field, text[:64], f"is not JSON: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        document = json.loads(decoded, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:  # trailing data included ("Extra data")
        raise MessageDecodeError(field, decoded[:64], f"is not JSON: {exc.msg} at {exc.pos}") from None
    except ValueError as exc:  # NaN, Infinity
        raise MessageDecodeError(field, decoded[:64], f"is not JSON: {exc}") from None
    check_document(document, limits, field)
    return document


_SCALARS = (str, int, float, bool, type(None))


def check_document(document: Any, limits: JsonLimits, field: str = "<document>") -> None:
    """Refuse an already-parsed document that passes `limits` (depth, arrays and objects, strings,
    elements, string length), holds a value JSON cannot (non-string keys, other types), a
    non-finite number or a string that is not Unicode text (a lone surrogate). Iterative: no
    recursion, and it stops at the first limit passed, so an oversized document costs no more
    than the limit."""
    containers = strings = 0
    elements = 1  # counted as check_json_shape counts them: commas + 1
    stack = [(document, field, 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            strings += 1
            _check_string(value, path, limits)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise MessageDecodeError(path, value, "is not a finite number")
        elif isinstance(value, (dict, list, tuple)):
            containers += 1
            if depth > limits.max_depth:
                raise MessageDecodeError(
                    path, "...", f"nests JSON deeper than {limits.max_depth} levels ({limits.label('DEPTH')})"
                )
            if containers > limits.max_containers:
                raise MessageDecodeError(
                    path,
                    f"{containers} arrays and objects",
                    f"exceed {limits.max_containers} ({limits.label('CONTAINERS')})",
                )
            elements += max(len(value) - 1, 0)
            if elements > limits.max_elements:
                raise MessageDecodeError(
                    path, f"{elements} elements", f"exceed {limits.max_elements} ({limits.label('ELEMENTS')})"
                )
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise MessageDecodeError(path, key, "is a key that is not a string")
                    strings += 1
                    _check_string(key, f"{path}.<key>", limits)
                    stack.append((item, f"{path}.{key[:64]}", depth + 1))
            else:
                stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))
        elif not isinstance(value, _SCALARS):
            raise MessageDecodeError(path, type(value).__name__, "is not a JSON value")
        if strings > limits.max_strings:
            raise MessageDecodeError(
                path, f"{strings} strings", f"exceed {limits.max_strings} ({limits.label('STRINGS')})"
            )


def _check_string(value: str, path: str, limits: JsonLimits) -> None:
    if limits.max_string_chars is not None and len(value) > limits.max_string_chars:
        raise MessageDecodeError(
            path,
            value[:64] + "...",
            f"is {len(value)} characters long, more than {limits.max_string_chars} ({limits.label('STRING_CHARS')})",
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MessageDecodeError(path, value[:64], f"is not Unicode text: {exc.reason} at {exc.start}") from None


# --- the device messages the cloud parses (telemetry's limits: schemas/telemetry.py) -------------

# Free-text fields of device messages (a context value, a status reason): at most this many
# characters, so each string costs the same at any payload size.
MAX_DEVICE_STRING_CHARS = 1000

# Context (edgeloop/<thing>/context): one ContextInterval or a list of them. An interval is an
# object of at most 7 members (17 strings counting keys) holding one object (spec); ~200 bytes.
MAX_CONTEXT_INTERVALS = 500
MAX_CONTEXT_JSON = JsonLimits(
    name="MAX_CONTEXT_JSON",
    max_bytes=MAX_PAYLOAD_BYTES,
    max_depth=3,  # [ {interval: {spec}} ]
    max_containers=4 * MAX_CONTEXT_INTERVALS,  # 2 an interval: room to name a list too long by its count
    max_strings=20 * MAX_CONTEXT_INTERVALS,
    max_elements=10 * MAX_CONTEXT_INTERVALS,
    max_string_chars=MAX_DEVICE_STRING_CHARS,
)

# Model status (edgeloop/<thing>/model-status): a ModelStatusReport or a PeriodicStatus, one flat
# object of at most 7 members.
MAX_STATUS_JSON = JsonLimits(
    name="MAX_STATUS_JSON",
    max_bytes=16 * 1024,
    max_depth=1,
    max_containers=1,
    max_strings=32,
    max_elements=16,
    max_string_chars=MAX_DEVICE_STRING_CHARS,
)

# Announcement (edgeloop/<thing>/announce): a DeviceAnnouncement, one object of 9 members holding
# the list of supported precisions.
MAX_SUPPORTED_PRECISIONS = 8
MAX_ANNOUNCEMENT_JSON = JsonLimits(
    name="MAX_ANNOUNCEMENT_JSON",
    max_bytes=16 * 1024,
    max_depth=2,
    max_containers=2,
    max_strings=32 + MAX_SUPPORTED_PRECISIONS,
    max_elements=16 + MAX_SUPPORTED_PRECISIONS,
    max_string_chars=MAX_DEVICE_STRING_CHARS,
)

# AWS IoT lifecycle events ($aws/events/presence/...): AWS writes them (about 10 flat members) but
# the client id and the disconnect reason come from the client; AWS may add members, so room is left.
MAX_LIFECYCLE_JSON = JsonLimits(
    name="MAX_LIFECYCLE_JSON",
    max_bytes=16 * 1024,
    max_depth=3,
    max_containers=16,
    max_strings=128,
    max_elements=128,
    max_string_chars=MAX_DEVICE_STRING_CHARS,
)
