"""The cost bench's meters count calls where they happen (benchmarks/cost_meter.py), and the
usage built from them (benchmarks/cost_usage.py) prices what was counted."""

from __future__ import annotations

import json
from collections import Counter

import boto3
import cost_runs
import pytest
from moto import mock_aws

from benchmarks import cost_meter, cost_model, cost_usage
from benchmarks.cost_meter import AwsCallMeter, CountingLog, CountingTransport, IotUsage, LambdaMeter
from benchmarks.cost_template import deployed_settings
from edgeloop.schemas import names

EMF = {
    "_aws": {
        "Timestamp": 1,
        "CloudWatchMetrics": [
            {"Namespace": "edgeloop", "Dimensions": [["service"]], "Metrics": [{"Name": "A"}, {"Name": "B"}]}
        ],
    },
    "service": "ingest",
    "A": 1,
    "B": 2,
}


@pytest.fixture
def aws():
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="cost-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        dynamodb = boto3.client("dynamodb", region_name="eu-west-1")
        dynamodb.create_table(
            TableName="t",
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "g")],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by_g",
                    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        yield s3, dynamodb


def test_calls_outside_an_invocation_are_set_up_and_not_counted(aws):
    s3, _ = aws
    with AwsCallMeter() as meter:
        s3.put_object(Bucket="cost-bucket", Key="raw/x", Body=b"12345")
    assert meter.usage.requests == Counter()


def test_s3_requests_are_counted_by_function_operation_and_prefix(aws):
    s3, _ = aws
    with AwsCallMeter() as meter:
        token = cost_meter.FUNCTION.set("ingest")
        try:
            s3.put_object(Bucket="cost-bucket", Key="raw/day=1/x.json.gz", Body=b"0123456789")
            s3.get_object(Bucket="cost-bucket", Key="raw/day=1/x.json.gz")["Body"].read()
            s3.list_objects_v2(Bucket="cost-bucket", Prefix="raw/")
            s3.delete_object(Bucket="cost-bucket", Key="raw/day=1/x.json.gz")
        finally:
            cost_meter.FUNCTION.reset(token)
    requests = meter.usage.requests
    assert requests[("ingest", "s3", "PutObject", "raw")] == 1
    assert requests[("ingest", "s3", "GetObject", "raw")] == 1
    assert requests[("ingest", "s3", "ListObjectsV2", "raw")] == 1
    assert meter.usage.s3_put_bytes["raw"] == 10


def test_a_listing_costs_one_request_per_1000_keys_as_the_growth_model_assumes(aws):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]  # straight into moto: 1,001 API calls take seconds
    for i in range(cost_usage.LIST_PAGE_KEYS + 1):
        backend.put_object("cost-bucket", f"_state/compacted/raw/{i:05d}", b"")
    with AwsCallMeter() as meter:
        token = cost_meter.FUNCTION.set("compaction")
        try:
            from edgeloop.cloud import s3 as cloud_s3

            keys = list(cloud_s3.list_keys("cost-bucket", "_state/compacted/raw/"))
        finally:
            cost_meter.FUNCTION.reset(token)
    assert len(keys) == cost_usage.LIST_PAGE_KEYS + 1
    assert meter.usage.requests[("compaction", "s3", "ListObjectsV2", "_state")] == 2


def test_dynamodb_units_follow_item_size_and_gsi_writes(aws):
    _, dynamodb = aws
    with AwsCallMeter() as meter:
        token = cost_meter.FUNCTION.set("status_intake")
        try:
            dynamodb.put_item(TableName="t", Item={"pk": {"S": "a"}, "g": {"S": "x"}, "v": {"S": "z" * 1500}})
            dynamodb.put_item(TableName="t", Item={"pk": {"S": "b"}})
            dynamodb.get_item(TableName="t", Key={"pk": {"S": "a"}})
            dynamodb.update_item(
                TableName="t",
                Key={"pk": {"S": "b"}},
                UpdateExpression="SET g = :g",
                ExpressionAttributeValues={":g": {"S": "y"}},
            )
        finally:
            cost_meter.FUNCTION.reset(token)
    # 2 KB item with the GSI key: 2 units to the table + 2 to the index; small item: 1; update: 1 + 1 index
    assert meter.usage.write_units["status_intake"] == 4 + 1 + 2
    assert meter.usage.read_units["status_intake"] == 0.5
    assert ("status_intake", "dynamodb", "GetItem", "") in meter.usage.requests


