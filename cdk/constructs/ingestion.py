"""The data path: ingest (IoT rule target) -> raw/, compaction (schedule) -> curated/,
metric packer (new curated objects) -> packs/.

Each function may touch only the prefixes it owns or reads, never the whole bucket.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from constructs import Construct

from edgeloop.schemas import names

from .functions import EdgeloopFunction, FunctionFactory
from .storage import Storage

COMPACTION_SCHEDULE = events.Schedule.rate(Duration.minutes(15))
# Compaction's bookkeeping: one empty marker per compacted raw object
# (functions/compaction/logic.py STATE_PREFIX; a test keeps the two equal).
COMPACTION_STATE_PREFIX = "_state"
PREFIX_REASON = "object access is limited to the {} prefixes this function owns or reads"


class Ingestion(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, storage: Storage, factory: FunctionFactory, use_case: str
    ):
        super().__init__(scope, construct_id)
        environment = {names.DATA_BUCKET_ENV: storage.data.bucket_name, names.USE_CASE_ENV: use_case}
        self.ingest = factory.create(
            self,
            "ingest",
            environment=environment,
            description="Validates telemetry batches from the IoT rule and lands them in raw/ (or quarantine/)",
        )
        self.compaction = factory.create(
            self,
            "compaction",
            environment=environment,
            needs_pandas=True,
            timeout=Duration.minutes(10),
            memory_mb=2048,
            description="Compacts raw/ into de-duplicated curated/ Parquet by line and event date",
        )
        self.metric_packer = factory.create(
            self,
            "metric_packer",
            environment=environment,
            needs_pandas=True,
            timeout=Duration.minutes(10),
            memory_mb=2048,
            description="Rebuilds the labeled metric packs (packs/) of lines whose curated data changed",
        )
        self._grant_data_access(storage)
        self._schedule_compaction()
        self._pack_on_new_curated_data(storage)

    def _grant_data_access(self, storage: Storage) -> None:
        data = storage.data
        raw, quarantine = names.RAW_PREFIX, names.QUARANTINE_PREFIX
        curated, context, packs = names.CURATED_PREFIX, names.CONTEXT_PREFIX, names.PACKS_PREFIX
        late, state = names.LATE_PREFIX, COMPACTION_STATE_PREFIX
        _objects(self.ingest, data, ["s3:PutObject"], [raw, quarantine])
        # Listing lets a missing key answer 404 instead of 403, which the functions rely on.
        for function in (self.compaction, self.metric_packer):
            function.allow(
                actions=["s3:ListBucket"],
                resources=[data.bucket_arn],
                reason="listing the data bucket itself (no object access)",
            )
        _objects(self.compaction, data, ["s3:GetObject"], [raw, curated, late, state])
        _objects(self.compaction, data, ["s3:PutObject"], [curated, late, state])
        _objects(self.compaction, data, ["s3:DeleteObject"], [curated, late])  # superseded parts of a partition
        _objects(self.metric_packer, data, ["s3:GetObject"], [curated, context, packs])
        _objects(self.metric_packer, data, ["s3:PutObject"], [context, packs])

    def _schedule_compaction(self) -> None:
        rule = events.Rule(self, "CompactionSchedule", schedule=COMPACTION_SCHEDULE, description="edgeloop compaction")
        rule.add_target(_target(self.compaction))

    def _pack_on_new_curated_data(self, storage: Storage) -> None:
        rule = events.Rule(
            self,
            "CuratedObjectCreated",
            description="edgeloop: new curated Parquet -> metric packer",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [storage.data.bucket_name]},
                    "object": {"key": [{"prefix": f"{names.CURATED_PREFIX}/"}]},
                },
            ),
        )
        rule.add_target(_target(self.metric_packer))


def _objects(function: EdgeloopFunction, bucket, actions: list[str], prefixes: list[str]) -> None:
    function.allow(
        actions=actions,
        resources=[Storage.objects(bucket, prefix) for prefix in prefixes],
        reason=PREFIX_REASON.format(", ".join(f"{p}/" for p in prefixes)),
    )


def _target(function: EdgeloopFunction) -> targets.LambdaFunction:
    """EventBridge delivery failures land in the same queue as the function's own failures."""
    return targets.LambdaFunction(
        function.function,
        dead_letter_queue=function.failure_queue,
        retry_attempts=2,
        max_event_age=Duration.hours(2),
    )
