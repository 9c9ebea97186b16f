"""Which lines a metric packer event is about; the examples themselves are built by
cloud/packing/examples.py."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from edgeloop.schemas import names
from edgeloop.schemas.common import IDENTIFIER

_CURATED_LINE = re.compile(rf"^{names.CURATED_PREFIX}/line=([^/]+)/")


def lines_from_event(event: dict) -> list[str]:
    """Lines named by an event: {"line_ids": [...]}, {"line_id": ...}, a compaction result
    ({"partitions": [...]}), an S3 notification (Records[].s3.object.key) or an EventBridge
    "Object Created" event (detail.object.key) for curated keys."""
    lines: set[str] = set()
    if isinstance(event.get("line_ids"), list):
        lines.update(event["line_ids"])
    if isinstance(event.get("line_id"), str):
        lines.add(event["line_id"])
    keys = list(event.get("partitions") or [])
    keys += [r.get("s3", {}).get("object", {}).get("key", "") for r in event.get("Records") or []]
    if isinstance(event.get("detail"), dict):
        keys.append(event["detail"].get("object", {}).get("key", ""))
    for key in keys:
        match = _CURATED_LINE.match(unquote_plus(key))
        if match:
            lines.add(match.group(1))
    bad = [line for line in lines if not isinstance(line, str) or not IDENTIFIER.match(line)]
    if bad:
        raise ValueError(f"line ids {bad!r} do not match {IDENTIFIER.pattern}")
    return sorted(lines)
