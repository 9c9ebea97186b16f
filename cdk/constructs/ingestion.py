"""The data path: ingest (IoT rule -> SQS queue -> batches) -> raw/, compaction (schedule) -> curated/,
rollups (compaction's on-success destination) -> rollups/, context (IoT rule target) ->
context/ + context_slices/, metric packer (new curated objects) -> packs/.

Each function may touch only the prefixes it owns or reads, never the whole bucket.
"""

from __future__ import annotations

from functools import partial

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from edgeloop.schemas import names

from .config import compaction_interval_minutes
from .functions import EdgeloopFunction, FunctionFactory
from .nag import acknowledge, wildcard_findings
from .storage import Storage

# Compaction's bookkeeping: one empty marker per compacted raw object
# (names.COMPACTION_MARKERS_PREFIX; a test keeps the two equal).
COMPACTION_STATE_PREFIX = "_state"
# powertools' Logger reads this: the share of invocations that log at DEBUG (ingest's per-invocation summary)
INGEST_LOG_SAMPLE_RATE_ENV = "POWERTOOLS_LOGGER_SAMPLE_RATE"
INGEST_LOG_SAMPLE_RATE = "0.01"
# The batched path (functions/ingest/batched.py; docs/architecture.md "Batched ingest"): the telemetry
# rule fills this queue, Lambda hands ingest up to INGEST_BATCH_SIZE messages gathered for at most
# INGEST_BATCH_WINDOW (or 6 MB of bodies, Lambda's payload limit), and ingest lands them in one object.
# SQS allows up to 10,000 a batch with a window of at most 300 s (a batch over 10 needs a window >= 1 s).
INGEST_BATCH_SIZE = 1000
INGEST_BATCH_WINDOW = Duration.seconds(60)
INGEST_TIMEOUT = Duration.seconds(60)
# The Lambda docs: a visibility timeout of at least 6x the function's timeout (retries while throttled),
# plus the batching window (records wait in the poller that long, invisible).
TELEMETRY_VISIBILITY_TIMEOUT = Duration.seconds(6 * INGEST_TIMEOUT.to_seconds() + INGEST_BATCH_WINDOW.to_seconds())
# A message that failed this often (storage or registry errors, each reported by its messageId) moves
# to the dead-letter queue; refused (invalid) messages never fail: they are quarantined.
TELEMETRY_MAX_RECEIVES = 5
TELEMETRY_RETENTION = Duration.days(4)  # SQS's default: the DLQ keeps 14, time to redrive after an outage
TELEMETRY_DLQ_RETENTION = Duration.days(14)
PREFIX_REASON = "object access is limited to the {} prefixes this function owns or reads"
PACK_RULE_DESCRIPTION = "edgeloop: new curated Parquet -> metric packer"


