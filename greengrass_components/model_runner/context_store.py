"""The line's context on the gateway: which run, which spec limits and which state are in force when.

MES/PLC adapters publish ContextIntervals (kinds run, limits, state) on the local topic
names.LOCAL_PUBSUB_CONTEXT_TOPIC; hosts without Greengrass (the simulated gateway, tests) hand the
same intervals to `ContextStore.add`. An interval with the same (kind, interval_id) replaces the one
before it, so an adapter extends an open run by sending it again with a later end.

The limits in force at a time follow the cloud's rule (schemas.context.SubInterval.spec): the active
limits interval's, else the active run's. The intervals are persisted (JSON, written atomically) in
the runner's work directory, so a restart keeps the current run and limits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeloop.schemas import names
from edgeloop.schemas.bounded_json import MAX_CONTEXT_INTERVALS, MAX_CONTEXT_JSON, check_document, loads_bounded
from edgeloop.schemas.common import validation_problems
from edgeloop.schemas.context import ContextInterval, ContextKind, SpecLimits

from .agent import write_atomic

log = logging.getLogger(__name__)

KEPT_KINDS = (ContextKind.RUN, ContextKind.LIMITS, ContextKind.STATE)
# Intervals that ended longer ago than this before the newest one started are dropped: predictions
# are classified as they are made, not weeks later.
RETENTION = timedelta(days=2)
MAX_KEPT_INTERVALS = MAX_CONTEXT_INTERVALS


class ContextRefused(ValueError):
    """An interval this gateway cannot use: another line's, another target's limits, malformed."""


def intervals_from_document(document: Any, field: str = "<context>") -> list[ContextInterval]:
    """ContextIntervals of one local message: an interval object or a list of them (as on the cloud's
    context topic), bounded by MAX_CONTEXT_JSON before any is built (MessageDecodeError / ContextRefused
    name the field)."""
    check_document(document, MAX_CONTEXT_JSON, field)
    items = document if isinstance(document, list) else [document]
    intervals = []
    for index, item in enumerate(items):
        try:
            intervals.append(ContextInterval.model_validate(item))
        except ValidationError as exc:
            raise ContextRefused(f"{field}[{index}]: {validation_problems(exc)}") from None
    return intervals


def intervals_from_event(event: Any) -> list[ContextInterval]:
    """ContextIntervals of one SubscribeToTopic event on names.LOCAL_PUBSUB_CONTEXT_TOPIC (JSON or binary)."""
    field = names.LOCAL_PUBSUB_CONTEXT_TOPIC
    if event.json_message is not None:
        return intervals_from_document(event.json_message.message, field)
    if event.binary_message is not None:
        return intervals_from_document(
            loads_bounded(bytes(event.binary_message.message), MAX_CONTEXT_JSON, field), field
        )
    raise ContextRefused(f"{field}: the local message carries neither json_message nor binary_message")


class ContextStore:
    """The line's recent context intervals, persisted at `path` (None: in memory only)."""

    def __init__(self, line_id: str, target_metric: str, path: Path | None) -> None:
        self.line_id = line_id
        self.target_metric = target_metric
        self.path = path
        self._intervals: dict[tuple[str, str], ContextInterval] = {}
        self.refused = 0
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            documents = json.loads(path.read_text())
            intervals = [ContextInterval.model_validate(d) for d in documents]
        except (OSError, ValueError) as exc:  # a torn or foreign file: start without context, say so
            log.warning("context file %s not read (%s): no run or limits until the adapters resend them", path, exc)
            return
        self._intervals = {(i.kind.value, i.interval_id): i for i in intervals}

    def add(self, intervals: Iterable[ContextInterval]) -> int:
        """Keep the intervals of this line (kinds KEPT_KINDS); returns how many were taken.

        Raises ContextRefused for another line's interval or limits of another target (nothing of that
        call is kept: an adapter sending the wrong line is a configuration error to see at once)."""
        taken = []
        for interval in intervals:
            if interval.line_id != self.line_id:
                self.refused += 1
                raise ContextRefused(f"line_id={interval.line_id!r}: this gateway serves line {self.line_id!r}")
            if interval.spec is not None and interval.spec.target_metric != self.target_metric:
                self.refused += 1
                raise ContextRefused(
                    f"spec.target_metric={interval.spec.target_metric!r}: this line's target is {self.target_metric!r}"
                )
            if interval.kind in KEPT_KINDS:
                taken.append(interval)
        if not taken:
            return 0
        for interval in taken:
            self._intervals[(interval.kind.value, interval.interval_id)] = interval
        self._prune()
        self._save()
        return len(taken)

    def _prune(self) -> None:
        newest_start = max(i.start for i in self._intervals.values())
        kept = [i for i in self._intervals.values() if i.end > newest_start - RETENTION]
        kept = sorted(kept, key=lambda i: i.end)[-MAX_KEPT_INTERVALS:]
        self._intervals = {(i.kind.value, i.interval_id): i for i in kept}

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        documents = [i.model_dump(mode="json") for i in self._intervals.values()]
        write_atomic(self.path, json.dumps(documents).encode())  # a crash leaves the old file or the new one

    def active(self, kind: ContextKind, at: datetime) -> ContextInterval | None:
        """The interval of `kind` active at `at` (the latest started, if several overlap)."""
        found = [i for i in self._intervals.values() if i.kind is kind and i.start <= at < i.end]
        return max(found, key=lambda i: i.start) if found else None

    def limits_at(self, at: datetime) -> SpecLimits | None:
        """The spec limits in force at `at`: the active limits interval's, else the active run's."""
        for kind in (ContextKind.LIMITS, ContextKind.RUN):
            interval = self.active(kind, at)
            if interval is not None and interval.spec is not None:
                return interval.spec
        return None

    def run_at(self, at: datetime) -> str | None:
        run = self.active(ContextKind.RUN, at)
        return run.interval_id if run else None

    def intervals(self) -> list[ContextInterval]:
        """The kept intervals (live_context rules pick up their current run and limits from them on a restart)."""
        return list(self._intervals.values())

    def __len__(self) -> int:
        return len(self._intervals)
