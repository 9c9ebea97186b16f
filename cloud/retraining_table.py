"""The monitoring table's retraining#<line> items: each line's last start, claimed by a conditional write.

A start first claims the line (the write succeeds only if the line's last start is older than the
cut-off, or if the item is this very trigger's unfinished claim), then starts the execution, then
records its ARN. A start that failed gives the claim back, so the retried event may claim again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from edgeloop.cloud.keyed_table import KeyedTable
from edgeloop.cloud.retraining import LineRetraining, RetrainingTrigger, retraining_item_key
from edgeloop.schemas import names

_BATCH_GET_MAX = 100  # BatchGetItem's limit of keys per request
_serializer, _deserializer = TypeSerializer(), TypeDeserializer()
# Every attribute by placeholder: some names ("trigger", "token") are DynamoDB reserved words.
_NAMES = {
    "#pk": names.MONITORING_TABLE_KEYS.partition_key,
    "#line": "line_id",
    "#started": "started_at",
    "#epoch": "started_epoch",
    "#trigger": "trigger",
    "#reason": "reason",
    "#token": "token",
    "#arn": "execution_arn",
    "#model": "model_id",
    "#version": "version",
    "#expires": names.MONITORING_TABLE_TTL_ATTRIBUTE,
}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _deserializer.deserialize(value) for key, value in item.items()}


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in values.items()}


class RetrainingTable(KeyedTable):
    def __init__(self, table_name: str) -> None:
        super().__init__(table_name, names.MONITORING_TABLE_KEYS, what="monitoring")

    def states(self, line_ids: Iterable[str]) -> dict[str, LineRetraining]:
        """{line: its retraining item} of the lines that have one (strongly consistent reads)."""
        keys = [retraining_item_key(line_id) for line_id in dict.fromkeys(line_ids)]
        found: dict[str, LineRetraining] = {}
        for first in range(0, len(keys), _BATCH_GET_MAX):
            for item in self._batch_get(keys[first : first + _BATCH_GET_MAX]):
                state = LineRetraining.model_validate(_plain(item))
                found[state.line_id] = state
        return found

    def _batch_get(self, keys: list[str]) -> list[dict[str, Any]]:
        request = {self.table_name: {"Keys": [self._key(k) for k in keys], "ConsistentRead": True}}
        items: list[dict[str, Any]] = []
        while request:
            response = self._client.batch_get_item(RequestItems=request)
            items += response.get("Responses", {}).get(self.table_name, [])
            request = response.get("UnprocessedKeys") or {}
        return items

    def claim(
        self, trigger: RetrainingTrigger, token: str, *, now: datetime, cutoff: datetime, expires: datetime
    ) -> dict | None:
        """Record `trigger` as the line's last start if the line may start: its item is absent, its last
        start is not after `cutoff`, or it is this trigger's own unrecorded claim. Returns the item it
        replaced ({} if none) for `release`, or None when the line is held (someone claimed it first).
        `expires`: the item's TTL (cloud.retraining.item_expiry)."""
        values = {
            ":line": trigger.line_id,
            ":started": now.isoformat(),
            ":epoch": int(now.timestamp()),
            ":trigger": trigger.kind.value,
            ":reason": trigger.reason,
            ":token": token,
            ":model": trigger.model_id,
            ":version": trigger.version,
            ":expires": int(expires.timestamp()),
            ":cutoff": int(cutoff.timestamp()),
        }
        response = self._if_condition_holds(
            "update_item",
            Key=self._key(retraining_item_key(trigger.line_id)),
            UpdateExpression="SET #line = :line, #started = :started, #epoch = :epoch, #trigger = :trigger, "
            "#reason = :reason, #token = :token, #model = :model, #version = :version, #expires = :expires "
            "REMOVE #arn",
            ConditionExpression="attribute_not_exists(#pk) OR #epoch <= :cutoff "
            "OR (#token = :token AND attribute_not_exists(#arn))",
            ExpressionAttributeNames=_NAMES,
            ExpressionAttributeValues=_typed(values),
            ReturnValues="ALL_OLD",
        )
        return None if response is None else response.get("Attributes", {})

    def record_start(self, line_id: str, token: str, execution_arn: str) -> bool:
        """The claim's execution ARN; False if another trigger claimed the line meanwhile."""
        response = self._if_condition_holds(
            "update_item",
            Key=self._key(retraining_item_key(line_id)),
            UpdateExpression="SET #arn = :arn",
            ConditionExpression="#token = :token",
            ExpressionAttributeNames={"#arn": "execution_arn", "#token": "token"},
            ExpressionAttributeValues=_typed({":arn": execution_arn, ":token": token}),
        )
        return response is not None

    def release(self, line_id: str, token: str, previous: dict[str, Any]) -> None:
        """Give a claim back after its start failed: the item it replaced again (or none), if still ours."""
        key = self._key(retraining_item_key(line_id))
        condition = {
            "ConditionExpression": "#token = :token",
            "ExpressionAttributeNames": {"#token": "token"},
            "ExpressionAttributeValues": {":token": {"S": token}},
        }
        if previous:
            self._if_condition_holds("put_item", Item=previous, **condition)
        else:
            self._if_condition_holds("delete_item", Key=key, **condition)
