"""The moto cloud of the fuzz suite, light enough to import in the memory test's subprocess (no
hypothesis): names, the handlers' environment, and `create_cloud`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3

from edgeloop.cloud.fleet.devices import DeviceTable
from edgeloop.local.aws import table_definition
from edgeloop.schemas import Architecture, DeviceRecord, Precision, load_use_case, names

THING = "gw-line-1"
LINE = "line-1"
SITE = "plant-a"
USE_CASE = "extrusion"
RECEIVED_AT_MS = 1_767_225_600_000 + 13 * 3_600_000 + 5_000  # 2026-01-01 13:00:05 UTC
RECEIVED_AT = datetime.fromtimestamp(RECEIVED_AT_MS / 1000, tz=UTC)
DAY_MS = 86_400_000
METRICS = sorted(load_use_case(USE_CASE).accepted_metrics)[:6]
DATA_BUCKET = "edgeloop-fuzz-data"
MODEL_BUCKET = "edgeloop-fuzz-models"
DEVICE_TABLE = "edgeloop-fuzz-devices"
DEPLOYMENT_TABLE = "edgeloop-fuzz-deployments"
TIMESTREAM_DATABASE, TIMESTREAM_TABLE = "edgeloop_fuzz", "telemetry"

ENVIRONMENT = {
    names.DATA_BUCKET_ENV: DATA_BUCKET,
    names.USE_CASE_ENV: USE_CASE,
    names.DEVICE_TABLE_ENV: DEVICE_TABLE,
    names.DEPLOYMENT_TABLE_ENV: DEPLOYMENT_TABLE,
    names.MODEL_BUCKET_ENV: MODEL_BUCKET,
    names.DELIVERY_ENV: "greengrass",
    names.GATEWAY_COMPONENT_VERSION_ENV: "1.0.0",
    names.MODEL_RUNNER_COMPONENT_VERSION_ENV: "1.0.0",
    names.TIMESTREAM_DATABASE_ENV: TIMESTREAM_DATABASE,
    names.TIMESTREAM_TABLE_ENV: TIMESTREAM_TABLE,
}


def create_cloud():
    """Inside mock_aws: what the five handlers read or write (the data and model buckets, the
    gateway in the IoT registry with its line, the device table holding it, the deployment table,
    a Timestream table); returns the S3 client."""
    s3 = boto3.client("s3")
    for bucket in (DATA_BUCKET, MODEL_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    boto3.client("iot").create_thing(
        thingName=THING, attributePayload={"attributes": {names.GATEWAY_LINE_ATTRIBUTE: LINE}}
    )
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(**table_definition(DEVICE_TABLE, names.DEVICE_TABLE_KEYS))
    dynamodb.create_table(**table_definition(DEPLOYMENT_TABLE, names.DEPLOYMENT_TABLE_KEYS))
    DeviceTable(DEVICE_TABLE).put(device_record())
    timestream = boto3.client("timestream-write")
    timestream.create_database(DatabaseName=TIMESTREAM_DATABASE)
    timestream.create_table(DatabaseName=TIMESTREAM_DATABASE, TableName=TIMESTREAM_TABLE)
    return s3


def device_record() -> DeviceRecord:
    """The registered gateway status reports refer to."""
    return DeviceRecord(
        thing_name=THING,
        site=SITE,
        line_id=LINE,
        use_case=USE_CASE,
        architecture=Architecture.X86_64,
        runtime_version="1.2.0",
        supported_precisions=[Precision.FP32],
        status_since=RECEIVED_AT - timedelta(hours=1),
        last_seen=RECEIVED_AT - timedelta(minutes=5),
    )
