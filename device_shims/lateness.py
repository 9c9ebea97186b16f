"""Ingest's lateness SLA as replay checks it: rows older than the SLA allows on arrival would be
quarantined, so replay refuses the whole recording before publishing anything and proposes the
`edgeloop backfill` command that stores history instead."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

import numpy as np

from edgeloop.schemas import names

from .context_rows import iso

DAY_MS = 86_400_000
# Publishing takes time: replay refuses rows that would be within this margin of the SLA on arrival.
LATENESS_MARGIN_MS = 3_600_000


class LatenessRefused(ValueError):
    """A recording holds rows older than ingest's lateness SLA: they belong to `edgeloop backfill`."""


def lateness_sla_days() -> int:
    """Ingest's lateness SLA: names.LATENESS_SLA_DAYS_ENV when set, else the default."""
    text = os.environ.get(names.LATENESS_SLA_DAYS_ENV, "").strip()
    if not text:
        return names.DEFAULT_LATENESS_SLA_DAYS
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days <= 0:
        raise ValueError(f"{names.LATENESS_SLA_DAYS_ENV}={text!r} must be a positive whole number of days")
    return days


def check_lateness(
    time_ms: np.ndarray,
    valid: np.ndarray,
    *,
    now_ms: int,
    sla_days: int,
    source: str,
    backfill: str | None = None,
    margin_ms: int = LATENESS_MARGIN_MS,
) -> None:
    """Raise LatenessRefused when rows are older than the lateness SLA allows on arrival; `backfill`
    is the `edgeloop backfill ...` command the message proposes instead."""
    times = time_ms[valid]
    if times.size == 0:
        return
    earliest_ms = now_ms - sla_days * DAY_MS + margin_ms
    late = times < earliest_ms
    if not late.any():
        return
    oldest = int(times.min())
    row = int(np.flatnonzero(valid)[int(np.argmin(times))]) + 1
    raise LatenessRefused(
        f"{source}: {int(late.sum())} of {times.size} rows are older than the lateness SLA of {sla_days} days "
        f"({names.LATENESS_SLA_DAYS_ENV}; oldest: row {row} at {iso(oldest)}, ingest accepts from about "
        f"{iso(earliest_ms)}): ingest would quarantine them, so nothing was published. Historical "
        f"recordings go through `{backfill or backfill_command([source])}` instead "
        "(or replay with --shift-to-now to try the live path with them as if recorded now)"
    )


def backfill_command(
    files: Sequence[str], mapping: str | None = None, line_id: str | None = None, thing_name: str | None = None
) -> str:
    """The `edgeloop backfill` command line for recordings (placeholders where a value is unknown)."""
    words = ["edgeloop", "backfill", *(shlex.quote(str(f)) for f in files)]
    words += ["--mapping", shlex.quote(str(mapping)) if mapping else "MAPPING", "--line", line_id or "LINE"]
    if thing_name:
        words += ["--thing", thing_name]
    return " ".join(words)
