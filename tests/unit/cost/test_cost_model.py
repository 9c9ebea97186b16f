"""The cost model's units, price table, fleet line and ingest-path estimates (benchmarks/cost_model.py)."""

from __future__ import annotations

import json

import pytest

from benchmarks import cost_model
from benchmarks.cost_model import PathCounts, PriceTable, RunUsage


def test_iot_meters_5kb_units_of_payload_and_topic():
    assert cost_model.iot_units(0) == 1
    assert cost_model.iot_units(5 * 1024) == 1
    assert cost_model.iot_units(5 * 1024 + 1) == 2
    assert cost_model.iot_units(128 * 1024) == 26


def test_dynamodb_units_round_up_per_request():
    assert cost_model.read_units(100, consistent=False) == 0.5
    assert cost_model.read_units(4097, consistent=True) == 2.0
    assert cost_model.write_units(0) == 1
    assert cost_model.write_units(1025) == 2


def test_lambda_bills_whole_milliseconds_times_memory():
    assert cost_model.lambda_gb_seconds(1.2, 1024) == pytest.approx(0.002)
    assert cost_model.lambda_gb_seconds(1000, 512) == pytest.approx(0.5)


def test_storage_at_steady_state_is_daily_bytes_times_retention():
    assert cost_model.stored_gb_months(2**30, 30) == pytest.approx(30)


def test_the_repo_price_table_loads_and_names_its_sources():
    table = PriceTable.load()
    assert table.region == "us-east-1" and table.retrieved
    document = json.loads(cost_model.DEFAULT_PRICES.read_text())
    assert all(entry["source"].startswith("https://") for entry in document["prices"].values())
    assert {"iot.message_5kb", "lambda.gb_second_arm64", "s3.put_copy_post_list", "logs.ingested_gb"} <= set(table.usd)


def test_a_region_override_table_is_read_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "prices_eu.json"
    entry = {"usd": 2.0, "per": "thing", "source": "https://example.com/p", "confirmed": True}
    path.write_text(json.dumps({"region": "eu-west-1", "retrieved": "2026-01-01", "prices": {"s3.x": entry}}))
    monkeypatch.setenv(cost_model.PRICES_ENV, str(path))
    table = PriceTable.load()
    assert (table.region, table.usd, table.unconfirmed) == ("eu-west-1", {"s3.x": 2.0}, ())
    assert table.cost({"s3.x": 3}) == {"s3": 6.0}
    with pytest.raises(KeyError, match=r"'s3\.y'.*prices_eu\.json"):
        table.cost({"s3.y": 1})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"usd": -1, "source": "https://x"}, r"prices\.s3\.x\.usd=-1"),
        ({"usd": "1", "source": "https://x"}, r"prices\.s3\.x\.usd='1'"),
        ({"usd": 1}, r"prices\.s3\.x\.source is missing"),
    ],
)
def test_a_bad_price_is_refused_naming_key_and_file(tmp_path, entry, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"region": "r", "retrieved": "d", "prices": {"s3.x": entry}}))
    with pytest.raises(ValueError, match=message) as error:
        PriceTable.load(path)
    assert "bad.json" in str(error.value)


def test_flow_scales_with_simulated_time_and_standing_does_not():
    usage = RunUsage(gateways=2, simulated_s=cost_model.MONTH_S / 10, flow={"a.x": 3.0}, standing={"a.y": 5.0})
    assert usage.per_month() == pytest.approx({"a.x": 30.0, "a.y": 5.0})


def test_fit_line_reports_its_largest_relative_error():
    exact = cost_model.fit_line([2, 4, 8], [3.0, 5.0, 9.0])
    assert (exact.intercept, exact.slope, exact.max_relative_error) == pytest.approx((1.0, 1.0, 0.0))
    bent = cost_model.fit_line([1, 2, 3], [1.0, 4.0, 9.0])
    assert bent.max_relative_error == pytest.approx(abs(bent.at(1) - 1.0) / 1.0)
    assert bent.at(10) == pytest.approx(bent.intercept + 10 * bent.slope)
    with pytest.raises(ValueError, match="distinct"):
        cost_model.fit_line([2, 2], [1.0, 2.0])


PATH = PathCounts(
    messages=43_830,
    message_bytes=800,
    ingest_gb_s=600.0,
    ingest_log_bytes=30e6,
    raw_puts=43_830,
    raw_reads=43_830,
    marker_puts=43_830,
    listings=1_000_000,
)


def test_per_message_path_pays_each_message_in_s3_and_lambda():
    quantities = cost_model.per_message_quantities(PATH)
    assert quantities["lambda.request"] == PATH.messages
    assert quantities["s3.put_copy_post_list"] == 2 * PATH.messages + PATH.listings


def test_batching_divides_the_per_message_requests_and_adds_sqs():
    batched = cost_model.sqs_batched_quantities(PATH, messages_per_batch=100)
    assert batched["lambda.request"] == pytest.approx(PATH.messages / 100)
    assert batched["s3.put_copy_post_list"] == pytest.approx(2 * PATH.messages / 100 + PATH.listings / 100)
    assert batched["sqs.request_64kb"] == pytest.approx(PATH.messages + 2 * 10 * PATH.messages / 100)
    assert batched["lambda.gb_second_arm64"] == PATH.ingest_gb_s  # the per-sample work stays
    table = PriceTable.load()
    assert cost_model.path_difference(table, PATH, batched) > 0
    assert cost_model.path_difference(table, PATH, cost_model.sqs_batched_quantities(PATH, 1)) < 0
    with pytest.raises(ValueError, match="messages_per_batch=0.5"):
        cost_model.sqs_batched_quantities(PATH, 0.5)


def test_firehose_bills_each_record_as_at_least_5_kb():
    quantities = cost_model.firehose_quantities(PATH, gateways=1000, buffer_s=60)
    assert quantities["firehose.ingested_gb_5kb"] == pytest.approx(PATH.messages * 5 * 1024 / cost_model.GIB)
    assert quantities["lambda.request"] == pytest.approx(cost_model.MONTH_S / 60 / 1000)
