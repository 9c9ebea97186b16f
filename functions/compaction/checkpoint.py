"""Which raw objects a compaction round looks at, so its listing does not grow with stored data.

raw/ keys sort by the hour their earliest message reached the broker
(raw/ingest_date=YYYY-MM-DD/hour=HH/..., cloud/datalake/raw.py), so "every key of a later hour
than H" is one listing that starts after H. The checkpoint (names.COMPACTION_CHECKPOINT_KEY) holds
`closed_through`, the last hour all of whose objects have been compacted, and `swept_on`, the day
of the last full sweep:
- A regular round lists raw/ and the markers (names.COMPACTION_MARKERS_PREFIX) only after
  `closed_through`: the hours still open, a few hours of objects whatever the bucket holds.
- An hour is closed once HOUR_CLOSES_AFTER has passed since its end. Ingest keys an object by its
  earliest message's receive time, and a message waits in the telemetry queue at most the batch
  window (60 s) plus its deliveries (5 x 420 s visibility, cdk/constructs/ingestion.py) before it
  lands or goes to the dead-letter queue: 36 minutes, well inside 2 hours.
- What lands in an hour after it closed (a dead-letter redrive, ingest throttled for hours) is
  picked up by the full sweep, the first round of each UTC day (and the first round ever): it lists
  all of raw/ (30 days) and all markers, as every round used to. Markers expire 2 days after raw/
  (cdk/constructs/storage.py), so they never grow past raw/'s 30 days either; a marker expired
  early would only mean one raw object read twice, which de-duplication absorbs.
The checkpoint is written after the round's curated partitions and markers: a crash before it
only repeats a listing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from edgeloop.cloud import s3
from edgeloop.cloud.aws import client
from edgeloop.schemas import names
from edgeloop.schemas.compat import UTC

HOUR_CLOSES_AFTER = timedelta(hours=2)
HOUR = timedelta(hours=1)
# Sorts after every character a raw key holds, so a listing that starts after
# "<hour prefix>~" skips the whole hour.
_AFTER_EVERY_KEY_CHAR = "~"


@dataclass(frozen=True)
class Checkpoint:
    closed_through: datetime  # an hour's start, UTC: every raw object of this hour and before is compacted
    swept_on: date  # the UTC day of the last full listing

    def to_json(self) -> bytes:
        return json.dumps(
            {"closed_through": self.closed_through.strftime("%Y-%m-%dT%H"), "swept_on": self.swept_on.isoformat()}
        ).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Checkpoint:
        data = json.loads(body)
        try:
            closed = datetime.strptime(data["closed_through"], "%Y-%m-%dT%H").replace(tzinfo=UTC)
            swept = date.fromisoformat(data["swept_on"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{names.COMPACTION_CHECKPOINT_KEY}: {body[:200]!r} is not a compaction checkpoint: {exc}"
            ) from exc
        return cls(closed_through=closed, swept_on=swept)


def marker_key(raw_key: str) -> str:
    return f"{names.COMPACTION_MARKERS_PREFIX}/{raw_key}"


def hour_prefix(hour: datetime) -> str:
    return f"{names.RAW_PREFIX}/ingest_date={hour:%Y-%m-%d}/hour={hour:%H}/"


def last_closed_hour(now: datetime) -> datetime:
    """The latest hour whose end lies HOUR_CLOSES_AFTER or more before `now`."""
    return (now - HOUR_CLOSES_AFTER).replace(minute=0, second=0, microsecond=0) - HOUR


def read_checkpoint(bucket: str) -> Checkpoint | None:
    body = s3.get_bytes_or_none(bucket, names.COMPACTION_CHECKPOINT_KEY)
    return None if body is None else Checkpoint.from_json(body)


def write_checkpoint(bucket: str, checkpoint: Checkpoint) -> None:
    s3.put_bytes(bucket, names.COMPACTION_CHECKPOINT_KEY, checkpoint.to_json(), content_type="application/json")


@dataclass(frozen=True)
class Listing:
    candidates: list[str]  # raw keys to compact unless marked
    marked: set[str]  # raw keys among them (or beyond) already compacted
    swept: bool  # a full listing of raw/ and the markers
    next_checkpoint: Checkpoint | None  # to write once the round succeeded; None: keep what is stored


def list_round(bucket: str, now: datetime | None) -> Listing:
    """The raw keys a scheduled round considers. `now` None: everything (a full sweep), no checkpoint."""
    stored = read_checkpoint(bucket) if now is not None else None
    sweep = now is None or stored is None or stored.swept_on != now.astimezone(UTC).date()
    after = None if sweep else stored.closed_through
    candidates = sorted(_list_after(bucket, f"{names.RAW_PREFIX}/", after, ""))
    marked = set(_list_after(bucket, f"{names.COMPACTION_MARKERS_PREFIX}/{names.RAW_PREFIX}/", after, "markers"))
    if now is None:
        return Listing(candidates, marked, swept=True, next_checkpoint=None)
    closed = last_closed_hour(now.astimezone(UTC))
    if stored is not None:
        closed = max(closed, stored.closed_through)
    swept_on = now.astimezone(UTC).date() if sweep else stored.swept_on
    return Listing(candidates, marked, swept=sweep, next_checkpoint=Checkpoint(closed, swept_on))


def marked_among(bucket: str, raw_keys: Iterable[str]) -> set[str]:
    """Which of `raw_keys` carry a marker, listing only the markers of their hours."""
    hours = sorted({key[: key.index("/", key.index("/hour=") + 1) + 1] for key in raw_keys})  # raw/.../hour=HH/
    marker_root = f"{names.COMPACTION_MARKERS_PREFIX}/"
    return {m.removeprefix(marker_root) for hour in hours for m in s3.list_keys(bucket, marker_root + hour)}


def _list_after(bucket: str, prefix: str, after_hour: datetime | None, kind: str) -> Iterator[str]:
    """Keys under `prefix`, only those of hours after `after_hour` when given; marker keys come back as
    the raw keys they mark."""
    strip = f"{names.COMPACTION_MARKERS_PREFIX}/" if kind == "markers" else ""
    extra = {}
    if after_hour is not None:
        extra["StartAfter"] = strip + hour_prefix(after_hour) + _AFTER_EVERY_KEY_CHAR
    paginator = client("s3").get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, **extra):
        for item in page.get("Contents", []):
            yield item["Key"].removeprefix(strip)
