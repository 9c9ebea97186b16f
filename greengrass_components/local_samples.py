"""The local pub/sub message both components read: `{"samples": [[metric, time_ms, value], ...]}`.

Sensor adapters and the model runner's predictions publish it on names.LOCAL_PUBSUB_SAMPLES_TOPIC;
the gateway buffers the rows, the model runner scores them. Each side judges the rows its own way.
"""

from __future__ import annotations

import json
from typing import Any


def local_sample_rows(event: Any) -> list:
    """The rows of one SubscribeToTopic event (a JSON or a binary JSON message), as sent."""
    if event.json_message is not None:
        document = event.json_message.message
    elif event.binary_message is not None:
        document = json.loads(event.binary_message.message)
    else:
        raise ValueError("local message carries neither json_message nor binary_message")
    if not isinstance(document, dict) or not isinstance(document.get("samples"), list):
        raise ValueError(f"local message {str(document)[:200]!r} has no 'samples' list")
    # JSON has no tuples: rows stay [metric, time_ms, value] lists.
    return document["samples"]
