"""What the DynamoDB tables share (fleet, monitoring): a named table, strongly consistent reads by key, and
conditional writes whose failed condition is an answer ("someone wrote first"), not an error."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from edgeloop.cloud.aws import client
from edgeloop.schemas import names

CONDITION_FAILED = "ConditionalCheckFailedException"


class KeyedTable:
    """A table whose items are found by one string partition key (names.TableKeys)."""

    def __init__(self, table_name: str, keys: names.TableKeys, *, what: str) -> None:
        if not table_name:
            raise ValueError(f"table_name='' : the {what} table needs a name")
        self.table_name = table_name
        self.partition_key = keys.partition_key

    @property
    def _client(self) -> Any:
        return client("dynamodb")

    def _key(self, value: str) -> dict[str, Any]:
        return {self.partition_key: {"S": value}}

    def _item(self, key: str) -> dict[str, Any] | None:
        """The item with partition key `key` (strongly consistent), or None."""
        return self._client.get_item(TableName=self.table_name, Key=self._key(key), ConsistentRead=True).get("Item")

    def _if_condition_holds(self, operation: str, **request: Any) -> dict[str, Any] | None:
        """Run a conditional write (`put_item`, `update_item`) on this table: its response, or None
        when its condition failed."""
        try:
            return getattr(self._client, operation)(TableName=self.table_name, **request)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == CONDITION_FAILED:
                return None
            raise