def test_counting_log_collects_bytes_lines_and_distinct_emf_metrics():
    log = CountingLog()
    line = json.dumps(EMF)
    log.write(line[:10])
    log.write(line[10:] + "\nplain line\n")
    log.write(line + "\n")
    assert log.lines == 3
    assert log.bytes == 2 * len(line) + len("plain line") + 3
    assert log.metrics == {("edgeloop", (("service", "ingest"),), "A"), ("edgeloop", (("service", "ingest"),), "B")}


def test_lambda_meter_counts_requests_billed_time_and_log_bytes():
    log = CountingLog()
    meter = LambdaMeter({"ingest": 1024}, log)

    def handler(event, context):
        log.write("hello\n")
        return event["x"]

    assert meter.wrap("ingest", handler)({"x": 7}, None) == 7
    usage = meter.functions["ingest"]
    assert usage.requests == 1
    assert usage.gb_seconds >= 0.001  # at least one billed millisecond of 1 GB
    assert usage.log_bytes == 6 + cost_meter.PLATFORM_LOG_BYTES_PER_INVOCATION
    assert usage.log_lines == 1 + cost_meter.PLATFORM_LOG_EVENTS_PER_INVOCATION
    with pytest.raises(KeyError, match="'compaction' has no configured memory"):
        meter.wrap("compaction", handler)


class _Transport:
    is_connected = True

    def publish(self, topic, payload, timeout_s):
        self.last = (topic, payload)


def test_counting_transport_meters_payload_and_topic():
    usage = IotUsage()
    transport = CountingTransport(_Transport(), usage)
    transport.publish("t" * 100, b"x" * (5 * 1024 - 100), 1.0)
    transport.publish("t" * 100, b"x" * (5 * 1024), 1.0)
    assert (usage.messages, usage.units, usage.payload_bytes) == (2, 3, 10 * 1024 - 100)
    assert cost_meter.rule_units({"payload_b64": "A" * 8, "topic": "t"}) == 1


def test_usage_prices_each_counted_call_and_steady_state_storage():
    requests = Counter(
        {
            ("ingest", "s3", "PutObject", "raw"): 10,
            ("compaction", "s3", "GetObject", "raw"): 10,
            ("compaction", "s3", "DeleteObjects", "(bucket)"): 5,
            ("ingest", "iot", "DescribeThing", ""): 1,
            ("device_registry", "sagemaker", "ListModelPackages", ""): 3,
        }
    )
    figures = cost_usage.figures(cost_runs.fleet_run(requests), cost_runs.settings())
    flow, standing = figures.usage.flow, figures.usage.standing
    assert (flow["s3.put_copy_post_list"], flow["s3.get_and_other"]) == (10, 10)  # deletes are free
    assert flow["iot.registry_operation"] == 1
    assert (flow["iot.message_5kb"], flow["iot.rule_triggered"], flow["lambda.request"]) == (12, 10, 10)
    assert flow["iot.connection_minute"] == 2 * 1440
    access_logs = 26 * cost_usage.ACCESS_LOG_RECORD_BYTES * 365 / cost_model.GIB
    # raw/ for its 30 days, curated/ for the year, packs/ (rewritten in place) as it stands
    assert standing["s3.storage_gb_month"] == pytest.approx(30 + cost_usage.RETENTION_DAYS + 1 + access_logs)
    # a day's 10,000 raw objects and their markers: the daily sweep lists 30 and 32 days of them,
    # each other round the open hours (3 h of 20,000 keys a day: 2,500 keys, one page beyond the run's 2)
    sweeps = cost_model.MONTH_S / 86_400
    rounds = cost_model.MONTH_S / (15 * 60)
    listing = sweeps * ((10_000 * 30 + 10_000 * 32) / 1000 - 2) + (rounds - sweeps) * (2_500 / 1000 - 2)
    assert standing["s3.put_copy_post_list"] == pytest.approx(listing)
    assert figures.path.raw_puts == pytest.approx(10 * cost_model.MONTH_S / 86_400 / 2)