class Ingestion(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        factory: FunctionFactory,
        use_case: str,
        lateness_sla_days: int,
        use_case_file: str | None = None,
    ):
        """`use_case_file`: where the functions find a use-case file packaged with their code (the
        stack's -c edgeloop:useCaseFile); its use_case is `use_case`."""
        super().__init__(scope, construct_id)
        environment = {names.DATA_BUCKET_ENV: storage.data.bucket_name, names.USE_CASE_ENV: use_case}
        if use_case_file:
            environment[names.USE_CASE_FILE_ENV] = use_case_file
        # One SLA for both: ingest refuses older samples, compaction diverts what still gets through.
        lateness = {**environment, names.LATENESS_SLA_DAYS_ENV: str(lateness_sla_days)}
        self.ingest = factory.create(
            self,
            "ingest",
            # one message per invocation at fleet scale: 1% of invocations log their DEBUG summary
            environment={**lateness, INGEST_LOG_SAMPLE_RATE_ENV: INGEST_LOG_SAMPLE_RATE},
            description="Validates telemetry batches from the IoT rule's queue and lands them in raw/ (or quarantine/)",
            timeout=INGEST_TIMEOUT,
        )
        self.telemetry_queue = self._batched_queue(factory, self.ingest, "Telemetry", "telemetry")
        # The functions that rewrite Parquet: the pandas layer, and minutes and memory to match.
        parquet_function = partial(
            factory.create,
            self,
            environment=environment,
            needs_pandas=True,
            timeout=Duration.minutes(10),
            memory_mb=2048,
        )
        self.rollups = parquet_function(
            "rollups",
            description="Rebuilds the 1m/5m/1h/1d rollups (rollups/) of the event months a compaction run rewrote",
        )
        self.compaction = parquet_function(
            "compaction",
            description="Compacts raw/ into de-duplicated curated/ Parquet by line and event date",
            environment=lateness,
            # The full destination envelope (response_only=False) invokes the function directly;
            # its responsePayload is compaction's result, whose partitions the rollups rebuild.
            on_success=destinations.LambdaDestination(self.rollups.function, response_only=False),
        )
        self.context = parquet_function(
            "context",
            description="Lands context intervals from the IoT rule and rebuilds the line's 1-minute context_slices/",
            timeout=Duration.minutes(2),
            memory_mb=1024,
        )
        # the use case: its monitoring block rate-limits the alert notices (constructs/alerts.py wires the rest)
        self.predictions = factory.create(
            self,
            "predictions",
            environment=environment,
            description="Lands gateways' prediction and alert messages from the IoT rules in predictions/ and alerts/",
            timeout=INGEST_TIMEOUT,
        )
        # a prediction every pack stride per gateway: batched like telemetry (one object per batch)
        self.predictions_queue = self._batched_queue(factory, self.predictions, "Predictions", "prediction")
        self.metric_packer = parquet_function(
            "metric_packer",
            description="Rebuilds the labeled metric packs (packs/) of lines whose curated data changed",
        )
        self._grant_data_access(storage)
        self._acknowledge_destination_invoke()
        self._schedule_compaction()
        on_object_created(
            self, "CuratedObjectCreated", storage.data, names.CURATED_PREFIX, self.metric_packer, PACK_RULE_DESCRIPTION
        )

    def _batched_queue(
        self, factory: FunctionFactory, consumer: EdgeloopFunction, name: str, messages: str
    ) -> sqs.Queue:
        """A queue an IoT rule fills and `consumer` drains in batches (SSE, TLS only, a DLQ with an alarm)."""
        dead_letters = sqs.Queue(
            self,
            f"{name}DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=TELEMETRY_DLQ_RETENTION,
        )
        acknowledge(
            dead_letters,
            "SQS3",
            f"this queue is the dead-letter queue of the {messages} queue; a DLQ of a DLQ would only move "
            f"the same messages again (redrive them to the {messages} queue once the cause is fixed)",
        )
        queue = sqs.Queue(
            self,
            f"{name}Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=TELEMETRY_VISIBILITY_TIMEOUT,
            retention_period=TELEMETRY_RETENTION,
            dead_letter_queue=sqs.DeadLetterQueue(queue=dead_letters, max_receive_count=TELEMETRY_MAX_RECEIVES),
        )
        consumer.function.add_event_source(
            event_sources.SqsEventSource(
                queue,
                batch_size=INGEST_BATCH_SIZE,
                max_batching_window=INGEST_BATCH_WINDOW,
                report_batch_item_failures=True,
            )
        )
        factory.monitoring.alarm(
            self,
            f"{name}DeadLettersAlarm",
            metric=dead_letters.metric_approximate_number_of_messages_visible(period=Duration.minutes(5)),
            description=f"edgeloop {consumer.key}: {messages} messages failed to land after "
            f"{TELEMETRY_MAX_RECEIVES} deliveries and wait in the dead-letter queue for a redrive",
        )
        return queue

    def _grant_data_access(self, storage: Storage) -> None:
        data = storage.data
        raw, quarantine = names.RAW_PREFIX, names.QUARANTINE_PREFIX
        curated, context, packs = names.CURATED_PREFIX, names.CONTEXT_PREFIX, names.PACKS_PREFIX
        late, state = names.LATE_PREFIX, COMPACTION_STATE_PREFIX
        rollups, slices = names.ROLLUPS_PREFIX, names.CONTEXT_SLICES_PREFIX
        grant_objects(self.ingest, data, ["s3:PutObject"], [raw, quarantine])
        for function in (self.ingest, self.context, self.predictions):
            function.allow(
                actions=["iot:DescribeThing"],
                resources=[function.function.stack.format_arn(service="iot", resource="thing", resource_name="*")],
                reason="checks the line a gateway's message names against the thing of its topic; gateway thing "
                "names have no common prefix, so any thing (read-only, one action)",
            )
        # Listing lets a missing key answer 404 instead of 403, which the functions rely on.
        for function in (self.compaction, self.metric_packer, self.rollups, self.context):
            function.allow(
                actions=["s3:ListBucket"],
                resources=[data.bucket_arn],
                reason="listing the data bucket itself (no object access)",
            )
        grant_objects(self.compaction, data, ["s3:GetObject"], [raw, curated, late, state])
        grant_objects(self.compaction, data, ["s3:PutObject"], [curated, late, state])
        grant_objects(self.compaction, data, ["s3:DeleteObject"], [curated, late])  # superseded parts of a partition
        grant_objects(self.metric_packer, data, ["s3:GetObject"], [curated, context, packs])
        grant_objects(self.metric_packer, data, ["s3:PutObject"], [context, packs])
        grant_objects(self.rollups, data, ["s3:GetObject"], [curated])
        grant_objects(
            self.rollups, data, ["s3:PutObject", "s3:DeleteObject"], [rollups]
        )  # months without data lose theirs
        grant_objects(self.context, data, ["s3:GetObject"], [context])
        grant_objects(self.context, data, ["s3:PutObject"], [context, slices, quarantine])
        predictions, alerts = names.PREDICTIONS_PREFIX, names.ALERTS_PREFIX
        grant_objects(self.predictions, data, ["s3:PutObject"], [predictions, alerts, quarantine])

    def _acknowledge_destination_invoke(self) -> None:
        # LambdaDestination grants lambda:InvokeFunction on the rollups function and its
        # versions (<arn>:*); the wildcard names versions of that one function only.
        invoked = [f"{self.rollups.function.function_arn}:*"]
        for finding in wildcard_findings(Stack.of(self), [], invoked):
            acknowledge(
                self.compaction.role,
                f"IAM5[{finding}]",
                "compaction's on-success destination invokes the rollups function; the grant covers "
                "that function's versions and aliases (<arn>:*), nothing else",
            )

    def _schedule_compaction(self) -> None:
        schedule = compaction_schedule(compaction_interval_minutes(self.node.try_get_context))
        rule = events.Rule(self, "CompactionSchedule", schedule=schedule, description="edgeloop compaction")
        rule.add_target(event_target(self.compaction))


