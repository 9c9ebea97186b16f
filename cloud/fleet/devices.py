"""The device table: DeviceRecord <-> DynamoDB item, queries by index, compare-and-swap writes.

Registration, status intake and the orchestrator all write device items, sometimes at the same
moment (an announcement racing a status report, 200 reports from one wave). Every write therefore
goes through `compare_and_swap`: read the item with its `revision`, compute the new record, write
it only if the revision is still the one read, retry otherwise. Nothing is lost and no writer needs
to know about the others.

Two bookkeeping attributes live in the item beside the record's fields and never leave this
module's `StoredDevice`: `revision` (bumped on every write) and `report_sent_at_us` (the sent_at of
the status report the item's status came from, as integer microseconds so DynamoDB compares it
numerically; ISO strings of varying precision do not sort correctly).

History (single-table). The table's only key is `thing_name`, so each status change of a device
is an item of its own beside the device item, laid out so that the existing `by_status` index
serves as the history index (index overloading) and no other index sees it:

    device item   thing_name=<thing>                       status=<DeviceStatus>   (+ record fields)
    history item  thing_name=<thing>#history#<revision:012>  status=history#<thing>  history_entry=<JSON>

`#` is not in the thing-name alphabet, so a history key never collides with a device. A device's
history is one `by_status` partition (`history#<thing>`) sorted by the zero-padded revision of the
device item the change produced, i.e. in the order the compare-and-swap writes were serialized;
`history()` reads it newest first. History items carry no `line_id` or `current_model_version`
(the other two indexes skip them), no `revision` and a `history_entry` attribute, by which
`scan_all` leaves them out. A history item is appended after its compare-and-swap succeeded (never
before, so a lost race records nothing) and keyed by that revision, so a retried append lands once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from edgeloop.cloud.keyed_table import KeyedTable
from edgeloop.schemas import DeviceEvent, DeviceHistoryEntry, DeviceRecord, DeviceStatus, names

REVISION = "revision"
HISTORY_ENTRY = "history_entry"
HISTORY_KEY_SEPARATOR = "#history#"
HISTORY_PARTITION_PREFIX = "history#"
REPORT_SENT_AT = "report_sent_at_us"
_BOOKKEEPING = (REVISION, REPORT_SENT_AT)
_BATCH_GET_LIMIT = 100  # BatchGetItem takes at most 100 keys
DEFAULT_ATTEMPTS = 50

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _index(name: str) -> tuple[str, str, str | None]:
    for index in names.DEVICE_TABLE_KEYS.indexes:
        if index[0] == name:
            return index
    raise KeyError(f"the device table has no index {name!r}")


BY_LINE = _index("by_line")
BY_MODEL_VERSION = _index("by_model_version")
BY_STATUS = _index("by_status")


def microseconds(moment: datetime) -> int:
    """Exact integer form of a timestamp (float seconds would round away microseconds)."""
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment.isoformat()} has no time zone")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class DevicePage:
    """One page of devices; `after` is the last thing name read, where the next page starts (None: the end)."""

    records: list[DeviceRecord]
    after: str | None


@dataclass(frozen=True)
class StoredDevice:
    """A device record as stored, with what compare-and-swap needs to write it back safely."""

    record: DeviceRecord
    revision: int
    report_sent_at_us: int | None = None


@dataclass(frozen=True)
class DeviceWrite:
    """What a compare-and-swap change wants stored; `report_sent_at_us=None` keeps the stored one."""

    record: DeviceRecord
    report_sent_at_us: int | None = None


# What a write recorded in the history (None: what the new status says), from the record before and after it.
EventOf = Callable[[DeviceRecord | None, DeviceRecord], DeviceEvent | None]


class WriteConflict(RuntimeError):
    """Compare-and-swap kept losing to other writers."""


def record_to_item(record: DeviceRecord, *, revision: int, report_sent_at_us: int | None = None) -> dict[str, Any]:
    # GSIs cannot index null attributes, so absent fields are left out rather than stored as NULL.
    document = record.model_dump(mode="json", exclude_none=True)
    document[REVISION] = revision
    if report_sent_at_us is not None:
        document[REPORT_SENT_AT] = report_sent_at_us
    return {key: _serializer.serialize(value) for key, value in document.items()}


def item_to_stored(item: dict[str, Any]) -> StoredDevice:
    document = {key: _deserializer.deserialize(value) for key, value in item.items()}
    revision = int(document.pop(REVISION, 0))
    report_sent_at = document.pop(REPORT_SENT_AT, None)
    try:
        record = DeviceRecord.model_validate(document)
    except ValueError as exc:
        raise ValueError(f"device item {document.get('thing_name')!r} is not a DeviceRecord: {exc}") from exc
    return StoredDevice(record, revision, None if report_sent_at is None else int(report_sent_at))


class DeviceTable(KeyedTable):
    def __init__(self, table_name: str) -> None:
        super().__init__(table_name, names.DEVICE_TABLE_KEYS, what="device")

    # --- reads -----------------------------------------------------------------------------------

    def get(self, thing_name: str) -> DeviceRecord | None:
        stored = self.get_stored(thing_name)
        return None if stored is None else stored.record

    def get_stored(self, thing_name: str) -> StoredDevice | None:
        item = self._item(thing_name)
        return None if item is None else item_to_stored(item)

    def get_many(self, thing_names: Iterable[str]) -> dict[str, DeviceRecord]:
        """The records of the named devices that exist, by thing name (strongly consistent)."""
        wanted = sorted(set(thing_names))
        found: dict[str, DeviceRecord] = {}
        for start in range(0, len(wanted), _BATCH_GET_LIMIT):
            keys = [self._key(name) for name in wanted[start : start + _BATCH_GET_LIMIT]]
            request = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
            while request:
                response = self._client.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self.table_name, []):
                    record = item_to_stored(item).record
                    found[record.thing_name] = record
                request = response.get("UnprocessedKeys") or {}
        return found

    def by_line(self, line_id: str) -> list[DeviceRecord]:
        return self._query(BY_LINE, line_id)

    def by_model_version(self, version: str) -> list[DeviceRecord]:
        return self._query(BY_MODEL_VERSION, version)

    def by_status(self, status: DeviceStatus | str) -> list[DeviceRecord]:
        return self._query(BY_STATUS, DeviceStatus(status).value)

    def scan_all(self) -> list[DeviceRecord]:
        pages = self._client.get_paginator("scan").paginate(
            TableName=self.table_name,
            ConsistentRead=True,
            FilterExpression="attribute_not_exists(#history)",  # devices only (see the module docstring)
            ExpressionAttributeNames={"#history": HISTORY_ENTRY},
        )
        records = [item_to_stored(item).record for page in pages for item in page.get("Items", [])]
        return sorted(records, key=lambda r: r.thing_name)

    def page(
        self, index: tuple[str, str, str | None] | None, value: str | None, *, limit: int, after: str | None = None
    ) -> DevicePage:
        """At most `limit` items read from an index (devices whose key attribute is `value`, in thing
        name order) or, without one, from the table (no order); `after` continues a previous page."""
        thing_key = names.DEVICE_TABLE_KEYS.partition_key
        request: dict[str, Any] = {"TableName": self.table_name, "Limit": limit}
        if index is None:
            request["FilterExpression"] = "attribute_not_exists(#history)"  # devices only
            request["ExpressionAttributeNames"] = {"#history": HISTORY_ENTRY}
            if after:
                request["ExclusiveStartKey"] = {thing_key: {"S": after}}
            response = self._client.scan(**request)
        else:
            index_name, partition_key, _ = index
            request.update(
                IndexName=index_name,
                KeyConditionExpression="#pk = :value",
                ExpressionAttributeNames={"#pk": partition_key},
                ExpressionAttributeValues={":value": {"S": value}},
            )
            if after:
                request["ExclusiveStartKey"] = {partition_key: {"S": value}, thing_key: {"S": after}}
            response = self._client.query(**request)
        records = [item_to_stored(item).record for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return DevicePage(records, last[thing_key]["S"] if last else None)

    def _query(self, index: tuple[str, str, str | None], value: str) -> list[DeviceRecord]:
        index_name, partition_key, _ = index
        pages = self._client.get_paginator("query").paginate(
            TableName=self.table_name,
            IndexName=index_name,
            KeyConditionExpression="#pk = :value",
            ExpressionAttributeNames={"#pk": partition_key},
            ExpressionAttributeValues={":value": {"S": value}},
        )
        return [item_to_stored(item).record for page in pages for item in page.get("Items", [])]

    # --- writes ----------------------------------------------------------------------------------

    def put(self, record: DeviceRecord) -> None:
        """Unconditional write (seeding, tests); concurrent writers use compare_and_swap."""
        stored = self.get_stored(record.thing_name)
        revision = 0 if stored is None else stored.revision
        report = None if stored is None else stored.report_sent_at_us
        self._client.put_item(
            TableName=self.table_name,
            Item=record_to_item(record, revision=revision + 1, report_sent_at_us=report),
        )

    def replace_if_unchanged(self, stored: StoredDevice | None, write: DeviceWrite) -> bool:
        """Conditional update helper: store `write` only if the item is still as `stored` saw it.

        `stored=None` means "only if the device does not exist yet". When the write carries a
        report time, the condition also demands that it is newer than the stored one, so even a
        caller that skipped the read cannot put an older status over a newer one.
        """
        if stored is not None and write.record.thing_name != stored.record.thing_name:
            raise ValueError(
                f"thing_name={write.record.thing_name!r} cannot replace device {stored.record.thing_name!r}"
            )
        report = write.report_sent_at_us
        if report is None and stored is not None:
            report = stored.report_sent_at_us
        names_: dict[str, str] = {"#rev": REVISION}
        values: dict[str, Any] = {}
        if stored is None:
            condition = "attribute_not_exists(#rev)"
        else:
            condition = "#rev = :rev"
            values[":rev"] = {"N": str(stored.revision)}
        if write.report_sent_at_us is not None:
            names_["#sent"] = REPORT_SENT_AT
            values[":sent"] = {"N": str(write.report_sent_at_us)}
            condition += " AND (attribute_not_exists(#sent) OR #sent < :sent)"
        revision = 1 if stored is None else stored.revision + 1
        request: dict[str, Any] = {
            "Item": record_to_item(write.record, revision=revision, report_sent_at_us=report),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names_,
        }
        if values:
            request["ExpressionAttributeValues"] = values
        return self._if_condition_holds("put_item", **request) is not None

    def compare_and_swap(
        self,
        thing_name: str,
        change: Callable[[StoredDevice | None], DeviceWrite | None],
        *,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> DeviceRecord | None:
        """Read, apply `change`, write if nobody wrote in between; retry on conflict.

        `change` returns None to leave the device as it is; the stored record (or None) is then
        returned. `change` may run several times, so it must not have side effects.
        """
        stored, write = self._swap(thing_name, change, attempts)
        if write is None:
            return None if stored is None else stored.record
        return write.record

    # --- history (see the module docstring for the layout) --------------------------------------------

    def compare_and_swap_with_history(
        self,
        thing_name: str,
        change: Callable[[StoredDevice | None], DeviceWrite | None],
        *,
        event: DeviceEvent | EventOf | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> DeviceRecord | None:
        """`compare_and_swap`, then a history item for the write if it changed the device's status.

        A write counts as a change when it creates the device, or changes its status, reason,
        deployment, current or desired model version; `event` names what happened (announced,
        timed out...) and records the write even when nothing of that changed. Without it the
        event follows from the new status. `event` may also be a function of the record before
        and after the write that won, for writers whose event depends on what they found.
        """
        stored, write = self._swap(thing_name, change, attempts)
        if write is None:
            return None if stored is None else stored.record
        before = None if stored is None else stored.record
        if callable(event):
            event = event(before, write.record)
        revision = 1 if stored is None else stored.revision + 1
        entry = history_entry(before, write.record, revision=revision, event=event)
        if entry is not None:
            self.append_history(entry)
        return write.record

    def _swap(
        self, thing_name: str, change: Callable[[StoredDevice | None], DeviceWrite | None], attempts: int
    ) -> tuple[StoredDevice | None, DeviceWrite | None]:
        """The compare-and-swap loop: (the device as the last attempt read it, what it wrote or None)."""
        for _ in range(attempts):
            stored = self.get_stored(thing_name)
            write = change(stored)
            if write is None or self.replace_if_unchanged(stored, write):
                return stored, write
        raise WriteConflict(f"device {thing_name!r}: {attempts} conflicting writes in a row, giving up")

    def append_history(self, entry: DeviceHistoryEntry) -> None:
        """Store one history item; a second append of the same (thing, revision) changes nothing."""
        item = {
            names.DEVICE_TABLE_KEYS.partition_key: {"S": history_key(entry.thing_name, entry.revision)},
            BY_STATUS[1]: {"S": history_partition(entry.thing_name)},
            HISTORY_ENTRY: {"S": entry.model_dump_json()},
        }
        self._if_condition_holds(
            "put_item",
            Item=item,
            ConditionExpression="attribute_not_exists(#key)",
            ExpressionAttributeNames={"#key": names.DEVICE_TABLE_KEYS.partition_key},
        )

    def history(self, thing_name: str, *, limit: int | None = None) -> list[DeviceHistoryEntry]:
        """The device's history, newest first (at most `limit` entries)."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit={limit} must be at least 1")
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": BY_STATUS[0],
            "KeyConditionExpression": "#pk = :partition",
            "ExpressionAttributeNames": {"#pk": BY_STATUS[1]},
            "ExpressionAttributeValues": {":partition": {"S": history_partition(thing_name)}},
            "ScanIndexForward": False,
        }
        entries: list[DeviceHistoryEntry] = []
        while True:
            if limit is not None:
                request["Limit"] = limit - len(entries)
            response = self._client.query(**request)
            entries.extend(_history_entry(item) for item in response.get("Items", []))
            request["ExclusiveStartKey"] = response.get("LastEvaluatedKey")
            if not request["ExclusiveStartKey"] or (limit is not None and len(entries) >= limit):
                return entries