def test_a_call_without_a_price_fails_loudly():
    with pytest.raises(ValueError, match=r"sns\.Publish was called 1 times and has no price"):
        cost_usage.figures(cost_runs.fleet_run(Counter({("ingest", "sns", "Publish", ""): 1})), cost_runs.settings())


def test_deployed_settings_come_from_the_template(tmp_path):
    template = {
        "Resources": {
            "IngestFunction": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "MemorySize": 512,
                    "Architectures": ["arm64"],
                    "Environment": {
                        "Variables": {
                            "POWERTOOLS_SERVICE_NAME": "ingest",
                            "POWERTOOLS_LOGGER_SAMPLE_RATE": "0.01",
                            "DATA_BUCKET": {"Ref": "Bucket"},
                        }
                    },
                },
            },
            "CompactionFunction": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "MemorySize": 2048,
                    "Architectures": ["arm64"],
                    "Environment": {"Variables": {"POWERTOOLS_SERVICE_NAME": "compaction"}},
                },
            },
            "CompactionSchedule": {
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "ScheduleExpression": "rate(1 hour)",
                    "Targets": [{"Arn": {"Fn::GetAtt": ["CompactionFunction", "Arn"]}, "Id": "Target0"}],
                },
            },
            "IngestLogs": {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 90}},
            "IngestQueueSource": {
                "Type": "AWS::Lambda::EventSourceMapping",
                "Properties": {
                    "FunctionName": {"Ref": "IngestFunction"},
                    "BatchSize": 1000,
                    "MaximumBatchingWindowInSeconds": 60,
                },
            },
            "StorageDataBucketX": {
                "Type": "AWS::S3::Bucket",
                "Properties": {
                    "LifecycleConfiguration": {
                        "Rules": [{"ExpirationInDays": 30, "Prefix": "raw/", "Status": "Enabled", "Id": "r"}]
                    }
                },
            },
            "StorageAccessLogsBucketY": {
                "Type": "AWS::S3::Bucket",
                "Properties": {"LifecycleConfiguration": {"Rules": [{"ExpirationInDays": 365, "Status": "Enabled"}]}},
            },
        }
    }
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template))
    settings = deployed_settings(path)
    assert settings.memory_mb == {"ingest": 512, "compaction": 2048}
    assert settings.logging_env == {"ingest": {"POWERTOOLS_LOGGER_SAMPLE_RATE": "0.01"}, "compaction": {}}
    assert settings.compaction_interval_s == 3600
    assert settings.queue_batching == {"ingest": (1000, 60)}
    assert (settings.expiry_days, settings.access_log_expiry_days, settings.log_retention_days) == (
        {"raw": 30},
        365,
        90,
    )
    with pytest.raises(FileNotFoundError, match="run `make synth`"):
        deployed_settings(tmp_path / "missing.json")
    assert (settings.live_accuracy_interval_s, settings.landing_delay_minutes) == (None, 0.0)  # no such function

    template["Resources"]["LiveAccuracyFunction"] = {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "MemorySize": 1024,
            "Architectures": ["arm64"],
            "Environment": {
                "Variables": {"POWERTOOLS_SERVICE_NAME": "live_accuracy", names.LANDING_DELAY_MINUTES_ENV: "70"}
            },
        },
    }
    template["Resources"]["LiveAccuracySchedule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "ScheduleExpression": "rate(1 hour)",
            "Targets": [{"Arn": {"Fn::GetAtt": ["LiveAccuracyFunction", "Arn"]}, "Id": "Target0"}],
        },
    }
    path.write_text(json.dumps(template))
    settings = deployed_settings(path)
    assert settings.memory_mb["live_accuracy"] == 1024
    assert (settings.live_accuracy_interval_s, settings.landing_delay_minutes) == (3600, 70.0)
