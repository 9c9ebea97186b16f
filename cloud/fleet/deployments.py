"""The deployment table: one DeploymentRecord per rollout, written by compare-and-swap, and the
outcome counters of its waves.

Every status report may advance a rollout, and reports of one wave arrive together, so two
invocations can both find the wave complete; the revision check lets exactly one of them record
(and deliver) the next wave. The record is kept whole as JSON in `document` (waves nest, and
DynamoDB's number type would turn thresholds into Decimals), zlib-compressed: it lists every target,
and thing names of a fleet share long prefixes, so 10,000 targets take tens of kilobytes, not the
hundreds that would approach DynamoDB's 400 KB item limit. The top-level attributes repeat the
fields an operator filters by in the console.

Wave counters (single-table). Deciding after each report whether a wave is complete would mean
re-reading every device of the wave; instead each wave has a counter item beside the deployment
item, so the check is one GetItem:

    deployment item  deployment_id=<deployment_id>               revision, document, updates, ...
    counter item     deployment_id=<deployment_id>#wave#<index>  wave_of=<deployment_id>, applied=N, failed=N,
                     wave_state, targets=N, failure_threshold, model_version, deadline

The counter item also carries what a status report needs to know of its wave (a WaveSummary: its
size and threshold, the rollout's version and deadline, the wave's state, mirrored by the wave
controller after each transition), so taking a report reads the counter, never the deployment,
whose size grows with the fleet.

`#` is not allowed in a deployment id (put_if_absent refuses it; ids from the orchestrator are
[A-Za-z0-9-]), so a counter key never collides with a deployment. Counter items have no
`document`, by which `scan_all` leaves them out. They are never part of the deployment's
compare-and-swap: status intake changes them with UpdateItem ADD (atomic, so concurrent reports
never lose a count), and only for a wave that `track_wave` started counting (`wave_of` is set
there, before the wave is delivered). A wave without a tracked counter (a rollout started before
counters existed, or a crash between the wave's transition and its tracking) has no counts; the
wave controller then falls back to reading the wave's devices. The counts are a hint that says
when that full read is worth doing, never the decision itself.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edgeloop.cloud.keyed_table import KeyedTable
from edgeloop.schemas import (
    DeploymentRecord,
    DeploymentState,
    ModelUpdate,
    Precision,
    RolloutWave,
    names,
)

REVISION = "revision"
DOCUMENT = "document"
UPDATES = "updates"
WAVE_COUNTER_SEPARATOR = "#wave#"
WAVE_OF = "wave_of"
APPLIED_COUNT = "applied"
FAILED_COUNT = "failed"
WAVE_STATE = "wave_state"
WAVE_TARGETS = "targets"
WAVE_THRESHOLD = "failure_threshold"
WAVE_MODEL_VERSION = "model_version"
WAVE_DEADLINE = "deadline"
_SUMMARY_FIELDS = (WAVE_STATE, WAVE_TARGETS, WAVE_THRESHOLD, WAVE_MODEL_VERSION, WAVE_DEADLINE)
_KEY_RESERVED = "#"  # separates a deployment id from what hangs off it (wave counters)


@dataclass(frozen=True)
class StoredDeployment:
    """A deployment with its revision and the ModelUpdate each cohort (precision) receives."""

    record: DeploymentRecord
    revision: int
    updates: dict[Precision, ModelUpdate] = field(default_factory=dict)


@dataclass(frozen=True)
class WaveCounts:
    """How many devices of a wave have reported the deployment applied, and how many failed."""

    applied: int
    failed: int

    @property
    def reported(self) -> int:
        return self.applied + self.failed


@dataclass(frozen=True)
class WaveSummary:
    """What the counter item knows of its wave: enough to judge a status report without the deployment."""

    deployment_id: str
    index: int
    model_version: str
    targets: int
    failure_threshold: float
    deadline: datetime  # the rollout's created_at + timeout_s
    state: DeploymentState


@dataclass(frozen=True)
class WaveCounter:
    counts: WaveCounts
    summary: WaveSummary | None  # None: tracked by a version that kept only the counts


def wave_counter_key(deployment_id: str, wave_index: int) -> str:
    return f"{deployment_id}{WAVE_COUNTER_SEPARATOR}{wave_index}"


def record_to_item(record: DeploymentRecord, revision: int, updates: Mapping[Precision, ModelUpdate]) -> dict[str, Any]:
    missing = {wave.precision for wave in record.waves} - set(updates)
    if missing:
        raise ValueError(f"deployment {record.deployment_id!r} has waves without a ModelUpdate: {sorted(missing)}")
    updates_json = {precision.value: update.model_dump(mode="json") for precision, update in updates.items()}
    return {
        names.DEPLOYMENT_TABLE_KEYS.partition_key: {"S": record.deployment_id},
        "state": {"S": record.state.value},
        "model_id": {"S": record.model_id},
        "model_version": {"S": record.model_version},
        "model_package_arn": {"S": record.model_package_arn},
        "created_at": {"S": record.created_at.isoformat()},
        REVISION: {"N": str(revision)},
        DOCUMENT: {"B": zlib.compress(record.model_dump_json().encode())},
        UPDATES: {"S": json.dumps(updates_json, sort_keys=True)},
    }


def item_to_stored(item: dict[str, Any]) -> StoredDeployment:
    try:
        record = DeploymentRecord.model_validate_json(_document_json(item[DOCUMENT]))
        updates = {
            Precision(precision): ModelUpdate.model_validate(update)
            for precision, update in json.loads(item.get(UPDATES, {}).get("S", "{}")).items()
        }
    except (KeyError, ValueError) as exc:
        key = item.get(names.DEPLOYMENT_TABLE_KEYS.partition_key, {}).get("S")
        raise ValueError(f"deployment item {key!r} holds no valid DeploymentRecord: {exc}") from exc
    return StoredDeployment(record, int(item[REVISION]["N"]), updates)


def _document_json(attribute: dict[str, Any]) -> bytes | str:
    if "B" in attribute:
        try:
            return zlib.decompress(attribute["B"])
        except zlib.error as exc:
            raise ValueError(f"document is not zlib-compressed JSON: {exc}") from exc
    return attribute["S"]  # written uncompressed by an earlier version


class DeploymentTable(KeyedTable):
    def __init__(self, table_name: str) -> None:
        super().__init__(table_name, names.DEPLOYMENT_TABLE_KEYS, what="deployment")

    def get(self, deployment_id: str) -> DeploymentRecord | None:
        stored = self.get_stored(deployment_id)
        return None if stored is None else stored.record

    def get_stored(self, deployment_id: str) -> StoredDeployment | None:
        item = self._item(deployment_id)
        return None if item is None else item_to_stored(item)

    def scan_all(self) -> list[DeploymentRecord]:
        return [stored.record for stored in self.scan_stored()]

    def scan_stored(self) -> list[StoredDeployment]:
        """Every deployment with its ModelUpdates, oldest first."""
        pages = self._client.get_paginator("scan").paginate(
            TableName=self.table_name,
            ConsistentRead=True,
            FilterExpression="attribute_exists(#document)",  # deployments only, no wave counters
            ExpressionAttributeNames={"#document": DOCUMENT},
        )
        stored = [item_to_stored(item) for page in pages for item in page.get("Items", [])]
        return sorted(stored, key=lambda s: (s.record.created_at, s.record.deployment_id))

    def put_if_absent(self, record: DeploymentRecord, updates: Mapping[Precision, ModelUpdate]) -> bool:
        """Create the deployment; False when one with this id exists (a repeated approval event)."""
        if _KEY_RESERVED in record.deployment_id:
            raise ValueError(
                f"deployment_id={record.deployment_id!r} contains {_KEY_RESERVED!r}, which the deployment table "
                f"reserves for the items beside a deployment (wave counters)"
            )
        return self._conditional_put(record, 1, updates, "attribute_not_exists(#rev)", {})

    def replace_if_unchanged(self, stored: StoredDeployment, record: DeploymentRecord) -> bool:
        """Store the new state of `stored`'s deployment unless someone wrote it since it was read."""
        if record.deployment_id != stored.record.deployment_id:
            raise ValueError(
                f"deployment_id={record.deployment_id!r} cannot replace deployment {stored.record.deployment_id!r}"
            )
        return self._conditional_put(
            record, stored.revision + 1, stored.updates, "#rev = :rev", {":rev": {"N": str(stored.revision)}}
        )

    # --- wave counters (see the module docstring) ------------------------------------------------------

    def track_wave(self, record: DeploymentRecord, wave: RolloutWave) -> None:
        """Start counting the wave's outcomes, with its summary; repeating it keeps the counts already made."""
        deadline = record.created_at + timedelta(seconds=record.timeout_s)
        self._client.update_item(
            TableName=self.table_name,
            Key=self._key(wave_counter_key(record.deployment_id, wave.index)),
            UpdateExpression=(
                "SET #of = :of, #state = :state, #targets = :targets, #threshold = :threshold, "
                "#version = :version, #deadline = :deadline ADD #applied :zero, #failed :zero"
            ),
            ExpressionAttributeNames={
                "#of": WAVE_OF,
                "#applied": APPLIED_COUNT,
                "#failed": FAILED_COUNT,
                "#state": WAVE_STATE,
                "#targets": WAVE_TARGETS,
                "#threshold": WAVE_THRESHOLD,
                "#version": WAVE_MODEL_VERSION,
                "#deadline": WAVE_DEADLINE,
            },
            ExpressionAttributeValues={
                ":of": {"S": record.deployment_id},
                ":zero": {"N": "0"},
                ":state": {"S": DeploymentState.IN_PROGRESS.value},
                ":targets": {"N": str(len(wave.targets))},
                ":threshold": {"S": repr(wave.failure_threshold)},  # a string: exact, no Decimal round trip
                ":version": {"S": record.model_version},
                ":deadline": {"S": deadline.isoformat()},
            },
        )

    def set_wave_state(self, deployment_id: str, wave_index: int, state: DeploymentState) -> None:
        """Mirror a wave's new state into its counter (nothing when the wave is not tracked)."""
        self._if_condition_holds(
            "update_item",
            Key=self._key(wave_counter_key(deployment_id, wave_index)),
            UpdateExpression="SET #state = :state",
            ConditionExpression="attribute_exists(#of)",
            ExpressionAttributeNames={"#of": WAVE_OF, "#state": WAVE_STATE},
            ExpressionAttributeValues={":state": {"S": state.value}},
        )

    def count_wave_outcome(
        self, deployment_id: str, wave_index: int, *, applied: int, failed: int
    ) -> WaveCounts | None:
        """Add to the wave's counts in one atomic update (a device moving from applied to failed is
        applied=-1, failed=+1) and return the counts it made; None when the wave is not tracked,
        which leaves it uncounted."""
        response = self._if_condition_holds(
            "update_item",
            Key=self._key(wave_counter_key(deployment_id, wave_index)),
            UpdateExpression="ADD #applied :applied, #failed :failed",
            # Counting into an untracked wave would create counts that miss its earlier reports.
            ConditionExpression="attribute_exists(#of)",
            ExpressionAttributeNames={"#of": WAVE_OF, "#applied": APPLIED_COUNT, "#failed": FAILED_COUNT},
            ExpressionAttributeValues={":applied": {"N": str(applied)}, ":failed": {"N": str(failed)}},
            ReturnValues="ALL_NEW",
        )
        return None if response is None else _counts_of(response["Attributes"])

    def wave_counts(self, deployment_id: str, wave_index: int) -> WaveCounts | None:
        """The wave's counts, or None when the wave is not tracked."""
        counter = self.wave_counter(deployment_id, wave_index)
        return None if counter is None else counter.counts

    def wave_counter(self, deployment_id: str, wave_index: int) -> WaveCounter | None:
        """The wave's counts and summary, or None when the wave is not tracked."""
        item = self._item(wave_counter_key(deployment_id, wave_index))
        if item is None or WAVE_OF not in item:
            return None
        return WaveCounter(_counts_of(item), _summary_of(deployment_id, wave_index, item))

    def _conditional_put(
        self,
        record: DeploymentRecord,
        revision: int,
        updates: Mapping[Precision, ModelUpdate],
        condition: str,
        values: dict,
    ) -> bool:
        request: dict[str, Any] = {
            "Item": record_to_item(record, revision, updates),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#rev": REVISION},
        }
        if values:
            request["ExpressionAttributeValues"] = values
        return self._if_condition_holds("put_item", **request) is not None


def _counts_of(attributes: Mapping[str, Any]) -> WaveCounts:
    return WaveCounts(applied=int(attributes[APPLIED_COUNT]["N"]), failed=int(attributes[FAILED_COUNT]["N"]))


def _summary_of(deployment_id: str, wave_index: int, item: Mapping[str, Any]) -> WaveSummary | None:
    if not all(name in item for name in _SUMMARY_FIELDS):
        return None
    try:
        return WaveSummary(
            deployment_id=deployment_id,
            index=wave_index,
            model_version=item[WAVE_MODEL_VERSION]["S"],
            targets=int(item[WAVE_TARGETS]["N"]),
            failure_threshold=float(item[WAVE_THRESHOLD]["S"]),
            deadline=datetime.fromisoformat(item[WAVE_DEADLINE]["S"]),
            state=DeploymentState(item[WAVE_STATE]["S"]),
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"wave counter {wave_counter_key(deployment_id, wave_index)!r} has a bad summary: {exc}"
        ) from exc
