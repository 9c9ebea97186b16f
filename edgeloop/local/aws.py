"""The local AWS account: environment pointing at moto_server, and the buckets and tables the stack would create.

Tables are built from `names.DEVICE_TABLE_KEYS` / `names.DEPLOYMENT_TABLE_KEYS` /
`names.MONITORING_TABLE_KEYS`, the same key schemas the CDK app uses, so the local tables cannot
drift from the deployed ones. The alert topic is the SNS topic operators subscribe to in AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from edgeloop.cloud.aws import client
from edgeloop.schemas import names

LOCAL_REGION = "eu-west-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# Variables that would make boto3 look for a real account; the local runtime removes them.
REAL_ACCOUNT_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
LOCAL_ACCOUNT_ID = "123456789012"  # moto's account for any credentials
LOCAL_ALERT_TOPIC = "edgeloop-alerts"
LOCAL_ALERT_TOPIC_ARN = f"arn:aws:sns:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:{LOCAL_ALERT_TOPIC}"
# Live accuracy waits this long past a window for its measurements: the local compaction runs every 30 s
# (`local up --compaction-every`) and a gateway's partial batch waits up to a minute.
LOCAL_LANDING_DELAY_MINUTES = 2


@contextmanager
def recorded_calls(service: str) -> Iterator[list[str]]:
    """The operations (e.g. "GetItem") the shared `service` client makes inside the block, in order:
    how the benchmarks and tests count the calls a code path costs."""
    operations: list[str] = []

    def hook(model, **_) -> None:
        operations.append(model.name)

    events = client(service).meta.events
    events.register(f"before-call.{service}", hook)
    try:
        yield operations
    finally:
        events.unregister(f"before-call.{service}", hook)


def local_aws_environment(endpoint_url: str) -> dict[str, str]:
    """Everything a function, gateway or CLI process needs to run against the local emulator."""
    if not endpoint_url.startswith(("http://", "https://")):
        raise ValueError(f"endpoint_url {endpoint_url!r} must start with http:// or https://")
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        **FAKE_CREDENTIALS,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_REGION": LOCAL_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        names.DATA_BUCKET_ENV: names.LOCAL_DATA_BUCKET,
        names.MODEL_BUCKET_ENV: names.LOCAL_MODEL_BUCKET,
        names.DEVICE_TABLE_ENV: names.LOCAL_DEVICE_TABLE,
        names.DEPLOYMENT_TABLE_ENV: names.LOCAL_DEPLOYMENT_TABLE,
        names.MONITORING_TABLE_ENV: names.LOCAL_MONITORING_TABLE,
        names.ALERT_TOPIC_ARN_ENV: LOCAL_ALERT_TOPIC_ARN,
        names.EVENT_BUS_ENV: "default",
        names.LANDING_DELAY_MINUTES_ENV: str(LOCAL_LANDING_DELAY_MINUTES),
        names.DELIVERY_ENV: "local",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": names.PROJECT,
        "POWERTOOLS_SERVICE_NAME": "edgeloop-local",
    }


def table_definition(table_name: str, keys: names.TableKeys) -> dict[str, Any]:
    """`create_table` arguments for a PAY_PER_REQUEST table with string keys and ALL-projected GSIs."""
    attributes: list[str] = []

    def key_schema(partition_key: str, sort_key: str | None) -> list[dict[str, str]]:
        schema = [{"AttributeName": partition_key, "KeyType": "HASH"}]
        if sort_key:
            schema.append({"AttributeName": sort_key, "KeyType": "RANGE"})
        for item in schema:
            if item["AttributeName"] not in attributes:
                attributes.append(item["AttributeName"])
        return schema

    definition: dict[str, Any] = {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": key_schema(keys.partition_key, keys.sort_key),
    }
    indexes = [
        {"IndexName": name, "KeySchema": key_schema(pk, sk), "Projection": {"ProjectionType": "ALL"}}
        for name, pk, sk in keys.indexes
    ]
    if indexes:
        definition["GlobalSecondaryIndexes"] = indexes
    definition["AttributeDefinitions"] = [{"AttributeName": a, "AttributeType": "S"} for a in attributes]
    return definition


LOCAL_TABLES = (
    (names.LOCAL_DEVICE_TABLE, names.DEVICE_TABLE_KEYS),
    (names.LOCAL_DEPLOYMENT_TABLE, names.DEPLOYMENT_TABLE_KEYS),
    (names.LOCAL_MONITORING_TABLE, names.MONITORING_TABLE_KEYS),
)
LOCAL_BUCKETS = (names.LOCAL_DATA_BUCKET, names.LOCAL_MODEL_BUCKET)


@dataclass(frozen=True)
class LocalResources:
    buckets: tuple[str, ...]
    tables: tuple[str, ...]
    alert_topic_arn: str


def create_local_resources() -> LocalResources:
    """Create the local buckets, tables and alert topic in the account the environment points at; safe to repeat."""
    for bucket in LOCAL_BUCKETS:
        _ensure_bucket(bucket)
    for table_name, keys in LOCAL_TABLES:
        _ensure_table(table_name, keys)
    topic_arn = client("sns").create_topic(Name=LOCAL_ALERT_TOPIC)["TopicArn"]  # idempotent by name
    return LocalResources(buckets=LOCAL_BUCKETS, tables=tuple(t for t, _ in LOCAL_TABLES), alert_topic_arn=topic_arn)


def _ensure_bucket(bucket: str) -> None:
    s3 = client("s3")
    if bucket in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        return
    region = s3.meta.region_name
    arguments: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # S3 rejects an explicit us-east-1 location constraint
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**arguments)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass  # another process created it between our check and our call


def _ensure_table(table_name: str, keys: names.TableKeys) -> None:
    dynamodb = client("dynamodb")
    try:
        dynamodb.describe_table(TableName=table_name)
    except dynamodb.exceptions.ResourceNotFoundException:
        try:
            dynamodb.create_table(**table_definition(table_name, keys))
        except dynamodb.exceptions.ResourceInUseException:
            pass  # another process created it between our check and our call
    dynamodb.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
