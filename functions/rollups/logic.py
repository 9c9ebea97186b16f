"""A line's stored rollups: rebuild them from curated parts by event month, read them back.

The aggregation itself (levels, re-aggregation, m2) is cloud/datalake/rollups.py; where the
Parquet objects live is data_access.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from edgeloop.cloud.datalake.rollups import LEVELS, bucket_width_ms, build_levels, combine_arrow, to_arrow

from . import data_access

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


@dataclass
class RollupBuildResult:
    line_id: str
    months: list[str]  # event months rebuilt
    samples: int = 0
    rows_written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))  # resolution -> rows
    keys_deleted: list[str] = field(default_factory=list)  # rollups of months without curated data any more


def build_line_rollups(bucket: str, line_id: str, *, months: Iterable[str] | None = None) -> RollupBuildResult:
    """Rebuild the stored rollups of a line for some event months (all months when None).

    Every level is aligned to UTC days, so months are independent: late data that rewrites one
    curated day needs only its month rebuilt. A month without curated data loses its rollups.
    """
    curated = data_access.curated_parts_by_month(bucket, line_id)
    wanted = sorted(curated) if months is None else sorted(set(months))
    bad = [m for m in wanted if not _MONTH.match(m)]
    if bad:
        raise ValueError(f"months {bad} are not YYYY-MM")
    result = RollupBuildResult(line_id=line_id, months=wanted)
    for month in wanted:
        days = curated.get(month, {})
        parts = [data_access.read_curated_day(bucket, days[day]) for day in sorted(days)]
        if not parts:
            continue
        result.samples += sum(part.num_rows for part in parts)
        for resolution, frame in build_levels(parts).items():
            data_access.put_rollup_table(bucket, resolution, line_id, month, to_arrow(frame))
            result.rows_written[resolution] += len(frame)
    # Only a month without curated data can leave stale rollups: a round whose months all have
    # data (compaction's, every hour) lists nothing (a LIST per resolution is a billed request).
    if months is None or any(month not in curated for month in wanted):
        for resolution in LEVELS:
            stored = data_access.rollup_month_keys(bucket, resolution, line_id)
            stale = [k for month, k in stored.items() if month not in curated and (months is None or month in wanted)]
            data_access.delete_keys(bucket, stale)
            result.keys_deleted += stale
    return result


def read_rollups(bucket: str, line_id: str, resolution: str, *, months: Iterable[str] | None = None) -> pd.DataFrame:
    """Stored rollups of a line at one resolution, sorted by (metric, bucket_start_ms)."""
    bucket_width_ms(resolution)
    stored = data_access.rollup_month_keys(bucket, resolution, line_id)
    selected = sorted(stored) if months is None else sorted(set(months) & set(stored))
    return combine_arrow(data_access.get_rollup_table(bucket, stored[month]) for month in selected)
