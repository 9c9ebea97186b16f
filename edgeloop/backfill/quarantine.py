"""Refused samples of a recording to quarantine/, in ingest's layout, told in the file's terms.

A refused sample goes to quarantine/ with ingest's reason, its field being the file's column and its
error naming the file and line; one record per validation chunk with refused samples, its payload
the refused cells (file line, column, timestamp and value as read), its source the recording as
stored under raw_backfill/.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

import numpy as np

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.quarantine import quarantine_key
from edgeloop.cloud.datalake.sample_validation import SampleReasons
from edgeloop.schemas import IotRuleEvent, QuarantineReason, QuarantineRecord, names

from .layout import Layout, Samples
from .plan import BackfillPlan
from .recording import Recording, where_in_file


def _located(
    recording: Recording, layout: Layout, samples: Samples, position: int, reason: QuarantineReason
) -> QuarantineReason:
    """Ingest's reason, told in the file's terms: the column as field, the file and line in the error."""
    where = _where(recording, layout, samples, position)
    field_name = layout.columns[int(samples.column[position])]
    if reason.field.startswith("samples.time_ms"):
        field_name = layout.plan.mapping.timestamp.column
    elif reason.field.startswith("samples.metrics"):
        field_name = layout.plan.mapping.long.metric_column if layout.plan.mapping.long else field_name
    error = reason.error if reason.error.startswith(where) else f"{where}: {reason.error}"
    return QuarantineReason(field=field_name, value=reason.value, error=error)


def quarantine_chunk(
    bucket: str,
    plan: BackfillPlan,
    recording: Recording,
    layout: Layout,
    samples: Samples,
    refused: SampleReasons,
    recording_key: str,
    received_at: datetime,
) -> str:
    """One record per chunk with refused samples, in ingest's quarantine layout; its payload is the
    refused cells (file line, column, timestamp and value as read), its source the stored recording."""
    located = [_located(recording, layout, samples, p, r) for p in sorted(refused) for r in refused[p]]
    described = sum(len(r) for r in refused.values())
    for summary in refused.record_reasons()[described:]:  # past MAX_SAMPLE_REASONS: counted, not listed
        located.append(summary.model_copy(update={"error": f"{recording.path}: {summary.error}"}))
    cells = [
        {
            "line": int(samples.row[p]) + 2,
            "column": layout.columns[int(samples.column[p])],
            "time": recording.time_text[int(samples.row[p])].as_py(),
            "value": _shown(samples, p),
        }
        for p in sorted(refused)
    ]
    payload = json.dumps({"file": str(recording.path), "refused": cells}, default=str).encode()
    event = IotRuleEvent.from_message(
        names.telemetry_topic(plan.thing_name), payload, int(received_at.timestamp() * 1000)
    )
    key = quarantine_key(event, received_at)
    record = QuarantineRecord(
        source=recording_key, received_at=received_at, reasons=located, payload_b64=base64.b64encode(payload).decode()
    )
    s3.put_bytes(bucket, key, record.model_dump_json(indent=1).encode(), content_type="application/json")
    return key


def _shown(samples: Samples, position: int) -> object:
    if position in samples.other:
        return samples.other[position]
    value = float(samples.value[position])
    return value if np.isfinite(value) else str(value)


def _where(recording: Recording, layout: Layout, samples: Samples, position: int) -> str:
    return where_in_file(str(recording.path), layout.columns, int(samples.row[position]), int(samples.column[position]))
