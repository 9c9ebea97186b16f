"""One simulated gateway for one compaction period on the local stack, metered as bench-cost does,
on both ingest paths: per message (each telemetry message is one rule, one ingest invocation, one
raw PUT, one compaction GET and one marker) and batched through the queue (one invocation and one
raw object per simulated batching window). The flush policy sets the message count by simulated time."""

from __future__ import annotations

import pytest

from benchmarks.cost_fleet import RunSpec, run_fleet
from edgeloop.greengrass_components.gateway.flush_policy import FlushPolicy
from edgeloop.schemas import names
from edgeloop.schemas.monitoring import DEGRADED_LINES_METRIC

BATCH_WINDOW_S = 60
# one round of a 15-minute schedule (the stack's is edgeloop:compactionIntervalMinutes): a short run
COMPACTION_EVERY_S = 15 * 60
LANDING_DELAY_MINUTES = 70  # the stack's at an hourly compaction (cdk/constructs/live_accuracy.py)


@pytest.mark.parametrize(
    ("gateways", "batching"), [(1, None), (2, (1000, BATCH_WINDOW_S))], ids=["per-message", "batched"]
)
def test_gateways_for_one_compaction_period_are_metered_call_by_call(tmp_path, gateways, batching):
    policy = FlushPolicy()
    memory_mb = dict.fromkeys(names.FUNCTIONS, 512)  # the bench reads the template's; any will do here
    latency_s = 300  # a few prediction batches within the period (the default sends one per 30 min)
    spec = RunSpec(
        gateways,
        COMPACTION_EVERY_S,
        policy,
        COMPACTION_EVERY_S,
        batching,
        latency_s,
        live_accuracy_interval_s=COMPACTION_EVERY_S,  # one round at the period's end (the stack's: hourly)
        landing_delay_minutes=LANDING_DELAY_MINUTES,
    )
    run = run_fleet(spec, memory_mb, tmp_path)

    status = gateways * (COMPACTION_EVERY_S // names.DEFAULT_STATUS_INTERVAL_S)
    predictions = run.prediction_iot.messages  # the model runners' batches
    telemetry = run.iot.messages - status - predictions  # the connection's announcement is set-up, not metered
    # one batch per max_latency_s per gateway (give or take the last one), whatever the wall clock did
    assert abs(telemetry - gateways * COMPACTION_EVERY_S / policy.max_latency_s) <= gateways
    assert run.rule_units == run.iot.messages
    ingest = run.lambdas.functions["ingest"].requests
    requests = run.meter.usage.requests
    if batching is None:
        assert ingest == telemetry and run.sqs_requests == 0
    else:  # one invocation per simulated window holding both gateways' messages
        assert ingest == telemetry // 2 <= COMPACTION_EVERY_S // BATCH_WINDOW_S
        assert run.sqs_requests_by["ingest"] == telemetry + 2 * ingest  # the rule's SendMessage; a receive and a delete
        assert run.sqs_requests == sum(run.sqs_requests_by.values())
    assert requests[("ingest", "s3", "PutObject", "raw")] == ingest
    assert requests[("compaction", "s3", "GetObject", "raw")] == ingest
    assert requests[("compaction", "s3", "PutObject", "_state")] == ingest + run.compaction_rounds  # + the checkpoint
    assert run.stored_objects["raw"] == ingest
    assert run.lambdas.functions["compaction"].requests == run.compaction_rounds == 1
    assert run.lambdas.functions["wave_controller"].requests == COMPACTION_EVERY_S // 60
    assert run.log.metrics, "the handlers' EMF lines reached the metered log"
    assert run.lambdas.functions["ingest"].log_bytes > 0
    assert run.meter.usage.write_units["status_intake"] > 0
    # a prediction a pack stride per gateway, in batches of the flush rule's size (the last ones held)
    stride_s = 30
    assert predictions == gateways * (COMPACTION_EVERY_S // (latency_s + stride_s))
    assert run.rule_units_by["predictions"] == run.prediction_iot.units == predictions, "one 5 KB unit each"
    assert run.lambdas.functions["predictions"].requests >= 1 and run.stored_objects["predictions"] >= 1
    if batching is not None:
        assert run.sqs_requests_by["predictions"] == predictions + 2 * run.lambdas.functions["predictions"].requests
    # live accuracy: one round, timed as the round that scores the period's windows, scored every line
    assert run.live_accuracy_rounds == run.lambdas.functions["live_accuracy"].requests == 1
    assert run.live_accuracy_windows >= gateways
    assert requests[("live_accuracy", "s3", "PutObject", names.MONITORING_PREFIX)] >= 2 * gateways  # reports, state
    assert requests[("live_accuracy", "s3", "GetObject", names.PREDICTIONS_PREFIX)] >= gateways
    assert requests[("live_accuracy", "s3", "GetObject", names.CURATED_PREFIX)] >= gateways
    assert run.stored_objects[names.MONITORING_PREFIX] >= 2 * gateways
    live = {(dimensions, name) for _, dimensions, name in run.log.metrics if ("service", "live_accuracy") in dimensions}
    # per round, a fixed set with dimension service only (use_case.monitoring.line_metrics is off)
    assert {dimensions for dimensions, _ in live} == {(("service", "live_accuracy"),)}
    assert {DEGRADED_LINES_METRIC, "WindowsJudged"} <= {name for _, name in live}
