"""Raw objects: the batches ingest lands, one object per accepted MQTT message.

raw/ingest_date=YYYY-MM-DD/hour=HH/thing=<name>/<seq_first>-<seq_last>.json.gz holds one RawBatch
(schemas/raw_batch.py). Ingest writes each key once; compaction folds them into curated/, and the
optional hot path copies each new one into Timestream.

No numpy/pandas/pyarrow here: ingest and the hot path import this on their cold-start path.
"""

from __future__ import annotations

import re
from datetime import datetime

from edgeloop.schemas import TelemetryBatch, names

RAW_KEY = re.compile(
    rf"^{names.RAW_PREFIX}/ingest_date=\d{{4}}-\d{{2}}-\d{{2}}/hour=\d{{2}}/"
    r"thing=(?P<thing>[a-zA-Z0-9:_-]{1,128})/(?P<seq_first>\d{20})-(?P<seq_last>\d{20})\.json\.gz$"
)


def raw_object_key(batch: TelemetryBatch, received_at: datetime) -> str:
    """Keyed by ingestion time and sequence range: a re-delivery within the hour hits the same key.

    Re-deliveries in a later hour land under another key; compaction drops them by (thing, seq).
    RAW_KEY matches every key this returns.
    """
    return (
        f"{names.RAW_PREFIX}/ingest_date={received_at:%Y-%m-%d}/hour={received_at:%H}/"
        f"thing={batch.thing_name}/{batch.seq_first:020d}-{batch.seq_last:020d}.json.gz"
    )
