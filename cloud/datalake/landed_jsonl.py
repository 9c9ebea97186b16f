"""JSON lines objects the predictions function lands, as written and as read back.

predictions/ objects are gzip-compressed JSON lines (names.LANDED_PREDICTIONS_SUFFIX, ".jsonl.gz":
Athena and most tools decompress by that extension); they are kept a year, and gzip makes them about
ten times smaller. Objects landed before that end in ".jsonl" and stay readable: readers go by the
key's suffix. alerts/ objects stay plain ".jsonl" (rare and small).
"""

from __future__ import annotations

import gzip
import zlib

GZIP_SUFFIX = ".gz"
GZIP_CONTENT_TYPE = "application/gzip"
JSON_CONTENT_TYPE = "application/json"


def gzip_jsonl(body: bytes) -> bytes:
    """`body` gzip-compressed with no timestamp in the header, so the same lines give the same bytes
    (a redelivered batch rewrites its object unchanged)."""
    return gzip.compress(body, compresslevel=9, mtime=0)


def content_type(key: str) -> str:
    return GZIP_CONTENT_TYPE if key.endswith(GZIP_SUFFIX) else JSON_CONTENT_TYPE


def landed_text(key: str, body: bytes) -> str:
    """The JSON lines of a landed object, decompressed when its key ends in .gz; ValueError (naming
    the key and the reason) when a .gz object does not decompress (a damaged object)."""
    if key.endswith(GZIP_SUFFIX):
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{key}: {len(body)} bytes do not decompress as gzip: {exc}") from exc
    return body.decode("utf-8", "replace")


def landed_lines(key: str, body: bytes) -> list[str]:
    """The object's non-blank JSON lines (split at "\\n" only: splitlines() would also cut at U+2028
    inside a string)."""
    return [text for text in landed_text(key, body).split("\n") if text.strip()]