def compaction_schedule(minutes: int) -> events.Schedule:
    """Compaction's EventBridge schedule: every `minutes` (edgeloop:compactionIntervalMinutes)."""
    return events.Schedule.rate(Duration.minutes(minutes))


def on_object_created(
    scope: Construct, construct_id: str, bucket, prefix: str, function: EdgeloopFunction, description: str
) -> events.Rule:
    """An EventBridge rule: S3 "Object Created" under `prefix`/ in `bucket` -> `function`."""
    rule = events.Rule(
        scope,
        construct_id,
        description=description,
        event_pattern=events.EventPattern(
            source=["aws.s3"],
            detail_type=["Object Created"],
            detail={"bucket": {"name": [bucket.bucket_name]}, "object": {"key": [{"prefix": f"{prefix}/"}]}},
        ),
    )
    rule.add_target(event_target(function))
    return rule


def grant_objects(function: EdgeloopFunction, bucket, actions: list[str], prefixes: list[str]) -> None:
    function.allow(
        actions=actions,
        resources=[Storage.objects(bucket, prefix) for prefix in prefixes],
        reason=PREFIX_REASON.format(", ".join(f"{p}/" for p in prefixes)),
    )


def event_target(function: EdgeloopFunction) -> targets.LambdaFunction:
    """EventBridge delivery failures land in the same queue as the function's own failures."""
    return targets.LambdaFunction(
        function.function,
        dead_letter_queue=function.failure_queue,
        retry_attempts=2,
        max_event_age=Duration.hours(2),
    )
