"""Issue 4's acceptance list for ingest (test_data_ingest_bad_inputs.py), run again on the batched path.

The same test functions, unchanged, with their module's `ingest` helper replaced by one that hands the
message to ingest as an SQS batch of one (what the stack's queue delivers) and the raw object read back
in either layout: quarantine reasons, the lateness SLA and duplicate deliveries hold there too.
"""

from __future__ import annotations

import pytest
import test_data_ingest_bad_inputs as direct
from ingest_messages import LINES, USE_CASE, event_of, sqs_record

from edgeloop.cloud.datalake.raw import RAW_SET_KEY
from edgeloop.cloud.sqs_event import SqsRecord
from edgeloop.functions.ingest.batched import ingest_sqs_records
from edgeloop.functions.ingest.data_access import S3IngestStore
from edgeloop.functions.ingest.logic import IngestResult
from edgeloop.schemas.raw_batch import RawBatch, RawBatchSet

BUCKET = direct.BUCKET  # conftest's s3 fixture creates the bucket the reused tests read


def ingest_batched(payload: bytes, *, lines=LINES, store=None, **kwargs) -> IngestResult:
    record = SqsRecord.of(sqs_record(event_of(payload)))
    outcome = ingest_sqs_records(
        [record], use_case=USE_CASE, store=store or S3IngestStore(BUCKET), lines=lines, **kwargs
    )
    assert outcome.failed == {}, outcome.failed
    result = outcome.results[record.message_id]
    assert result.raw_key is None or RAW_SET_KEY.match(result.raw_key), result.raw_key
    return result


class EitherLayout:
    """RawBatch.from_gzip_json for the reused tests: a set of one batch (this path) reads as that batch."""

    @staticmethod
    def from_gzip_json(body: bytes) -> RawBatch:
        (batch,) = RawBatchSet.from_gzip_json(body).batches
        return batch


@pytest.fixture(autouse=True)
def batched_path(monkeypatch):
    monkeypatch.setattr(direct, "ingest", ingest_batched)
    monkeypatch.setattr(direct, "RawBatch", EitherLayout)


# Every test of the direct path's file that goes through its `ingest` helper (the line-directory,
# settings and handler tests there do not: they are path-independent or cover the direct handler).
test_malformed_json_is_quarantined = direct.test_malformed_json_is_quarantined
test_json_that_is_not_an_object_is_quarantined = direct.test_json_that_is_not_an_object_is_quarantined
test_wrong_type_of_a_batch_field_refuses_the_message = direct.test_wrong_type_of_a_batch_field_refuses_the_message
test_wrong_type_of_a_sample_refuses_only_that_sample = direct.test_wrong_type_of_a_sample_refuses_only_that_sample
test_missing_batch_field_refuses_the_message = direct.test_missing_batch_field_refuses_the_message
test_missing_sample_column_refuses_the_message = direct.test_missing_sample_column_refuses_the_message
test_payload_over_the_iot_core_limit_is_quarantined = direct.test_payload_over_the_iot_core_limit_is_quarantined
test_payload_at_the_iot_core_limit_is_not_refused_for_its_size = (
    direct.test_payload_at_the_iot_core_limit_is_not_refused_for_its_size
)
test_format_1_zlib_bomb_is_quarantined_naming_its_size = direct.test_format_1_zlib_bomb_is_quarantined_naming_its_size
test_format_2_zlib_bomb_is_quarantined = direct.test_format_2_zlib_bomb_is_quarantined
test_format_2_absurd_sample_count_is_refused_before_decoding = (
    direct.test_format_2_absurd_sample_count_is_refused_before_decoding
)
test_format_2_at_the_sample_limit_is_decoded = direct.test_format_2_at_the_sample_limit_is_decoded
test_format_1_absurd_sample_count_is_refused = direct.test_format_1_absurd_sample_count_is_refused
test_unknown_binary_format_version_is_quarantined = direct.test_unknown_binary_format_version_is_quarantined
test_unknown_format_version_field_is_quarantined = direct.test_unknown_format_version_field_is_quarantined
test_line_other_than_the_registry_holds_refuses_the_message = (
    direct.test_line_other_than_the_registry_holds_refuses_the_message
)
test_thing_without_a_line_in_the_registry_refuses_the_message = (
    direct.test_thing_without_a_line_in_the_registry_refuses_the_message
)
test_ingest_checks_the_line_against_the_iot_registry = direct.test_ingest_checks_the_line_against_the_iot_registry
test_timestamps_in_the_future_refuse_only_those_samples = direct.test_timestamps_in_the_future_refuse_only_those_samples
test_timestamps_beyond_the_lateness_sla_refuse_only_those_samples = (
    direct.test_timestamps_beyond_the_lateness_sla_refuse_only_those_samples
)
test_a_lower_lateness_sla_refuses_more = direct.test_a_lower_lateness_sla_refuses_more
test_lateness_sla_must_be_a_positive_whole_number_of_days = (
    direct.test_lateness_sla_must_be_a_positive_whole_number_of_days
)
test_every_sample_fault_at_once_still_lands_the_good_samples = (
    direct.test_every_sample_fault_at_once_still_lands_the_good_samples
)
test_same_batch_delivered_three_times_lands_once = direct.test_same_batch_delivered_three_times_lands_once
test_same_batch_delivered_three_times_concurrently_lands_once = (
    direct.test_same_batch_delivered_three_times_concurrently_lands_once
)
