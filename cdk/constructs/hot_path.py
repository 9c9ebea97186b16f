"""The optional Timestream hot path (context flag edgeloop:enableTimestream, off by default).

Telemetry payloads are compressed binary, which an IoT rule's Timestream action cannot read, so
the copy starts from what ingest lands: every new raw/ object raises an EventBridge
"Object Created" event, and the hot_path function writes its samples to a Timestream table.
S3 stays the system of record; Timestream for LiveAnalytics is closed to new customers
(2025-06-20), so only accounts that already have it can turn this on.

The stack builds this construct only when the flag is on; with it off, nothing here is synthesized.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnOutput, Duration, RemovalPolicy, Validations
from aws_cdk import aws_timestream as timestream
from constructs import Construct

from edgeloop.schemas import names

from .functions import EdgeloopFunction, FunctionFactory
from .ingestion import on_object_created
from .nag import acknowledge
from .storage import Storage

HOT_PATH_FUNCTION = "hot_path"  # key of names.FUNCTIONS
# A raw object holds one MQTT message (<= 128 KB, up to ~130k samples at ~1 byte each): about
# 1,300 WriteRecords requests of 100 records, a few in flight at a time.
TIMEOUT = Duration.minutes(5)
MEMORY_MB = 512
COPY_RULE_DESCRIPTION = "edgeloop: new raw object -> Timestream hot path"
MAINTENANCE_MODE_REASON = (
    "Timestream for LiveAnalytics is in maintenance mode (closed to new customers since 2025-06-20): this "
    "optional hot path is off by default and meant only for accounts that already use Timestream"
)


class HotPath(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        factory: FunctionFactory,
        memory_retention_hours: int,
        magnetic_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        # No KmsKeyId: Timestream then encrypts with its AWS managed key (aws/timestream).
        self.database = timestream.CfnDatabase(self, "Database")
        self.table = timestream.CfnTable(
            self,
            "Table",
            database_name=self.database.ref,
            retention_properties={
                "MemoryStoreRetentionPeriodInHours": str(memory_retention_hours),
                "MagneticStoreRetentionPeriodInDays": str(magnetic_retention_days),
            },
            # Samples older than the memory store's retention (late or backlogged gateways, up to
            # the 14-day lateness SLA) go straight to the magnetic store instead of being rejected.
            magnetic_store_write_properties={"EnableMagneticStoreWrites": True},
        )
        # A copy of S3 data, but rebuilding it means replaying raw/ (which expires): keep it, like the buckets.
        for resource in (self.database, self.table):
            resource.apply_removal_policy(RemovalPolicy.RETAIN)
            # CDK's built-in template checks (cfn-lint's W3697) warn about the service's status.
            Validations.of(resource).acknowledge(
                Acknowledgment(id="CloudFormation-Validate::W3697", reason=MAINTENANCE_MODE_REASON)
            )
        acknowledge(
            self.database,
            "TS3",
            "encrypted with Timestream's AWS managed key, like the S3-managed encryption of the data bucket it "
            "copies (the system of record); a customer managed key would add cost and key policy for a copy",
        )
        self.function = factory.create(
            self,
            HOT_PATH_FUNCTION,
            environment={
                names.DATA_BUCKET_ENV: storage.data.bucket_name,
                names.TIMESTREAM_DATABASE_ENV: self.database.ref,
                names.TIMESTREAM_TABLE_ENV: self.table.attr_name,
            },
            timeout=TIMEOUT,
            memory_mb=MEMORY_MB,
            description="Optional hot path: copies each new raw/ object's samples into Timestream",
        )
        self._grant(storage)
        on_object_created(
            self, "RawObjectCreated", storage.data, names.RAW_PREFIX, self.function, COPY_RULE_DESCRIPTION
        )
        CfnOutput(self, "TimestreamDatabaseName", value=self.database.ref)
        CfnOutput(self, "TimestreamTableName", value=self.table.attr_name)

    def _grant(self, storage: Storage) -> None:
        function: EdgeloopFunction = self.function
        function.allow(
            actions=["s3:GetObject"],
            resources=[Storage.objects(storage.data, names.RAW_PREFIX)],
            reason=f"the hot path reads only the raw objects it copies ({names.RAW_PREFIX}/)",
        )
        function.allow(
            actions=["timestream:WriteRecords"],
            resources=[self.table.attr_arn],
            reason="writes to the one hot-path table only",
        )
        function.allow(
            actions=["timestream:DescribeEndpoints"],
            resources=["*"],
            # Same finding id as the X-Ray statement every function role has, so one reason for both.
            reason="Resource '*' only for actions without resource-level permissions: timestream:DescribeEndpoints "
            "(endpoint discovery, called before WriteRecords) and X-Ray's PutTraceSegments and "
            "PutTelemetryRecords (active tracing)",
        )