# --- history items -----------------------------------------------------------------------------------

# The event a change records when the writer names none: the status the device ended up in.
_EVENT_BY_STATUS = {
    DeviceStatus.REGISTERED: DeviceEvent.STATUS_CHANGED,
    DeviceStatus.PENDING: DeviceEvent.PENDING,
    DeviceStatus.APPLIED: DeviceEvent.APPLIED,
    DeviceStatus.REJECTED: DeviceEvent.REJECTED,
    DeviceStatus.ROLLED_BACK: DeviceEvent.ROLLED_BACK,
    DeviceStatus.OFFLINE: DeviceEvent.OFFLINE,
}
_TRACKED_FIELDS = ("status", "reason", "deployment_id", "current_model_version", "desired_model_version")


def history_key(thing_name: str, revision: int) -> str:
    return f"{thing_name}{HISTORY_KEY_SEPARATOR}{revision:012d}"


def history_partition(thing_name: str) -> str:
    return f"{HISTORY_PARTITION_PREFIX}{thing_name}"


def history_entry(
    before: DeviceRecord | None, after: DeviceRecord, *, revision: int, event: DeviceEvent | None = None
) -> DeviceHistoryEntry | None:
    """The history item of a write from `before` to `after`, or None when it changed no tracked field."""
    changed = before is None or any(getattr(before, f) != getattr(after, f) for f in _TRACKED_FIELDS)
    if not changed and event is None:
        return None
    if event is None:
        event = DeviceEvent.REGISTERED if before is None else _EVENT_BY_STATUS[after.status]
    status_moved = before is None or before.status_since != after.status_since
    return DeviceHistoryEntry(
        thing_name=after.thing_name,
        revision=revision,
        at=after.status_since if status_moved else after.last_seen,
        event=event,
        status=after.status,
        previous_status=None if before is None else before.status,
        reason=after.reason,
        deployment_id=after.deployment_id,
        model_id=after.current_model_id,
        model_version=after.current_model_version,
        desired_model_version=after.desired_model_version,
    )


def _history_entry(item: dict[str, Any]) -> DeviceHistoryEntry:
    try:
        return DeviceHistoryEntry.model_validate_json(item[HISTORY_ENTRY]["S"])
    except (KeyError, ValueError) as exc:
        key = item.get(names.DEVICE_TABLE_KEYS.partition_key, {}).get("S")
        raise ValueError(f"history item {key!r} holds no valid DeviceHistoryEntry: {exc}") from exc
