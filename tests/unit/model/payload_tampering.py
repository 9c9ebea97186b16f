"""Tampering with weight-only payloads, for the tests that check what a reader refuses."""

from __future__ import annotations

import io
import json

import numpy as np

from edgeloop.model_runtime.model_format import HEADER_ARRAY


def rewrite(payload: bytes, header_changes: dict | None = None, drop: tuple = (), **array_changes) -> bytes:
    """The same payload with header fields or arrays replaced, and the arrays named in `drop` left out."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files if name not in drop}
    header = json.loads(arrays[HEADER_ARRAY].tobytes())
    header.update(header_changes or {})
    arrays[HEADER_ARRAY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    arrays.update(array_changes)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
