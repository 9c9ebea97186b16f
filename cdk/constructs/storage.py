"""S3: the data bucket (system of record), the model bucket, and the bucket their access logs go to."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from edgeloop.schemas import names

from .nag import acknowledge

RAW_EXPIRY = Duration.days(30)  # compaction has turned raw/ into curated Parquet long before
# Compaction's per-object markers only matter while their raw object exists (its daily sweep
# lists both); two days more, as S3 expires objects up to a day after their date.
COMPACTION_MARKER_EXPIRY = Duration.days(RAW_EXPIRY.to_days() + 2)
QUARANTINE_EXPIRY = Duration.days(90)  # long enough to investigate and replay rejected batches
IOT_ERRORS_EXPIRY = Duration.days(90)
ACCESS_LOG_EXPIRY = Duration.days(365)
NONCURRENT_MODEL_EXPIRY = Duration.days(365)
INCOMPLETE_UPLOAD_EXPIRY = Duration.days(7)


def _secure_bucket_props() -> dict:
    return {
        "encryption": s3.BucketEncryption.S3_MANAGED,
        "enforce_ssl": True,
        "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
        "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        "removal_policy": RemovalPolicy.RETAIN,
    }


def _expire(prefix: str, after: Duration) -> s3.LifecycleRule:
    return s3.LifecycleRule(id=f"expire-{prefix}", prefix=f"{prefix}/", expiration=after)


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogsBucket",
            **_secure_bucket_props(),
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=ACCESS_LOG_EXPIRY)],
        )
        acknowledge(
            self.access_logs,
            "S1",
            "this is the server access log bucket of the data and model buckets; logging it into itself would loop",
        )
        self.data = s3.Bucket(
            self,
            "DataBucket",
            **_secure_bucket_props(),
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="data-bucket/",
            lifecycle_rules=[
                _expire(names.RAW_PREFIX, RAW_EXPIRY),
                _expire(names.COMPACTION_MARKERS_PREFIX, COMPACTION_MARKER_EXPIRY),
                _expire(names.QUARANTINE_PREFIX, QUARANTINE_EXPIRY),
                _expire(names.IOT_ERRORS_PREFIX, IOT_ERRORS_EXPIRY),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=INCOMPLETE_UPLOAD_EXPIRY
                ),
            ],
        )
        # "Object Created" events on EventBridge trigger the metric packer for new curated data.
        # Set on the CloudFormation resource: the L2 switch deploys a custom-resource Lambda instead.
        self.data.node.default_child.add_property_override(
            "NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True
        )
        self.models = s3.Bucket(
            self,
            "ModelBucket",
            **_secure_bucket_props(),
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="model-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-noncurrent-versions", noncurrent_version_expiration=NONCURRENT_MODEL_EXPIRY
                ),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=INCOMPLETE_UPLOAD_EXPIRY
                ),
            ],
        )

    @staticmethod
    def objects(bucket: s3.IBucket, prefix: str) -> str:
        """ARN of the objects under `prefix`/ in `bucket`."""
        return bucket.arn_for_objects(f"{prefix}/*")
